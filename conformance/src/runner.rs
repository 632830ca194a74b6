//! The parent side: probes the plugin, then runs every selected check in its own child
//! process group with a timeout, `--jobs` at a time, and gathers the results.

use crate::check::{all_checks, pattern_matches, Check, Group, Interface};
use crate::child::{parse_verdict, split_result, Probe};
use crate::report::{CheckReport, RunReport, Status};
use crate::verdict::Verdict;
use std::collections::VecDeque;
use std::io::Read;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Largest amount of one child stream kept for the report.
const MAX_CAPTURE: usize = 64 * 1024;

/// Why a run could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The plugin file does not exist.
    #[error("plugin {0} does not exist")]
    NoPlugin(PathBuf),
    /// A temporary folder could not be made.
    #[error("cannot prepare a temporary state folder: {0}")]
    State(std::io::Error),
    /// The harness binary could not be started.
    #[error("cannot start the check process {exe}: {error}")]
    Spawn {
        /// The binary.
        exe: PathBuf,
        /// What the OS said (in the message, so not also the `source()`).
        error: std::io::Error,
    },
    /// An `--only` / `--skip` pattern matched nothing.
    #[error("pattern `{0}` matches no check (see --list)")]
    UnknownPattern(String),
}

/// What to run and how.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// The plugin file.
    pub plugin: PathBuf,
    /// Settings passed to `create`.
    pub config: Vec<(String, String)>,
    /// Run only checks matching one of these patterns (all when empty).
    pub only: Vec<String>,
    /// Leave out checks matching one of these patterns.
    pub skip: Vec<String>,
    /// Checks run at the same time.
    pub jobs: usize,
    /// Time allowed to one check.
    pub timeout: Duration,
    /// The `hsm-conformance` binary, re-executed for each check.
    pub exe: PathBuf,
}

/// The checks `options` selects, in id order.
pub fn select(options: &RunOptions) -> Result<Vec<&'static Check>, RunError> {
    let all = all_checks();
    for p in options.only.iter().chain(&options.skip) {
        if !all.iter().any(|c| pattern_matches(p, c.id)) {
            return Err(RunError::UnknownPattern(p.clone()));
        }
    }
    Ok(all
        .into_iter()
        .filter(|c| {
            options.only.is_empty() || options.only.iter().any(|p| pattern_matches(p, c.id))
        })
        .filter(|c| !options.skip.iter().any(|p| pattern_matches(p, c.id)))
        .collect())
}

/// Runs the selected checks; `on_result` sees each result as it arrives.
pub fn run(
    options: &RunOptions,
    on_result: &(dyn Fn(&CheckReport) + Sync),
) -> Result<RunReport, RunError> {
    let started = Instant::now();
    if !options.plugin.exists() {
        return Err(RunError::NoPlugin(options.plugin.clone()));
    }
    let checks = select(options)?;
    let state = StateDirs::new(&options.config)?;
    let probe = run_probe(options, &state)?;
    let queue: Mutex<VecDeque<(usize, &'static Check)>> =
        Mutex::new(checks.iter().copied().enumerate().collect());
    let results: Mutex<Vec<(usize, CheckReport)>> = Mutex::new(Vec::new());
    let spawn_error: Mutex<Option<RunError>> = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..options.jobs.max(1) {
            s.spawn(|| loop {
                let next = lock(&queue).pop_front();
                let Some((n, check)) = next else { break };
                match run_one(options, &state, &probe, check) {
                    Ok(r) => {
                        on_result(&r);
                        lock(&results).push((n, r));
                    }
                    Err(e) => {
                        *lock(&spawn_error) = Some(e);
                        lock(&queue).clear();
                    }
                }
            });
        }
    });
    if let Some(e) = spawn_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e);
    }
    let mut results = results.into_inner().unwrap_or_else(|p| p.into_inner());
    results.sort_by_key(|(n, _)| *n);
    Ok(RunReport {
        plugin: options.plugin.display().to_string(),
        plugin_name: probe.name.clone(),
        load_error: (!probe.loaded).then(|| probe.error.clone()).flatten(),
        results: results.into_iter().map(|(_, r)| r).collect(),
        total: started.elapsed(),
    })
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// State folders: when the user gives no `state_dir`, the probe prepares one in a private
/// temporary folder and every check gets its own copy, so checks neither share state nor
/// pay for key generation again.
struct StateDirs {
    base: Option<tempfile::TempDir>,
}

