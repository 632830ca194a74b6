//! hsmkit's IoT Hub client against the official Node device client (`azure-iot-device` with
//! `azure-iot-device-mqtt`, issue 20), on the same emulated hub in the same run, as ratios:
//! connect latency (hsmkit: `HubClient::connect`, which is TLS + CONNECT + CONNACK and the
//! SUBSCRIBE + SUBACK of its C2D, twin and desired topics; Node: `client.open()`, TLS +
//! CONNECT + CONNACK only, it subscribes later) and telemetry messages/s for one device, each
//! message awaited until its PUBACK (QoS 1), both symmetric key. Rounds alternate between the
//! clients so that drift in the machine's load hits both alike; medians are shown.
//!
//! The Node transport always connects to port 8883, so the emulator's MQTT listener is on
//! 127.0.0.1:8883 here (the bench fails when it is taken); its per-connection packet-rate
//! bound is lifted for the run.
//!
//!   .ci/install-node-deps
//!   cargo build --release -p hsmkit-plugin-symmetric
//!   cargo bench -p provisioning-core --bench hub_telemetry

mod support;

use base64::Engine;
use dps_emulator::{Emulator, EmulatorConfig};
use provisioning_core::dps::{Attestation, DpsClientConfig};
use provisioning_core::hub::{HubClient, HubOptions};
use provisioning_core::plugin::{LoadedPlugin, PluginInstance};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{median, profile_dir};

const ROUNDS: usize = 5;
const MESSAGES: usize = 200;
const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// A symmetric-key device `reg` with `key`, enrolled and provisioned (so the hub knows it);
/// its plugin instance (holding the key) and provisioning record.
async fn provisioned(
    emulator: &dps_emulator::RunningEmulator,
    root: &Path,
    reg: &str,
    key: &[u8],
) -> (
    Arc<PluginInstance>,
    provisioning_core::provisioning::ProvisioningRecord,
) {
    use dps_emulator::model::{AttestationMechanism, IndividualEnrollment};
    emulator
        .enrollments()
        .create_individual(IndividualEnrollment::new(
            reg.into(),
            AttestationMechanism::symmetric_key(Some(B64.encode(key))),
        ))
        .expect("enrollment");
    let so = profile_dir().join("libhsmkit_plugin_symmetric.so");
    assert!(
        so.is_file(),
        "{} missing: run `cargo build --release -p hsmkit-plugin-symmetric` first",
        so.display()
    );
    let state = root.join(reg);
    let plugin = LoadedPlugin::load(&so).expect("symmetric plugin loads");
    let instance = Arc::new(
        PluginInstance::create(&plugin, &[("state_dir", state.display().to_string())])
            .expect("instance"),
    );
    instance
        .symmetric_key()
        .and_then(|s| s.import_key(Some(reg), key))
        .expect("key import");
    let mut config = DpsClientConfig::new(emulator.id_scope());
    config.endpoint = emulator.endpoint();
    config.extra_trust_pem = Some(emulator.ca_cert_pem().as_bytes().to_vec());
    config.trust_public_roots = false;
    let (record, _) = provisioning_core::provisioning::provision(
        &config,
        instance.clone(),
        Attestation::SymmetricKey,
        &state,
        true,
        &|_| {},
    )
    .await
    .expect("provisioned");
    (instance, record)
}

/// One hsmkit round: (connect ms, messages/s).
async fn hsmkit_round(
    emulator: &dps_emulator::RunningEmulator,
    instance: &Arc<PluginInstance>,
    record: &provisioning_core::provisioning::ProvisioningRecord,
) -> (f64, f64) {
    let options = HubOptions {
        endpoint: Some("127.0.0.1:8883".into()),
        extra_trust_pem: Some(emulator.ca_cert_pem().as_bytes().to_vec()),
        trust_public_roots: false,
        ..HubOptions::default()
    };
    let started = Instant::now();
    let hub = HubClient::connect(record, instance.clone(), options)
        .await
        .expect("hsmkit connects");
    let connect_ms = started.elapsed().as_secs_f64() * 1000.0;
    let props = [("bench".to_string(), "hsmkit".to_string())];
    let started = Instant::now();
    for i in 0..MESSAGES {
        hub.send(format!("{{\"i\":{i}}}").into_bytes(), &props)
            .await
            .expect("PUBACK");
    }
    let rate = MESSAGES as f64 / started.elapsed().as_secs_f64();
    hub.close().await;
    (connect_ms, rate)
}

