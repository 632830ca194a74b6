//! The provisioning checks' failure path: a broken plugin fails provisioning with the step
//! named and DPS's answer (HTTP status, errorCode, message, and the emulator's logged reason
//! for a refusal), or the plugin call that failed.

mod support;

use hsm_conformance::{RunReport, Status};
use support::*;

/// Runs only the provisioning checks on fixture `stem`.
fn provisioning_only(stem: &str) -> RunReport {
    let mut o = options(&fixture(stem), &[]);
    o.only = vec!["provisioning".into()];
    run_report(&o)
}

/// The message of `id`, which must be a FAIL.
fn failure_message(report: &RunReport, id: &str) -> String {
    let r = report.get(id).expect("ran");
    assert_eq!(r.status, Status::Fail, "{}", r.line());
    r.message.clone()
}

#[test]
fn x509_handshake_signature_that_does_not_verify_is_refused_at_register() {
    for stem in [
        "conf_bad_signature",
        "conf_raw_signature",
        "conf_reversed_chain",
    ] {
        let report = provisioning_only(stem);
        assert_exactly(&report, Status::Fail, &["provisioning.x509"]);
        let m = failure_message(&report, "provisioning.x509");
        for part in [
            "step register: ",
            "refused the device's TLS client certificate during the handshake",
            "received fatal alert: DecryptError",
            "leaf first",
            // The emulator's own reason, which DPS never tells the device.
            "[the emulator's reason: TLS handshake failed: invalid peer certificate: BadSignature]",
        ] {
            assert!(m.contains(part), "{stem}: `{part}` not in: {m}");
        }
    }
}

#[test]
fn refused_symmetric_key_token_names_dps_answer() {
    // sign returns HSM_OK and an empty buffer: the SAS token carries no signature.
    let report = provisioning_only("conf_empty_output");
    assert_exactly(&report, Status::Fail, &["provisioning.symmetric-key"]);
    let m = failure_message(&report, "provisioning.symmetric-key");
    for part in [
        "step register: ",
        "DPS refused registration id `conf-empty-output` (symmetricKey attestation)",
        "HTTP 401 (error 401002): Unauthorized",
        "tracking id ",
        "[the emulator's reason: the token's signature does not verify]",
    ] {
        assert!(m.contains(part), "`{part}` not in: {m}");
    }
}

#[test]
fn plugin_failure_names_the_plugin_call() {
    let report = provisioning_only("conf_panic");
    assert_exactly(&report, Status::Fail, &["provisioning.symmetric-key"]);
    let m = failure_message(&report, "provisioning.symmetric-key");
    assert!(
        m.contains("step register: the plugin failed: plugin `conf-panic`: sign failed (panic)"),
        "{m}"
    );
}

#[test]
fn identity_key_lost_between_processes_fails_at_hub_token() {
    // conf-unstable-ek registers (the challenge is answered in the register process), but
    // keeps the activated identity key in memory: hub-token, a process later, has none.
    let report = provisioning_only("conf_unstable_ek");
    assert_exactly(&report, Status::Fail, &["provisioning.tpm"]);
    let m = failure_message(&report, "provisioning.tpm");
    assert!(
        m.contains("step hub-token: the plugin failed: ") && m.contains("sign_with_identity"),
        "{m}"
    );
}

#[test]
fn crashing_plugin_names_the_step_whose_process_died() {
    let report = provisioning_only("conf_segfault");
    assert_exactly(&report, Status::Fail, &["provisioning.symmetric-key"]);
    let m = failure_message(&report, "provisioning.symmetric-key");
    assert!(m.contains("step register") && m.contains("SIGSEGV"), "{m}");
}