impl StateDirs {
    fn new(config: &[(String, String)]) -> Result<Self, RunError> {
        if config.iter().any(|(k, _)| k == "state_dir") {
            return Ok(StateDirs { base: None });
        }
        let base = tempfile::Builder::new()
            .prefix("hsm-conformance-")
            .tempdir()
            .map_err(RunError::State)?;
        std::fs::create_dir(base.path().join("seed")).map_err(RunError::State)?;
        Ok(StateDirs { base: Some(base) })
    }

    fn seed(&self) -> Option<PathBuf> {
        self.base.as_ref().map(|b| b.path().join("seed"))
    }

    /// A fresh copy of the seed for check `id`.
    fn for_check(&self, id: &str) -> Result<Option<PathBuf>, RunError> {
        let (Some(base), Some(seed)) = (&self.base, self.seed()) else {
            return Ok(None);
        };
        let dir = base.path().join(id);
        copy_dir(&seed, &dir).map_err(RunError::State)?;
        Ok(Some(dir))
    }
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().mode(0o700).create(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        let dest = to.join(entry.file_name());
        if kind.is_dir() {
            copy_dir(&entry.path(), &dest)?;
        } else if kind.is_file() {
            // fs::copy keeps the permission bits, so 0600 key files stay 0600.
            std::fs::copy(entry.path(), &dest)?;
        }
    }
    Ok(())
}

fn config_with_state(config: &[(String, String)], state: Option<PathBuf>) -> Vec<(String, String)> {
    let mut c = config.to_vec();
    if let Some(dir) = state {
        c.push(("state_dir".into(), dir.display().to_string()));
    }
    c
}

fn config_args(cmd: &mut Command, config: &[(String, String)]) {
    for (k, v) in config {
        cmd.arg("--set").arg(format!("{k}={v}"));
    }
}

fn run_probe(options: &RunOptions, state: &StateDirs) -> Result<Probe, RunError> {
    let mut cmd = Command::new(&options.exe);
    cmd.arg("--probe");
    config_args(&mut cmd, &config_with_state(&options.config, state.seed()));
    cmd.arg(&options.plugin);
    let out = supervise(&options.exe, cmd, options.timeout)?;
    Ok(probe_result(&out))
}

/// The probe a probe child printed, or one saying how the child ended without it.
fn probe_result(out: &ChildOutput) -> Probe {
    let (line, _) = split_result(&out.stdout);
    match line.and_then(|l| serde_json::from_str::<Probe>(l).ok()) {
        Some(p) => p,
        None => Probe {
            error: Some(format!(
                "loading the plugin {}: {}",
                out.describe_abnormal(),
                tail(&out.stderr)
            )),
            ..Probe::default()
        },
    }
}

/// What the plugin declares, its settings included, learnt in a child process (`--probe
/// --list-settings`) that loads the plugin but creates no instance: the parent never loads a
/// plugin, and listing settings needs none of them.
pub fn probe_settings(exe: &Path, plugin: &Path, timeout: Duration) -> Result<Probe, RunError> {
    let mut cmd = Command::new(exe);
    cmd.arg("--probe").arg("--list-settings").arg(plugin);
    let out = supervise(exe, cmd, timeout)?;
    Ok(probe_result(&out))
}

fn not_applicable(check: &Check, probe: &Probe) -> Option<String> {
    if check.needs_load && !probe.loaded {
        return Some(format!(
            "the plugin does not load: {}",
            probe.error.as_deref().unwrap_or("unknown reason")
        ));
    }
    if check.needs_load && !probe.null_entries.is_empty() {
        return Some(format!(
            "the plugin has NULL function entries ({}), which would crash any caller (see loading.table-entries)",
            probe.null_entries.join(", ")
        ));
    }
    if let (true, Some(e)) = (probe.loaded, &probe.error) {
        if check.needs_load && check.id != "lifecycle.create-destroy" {
            return Some(format!(
                "no instance can be created with the given settings (see lifecycle.create-destroy; pass settings with --set): {e}"
            ));
        }
    }
    let declared = match check.interface {
        Interface::Any => true,
        Interface::Tpm => probe.tpm,
        Interface::X509 => probe.x509,
        Interface::SymmetricKey => probe.symmetric_key,
        Interface::OperationalKey => probe.operational_key,
    };
    (!declared).then(|| {
        if check.interface == Interface::OperationalKey {
            // No capability bit: the ABI 1.2 table entry is the declaration.
            "the plugin does not declare the operational-key interface (no ABI 1.2 operational-key table): it cannot hold an operational key".into()
        } else {
            format!(
                "the plugin does not declare the {} capability",
                check.interface.as_str()
            )
        }
    })
}

