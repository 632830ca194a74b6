//! A plugin that keeps its identity in memory passes every check made within one process and
//! then fails `hsmkit provision`, which runs in another process than `hsmkit enroll-info` or
//! `hsmkit import-key` (issue 13). The cross-process checks catch exactly that, and say so
//! with the fix.

mod support;

use hsm_conformance::{RunReport, Status};
use support::*;

/// The fix every cross-process FAIL names.
const KEEP_IT: &str = "keep it under state_dir (files 0600, written atomically), not in memory";

/// The FAIL of `id` says that something does not survive the process, with the fix, and
/// carries `also`.
fn assert_diagnosed(report: &RunReport, id: &str, also: &str) {
    let r = report.get(id).unwrap_or_else(|| panic!("{id} did not run"));
    assert_eq!(r.status, Status::Fail, "{}", r.line());
    assert!(
        r.message.contains("does not survive the process")
            && r.message.contains(KEEP_IT)
            && r.message.contains(also),
        "{}",
        r.message
    );
}

/// Every check of `group` that ran passed: the fixture is sound within one process.
fn assert_group_passes(report: &RunReport, group: &str) {
    let ran: Vec<_> = report
        .results
        .iter()
        .filter(|r| r.id.starts_with(&format!("{group}.")))
        .collect();
    assert!(!ran.is_empty(), "no {group} checks ran");
    for r in ran {
        assert_eq!(r.status, Status::Pass, "{}", r.line());
    }
}

#[test]
fn x509_identity_made_per_process_fails_exactly_the_cross_process_checks() {
    let report = run_report(&options(&fixture("conf_in_memory_identity"), &[]));
    // provisioning.x509 enrolls the chain one process read and registers from another.
    assert_exactly(
        &report,
        Status::Fail,
        &[
            "lifecycle.identity-survives-process",
            "lifecycle.signing-key-survives-process",
            "provisioning.x509",
        ],
    );
    assert_diagnosed(
        &report,
        "lifecycle.identity-survives-process",
        "process A read the certificate chain as",
    );
    assert_diagnosed(
        &report,
        "lifecycle.signing-key-survives-process",
        "B's signature does not verify with the leaf key A read",
    );
    assert_group_passes(&report, "x509");
    assert_eq!(
        report.get("lifecycle.two-instances").map(|r| r.status),
        Some(Status::Pass)
    );
}

#[test]
fn symmetric_key_held_in_memory_fails_exactly_the_cross_process_checks() {
    let report = run_report(&options(&fixture("conf_in_memory_key"), &[]));
    // provisioning.symmetric-key imports the enrolled key in one process and registers from
    // another.
    assert_exactly(
        &report,
        Status::Fail,
        &[
            "lifecycle.imported-key-survives-process",
            "provisioning.symmetric-key",
        ],
    );
    // Gone in the next process: the plugin's HSM_ERR_NOT_FOUND gets the same diagnosis.
    assert_diagnosed(
        &report,
        "lifecycle.imported-key-survives-process",
        "process B's sign answered HSM_ERR_NOT_FOUND",
    );
    assert_group_passes(&report, "symmetric-key");
    // Its registration id is fixed, so the identity itself does survive.
    assert_eq!(
        report
            .get("lifecycle.identity-survives-process")
            .map(|r| r.status),
        Some(Status::Pass)
    );
}

/// conf-unstable-ek holds its activated identity key in memory too: the TPM path of the
/// diagnosis (EK/SRK read in A, activated in B, sign in C answers HSM_ERR_INVALID_STATE).
#[test]
fn tpm_identity_key_held_in_memory_is_diagnosed() {
    let mut o = options(&fixture("conf_unstable_ek"), &[]);
    o.only = vec!["lifecycle.activated-key-survives-process".into()];
    let report = run_report(&o);
    assert_exactly(
        &report,
        Status::Fail,
        &["lifecycle.activated-key-survives-process"],
    );
    assert_diagnosed(
        &report,
        "lifecycle.activated-key-survives-process",
        "process C's sign_with_identity answered HSM_ERR_INVALID_STATE",
    );
}

/// A plugin that keeps its identity under state_dir passes every cross-process check: the
/// Rust template (X.509) and the bundled symmetric and tpm-sim plugins.
#[test]
fn identity_kept_under_state_dir_passes() {
    for (plugin, config) in [
        (built_library("hsmkit_plugin_rust_x509"), vec![]),
        (
            bundled("symmetric"),
            vec![("registration_id", "conf-device")],
        ),
        (bundled("tpm_sim"), vec![]),
    ] {
        let mut o = options(&plugin, &config);
        o.only = vec!["lifecycle.*-survives-process".into()];
        let report = run_report(&o);
        assert!(report.success(), "\n{}", describe(&report));
        let passed = report
            .results
            .iter()
            .filter(|r| r.status == Status::Pass)
            .count();
        // The identity and the interface's key, each in a fresh process.
        assert_eq!(
            passed,
            2,
            "{}:\n{}",
            plugin.display(),
            describe_all(&report)
        );
    }
}

/// Every result line, for assertion messages.
fn describe_all(report: &RunReport) -> String {
    let mut lines: Vec<String> = report.results.iter().map(|r| r.line()).collect();
    lines.push(report.summary());
    lines.join("\n")
}
