//! tpm2-pkcs11 test harness (feature `tpm2-pkcs11-harness`): a second real PKCS#11 module, the
//! TPM one, on a private TPM.
//!
//! [`Tpm2Pkcs11Token::start`] starts, in a temporary folder of its own:
//! 1. swtpm (the swtpm harness of `hsm-tpm-common`) on free loopback ports;
//! 2. a private D-Bus session bus (`dbus-daemon` with its own configuration and socket, never
//!    the system bus);
//! 3. `tpm2-abrmd --session` on that bus, talking to swtpm: tpm2-pkcs11 reaches the TPM through
//!    the access broker, so every process and thread gets its own connection while swtpm
//!    serves one;
//! 4. a tpm2-pkcs11 store (`tpm2_ptool init`, `tpm2_ptool addtoken`) with one token, its user
//!    PIN in a 0600 file.
//!
//! The module reads `TPM2_PKCS11_STORE`, `TPM2_PKCS11_TCTI` and (through the tabrmd TCTI)
//! `DBUS_SESSION_BUS_ADDRESS` from the process environment, so `start` sets them for the whole
//! process (child processes such as the conformance checks inherit them) and one token exists
//! per process at a time: `start` waits for the previous one to be dropped. Dropping it stops
//! tpm2-abrmd, dbus-daemon and swtpm and removes the folder.
//!
//! A missing tool is an error naming the Debian packages to install; nothing is skipped.

use hsm_tpm_common::swtpm::Swtpm;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// A harness failure, with what to install when a tool is missing.
#[derive(Debug, thiserror::Error)]
#[error("tpm2-pkcs11 harness: {0}")]
pub struct HarnessError(String);

/// The Debian packages the harness needs (the project's `.ci/install-deps` installs them).
pub const PACKAGES: &str = "libtpm2-pkcs11-1 libtpm2-pkcs11-tools python3-tpm2-pkcs11-tools tpm2-abrmd libtss2-tcti-tabrmd0 dbus swtpm";

fn install_hint() -> String {
    format!("install them with `apt-get install {PACKAGES}` (the project's .ci/install-deps does)")
}

/// The D-Bus name tpm2-abrmd owns (its default).
const TABRMD_NAME: &str = "com.intel.tss2.Tabrmd";

/// The TCTI tpm2-pkcs11 and the tpm2 tools use: the access broker on the session bus.
pub const TCTI: &str = "tabrmd:bus_type=session";

/// Where tpm2-pkcs11's module is: `$TPM2_PKCS11_MODULE`, else the usual Debian/Ubuntu paths.
pub fn module_path() -> Result<PathBuf, HarnessError> {
    crate::harness::find_module(
        "TPM2_PKCS11_MODULE",
        &[
            "/usr/lib/x86_64-linux-gnu/pkcs11/libtpm2_pkcs11.so",
            "/usr/lib/aarch64-linux-gnu/pkcs11/libtpm2_pkcs11.so",
            "/usr/lib/x86_64-linux-gnu/libtpm2_pkcs11.so.1",
            "/usr/lib/aarch64-linux-gnu/libtpm2_pkcs11.so.1",
            "/usr/local/lib/libtpm2_pkcs11.so",
        ],
        &format!("libtpm2_pkcs11.so not found; {}", install_hint()),
    )
    .map_err(HarnessError)
}

/// A process the harness started; killed and reaped when dropped.
///
/// None of the three daemons forks (dbus-daemon runs with `--nofork` and no service
/// activation, tpm2-abrmd and swtpm stay in the foreground), so the process is its whole
/// process group's worth of work; they stay in the test's own process group, so a Ctrl-C at
/// the terminal stops them with the test.
#[derive(Debug)]
struct Daemon {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Daemon {
    fn spawn(name: &'static str, mut cmd: Command, log: PathBuf) -> Result<Self, HarnessError> {
        let file = std::fs::File::create(&log)
            .map_err(|e| HarnessError(format!("creating {}: {e}", log.display())))?;
        let child = cmd
            .stdin(Stdio::null())
            .stderr(Stdio::from(file))
            .spawn()
            .map_err(|e| spawn_error(name, e))?;
        Ok(Self { name, child, log })
    }

