//! Each deliberately broken plugin gets exactly its expected failures, and the harness never
//! crashes itself: segfaults, panics, hangs and refusals stay inside the checks' children.

mod support;

use hsm_conformance::Status;
use std::path::PathBuf;
use std::time::Duration;
use support::*;

/// The functional checks that reach the symmetric-key `sign` call (performance.sign-throughput
/// and lifecycle.imported-key-survives-process reach it too, but skip rather than fail when
/// sign does not work within one process).
const SIGN_FUNCTIONAL: &[&str] = &[
    "bad-input.large-input",
    "provisioning.symmetric-key",
    "symmetric-key.import-and-sign",
    "symmetric-key.reimport-replaces",
    "symmetric-key.sign-deterministic",
    "symmetric-key.sign-without-key",
];

/// The checks that reach the symmetric-key `sign` call (the concurrency hot path skips when
/// sign fails without threads, but a sign that crashes or hangs takes its process along).
const SIGN_CHECKS: &[&str] = &[
    "bad-input.large-input",
    "concurrency.symmetric-key-hot-path",
    "lifecycle.imported-key-survives-process",
    "performance.sign-throughput",
    "symmetric-key.import-and-sign",
    "symmetric-key.reimport-replaces",
    "symmetric-key.sign-deterministic",
    "symmetric-key.sign-without-key",
];

#[test]
fn panicking_plugin_fails_exactly_the_checks_that_reach_the_panic() {
    let report = run_report(&options(&fixture("conf_panic"), &[]));
    // Performance never fails (issue 13): with a sign that does not work it has nothing to
    // measure and skips; it used to be one of the failures.
    assert_exactly(&report, Status::Fail, SIGN_FUNCTIONAL);
    assert_eq!(
        report.get("performance.sign-throughput").map(|r| r.status),
        Some(Status::Skip)
    );
    let r = report.get("symmetric-key.import-and-sign").expect("ran");
    assert!(r.message.contains("HSM_ERR_PANIC"), "{}", r.message);
}

#[test]
fn segfaulting_plugin_is_reported_as_crashes_and_the_run_goes_on() {
    let report = run_report(&options(&fixture("conf_segfault"), &[]));
    // provisioning.symmetric-key signs in a step process of its own (register): that process
    // dies, and the check fails naming the step.
    let mut want: std::collections::BTreeSet<(String, Status)> = SIGN_CHECKS
        .iter()
        .map(|id| (id.to_string(), Status::Crash))
        .collect();
    want.insert(("provisioning.symmetric-key".into(), Status::Fail));
    assert_eq!(failures(&report), want, "\n{}", describe(&report));
    let r = report.get("symmetric-key.sign-deterministic").expect("ran");
    assert!(r.message.contains("SIGSEGV"), "{}", r.message);
    assert!(report.counts().pass >= 25, "{}", report.summary());
}

#[test]
fn hanging_plugin_is_killed_and_reported_as_timeouts() {
    let mut o = options(&fixture("conf_hang"), &[]);
    o.timeout = Duration::from_secs(3);
    // The hanging checks and a group that never reaches `sign`, which must still pass.
    o.only = SIGN_CHECKS.iter().map(|s| s.to_string()).collect();
    o.only.push("lifecycle".into());
    // The hung children only sleep: run them side by side to keep the test short.
    o.jobs = 6;
    let report = run_report(&o);
    // Performance is warn-only (issue 13): its hung child is killed like the others but
    // reported as WARN, so it is not among the timeouts.
    let functional: Vec<&str> = SIGN_CHECKS
        .iter()
        .copied()
        .filter(|id| !id.starts_with("performance."))
        .collect();
    assert_exactly(&report, Status::Timeout, &functional);
    let perf = report.get("performance.sign-throughput").expect("ran");
    assert_eq!(perf.status, Status::Warn, "{}", perf.message);
    assert!(
        perf.message.contains("no measurement within"),
        "{}",
        perf.message
    );
    // Except the one that signs with an imported key in process A, which hangs with it, and
    // those for interfaces the fixture does not declare.
    assert!(report
        .results
        .iter()
        .filter(|r| r.id.starts_with("lifecycle.")
            && !SIGN_CHECKS.contains(&r.id)
            && !r.message.contains("does not declare"))
        .all(|r| r.status == hsm_conformance::Status::Pass));
    for id in SIGN_CHECKS {
        let r = report.get(id).expect("ran");
        assert!(
            r.duration < Duration::from_secs(5),
            "{id} took {:?}",
            r.duration
        );
    }
}

