//! hsmkit's DPS client over MQTT carried by a WebSocket (`--transport mqtt-ws`, issue 15), end
//! to end against the emulator's MQTT over WebSocket listener (`wss://.../$iothub/websocket`,
//! sub-protocol `mqtt`): symmetric key, dice X.509 and pkcs11 X.509 on SoftHSM2 (the TLS
//! signature made in the plugin, as over TLS), TPM refused with the reason, the user's errors,
//! faults, and the record, which is the one the other transports write.

#[path = "support/e2e.rs"]
mod helpers;

use helpers::*;
use provisioning_core::dps::probe::normalized_endpoint;
use provisioning_core::dps::{register, Attestation, DpsClientConfig, DpsError, Transport};
use std::net::SocketAddr;
use std::time::Duration;

/// An emulator with its MQTT over WebSocket listener on a free loopback port.
async fn ws_emulator() -> Env {
    ws_emulator_with(|_| {}).await
}

async fn ws_emulator_with(f: impl FnOnce(&mut dps_emulator::EmulatorConfig)) -> Env {
    emulator_with(|c| {
        c.mqtt_ws_listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
        f(c)
    })
    .await
}

/// [`dps_config`] with MQTT over WebSocket to the emulator's WebSocket listener.
fn ws_config(emu: &dps_emulator::RunningEmulator) -> DpsClientConfig {
    let mut c = dps_config(emu);
    let at = emu.mqtt_ws_addr().expect("the WebSocket listener is on");
    c.endpoint = format!("wss://127.0.0.1:{}", at.port());
    c.transport = Transport::MqttWs;
    c
}

#[tokio::test]
async fn symmetric_individual_over_mqtt_ws() {
    let env = ws_emulator().await;
    let p = provision_symmetric_with_payload(&env, "ws-sym-1", ws_config).await;
    assert_eq!(p.record.result.device_id, "ws-sym-1");
    // The record keeps the target as one spelling (`host:port`, issue 18), whatever the scheme.
    let port = env.emu.mqtt_ws_addr().expect("WebSocket listener").port();
    assert_eq!(p.record.endpoint, format!("127.0.0.1:{port}"));
    assert_eq!(
        p.record.endpoint,
        normalized_endpoint(&p.config.endpoint, Transport::MqttWs)
    );
    single_record(&env.emu, "ws-sym-1");
}

#[tokio::test]
async fn symmetric_group_member_over_mqtt_ws() {
    let env = ws_emulator().await;
    group_members_with_every_api_version(&env, "ws-grp", "ws-member", ws_config).await;
}

#[tokio::test]
async fn dice_x509_over_mqtt_ws_with_the_tls_signature_made_in_the_plugin() {
    let env = ws_emulator().await;
    let state = tempfile::tempdir().unwrap();
    let device = dice_device(state.path(), "ws-dice");
    enroll_leaf(&env, &device, "ws-dice");
    let r = register(&ws_config(&env.emu), device, Attestation::X509, &|_| {})
        .await
        .expect("X.509 over MQTT over WebSocket");
    assert_eq!(r.device_id, "ws-dice");
    assert_eq!(r.attestation, Attestation::X509);
    let record = single_record(&env.emu, "ws-dice");
    assert!(record.x509.is_some(), "{record:?}");
}

#[tokio::test]
async fn pkcs11_on_softhsm_over_mqtt_ws() {
    let token = hsmkit_backend_pkcs11::softhsm::create_token("dps-mqtt-ws")
        .unwrap_or_else(|e| panic!("{e}"));
    let pkcs11 = Pkcs11Token {
        module: &token.module,
        uri: token.uri(),
        pin_file: &token.pin_file,
    };
    let out = pkcs11_init(&pkcs11, "pkcs11-ws-device", "SoftHSM");
    let env = ws_emulator().await;
    pkcs11_device_registers(
        &env,
        &pkcs11,
        &out,
        "pkcs11-ws-device",
        ws_config,
        "pkcs11 X.509 over MQTT over WebSocket",
    )
    .await;
}

