//! The provisioning result in the state folder: `<state_dir>/provisioning.json`, written
//! atomically (temp file, fsync, rename) with mode 0600 in a 0700 folder, so a crash leaves
//! either the old record or the new one, never half of one.

use crate::dps::{Attestation, RegistrationResult};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
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
}

/// Reading or writing the record failed.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// File system error.
    #[error("{path}: {source}; check that the state folder exists and belongs to this user")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The file is not a record this version understands.
    #[error("{path} is not a valid provisioning record ({reason}); provision again with --force to replace it")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// The record's path in `state_dir`.
pub fn record_path(state_dir: &Path) -> PathBuf {
    state_dir.join(RECORD_FILE)
}

/// The saved record, or `None` when there is none yet.
pub fn load(state_dir: &Path) -> Result<Option<ProvisioningRecord>, RecordError> {
    let path = record_path(state_dir);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(RecordError::Io { path, source }),
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

/// Saves `record` atomically, creating `state_dir` (0700) when missing.
pub fn save(state_dir: &Path, record: &ProvisioningRecord) -> Result<(), RecordError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| RecordError::Io { path, source }
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(state_dir)
        .map_err(io(state_dir))?;
    let json = serde_json::to_vec_pretty(record).map_err(|e| RecordError::Corrupt {
        path: record_path(state_dir),
        reason: e.to_string(),
    })?;
    let target = record_path(state_dir);
    let tmp = state_dir.join(format!(".{RECORD_FILE}.{}.tmp", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        // An older temp file may have been created with other bits.
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        f.write_all(&json)?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        std::fs::rename(&tmp, &target)?;
        // The rename is durable only once the folder is synced.
        std::fs::File::open(state_dir)?.sync_all()
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        RecordError::Io {
            path: target.clone(),
            source: e,
        }
    })
}
