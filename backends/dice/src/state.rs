//! The backend's files in the state folder: the UDS and the development root CA key.
//!
//! `<state_dir>/dice/uds` holds 32 raw bytes, `<state_dir>/dice/root-ca-key.pem` a PKCS#8 PEM
//! P-256 key; both are created on first use (mode 0600 in a 0700 folder) and refused when
//! other users can read them. Creation is "create if absent" (a random temp file linked into
//! place without replacing, through `hsm_secure_fs`), so two processes starting at once still
//! end up with one identity.

use std::path::{Path, PathBuf};

use hsm_plugin_sdk::{secret_file, ErrorCode};
use p256::ecdsa::SigningKey;
use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey, LineEnding};
use rand_core::{OsRng, RngCore};
use zeroize::{Zeroize, Zeroizing};

use crate::derive::{Secret32, CDI_SIZE};
use crate::error::DiceError;

/// Folder of this backend inside the state folder.
pub fn dice_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("dice")
}

/// Path of the UDS file.
pub fn uds_path(state_dir: &Path) -> PathBuf {
    dice_dir(state_dir).join("uds")
}

/// Path of the default development root CA key.
pub fn root_key_path(state_dir: &Path) -> PathBuf {
    dice_dir(state_dir).join("root-ca-key.pem")
}

fn bad_file(path: &Path, reason: impl Into<String>) -> DiceError {
    DiceError::BadStateFile {
        path: path.display().to_string(),
        reason: reason.into(),
    }
}

/// Reads a secret file; `Ok(None)` when it does not exist.
fn read_optional(path: &Path) -> Result<Option<Zeroizing<Vec<u8>>>, DiceError> {
    match secret_file::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.code() == ErrorCode::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Parses UDS file content: exactly 32 bytes.
fn parse_uds(path: &Path, bytes: &[u8]) -> Result<Secret32, DiceError> {
    let mut raw: [u8; CDI_SIZE] = bytes.try_into().map_err(|_| {
        bad_file(
            path,
            format!(
                "a UDS file holds exactly {CDI_SIZE} bytes, this one has {}",
                bytes.len()
            ),
        )
    })?;
    let uds = Secret32::new(raw);
    raw.zeroize();
    Ok(uds)
}

/// The device's UDS: read from `<state_dir>/dice/uds`, or created there from 32 random bytes
/// when absent.
pub fn load_or_create_uds(state_dir: &Path) -> Result<Secret32, DiceError> {
    // The state folder too must be ours: its owner could swap `dice/` between runs.
    secret_file::create_private_dir(state_dir)?;
    let path = uds_path(state_dir);
    if let Some(bytes) = read_optional(&path)? {
        return parse_uds(&path, &bytes);
    }
    let mut fresh = Zeroizing::new([0u8; CDI_SIZE]);
    OsRng
        .try_fill_bytes(&mut fresh[..])
        .map_err(|_| DiceError::Derivation("the operating system random source failed"))?;
    if secret_file::create_if_absent(&path, &fresh[..])? {
        hsm_plugin_sdk::log::info(&format!("created a new UDS at {}", path.display()));
        return parse_uds(&path, &fresh[..]);
    }
    let bytes = secret_file::read(&path)?;
    parse_uds(&path, &bytes)
}

fn parse_root_key(path: &Path, bytes: &[u8]) -> Result<SigningKey, DiceError> {
    let text = std::str::from_utf8(bytes).map_err(|_| bad_file(path, "is not PEM text"))?;
    SigningKey::from_pkcs8_pem(text)
        .map_err(|_| bad_file(path, "is not a PKCS#8 PEM P-256 private key"))
}

/// The development root CA key. With `given` set, that file must exist and hold a PKCS#8 PEM
/// P-256 key; otherwise `<state_dir>/dice/root-ca-key.pem` is used, created when absent.
pub fn load_or_create_root_key(
    state_dir: &Path,
    given: Option<&Path>,
) -> Result<SigningKey, DiceError> {
    if let Some(path) = given {
        let bytes = read_optional(path)?
            .ok_or_else(|| bad_file(path, "does not exist (root_ca_key_path)"))?;
        return parse_root_key(path, &bytes);
    }
    secret_file::create_private_dir(state_dir)?;
    let path = root_key_path(state_dir);
    if let Some(bytes) = read_optional(&path)? {
        return parse_root_key(&path, &bytes);
    }
    let key = SigningKey::random(&mut OsRng);
    let pem = key
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|_| DiceError::Derivation("encoding the new root CA key"))?;
    if secret_file::create_if_absent(&path, pem.as_bytes())? {
        hsm_plugin_sdk::log::info(&format!(
            "created a development root CA key at {}",
            path.display()
        ));
        return Ok(key);
    }
    let bytes = secret_file::read(&path)?;
    parse_root_key(&path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn uds_is_created_private_and_stable() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_create_uds(dir.path()).unwrap();
        let second = load_or_create_uds(dir.path()).unwrap();
        assert_eq!(first.expose(), second.expose());
        let mode = std::fs::metadata(uds_path(dir.path()))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let dir_mode = std::fs::metadata(dice_dir(dir.path()))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(dir_mode & 0o777, 0o700);
    }

    #[test]
    fn truncated_uds_is_refused_without_revealing_it() {
        let dir = tempfile::tempdir().unwrap();
        secret_file::write(&uds_path(dir.path()), &[7u8; 31]).unwrap();
        let error = load_or_create_uds(dir.path()).unwrap_err().to_string();
        assert!(error.contains("exactly 32 bytes"), "{error}");
        assert!(!error.contains("0707"), "{error}");
    }

    #[test]
    fn world_readable_uds_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = uds_path(dir.path());
        secret_file::write(&path, &[7u8; 32]).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(load_or_create_uds(dir.path()).is_err());
    }

    #[test]
    fn root_key_is_created_once_and_given_keys_must_exist() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_create_root_key(dir.path(), None).unwrap();
        let second = load_or_create_root_key(dir.path(), None).unwrap();
        assert_eq!(first.to_bytes(), second.to_bytes());
        let given = load_or_create_root_key(dir.path(), Some(&root_key_path(dir.path()))).unwrap();
        assert_eq!(first.to_bytes(), given.to_bytes());
        let missing = dir.path().join("nope.pem");
        assert!(load_or_create_root_key(dir.path(), Some(&missing)).is_err());
        secret_file::write(&missing, b"not a key").unwrap();
        let error = load_or_create_root_key(dir.path(), Some(&missing))
            .unwrap_err()
            .to_string();
        assert!(error.contains("PKCS#8"), "{error}");
    }
}