fn run_one(
    options: &RunOptions,
    state: &StateDirs,
    probe: &Probe,
    check: &'static Check,
) -> Result<CheckReport, RunError> {
    let mut report = CheckReport::new(check);
    if let Some(reason) = not_applicable(check, probe) {
        report.status = Status::Skip;
        report.message = reason;
        return Ok(report);
    }
    let mut cmd = Command::new(&options.exe);
    cmd.arg("--run-check").arg(check.id);
    config_args(
        &mut cmd,
        &config_with_state(&options.config, state.for_check(check.id)?),
    );
    cmd.arg(&options.plugin);
    let started = Instant::now();
    let out = supervise(&options.exe, cmd, options.timeout)?;
    report.duration = started.elapsed();
    let (line, rest) = split_result(&out.stdout);
    report.stdout = rest;
    report.stderr = out.stderr.clone();
    match (out.timed_out, line.and_then(parse_verdict)) {
        // Performance is warn-only whatever happens: a call slower than the whole timeout
        // is a slow plugin, not a broken one.
        (true, _) if check.group == Group::Performance => {
            report.status = Status::Warn;
            report.message = format!(
                "no measurement within {:.1} s (one call takes longer); the process group was killed",
                options.timeout.as_secs_f64()
            );
        }
        (true, _) => {
            report.status = Status::Timeout;
            report.message = format!(
                "no result within {:.1} s; the process group was killed",
                options.timeout.as_secs_f64()
            );
        }
        (false, Some(v)) if out.code == Some(0) => report.apply(v),
        _ => {
            report.status = Status::Crash;
            report.message = format!("{}: {}", out.describe_abnormal(), tail(&out.stderr));
        }
    }
    Ok(report)
}

/// How a supervised child ended.
struct ChildOutput {
    stdout: String,
    stderr: String,
    code: Option<i32>,
    signal: Option<i32>,
    timed_out: bool,
}

impl ChildOutput {
    fn describe_abnormal(&self) -> String {
        if self.timed_out {
            return "timed out".into();
        }
        match (self.signal, self.code) {
            (Some(sig), _) => format!("killed by signal {sig} ({})", signal_name(sig)),
            (None, Some(0)) => "exited without a result".into(),
            (None, Some(code)) => format!("exited with code {code} without a result"),
            (None, None) => "ended without a status".into(),
        }
    }
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGSEGV => "SIGSEGV, invalid memory access",
        libc::SIGABRT => "SIGABRT, abort",
        libc::SIGBUS => "SIGBUS",
        libc::SIGILL => "SIGILL",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGTERM => "SIGTERM",
        _ => "signal",
    }
}

/// The last lines of a stream: where a panic message or sanitizer report usually is.
fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().filter(|l| !l.trim().is_empty()).collect();
    let start = lines.len().saturating_sub(4);
    let t = lines[start..].join(" | ");
    if t.is_empty() {
        "(no output on stderr)".into()
    } else {
        t
    }
}

/// Runs `cmd` in its own process group, capturing both streams, killing the whole group on
/// timeout and, like LTP, killing any leftovers after it ends.
fn supervise(exe: &Path, mut cmd: Command, timeout: Duration) -> Result<ChildOutput, RunError> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = cmd.spawn().map_err(|error| RunError::Spawn {
        exe: exe.to_path_buf(),
        error,
    })?;
    let pgid = child.id() as libc::pid_t;
    let out_reader = child.stdout.take().map(reader);
    let err_reader = child.stderr.take().map(reader);
    let deadline = Instant::now() + timeout;
    let mut timed_out = false;
    // The child is left unreaped (a zombie) until its group has been killed, so its pid,
    // which is the group id, cannot be reused by an unrelated process in between.
    loop {
        if exited_unreaped(pgid) {
            break;
        }
        if Instant::now() >= deadline {
            timed_out = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    kill_group(pgid);
    let status = child.wait().ok();
    let join = |h: Option<std::thread::JoinHandle<String>>| {
        h.and_then(|h| h.join().ok()).unwrap_or_default()
    };
    Ok(ChildOutput {
        stdout: join(out_reader),
        stderr: join(err_reader),
        code: status.and_then(|s| s.code()),
        signal: status.and_then(|s| s.signal()),
        timed_out,
    })
}

/// Whether the child has exited, without reaping it.
fn exited_unreaped(pid: libc::pid_t) -> bool {
    // SAFETY: siginfo_t is plain data; zeroed is a valid initial value for waitid to fill.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    let Ok(id) = libc::id_t::try_from(pid) else {
        return true;
    };
    // SAFETY: valid out pointer; WNOWAIT leaves the child waitable for Child::wait.
    let r = unsafe {
        libc::waitid(
            libc::P_PID,
            id,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        )
    };
    // SAFETY: after a successful waitid, si_pid is set (0 when the child is still running).
    r != 0 || unsafe { info.si_pid() } != 0
}

