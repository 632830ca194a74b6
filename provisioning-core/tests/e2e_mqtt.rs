//! hsmkit's DPS client over MQTT (issue 15), end to end against the emulator's MQTT listener
//! over TLS: every software plugin MQTT allows (symmetric individual and group, dice X.509
//! signed in the plugin), tpm-sim refused with the reason, pkcs11 on SoftHSM2, the user's
//! errors, the faults (connection dropped after CONNECT, after PUBLISH before the answer, 429
//! with retry-after, 500, slow answers), and the provisioning record, which is the one HTTPS
//! writes.

#[path = "support/e2e.rs"]
mod helpers;

use helpers::*;
use provisioning_core::dps::{register, Attestation, DpsClientConfig, DpsError, Transport};
use provisioning_core::provisioning;
use std::net::SocketAddr;
use std::time::Duration;

/// An emulator with its MQTT listener on a free loopback port.
async fn mqtt_emulator() -> Env {
    mqtt_emulator_with(|_| {}).await
}

async fn mqtt_emulator_with(f: impl FnOnce(&mut dps_emulator::EmulatorConfig)) -> Env {
    emulator_with(|c| {
        c.mqtt_listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
        f(c)
    })
    .await
}

/// [`dps_config`] with MQTT to the emulator's MQTT listener.
fn mqtt_config(emu: &dps_emulator::RunningEmulator) -> DpsClientConfig {
    let mut c = dps_config(emu);
    let at = emu.mqtt_addr().expect("the MQTT listener is on");
    c.endpoint = format!("127.0.0.1:{}", at.port());
    c.transport = Transport::Mqtt;
    c
}

#[tokio::test]
async fn symmetric_individual_over_mqtt_writes_the_record_https_writes() {
    let env = mqtt_emulator().await;
    let reg = "mqtt-sym-1";
    let p = provision_symmetric_with_payload(&env, reg, mqtt_config).await;
    let over_mqtt = p.record;
    assert_eq!(over_mqtt.endpoint, p.config.endpoint);
    assert_eq!(
        provisioning::load(p.state.path()).unwrap(),
        Some(over_mqtt.clone())
    );

    // The same device again over HTTPS (forced): the same record but for the endpoint, the
    // operation and the times, with the same fields.
    let https = dps_config(&env.emu);
    let mut https_config = https.clone();
    https_config.payload = p.config.payload.clone();
    let (over_https, _) = provisioning::provision(
        &https_config,
        p.device,
        Attestation::SymmetricKey,
        p.state.path(),
        true,
        &|_| {},
    )
    .await
    .expect("provisioned over HTTPS");
    single_record(&env.emu, reg);
    let fields = |r: &provisioning::ProvisioningRecord| {
        let v = serde_json::to_value(r).unwrap();
        let mut keys: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        keys
    };
    assert_eq!(fields(&over_mqtt), fields(&over_https));
    let same = |r: &provisioning::ProvisioningRecord| {
        (
            r.version,
            r.id_scope.clone(),
            r.plugin.clone(),
            r.result.registration_id.clone(),
            r.result.assigned_hub.clone(),
            r.result.device_id.clone(),
            r.result.status.clone(),
            r.result.attestation,
            r.result.payload.clone(),
            r.result.created_date_time_utc.clone(),
        )
    };
    assert_eq!(same(&over_mqtt), same(&over_https));
}

#[tokio::test]
async fn symmetric_group_member_over_mqtt_with_every_api_version() {
    let env = mqtt_emulator().await;
    group_members_with_every_api_version(&env, "mqtt-grp", "mqtt-member", mqtt_config).await;
}

#[tokio::test]
async fn dice_x509_over_mqtt_with_the_tls_signature_made_in_the_plugin() {
    let env = mqtt_emulator().await;
    let state = tempfile::tempdir().unwrap();
    let device = dice_device(state.path(), "mqtt-dice");
    enroll_leaf(&env, &device, "mqtt-dice");
    let r = register(&mqtt_config(&env.emu), device, Attestation::X509, &|_| {})
        .await
        .expect("X.509 over MQTT");
    assert_eq!(r.device_id, "mqtt-dice");
    assert_eq!(r.attestation, Attestation::X509);
    single_record(&env.emu, "mqtt-dice");
}

