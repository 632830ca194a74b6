//! What the SoftHSM2 and tpm2-pkcs11 test harnesses share: finding a module and writing a
//! private file. Errors are plain text, wrapped by each harness in its own error type.

use std::path::{Path, PathBuf};

/// The module named by `$env_var`, else the first of `candidates` that exists; `missing` says
/// what to install when none does.
pub(crate) fn find_module(
    env_var: &str,
    candidates: &[&str],
    missing: &str,
) -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os(env_var) {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(format!("{env_var}={} does not exist", p.display()))
        };
    }
    candidates
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .ok_or_else(|| missing.to_string())
}

/// Writes `bytes` to `path` as a 0600 file (a PIN file).
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(bytes))
        .map_err(|e| format!("writing {}: {e}", path.display()))
}
