//! hsmkit's IoT Hub client (issue 20), end to end: devices provisioned by the emulator's DPS
//! connect to their assigned (emulated) hub over MQTT 3.1.1/TLS with the identity in their
//! plugin, TLS verifying the hub's name while connecting to 127.0.0.1. Telemetry with
//! properties, the twin (the enrollment's initialTwin), reported patches, C2D messages and
//! desired changes; SAS renewal by reconnecting; the refusals (forged key, disabled device,
//! untrusted server, nothing listening, no record); a hub restart that loses no acknowledged
//! telemetry; tpm2 on swtpm and pkcs11 on SoftHSM2, whose keys sign in the (simulated)
//! hardware. The emulator's own store is the witness.

#[path = "support/e2e.rs"]
mod helpers;

use dps_emulator::hub::DeviceStatus;
use dps_emulator::{Emulator, EmulatorConfig, RunningEmulator};
use helpers::*;
use provisioning_core::dps::Attestation;
use provisioning_core::hub::{Backoff, HubClient, HubError, HubEvent, HubOptions};
use provisioning_core::plugin::PluginInstance;
use provisioning_core::provisioning::{self, ProvisioningRecord};
use serde_json::json;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc::UnboundedReceiver;

/// An emulator with the MQTT listener (DPS and the hubs) on `mqtt` (port 0: a free one).
async fn hub_emulator_at(dir: &std::path::Path, mqtt: u16) -> RunningEmulator {
    let mut cfg = EmulatorConfig::new(dir.join("emulator"));
    cfg.hubs = vec![
        "hub-a.azure-devices.net".into(),
        "hub-b.azure-devices.net".into(),
    ];
    cfg.mqtt_listen = Some(SocketAddr::from(([127, 0, 0, 1], mqtt)));
    Emulator::start(cfg).await.expect("emulator starts")
}

async fn hub_emulator() -> Env {
    let dir = tempfile::tempdir().expect("temp dir");
    let emu = hub_emulator_at(dir.path(), 0).await;
    Env { emu, dir }
}

/// Options for the emulated hub: its MQTT address, its CA only, short timeouts and back-off.
fn hub_options(emu: &RunningEmulator) -> HubOptions {
    HubOptions {
        endpoint: Some(format!(
            "127.0.0.1:{}",
            emu.mqtt_addr().expect("MQTT listener").port()
        )),
        extra_trust_pem: Some(emu.ca_cert_pem().as_bytes().to_vec()),
        trust_public_roots: false,
        connect_timeout: Duration::from_secs(10),
        operation_timeout: Duration::from_secs(10),
        reconnect: Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(500),
            max_attempts: 40,
        },
        ..HubOptions::default()
    }
}

const INITIAL_TWIN: &str =
    r#"{"tags": {"site": "lab"}, "properties": {"desired": {"interval": 5}}}"#;

/// Provisions `device` over HTTPS into a state folder; returns the saved record.
async fn provision(
    env: &Env,
    device: Arc<PluginInstance>,
    attestation: Attestation,
    state: &std::path::Path,
) -> ProvisioningRecord {
    let (record, _) = provisioning::provision(
        &dps_config(&env.emu),
        device,
        attestation,
        state,
        false,
        &|_| {},
    )
    .await
    .expect("provisioned");
    assert!(env.emu.hubs().contains(&record.result.assigned_hub));
    record
}

/// A symmetric-key device enrolled as `reg` with [`INITIAL_TWIN`], provisioned: its state,
/// instance, key and record.
async fn symmetric_provisioned(
    env: &Env,
    reg: &str,
) -> (
    tempfile::TempDir,
    Arc<PluginInstance>,
    Vec<u8>,
    ProvisioningRecord,
) {
    let mut enrollment = json!({"registrationId": reg, "attestation": {"type": "symmetricKey"}});
    enrollment["initialTwin"] = serde_json::from_str(INITIAL_TWIN).unwrap();
    let e = individual(&env.emu, enrollment);
    let key = B64
        .decode(e.attestation.symmetric_key.unwrap().primary_key.unwrap())
        .unwrap();
    let state = tempfile::tempdir().unwrap();
    let device = symmetric_device(state.path(), reg, &key);
    let record = provision(env, device.clone(), Attestation::SymmetricKey, state.path()).await;
    (state, device, key, record)
}

