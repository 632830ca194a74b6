//! Interoperability with the official Azure IoT device SDKs' hub clients: the Node
//! `azure-iot-device` client with the `azure-iot-device-mqtt` transport (a SharedAccessKey
//! connection string, and X.509) and the Python `azure-iot-device` `IoTHubDeviceClient` (a
//! SharedAccessKey connection string) connect to the emulated hub their device was assigned
//! to, send telemetry with properties, read the twin (the enrollment's initialTwin), report a
//! property and receive a cloud-to-device message; a wrong key is refused.
//!
//! The devices are provisioned through the emulator's DPS first (HTTPS, the project's own test
//! client). Both SDKs reach a hub through another host with the connection string's
//! `GatewayHostName` (here 127.0.0.1, which the emulator's certificate names; the user name and
//! the SAS still name the hub) and always connect to its port 8883, the service's MQTT port,
//! so the emulator's MQTT listener runs on 127.0.0.1:8883 here and the tests of this binary take
//! turns on it (one lock); a port already taken fails the test with that reason.
//! Needs `.ci/install-node-deps` and `.ci/install-python-deps`; fails with that hint otherwise.

mod common;

use common::sdk::{run_json, start_on_8883};
use common::*;
use dps_emulator::model::{AttestationMechanism, IndividualEnrollment};
use dps_emulator::RunningEmulator;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::Command;

const KEY: &str = "Zm9yIHRoZSBodWIgc2RrIGludGVyb3AgdGVzdCBvbmx5IQ==";

/// The tests of this binary share port 8883.
static PORT_8883: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn initial_twin(who: &str) -> Value {
    json!({"properties": {"desired": {"greeting": format!("hello {who}"), "interval": 30}}})
}

/// Enrolls and provisions a symmetric-key device; queues a cloud-to-device message for it;
/// returns its hub.
async fn symmetric_device(emu: &RunningEmulator, id: &str) -> String {
    let mut e = IndividualEnrollment::new(
        id.into(),
        AttestationMechanism::symmetric_key(Some(KEY.into())),
    );
    e.common.initial_twin = Some(initial_twin(id));
    emu.enrollments().create_individual(e).unwrap();
    let sas = device_sas(emu, id, KEY, in_an_hour());
    let done = register(&client(emu, None), emu, id, body_reg(id), Some(&sas)).await;
    queue_c2d(emu, id);
    done.body["registrationState"]["assignedHub"]
        .as_str()
        .unwrap()
        .to_string()
}

fn queue_c2d(emu: &RunningEmulator, id: &str) {
    emu.hub_registry()
        .send_c2d(
            id,
            None,
            &[("kind".into(), "ping".into())],
            format!("to {id}").as_bytes(),
        )
        .unwrap();
}

