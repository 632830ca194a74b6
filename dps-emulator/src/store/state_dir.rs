//! The state folder's files: dev CA (created once, reused), server certificate (reissued at each
//! start for the configured names), the service policy key, the database.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use std::path::{Path, PathBuf};
use std::time::Duration;
use zeroize::Zeroizing;

use crate::error::Result;
use crate::pki::{CertifiedKey, LeafUsage};
use hsm_secure_fs::state::{prepare_dir, read_private, read_secret, write_atomic};

/// File names inside the state folder.
pub const CA_CERT_FILE: &str = "dev-ca.pem";
const CA_KEY_FILE: &str = "dev-ca.key.pem";
const SERVER_CERT_FILE: &str = "server.pem";
const SERVICE_KEY_FILE: &str = "service-policy.key";
/// The database file.
pub const DATABASE_FILE: &str = "dps.sqlite3";

/// Loads the dev CA from `dir`, creating it on first use.
pub(crate) fn load_or_create_ca(dir: &Path) -> Result<(CertifiedKey, PathBuf)> {
    prepare_dir(dir)?;
    let cert_path = dir.join(CA_CERT_FILE);
    let key_path = dir.join(CA_KEY_FILE);
    if cert_path.exists() && key_path.exists() {
        let cert = utf8(&cert_path, read_private(&cert_path)?)?;
        let key = secret_text(&key_path)?;
        return Ok((CertifiedKey::from_pem(&cert, &key)?, cert_path));
    }
    let ca = CertifiedKey::new_root_ca(
        "hsmkit DPS emulator dev CA",
        Duration::from_secs(10 * 365 * 86400),
    )?;
    write_atomic(&key_path, ca.key_pem()?.as_bytes(), 0o600)?;
    write_atomic(&cert_path, ca.cert_pem().as_bytes(), 0o644)?;
    Ok((ca, cert_path))
}

/// The dev issuing CA's certificate (PEM), which signs the operational certificates issued for
/// CSRs; created on first need beside its 0600 key.
pub const ISSUING_CA_CERT_FILE: &str = "issuing-ca.pem";
const ISSUING_CA_KEY_FILE: &str = "issuing-ca.key.pem";

/// Loads the dev issuing CA from `dir`, creating it on first use. A CA of its own rather than
/// the TLS dev CA, so a device's operational chain is not trusted for the emulator's server
/// names and the other way round.
pub(crate) fn load_or_create_issuing_ca(dir: &Path) -> Result<CertifiedKey> {
    prepare_dir(dir)?;
    let cert_path = dir.join(ISSUING_CA_CERT_FILE);
    let key_path = dir.join(ISSUING_CA_KEY_FILE);
    if cert_path.exists() && key_path.exists() {
        let cert = utf8(&cert_path, read_private(&cert_path)?)?;
        let key = secret_text(&key_path)?;
        return CertifiedKey::from_pem(&cert, &key);
    }
    let ca = CertifiedKey::new_root_ca(
        "hsmkit DPS emulator dev issuing CA",
        Duration::from_secs(10 * 365 * 86400),
    )?;
    // The key first: a certificate without its key on disk would be recreated next time.
    write_atomic(&key_path, ca.key_pem()?.as_bytes(), 0o600)?;
    write_atomic(&cert_path, ca.cert_pem().as_bytes(), 0o644)?;
    Ok(ca)
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
    write_atomic(
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
        let k = secret_text(&path)?;
        return Ok(Zeroizing::new(k.trim().to_string()));
    }
    let mut raw = Zeroizing::new([0u8; 32]);
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, raw.as_mut());
    let k = Zeroizing::new(B64.encode(raw.as_ref()));
    write_atomic(&path, k.as_bytes(), 0o600)?;
    Ok(k)
}

/// The service policy key of a state folder (created on first use), for tools that build a
/// connection string without a running emulator. Secret.
pub fn service_key(state_dir: &Path) -> Result<Zeroizing<String>> {
    prepare_dir(state_dir)?;
    load_or_create_service_key(state_dir)
}

/// Opens the database of a state folder (for the CLI, while a server may be running: WAL lets
/// both write).
pub fn open_store(state_dir: &Path) -> Result<crate::store::Store> {
    prepare_dir(state_dir)?;
    crate::store::Store::open(&state_dir.join(DATABASE_FILE))
}

/// State files are PEM or base64 text; anything else was edited or corrupted.
fn utf8(path: &Path, bytes: Vec<u8>) -> Result<String> {
    String::from_utf8(bytes).map_err(|_| crate::error::EmulatorError::StateIo {
        path: path.to_path_buf(),
        error: std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8 text"),
    })
}

/// A secret text file (0600, ours), moved out of the read buffer without a copy.
fn secret_text(path: &Path) -> Result<Zeroizing<String>> {
    let mut bytes = read_secret(path)?;
    Ok(Zeroizing::new(utf8(path, std::mem::take(&mut *bytes))?))
}
