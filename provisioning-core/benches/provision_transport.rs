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

mod support;

use std::path::PathBuf;
use support::{
    enroll, median, mode_emulator, plugins_folder, provision_args, timed, Target, MODES,
};

const RUNS: usize = 7;

fn main() {
    let hsmkit = PathBuf::from(env!("CARGO_BIN_EXE_hsmkit"));
    let root = tempfile::tempdir().expect("temp dir");
    let plugins = plugins_folder(
        root.path(),
        &["dice", "symmetric"],
        "cargo build --release -p hsmkit-plugin-dice -p hsmkit-plugin-symmetric",
    );
    let mut rss = [0u64; 2];
    for (mode, immediate) in MODES {
        let (mode_root, emulator) = mode_emulator(root.path(), immediate, true);
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
            enroll(&hsmkit, &emulator, &plugins, &state, plugin, &extra);
            let mut walls = [Vec::new(), Vec::new()];
            // One unmeasured run per transport first: the page cache holds the binary and the
            // plugin for every measured run alike.
            for round in 0..=RUNS {
                for (i, (transport, endpoint)) in
                    [("https", &https), ("mqtt", &mqtt)].into_iter().enumerate()
                {
                    let target = Target {
                        scope: &scope,
                        endpoint,
                        ca: &ca,
                        transport: Some(transport),
                    };
                    let args = provision_args(&plugins, &state, plugin, &target, &extra);
                    let run = timed(&hsmkit, &args, &[]);
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
