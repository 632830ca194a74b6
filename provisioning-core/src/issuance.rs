//! Certificate issuance during provisioning (DPS with Azure Device Registry): the PKCS#10
//! certificate signing request a device sends in its register call, made for the plugin's
//! operational key (ABI 1.2) and signed inside the plugin, so the private key never leaves it.
//!
//! The request's subject is `CN=<registration id>`, its key the operational key's P-256
//! SubjectPublicKeyInfo as the plugin returns it, its signature ecdsa-with-SHA256 (the plugin
//! signs the SHA-256 digest of the DER `CertificationRequestInfo`, DER `Ecdsa-Sig-Value` out).

use crate::plugin::{OperationalKeyHandle, PluginError};
use der::asn1::{BitString, ObjectIdentifier};
use der::{Decode, Encode};
use sha2::{Digest, Sha256};
use std::str::FromStr;
use x509_cert::name::Name;
use x509_cert::request::{CertReq, CertReqInfo, Version};
use x509_cert::spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};

/// ecdsa-with-SHA256 (RFC 5758), without parameters.
const ECDSA_WITH_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");

/// Why a CSR could not be made.
#[derive(Debug, thiserror::Error)]
pub enum IssuanceError {
    /// The plugin refused or failed a call.
    #[error(transparent)]
    Plugin(#[from] PluginError),
    /// The plugin's public key is not a DER SubjectPublicKeyInfo.
    #[error("the plugin's operational public key is not a DER SubjectPublicKeyInfo: {reason}")]
    PublicKey {
        /// The decoder's complaint.
        reason: String,
    },
    /// The registration id does not make a subject name.
    #[error("registration id `{registration_id}` cannot be a certificate subject: {reason}")]
    Subject {
        /// The id.
        registration_id: String,
        /// The parser's complaint.
        reason: String,
    },
    /// DER encoding failed.
    #[error("cannot encode the certificate signing request: {reason}")]
    Encode {
        /// The encoder's complaint.
        reason: String,
    },
}

impl IssuanceError {
    /// The failure's class, for exit codes and `--json` ([`crate::error_kind`]).
    pub fn error_kind(&self) -> crate::error_kind::ErrorKind {
        use crate::error_kind::ErrorKind;
        match self {
            IssuanceError::Plugin(e) => e.error_kind(),
            IssuanceError::PublicKey { .. } => ErrorKind::Hsm,
            IssuanceError::Subject { .. } => ErrorKind::Config,
            IssuanceError::Encode { .. } => ErrorKind::Other,
        }
    }
}

/// Why an issued chain was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    /// DPS returned no chain, or only a leaf without its issuer.
    #[error("DPS returned {count} certificate(s); a leaf and its issuer are required")]
    TooShort {
        /// How many came back.
        count: usize,
    },
    /// An entry is not base64 of a DER certificate.
    #[error("issued certificate {index} is not base64 of a DER X.509 certificate: {reason}")]
    NotACertificate {
        /// Its position, 0 = leaf.
        index: usize,
        /// The decoder's complaint.
        reason: String,
    },
    /// The leaf is for another key than the HSM's operational key.
    #[error("the issued certificate is not for the HSM's operational key")]
    WrongKey,
    /// The leaf's signature does not verify with the issuer's key.
    #[error("the issued certificate does not verify with its issuer's key: {reason}")]
    BadSignature {
        /// What failed.
        reason: String,
    },
}

impl ChainError {
    /// The failure's class, for exit codes and `--json` ([`crate::error_kind`]).
    pub fn error_kind(&self) -> crate::error_kind::ErrorKind {
        use crate::error_kind::ErrorKind;
        // DPS answered, but not with a chain this device can use.
        ErrorKind::DpsRefused
    }
}