/// One Node round: (connect ms, messages/s), as the script measured them.
fn node_round(
    emulator: &dps_emulator::RunningEmulator,
    record: &provisioning_core::provisioning::ProvisioningRecord,
    key: &[u8],
) -> (f64, f64) {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let modules = here.join("../dps-emulator/node-tests/node_modules");
    assert!(
        modules.join("azure-iot-device-mqtt").is_dir(),
        "{} has no azure-iot-device-mqtt: run .ci/install-node-deps",
        modules.display()
    );
    let out = Command::new("node")
        .arg(here.join("benches/node-hub.js"))
        .env("NODE_PATH", &modules)
        .env("NODE_EXTRA_CA_CERTS", emulator.ca_cert_path())
        .env("HUB_HOST", record.assigned_hub())
        .env("GATEWAY_HOST", "127.0.0.1")
        .env("DEVICE_ID", record.device_id())
        .env("KEY", B64.encode(key))
        .env("MESSAGES", MESSAGES.to_string())
        .output()
        .expect("run node (apt-get install nodejs)");
    assert!(
        out.status.success(),
        "the Node client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("the Node script's JSON");
    (
        v["connectMs"].as_f64().expect("connectMs"),
        v["messagesPerSecond"].as_f64().expect("messagesPerSecond"),
    )
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` runs this too: nothing to measure
    // then.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let root = tempfile::tempdir().expect("temp dir");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let mut config = EmulatorConfig::new(root.path().join("emulator"));
        config.mqtt_listen = Some("127.0.0.1:8883".parse().expect("address"));
        config.mqtt_max_packets_per_second = 1_000_000;
        let emulator = Emulator::start(config).await.unwrap_or_else(|e| {
            panic!("cannot start the emulator with MQTT on 127.0.0.1:8883 (where the Node transport connects): {e}")
        });
        let (instance, hsmkit_record) =
            provisioned(&emulator, root.path(), "bench-hub-hsmkit", &[1u8; 32]).await;
        let node_key = [2u8; 32];
        let (_, node_record) =
            provisioned(&emulator, root.path(), "bench-hub-node", &node_key).await;
        let (mut hc, mut hr, mut nc, mut nr) = (vec![], vec![], vec![], vec![]);
        for round in 0..ROUNDS {
            let (c, r) = hsmkit_round(&emulator, &instance, &hsmkit_record).await;
            hc.push(c);
            hr.push(r);
            let (c, r) = tokio::task::block_in_place(|| node_round(&emulator, &node_record, &node_key));
            nc.push(c);
            nr.push(r);
            eprintln!("round {}: hsmkit {:.1} ms, {:.0} msg/s; node {:.1} ms, {:.0} msg/s", round + 1, hc[round], hr[round], nc[round], nr[round]);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (hc, hr, nc, nr) = (median(hc), median(hr), median(nc), median(nr));
        println!("IoT Hub client, one symmetric-key device, emulated hub, {MESSAGES} QoS 1 messages per round, median of {ROUNDS} rounds");
        println!("  connect latency   hsmkit {hc:8.1} ms   node {nc:8.1} ms   hsmkit/node {:.2}", hc / nc);
        println!("  messages/s        hsmkit {hr:8.0}      node {nr:8.0}      hsmkit/node {:.2}", hr / nr);
        // The emulator keeps a bounded number of recent messages; the last round's are all
        // there, in order.
        let stored: Vec<String> = emulator
            .hub_registry()
            .messages("bench-hub-hsmkit", None)
            .expect("messages")
            .into_iter()
            .map(|m| String::from_utf8_lossy(&m.body).into_owned())
            .collect();
        let last_round: Vec<String> = (0..MESSAGES).map(|i| format!("{{\"i\":{i}}}")).collect();
        assert!(
            stored.ends_with(&last_round),
            "the last round's acknowledged messages are not all stored"
        );
        emulator.shutdown().await;
    });
}
