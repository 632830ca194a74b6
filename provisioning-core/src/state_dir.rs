//! The state folder: keys, simulated TPM state, the provisioning result.

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

/// Errors preparing the state folder: the folder, the owner or mode found and the fix.
pub type StateDirError = hsm_secure_fs::state::StateError;

/// Creates `dir` (and missing parents) with mode 0700 when missing; refuses it unless it is a
/// real folder (not a symlink) owned by this user or root that nobody else can write to; and
/// removes temp files that a killed run left in it (only those whose writer pid is gone).
pub fn prepare_state_dir(dir: &Path) -> Result<(), StateDirError> {
    hsm_secure_fs::state::prepare_dir(dir).map(drop)
}
