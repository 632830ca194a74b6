//! The state folder: keys, simulated TPM state, the provisioning result.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Environment variable naming the state folder.
pub const STATE_DIR_ENV: &str = "HSMKIT_STATE_DIR";

/// The state folder when neither the flag, `HSMKIT_STATE_DIR` nor the config names one:
/// `/var/lib/hsmkit` for root, else `$XDG_STATE_HOME/hsmkit` or `~/.local/state/hsmkit`.
pub fn default_state_dir() -> Option<PathBuf> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return Some(PathBuf::from("/var/lib/hsmkit"));
    }
    if let Some(x) = std::env::var_os("XDG_STATE_HOME").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(x).join("hsmkit"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state/hsmkit"))
}

/// Errors preparing the state folder.
#[derive(Debug, thiserror::Error)]
pub enum StateDirError {
    /// It could not be created or read.
    #[error("state folder {path}: {source}")]
    Io {
        /// The folder.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// Other users can write to it.
    #[error(
        "state folder {path} is writable by other users (mode {mode:o}); run `chmod 700 {path}`"
    )]
    Insecure {
        /// The folder.
        path: PathBuf,
        /// Its mode.
        mode: u32,
    },
}

/// Creates `dir` with mode 0700 if missing, and refuses one that others can write to.
pub fn prepare_state_dir(dir: &Path) -> Result<(), StateDirError> {
    let io = |source| StateDirError::Io {
        path: dir.to_path_buf(),
        source,
    };
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io)?;
    }
    let mode = std::fs::metadata(dir).map_err(io)?.permissions().mode();
    if mode & 0o022 != 0 {
        return Err(StateDirError::Insecure {
            path: dir.to_path_buf(),
            mode: mode & 0o7777,
        });
    }
    Ok(())
}
