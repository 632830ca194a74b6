//! Files that hold secrets: private folders (0700) and key files (0600), written atomically.
//!
//! A thin layer over [`hsm_secure_fs::state`], which holds the one copy of the rules: folders
//! owned by this user or root and writable by nobody else (checked on an open descriptor),
//! writes through randomly named `O_EXCL` temp files, fsync and rename, temp files of killed
//! runs removed, secret files read with `O_NOFOLLOW` and checked on the descriptor. This module
//! only turns its errors into [`HsmError`]s.

use crate::HsmError;
use hsm_secure_fs::state::{self, StateError, PRIVATE_FILE_MODE};
use std::path::Path;
use zeroize::Zeroizing;

pub use hsm_secure_fs::state::TEMP_PREFIX;

fn hsm_error(e: StateError) -> HsmError {
    if e.is_not_found() {
        HsmError::not_found(e.to_string())
    } else if e.is_refusal() {
        HsmError::invalid_argument(e.to_string())
    } else {
        HsmError::device(e.to_string())
    }
}

/// Creates `dir` and its missing parents with mode 0700, refuses it unless it belongs to this
/// user or root and only its owner can write to it, and removes temp files that killed
/// writers left in it.
pub fn create_private_dir(dir: &Path) -> Result<(), HsmError> {
    state::prepare_dir(dir).map(drop).map_err(hsm_error)
}

/// Writes `bytes` to `path` with mode 0600 through a temporary file and a rename, so that a
/// crash leaves either the old or the new content, never a torn file. The folder is prepared
/// as [`create_private_dir`] does.
pub fn write(path: &Path, bytes: &[u8]) -> Result<(), HsmError> {
    state::write_atomic(path, bytes, PRIVATE_FILE_MODE).map_err(hsm_error)
}

/// Creates `path` (mode 0600) with `bytes` only if it does not exist, in one step: true when
/// this call created it, false when another writer got there first (read theirs then).
pub fn create_if_absent(path: &Path, bytes: &[u8]) -> Result<bool, HsmError> {
    state::create_if_absent(path, bytes, PRIVATE_FILE_MODE).map_err(hsm_error)
}

/// Reads a secret file, refusing a symlink, a file of another user, and one that other users
/// can read or write. [`crate::ErrorCode::NotFound`] when it (or its folder) does not exist.
pub fn read(path: &Path) -> Result<Zeroizing<Vec<u8>>, HsmError> {
    state::read_secret(path).map_err(hsm_error)
}

/// Reads a private file that is not secret (a registration id): checked like [`read`] except
/// that other users may read it.
pub fn read_private(path: &Path) -> Result<Vec<u8>, HsmError> {
    state::read_private(path).map_err(hsm_error)
}

/// Removes the file at `path`: true when it was there, false when it was already missing (a
/// delete that finds nothing is not an error for callers that remove a key and its companions).
/// Any other failure is a [`crate::ErrorCode::Device`] error naming the path.
pub fn remove(path: &Path) -> Result<bool, HsmError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(HsmError::device(format!(
            "cannot remove {}: {e}",
            path.display()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn remove_says_whether_the_file_was_there() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        write(&path, b"secret").unwrap();
        assert!(remove(&path).unwrap());
        assert!(!path.exists());
        assert!(
            !remove(&path).unwrap(),
            "a missing file is false, not an error"
        );
        // A folder in the way is a device error that names the path.
        let sub = dir.path().join("sub");
        fs::create_dir(&sub).unwrap();
        let err = remove(&sub).unwrap_err();
        assert_eq!(err.code(), crate::ErrorCode::Device);
        assert!(err.to_string().contains("sub"), "{err}");
    }

    #[test]
    fn written_files_are_private_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/key");
        write(&path, b"secret").unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dmode = fs::metadata(dir.path().join("sub"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(dmode, 0o700);
        assert_eq!(&read(&path).unwrap()[..], b"secret");
        write(&path, b"new").unwrap();
        assert_eq!(&read(&path).unwrap()[..], b"new");
    }

    #[test]
    fn readable_by_others_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        fs::write(&path, b"x").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let e = read(&path).unwrap_err();
        assert!(e.message().contains("chmod 600"), "{e}");
        let missing = read(&dir.path().join("none")).unwrap_err();
        assert_eq!(missing.code(), crate::ErrorCode::NotFound);
    }
}
