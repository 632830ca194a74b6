//! The key file and the registration id file in the plugin's state folder.

use hsm_plugin_sdk::{secret_file, ErrorCode, HsmError};
use std::path::PathBuf;
use zeroize::Zeroizing;

/// Where one device's symmetric key lives.
pub(crate) struct KeyStore {
    dir: PathBuf,
}

impl KeyStore {
    pub(crate) fn new(dir: PathBuf) -> Self {
        KeyStore { dir }
    }

    fn key_path(&self) -> PathBuf {
        self.dir.join("key")
    }

    fn id_path(&self) -> PathBuf {
        self.dir.join("registration-id")
    }

    /// The stored key; not-found with a hint when none was imported.
    pub(crate) fn key(&self) -> Result<Zeroizing<Vec<u8>>, HsmError> {
        match secret_file::read(&self.key_path()) {
            Err(e) if e.code() == ErrorCode::NotFound => Err(HsmError::not_found(
                "no symmetric key imported yet (import one, or run `hsmkit enroll-info --plugin symmetric`)",
            )),
            other => other,
        }
    }

    /// The stored registration id, if any.
    pub(crate) fn registration_id(&self) -> Result<Option<String>, HsmError> {
        match std::fs::read_to_string(self.id_path()) {
            Ok(s) => Ok(Some(s.trim().to_string())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(HsmError::device(format!(
                "cannot read {}: {e}",
                self.id_path().display()
            ))),
        }
    }

    /// Replaces the key (and the registration id when given).
    pub(crate) fn save(&self, key: Zeroizing<Vec<u8>>, id: Option<&str>) -> Result<(), HsmError> {
        secret_file::write(&self.key_path(), &key)?;
        if let Some(id) = id {
            secret_file::write(&self.id_path(), id.as_bytes())?;
        }
        Ok(())
    }
}