#[tokio::test]
async fn an_unenrolled_x509_device_is_refused_with_the_https_error() {
    let env = mqtt_emulator().await;
    let state = tempfile::tempdir().unwrap();
    let device = dice_device(state.path(), "mqtt-dice-unknown");
    let e = register(&mqtt_config(&env.emu), device, Attestation::X509, &|_| {})
        .await
        .expect_err("no enrollment");
    assert!(
        matches!(
            e,
            DpsError::Unauthorized { .. } | DpsError::ClientCertificateRefused { .. }
        ),
        "{e}"
    );
    assert!(env.emu.registration_records().unwrap().is_empty());
}

#[tokio::test]
async fn tpm_is_refused_over_mqtt_with_the_reason() {
    let env = mqtt_emulator().await;
    let state = tempfile::tempdir().unwrap();
    let (device, reg) = tpm_sim_enrolled(&env, state.path());
    let e = register(
        &mqtt_config(&env.emu),
        device.clone(),
        Attestation::Tpm,
        &|_| {},
    )
    .await
    .expect_err("TPM over MQTT");
    assert_eq!(e.kind(), "config", "{e}");
    let text = e.to_string();
    assert!(
        text.contains("TPM attestation is not available over mqtt"),
        "{text}"
    );
    assert!(text.contains("--transport https"), "{text}");
    assert!(env.emu.registration_records().unwrap().is_empty());
    // The same device over HTTPS is fine: the refusal is about the transport only.
    register(&dps_config(&env.emu), device, Attestation::Tpm, &|_| {})
        .await
        .expect("TPM over HTTPS");
    single_record(&env.emu, &reg);
}

#[tokio::test]
async fn user_errors_over_mqtt_are_the_https_ones() {
    let env = mqtt_emulator().await;
    let reg = "mqtt-wrong-key";
    symmetric_enrollment(&env.emu, reg);
    let state = tempfile::tempdir().unwrap();
    let device = symmetric_device(state.path(), reg, b"not the enrolled key at all......");

    // A wrong key: refused as unauthorized, naming the registration and what to check.
    let e = register(
        &mqtt_config(&env.emu),
        device.clone(),
        Attestation::SymmetricKey,
        &|_| {},
    )
    .await
    .expect_err("wrong key");
    assert!(matches!(e, DpsError::Unauthorized { .. }), "{e}");
    assert!(e.to_string().contains(reg), "{e}");

    // The emulator's CA not trusted: a TLS trust error naming --trust-ca.
    let mut untrusted = mqtt_config(&env.emu);
    untrusted.extra_trust_pem = None;
    untrusted.trust_public_roots = true;
    let e = register(
        &untrusted,
        device.clone(),
        Attestation::SymmetricKey,
        &|_| {},
    )
    .await
    .expect_err("untrusted server");
    assert!(matches!(e, DpsError::TlsTrust { .. }), "{e}");
    assert!(e.to_string().contains("--trust-ca"), "{e}");

    // Nothing listening: unreachable after the connection retries.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let mut nowhere = mqtt_config(&env.emu);
    nowhere.endpoint = format!("127.0.0.1:{port}");
    let e = register(&nowhere, device.clone(), Attestation::SymmetricKey, &|_| {})
        .await
        .expect_err("nothing listening");
    assert!(matches!(e, DpsError::Unreachable { .. }), "{e}");
    assert!(e.to_string().contains("mqtts://127.0.0.1"), "{e}");

    // An HTTPS URL with MQTT: refused before anything is sent.
    let mut url = mqtt_config(&env.emu);
    url.endpoint = env.emu.endpoint();
    let e = register(&url, device, Attestation::SymmetricKey, &|_| {})
        .await
        .expect_err("https URL with mqtt");
    assert_eq!(e.kind(), "config", "{e}");
    assert!(env.emu.registration_records().unwrap().is_empty());
}

