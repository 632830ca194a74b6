//! hsmkit-plugin-tpm-sim: a software TPM 2.0 that answers DPS TPM attestation.
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

mod plugin;
mod state;

pub use plugin::TpmSimPlugin;

hsm_plugin_sdk::export_plugin!(TpmSimPlugin, tpm);
