//! Files that hold secrets: private folders (0700) and key files (0600), written atomically.

use crate::HsmError;
use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use zeroize::Zeroizing;

/// Creates `dir` and its missing parents with mode 0700. An existing folder is left as it is
/// unless other users can write to it, which is refused.
pub fn create_private_dir(dir: &Path) -> Result<(), HsmError> {
    if !dir.exists() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| HsmError::device(format!("cannot create {}: {e}", dir.display())))?;
    }
    let meta = fs::metadata(dir)
        .map_err(|e| HsmError::device(format!("cannot read {}: {e}", dir.display())))?;
    if !meta.is_dir() {
        return Err(HsmError::invalid_argument(format!(
            "{} is not a folder",
            dir.display()
        )));
    }
    if meta.permissions().mode() & 0o002 != 0 {
        return Err(HsmError::invalid_argument(format!(
            "refusing state folder {}: it is writable by every user (chmod o-w it)",
            dir.display()
        )));
    }
    Ok(())
}

/// Writes `bytes` to `path` with mode 0600 through a temporary file and a rename, so that a
/// crash leaves either the old or the new content, never a torn file.
pub fn write(path: &Path, bytes: &[u8]) -> Result<(), HsmError> {
    let parent = path.parent().unwrap_or_else(|| Path::new("."));
    create_private_dir(parent)?;
    let file_name = path.file_name().ok_or_else(|| {
        HsmError::invalid_argument(format!("{} is not a file path", path.display()))
    })?;
    let tmp = parent.join(format!(
        ".{}.tmp{}",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| -> std::io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        if let Ok(d) = fs::File::open(parent) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(HsmError::device(format!(
            "cannot write {}: {e}",
            path.display()
        )));
    }
    Ok(())
}

/// Reads a secret file, refusing one that other users can read or write.
pub fn read(path: &Path) -> Result<Zeroizing<Vec<u8>>, HsmError> {
    let mut f = fs::File::open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            HsmError::not_found(format!("{} does not exist", path.display()))
        } else {
            HsmError::device(format!("cannot open {}: {e}", path.display()))
        }
    })?;
    let mode = f
        .metadata()
        .map_err(|e| HsmError::device(format!("cannot stat {}: {e}", path.display())))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(HsmError::invalid_argument(format!(
            "refusing key file {}: its mode is {:o}, other users may read it (chmod 600 it)",
            path.display(),
            mode & 0o777
        )));
    }
    let mut buf = Zeroizing::new(Vec::new());
    f.read_to_end(&mut buf)
        .map_err(|e| HsmError::device(format!("cannot read {}: {e}", path.display())))?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

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