/// Checks what DPS issued for the operational key whose public key is `spki_der`: the leaf
/// carries exactly that key, and its signature verifies with the next certificate's key
/// (ecdsa-with-SHA256 over P-256, what the emulator's issuing CA uses; any other issuer
/// algorithm is reported as not verified). Returns the chain as DER, leaf first.
pub fn verify_issued_chain(
    spki_der: &[u8],
    chain_b64: &[String],
) -> Result<Vec<Vec<u8>>, ChainError> {
    use base64::Engine;
    use p256::ecdsa::signature::Verifier;
    if chain_b64.len() < 2 {
        return Err(ChainError::TooShort {
            count: chain_b64.len(),
        });
    }
    let mut ders = Vec::with_capacity(chain_b64.len());
    let mut certs = Vec::with_capacity(chain_b64.len());
    for (index, b64) in chain_b64.iter().enumerate() {
        let der = base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .map_err(|e| ChainError::NotACertificate {
                index,
                reason: e.to_string(),
            })?;
        let cert =
            x509_cert::Certificate::from_der(&der).map_err(|e| ChainError::NotACertificate {
                index,
                reason: e.to_string(),
            })?;
        ders.push(der);
        certs.push(cert);
    }
    let leaf_spki = certs[0]
        .tbs_certificate
        .subject_public_key_info
        .to_der()
        .map_err(|e| ChainError::NotACertificate {
            index: 0,
            reason: e.to_string(),
        })?;
    if leaf_spki != spki_der {
        return Err(ChainError::WrongKey);
    }
    let bad = |reason: String| ChainError::BadSignature { reason };
    if certs[0].signature_algorithm.oid != ECDSA_WITH_SHA256 {
        return Err(bad(format!(
            "signature algorithm {} is not ecdsa-with-SHA256",
            certs[0].signature_algorithm.oid
        )));
    }
    let issuer_spki = certs[1]
        .tbs_certificate
        .subject_public_key_info
        .to_der()
        .map_err(|e| bad(e.to_string()))?;
    let issuer_key =
        <p256::ecdsa::VerifyingKey as p256::pkcs8::DecodePublicKey>::from_public_key_der(
            &issuer_spki,
        )
        .map_err(|e| bad(format!("the issuer's key is not P-256: {e}")))?;
    let tbs = certs[0]
        .tbs_certificate
        .to_der()
        .map_err(|e| bad(e.to_string()))?;
    let signature = p256::ecdsa::DerSignature::try_from(certs[0].signature.raw_bytes())
        .map_err(|e| bad(e.to_string()))?;
    issuer_key
        .verify(&tbs, &signature)
        .map_err(|e| bad(e.to_string()))?;
    Ok(ders)
}

/// The chain as PEM text, leaf first: what `store_chain` keeps beside the key.
pub fn chain_pem(ders: &[Vec<u8>]) -> String {
    use base64::Engine;
    let mut out = String::new();
    for der in ders {
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        out.push_str("-----BEGIN CERTIFICATE-----\n");
        for line in b64.as_bytes().chunks(64) {
            out.push_str(&String::from_utf8_lossy(line));
            out.push('\n');
        }
        out.push_str("-----END CERTIFICATE-----\n");
    }
    out
}

/// The label hsmkit keeps its first operational key under.
pub const OPERATIONAL_KEY_LABEL: &str = "hsmkit-operational";

/// The label of the operational key that replaces the one under `current` at a renewal:
/// generations `hsmkit-operational`, `hsmkit-operational.2`, `hsmkit-operational.3`, ... A
/// new label for every generation, so the old key and chain stay usable until the new chain
/// is stored and recorded (and a plugin that derives keys from the label, as dice does, gets a
/// new key). A label hsmkit did not make (another prefix) starts the series again at `.2`.
pub fn next_operational_key_label(current: &str) -> String {
    let generation = current
        .strip_prefix(OPERATIONAL_KEY_LABEL)
        .and_then(|rest| rest.strip_prefix('.'))
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or(1);
    format!(
        "{OPERATIONAL_KEY_LABEL}.{}",
        generation.saturating_add(1).max(2)
    )
}

/// The issued leaf's validity period, notBefore and notAfter (Unix seconds), from the chain as
/// the provisioning record keeps it (base64 DER, leaf first).
pub fn leaf_validity(chain_b64: &[String]) -> Result<(u64, u64), ChainError> {
    use base64::Engine;
    let not_a_certificate = |reason: String| ChainError::NotACertificate { index: 0, reason };
    let leaf = chain_b64.first().ok_or(ChainError::TooShort { count: 0 })?;
    let der = base64::engine::general_purpose::STANDARD
        .decode(leaf.trim())
        .map_err(|e| not_a_certificate(e.to_string()))?;
    let cert =
        x509_cert::Certificate::from_der(&der).map_err(|e| not_a_certificate(e.to_string()))?;
    let validity = &cert.tbs_certificate.validity;
    Ok((
        validity.not_before.to_unix_duration().as_secs(),
        validity.not_after.to_unix_duration().as_secs(),
    ))
}

fn encode_error(e: der::Error) -> IssuanceError {
    IssuanceError::Encode {
        reason: e.to_string(),
    }
}

/// A DER PKCS#10 request for the operational key under `label` (created when absent), with
/// subject `CN=<registration_id>`, signed by the plugin.
pub fn build_csr(
    ops: &OperationalKeyHandle<'_>,
    label: &str,
    registration_id: &str,
) -> Result<Vec<u8>, IssuanceError> {
    let spki = ops.create_key(label)?;
    let public_key =
        SubjectPublicKeyInfoOwned::from_der(&spki).map_err(|e| IssuanceError::PublicKey {
            reason: e.to_string(),
        })?;
    // DPS registration ids are a-z, 0-9 and `-._:`, none of which RFC 4514 escapes.
    let subject =
        Name::from_str(&format!("CN={registration_id}")).map_err(|e| IssuanceError::Subject {
            registration_id: registration_id.to_string(),
            reason: e.to_string(),
        })?;
    let info = CertReqInfo {
        version: Version::V1,
        subject,
        public_key,
        attributes: Default::default(),
    };
    let tbs = info.to_der().map_err(encode_error)?;
    let digest: [u8; 32] = Sha256::digest(&tbs).into();
    let signature = ops.sign_digest(label, &digest)?;
    let request = CertReq {
        info,
        algorithm: AlgorithmIdentifierOwned {
            oid: ECDSA_WITH_SHA256,
            parameters: None,
        },
        signature: BitString::from_bytes(&signature).map_err(encode_error)?,
    };
    request.to_der().map_err(encode_error)
}