#[tokio::test]
async fn tpm_is_refused_over_mqtt_ws_with_the_reason() {
    let env = ws_emulator().await;
    let state = tempfile::tempdir().unwrap();
    let (device, _reg) = tpm_sim_enrolled(&env, state.path());
    let e = register(&ws_config(&env.emu), device, Attestation::Tpm, &|_| {})
        .await
        .expect_err("TPM over MQTT over WebSocket");
    assert_eq!(e.kind(), "config", "{e}");
    let text = e.to_string();
    assert!(
        text.contains("TPM attestation is not available over mqtt-ws"),
        "{text}"
    );
    assert!(text.contains("--transport https"), "{text}");
    assert!(env.emu.registration_records().unwrap().is_empty());
}

#[tokio::test]
async fn user_errors_over_mqtt_ws() {
    let env =
        ws_emulator_with(|c| c.mqtt_listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)))).await;
    let reg = "ws-wrong-key";
    symmetric_enrollment(&env.emu, reg);
    let state = tempfile::tempdir().unwrap();
    let device = symmetric_device(state.path(), reg, b"not the enrolled key at all......");
    let sym = |c: DpsClientConfig| {
        let device = device.clone();
        async move { register(&c, device, Attestation::SymmetricKey, &|_| {}).await }
    };

    // A wrong key: refused as unauthorized at the CONNECT, as over TLS.
    let e = sym(ws_config(&env.emu)).await.expect_err("wrong key");
    assert!(matches!(e, DpsError::Unauthorized { .. }), "{e}");
    assert!(e.to_string().contains(reg), "{e}");

    // The emulator's CA not trusted: a TLS trust error naming --trust-ca.
    let mut untrusted = ws_config(&env.emu);
    untrusted.extra_trust_pem = None;
    untrusted.trust_public_roots = true;
    let e = sym(untrusted).await.expect_err("untrusted server");
    assert!(matches!(e, DpsError::TlsTrust { .. }), "{e}");
    assert!(e.to_string().contains("--trust-ca"), "{e}");

    // Servers without the WebSocket endpoint: the HTTPS listener answers the upgrade with 404,
    // the MQTT-over-TLS listener never answers it; both end as unreachable, naming wss://.
    let mut short = ws_config(&env.emu);
    short.request_timeout = Duration::from_secs(2);
    short.retry.max_connect_failures = 2;
    let mut https = short.clone();
    https.endpoint = format!("wss://{}", env.emu.addr());
    let e = sym(https)
        .await
        .expect_err("no WebSocket on the HTTPS port");
    assert!(matches!(e, DpsError::Unreachable { .. }), "{e}");
    let text = e.to_string();
    assert!(text.contains("wss://127.0.0.1"), "{text}");
    assert!(text.contains("refused with HTTP 404"), "{text}");

    // Nothing listening: unreachable after the connection retries.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let mut nowhere = ws_config(&env.emu);
    nowhere.endpoint = format!("127.0.0.1:{port}");
    let e = sym(nowhere).await.expect_err("nothing listening");
    assert!(matches!(e, DpsError::Unreachable { .. }), "{e}");

    // Another protocol's URL and a path: refused before anything is sent.
    for endpoint in [
        env.emu.endpoint(),
        "mqtts://127.0.0.1:8883".to_string(),
        "wss://127.0.0.1/$iothub/websocket".to_string(),
    ] {
        let mut c = ws_config(&env.emu);
        c.endpoint = endpoint.clone();
        let e = sym(c).await.expect_err("not a wss endpoint");
        assert_eq!(e.kind(), "config", "{endpoint}: {e}");
    }
    assert!(env.emu.registration_records().unwrap().is_empty());
}

// Faults over the WebSocket, through the scenarios shared with HTTPS and MQTT over TLS.

#[tokio::test]
async fn connections_dropped_over_mqtt_ws_are_retried() {
    let env = ws_emulator_with(|c| c.assignment_delay = Duration::from_millis(300)).await;
    env.emu.faults().drop_next_mqtt_connects(1);
    dropped_connections_are_retried(&env, "ws-drop", ws_config).await;
}

#[tokio::test]
async fn throttling_over_mqtt_ws_honours_retry_after() {
    let env = ws_emulator().await;
    throttling_honours_retry_after(&env, "ws-throttled", ws_config).await;
}
