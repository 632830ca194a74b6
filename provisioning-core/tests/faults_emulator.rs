//! Fault tests: the emulator drops connections, answers 500 or 429 with Retry-After, or answers
//! slowly. Every run ends in success or a clear timeout, never a hang or a second registration.
//! The scenarios are shared with the MQTT tests (`support/e2e.rs`); here they run over HTTPS.

#[path = "support/e2e.rs"]
mod helpers;

use helpers::*;
use provisioning_core::dps::{register, Attestation};
use std::time::Duration;

#[tokio::test]
async fn server_errors_are_retried_with_backoff() {
    let env = emulator().await;
    let r = server_errors_are_retried(&env, "faulty-500", dps_config).await;
    assert_eq!(r.device_id, "faulty-500");
}

#[tokio::test]
async fn throttling_honours_retry_after() {
    let env = emulator().await;
    helpers::throttling_honours_retry_after(&env, "throttled", dps_config).await;
}

#[tokio::test]
async fn out_of_range_retry_after_falls_back_to_backoff() {
    let env = emulator().await;
    let (_s, device) = symmetric_setup(&env, "bad-retry-after");
    env.emu.faults().throttle_next(1, 100_000);
    let (_, events) =
        register_symmetric_with_events(&dps_config(&env.emu), device, "succeeds").await;
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
    dropped_connections_are_retried(&env, "dropped", dps_config).await;
}

#[tokio::test]
async fn polls_follow_the_services_retry_after() {
    let env = emulator_with(assigned_after_polling).await;
    helpers::polls_follow_the_services_retry_after(&env, "polled", dps_config).await;
}

#[tokio::test]
async fn slow_answers_end_in_success_or_a_clear_timeout() {
    let env = emulator().await;
    let elapsed =
        helpers::slow_answers_end_in_success_or_a_clear_timeout(&env, "slow", dps_config).await;
    // Ended by the deadline, not by waiting for the server (a bound, not a speed target).
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
    assert!(env.emu.registration_records().unwrap().len() <= 1);
}

#[tokio::test]
async fn everything_at_once_with_tpm() {
    let env = emulator_with(|c| c.assignment_delay = Duration::from_millis(200)).await;
    let state = tempfile::tempdir().unwrap();
    let (device, reg) = tpm_sim_enrolled(&env, state.path());
    env.emu.faults().drop_next(1);
    env.emu.faults().fail_next(1);
    env.emu.faults().throttle_next(1, 1);
    let r = register(&dps_config(&env.emu), device, Attestation::Tpm, &|_| {})
        .await
        .expect("TPM registration through faults");
    assert_eq!(r.registration_id, reg);
    single_record(&env.emu, &reg);
}
