//! Interoperability over MQTT with the official Azure IoT device SDKs: the Python
//! `azure-iot-device` `ProvisioningDeviceClient` (symmetric key individual and group-derived,
//! X.509; trust through `server_verification_cert`) and the Node
//! `azure-iot-provisioning-device-mqtt` transport (symmetric key, X.509; trust through
//! `NODE_EXTRA_CA_CERTS`) register against the emulator's MQTT listener.
//!
//! Both SDKs connect to port 8883 of the host they are given (the service's MQTT port, per
//! "Communicate with DPS using the MQTT protocol"), so the emulator's MQTT listener runs on
//! 127.0.0.1:8883 here; the tests of this binary take turns on it (one lock), and a port already
//! taken fails the test with that reason. The Python client also registers over MQTT over
//! WebSocket (`websockets=True`), for which it connects to port 443
//! (`wss://host/$iothub/websocket`): the emulator's WebSocket listener runs on 127.0.0.1:443 for
//! that test (binding it needs root or CAP_NET_BIND_SERVICE, as the README test command runs).
//! Needs `.ci/install-python-deps` and `.ci/install-node-deps`; fails with that hint otherwise.

mod common;

use common::sdk::{run_json, start_on_443, start_on_8883};
use common::*;
use dps_emulator::RunningEmulator;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

const SYM_KEY: &str = "Zm9yIHRoZSBtcXR0IHNkayBpbnRlcm9wIHRlc3Qgb25seQ==";
const GROUP_KEY: &str = "q83vEjRWeJq8p7Bm6x7Ntx0YhEorkqGSTd1U7Nl2JWc=";

/// The tests of this binary share port 8883.
static PORT_8883: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Enrolls the three devices a run registers; writes the X.509 leaf and key into `dir`.
fn enroll(emu: &RunningEmulator, dir: &Path, prefix: &str) -> (PathBuf, PathBuf) {
    enroll_symmetric(emu, &format!("{prefix}-sym-dev"), SYM_KEY);
    enroll_symmetric_group(emu, &format!("{prefix}-group"), GROUP_KEY);
    let (_root, leaf) = x509_leaf(&format!("{prefix}-x509-dev"));
    enroll_x509(emu, &format!("{prefix}-x509-dev"), &leaf);
    let cert = dir.join("leaf.pem");
    let key = dir.join("leaf.key.pem");
    std::fs::write(&cert, leaf.cert_pem()).unwrap();
    std::fs::write(&key, leaf.key_pem().unwrap().as_bytes()).unwrap();
    (cert, key)
}

/// Checks a run's output: three devices assigned to one of the emulator's hubs, the wrong
/// key refused, exactly the three records.
fn check(emu: &RunningEmulator, prefix: &str, v: &Value, device_id: &str, hub: &str) {
    for (k, id) in [
        ("symmetric", format!("{prefix}-sym-dev")),
        ("group", format!("{prefix}-group-dev-1")),
        ("x509", format!("{prefix}-x509-dev")),
    ] {
        assert_eq!(v[k][device_id], id.as_str(), "{k}: {}", v[k]);
        let h = v[k][hub].as_str().unwrap_or_default().to_string();
        assert!(emu.hubs().contains(&h), "{k}: hub {h}");
    }
    assert_eq!(v["wrongKey"], "rejected", "{v}");
    let records = emu.registration_records().unwrap();
    let ids: Vec<&str> = records.iter().map(|r| r.registration_id.as_str()).collect();
    assert_eq!(
        ids,
        [
            format!("{prefix}-group-dev-1"),
            format!("{prefix}-sym-dev"),
            format!("{prefix}-x509-dev")
        ]
    );
    let group = records
        .iter()
        .find(|r| r.registration_id.ends_with("-group-dev-1"))
        .unwrap();
    assert_eq!(
        group.symmetric_key.as_ref().unwrap()["enrollmentGroupId"],
        format!("{prefix}-group").as_str()
    );
    let x509 = records
        .iter()
        .find(|r| r.registration_id.ends_with("-x509-dev"))
        .unwrap();
    assert!(x509.x509.is_some(), "{x509:?}");
}

