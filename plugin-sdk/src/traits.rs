//! The traits a plugin implements: one for the instance, one per interface.

use crate::{HsmError, PluginConfig, Setting};
use hsm_api::SignAlgorithm;
use zeroize::Zeroizing;

/// Static description of a plugin, shown by `hsmkit plugins list`.
#[derive(Clone, Copy, Debug)]
pub struct PluginInfo {
    /// Short name used to select the plugin (`dice`, `tpm-sim`, ...).
    pub name: &'static str,
    /// Version, semver recommended.
    pub version: &'static str,
    /// Who made it.
    pub vendor: &'static str,
    /// One line saying what it is.
    pub description: &'static str,
}

/// One instance of the plugin: what `create(config)` returns across the ABI.
///
/// The SDK declares every instance safe for concurrent calls and takes no lock of its own:
/// the interface traits take `&self`, and an instance keeps whatever state it changes behind
/// its own lock (as Parsec providers do), so that a read-only operation such as signing with a
/// cached key never waits and the ABI adds no synchronization to the call.
pub trait HsmPlugin: Sized + Send + Sync + 'static {
    /// Name, version, vendor and description.
    const INFO: PluginInfo;

    /// Every setting [`HsmPlugin::create`] reads, besides `state_dir` (always passed, always
    /// valid, never declared), each with a one-line description. The SDK puts the list in the
    /// plugin table (ABI 1.1, shown by `hsmkit plugins info` and `hsm-conformance
    /// --list-settings`) and refuses any other key before `create` runs, with
    /// `HSM_ERR_INVALID_ARGUMENT` and a message naming the key and the valid ones, so that a
    /// typo is an error and not a silently different device. The default is no settings.
    const SETTINGS: &'static [Setting] = &[];

    /// Creates an instance from the host's settings; every key in `config` is `state_dir` or
    /// one of [`HsmPlugin::SETTINGS`] (the SDK refused the others).
    fn create(config: &PluginConfig) -> Result<Self, HsmError>;

    /// Runs once when the host loads the library, before any instance exists. Use it for
    /// process-wide checks; an error (or a panic) here makes the host refuse the plugin.
    fn on_load() -> Result<(), HsmError> {
        Ok(())
    }
}

/// TPM attestation as DPS uses it.
pub trait TpmHsm {
    /// Endorsement key as a marshalled `TPM2B_PUBLIC`; the same bytes on every call and run.
    fn endorsement_key(&self) -> Result<Vec<u8>, HsmError>;
    /// Storage root key as a marshalled `TPM2B_PUBLIC`.
    fn storage_root_key(&self) -> Result<Vec<u8>, HsmError>;
    /// Runs ActivateCredential + Import on a decoded DPS `authenticationKey` blob and keeps
    /// the resulting identity key, replacing any earlier one.
    fn activate_identity_key(&self, blob: &[u8]) -> Result<(), HsmError>;
    /// HMAC-SHA256 of `data` with the identity key (32 bytes).
    /// [`crate::ErrorCode::InvalidState`] before any key was activated.
    fn sign_with_identity(&self, data: &[u8]) -> Result<Vec<u8>, HsmError>;
}

/// X.509 attestation: a certificate chain and a device key that signs in place.
pub trait X509Hsm {
    /// Certificate chain as PEM, leaf first.
    fn certificate_chain_pem(&self) -> Result<String, HsmError>;
    /// Common name of the leaf certificate: the DPS registration id.
    fn common_name(&self) -> Result<String, HsmError>;
    /// Signs `digest` (already checked to be `algorithm.digest_len()` bytes) with the leaf key.
    fn sign_digest(&self, algorithm: SignAlgorithm, digest: &[u8]) -> Result<Vec<u8>, HsmError>;
    /// The leaf private key as PKCS#8 PEM, only where the backend allows it.
    fn export_private_key_pem(&self) -> Result<Zeroizing<String>, HsmError> {
        Err(HsmError::not_supported(
            "this plugin never exports private keys",
        ))
    }
}

/// Symmetric-key attestation: an HMAC key held inside the plugin.
pub trait SymmetricKeyHsm {
    /// The registration id this key belongs to.
    fn registration_id(&self) -> Result<String, HsmError>;
    /// HMAC-SHA256 of `data` with the held key. [`crate::ErrorCode::NotFound`] without a key.
    fn sign(&self, data: &[u8]) -> Result<Vec<u8>, HsmError>;
    /// Stores `key` (raw bytes), replacing any earlier key, for `registration_id` if given.
    fn import_key(&self, registration_id: Option<&str>, key: &[u8]) -> Result<(), HsmError>;
}

/// Operational key (ABI 1.2): a P-256 key pair made and kept inside the HSM under a label,
/// that signs the CSR of a certificate DPS issues during provisioning, and the issued chain
/// kept beside it. The private key never leaves the plugin.
///
/// Optional: a plugin that does not list `operational_key` in [`crate::export_plugin!`] has a
/// NULL entry, and hosts say it cannot hold an operational key. Labels reach these methods
/// already checked ([`hsm_api::is_valid_operational_key_label`]), digests are 32 bytes, and
/// chains are UTF-8. Keys and chains must outlive the process.
pub trait OperationalKeyHsm {
    /// Creates the P-256 key under `label`, or finds the existing one (the same key on every
    /// call and run), and returns its public key as a DER SubjectPublicKeyInfo.
    fn create_operational_key(&self, label: &str) -> Result<Vec<u8>, HsmError>;
    /// The public key under `label` as in [`OperationalKeyHsm::create_operational_key`];
    /// [`crate::ErrorCode::NotFound`] when there is none. Never creates one.
    fn operational_public_key(&self, label: &str) -> Result<Vec<u8>, HsmError>;
    /// ECDSA P-256 signature of the SHA-256 `digest` with the key under `label`, DER-encoded
    /// like [`X509Hsm::sign_digest`]'s ECDSA signatures. [`crate::ErrorCode::NotFound`]
    /// without a key.
    fn sign_operational_digest(&self, label: &str, digest: &[u8; 32]) -> Result<Vec<u8>, HsmError>;
    /// Stores the issued chain (PEM, leaf first) beside the key under `label`, replacing any
    /// earlier one. [`crate::ErrorCode::NotFound`] without a key.
    fn store_operational_chain(&self, label: &str, pem: &str) -> Result<(), HsmError>;
    /// The chain stored under `label`, as stored. [`crate::ErrorCode::NotFound`] without one.
    fn operational_chain(&self, label: &str) -> Result<String, HsmError>;
    /// Removes the key under `label` and its chain. The default says the plugin cannot.
    fn delete_operational_key(&self, label: &str) -> Result<(), HsmError> {
        let _ = label;
        Err(HsmError::not_supported(
            "this plugin cannot remove operational keys",
        ))
    }
}
