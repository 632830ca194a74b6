//! Reading what `hsmkit enroll-info --out DIR` writes: `DIR/enrollment.json`
//! (`registrationId`, `attestation` = tpm | x509 | symmetricKey, `endorsementKey`,
//! `certificates.leafPem` / `certificates.rootCaPem`, `primaryKey`) plus `leaf.pem`,
//! `root-ca.pem`, `ek.b64`, which fill in any field the JSON leaves out.

use serde::Deserialize;
use std::path::Path;
use zeroize::Zeroizing;

use crate::error::{io_at, EmulatorError, Result};
use crate::model::{
    AttestationMechanism, EnrollmentCommon, EnrollmentGroup, IndividualEnrollment,
    SymmetricKeyAttestation, TpmAttestation, X509Attestation, X509CertificateWithInfo,
    X509Certificates,
};

/// The file's name inside the folder.
pub const ENROLLMENT_FILE: &str = "enrollment.json";

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CertificatesJson {
    leaf_pem: Option<String>,
    root_ca_pem: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EnrollmentJson {
    registration_id: String,
    attestation: String,
    endorsement_key: Option<String>,
    certificates: Option<CertificatesJson>,
    primary_key: Option<String>,
}

/// The enrollment information of one device.
#[derive(Clone, PartialEq, Eq)]
pub enum EnrollmentInfo {
    /// A TPM device.
    Tpm {
        /// Registration id (base32 of SHA-256 of the EK).
        registration_id: String,
        /// base64 of the EK's TPM2B_PUBLIC.
        endorsement_key: String,
    },
    /// An X.509 device.
    X509 {
        /// Registration id (the leaf's CN).
        registration_id: String,
        /// The leaf certificate, PEM.
        leaf_pem: String,
        /// The root CA, PEM, for group enrollment.
        root_ca_pem: Option<String>,
    },
    /// A symmetric-key device.
    SymmetricKey {
        /// Registration id.
        registration_id: String,
        /// base64 key (secret).
        primary_key: Zeroizing<String>,
    },
}

impl std::fmt::Debug for EnrollmentInfo {
    // The symmetric key stays out of debug output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnrollmentInfo")
            .field("registration_id", &self.registration_id())
            .finish_non_exhaustive()
    }
}

fn invalid(msg: impl Into<String>) -> EmulatorError {
    EmulatorError::InvalidEnrollment(msg.into())
}

fn read_optional(path: &Path) -> Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_at(path)(e)),
    }
}

impl EnrollmentInfo {
    /// Reads `dir/enrollment.json` and its companion files.
    pub fn read_dir(dir: &Path) -> Result<Self> {
        let path = dir.join(ENROLLMENT_FILE);
        let text = std::fs::read_to_string(&path).map_err(io_at(&path))?;
        let j: EnrollmentJson = serde_json::from_str(&text).map_err(|e| {
            invalid(format!(
                "{}: line {} column {}: {}",
                path.display(),
                e.line(),
                e.column(),
                if e.is_data() {
                    "a field is missing or has the wrong type"
                } else {
                    "not valid JSON"
                }
            ))
        })?;
        if !crate::validate::is_valid_id(&j.registration_id) {
            return Err(invalid("registrationId is not a valid DPS id"));
        }
        let certs = j.certificates.unwrap_or(CertificatesJson {
            leaf_pem: None,
            root_ca_pem: None,
        });
        match j.attestation.as_str() {
            "tpm" => {
                let ek = match j.endorsement_key {
                    Some(k) => k,
                    None => read_optional(&dir.join("ek.b64"))?.ok_or_else(|| {
                        invalid("tpm enrollment without endorsementKey or ek.b64")
                    })?,
                };
                Ok(Self::Tpm {
                    registration_id: j.registration_id,
                    endorsement_key: ek.trim().to_string(),
                })
            }
            "x509" => {
                let leaf = match certs.leaf_pem {
                    Some(p) => p,
                    None => read_optional(&dir.join("leaf.pem"))?.ok_or_else(|| {
                        invalid("x509 enrollment without certificates.leafPem or leaf.pem")
                    })?,
                };
                let root = match certs.root_ca_pem {
                    Some(p) => Some(p),
                    None => read_optional(&dir.join("root-ca.pem"))?,
                };
                Ok(Self::X509 {
                    registration_id: j.registration_id,
                    leaf_pem: leaf,
                    root_ca_pem: root,
                })
            }
            "symmetricKey" => Ok(Self::SymmetricKey {
                registration_id: j.registration_id,
                primary_key: Zeroizing::new(
                    j.primary_key
                        .ok_or_else(|| invalid("symmetricKey enrollment without primaryKey"))?,
                ),
            }),
            other => Err(invalid(format!(
                "attestation {other:?} is not one of tpm, x509, symmetricKey"
            ))),
        }
    }

