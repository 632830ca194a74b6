//! Fault tests: the emulator drops connections, answers 500 or 429 with Retry-After, or answers
//! slowly. Every run ends in success or a clear timeout, never a hang or a second registration.

#[path = "support/e2e.rs"]
mod helpers;

use helpers::*;
use provisioning_core::dps::{register, Attestation, DpsError};
use std::time::Duration;

async fn symmetric_setup(
    env: &Env,
    reg: &str,
) -> (
    tempfile::TempDir,
    std::sync::Arc<provisioning_core::plugin::PluginInstance>,
) {
    let key = symmetric_enrollment(&env.emu, reg);
    let state = tempfile::tempdir().unwrap();
    let device = symmetric_device(state.path(), reg, &key);
    (state, device)
}

#[tokio::test]
async fn server_errors_are_retried_with_backoff() {
    let env = emulator().await;
    let (_s, device) = symmetric_setup(&env, "faulty-500").await;
    env.emu.faults().fail_next(3);
    let events = Events::default();
    let r = register(
        &dps_config(&env.emu),
        device,
        Attestation::SymmetricKey,
        &events.sink(),
    )
    .await
    .expect("succeeds after the 500s");
    assert_eq!(r.device_id, "faulty-500");
    let server_waits: Vec<_> = events.waits_for("HTTP 500");
    assert_eq!(server_waits.len(), 3, "{server_waits:?}");
    single_record(&env.emu, "faulty-500");
}

#[tokio::test]
async fn throttling_honours_retry_after() {
    let env = emulator().await;
    let (_s, device) = symmetric_setup(&env, "throttled").await;
    env.emu.faults().throttle_next(2, 2);
    let events = Events::default();
    register(
        &dps_config(&env.emu),
        device,
        Attestation::SymmetricKey,
        &events.sink(),
    )
    .await
    .expect("succeeds after throttling");
    let throttled: Vec<_> = events.waits_for("429");
    assert_eq!(throttled.len(), 2, "{throttled:?}");
    assert!(
        throttled.iter().all(|(_, w)| *w == Duration::from_secs(2)),
        "{throttled:?}"
    );
    single_record(&env.emu, "throttled");
}

#[tokio::test]
async fn out_of_range_retry_after_falls_back_to_backoff() {
    let env = emulator().await;
    let (_s, device) = symmetric_setup(&env, "bad-retry-after").await;
    env.emu.faults().throttle_next(1, 100_000);
    let events = Events::default();
    register(
        &dps_config(&env.emu),
        device,
        Attestation::SymmetricKey,
        &events.sink(),
    )
    .await
    .expect("succeeds");
    let throttled: Vec<_> = events.waits_for("429");
    assert_eq!(throttled.len(), 1);
    assert!(
        throttled[0].1 <= Duration::from_millis(800),
        "{throttled:?}"
    );
}

#[tokio::test]
async fn dropped_connections_are_retried_without_a_second_registration() {
    let env = emulator_with(|c| c.assignment_delay = Duration::from_millis(300)).await;
    let (_s, device) = symmetric_setup(&env, "dropped").await;
    // Drops hit the register request and then polls of the accepted operation.
    env.emu.faults().drop_next(2);
    let r = register(
        &dps_config(&env.emu),
        device.clone(),
        Attestation::SymmetricKey,
        &|_| {},
    )
    .await
    .expect("succeeds after drops");
    assert_eq!(r.device_id, "dropped");
    single_record(&env.emu, "dropped");
}

#[tokio::test]
async fn polls_follow_the_services_retry_after() {
    let env = emulator_with(|c| {
        c.assignment_delay = Duration::from_millis(1500);
        c.retry_after_secs = 1;
    })
    .await;
    let (_s, device) = symmetric_setup(&env, "polled").await;
    let events = Events::default();
    register(
        &dps_config(&env.emu),
        device,
        Attestation::SymmetricKey,
        &events.sink(),
    )
    .await
    .expect("assigned after polling");
    let polls: Vec<_> = events.waits_for("polling");
    assert!(!polls.is_empty());
    assert!(
        polls.iter().all(|(_, w)| *w == Duration::from_secs(1)),
        "{polls:?}"
    );
}

#[tokio::test]
async fn slow_answers_end_in_success_or_a_clear_timeout() {
    let env = emulator().await;
    let (_s, device) = symmetric_setup(&env, "slow").await;

    // Slower than the per-request timeout, forever: a clear overall timeout, no hang.
    env.emu.faults().delay_responses(Duration::from_secs(5));
    let mut config = dps_config(&env.emu);
    config.request_timeout = Duration::from_millis(400);
    config.overall_timeout = Duration::from_secs(3);
    let started = std::time::Instant::now();
    let e = register(&config, device.clone(), Attestation::SymmetricKey, &|_| {})
        .await
        .unwrap_err();
    assert!(matches!(e, DpsError::Timeout { .. }), "{e}");
    assert!(e.to_string().contains("no answer within"), "{e}");
    // Ended by the deadline, not by waiting for the server (a bound, not a speed target).
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );

    // Slow but within the request timeout: success.
    env.emu.faults().delay_responses(Duration::from_millis(300));
    let r = register(
        &dps_config(&env.emu),
        device,
        Attestation::SymmetricKey,
        &|_| {},
    )
    .await
    .expect("slow but fine");
    assert_eq!(r.device_id, "slow");
    assert!(env.emu.registration_records().unwrap().len() <= 1);
}

#[tokio::test]
async fn everything_at_once_with_tpm() {
    let env = emulator_with(|c| c.assignment_delay = Duration::from_millis(200)).await;
    let state = tempfile::tempdir().unwrap();
    let device = instance(
        "tpm_sim",
        &[("state_dir", state.path().display().to_string())],
    );
    let ek = device.tpm().unwrap().endorsement_key().unwrap();
    let reg = provisioning_core::dps::tpm_registration_id(&ek);
    individual(
        &env.emu,
        serde_json::json!({"registrationId": reg, "attestation": {"type": "tpm", "tpm": {"endorsementKey": B64.encode(&ek)}}}),
    );
    use base64::Engine;
    env.emu.faults().drop_next(1);
    env.emu.faults().fail_next(1);
    env.emu.faults().throttle_next(1, 1);
    let r = register(&dps_config(&env.emu), device, Attestation::Tpm, &|_| {})
        .await
        .expect("TPM registration through faults");
    assert_eq!(r.registration_id, reg);
    single_record(&env.emu, &reg);
}
