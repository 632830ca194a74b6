//! The key file and the registration id file in the plugin's state folder.

use hsm_plugin_sdk::{secret_file, ErrorCode, HsmError};
use std::path::PathBuf;
use zeroize::Zeroizing;

/// Where one device's symmetric key lives. The key is read once and kept (zeroized on drop)
/// so that signing does not touch the file system.
pub(crate) struct KeyStore {
    dir: PathBuf,
    cached: Option<Zeroizing<Vec<u8>>>,
}

impl KeyStore {
    pub(crate) fn new(dir: PathBuf) -> Self {
        KeyStore { dir, cached: None }
    }

    fn key_path(&self) -> PathBuf {
        self.dir.join("key")
    }

    fn id_path(&self) -> PathBuf {
        self.dir.join("registration-id")
    }

    /// The stored key; not-found with a hint when none was imported.
    pub(crate) fn key(&mut self) -> Result<&[u8], HsmError> {
        if self.cached.is_none() {
            let key = match secret_file::read(&self.key_path()) {
                Err(e) if e.code() == ErrorCode::NotFound => {
                    return Err(HsmError::not_found(
                        "no symmetric key imported yet (import one, or run `hsmkit enroll-info --plugin symmetric`)",
                    ))
                }
                other => other?,
            };
            self.cached = Some(key);
        }
        Ok(self
            .cached
            .as_deref()
            .map(Vec::as_slice)
            .unwrap_or_default())
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
    pub(crate) fn save(
        &mut self,
        key: Zeroizing<Vec<u8>>,
        id: Option<&str>,
    ) -> Result<(), HsmError> {
        secret_file::write(&self.key_path(), &key)?;
        self.cached = Some(key);
        if let Some(id) = id {
            secret_file::write(&self.id_path(), id.as_bytes())?;
        }
        Ok(())
    }
}
