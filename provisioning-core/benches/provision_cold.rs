//! Cold provisioning: process start to "assigned" for `hsmkit provision` with each software
//! plugin, against an in-process DPS emulator (assignment delay 0) over TLS; the same for the
//! official Azure IoT Node device client (symmetric key) against the same emulator, as a ratio;
//! and `hsmkit provision`'s peak resident memory. Two emulator modes: the register request
//! answered with the final state, and 202 + Retry-After 1 s (a wait both clients honour).
//!
//! Needs release plugins and Node packages:
//!   cargo build --release --workspace && .ci/install-node-deps
//!   cargo bench -p provisioning-core --bench provision_cold

mod support;

use std::path::{Path, PathBuf};
use support::{
    enroll, median, mode_emulator, os, plugins_folder, provision_args, timed, Target, MODES,
};

const RUNS: usize = 5;

fn which_node() -> PathBuf {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("node"))
        .find(|p| p.is_file())
        .expect("node not found in PATH: run .ci/install-node-deps")
}

fn main() {
    let hsmkit = PathBuf::from(env!("CARGO_BIN_EXE_hsmkit"));
    let root = tempfile::tempdir().expect("temp dir");
    // A plugins folder as a device has it: just the plugins it ships.
    let plugins = plugins_folder(
        root.path(),
        &["dice", "tpm_sim", "symmetric"],
        "cargo build --release --workspace",
    );
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
    // Assignment delay 0 in both modes (see `MODES`).
    for (mode, immediate) in MODES {
        let (mode_root, emulator) = mode_emulator(root.path(), immediate, false);
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
            enroll(&hsmkit, &emulator, &plugins, &state, plugin, &extra);
            let mut walls = Vec::new();
            for _ in 0..RUNS {
                let target = Target {
                    scope: &scope,
                    endpoint: &endpoint,
                    ca: &ca,
                    transport: None,
                };
                let args = provision_args(&plugins, &state, plugin, &target, &extra);
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
