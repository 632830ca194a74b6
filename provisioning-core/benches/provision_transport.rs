//! Cold provisioning over MQTT vs over HTTPS (issue 15): process start to "assigned" for
//! `hsmkit provision --transport mqtt` and `--transport https` with the software plugins MQTT
//! allows (symmetric key, dice X.509), against one in-process DPS emulator serving both over
//! TLS, as ratios measured in the same run; and each transport's peak resident memory. Two
//! emulator modes: the register request answered with the final state, and 202 + Retry-After
//! 1 s (one poll, which both transports honour). Runs alternate between the transports so
//! that drift in the machine's load hits both alike.
//!
//!   cargo build --release -p provisioning-core -p hsmkit-plugin-dice -p hsmkit-plugin-symmetric
//!   cargo bench -p provisioning-core --bench provision_transport

use dps_emulator::enroll_files::{EnrollmentInfo, EnrollmentInfoExt};
use dps_emulator::{Emulator, EmulatorConfig};
use std::ffi::OsStr;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const RUNS: usize = 7;

struct Run {
    wall: Duration,
    max_rss_kib: u64,
}

/// Runs `program args` under GNU time, which reports the peak RSS of its own child.
fn timed(program: &Path, args: &[&OsStr]) -> Run {
    let rss_file = tempfile::NamedTempFile::new().expect("temp file");
    let started = Instant::now();
    let out = Command::new("/usr/bin/time")
        .arg("-f")
        .arg("%M")
        .arg("-o")
        .arg(rss_file.path())
        .arg(program)
        .args(args)
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
        max_rss_kib: rss
            .trim()
            .lines()
            .last()
            .and_then(|l| l.trim().parse().ok())
            .unwrap_or(0),
    }
}

fn os<S: AsRef<OsStr> + ?Sized>(s: &S) -> &OsStr {
    s.as_ref()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("bench path");
    exe.parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps")
        .to_path_buf()
}

fn main() {
    let hsmkit = PathBuf::from(env!("CARGO_BIN_EXE_hsmkit"));
    let root = tempfile::tempdir().expect("temp dir");
    let plugins = root.path().join("plugins");
    std::fs::create_dir(&plugins).expect("plugins folder");
    for p in ["dice", "symmetric"] {
        let so = profile_dir().join(format!("libhsmkit_plugin_{p}.so"));
        assert!(
            so.is_file(),
            "{} missing: run `cargo build --release -p hsmkit-plugin-dice -p hsmkit-plugin-symmetric` first",
            so.display()
        );
        std::fs::copy(&so, plugins.join(so.file_name().expect("name"))).expect("copy plugin");
    }
    let mut rss = [0u64; 2];
    for (mode, immediate) in [
        ("register answered 200 assigned", true),
        ("202 assigning + Retry-After 1 s, one poll", false),
    ] {
        let mode_root = root
            .path()
            .join(if immediate { "immediate" } else { "polled" });
        let mut config = EmulatorConfig::new(mode_root.join("emulator"));
        config.complete_registrations_immediately = immediate;
        config.mqtt_listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
        let emulator = Emulator::start_in_background(config).expect("emulator");
        let ca = emulator.ca_cert_path().to_path_buf();
        let https = emulator.endpoint();
        let mqtt = format!(
            "127.0.0.1:{}",
            emulator.mqtt_addr().expect("MQTT listener").port()
        );
        let scope = emulator.id_scope().to_string();
        println!("Cold provisioning, process start to assigned, median of {RUNS} ({mode}):");
        for (plugin, extra) in [
            (
                "symmetric",
                vec!["--set", "registration_id=bench-mqtt-symmetric"],
            ),
            ("dice", vec![]),
        ] {
            let state = mode_root.join(plugin);
            let enroll_dir = state.join("enroll");
            let mut enroll = vec![
                os("--plugin-dir"),
                os(&plugins),
                os("--state-dir"),
                os(&state),
                os("enroll-info"),
                os("--plugin"),
                os(plugin),
                os("--json"),
                os("--out"),
                os(&enroll_dir),
            ];
            enroll.extend(extra.iter().map(os));
            timed(&hsmkit, &enroll);
            let info = EnrollmentInfo::read_dir(&enroll_dir).expect("enrollment files");
            emulator
                .enrollments()
                .create_individual(info.individual())
                .expect("enroll");
            let mut walls = [Vec::new(), Vec::new()];
            // One unmeasured run per transport first: the page cache holds the binary and the
            // plugin for every measured run alike.
            for round in 0..=RUNS {
                for (i, (transport, endpoint)) in
                    [("https", &https), ("mqtt", &mqtt)].into_iter().enumerate()
                {
                    let mut args = vec![
                        os("--plugin-dir"),
                        os(&plugins),
                        os("--state-dir"),
                        os(&state),
                        os("provision"),
                        os("--plugin"),
                        os(plugin),
                        os("--id-scope"),
                        os(&scope),
                        os("--endpoint"),
                        os(endpoint),
                        os("--transport"),
                        os(transport),
                        os("--force"),
                        os("--json"),
                        os("--trust-ca"),
                        os(&ca),
                    ];
                    args.extend(extra.iter().map(os));
                    let run = timed(&hsmkit, &args);
                    if round > 0 {
                        walls[i].push(run.wall.as_secs_f64() * 1e3);
                        rss[i] = rss[i].max(run.max_rss_kib);
                    }
                }
            }
            let [https_ms, mqtt_ms] = walls.map(median);
            println!(
                "  {plugin:<10} https {https_ms:8.1} ms   mqtt {mqtt_ms:8.1} ms   ratio mqtt/https {:.3}",
                mqtt_ms / https_ms
            );
        }
        let records = emulator.registration_records().expect("records");
        assert_eq!(records.len(), 2, "one record per device: {records:?}");
        emulator.shutdown();
    }
    println!(
        "hsmkit provision peak RSS: https {:.1} MiB, mqtt {:.1} MiB",
        rss[0] as f64 / 1024.0,
        rss[1] as f64 / 1024.0
    );
}