    /// The device's registration id.
    pub fn registration_id(&self) -> &str {
        match self {
            Self::Tpm {
                registration_id, ..
            }
            | Self::X509 {
                registration_id, ..
            }
            | Self::SymmetricKey {
                registration_id, ..
            } => registration_id,
        }
    }

    /// An individual enrollment for this device.
    pub fn individual(&self) -> IndividualEnrollment {
        let attestation = match self {
            Self::Tpm {
                endorsement_key, ..
            } => AttestationMechanism {
                kind: "tpm".into(),
                tpm: Some(TpmAttestation {
                    endorsement_key: endorsement_key.clone(),
                    storage_root_key: None,
                }),
                x509: None,
                symmetric_key: None,
            },
            Self::X509 { leaf_pem, .. } => AttestationMechanism {
                kind: "x509".into(),
                tpm: None,
                x509: Some(X509Attestation {
                    client_certificates: Some(primary_cert(leaf_pem)),
                    ..Default::default()
                }),
                symmetric_key: None,
            },
            Self::SymmetricKey { primary_key, .. } => AttestationMechanism {
                kind: "symmetricKey".into(),
                tpm: None,
                x509: None,
                symmetric_key: Some(SymmetricKeyAttestation {
                    primary_key: Some(primary_key.to_string()),
                    secondary_key: None,
                }),
            },
        };
        IndividualEnrollment {
            registration_id: self.registration_id().to_string(),
            device_id: None,
            attestation,
            common: EnrollmentCommon::default(),
        }
    }

    /// A group enrollment from this device's files: the root CA for X.509, the key as the group
    /// key for symmetric keys. TPM devices cannot be enrolled in groups.
    pub fn group(&self, group_id: &str) -> Result<EnrollmentGroup> {
        let attestation = match self {
            Self::Tpm { .. } => {
                return Err(invalid("TPM devices can only be enrolled individually"))
            }
            Self::X509 { root_ca_pem, .. } => AttestationMechanism {
                kind: "x509".into(),
                tpm: None,
                x509: Some(X509Attestation {
                    signing_certificates: Some(primary_cert(root_ca_pem.as_deref().ok_or_else(
                        || invalid("group enrollment needs certificates.rootCaPem or root-ca.pem"),
                    )?)),
                    ..Default::default()
                }),
                symmetric_key: None,
            },
            Self::SymmetricKey { primary_key, .. } => AttestationMechanism {
                kind: "symmetricKey".into(),
                tpm: None,
                x509: None,
                symmetric_key: Some(SymmetricKeyAttestation {
                    primary_key: Some(primary_key.to_string()),
                    secondary_key: None,
                }),
            },
        };
        Ok(EnrollmentGroup {
            enrollment_group_id: group_id.to_string(),
            attestation,
            common: EnrollmentCommon::default(),
        })
    }
}

fn primary_cert(pem: &str) -> X509Certificates {
    X509Certificates {
        primary: Some(X509CertificateWithInfo {
            certificate: Some(pem.to_string()),
            info: None,
        }),
        secondary: None,
    }
}
