//! The traits a plugin implements: one for the instance, one per interface.

use crate::{HsmError, PluginConfig};
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

    /// Creates an instance from the host's settings.
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

/// Signature algorithms of [`X509Hsm::sign_digest`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignAlgorithm {
    /// ECDSA P-256 over a SHA-256 digest; DER `ECDSA-Sig-Value` out.
    EcdsaP256Sha256,
    /// ECDSA P-384 over a SHA-384 digest; DER out.
    EcdsaP384Sha384,
    /// RSA PKCS#1 v1.5 over a SHA-256 digest.
    RsaPkcs1Sha256,
    /// RSA-PSS (MGF1-SHA256, 32-byte salt) over a SHA-256 digest.
    RsaPssSha256,
}

impl SignAlgorithm {
    /// The algorithm for an ABI `HSM_SIGN_*` value.
    pub fn from_abi(value: u32) -> Option<Self> {
        match value {
            hsm_api::HSM_SIGN_ECDSA_P256_SHA256 => Some(SignAlgorithm::EcdsaP256Sha256),
            hsm_api::HSM_SIGN_ECDSA_P384_SHA384 => Some(SignAlgorithm::EcdsaP384Sha384),
            hsm_api::HSM_SIGN_RSA_PKCS1_SHA256 => Some(SignAlgorithm::RsaPkcs1Sha256),
            hsm_api::HSM_SIGN_RSA_PSS_SHA256 => Some(SignAlgorithm::RsaPssSha256),
            _ => None,
        }
    }

    /// The ABI `HSM_SIGN_*` value.
    pub fn to_abi(self) -> u32 {
        match self {
            SignAlgorithm::EcdsaP256Sha256 => hsm_api::HSM_SIGN_ECDSA_P256_SHA256,
            SignAlgorithm::EcdsaP384Sha384 => hsm_api::HSM_SIGN_ECDSA_P384_SHA384,
            SignAlgorithm::RsaPkcs1Sha256 => hsm_api::HSM_SIGN_RSA_PKCS1_SHA256,
            SignAlgorithm::RsaPssSha256 => hsm_api::HSM_SIGN_RSA_PSS_SHA256,
        }
    }

    /// Length in bytes of the digest this algorithm signs.
    pub fn digest_len(self) -> usize {
        match self {
            SignAlgorithm::EcdsaP384Sha384 => 48,
            _ => 32,
        }
    }
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
