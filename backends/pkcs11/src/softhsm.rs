//! SoftHSM2 test harness (feature `softhsm-harness`): a token folder per test binary, selected
//! through `SOFTHSM2_CONF`, and tokens with unique labels initialized through the module itself.
//!
//! `SOFTHSM2_CONF` is process-global and SoftHSM reads it at `C_Initialize`, so it is set once
//! per process (before any token exists) and every token of the binary lives in one folder.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

/// A harness failure, with what to install when a tool is missing.
#[derive(Debug, thiserror::Error)]
#[error("SoftHSM2 harness: {0}")]
pub struct HarnessError(String);

const INSTALL_HINT: &str =
    "install SoftHSM2 with `apt-get install softhsm2` (the project's .ci/install-deps does)";

/// Where SoftHSM2's module is: `$SOFTHSM2_MODULE`, else the usual Debian/Ubuntu paths.
pub fn module_path() -> Result<PathBuf, HarnessError> {
    crate::harness::find_module(
        "SOFTHSM2_MODULE",
        &[
            "/usr/lib/softhsm/libsofthsm2.so",
            "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
            "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
            "/usr/local/lib/softhsm/libsofthsm2.so",
        ],
        &format!("libsofthsm2.so not found; {INSTALL_HINT}"),
    )
    .map_err(HarnessError)
}

/// The process's SoftHSM folder (holding `softhsm2.conf` and `tokens/`), created on first use.
pub fn softhsm_dir() -> Result<&'static Path, HarnessError> {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    DIR.get_or_init(|| {
        remove_stale_dirs();
        let dir = std::env::temp_dir().join(format!("hsmkit-softhsm-{}", std::process::id()));
        let tokens = dir.join("tokens");
        for d in [&dir, &tokens] {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(d)
                .map_err(|e| format!("creating {}: {e}", d.display()))?;
        }
        let conf = dir.join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n",
                tokens.display()
            ),
        )
        .map_err(|e| format!("writing {}: {e}", conf.display()))?;
        // Set before any module is initialized in this process (this runs first).
        std::env::set_var("SOFTHSM2_CONF", &conf);
        Ok(dir)
    })
    .as_ref()
    .map(PathBuf::as_path)
    .map_err(|e| HarnessError(e.clone()))
}

/// Folders of earlier test processes that have exited: statics are never dropped, so each
/// process cleans up after its dead predecessors instead.
fn remove_stale_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("hsmkit-softhsm-"))
        else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// A freshly initialized token.
#[derive(Debug, Clone)]
pub struct TestToken {
    /// The module path.
    pub module: PathBuf,
    /// The token label (unique in the process).
    pub label: String,
    /// The user PIN (test tokens only).
    pub pin: String,
    /// A file holding the user PIN (mode 0600).
    pub pin_file: PathBuf,
}

impl TestToken {
    /// `pkcs11:token=LABEL`.
    pub fn uri(&self) -> String {
        format!("pkcs11:token={}", self.label)
    }
}

/// Creates a token labelled `<prefix>-<pid>-<n>` with a per-token test PIN.
pub fn create_token(prefix: &str) -> Result<TestToken, HarnessError> {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let module = module_path()?;
    let dir = softhsm_dir()?;
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    // Token labels are at most 32 bytes.
    let mut label = format!("{prefix}-{}-{n}", std::process::id());
    label.truncate(32);
    let pin = format!("user-{n}-pin");
    init_token_in_process(&module, &label, &pin)?;
    let pin_file = dir.join(format!("{label}.pin"));
    write_private(&pin_file, pin.as_bytes())?;
    Ok(TestToken {
        module,
        label,
        pin,
        pin_file,
    })
}

/// Initializes a token in SoftHSM's free slot through this process's own module context.
///
/// `softhsm2-util` would write the token to disk, but a SoftHSM instance that is already
/// initialized in this process (another test holding it) does not rescan its token folder, so
/// the new token would stay invisible. `C_InitToken` through the shared context avoids that;
/// SoftHSM then offers a fresh free slot for the next token. Creation is serialized because two
/// threads would otherwise pick the same free slot.
fn init_token_in_process(module: &Path, label: &str, pin: &str) -> Result<(), HarnessError> {
    use cryptoki::session::UserType;
    use cryptoki::types::AuthPin;
    static CREATE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = CREATE.lock().unwrap_or_else(|p| p.into_inner());
    let fail = |what: &str, e: cryptoki::error::Error| {
        HarnessError(format!("{what}: {}", crate::error::from_cryptoki(what, e)))
    };
    let lease = keep_alive(module)?;
    let ctx = lease.context();
    let slots = ctx
        .get_slots_with_token()
        .map_err(|e| fail("listing slots", e))?;
    let mut free = None;
    for slot in slots {
        let info = ctx
            .get_token_info(slot)
            .map_err(|e| fail("reading token info", e))?;
        if !info.token_initialized() {
            free = Some(slot);
            break;
        }
    }
    let slot = free.ok_or_else(|| HarnessError("SoftHSM offers no free slot".into()))?;
    let so_pin = AuthPin::new("so-pin-1234".into());
    ctx.init_token(slot, &so_pin, label)
        .map_err(|e| fail("C_InitToken", e))?;
    let session = ctx
        .open_rw_session(slot)
        .map_err(|e| fail("opening a session", e))?;
    session
        .login(UserType::So, Some(&so_pin))
        .map_err(|e| fail("SO login", e))?;
    session
        .init_pin(&AuthPin::new(pin.into()))
        .map_err(|e| fail("C_InitPIN", e))?;
    session.logout().map_err(|e| fail("SO logout", e))?;
    Ok(())
}

/// The harness keeps SoftHSM initialized for the whole test process. A test may also load this
/// plugin as a shared library (a second copy with its own registry) in the same process; that
/// copy then finds the module already initialized and never finalizes it, and neither does the
/// harness, so no copy can finalize the module under another.
fn keep_alive(module: &Path) -> Result<&'static crate::session::ModuleLease, HarnessError> {
    static LEASE: OnceLock<Result<crate::session::ModuleLease, String>> = OnceLock::new();
    LEASE
        .get_or_init(|| {
            crate::session::ModuleLease::acquire(module).map_err(|e| format!("{e}; {INSTALL_HINT}"))
        })
        .as_ref()
        .map_err(|e| HarnessError(e.clone()))
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), HarnessError> {
    crate::harness::write_private(path, bytes).map_err(HarnessError)
}