#[tokio::test]
async fn pkcs11_on_softhsm_over_mqtt() {
    let token =
        hsmkit_backend_pkcs11::softhsm::create_token("dps-mqtt").unwrap_or_else(|e| panic!("{e}"));
    let pkcs11 = Pkcs11Token {
        module: &token.module,
        uri: token.uri(),
        pin_file: &token.pin_file,
    };
    let out = pkcs11_init(&pkcs11, "pkcs11-mqtt-device", "SoftHSM");
    let env = mqtt_emulator().await;
    pkcs11_device_registers(
        &env,
        &pkcs11,
        &out,
        "pkcs11-mqtt-device",
        mqtt_config,
        "pkcs11 X.509 over MQTT",
    )
    .await;
}

// Faults: every run ends in success or a clear timeout, with exactly one registration record.
// The scenarios shared with the HTTPS fault tests (`support/e2e.rs`) run here over MQTT.

#[tokio::test]
async fn connections_dropped_after_connect_are_retried() {
    let env = mqtt_emulator().await;
    let (_s, device) = symmetric_setup(&env, "mqtt-drop-connect");
    env.emu.faults().drop_next_mqtt_connects(2);
    let (r, events) = register_symmetric_with_events(
        &mqtt_config(&env.emu),
        device,
        "succeeds after the dropped CONNECTs",
    )
    .await;
    assert_eq!(r.device_id, "mqtt-drop-connect");
    assert_eq!(
        events.waits_for("register").len(),
        2,
        "{:?}",
        events.waits()
    );
    single_record(&env.emu, "mqtt-drop-connect");
}

#[tokio::test]
async fn connections_dropped_after_publish_before_the_answer_are_retried() {
    let env = mqtt_emulator_with(|c| c.assignment_delay = Duration::from_millis(300)).await;
    // Drops hit the register PUBLISH and then a poll of the accepted operation.
    let events = dropped_connections_are_retried(&env, "mqtt-drop-publish", mqtt_config).await;
    // Two retries for the two drops, besides the polls.
    let retries: Vec<_> = events
        .waits()
        .into_iter()
        .filter(|(reason, _)| !reason.contains("polling"))
        .collect();
    assert_eq!(retries.len(), 2, "{retries:?}");
}

#[tokio::test]
async fn throttling_over_mqtt_honours_retry_after() {
    let env = mqtt_emulator().await;
    throttling_honours_retry_after(&env, "mqtt-throttled", mqtt_config).await;
}

#[tokio::test]
async fn server_errors_over_mqtt_are_retried_with_backoff() {
    let env = mqtt_emulator().await;
    server_errors_are_retried(&env, "mqtt-500", mqtt_config).await;
}

#[tokio::test]
async fn polls_over_mqtt_follow_the_services_retry_after() {
    let env = mqtt_emulator_with(assigned_after_polling).await;
    polls_follow_the_services_retry_after(&env, "mqtt-polled", mqtt_config).await;
    single_record(&env.emu, "mqtt-polled");
}

#[tokio::test]
async fn slow_answers_over_mqtt_end_in_success_or_a_clear_timeout() {
    let env = mqtt_emulator().await;
    slow_answers_end_in_success_or_a_clear_timeout(&env, "mqtt-slow", mqtt_config).await;
    single_record(&env.emu, "mqtt-slow");
}

#[tokio::test]
async fn every_fault_at_once_with_x509() {
    let env = mqtt_emulator_with(|c| c.assignment_delay = Duration::from_millis(200)).await;
    let state = tempfile::tempdir().unwrap();
    let device = dice_device(state.path(), "mqtt-dice-faults");
    enroll_leaf(&env, &device, "mqtt-dice-faults");
    env.emu.faults().drop_next_mqtt_connects(1);
    env.emu.faults().drop_next(1);
    env.emu.faults().fail_next(1);
    env.emu.faults().throttle_next(1, 1);
    let r = register(&mqtt_config(&env.emu), device, Attestation::X509, &|_| {})
        .await
        .expect("X.509 over MQTT through faults");
    assert_eq!(r.device_id, "mqtt-dice-faults");
    single_record(&env.emu, "mqtt-dice-faults");
}