#[test]
fn unstable_ek_breaks_every_check_that_relies_on_a_stable_identity() {
    let report = run_report(&options(&fixture("conf_unstable_ek"), &[]));
    assert_exactly(
        &report,
        Status::Fail,
        &[
            "concurrency.instance-per-thread",
            "concurrency.shared-instance",
            "lifecycle.activated-key-survives-process",
            "lifecycle.two-instances",
            "memory.fresh-buffers",
            "provisioning.tpm",
            "tpm.ek-stable",
        ],
    );
    // Its challenge answers are right: the TPM checks that do not compare EKs pass.
    assert_eq!(
        report.get("tpm.activate-and-sign").map(|r| r.status),
        Some(Status::Pass)
    );
}

#[test]
fn signatures_that_do_not_verify_are_caught() {
    let report = run_report(&options(&fixture("conf_bad_signature"), &[]));
    assert_exactly(
        &report,
        Status::Fail,
        &["provisioning.x509", "x509.sign-verifies"],
    );
}

#[test]
fn buffers_never_released_are_caught() {
    let report = run_report(&options(&fixture("conf_leak"), &[]));
    // Its imported key lives in memory too: it does not survive the process.
    assert_exactly(
        &report,
        Status::Fail,
        &[
            "lifecycle.imported-key-survives-process",
            "memory.release-frees",
            "provisioning.symmetric-key",
        ],
    );
}

#[test]
fn wrong_abi_major_fails_the_loading_checks_and_skips_the_rest() {
    let plugin = PathBuf::from(hsm_fixture_loader_c::ABI_MAJOR_2);
    let report = run_report(&options(&plugin, &[]));
    assert_exactly(
        &report,
        Status::Fail,
        &[
            "loading.abi-version",
            "loading.accepts-newer-minor",
            "loading.host-loader",
        ],
    );
    let load_error = report.load_error.clone().unwrap_or_default();
    assert!(
        load_error.contains("ABI 2.3") && load_error.contains("host ABI 1.2"),
        "{load_error}"
    );
    assert!(report
        .results
        .iter()
        .filter(|r| !r.id.starts_with("loading."))
        .all(|r| r.status == Status::Skip));
}

#[test]
fn missing_entry_symbol_is_named() {
    let plugin = PathBuf::from(hsm_fixture_loader_c::MISSING_ENTRY);
    let report = run_report(&options(&plugin, &[]));
    assert_exactly(
        &report,
        Status::Fail,
        &["loading.entry-symbol", "loading.host-loader"],
    );
    let r = report.get("loading.entry-symbol").expect("ran");
    assert!(r.message.contains("hsm_plugin_entry"), "{}", r.message);
}

#[test]
fn panic_in_the_entry_point_is_reported_not_fatal() {
    let report = run_report(&options(&fixture("panic_entry"), &[]));
    assert_exactly(
        &report,
        Status::Fail,
        &[
            "loading.abi-version",
            "loading.accepts-newer-minor",
            "loading.host-loader",
        ],
    );
}

#[test]
fn null_table_entry_is_named_and_never_called() {
    let plugin = PathBuf::from(hsm_fixture_conf_null_entry::NULL_ENTRY);
    let report = run_report(&options(&plugin, &[]));
    // The host loader refuses it too, naming the entry.
    assert_exactly(
        &report,
        Status::Fail,
        &["loading.host-loader", "loading.table-entries"],
    );
    let r = report.get("loading.table-entries").expect("ran");
    assert!(
        r.message.contains("symmetric_key.import_key"),
        "{}",
        r.message
    );
    // Nothing else calls into the broken table.
    assert!(report
        .results
        .iter()
        .filter(|r| !r.id.starts_with("loading."))
        .all(|r| r.status == Status::Skip));
}

#[test]
fn create_that_needs_a_setting_is_setup_not_fail() {
    let report = run_report(&options(&fixture("conf_needs_setting"), &[]));
    // Nothing is broken: no FAIL, CRASH or TIMEOUT.
    assert_exactly(&report, Status::Fail, &[]);
    let setup: Vec<&str> = report
        .results
        .iter()
        .filter(|r| r.status == Status::Setup)
        .map(|r| r.id)
        .collect();
    assert_eq!(
        setup,
        ["lifecycle.create-destroy"],
        "\n{}",
        describe(&report)
    );
    let r = report.get("lifecycle.create-destroy").expect("ran");
    // The plugin's own message is the hint.
    assert!(r.message.contains("device_serial"), "{}", r.message);
    assert_eq!(report.counts().setup, 1);
    assert_eq!(report.exit_code(), hsm_conformance::EXIT_SETUP);
    assert!(report.to_junit().contains("<skipped message=\"SETUP: "));
    let json = report.to_json();
    assert!(json.contains("\"status\": \"setup\""), "{json}");
    assert!(json.contains("\"needsSetup\": true"), "{json}");
}