/// The tests of this binary that use port 443 take turns on it.
static PORT_443: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_python_provisioning_client_over_mqtt() {
    let _port = PORT_8883.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let emu = start_on_8883(dir.path()).await;
    python_registers_all(&emu, dir.path(), "py", false).await;
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_python_provisioning_client_over_mqtt_websocket() {
    let _port = PORT_443.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let emu = start_on_443(dir.path()).await;
    python_registers_all(&emu, dir.path(), "pyws", true).await;
    emu.shutdown().await;
}

/// The Python client registers the three devices of [`enroll`] (prefix `prefix`) and is
/// refused a wrong key, over MQTT on TLS or (`websockets`) over a WebSocket.
async fn python_registers_all(emu: &RunningEmulator, dir: &Path, prefix: &str, websockets: bool) {
    let python = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python-tests/.venv/bin/python");
    assert!(
        python.is_file(),
        "{} is missing: run .ci/install-python-deps (installs azure-iot-device into it)",
        python.display()
    );
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python-tests/official_client.py");
    let (cert, key) = enroll(emu, dir, prefix);
    let ca = emu.ca_cert_path().to_path_buf();
    let scope = emu.id_scope().to_string();
    let p = prefix.to_string();
    let v = tokio::task::spawn_blocking(move || {
        run_json(
            Command::new(python)
                .arg(script)
                .env("WEBSOCKETS", if websockets { "1" } else { "0" })
                .env("DPS_HOST", "localhost")
                .env("ID_SCOPE", scope)
                .env("CA_FILE", ca)
                .env("SYM_REG_ID", format!("{p}-sym-dev"))
                .env("SYM_KEY", SYM_KEY)
                .env("GROUP_REG_ID", format!("{p}-group-dev-1"))
                .env("GROUP_KEY", GROUP_KEY)
                .env("X509_REG_ID", format!("{p}-x509-dev"))
                .env("X509_CERT_FILE", cert)
                .env("X509_KEY_FILE", key),
            "the Python azure-iot-device client",
        )
    })
    .await
    .unwrap();
    check(emu, prefix, &v, "deviceId", "assignedHub");
    assert_eq!(v["symmetric"]["status"], "assigned");
    let sym = emu
        .enrollments()
        .registration(&format!("{prefix}-sym-dev"))
        .unwrap()
        .unwrap();
    // The SDK sent a payload; it is not echoed into the record (the service returns a
    // payload only from a custom allocation webhook).
    assert_eq!(sym.payload, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_node_provisioning_client_over_mqtt() {
    let node_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("node-tests");
    let ok = Command::new("node")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(ok, "node is not installed: run .ci/install-node-deps");
    for pkg in [
        "azure-iot-provisioning-device-mqtt",
        "azure-iot-security-symmetric-key",
        "azure-iot-security-x509",
    ] {
        assert!(
            node_dir.join("node_modules").join(pkg).is_dir(),
            "npm package {pkg} is missing: run .ci/install-node-deps"
        );
    }
    let _port = PORT_8883.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let emu = start_on_8883(dir.path()).await;
    let (cert, key) = enroll(&emu, dir.path(), "node");
    let ca = emu.ca_cert_path().to_path_buf();
    let scope = emu.id_scope().to_string();
    let v = tokio::task::spawn_blocking(move || {
        run_json(
            Command::new("node")
                .arg(node_dir.join("official-mqtt-clients.js"))
                .env("NODE_EXTRA_CA_CERTS", ca)
                .env("DPS_HOST", "localhost")
                .env("ID_SCOPE", scope)
                .env("SYM_REG_ID", "node-sym-dev")
                .env("SYM_KEY", SYM_KEY)
                .env("GROUP_REG_ID", "node-group-dev-1")
                .env("GROUP_KEY", GROUP_KEY)
                .env("X509_REG_ID", "node-x509-dev")
                .env("X509_CERT_FILE", cert)
                .env("X509_KEY_FILE", key),
            "the Node azure-iot-provisioning-device-mqtt client",
        )
    })
    .await
    .unwrap();
    check(&emu, "node", &v, "deviceId", "assignedHub");
    let sym = emu
        .enrollments()
        .registration("node-sym-dev")
        .unwrap()
        .unwrap();
    // The SDK sent a payload; it is not echoed into the record (the service returns a
    // payload only from a custom allocation webhook).
    assert_eq!(sym.payload, None);
    emu.shutdown().await;
}

/// Runs the Python client for one symmetric registration of `reg` (key [`SYM_KEY`]).
async fn python_register_once(emu: &RunningEmulator, reg: &str) -> Value {
    let python = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python-tests/.venv/bin/python");
    assert!(
        python.is_file(),
        "{} is missing: run .ci/install-python-deps",
        python.display()
    );
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python-tests/official_client.py");
    let ca = emu.ca_cert_path().to_path_buf();
    let scope = emu.id_scope().to_string();
    let reg = reg.to_string();
    tokio::task::spawn_blocking(move || {
        run_json(
            Command::new(python)
                .arg(script)
                .env("ONLY_SYMMETRIC", "1")
                .env("DPS_HOST", "localhost")
                .env("ID_SCOPE", scope)
                .env("CA_FILE", ca)
                .env("SYM_REG_ID", reg)
                .env("SYM_KEY", SYM_KEY),
            "the Python azure-iot-device client",
        )
    })
    .await
    .unwrap()
}

/// Faults over MQTT as over HTTPS, met by the official Python client: a 429 with
/// retry-after, a 500 and slow answers end in success with one record; a connection dropped
/// after the register PUBLISH or right after CONNECT ends in success or in the SDK's clear
/// error, never in more than one record for the device.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_python_client_under_mqtt_faults() {
    let _port = PORT_8883.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let emu = start_on_8883(dir.path()).await;
    let records = |reg: &str| {
        emu.registration_records()
            .unwrap()
            .into_iter()
            .filter(|r| r.registration_id == reg)
            .count()
    };
    type Arm = fn(&dps_emulator::Faults);
    let recoverable: [(&str, Arm); 3] = [
        ("f-throttled", |f| f.throttle_next(1, 1)),
        ("f-failed", |f| f.fail_next(1)),
        ("f-slow", |f| {
            f.delay_responses(std::time::Duration::from_millis(1500))
        }),
    ];
    for (reg, arm) in recoverable {
        enroll_symmetric(&emu, reg, SYM_KEY);
        arm(emu.faults());
        let v = python_register_once(&emu, reg).await;
        emu.faults().clear();
        assert_eq!(v["symmetric"]["status"], "assigned", "{reg}: {v}");
        assert_eq!(v["symmetric"]["deviceId"], reg, "{reg}: {v}");
        assert_eq!(records(reg), 1, "{reg}");
    }
    let drops: [(&str, Arm); 2] = [
        ("f-dropped", |f| f.drop_next(1)),
        ("f-connect-dropped", |f| f.drop_next_mqtt_connects(1)),
    ];
    for (reg, arm) in drops {
        enroll_symmetric(&emu, reg, SYM_KEY);
        arm(emu.faults());
        let v = python_register_once(&emu, reg).await;
        emu.faults().clear();
        match v["symmetric"]["status"].as_str() {
            Some(s) => {
                assert_eq!(s, "assigned", "{reg}: {v}");
                assert_eq!(records(reg), 1, "{reg}");
            }
            None => {
                let e = v["error"].as_str().unwrap_or_default();
                assert!(!e.is_empty(), "{reg}: neither a result nor an error: {v}");
                assert!(records(reg) <= 1, "{reg}");
            }
        }
    }
    emu.shutdown().await;
}