use base64::Engine;

/// The next C2D message or desired change, within 10 s.
async fn next_event(events: &mut UnboundedReceiver<HubEvent>) -> HubEvent {
    tokio::time::timeout(Duration::from_secs(10), events.recv())
        .await
        .expect("an event within 10 s")
        .expect("the client is running")
}

/// Telemetry bodies the emulator stored for `device_id`, in order.
fn stored_bodies(emu: &RunningEmulator, device_id: &str) -> Vec<String> {
    emu.hub_registry()
        .messages(device_id, None)
        .expect("the device's messages")
        .into_iter()
        .map(|m| String::from_utf8_lossy(&m.body).into_owned())
        .collect()
}

#[tokio::test]
async fn symmetric_device_sends_telemetry_reads_and_reports_its_twin_and_receives_c2d() {
    let env = hub_emulator().await;
    let (_state, device, _, record) = symmetric_provisioned(&env, "hub-sym-1").await;
    let hub = HubClient::connect(&record, device, hub_options(&env.emu))
        .await
        .expect("connected");
    assert_eq!(hub.hub(), record.assigned_hub());
    assert_eq!(hub.connections(), 1);
    assert_eq!(hub.device_id(), "hub-sym-1");

    // Telemetry: stored once acknowledged, with its property bag as sent.
    let props = vec![
        ("temp unit".to_string(), "°C".to_string()),
        ("$.ct".to_string(), "application/json".to_string()),
    ];
    hub.send(br#"{"t":21.5}"#.to_vec(), &props)
        .await
        .expect("PUBACK");
    let stored = env.emu.hub_registry().messages("hub-sym-1", None).unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].body, br#"{"t":21.5}"#);
    assert_eq!(stored[0].properties, props);
    assert_eq!(stored[0].hub, record.assigned_hub());

    // The twin: desired = the enrollment's initialTwin desired properties.
    let twin = hub.twin().await.expect("twin");
    assert_eq!(twin.desired.get("interval"), Some(&json!(5)));
    let before = twin.reported_version().expect("reported $version");
    let v = hub
        .report(&json!({"fw": "1.0", "battery": 80}))
        .await
        .expect("patch stored");
    assert!(v > before, "{v} after {before}");
    let twin = hub.twin().await.unwrap();
    assert_eq!(twin.reported.get("fw"), Some(&json!("1.0")));
    assert_eq!(twin.reported_version(), Some(v));
    let e = hub.report(&json!([1])).await.unwrap_err();
    assert!(matches!(e, HubError::Config { .. }), "{e}");

    // C2D and desired changes arrive as events; a C2D message sent before anyone listened
    // is kept by the hub (not acknowledged) and handed over on listening.
    let registry = env.emu.hub_registry();
    registry
        .send_c2d(
            "hub-sym-1",
            None,
            &[("cmd".to_string(), "reboot".to_string())],
            b"now",
        )
        .expect("C2D queued");
    let mut events = hub.events().unwrap();
    match next_event(&mut events).await {
        HubEvent::Message(m) => {
            assert_eq!(m.body, b"now");
            assert!(
                m.properties.contains(&("cmd".into(), "reboot".into())),
                "{:?}",
                m.properties
            );
        }
        other => panic!("expected the C2D message, got {other:?}"),
    }
    let desired_version = registry
        .update_desired("hub-sym-1", None, json!({"interval": 10}))
        .unwrap();
    match next_event(&mut events).await {
        HubEvent::DesiredPatch(d) => {
            assert_eq!(d.version, desired_version);
            assert_eq!(d.patch["interval"], 10);
        }
        other => panic!("expected the desired change, got {other:?}"),
    }
    // Acknowledged, so no longer pending in the hub.
    let pending = || registry.pending_c2d("hub-sym-1", None).unwrap();
    for _ in 0..50 {
        if pending().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(pending().is_empty(), "the C2D message was not acknowledged");
    assert_eq!(hub.connections(), 1);
    hub.close().await;
}

#[tokio::test]
async fn x509_and_tpm_devices_connect_with_the_identity_in_their_plugin() {
    let env = hub_emulator().await;

    // dice: mutual TLS whose handshake signature the plugin makes.
    let dice_state = tempfile::tempdir().unwrap();
    let dice = dice_device(dice_state.path(), "hub-dice-1");
    enroll_leaf(&env, &dice, "hub-dice-1");
    let record = provision(&env, dice.clone(), Attestation::X509, dice_state.path()).await;
    let hub = HubClient::connect(&record, dice, hub_options(&env.emu))
        .await
        .expect("X.509 device connected");
    hub.send(b"from dice".to_vec(), &[]).await.expect("PUBACK");
    let twin = hub.twin().await.expect("twin");
    assert!(twin.desired_version().is_some());
    hub.close().await;
    assert_eq!(stored_bodies(&env.emu, "hub-dice-1"), ["from dice"]);

    // tpm-sim: SAS signed with the identity key DPS's challenge delivered into the TPM.
    let tpm_state = tempfile::tempdir().unwrap();
    let (tpm, reg) = tpm_sim_enrolled(&env, tpm_state.path());
    let record = provision(&env, tpm.clone(), Attestation::Tpm, tpm_state.path()).await;
    let hub = HubClient::connect(&record, tpm, hub_options(&env.emu))
        .await
        .expect("TPM device connected");
    hub.send(b"from tpm".to_vec(), &[("k".into(), "v".into())])
        .await
        .expect("PUBACK");
    hub.report(&json!({"tpm": true})).await.expect("patch");
    hub.close().await;
    assert_eq!(stored_bodies(&env.emu, &reg), ["from tpm"]);
}

#[tokio::test]
async fn the_sas_token_is_renewed_by_reconnecting_before_it_expires() {
    let env = hub_emulator().await;
    let (_state, device, _, record) = symmetric_provisioned(&env, "hub-renew-1").await;
    let options = HubOptions {
        sas_lifetime: Duration::from_secs(2),
        ..hub_options(&env.emu)
    };
    let hub = HubClient::connect(&record, device, options).await.unwrap();
    let mut events = hub.events().unwrap();
    hub.send(b"1".to_vec(), &[]).await.unwrap();
    // Renewed after 1.6 s and again after 3.2 s: three connections by 4.5 s.
    tokio::time::sleep(Duration::from_millis(4500)).await;
    assert!(hub.connections() >= 3, "{} connections", hub.connections());
    // A renewal is not a failure: no disconnection or reconnection to report.
    assert!(events.try_recv().is_err(), "{:?}", events.try_recv());
    hub.send(b"2".to_vec(), &[]).await.unwrap();
    hub.twin().await.unwrap();
    hub.close().await;
    assert_eq!(stored_bodies(&env.emu, "hub-renew-1"), ["1", "2"]);
}

#[tokio::test]
async fn refusals_say_what_is_wrong() {
    let env = hub_emulator().await;
    let (state, device, _, record) = symmetric_provisioned(&env, "hub-refused-1").await;

    // No record: provision first.
    let empty = tempfile::tempdir().unwrap();
    let e = HubClient::from_state_dir(empty.path(), device.clone(), hub_options(&env.emu))
        .await
        .unwrap_err();
    assert!(matches!(e, HubError::NotProvisioned { .. }), "{e}");
    assert!(e.to_string().contains("hsmkit provision"), "{e}");

    // Nothing listening at the endpoint.
    let options = HubOptions {
        endpoint: Some("127.0.0.1:1".into()),
        ..hub_options(&env.emu)
    };
    let e = HubClient::connect(&record, device.clone(), options)
        .await
        .unwrap_err();
    assert!(matches!(e, HubError::Unreachable { .. }), "{e}");

    // A server not trusted for the hub's name: the name that was verified is in the message.
    let options = HubOptions {
        extra_trust_pem: None,
        trust_public_roots: true,
        ..hub_options(&env.emu)
    };
    let e = HubClient::connect(&record, device.clone(), options)
        .await
        .unwrap_err();
    assert!(matches!(e, HubError::TlsTrust { .. }), "{e}");
    assert!(e.to_string().contains(record.assigned_hub()), "{e}");

    // The wrong hub: another of the emulator's hubs, which has no such device.
    let mut elsewhere = record.clone();
    elsewhere.result.assigned_hub = env
        .emu
        .hubs()
        .iter()
        .find(|h| *h != record.assigned_hub())
        .expect("a second hub")
        .clone();
    let e = HubClient::connect(&elsewhere, device.clone(), hub_options(&env.emu))
        .await
        .unwrap_err();
    assert!(matches!(e, HubError::NotAuthorized { .. }), "{e}");
    assert!(e.to_string().contains(elsewhere.assigned_hub()), "{e}");
    assert!(e.to_string().contains("unknown to this hub"), "{e}");

    // A forged token: the device's key replaced by another one.
    let forger = symmetric_device(state.path(), "hub-refused-1", &[7u8; 32]);
    let e = HubClient::connect(&record, forger, hub_options(&env.emu))
        .await
        .unwrap_err();
    assert!(matches!(e, HubError::NotAuthorized { .. }), "{e}");
    assert!(e.to_string().contains("forged"), "{e}");

    // A device disabled in the hub after provisioning.
    let (_s2, device2, _, record2) = symmetric_provisioned(&env, "hub-refused-2").await;
    env.emu
        .hub_registry()
        .set_status("hub-refused-2", None, DeviceStatus::Disabled)
        .unwrap();
    let e = HubClient::connect(&record2, device2, hub_options(&env.emu))
        .await
        .unwrap_err();
    assert!(matches!(e, HubError::NotAuthorized { .. }), "{e}");
    assert!(e.to_string().contains("disabled"), "{e}");
    drop(device);

    // An X.509 device presenting another chain than the one it was provisioned with.
    let dice_state = tempfile::tempdir().unwrap();
    let dice = dice_device(dice_state.path(), "hub-refused-x509");
    enroll_leaf(&env, &dice, "hub-refused-x509");
    let record = provision(&env, dice, Attestation::X509, dice_state.path()).await;
    let other_state = tempfile::tempdir().unwrap();
    let other = dice_device(other_state.path(), "hub-refused-x509");
    let e = HubClient::connect(&record, other, hub_options(&env.emu))
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            HubError::NotAuthorized { .. } | HubError::ClientCertificateRefused { .. }
        ),
        "{e}"
    );
}

