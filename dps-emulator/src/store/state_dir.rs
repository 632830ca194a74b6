//! The state folder's files: dev CA (created once, reused), server certificate (reissued at each
//! start for the configured names), the service policy key, the database.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use std::path::{Path, PathBuf};
use std::time::Duration;
use zeroize::Zeroizing;

use super::fsutil::{create_private_dir, write_file_atomic};
use crate::error::{io_at, Result};
use crate::pki::{CertifiedKey, LeafUsage};

/// File names inside the state folder.
pub const CA_CERT_FILE: &str = "dev-ca.pem";
const CA_KEY_FILE: &str = "dev-ca.key.pem";
const SERVER_CERT_FILE: &str = "server.pem";
const SERVICE_KEY_FILE: &str = "service-policy.key";
/// The database file.
pub const DATABASE_FILE: &str = "dps.sqlite3";

/// Loads the dev CA from `dir`, creating it on first use.
pub(crate) fn load_or_create_ca(dir: &Path) -> Result<(CertifiedKey, PathBuf)> {
    create_private_dir(dir)?;
    let cert_path = dir.join(CA_CERT_FILE);
    let key_path = dir.join(CA_KEY_FILE);
    if cert_path.exists() && key_path.exists() {
        let cert = std::fs::read_to_string(&cert_path).map_err(io_at(&cert_path))?;
        let key = Zeroizing::new(std::fs::read_to_string(&key_path).map_err(io_at(&key_path))?);
        return Ok((CertifiedKey::from_pem(&cert, &key)?, cert_path));
    }
    let ca = CertifiedKey::new_root_ca(
        "hsmkit DPS emulator dev CA",
        Duration::from_secs(10 * 365 * 86400),
    )?;
    write_file_atomic(&key_path, ca.key_pem()?.as_bytes(), 0o600)?;
    write_file_atomic(&cert_path, ca.cert_pem().as_bytes(), 0o644)?;
    Ok((ca, cert_path))
}

/// Issues the server certificate for `names` and writes it (public) next to the CA.
pub(crate) fn issue_server_cert(
    dir: &Path,
    ca: &CertifiedKey,
    names: &[String],
) -> Result<CertifiedKey> {
    let server = ca.issue_leaf(
        "hsmkit DPS emulator",
        LeafUsage::Server,
        names,
        Duration::from_secs(365 * 86400),
    )?;
    write_file_atomic(
        &dir.join(SERVER_CERT_FILE),
        server.cert_pem().as_bytes(),
        0o644,
    )?;
    Ok(server)
}

/// The service policy key (base64 of 32 random bytes), created 0600 on first use.
pub(crate) fn load_or_create_service_key(dir: &Path) -> Result<Zeroizing<String>> {
    let path = dir.join(SERVICE_KEY_FILE);
    if path.exists() {
        let k = Zeroizing::new(std::fs::read_to_string(&path).map_err(io_at(&path))?);
        return Ok(Zeroizing::new(k.trim().to_string()));
    }
    let mut raw = Zeroizing::new([0u8; 32]);
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, raw.as_mut());
    let k = Zeroizing::new(B64.encode(raw.as_ref()));
    write_file_atomic(&path, k.as_bytes(), 0o600)?;
    Ok(k)
}

/// The service policy key of a state folder (created on first use), for tools that build a
/// connection string without a running emulator. Secret.
pub fn service_key(state_dir: &Path) -> Result<Zeroizing<String>> {
    create_private_dir(state_dir)?;
    load_or_create_service_key(state_dir)
}

/// Opens the database of a state folder (for the CLI, while a server may be running: WAL lets
/// both write).
pub fn open_store(state_dir: &Path) -> Result<crate::store::Store> {
    create_private_dir(state_dir)?;
    crate::store::Store::open(&state_dir.join(DATABASE_FILE))
}
