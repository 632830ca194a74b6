//! What a DPS enrollment for this device needs, read through the plugin: the EK (TPM), the
//! leaf and root CA certificates (X.509), the registration id (symmetric key). `hsmkit
//! enroll-info` and `hsmkit demo` print and enroll it; the conformance harness enrolls it in
//! its emulator. The schema is dps-proto's `enrollment.json`, one for writer and reader.

use crate::dps::Attestation;
use crate::plugin::{PluginError, PluginInstance};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use dps_proto::enrollment_file::{EnrollmentCertificates, EnrollmentFile};
use x509_cert::der::{pem::LineEnding, DecodePem, EncodePem};

/// Why the enrollment information could not be read.
#[derive(Debug, thiserror::Error)]
pub enum EnrollmentInfoError {
    /// A plugin call failed (the error names the call).
    #[error(transparent)]
    Plugin(#[from] PluginError),
    /// The plugin's certificate chain cannot be enrolled as it is.
    #[error("the plugin's certificate chain {reason}")]
    Chain {
        /// What is wrong with it.
        reason: String,
    },
    /// An attestation without enrollment information in this version.
    #[error("{0} attestation has no enrollment information in this version")]
    Unsupported(Attestation),
}

impl EnrollmentInfoError {
    /// The failure's class, for exit codes and `--json` ([`crate::error_kind`]).
    pub fn error_kind(&self) -> crate::error_kind::ErrorKind {
        use crate::error_kind::ErrorKind;
        match self {
            EnrollmentInfoError::Plugin(e) => e.error_kind(),
            EnrollmentInfoError::Chain { .. } => ErrorKind::Hsm,
            EnrollmentInfoError::Unsupported(_) => ErrorKind::Usage,
        }
    }
}

/// Reads the enrollment information of `kind` through the plugin: TPM, the EK and the
/// registration id derived from it; X.509, the leaf and (when the chain ends in a
/// self-signed certificate) the root CA, and the leaf's CN as registration id; symmetric key,
/// the registration id only (the key cannot be read back: callers that generate or derive
/// one import it and fill `primary_key`).
pub fn enrollment_info(
    instance: &PluginInstance,
    kind: Attestation,
) -> Result<EnrollmentFile, EnrollmentInfoError> {
    let mut info = EnrollmentFile {
        plugin: Some(instance.plugin().name().to_string()),
        attestation: kind,
        registration_id: String::new(),
        endorsement_key: None,
        certificates: None,
        primary_key: None,
        note: None,
    };
    match kind {
        Attestation::Tpm => {
            let ek = instance.tpm()?.endorsement_key()?;
            info.registration_id = dps_proto::tpm_registration_id(&ek);
            info.endorsement_key = Some(B64.encode(&ek));
        }
        Attestation::X509 => {
            let x509 = instance.x509()?;
            let chain = x509.certificate_chain_pem()?;
            let (leaf, root) = split_chain(&chain)?;
            info.registration_id = x509.common_name()?;
            info.certificates = Some(EnrollmentCertificates {
                leaf_pem: Some(leaf),
                root_ca_pem: root,
            });
        }
        Attestation::SymmetricKey => {
            info.registration_id = instance.symmetric_key()?.registration_id()?;
        }
        other => return Err(EnrollmentInfoError::Unsupported(other)),
    }
    Ok(info)
}

/// Splits a leaf-first PEM chain into the leaf and, when the last certificate is
/// self-signed, the root CA.
fn split_chain(chain_pem: &str) -> Result<(String, Option<String>), EnrollmentInfoError> {
    let bad = |reason: String| EnrollmentInfoError::Chain { reason };
    let certs = x509_cert::Certificate::load_pem_chain(chain_pem.as_bytes())
        .map_err(|e| bad(format!("is not valid PEM: {e}")))?;
    let Some(leaf) = certs.first() else {
        return Err(bad("is empty".into()));
    };
    let pem = |c: &x509_cert::Certificate| {
        c.to_pem(LineEnding::LF)
            .map_err(|e| bad(format!("cannot be re-encoded as PEM: {e}")))
    };
    let leaf_pem = pem(leaf)?;
    let root = match certs.last() {
        Some(last)
            if certs.len() > 1 && last.tbs_certificate.issuer == last.tbs_certificate.subject =>
        {
            Some(pem(last)?)
        }
        _ => None,
    };
    // Parse once more so a malformed leaf is reported here rather than by DPS.
    x509_cert::Certificate::from_pem(leaf_pem.as_bytes())
        .map_err(|e| bad(format!("has a leaf certificate that does not parse: {e}")))?;
    Ok((leaf_pem, root))
}