#[tokio::test]
async fn a_hub_restart_loses_no_acknowledged_telemetry() {
    let dir = tempfile::tempdir().unwrap();
    let emu = hub_emulator_at(dir.path(), 0).await;
    let port = emu.mqtt_addr().unwrap().port();
    let env = Env { emu, dir };
    let (_state, device, _, record) = symmetric_provisioned(&env, "hub-restart-1").await;
    let options = hub_options(&env.emu);
    let hub = Arc::new(HubClient::connect(&record, device, options).await.unwrap());
    let mut events = hub.events().unwrap();
    hub.send(b"before".to_vec(), &[]).await.expect("PUBACK");

    // The hub goes away; a message sent meanwhile waits for the new connection.
    let Env { emu, dir } = env;
    emu.shutdown().await;
    match next_event(&mut events).await {
        HubEvent::Disconnected { reason } => assert!(!reason.is_empty()),
        other => panic!("expected a disconnection, got {other:?}"),
    }
    let sender = hub.clone();
    let during = tokio::spawn(async move { sender.send(b"during".to_vec(), &[]).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let emu = hub_emulator_at(dir.path(), port).await;
    match next_event(&mut events).await {
        HubEvent::Reconnected => {}
        other => panic!("expected the reconnection, got {other:?}"),
    }
    during.await.unwrap().expect("sent after reconnecting");
    hub.send(b"after".to_vec(), &[]).await.expect("PUBACK");
    assert_eq!(
        stored_bodies(&emu, "hub-restart-1"),
        ["before", "during", "after"]
    );
    assert!(hub.connections() >= 2);
}

/// Provisions `device` and sends one message and reads the twin on its hub: the credential in
/// real hardware (or its software stand-in) through the whole chain.
async fn provision_and_use_the_hub(
    env: &Env,
    device: Arc<PluginInstance>,
    attestation: Attestation,
    body: &str,
) {
    let state = tempfile::tempdir().unwrap();
    let record = provision(env, device.clone(), attestation, state.path()).await;
    let hub = HubClient::connect(&record, device, hub_options(&env.emu))
        .await
        .unwrap_or_else(|e| panic!("{attestation} device on its hub: {e}"));
    hub.send(
        body.as_bytes().to_vec(),
        &[("via".into(), "hardware".into())],
    )
    .await
    .expect("PUBACK");
    hub.twin().await.expect("twin");
    hub.close().await;
    assert_eq!(stored_bodies(&env.emu, record.device_id()), [body]);
}

#[tokio::test]
async fn tpm2_on_swtpm_signs_the_hub_token_in_the_tpm() {
    let swtpm = hsm_tpm_common::swtpm::Swtpm::start().unwrap_or_else(|e| panic!("{e}"));
    let env = hub_emulator().await;
    let state = tempfile::tempdir().unwrap();
    let (device, _) = tpm2_enrolled(&env, state.path(), &swtpm);
    provision_and_use_the_hub(&env, device, Attestation::Tpm, "from swtpm").await;
}

#[tokio::test]
async fn pkcs11_on_softhsm_signs_the_hub_tls_handshake_in_the_token() {
    let token =
        hsmkit_backend_pkcs11::softhsm::create_token("hub-e2e").unwrap_or_else(|e| panic!("{e}"));
    let pkcs11 = Pkcs11Token {
        module: &token.module,
        uri: token.uri(),
        pin_file: &token.pin_file,
    };
    let out = pkcs11_init(&pkcs11, "hub-pkcs11-1", "SoftHSM");
    let env = hub_emulator().await;
    x509_enrollment(&env.emu, &out.registration_id, &out.certificate_pem);
    let state = tempfile::tempdir().unwrap();
    let device = instance(
        "pkcs11",
        &[
            ("state_dir", state.path().display().to_string()),
            ("module", token.module.display().to_string()),
            ("token_uri", token.uri()),
            ("pin_file", token.pin_file.display().to_string()),
            ("key_uri", out.key_uri.clone()),
            ("cert_uri", out.cert_uri.clone()),
        ],
    );
    provision_and_use_the_hub(&env, device, Attestation::X509, "from SoftHSM").await;
}

/// A TCP relay to `upstream` that, once armed, lets the client's next bytes through (the
/// PUBLISH, in its TLS record) and then cuts the connection without passing on the answer:
/// a message the hub stored but whose PUBACK never arrived. [`CuttingRelay::stall`] instead
/// makes the open connections silent black holes (a half-open connection), leaving later ones
/// alone.
struct CuttingRelay {
    addr: SocketAddr,
    armed: Arc<std::sync::atomic::AtomicBool>,
    /// Connections numbered below this pass nothing any more.
    stalled_below: Arc<std::sync::atomic::AtomicU64>,
}

impl CuttingRelay {
    async fn start(upstream: SocketAddr) -> Self {
        use std::sync::atomic::{AtomicBool, Ordering};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        use std::sync::atomic::AtomicU64;
        let armed = Arc::new(AtomicBool::new(false));
        let arm = armed.clone();
        let stalled_below = Arc::new(AtomicU64::new(0));
        let stalled = stalled_below.clone();
        let numbers = Arc::new(AtomicU64::new(0));
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let number = numbers.fetch_add(1, Ordering::SeqCst);
                let (stall_up, stall_down) = (stalled.clone(), stalled.clone());
                let Ok(server) = tokio::net::TcpStream::connect(upstream).await else {
                    continue;
                };
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                let cut = Arc::new(AtomicBool::new(false));
                let (armed, cut_up, cut_down) = (arm.clone(), cut.clone(), cut.clone());
                let up = tokio::spawn(async move {
                    let mut buf = vec![0u8; 16 * 1024];
                    while let Ok(n) = cr.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        if number < stall_up.load(Ordering::SeqCst) {
                            continue;
                        }
                        if sw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                        if armed.swap(false, Ordering::SeqCst) {
                            cut_up.store(true, Ordering::SeqCst);
                            // Time for the hub to store it; its answer goes nowhere.
                            tokio::time::sleep(Duration::from_millis(500)).await;
                            break;
                        }
                    }
                });
                let down = tokio::spawn(async move {
                    let mut buf = vec![0u8; 16 * 1024];
                    while let Ok(n) = sr.read(&mut buf).await {
                        if n == 0 {
                            if number < stall_down.load(Ordering::SeqCst) {
                                // Half-open: the hub's close does not reach the client
                                // either (it gives up on the silence itself).
                                std::future::pending::<()>().await;
                            }
                            break;
                        }
                        if cut_down.load(Ordering::SeqCst)
                            || number < stall_down.load(Ordering::SeqCst)
                        {
                            continue;
                        }
                        if cw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
                // The connection ends when the client's side does (or is cut).
                tokio::spawn(async move {
                    let _ = up.await;
                    down.abort();
                });
            }
        });
        CuttingRelay {
            addr,
            armed,
            stalled_below,
        }
    }

    /// From now on the connections open so far pass nothing, in either direction, and stay
    /// open.
    fn stall(&self, connections_so_far: u64) {
        self.stalled_below
            .store(connections_so_far, std::sync::atomic::Ordering::SeqCst);
    }
}

#[tokio::test]
async fn telemetry_without_its_puback_is_sent_again_after_reconnecting() {
    let env = hub_emulator().await;
    let (_state, device, _, record) = symmetric_provisioned(&env, "hub-resend-1").await;
    let relay = CuttingRelay::start(env.emu.mqtt_addr().unwrap()).await;
    let options = HubOptions {
        endpoint: Some(relay.addr.to_string()),
        ..hub_options(&env.emu)
    };
    let hub = HubClient::connect(&record, device, options).await.unwrap();
    hub.send(b"first".to_vec(), &[]).await.expect("PUBACK");
    relay.armed.store(true, std::sync::atomic::Ordering::SeqCst);
    // Its PUBACK is lost with the connection: send returns only after the re-send on the next
    // connection was acknowledged.
    hub.send(b"second".to_vec(), &[])
        .await
        .expect("PUBACK after reconnecting");
    assert_eq!(hub.connections(), 2);
    let stored = stored_bodies(&env.emu, "hub-resend-1");
    // At least once: the hub stored it before the cut and again when it came back (DUP).
    assert_eq!(stored, ["first", "second", "second"], "{stored:?}");
    hub.close().await;
}

#[tokio::test]
async fn a_silent_connection_is_found_by_the_keep_alive_and_replaced() {
    let env = hub_emulator().await;
    let (_state, device, _, record) = symmetric_provisioned(&env, "hub-stall-1").await;
    let relay = CuttingRelay::start(env.emu.mqtt_addr().unwrap()).await;
    let options = HubOptions {
        endpoint: Some(relay.addr.to_string()),
        keep_alive: Duration::from_secs(2),
        ..hub_options(&env.emu)
    };
    let hub = HubClient::connect(&record, device, options).await.unwrap();
    let mut events = hub.events().unwrap();
    hub.send(b"before".to_vec(), &[]).await.expect("PUBACK");
    // Half-open: nothing gets through and nothing closes. The unanswered ping (every 1.5 s)
    // gives it away; the message waits for the next connection.
    relay.stall(1);
    let started = std::time::Instant::now();
    hub.send(b"during".to_vec(), &[])
        .await
        .expect("PUBACK after reconnecting");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    match next_event(&mut events).await {
        HubEvent::Disconnected { reason } => assert!(reason.contains("keep-alive"), "{reason}"),
        other => panic!("expected the disconnection, got {other:?}"),
    }
    assert_eq!(hub.connections(), 2);
    assert_eq!(stored_bodies(&env.emu, "hub-stall-1"), ["before", "during"]);
    hub.close().await;
}

#[tokio::test]
async fn over_a_websocket_the_same_hub_session_works() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = EmulatorConfig::new(dir.path().join("emulator"));
    cfg.hubs = vec!["hub-a.azure-devices.net".into()];
    cfg.mqtt_listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    cfg.mqtt_ws_listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    let emu = Emulator::start(cfg).await.expect("emulator starts");
    let ws = emu.mqtt_ws_addr().expect("WebSocket listener");
    let env = Env { emu, dir };
    let ws_options = || HubOptions {
        endpoint: Some(format!("wss://127.0.0.1:{}", ws.port())),
        websocket: true,
        ..hub_options(&env.emu)
    };

    // Symmetric key (SAS in CONNECT) and dice X.509 (the plugin signs the TLS handshake under
    // the WebSocket).
    let (_state, device, _, record) = symmetric_provisioned(&env, "hub-ws-sym").await;
    let hub = HubClient::connect(&record, device, ws_options())
        .await
        .expect("connected over a WebSocket");
    hub.send(b"over ws".to_vec(), &[("k".into(), "v".into())])
        .await
        .expect("PUBACK");
    assert_eq!(
        hub.twin().await.unwrap().desired.get("interval"),
        Some(&json!(5))
    );
    hub.close().await;
    assert_eq!(stored_bodies(&env.emu, "hub-ws-sym"), ["over ws"]);

    let dice_state = tempfile::tempdir().unwrap();
    let dice = dice_device(dice_state.path(), "hub-ws-dice");
    enroll_leaf(&env, &dice, "hub-ws-dice");
    let record = provision(&env, dice.clone(), Attestation::X509, dice_state.path()).await;
    let hub = HubClient::connect(&record, dice, ws_options())
        .await
        .expect("X.509 over a WebSocket");
    hub.send(b"dice over ws".to_vec(), &[])
        .await
        .expect("PUBACK");
    hub.close().await;
    assert_eq!(stored_bodies(&env.emu, "hub-ws-dice"), ["dice over ws"]);

    // The MQTT listener is not a WebSocket endpoint: a clear refusal, not a hang.
    let options = HubOptions {
        endpoint: Some(format!(
            "wss://127.0.0.1:{}",
            env.emu.mqtt_addr().unwrap().port()
        )),
        websocket: true,
        connect_timeout: Duration::from_secs(3),
        ..hub_options(&env.emu)
    };
    let (_s, device, _, record) = symmetric_provisioned(&env, "hub-ws-wrong-port").await;
    let e = HubClient::connect(&record, device, options)
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("WebSocket") || matches!(e, HubError::Timeout { .. }),
        "{e}"
    );
}
