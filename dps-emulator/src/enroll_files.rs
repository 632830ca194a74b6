//! Enrolling from what `hsmkit enroll-info --out DIR` writes: `DIR/enrollment.json` and its
//! companion files. The schema and its rules are dps-proto's ([`dps_proto::enrollment_file`],
//! the writer's too); this module reads the folder and turns the result into enrollments.

use std::path::Path;

use dps_proto::enrollment_file::{EnrollmentFile, EnrollmentFileError};
pub use dps_proto::enrollment_file::{EnrollmentInfo, ENROLLMENT_FILE};

use crate::error::{io_at, EmulatorError, Result};
use crate::model::{AttestationMechanism, EnrollmentGroup, IndividualEnrollment};

fn invalid(msg: impl Into<String>) -> EmulatorError {
    EmulatorError::InvalidEnrollment(msg.into())
}

fn read_optional(path: &Path) -> std::io::Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// What the emulator does with an enrollment folder.
pub trait EnrollmentInfoExt: Sized {
    /// Reads `dir/enrollment.json` and its companion files.
    fn read_dir(dir: &Path) -> Result<Self>;
    /// An individual enrollment for this device.
    fn individual(&self) -> IndividualEnrollment;
    /// A group enrollment from this device's files: the root CA for X.509, the key as the
    /// group key for symmetric keys. TPM devices cannot be enrolled in groups.
    fn group(&self, group_id: &str) -> Result<EnrollmentGroup>;
}

impl EnrollmentInfoExt for EnrollmentInfo {
    fn read_dir(dir: &Path) -> Result<Self> {
        let path = dir.join(ENROLLMENT_FILE);
        let text = std::fs::read_to_string(&path).map_err(io_at(&path))?;
        let file = EnrollmentFile::parse(&text)
            .map_err(|e| invalid(format!("{}: {e}", path.display())))?;
        file.resolve(|name| read_optional(&dir.join(name)))
            .map_err(|e| match e {
                EnrollmentFileError::Companion { file, error } => io_at(&dir.join(file))(error),
                other => invalid(other.to_string()),
            })
    }

    fn individual(&self) -> IndividualEnrollment {
        let attestation = match self {
            Self::Tpm {
                endorsement_key, ..
            } => AttestationMechanism::tpm(endorsement_key.clone()),
            Self::X509 { leaf_pem, .. } => AttestationMechanism::x509_client(leaf_pem.clone()),
            Self::SymmetricKey { primary_key, .. } => {
                AttestationMechanism::symmetric_key(Some(primary_key.to_string()))
            }
            // EnrollmentInfo grows with the attestation kinds dps-proto knows.
            other => AttestationMechanism::new(other.attestation()),
        };
        IndividualEnrollment::new(self.registration_id().to_string(), attestation)
    }

    fn group(&self, group_id: &str) -> Result<EnrollmentGroup> {
        let attestation = match self {
            Self::X509 { root_ca_pem, .. } => {
                AttestationMechanism::x509_signing(root_ca_pem.clone().ok_or_else(|| {
                    invalid("group enrollment needs certificates.rootCaPem or root-ca.pem")
                })?)
            }
            Self::SymmetricKey { primary_key, .. } => {
                AttestationMechanism::symmetric_key(Some(primary_key.to_string()))
            }
            Self::Tpm { .. } => {
                return Err(invalid("TPM devices can only be enrolled individually"))
            }
            other => {
                return Err(invalid(format!(
                    "{} devices cannot be enrolled in groups",
                    other.attestation()
                )))
            }
        };
        Ok(EnrollmentGroup::new(group_id.to_string(), attestation))
    }
}