#[test]
fn slow_sign_is_a_warning_with_the_time_per_sign() {
    let mut o = options(&fixture("conf_slow_sign"), &[]);
    o.only = vec![
        "performance.sign-throughput".into(),
        "symmetric-key.import-and-sign".into(),
    ];
    let report = run_report(&o);
    assert_exactly(&report, Status::Fail, &[]);
    assert_eq!(
        report
            .get("symmetric-key.import-and-sign")
            .map(|r| r.status),
        Some(Status::Pass)
    );
    let perf = report.get("performance.sign-throughput").expect("ran");
    assert_eq!(perf.status, Status::Warn, "{}", perf.message);
    // One 3 s call is enough to know: the loop stops after its budget.
    assert!(
        perf.message.contains("per sign over 1 call"),
        "{}",
        perf.message
    );
    assert!(
        perf.duration < std::time::Duration::from_secs(8),
        "{:?}",
        perf.duration
    );

    // Slower than the whole check timeout: still a warning, never TIMEOUT or FAIL.
    o.only = vec!["performance.sign-throughput".into()];
    o.timeout = std::time::Duration::from_secs(1);
    let report = run_report(&o);
    let perf = report.get("performance.sign-throughput").expect("ran");
    assert_eq!(perf.status, Status::Warn, "{}", perf.message);
    assert!(report.success());
}

#[test]
fn raw_r_s_signature_is_diagnosed() {
    let report = run_report(&options(&fixture("conf_raw_signature"), &[]));
    assert_exactly(
        &report,
        Status::Fail,
        &["provisioning.x509", "x509.sign-verifies"],
    );
    let r = report.get("x509.sign-verifies").expect("ran");
    assert!(
        r.message.contains("raw r||s") && r.message.contains("it verifies"),
        "{}",
        r.message
    );
}

#[test]
fn reversed_chain_is_diagnosed() {
    let report = run_report(&options(&fixture("conf_reversed_chain"), &[]));
    // Every check that takes the first certificate for the leaf fails with the diagnosis
    // instead of a misleading CN, key-usage or signature failure; the chain still parses.
    let leaf_checks = [
        "x509.ca-constraints",
        "x509.chain-verifies",
        "x509.common-name",
        "x509.export-policy",
        "x509.leaf-usage",
        "x509.sign-bad-digest",
        "x509.sign-verifies",
        "x509.validity",
    ];
    let mut all = leaf_checks.to_vec();
    all.push("provisioning.x509");
    assert_exactly(&report, Status::Fail, &all);
    for id in leaf_checks {
        let r = report.get(id).expect("ran");
        assert!(
            r.message.contains("wrong order") && r.message.contains("CN=conf-reversed-chain root"),
            "{}",
            r.message
        );
    }
    assert_eq!(
        report.get("x509.chain-parses").map(|r| r.status),
        Some(Status::Pass)
    );
}

#[test]
fn ok_with_empty_output_is_diagnosed() {
    let report = run_report(&options(&fixture("conf_empty_output"), &[]));
    // bad-input.large-input only asks that a 4 MiB input neither crashes nor hangs, so an
    // empty answer passes it.
    let empty = [
        "symmetric-key.import-and-sign",
        "symmetric-key.reimport-replaces",
        "symmetric-key.sign-deterministic",
        "symmetric-key.sign-without-key",
    ];
    // DPS refuses the token without a signature (tests/fixtures_provisioning.rs checks the
    // message).
    let mut all = empty.to_vec();
    all.push("provisioning.symmetric-key");
    assert_exactly(&report, Status::Fail, &all);
    for id in empty {
        let r = report.get(id).expect("ran");
        assert!(
            r.message.contains("empty output buffer"),
            "{id}: {}",
            r.message
        );
    }
    assert_eq!(
        report.get("performance.sign-throughput").map(|r| r.status),
        Some(Status::Skip)
    );
}
