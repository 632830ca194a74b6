//! The enrollment folder `hsmkit enroll-info --out DIR` writes and `dps-emulator enroll --from
//! DIR` reads: `enrollment.json` plus companion files (`leaf.pem`, `root-ca.pem`, `ek.b64`) that
//! fill in any field the JSON leaves out. This module is the schema and the rules; reading and
//! writing the files is the caller's.

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::attestation::AttestationKind;
use crate::id::is_valid_id;

/// The JSON file's name inside the folder.
pub const ENROLLMENT_FILE: &str = "enrollment.json";
/// Companion file: base64 of the EK's `TPM2B_PUBLIC`.
pub const EK_FILE: &str = "ek.b64";
/// Companion file: the device's leaf certificate, PEM.
pub const LEAF_FILE: &str = "leaf.pem";
/// Companion file: the root CA of the device's chain, PEM (for group enrollment).
pub const ROOT_CA_FILE: &str = "root-ca.pem";

/// Certificates in `enrollment.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct EnrollmentCertificates {
    /// The leaf (device) certificate, PEM: what an individual enrollment holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leaf_pem: Option<String>,
    /// The root CA, PEM: what a group enrollment holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_ca_pem: Option<String>,
}

/// `enrollment.json`, field for field.
#[derive(Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnrollmentFile {
    /// The plugin that produced it (informational).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin: Option<String>,
    /// How the device attests.
    pub attestation: AttestationKind,
    /// The device's registration id.
    pub registration_id: String,
    /// TPM: base64 of the EK's `TPM2B_PUBLIC`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endorsement_key: Option<String>,
    /// X.509: the leaf and, for a chain that ends in a self-signed root, the root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificates: Option<EnrollmentCertificates>,
    /// Symmetric key: base64 device key. Present only when the key was generated or derived
    /// right then: the one moment the key exists outside the HSM. Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_key: Option<Zeroizing<String>>,
    /// A note for the person enrolling the device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl std::fmt::Debug for EnrollmentFile {
    // The key stays out of debug output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnrollmentFile")
            .field("attestation", &self.attestation)
            .field("registration_id", &self.registration_id)
            .finish_non_exhaustive()
    }
}

/// Why an enrollment folder cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EnrollmentFileError {
    /// `enrollment.json` is not JSON of this schema. Says where, not what (it may hold a key).
    #[error("line {line} column {column}: {what}")]
    Json {
        /// Line of the problem.
        line: usize,
        /// Column of the problem.
        column: usize,
        /// "not valid JSON" or "a field is missing or has the wrong type".
        what: &'static str,
    },
    /// The registration id breaks DPS's id rule.
    #[error("registrationId is not a valid DPS id")]
    InvalidRegistrationId,
    /// A field the attestation needs is in neither the JSON nor its companion file.
    #[error("{0}")]
    Missing(&'static str),
    /// The attestation kind is one this version does not know how to enroll.
    #[error("attestation {0} cannot be enrolled from files")]
    Unsupported(AttestationKind),
    /// A companion file could not be read.
    #[error("{file}: {error}")]
    Companion {
        /// The companion file's name.
        file: &'static str,
        /// The read error (in the message, so not also the `source()`).
        error: std::io::Error,
    },
}

