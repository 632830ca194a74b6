//! Shared by the cold-provisioning benches: running `hsmkit` under GNU time, the plugins
//! folder, the emulator modes, enrolling a device with `hsmkit enroll-info --out`, and the
//! `hsmkit provision` command line.
#![allow(dead_code, unreachable_pub)] // each bench uses its part, through `pub`

use dps_emulator::enroll_files::{EnrollmentInfo, EnrollmentInfoExt};
use dps_emulator::{BackgroundEmulator, Emulator, EmulatorConfig};
use std::ffi::OsStr;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The two emulator modes, each with its label: the register request answered with the final
/// state (the service's documented `200` answer), then the usual `202 assigning` with
/// Retry-After 1 s, which the clients honour once before the assigned answer. Assignment delay
/// 0 in both.
pub const MODES: [(&str, bool); 2] = [
    ("register answered 200 assigned", true),
    ("202 assigning + Retry-After 1 s, one poll", false),
];

/// One measured run.
pub struct Run {
    pub wall: Duration,
    pub max_rss_kib: u64,
    /// What the program printed on stdout.
    pub stdout: String,
}

/// Runs `program args` under GNU time, which reports the peak RSS of its own child. (The
/// rusage of a child spawned from this big process would include this process's pages, which
/// the child shared until its exec.)
pub fn timed(program: &Path, args: &[&OsStr], envs: &[(&str, String)]) -> Run {
    let rss_file = tempfile::NamedTempFile::new().expect("temp file");
    let mut cmd = Command::new("/usr/bin/time");
    cmd.arg("-f")
        .arg("%M")
        .arg("-o")
        .arg(rss_file.path())
        .arg(program)
        .args(args);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let started = Instant::now();
    let out = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("run /usr/bin/time (apt-get install time)");
    let wall = started.elapsed();
    assert!(
        out.status.success(),
        "{} failed: {}",
        program.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let rss = std::fs::read_to_string(rss_file.path()).expect("time output");
    Run {
        wall,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        max_rss_kib: rss
            .trim()
            .lines()
            .last()
            .and_then(|l| l.trim().parse().ok())
            .unwrap_or(0),
    }
}

pub fn os<S: AsRef<OsStr> + ?Sized>(s: &S) -> &OsStr {
    s.as_ref()
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("bench path");
    exe.parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps")
        .to_path_buf()
}

/// A plugins folder under `root` as a device has it: just the built plugins `names`
/// (`libhsmkit_plugin_<name>.so`); `build` is the command that builds them, for the message.
pub fn plugins_folder(root: &Path, names: &[&str], build: &str) -> PathBuf {
    let plugins = root.join("plugins");
    std::fs::create_dir(&plugins).expect("plugins folder");
    for p in names {
        let so = profile_dir().join(format!("libhsmkit_plugin_{p}.so"));
        assert!(
            so.is_file(),
            "{} missing: run `{build}` first",
            so.display()
        );
        std::fs::copy(&so, plugins.join(so.file_name().expect("name"))).expect("copy plugin");
    }
    plugins
}

/// The folder for one of [`MODES`] under `root`, and an emulator for it (with its MQTT
/// listener on a free loopback port when `mqtt`).
pub fn mode_emulator(root: &Path, immediate: bool, mqtt: bool) -> (PathBuf, BackgroundEmulator) {
    let at = mqtt.then_some(SocketAddr::from(([127, 0, 0, 1], 0)));
    mode_emulator_at(root, immediate, at, false)
}

/// [`mode_emulator`] with the MQTT listener, if any, on `mqtt`, and with `mqtt_ws` an MQTT
/// over WebSocket listener on a free loopback port.
pub fn mode_emulator_at(
    root: &Path,
    immediate: bool,
    mqtt: Option<SocketAddr>,
    mqtt_ws: bool,
) -> (PathBuf, BackgroundEmulator) {
    let mode_root = root.join(if immediate { "immediate" } else { "polled" });
    let mut config = EmulatorConfig::new(mode_root.join("emulator"));
    config.complete_registrations_immediately = immediate;
    config.mqtt_listen = mqtt;
    config.mqtt_ws_listen = mqtt_ws.then_some(SocketAddr::from(([127, 0, 0, 1], 0)));
    let emulator = Emulator::start_in_background(config)
        .unwrap_or_else(|e| panic!("cannot start the emulator (MQTT on {mqtt:?}): {e}"));
    (mode_root, emulator)
}

/// Runs `hsmkit enroll-info --out` for `plugin` (with `extra` arguments) in `state` and
/// enrolls what it wrote in `emulator`.
pub fn enroll(
    hsmkit: &Path,
    emulator: &BackgroundEmulator,
    plugins: &Path,
    state: &Path,
    plugin: &str,
    extra: &[&str],
) {
    let enroll_dir = state.join("enroll");
    let mut enroll = vec![
        os("--plugin-dir"),
        os(plugins),
        os("--state-dir"),
        os(state),
        os("enroll-info"),
        os("--plugin"),
        os(plugin),
        os("--json"),
        os("--out"),
        os(&enroll_dir),
    ];
    enroll.extend(extra.iter().map(os));
    timed(hsmkit, &enroll, &[]);
    let info = EnrollmentInfo::read_dir(&enroll_dir).expect("enrollment files");
    emulator
        .enrollments()
        .create_individual(info.individual())
        .expect("enroll");
}

/// Where `hsmkit provision` goes: the ID scope, the endpoint, the CA to trust, and the
/// transport (`None`: the default, no `--transport`).
pub struct Target<'a> {
    pub scope: &'a str,
    pub endpoint: &'a str,
    pub ca: &'a Path,
    pub transport: Option<&'a str>,
}

/// `hsmkit provision --force --json` arguments for `plugin` (with `extra`) in `state`.
pub fn provision_args<'a>(
    plugins: &'a Path,
    state: &'a Path,
    plugin: &'a str,
    target: &Target<'a>,
    extra: &[&'a str],
) -> Vec<&'a OsStr> {
    let mut args = vec![
        os("--plugin-dir"),
        os(plugins),
        os("--state-dir"),
        os(state),
        os("provision"),
        os("--plugin"),
        os(plugin),
        os("--id-scope"),
        os(target.scope),
        os("--endpoint"),
        os(target.endpoint),
    ];
    if let Some(transport) = target.transport {
        args.extend([os("--transport"), os(transport)]);
    }
    args.extend([os("--force"), os("--json"), os("--trust-ca"), os(target.ca)]);
    args.extend(extra.iter().map(|s| os(*s)));
    args
}
