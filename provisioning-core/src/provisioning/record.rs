//! The provisioning result in the state folder: `<state_dir>/provisioning.json`, written
//! atomically with mode 0600 in a checked 0700 folder through `hsm_secure_fs::state` (random
//! `O_EXCL` temp file, fsync, rename, folder fsync), so a crash leaves either the old record or
//! the new one, never half of one, and a planted symlink is never followed.

use crate::dps::{Attestation, RegistrationResult};
use hsm_secure_fs::state::{self, PrivateDir, StateError, PRIVATE_FILE_MODE};
use serde::{Deserialize, Serialize};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};

/// The record's file name inside the state folder.
pub const RECORD_FILE: &str = "provisioning.json";

/// The record format version this code writes and reads.
pub const RECORD_VERSION: u32 = 1;

/// What a later run needs to use the assignment without asking DPS again.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProvisioningRecord {
    /// Format version ([`RECORD_VERSION`]).
    pub version: u32,
    /// The DPS endpoint used.
    pub endpoint: String,
    /// The id scope used.
    pub id_scope: String,
    /// The plugin that holds the identity (its name).
    pub plugin: String,
    /// The registration outcome.
    #[serde(flatten)]
    pub result: RegistrationResult,
    /// When it was provisioned (Unix seconds).
    pub provisioned_at_unix: u64,
    /// The plugin label of the operational key the issued certificate is for, when it is not
    /// [`crate::issuance::OPERATIONAL_KEY_LABEL`] (a renewal moves to the next generation's
    /// label, see [`crate::issuance::next_operational_key_label`]). Absent in records written
    /// before renewal existed, which therefore mean the first label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operational_key_label: Option<String>,
}

impl ProvisioningRecord {
    /// The IoT hub host name.
    pub fn assigned_hub(&self) -> &str {
        &self.result.assigned_hub
    }

    /// The device id on the hub.
    pub fn device_id(&self) -> &str {
        &self.result.device_id
    }

    /// The attestation the device used.
    pub fn attestation(&self) -> Attestation {
        self.result.attestation
    }

    /// The label of the operational key whose issued certificate the device uses, when DPS
    /// issued one (`issuedCertificateChain` recorded); `None` otherwise. One rule for every
    /// reader: the recorded label, or [`crate::issuance::OPERATIONAL_KEY_LABEL`] when none is
    /// recorded.
    pub fn operational_key_label(&self) -> Option<&str> {
        self.result.issued_certificate_chain.as_ref()?;
        Some(
            self.operational_key_label
                .as_deref()
                .unwrap_or(crate::issuance::OPERATIONAL_KEY_LABEL),
        )
    }
}

/// Reading or writing the record failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// The state folder or the record file was refused (owner, mode, symlink), or the file
    /// system failed; the message names the path and the fix.
    #[error(transparent)]
    State(#[from] StateError),
    /// The file is not a record this version understands.
    #[error("{path} is not a valid provisioning record ({reason}); provision again with --force to replace it")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

impl RecordError {
    /// The failure's class, for exit codes and `--json` ([`crate::error_kind`]).
    pub fn error_kind(&self) -> crate::error_kind::ErrorKind {
        use crate::error_kind::ErrorKind;
        // The state folder or the record file: refused modes, or a file to replace.
        ErrorKind::Config
    }
}

/// The record's path in `state_dir`.
pub fn record_path(state_dir: &Path) -> PathBuf {
    state_dir.join(RECORD_FILE)
}

/// The saved record, or `None` when there is none yet. The file is opened without following
/// a symlink and refused unless it and its folder belong to this user or root and nobody else
/// can write them.
pub fn load(state_dir: &Path) -> Result<Option<ProvisioningRecord>, RecordError> {
    let path = record_path(state_dir);
    let bytes = match state::read_private(&path) {
        Ok(b) => b,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let record: ProvisioningRecord =
        serde_json::from_slice(&bytes).map_err(|e| RecordError::Corrupt {
            path: path.clone(),
            reason: e.to_string(),
        })?;
    if record.version != RECORD_VERSION {
        return Err(RecordError::Corrupt {
            path,
            reason: format!(
                "format version {} (this hsmkit reads {RECORD_VERSION})",
                record.version
            ),
        });
    }
    Ok(Some(record))
}

/// Saves `record` atomically (mode 0600), creating `state_dir` (0700) when missing and
/// refusing it unless it belongs to this user or root and nobody else can write to it.
pub fn save(state_dir: &Path, record: &ProvisioningRecord) -> Result<(), RecordError> {
    let mut json = serde_json::to_vec_pretty(record).map_err(|e| RecordError::Corrupt {
        path: record_path(state_dir),
        reason: e.to_string(),
    })?;
    json.push(b'\n');
    PrivateDir::prepare(state_dir)?.write(OsStr::new(RECORD_FILE), &json, PRIVATE_FILE_MODE)?;
    Ok(())
}