/// The enrollment information of one device, resolved from the JSON and its companions.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EnrollmentInfo {
    /// A TPM device.
    Tpm {
        /// Registration id (base32 of SHA-256 of the EK).
        registration_id: String,
        /// base64 of the EK's `TPM2B_PUBLIC`.
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

impl EnrollmentFile {
    /// Parses `enrollment.json`.
    pub fn parse(text: &str) -> Result<Self, EnrollmentFileError> {
        serde_json::from_str(text).map_err(|e| EnrollmentFileError::Json {
            line: e.line(),
            column: e.column(),
            what: if e.is_data() {
                "a field is missing or has the wrong type"
            } else {
                "not valid JSON"
            },
        })
    }

    /// The companion files this enrollment is written with: (file name, content).
    pub fn companions(&self) -> Vec<(&'static str, &str)> {
        let mut out = Vec::new();
        if let Some(ek) = &self.endorsement_key {
            out.push((EK_FILE, ek.as_str()));
        }
        if let Some(c) = &self.certificates {
            if let Some(leaf) = &c.leaf_pem {
                out.push((LEAF_FILE, leaf.as_str()));
            }
            if let Some(root) = &c.root_ca_pem {
                out.push((ROOT_CA_FILE, root.as_str()));
            }
        }
        out
    }

    /// Resolves the file into an [`EnrollmentInfo`], asking `companion` for a companion
    /// file's text (`Ok(None)` when it does not exist) whenever the JSON leaves a field out.
    pub fn resolve(
        self,
        mut companion: impl FnMut(&'static str) -> std::io::Result<Option<String>>,
    ) -> Result<EnrollmentInfo, EnrollmentFileError> {
        if !is_valid_id(&self.registration_id) {
            return Err(EnrollmentFileError::InvalidRegistrationId);
        }
        let mut read = |file: &'static str| {
            companion(file).map_err(|error| EnrollmentFileError::Companion { file, error })
        };
        let certs = self.certificates.unwrap_or_default();
        match self.attestation {
            AttestationKind::Tpm => {
                let ek = match self.endorsement_key {
                    Some(k) => k,
                    None => read(EK_FILE)?.ok_or(EnrollmentFileError::Missing(
                        "tpm enrollment without endorsementKey or ek.b64",
                    ))?,
                };
                Ok(EnrollmentInfo::Tpm {
                    registration_id: self.registration_id,
                    endorsement_key: ek.trim().to_string(),
                })
            }
            AttestationKind::X509 => {
                let leaf = match certs.leaf_pem {
                    Some(p) => p,
                    None => read(LEAF_FILE)?.ok_or(EnrollmentFileError::Missing(
                        "x509 enrollment without certificates.leafPem or leaf.pem",
                    ))?,
                };
                let root = match certs.root_ca_pem {
                    Some(p) => Some(p),
                    None => read(ROOT_CA_FILE)?,
                };
                Ok(EnrollmentInfo::X509 {
                    registration_id: self.registration_id,
                    leaf_pem: leaf,
                    root_ca_pem: root,
                })
            }
            AttestationKind::SymmetricKey => Ok(EnrollmentInfo::SymmetricKey {
                registration_id: self.registration_id,
                primary_key: self.primary_key.ok_or(EnrollmentFileError::Missing(
                    "symmetricKey enrollment without primaryKey",
                ))?,
            }),
        }
    }
}

impl EnrollmentInfo {
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

    /// The attestation kind.
    pub fn attestation(&self) -> AttestationKind {
        match self {
            Self::Tpm { .. } => AttestationKind::Tpm,
            Self::X509 { .. } => AttestationKind::X509,
            Self::SymmetricKey { .. } => AttestationKind::SymmetricKey,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_companions(_: &'static str) -> std::io::Result<Option<String>> {
        Ok(None)
    }

    #[test]
    fn written_files_read_back_the_same() {
        let file = EnrollmentFile {
            plugin: Some("dice".into()),
            attestation: AttestationKind::X509,
            registration_id: "dev-1".into(),
            endorsement_key: None,
            certificates: Some(EnrollmentCertificates {
                leaf_pem: Some("LEAF".into()),
                root_ca_pem: None,
            }),
            primary_key: None,
            note: None,
        };
        let text = serde_json::to_string_pretty(&file).unwrap_or_default();
        assert!(text.contains("\"attestation\": \"x509\""), "{text}");
        let info = EnrollmentFile::parse(&text)
            .and_then(|f| f.resolve(|name| Ok((name == ROOT_CA_FILE).then(|| "ROOT".to_string()))))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            info,
            EnrollmentInfo::X509 {
                registration_id: "dev-1".into(),
                leaf_pem: "LEAF".into(),
                root_ca_pem: Some("ROOT".into()),
            }
        );
        assert_eq!(file.companions(), vec![(LEAF_FILE, "LEAF")]);
    }

    #[test]
    fn what_is_missing_is_named() {
        let tpm = r#"{"attestation":"tpm","registrationId":"r"}"#;
        let err = EnrollmentFile::parse(tpm)
            .and_then(|f| f.resolve(no_companions))
            .map(|_| ())
            .unwrap_err();
        assert!(err.to_string().contains("ek.b64"), "{err}");
        let bad_kind = r#"{"attestation":"psk","registrationId":"r"}"#;
        assert!(matches!(
            EnrollmentFile::parse(bad_kind),
            Err(EnrollmentFileError::Json { .. })
        ));
        let bad_id = r#"{"attestation":"symmetricKey","registrationId":"a/b","primaryKey":"k"}"#;
        assert!(matches!(
            EnrollmentFile::parse(bad_id).and_then(|f| f.resolve(no_companions)),
            Err(EnrollmentFileError::InvalidRegistrationId)
        ));
    }
}
