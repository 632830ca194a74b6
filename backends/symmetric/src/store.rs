//! The key file and the registration id file in the plugin's state folder.

use hsm_plugin_sdk::{secret_file, sync, ErrorCode, HsmError};
use std::path::PathBuf;
use std::sync::{RwLock, RwLockReadGuard};
use zeroize::Zeroizing;

type CachedKey = Option<Zeroizing<Vec<u8>>>;

/// Where one device's symmetric key lives. The key is read once and kept (zeroized on drop)
/// so that signing does not touch the file system; concurrent signers share a read lock.
pub(crate) struct KeyStore {
    dir: PathBuf,
    cached: RwLock<CachedKey>,
}

/// The cached key, borrowed under the read lock so that an import waits until signing ends.
pub(crate) struct CachedKeyRef<'a>(RwLockReadGuard<'a, CachedKey>);

impl std::ops::Deref for CachedKeyRef<'_> {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        self.0.as_deref().map(Vec::as_slice).unwrap_or_default()
    }
}

impl KeyStore {
    pub(crate) fn new(dir: PathBuf) -> Self {
        KeyStore {
            dir,
            cached: RwLock::new(None),
        }
    }

    fn key_path(&self) -> PathBuf {
        self.dir.join("key")
    }

    fn id_path(&self) -> PathBuf {
        self.dir.join("registration-id")
    }

    /// The stored key, read from the file on first use; not-found with a hint when none was
    /// imported.
    pub(crate) fn key(&self) -> Result<CachedKeyRef<'_>, HsmError> {
        {
            let cache = sync::read(&self.cached);
            if cache.is_some() {
                return Ok(CachedKeyRef(cache));
            }
        }
        {
            let mut cache = sync::write(&self.cached);
            if cache.is_none() {
                *cache = Some(match secret_file::read(&self.key_path()) {
                    Err(e) if e.code() == ErrorCode::NotFound => {
                        return Err(HsmError::not_found(
                            "no symmetric key imported yet (import one, or run `hsmkit enroll-info --plugin symmetric`)",
                        ))
                    }
                    other => other?,
                });
            }
        }
        // Keys are only ever replaced, never removed, so the cache is still filled here.
        Ok(CachedKeyRef(sync::read(&self.cached)))
    }

    /// The stored registration id, if any.
    pub(crate) fn registration_id(&self) -> Result<Option<String>, HsmError> {
        match secret_file::read_private(&self.id_path()) {
            Ok(bytes) => {
                let text = String::from_utf8(bytes).map_err(|_| {
                    HsmError::device(format!("{} is not UTF-8 text", self.id_path().display()))
                })?;
                Ok(Some(text.trim().to_string()))
            }
            Err(e) if e.code() == ErrorCode::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Replaces the key (and the registration id when given).
    pub(crate) fn save(&self, key: Zeroizing<Vec<u8>>, id: Option<&str>) -> Result<(), HsmError> {
        // Held across the write so that a concurrent signer sees the old key or the new one.
        let mut cache = sync::write(&self.cached);
        secret_file::write(&self.key_path(), &key)?;
        *cache = Some(key);
        if let Some(id) = id {
            secret_file::write(&self.id_path(), id.as_bytes())?;
        }
        Ok(())
    }
}
