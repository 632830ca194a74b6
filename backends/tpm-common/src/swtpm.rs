//! Test support: a private swtpm (`swtpm socket --tpm2`) on free loopback ports in its own
//! temporary state folder, shut down when dropped. Enabled by the `swtpm-harness` feature.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Why swtpm could not be started.
#[derive(thiserror::Error, Debug)]
pub enum SwtpmError {
    /// The `swtpm` binary is not installed.
    #[error("swtpm is not installed or not on PATH ({0}); install it with `apt-get install swtpm swtpm-tools`")]
    NotInstalled(std::io::Error),
    /// Some other I/O failure (temp dir, ports, process); in the message, so not also the
    /// `source()`.
    #[error("swtpm harness I/O error: {0}")]
    Io(std::io::Error),
    /// swtpm did not accept connections in time.
    #[error("swtpm did not come up on port {port}: {detail}")]
    NotReady {
        /// Its command port.
        port: u16,
        /// What was observed.
        detail: String,
    },
}

impl From<std::io::Error> for SwtpmError {
    fn from(e: std::io::Error) -> Self {
        SwtpmError::Io(e)
    }
}

/// A running swtpm. The TCTI for it is [`Swtpm::tcti`].
pub struct Swtpm {
    child: Option<Child>,
    state_dir: tempfile::TempDir,
    port: u16,
}

impl std::fmt::Debug for Swtpm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Swtpm")
            .field("port", &self.port)
            .field("state_dir", &self.state_dir.path())
            .finish()
    }
}

/// Two consecutive free loopback ports (command, control): the swtpm TCTI always talks to the
/// control channel on port + 1. They are drawn at random below the kernel's ephemeral range
/// (32768 and up on Linux), where outgoing connections and their TIME_WAIT leftovers would
/// otherwise make a consecutive pair hard to find on a busy machine.
fn free_port_pair() -> std::io::Result<u16> {
    use rand::Rng;
    let mut rng = rand::thread_rng();
    for _ in 0..256 {
        let port: u16 = rng.gen_range(10_000..32_000);
        let first = TcpListener::bind((Ipv4Addr::LOCALHOST, port));
        let second = TcpListener::bind((Ipv4Addr::LOCALHOST, port + 1));
        if first.is_ok() && second.is_ok() {
            return Ok(port);
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AddrInUse,
        "no two consecutive free loopback ports found in 10000-32000",
    ))
}

impl Swtpm {
    /// Starts a fresh swtpm with empty state in a new temporary folder.
    pub fn start() -> Result<Self, SwtpmError> {
        let state_dir = tempfile::Builder::new().prefix("hsmkit-swtpm-").tempdir()?;
        let mut swtpm = Self {
            child: None,
            state_dir,
            port: 0,
        };
        swtpm.launch()?;
        Ok(swtpm)
    }

    /// The TCTI string tss-esapi / tpm2-tools use to reach this swtpm.
    pub fn tcti(&self) -> String {
        format!("swtpm:host=127.0.0.1,port={}", self.port)
    }

    /// The command port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The folder holding the TPM state.
    pub fn state_dir(&self) -> &Path {
        self.state_dir.path()
    }

    /// Shuts swtpm down (state saved) and starts it again on the same state, like a reboot.
    /// The port may change; read [`Swtpm::tcti`] again afterwards.
    pub fn restart(&mut self) -> Result<(), SwtpmError> {
        self.shutdown();
        self.launch()
    }

    fn launch(&mut self) -> Result<(), SwtpmError> {
        let mut last = String::new();
        // A port found free can be taken before swtpm binds it: retry with new ports.
        for _ in 0..5 {
            let port = free_port_pair()?;
            let mut child = spawn(self.state_dir.path(), port)?;
            match wait_ready(&mut child, port, self.state_dir.path()) {
                Ok(()) => {
                    self.child = Some(child);
                    self.port = port;
                    return Ok(());
                }
                Err(detail) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    last = detail;
                }
            }
        }
        Err(SwtpmError::NotReady {
            port: self.port,
            detail: last,
        })
    }

    /// Asks swtpm to shut down over its control channel (so it saves its state), then waits
    /// for the process, killing it if it does not exit.
    fn shutdown(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Some(ctrl) = self.port.checked_add(1) {
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, ctrl));
            if let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
                // CMD_SHUTDOWN = 3; the answer is a 4-byte result code.
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let _ = s.write_all(&3u32.to_be_bytes());
                let mut answer = [0u8; 4];
                let _ = s.read_exact(&mut answer);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match child.try_wait() {
                Ok(Some(_)) => return,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return;
                }
            }
        }
    }
}

/// swtpm's diagnostics go to a file next to its state rather than a pipe nobody drains
/// while it runs (a full pipe would stall it).
fn log_path(state_dir: &Path) -> PathBuf {
    state_dir.join("swtpm-stderr.log")
}

fn spawn(state_dir: &Path, port: u16) -> Result<Child, SwtpmError> {
    let state: PathBuf = state_dir.to_path_buf();
    let log = std::fs::File::create(log_path(state_dir))?;
    Command::new("swtpm")
        .arg("socket")
        .arg("--tpm2")
        .arg("--tpmstate")
        .arg(format!("dir={}", state.display()))
        .arg("--server")
        .arg(format!("type=tcp,port={port},bindaddr=127.0.0.1"))
        .arg("--ctrl")
        .arg(format!("type=tcp,port={},bindaddr=127.0.0.1", port + 1))
        .arg("--flags")
        .arg("not-need-init,startup-clear")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => SwtpmError::NotInstalled(e),
            _ => SwtpmError::Io(e),
        })
}

fn wait_ready(child: &mut Child, port: u16, state_dir: &Path) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let err = std::fs::read_to_string(log_path(state_dir)).unwrap_or_default();
            return Err(format!("swtpm exited with {status}: {}", err.trim()));
        }
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            // Someone else (another test's swtpm) may own the port while ours failed to bind
            // it and is about to exit: only a swtpm still running a moment later is ours.
            std::thread::sleep(Duration::from_millis(100));
            if let Ok(None) = child.try_wait() {
                return Ok(());
            }
            continue;
        }
        if Instant::now() > deadline {
            return Err("no connection within 10 s".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        self.shutdown();
    }
}
