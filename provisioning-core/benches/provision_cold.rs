//! Cold provisioning: process start to "assigned" for `hsmkit provision` with each software
//! plugin, against an in-process DPS emulator (assignment delay 0) over TLS; the same for the
//! official Azure IoT Node device client (symmetric key) against the same emulator, as a ratio;
//! and `hsmkit provision`'s peak resident memory.
//!
//! Needs release plugins and Node packages:
//!   cargo build --release --workspace && .ci/install-node-deps
//!   cargo bench -p provisioning-core --bench provision_cold

use dps_emulator::enroll_files::EnrollmentInfo;
use dps_emulator::{Emulator, EmulatorConfig};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const RUNS: usize = 5;

struct Run {
    wall: Duration,
    max_rss_kib: i64,
}

/// Spawns `cmd`, waits with wait4 to read the child's peak RSS.
fn timed(cmd: &mut Command) -> Run {
    let started = Instant::now();
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to fill in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: pid is our child; status and usage are valid for writes.
    let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let wall = started.elapsed();
    assert_eq!(rc, pid, "wait4 failed");
    let output = child.wait_with_output().ok();
    if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
        let err = output
            .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
            .unwrap_or_default();
        panic!("{:?} failed: {err}", cmd.get_program());
    }
    Run {
        wall,
        max_rss_kib: usage.ru_maxrss,
    }
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
    let plugins = profile_dir();
    for p in ["dice", "tpm_sim", "symmetric"] {
        let so = plugins.join(format!("libhsmkit_plugin_{p}.so"));
        assert!(so.is_file(), "{} missing: run `cargo build --release --workspace` first", so.display());
    }
    let root = tempfile::tempdir().expect("temp dir");
    let emulator =
        Emulator::start_in_background(EmulatorConfig::new(root.path().join("emulator"))).expect("emulator");
    let ca = emulator.ca_cert_path().to_path_buf();
    let endpoint = emulator.endpoint();
    let scope = emulator.id_scope().to_string();

    println!("Cold provisioning, process start to assigned (median of {RUNS}; emulator assignment delay 0)");
    let mut symmetric_ms = 0.0;
    let mut peak_rss = 0i64;
    for (plugin, extra) in [
        ("symmetric", vec!["--set", "registration_id=bench-symmetric"]),
        ("tpm-sim", vec![]),
        ("dice", vec![]),
    ] {
        let state = root.path().join(plugin);
        let enroll_dir = state.join("enroll");
        let mut enroll = Command::new(&hsmkit);
        enroll
            .arg("--plugin-dir").arg(&plugins)
            .arg("--state-dir").arg(&state)
            .args(["enroll-info", "--plugin", plugin, "--json", "--out"])
            .arg(&enroll_dir)
            .args(&extra);
        timed(&mut enroll);
        let info = EnrollmentInfo::read_dir(&enroll_dir).expect("enrollment files");
        emulator.enrollments().create_individual(info.individual()).expect("enroll");
        let mut walls = Vec::new();
        for _ in 0..RUNS {
            let mut cmd = Command::new(&hsmkit);
            cmd.arg("--plugin-dir").arg(&plugins)
                .arg("--state-dir").arg(&state)
                .args(["provision", "--plugin", plugin, "--id-scope", &scope, "--endpoint", &endpoint, "--force", "--json", "--trust-ca"])
                .arg(&ca)
                .args(&extra);
            let run = timed(&mut cmd);
            walls.push(run.wall.as_secs_f64() * 1e3);
            peak_rss = peak_rss.max(run.max_rss_kib);
        }
        let m = median(walls);
        if plugin == "symmetric" {
            symmetric_ms = m;
        }
        println!("  hsmkit provision --plugin {plugin:<10} {m:8.1} ms");
    }
    println!(
        "hsmkit provision peak RSS: {:.1} MiB   (target < 20 MiB)",
        peak_rss as f64 / 1024.0
    );

    // The official Node device client, same emulator, same kind of device (symmetric key).
    let node_modules = Path::new(env!("CARGO_MANIFEST_DIR")).join("../dps-emulator/node-tests/node_modules");
    if !node_modules.join("azure-iot-provisioning-device-http").is_dir() {
        panic!("{} lacks the Azure IoT Node SDK: run .ci/install-node-deps", node_modules.display());
    }
    let key = base64_key();
    let reg_id = "bench-node-symmetric";
    let enrollment: dps_emulator::model::IndividualEnrollment = serde_json::from_value(serde_json::json!({
        "registrationId": reg_id,
        "attestation": {"type": "symmetricKey", "symmetricKey": {"primaryKey": key, "secondaryKey": key}},
        "provisioningStatus": "enabled"
    }))
    .expect("enrollment JSON");
    emulator.enrollments().create_individual(enrollment).expect("enroll node device");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/node-provision.js");
    let mut walls = Vec::new();
    for _ in 0..RUNS {
        let mut cmd = Command::new("node");
        cmd.arg(&script)
            .env("NODE_PATH", &node_modules)
            .env("NODE_EXTRA_CA_CERTS", &ca)
            .env("DPS_HOST", "localhost")
            .env("DPS_PORT", emulator.addr().port().to_string())
            .env("ID_SCOPE", &scope)
            .env("REG_ID", reg_id)
            .env("KEY", &key);
        walls.push(timed(&mut cmd).wall.as_secs_f64() * 1e3);
    }
    let node_ms = median(walls);
    println!("  official Node device client (symmetric) {node_ms:8.1} ms");
    println!(
        "ratio hsmkit/Node (symmetric key): {:.3}   (target <= 0.5)",
        symmetric_ms / node_ms
    );
    emulator.shutdown();
}

fn base64_key() -> String {
    use base64::Engine;
    let mut key = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut key);
    base64::engine::general_purpose::STANDARD.encode(key)
}