/// Why provisioning with certificate issuance failed.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    /// The plugin has no operational-key interface (ABI 1.0/1.1) or a call failed.
    #[error(transparent)]
    Plugin(#[from] PluginError),
    /// The CSR could not be made.
    #[error(transparent)]
    Csr(#[from] IssuanceError),
    /// The registration failed.
    #[error(transparent)]
    Dps(#[from] crate::dps::DpsError),
    /// DPS assigned the device but returned no issued certificate.
    #[error("DPS assigned the device but returned no issued certificate (is certificate issuance configured for its enrollment?)")]
    NoChain,
    /// The returned chain was not accepted.
    #[error(transparent)]
    Chain(#[from] ChainError),
}

impl IssueError {
    /// The failure's class, for exit codes and `--json` ([`crate::error_kind`]).
    pub fn error_kind(&self) -> crate::error_kind::ErrorKind {
        use crate::error_kind::ErrorKind;
        match self {
            IssueError::Plugin(e) => e.error_kind(),
            IssueError::Csr(e) => e.error_kind(),
            IssueError::Dps(e) => e.error_kind(),
            IssueError::NoChain => ErrorKind::DpsRefused,
            IssueError::Chain(e) => e.error_kind(),
        }
    }
}

/// Registers with a CSR for the operational key under `label` (created when absent): builds
/// the CSR in the plugin (CN = the registration id), sends it with api-version
/// `2025-07-01-preview`, checks that the returned leaf is for the HSM's key and verifies with
/// its issuer, and stores the chain (PEM, leaf first) beside the key. Returns the registration
/// and the chain (DER, leaf first).
pub async fn register_with_certificate(
    config: &crate::dps::DpsClientConfig,
    instance: std::sync::Arc<crate::plugin::PluginInstance>,
    attestation: crate::dps::Attestation,
    label: &str,
    progress: &(dyn Fn(&crate::dps::ProgressEvent) + Sync),
) -> Result<(crate::dps::RegistrationResult, Vec<Vec<u8>>), IssueError> {
    // First, so that a 1.0/1.1 plugin is refused saying it cannot hold an operational key,
    // whatever else it lacks.
    instance.operational_key()?;
    let registration_id = crate::dps::device_registration_id(
        &instance,
        attestation,
        config.registration_id.as_deref(),
    )?;
    let (csr, spki) = {
        let ops = instance.operational_key()?;
        let csr = build_csr(&ops, label, &registration_id)?;
        let spki = ops.public_key(label)?.to_vec();
        (csr, spki)
    };
    let mut config = config.clone();
    config.csr = Some(csr);
    config.api_version = crate::dps::ApiVersion::V2025_07_01Preview;
    let result = crate::dps::register(&config, instance.clone(), attestation, progress).await?;
    let chain_b64 = result
        .issued_certificate_chain
        .as_deref()
        .ok_or(IssueError::NoChain)?;
    let chain = verify_issued_chain(&spki, chain_b64)?;
    instance
        .operational_key()?
        .store_chain(label, &chain_pem(&chain))?;
    Ok((result, chain))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_renewal_moves_to_the_next_generation_label() {
        assert_eq!(
            next_operational_key_label(OPERATIONAL_KEY_LABEL),
            "hsmkit-operational.2"
        );
        assert_eq!(
            next_operational_key_label("hsmkit-operational.2"),
            "hsmkit-operational.3"
        );
        assert_eq!(
            next_operational_key_label("hsmkit-operational.41"),
            "hsmkit-operational.42"
        );
        // Not one of hsmkit's: a new series, never the label given.
        assert_eq!(
            next_operational_key_label("vendor-key"),
            "hsmkit-operational.2"
        );
        assert_eq!(
            next_operational_key_label("hsmkit-operational.x"),
            "hsmkit-operational.2"
        );
        assert_eq!(
            next_operational_key_label("hsmkit-operational.0"),
            "hsmkit-operational.2"
        );
        for label in ["hsmkit-operational.2", "hsmkit-operational.4294967295"] {
            let next = next_operational_key_label(label);
            assert!(hsm_api::is_valid_operational_key_label(&next), "{next}");
        }
    }

    #[test]
    fn the_leaf_expiry_needs_a_certificate() {
        assert!(matches!(
            leaf_validity(&[]),
            Err(ChainError::TooShort { count: 0 })
        ));
        assert!(matches!(
            leaf_validity(&["not base64!".into()]),
            Err(ChainError::NotACertificate { index: 0, .. })
        ));
        assert!(matches!(
            leaf_validity(&["AAAA".into()]),
            Err(ChainError::NotACertificate { index: 0, .. })
        ));
    }
}
