//! Cold provisioning over MQTT vs over HTTPS (issue 15): process start to "assigned" for
//! `hsmkit provision --transport mqtt`, `--transport mqtt-ws` (MQTT over WebSocket) and
//! `--transport https` with the software plugins MQTT allows (symmetric key, dice X.509),
//! against one in-process DPS emulator serving all three over TLS, as ratios against HTTPS
//! measured in the same run; and each transport's peak resident memory. Two
//! emulator modes: the register request answered with the final state, and 202 + Retry-After
//! 1 s (one poll, which both transports honour). Runs alternate between the transports so
//! that drift in the machine's load hits both alike.
//!
//! And hsmkit over MQTT against the official Python device SDK over MQTT (`azure-iot-device`'s
//! `ProvisioningDeviceClient`, symmetric key, in the venv `.ci/install-python-deps` makes):
//! process start to assigned for both, against the same emulator in the same rounds, as the
//! ratio hsmkit/Python. The SDK always connects to port 8883 of the host it is given, so the
//! emulator's MQTT listener is on 127.0.0.1:8883 here (the bench fails when it is taken).
//!
//!   .ci/install-python-deps
//!   cargo build --release -p provisioning-core -p hsmkit-plugin-dice -p hsmkit-plugin-symmetric
//!   cargo bench -p provisioning-core --bench provision_transport

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use support::{
    enroll, median, mode_emulator_at, os, plugins_folder, provision_args, timed, Target, MODES,
};

const RUNS: usize = 7;

/// The Python SDK's place in the figures, after hsmkit's https, mqtt and mqtt-ws.
const PYTHON: usize = 3;

/// The Python SDK's device: its own individual enrollment with this key.
const PY_REG: &str = "bench-python-symmetric";
const PY_KEY: &str = "YmVuY2ggcHl0aG9uIHN5bW1ldHJpYyBrZXkgMzIgYnl0ZXM=";

/// The venv's Python and the SDK driver script (dps-emulator's interop test's).
fn python_sdk() -> (PathBuf, PathBuf) {
    let tests = Path::new(env!("CARGO_MANIFEST_DIR")).join("../dps-emulator/python-tests");
    let python = tests.join(".venv/bin/python");
    assert!(
        python.is_file(),
        "{} is missing: run .ci/install-python-deps (installs azure-iot-device into it)",
        python.display()
    );
    (python, tests.join("official_client.py"))
}

/// Enrolls the Python SDK's device in `emulator`.
fn enroll_python_device(emulator: &dps_emulator::BackgroundEmulator) {
    use dps_emulator::model::{
        AttestationMechanism, IndividualEnrollment, SymmetricKeyAttestation,
    };
    emulator
        .enrollments()
        .create_individual(IndividualEnrollment {
            registration_id: PY_REG.into(),
            device_id: None,
            attestation: AttestationMechanism {
                kind: "symmetricKey".into(),
                tpm: None,
                x509: None,
                symmetric_key: Some(SymmetricKeyAttestation {
                    primary_key: Some(PY_KEY.into()),
                    secondary_key: None,
                }),
            },
            common: Default::default(),
        })
        .expect("enroll the Python device");
}

fn main() {
    let hsmkit = PathBuf::from(env!("CARGO_BIN_EXE_hsmkit"));
    let (python, script) = python_sdk();
    let root = tempfile::tempdir().expect("temp dir");
    let plugins = plugins_folder(
        root.path(),
        &["dice", "symmetric"],
        "cargo build --release -p hsmkit-plugin-dice -p hsmkit-plugin-symmetric",
    );
    let mut rss = [0u64; 4];
    for (mode, immediate) in MODES {
        let mqtt_port = SocketAddr::from(([127, 0, 0, 1], 8883));
        let (mode_root, emulator) = mode_emulator_at(root.path(), immediate, Some(mqtt_port), true);
        enroll_python_device(&emulator);
        let ca = emulator.ca_cert_path().to_path_buf();
        let https = emulator.endpoint();
        let mqtt = format!(
            "127.0.0.1:{}",
            emulator.mqtt_addr().expect("MQTT listener").port()
        );
        let mqtt_ws = format!(
            "wss://127.0.0.1:{}",
            emulator
                .mqtt_ws_addr()
                .expect("MQTT over WebSocket listener")
                .port()
        );
        let scope = emulator.id_scope().to_string();
        let python_env = [
            ("ONLY_SYMMETRIC", "1".to_string()),
            ("DPS_HOST", "localhost".to_string()),
            ("ID_SCOPE", scope.clone()),
            ("CA_FILE", ca.display().to_string()),
            ("SYM_REG_ID", PY_REG.to_string()),
            ("SYM_KEY", PY_KEY.to_string()),
        ];
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
            // https, mqtt, mqtt-ws, then the Python SDK.
            let mut walls = [Vec::new(), Vec::new(), Vec::new(), Vec::new()];
            // One unmeasured run per transport first: the page cache holds the binary and the
            // plugin for every measured run alike.
            for round in 0..=RUNS {
                for (i, (transport, endpoint)) in
                    [("https", &https), ("mqtt", &mqtt), ("mqtt-ws", &mqtt_ws)]
                        .into_iter()
                        .enumerate()
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
                // The Python SDK in the same round, against the same emulator's MQTT.
                if plugin == "symmetric" {
                    let run = timed(&python, &[os(&script)], &python_env);
                    let v: serde_json::Value = serde_json::from_str(run.stdout.trim())
                        .unwrap_or_else(|e| {
                            panic!("the Python SDK printed no JSON ({e}): {}", run.stdout)
                        });
                    assert_eq!(v["symmetric"]["status"], "assigned", "Python SDK: {v}");
                    if round > 0 {
                        walls[PYTHON].push(run.wall.as_secs_f64() * 1e3);
                        rss[PYTHON] = rss[PYTHON].max(run.max_rss_kib);
                    }
                }
            }
            let [https_ms, mqtt_ms, ws_ms, python_ms] =
                walls.map(|w| (!w.is_empty()).then(|| median(w)));
            let [https_ms, mqtt_ms, ws_ms] =
                [https_ms, mqtt_ms, ws_ms].map(|m| m.expect("measured every round"));
            println!(
                "  {plugin:<10} https {https_ms:8.1} ms   mqtt {mqtt_ms:8.1} ms   mqtt-ws {ws_ms:8.1} ms   ratio mqtt/https {:.3}   mqtt-ws/https {:.3}",
                mqtt_ms / https_ms,
                ws_ms / https_ms
            );
            if let Some(python_ms) = python_ms {
                println!(
                    "  {plugin:<10} hsmkit mqtt {mqtt_ms:8.1} ms   Python SDK mqtt {python_ms:8.1} ms   ratio hsmkit/python {:.3}",
                    mqtt_ms / python_ms
                );
            }
        }
        let records = emulator.registration_records().expect("records");
        assert_eq!(records.len(), 3, "one record per device: {records:?}");
        emulator.shutdown();
    }
    let [https, mqtt, ws, python] = rss.map(|kib| kib as f64 / 1024.0);
    println!(
        "peak RSS: hsmkit provision https {https:.1} MiB, mqtt {mqtt:.1} MiB, mqtt-ws {ws:.1} MiB; \
         Python SDK (mqtt) {python:.1} MiB"
    );
}