fn kill_group(pgid: libc::pid_t) {
    // SAFETY: kill has no memory preconditions; a negative pid names the group we created
    // for this child (process_group(0) made its pid the group id). ESRCH is fine.
    unsafe {
        libc::kill(-pgid, libc::SIGKILL);
    }
}

fn reader<R: Read + Send + 'static>(mut r: R) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut kept = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            match r.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    // Keep reading past the cap so the child never blocks on a full pipe.
                    let room = MAX_CAPTURE.saturating_sub(kept.len());
                    kept.extend_from_slice(&buf[..n.min(room)]);
                }
            }
        }
        String::from_utf8_lossy(&kept).into_owned()
    })
}

/// Parses one `--set K=V`.
pub fn parse_setting(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(format!("`{s}` is not KEY=VALUE")),
    }
}

impl CheckReport {
    fn apply(&mut self, v: Verdict) {
        match v {
            Verdict::Pass { note } => {
                self.status = Status::Pass;
                self.message = note;
            }
            Verdict::Fail { expected, actual } => {
                self.status = Status::Fail;
                self.message = format!("expected {expected}; {actual}");
                self.expected = Some(expected);
                self.actual = Some(actual);
            }
            Verdict::Skip { reason } => {
                self.status = Status::Skip;
                self.message = reason;
            }
            Verdict::Warn { message } => {
                self.status = Status::Warn;
                self.message = message;
            }
            Verdict::Setup { hint } => {
                self.status = Status::Setup;
                self.message = hint;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn settings_parse() {
        assert_eq!(
            parse_setting("tcti=swtpm:port=1"),
            Ok(("tcti".into(), "swtpm:port=1".into()))
        );
        assert_eq!(parse_setting("k="), Ok(("k".into(), String::new())));
        assert!(parse_setting("novalue").is_err());
        assert!(parse_setting("=v").is_err());
    }

    #[test]
    fn state_copies_keep_private_modes() {
        let from = tempfile::tempdir().unwrap();
        std::fs::create_dir(from.path().join("sub")).unwrap();
        let key = from.path().join("sub/key");
        std::fs::write(&key, b"k").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let to = tempfile::tempdir().unwrap();
        let dest = to.path().join("copy");
        copy_dir(from.path(), &dest).unwrap();
        let meta = std::fs::metadata(dest.join("sub/key")).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(
            std::fs::metadata(&dest).unwrap().permissions().mode() & 0o777,
            0o700
        );
        assert_eq!(std::fs::read(dest.join("sub/key")).unwrap(), b"k");
    }

    #[test]
    fn unknown_pattern_is_an_error() {
        let o = RunOptions {
            plugin: PathBuf::from("/nonexistent"),
            config: vec![],
            only: vec!["nope.*".into()],
            skip: vec![],
            jobs: 1,
            timeout: Duration::from_secs(1),
            exe: PathBuf::from("/nonexistent"),
        };
        assert!(matches!(select(&o), Err(RunError::UnknownPattern(_))));
        let o = RunOptions {
            only: vec!["tpm".into()],
            skip: vec!["tpm.ek-*".into()],
            ..o
        };
        let ids: Vec<&str> = select(&o).unwrap().iter().map(|c| c.id).collect();
        assert!(ids.contains(&"tpm.activate-and-sign"));
        assert!(!ids
            .iter()
            .any(|i| i.starts_with("tpm.ek-") || !i.starts_with("tpm.")));
    }
}
