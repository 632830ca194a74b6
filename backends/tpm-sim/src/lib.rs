//! hsmkit-backend-tpm-sim: a software TPM 2.0 that answers DPS TPM attestation.
//!
//! It behaves like the TPM behind the C SDK's TPM interface: an RSA-2048 EK and SRK shaped by
//! the TCG templates (marshalled TPM2B_PUBLIC out), ActivateCredential + Import of the DPS
//! `authenticationKey`, and HMAC-SHA256 with the imported identity key. Its keys live in a
//! 0600 state file, so the EK (and the registration id) stays the same across restarts. No
//! daemon, no hardware: it runs anywhere.
//!
//! Settings: `state_dir` (the host always passes it) and optional `instance`, a name that
//! gives this instance its own TPM under `<state_dir>/tpm-sim/<instance>/`.

#![deny(missing_docs)]
// The entry function below is SDK code (macro-generated); this crate itself has no unsafe.
#![forbid(unsafe_code)]

mod plugin;
mod state;

pub use plugin::TpmSimPlugin;

hsm_plugin_sdk::plugin_entry!(
    /// The tpm-sim plugin table (TPM interface), exported by no symbol: `plugin/` exports it
    /// as `hsm_plugin_entry`, and a host that links this crate in calls it directly.
    pub fn plugin_entry for TpmSimPlugin, tpm, operational_key
);