    /// An error if the daemon has exited, with what it logged.
    fn check_running(&mut self) -> Result<(), HarnessError> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(HarnessError(format!(
                "{} exited with {status}: {}",
                self.name,
                std::fs::read_to_string(&self.log)
                    .unwrap_or_default()
                    .trim()
            ))),
            Err(e) => Err(HarnessError(format!("waiting for {}: {e}", self.name))),
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // A daemon that already exited is simply reaped.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_error(name: &str, e: std::io::Error) -> HarnessError {
    if e.kind() == std::io::ErrorKind::NotFound {
        HarnessError(format!(
            "`{name}` is not installed ({e}); {}",
            install_hint()
        ))
    } else {
        HarnessError(format!("starting {name}: {e}"))
    }
}

/// A tpm2-pkcs11 token on a private swtpm behind a private tpm2-abrmd, ready for the plugin:
/// module [`Tpm2Pkcs11Token::module`], token URI [`Tpm2Pkcs11Token::uri`], PIN file
/// [`Tpm2Pkcs11Token::pin_file`].
#[derive(Debug)]
pub struct Tpm2Pkcs11Token {
    /// The module path.
    pub module: PathBuf,
    /// The token label.
    pub label: String,
    /// The user PIN (test tokens only).
    pub pin: String,
    /// A file holding the user PIN (mode 0600).
    pub pin_file: PathBuf,
    store: PathBuf,
    bus_address: String,
    // Dropped in this order: the broker, its bus, the TPM, the folder, then the process lock.
    abrmd: Daemon,
    dbus: Daemon,
    swtpm: Swtpm,
    dir: tempfile::TempDir,
    _env: MutexGuard<'static, ()>,
}

/// Held by the live token: the module's settings are process environment variables.
fn env_lock() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

impl Tpm2Pkcs11Token {
    /// Starts swtpm, a private bus and tpm2-abrmd, creates a store with a token labelled
    /// `label` and sets the process environment for the module. Waits while another token of
    /// this process is alive.
    pub fn start(label: &str) -> Result<Self, HarnessError> {
        let env = env_lock();
        let module = module_path()?;
        let dir = tempfile::Builder::new()
            .prefix("hsmkit-tpm2-pkcs11-")
            .tempdir()
            .map_err(|e| HarnessError(format!("creating a temporary folder: {e}")))?;
        let swtpm = Swtpm::start().map_err(|e| HarnessError(e.to_string()))?;
        let (dbus, bus_address) = start_bus(dir.path())?;
        let abrmd = start_abrmd(dir.path(), &bus_address, swtpm.port())?;
        let store = dir.path().join("store");
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&store)
            .map_err(|e| HarnessError(format!("creating {}: {e}", store.display())))?;
        let pin = "user-pin-1234".to_string();
        let tool_env = [
            ("DBUS_SESSION_BUS_ADDRESS", bus_address.as_str()),
            ("TPM2_PKCS11_TCTI", TCTI),
            ("TPM2TOOLS_TCTI", TCTI),
            ("TPM2_PKCS11_STORE", path_str(&store)?),
        ];
        let init = ptool(&tool_env, &["init", "--path", path_str(&store)?])?;
        let pid = init
            .lines()
            .find_map(|l| l.trim().strip_prefix("id:"))
            .map(str::trim)
            .ok_or_else(|| {
                HarnessError(format!(
                    "`tpm2_ptool init` printed no primary object id: {init}"
                ))
            })?
            .to_string();
        ptool(
            &tool_env,
            &[
                "addtoken",
                "--pid",
                &pid,
                "--sopin",
                "so-pin-1234",
                "--userpin",
                &pin,
                "--label",
                label,
                "--path",
                path_str(&store)?,
            ],
        )?;
        let pin_file = dir.path().join("user.pin");
        write_private(&pin_file, pin.as_bytes())?;
        // Read by the module at C_Initialize, in this process and in every child it starts.
        for (k, v) in [
            ("DBUS_SESSION_BUS_ADDRESS", bus_address.as_str()),
            ("TPM2_PKCS11_TCTI", TCTI),
            ("TPM2_PKCS11_STORE", path_str(&store)?),
        ] {
            std::env::set_var(k, v);
        }
        Ok(Self {
            module,
            label: label.to_string(),
            pin,
            pin_file,
            store,
            bus_address,
            abrmd,
            dbus,
            swtpm,
            dir,
            _env: env,
        })
    }

    /// `pkcs11:token=LABEL`.
    pub fn uri(&self) -> String {
        format!("pkcs11:token={}", self.label)
    }

    /// The tpm2-pkcs11 store folder (`TPM2_PKCS11_STORE`).
    pub fn store(&self) -> &Path {
        &self.store
    }

    /// The private bus's address (`DBUS_SESSION_BUS_ADDRESS`).
    pub fn bus_address(&self) -> &str {
        &self.bus_address
    }

