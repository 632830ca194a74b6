//! Cold provisioning: process start to "assigned" for `hsmkit provision` with each software
//! plugin, against an in-process DPS emulator (assignment delay 0) over TLS; the same for the
//! official Azure IoT Node device client (symmetric key) against the same emulator, as a ratio;
//! and `hsmkit provision`'s peak resident memory. Two emulator modes: the register request
//! answered with the final state, and 202 + Retry-After 1 s (a wait both clients honour).
//!
//! Needs release plugins and Node packages:
//!   cargo build --release --workspace && .ci/install-node-deps
//!   cargo bench -p provisioning-core --bench provision_cold

use dps_emulator::enroll_files::{EnrollmentInfo, EnrollmentInfoExt};
use dps_emulator::{Emulator, EmulatorConfig};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const RUNS: usize = 5;

fn which_node() -> PathBuf {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("node"))
        .find(|p| p.is_file())
        .expect("node not found in PATH: run .ci/install-node-deps")
}

struct Run {
    wall: Duration,
    max_rss_kib: u64,
}

/// Runs `program args` under GNU time, which reports the peak RSS of its own child. (The
/// rusage of a child spawned from this big process would include this process's pages, which
/// the child shared until its exec.)
fn timed(program: &Path, args: &[&std::ffi::OsStr], envs: &[(&str, String)]) -> Run {
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
        max_rss_kib: rss
            .trim()
            .lines()
            .last()
            .and_then(|l| l.trim().parse().ok())
            .unwrap_or(0),
    }
}

fn os<S: AsRef<std::ffi::OsStr> + ?Sized>(s: &S) -> &std::ffi::OsStr {
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
    // A plugins folder as a device has it: just the plugins it ships.
    let plugins = root.path().join("plugins");
    std::fs::create_dir(&plugins).expect("plugins folder");
    for p in ["dice", "tpm_sim", "symmetric"] {
        let so = profile_dir().join(format!("libhsmkit_plugin_{p}.so"));
        assert!(
            so.is_file(),
            "{} missing: run `cargo build --release --workspace` first",
            so.display()
        );
        std::fs::copy(&so, plugins.join(so.file_name().expect("name"))).expect("copy plugin");
    }
    let node_modules =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../dps-emulator/node-tests/node_modules");
    if !node_modules
        .join("azure-iot-provisioning-device-http")
        .is_dir()
    {
        panic!(
            "{} lacks the Azure IoT Node SDK: run .ci/install-node-deps",
            node_modules.display()
        );
    }
    let mut peak_rss = 0u64;
    // Assignment delay 0 in both modes. First the register request is answered with the
    // final state (the service's documented `200` answer); then the usual `202 assigning`
    // with Retry-After 1 s, which both clients honour once before the assigned answer.
    for (mode, immediate) in [
        ("register answered 200 assigned", true),
        ("202 assigning + Retry-After 1 s, one poll", false),
    ] {
        let mode_root = root
            .path()
            .join(if immediate { "immediate" } else { "polled" });
        let mut config = EmulatorConfig::new(mode_root.join("emulator"));
        config.complete_registrations_immediately = immediate;
        let emulator = Emulator::start_in_background(config).expect("emulator");
        let ca = emulator.ca_cert_path().to_path_buf();
        let endpoint = emulator.endpoint();
        let scope = emulator.id_scope().to_string();
        println!("Cold provisioning, process start to assigned, median of {RUNS} ({mode}):");
        let mut symmetric_ms = 0.0;
        for (plugin, extra) in [
            (
                "symmetric",
                vec!["--set", "registration_id=bench-symmetric"],
            ),
            ("tpm-sim", vec![]),
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
            timed(&hsmkit, &enroll, &[]);
            let info = EnrollmentInfo::read_dir(&enroll_dir).expect("enrollment files");
            emulator
                .enrollments()
                .create_individual(info.individual())
                .expect("enroll");
            let mut walls = Vec::new();
            for _ in 0..RUNS {
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
                    os(&endpoint),
                    os("--force"),
                    os("--json"),
                    os("--trust-ca"),
                    os(&ca),
                ];
                args.extend(extra.iter().map(os));
                let run = timed(&hsmkit, &args, &[]);
                walls.push(run.wall.as_secs_f64() * 1e3);
                peak_rss = peak_rss.max(run.max_rss_kib);
            }
            let m = median(walls);
            if plugin == "symmetric" {
                symmetric_ms = m;
            }
            println!("  hsmkit provision --plugin {plugin:<10} {m:8.1} ms");
        }

        // The official Node device client, same emulator, same kind of device.
        let key = base64_key();
        let reg_id = "bench-node-symmetric";
        let enrollment: dps_emulator::model::IndividualEnrollment =
            serde_json::from_value(serde_json::json!({
                "registrationId": reg_id,
                "attestation": {"type": "symmetricKey", "symmetricKey": {"primaryKey": key, "secondaryKey": key}},
                "provisioningStatus": "enabled"
            }))
            .expect("enrollment JSON");
        emulator
            .enrollments()
            .create_individual(enrollment)
            .expect("enroll node device");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/node-provision.js");
        let node = which_node();
        let mut walls = Vec::new();
        for _ in 0..RUNS {
            let envs = [
                ("NODE_PATH", node_modules.display().to_string()),
                ("NODE_EXTRA_CA_CERTS", ca.display().to_string()),
                ("DPS_HOST", "localhost".to_string()),
                ("DPS_PORT", emulator.addr().port().to_string()),
                ("ID_SCOPE", scope.clone()),
                ("REG_ID", reg_id.to_string()),
                ("KEY", key.clone()),
            ];
            walls.push(timed(&node, &[os(&script)], &envs).wall.as_secs_f64() * 1e3);
        }
        let node_ms = median(walls);
        println!("  official Node device client (symmetric) {node_ms:8.1} ms");
        println!(
            "  ratio hsmkit/Node (symmetric key): {:.3}   (target <= 0.5)",
            symmetric_ms / node_ms
        );
        emulator.shutdown();
    }
    println!(
        "hsmkit provision peak RSS: {:.1} MiB   (target < 20 MiB)",
        peak_rss as f64 / 1024.0
    );
}

fn base64_key() -> String {
    use base64::Engine;
    let mut key = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut key);
    base64::engine::general_purpose::STANDARD.encode(key)
}
