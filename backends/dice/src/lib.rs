//! hsmkit's software DICE backend: an X.509 identity chain derived from a per-device UDS.
//!
//! Unlike the Azure C SDK's DICE emulator, every device gets its own identity (its own UDS,
//! created from 32 random bytes on first use), keys are derived the way google/open-dice
//! derives them (HKDF-SHA512, HMAC-DRBG P-256, IDs from public keys) so the results can be
//! reproduced on other platforms, and the private key signs in place instead of being handed
//! out.
//!
//! The chain returned through the X.509 interface, leaf first:
//! 1. TLS client certificate, CN = DPS registration id, signed by the CDI key;
//! 2. CDI certificate in open-dice's X.509 profile, signed by the DeviceID key;
//! 3. DeviceID certificate (UDS-derived key), signed by the development root CA;
//! 4. the self-signed development root CA, for DPS group enrollment by CA.

#![deny(missing_docs)]
// The entry function below is SDK code (macro-generated); this crate itself has no unsafe.
#![forbid(unsafe_code)]

pub mod certificates;
pub mod chain;
pub mod derive;
pub mod error;
pub mod plugin;
pub mod settings;
pub mod state;

pub use chain::{build_chain, build_chain_with, ChainOptions, DeviceChain};
pub use error::DiceError;
pub use plugin::DicePlugin;

hsm_plugin_sdk::plugin_entry!(
    /// The DICE plugin table (X.509 interface and operational keys derived from the CDI),
    /// exported by no symbol: `plugin/` exports it as `hsm_plugin_entry`, and a host that links
    /// this crate in calls it directly.
    pub fn plugin_entry for DicePlugin, x509, operational_key
);