    /// The environment the module needs, as set for this process by [`Tpm2Pkcs11Token::start`].
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("DBUS_SESSION_BUS_ADDRESS", self.bus_address.clone()),
            ("TPM2_PKCS11_TCTI", TCTI.to_string()),
            ("TPM2_PKCS11_STORE", self.store.display().to_string()),
        ]
    }

    /// An error if tpm2-abrmd or dbus-daemon has died (for tests that want to tell a module
    /// failure from a harness one).
    pub fn check_running(&mut self) -> Result<(), HarnessError> {
        self.abrmd.check_running()?;
        self.dbus.check_running()
    }

    /// The swtpm behind the broker.
    pub fn swtpm(&self) -> &Swtpm {
        &self.swtpm
    }

    /// The harness's folder (logs of the daemons, the store, the PIN file).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tpm2Pkcs11Token {
    fn drop(&mut self) {
        for k in [
            "DBUS_SESSION_BUS_ADDRESS",
            "TPM2_PKCS11_TCTI",
            "TPM2_PKCS11_STORE",
        ] {
            std::env::remove_var(k);
        }
        // The fields then drop in order: tpm2-abrmd, dbus-daemon, swtpm, the folder, the lock.
    }
}

fn path_str(p: &Path) -> Result<&str, HarnessError> {
    p.to_str()
        .ok_or_else(|| HarnessError(format!("{} is not UTF-8", p.display())))
}

/// A session bus of our own: its socket in `dir`, anyone of this user may own any name, no
/// service activation.
fn start_bus(dir: &Path) -> Result<(Daemon, String), HarnessError> {
    let socket = dir.join("bus");
    let conf = dir.join("bus.conf");
    std::fs::write(
        &conf,
        format!(
            r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"#,
            socket.display()
        ),
    )
    .map_err(|e| HarnessError(format!("writing {}: {e}", conf.display())))?;
    let mut cmd = Command::new("dbus-daemon");
    cmd.arg(format!("--config-file={}", conf.display()))
        .arg("--nofork")
        .arg("--print-address=1")
        .stdout(Stdio::piped());
    let mut daemon = Daemon::spawn("dbus-daemon", cmd, dir.join("dbus-daemon.log"))?;
    // The address is printed once the bus listens; EOF means it exited.
    let stdout = daemon
        .child
        .stdout
        .take()
        .ok_or_else(|| HarnessError("dbus-daemon has no stdout pipe".into()))?;
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .map_err(|e| HarnessError(format!("reading dbus-daemon's address: {e}")))?;
    let address = line.trim().to_string();
    if address.is_empty() {
        daemon.check_running()?;
        return Err(HarnessError("dbus-daemon printed no address".into()));
    }
    Ok((daemon, address))
}

/// tpm2-abrmd on the private bus, talking to swtpm on `port`; returns once it owns its name.
fn start_abrmd(dir: &Path, bus: &str, port: u16) -> Result<Daemon, HarnessError> {
    let mut cmd = Command::new("tpm2-abrmd");
    cmd.arg("--session")
        .arg(format!("--tcti=swtpm:host=127.0.0.1,port={port}"))
        .arg("--flush-all")
        .env("DBUS_SESSION_BUS_ADDRESS", bus)
        .stdout(Stdio::null());
    // tpm2-abrmd refuses to run as root unless told; tests in containers often are root.
    if std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0) {
        cmd.arg("--allow-root");
    }
    let mut daemon = Daemon::spawn("tpm2-abrmd", cmd, dir.join("tpm2-abrmd.log"))?;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        daemon.check_running()?;
        let out = Command::new("dbus-send")
            .env("DBUS_SESSION_BUS_ADDRESS", bus)
            .args([
                "--session",
                "--dest=org.freedesktop.DBus",
                "--type=method_call",
                "--print-reply",
                "/org/freedesktop/DBus",
                "org.freedesktop.DBus.NameHasOwner",
                &format!("string:{TABRMD_NAME}"),
            ])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| spawn_error("dbus-send", e))?;
        if out.status.success() && String::from_utf8_lossy(&out.stdout).contains("boolean true") {
            return Ok(daemon);
        }
        if Instant::now() > deadline {
            return Err(HarnessError(format!(
                "tpm2-abrmd did not take {TABRMD_NAME} on the bus within 15 s: {}",
                std::fs::read_to_string(&daemon.log)
                    .unwrap_or_default()
                    .trim()
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs `tpm2_ptool ARGS`; its output, or an error with what it printed.
fn ptool(env: &[(&str, &str)], args: &[&str]) -> Result<String, HarnessError> {
    let out = Command::new("tpm2_ptool")
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .map_err(|e| spawn_error("tpm2_ptool", e))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        // Without the tabrmd TCTI library the tools cannot reach the broker at all.
        let hint = if stderr.contains("Could not load tcti") {
            format!(" (the tabrmd TCTI is missing? {})", install_hint())
        } else {
            String::new()
        };
        return Err(HarnessError(format!(
            "`tpm2_ptool {}` failed ({}): {} {}{hint}",
            args.first().copied().unwrap_or_default(),
            out.status,
            stdout.trim(),
            stderr.trim()
        )));
    }
    Ok(stdout)
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), HarnessError> {
    crate::harness::write_private(path, bytes).map_err(HarnessError)
}