/// What each SDK run must have done for device `id`: its telemetry stored with the property
/// it set, its reported patch stored, its C2D message received (and acknowledged).
fn check(emu: &RunningEmulator, id: &str, result: &Value, source: &str, reported: (&str, Value)) {
    assert_eq!(
        result["desired"]["greeting"],
        format!("hello {id}").as_str(),
        "{id}: {result}"
    );
    assert_eq!(result["desired"]["interval"], 30, "{id}: {result}");
    assert_eq!(result["desired"]["$version"], 1, "{id}: {result}");
    assert_eq!(
        result["c2d"]["body"],
        format!("to {id}").as_str(),
        "{id}: {result}"
    );
    assert_eq!(
        result["c2d"]["properties"]["kind"], "ping",
        "{id}: {result}"
    );
    let hubs = emu.hub_registry();
    let msgs = hubs.messages(id, None).unwrap();
    assert_eq!(msgs.len(), 1, "{id}: {msgs:?}");
    let props = &msgs[0].properties;
    assert!(
        props.contains(&("source".to_string(), source.to_string())),
        "{id}: {props:?}"
    );
    // The SDKs send the content type as the `$.ct` system property.
    assert!(
        props
            .iter()
            .any(|(k, v)| k == "$.ct" && v == "application/json"),
        "{id}: {props:?}"
    );
    let body: Value = serde_json::from_slice(&msgs[0].body).unwrap();
    assert!(body["from"].is_string(), "{id}: {body}");
    let device = hubs.device(id, None).unwrap();
    assert_eq!(
        device.reported.get(reported.0),
        Some(&reported.1),
        "{id}: {device:?}"
    );
    // The SDK acknowledged the cloud-to-device message: nothing is pending.
    assert!(hubs.pending_c2d(id, None).unwrap().is_empty(), "{id}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_node_device_client_with_a_connection_string_and_with_x509() {
    let node_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("node-tests");
    let ok = Command::new("node")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(ok, "node is not installed: run .ci/install-node-deps");
    assert!(
        node_dir.join("node_modules/azure-iot-device-mqtt").is_dir(),
        "the Node SDK packages are missing: run .ci/install-node-deps"
    );
    let _port = PORT_8883.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let emu = start_on_8883(dir.path()).await;

    // Both devices go to one hub, so that one HUB_HOST serves the run.
    let sym_hub = symmetric_device(&emu, "node-sym-dev").await;
    let (_root, leaf) = x509_leaf("node-x509-dev");
    let mut e = IndividualEnrollment::new(
        "node-x509-dev".into(),
        AttestationMechanism::x509_client(leaf.cert_pem()),
    );
    e.common.initial_twin = Some(initial_twin("node-x509-dev"));
    e.common.iot_hubs = vec![sym_hub.clone()];
    emu.enrollments().create_individual(e).unwrap();
    let done = register(
        &client(&emu, Some((&[&leaf], &leaf))),
        &emu,
        "node-x509-dev",
        body_reg("node-x509-dev"),
        None,
    )
    .await;
    assert_eq!(
        done.body["registrationState"]["assignedHub"],
        sym_hub.as_str()
    );
    queue_c2d(&emu, "node-x509-dev");
    let cert = dir.path().join("leaf.pem");
    let key = dir.path().join("leaf.key.pem");
    std::fs::write(&cert, leaf.cert_pem()).unwrap();
    std::fs::write(&key, leaf.key_pem().unwrap().as_bytes()).unwrap();

    let ca = emu.ca_cert_path().to_path_buf();
    let script = node_dir.join("official-hub-clients.js");
    let hub = sym_hub.clone();
    let v = tokio::task::spawn_blocking(move || {
        run_json(
            Command::new("node")
                .arg(script)
                .current_dir(node_dir)
                .env("NODE_EXTRA_CA_CERTS", ca)
                .env("HUB_HOST", hub)
                .env("GATEWAY_HOST", "127.0.0.1")
                .env("SYM_DEVICE_ID", "node-sym-dev")
                .env("SYM_KEY", KEY)
                .env("X509_DEVICE_ID", "node-x509-dev")
                .env("X509_CERT_FILE", cert)
                .env("X509_KEY_FILE", key),
            "the Node azure-iot-device client",
        )
    })
    .await
    .unwrap();
    check(
        &emu,
        "node-sym-dev",
        &v["symmetric"],
        "node-symmetric",
        ("node", json!("symmetric")),
    );
    check(
        &emu,
        "node-x509-dev",
        &v["x509"],
        "node-x509",
        ("node", json!("x509")),
    );
    assert_eq!(v["wrongKey"], "rejected", "{v}");
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_python_device_client_with_a_connection_string() {
    let python = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python-tests/.venv/bin/python");
    assert!(
        python.is_file(),
        "{} is missing: run .ci/install-python-deps (installs azure-iot-device into it)",
        python.display()
    );
    let _port = PORT_8883.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let emu = start_on_8883(dir.path()).await;
    let hub = symmetric_device(&emu, "py-hub-dev").await;
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python-tests/official_hub_client.py");
    let ca = emu.ca_cert_path().to_path_buf();
    let v = tokio::task::spawn_blocking(move || {
        run_json(
            Command::new(python)
                .arg(script)
                .env("HUB_HOST", hub)
                .env("GATEWAY_HOST", "127.0.0.1")
                .env("DEVICE_ID", "py-hub-dev")
                .env("DEVICE_KEY", KEY)
                .env("CA_FILE", ca),
            "the Python azure-iot-device IoTHubDeviceClient",
        )
    })
    .await
    .unwrap();
    check(&emu, "py-hub-dev", &v, "python", ("python", json!(true)));
    assert_eq!(v["wrongKey"], "rejected", "{v}");
    emu.shutdown().await;
}
