//! The command line: exit codes, the per-check lines and summary, --json, --junit, --list,
//! --only/--skip, and lookup by name.

mod support;

use std::process::Command;
use support::*;

fn harness() -> Command {
    Command::new(env!("CARGO_BIN_EXE_hsm-conformance"))
}

#[test]
fn passing_plugin_exits_zero_and_writes_reports() {
    let dir = tempfile::tempdir().expect("temp dir");
    let json = dir.path().join("report.json");
    let junit = dir.path().join("report.xml");
    let out = harness()
        .arg(bundled("symmetric"))
        .args(["--config", "registration_id=cli-device", "--json"])
        .arg(&json)
        .arg("--junit")
        .arg(&junit)
        .output()
        .expect("run hsm-conformance");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("PASS    symmetric-key.import-and-sign"),
        "{stdout}"
    );
    assert!(
        stdout.contains(" passed, 0 failed, 0 crashed, 0 timed out"),
        "{stdout}"
    );
    assert!(
        stdout.lines().last().is_some_and(|l| l.ends_with(" s")),
        "{stdout}"
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("json written"))
            .expect("valid JSON");
    assert_eq!(v["success"], true);
    assert_eq!(v["pluginName"], "symmetric");
    assert!(v["results"].as_array().is_some_and(|r| r.len() >= 40));
    assert!(v["totalMillis"].as_u64().is_some());
    let xml = std::fs::read_to_string(&junit).expect("junit written");
    assert!(xml.starts_with("<?xml"), "{xml}");
    assert!(xml.contains("failures=\"0\" errors=\"0\""), "{xml}");
    assert!(xml
        .contains("<testcase classname=\"symmetric-key\" name=\"symmetric-key.import-and-sign\""));
    assert!(xml.contains("<skipped message=\"the plugin does not declare the tpm capability\"/>"));
}

#[test]
fn crashing_plugin_exits_one_with_errors_in_junit() {
    let dir = tempfile::tempdir().expect("temp dir");
    let junit = dir.path().join("report.xml");
    let out = harness()
        .arg(fixture("conf_segfault"))
        .args(["--only", "symmetric-key", "--junit"])
        .arg(&junit)
        .output()
        .expect("run hsm-conformance");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("CRASH   symmetric-key.import-and-sign"),
        "{stdout}"
    );
    // --only limits the run to the group.
    assert!(!stdout.contains("loading."), "{stdout}");
    let xml = std::fs::read_to_string(&junit).expect("junit written");
    assert!(xml.contains("errors=\"4\""), "{xml}");
    assert!(xml.contains("type=\"crash\""), "{xml}");
}

#[test]
fn skip_removes_checks_and_unknown_patterns_are_refused() {
    let out = harness()
        .arg(fixture("conf_segfault"))
        .args([
            "--skip",
            "symmetric-key",
            "--skip",
            "bad-input.large-input",
            "--skip",
            "performance",
            "--skip",
            "provisioning.symmetric-key",
            "--skip",
            "lifecycle.imported-key-survives-process",
            "--skip",
            "concurrency.symmetric-key-hot-path",
        ])
        .output()
        .expect("run hsm-conformance");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = harness()
        .arg(bundled("symmetric"))
        .args(["--only", "no-such-check"])
        .output()
        .expect("run hsm-conformance");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("matches no check"));
}

#[test]
fn list_names_every_check_with_its_interface() {
    let out = harness()
        .arg("--list")
        .output()
        .expect("run hsm-conformance");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(stdout.lines().count() >= 50, "{stdout}");
    assert!(stdout.contains("tpm.activate-and-sign"));
    assert!(stdout
        .lines()
        .any(|l| l.starts_with("x509.sign-verifies") && l.contains("x509")));
}

#[test]
fn plugin_found_by_name_in_the_plugins_folder() {
    let out = harness()
        .arg("symmetric")
        .args([
            "--config",
            "registration_id=by-name",
            "--only",
            "symmetric-key.registration-id",
        ])
        .env("HSMKIT_PLUGIN_DIR", profile_dir())
        .output()
        .expect("run hsm-conformance");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("by-name"), "{stdout}");
    let out = harness()
        .arg("no-such-plugin")
        .env("HSMKIT_PLUGIN_DIR", profile_dir())
        .output()
        .expect("run hsm-conformance");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no plugin named `no-such-plugin`"));
}

#[test]
fn swtpm_tcti_runs_one_check_at_a_time_by_default() {
    let swtpm = hsm_tpm_common::swtpm::Swtpm::start().unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().expect("temp dir");
    let json = dir.path().join("tpm2.json");
    // No --jobs: a swtpm TCTI means one connection at a time, so the harness uses one job.
    let out = harness()
        .arg(bundled("tpm2"))
        .arg("--config")
        .arg(format!("tcti={}", swtpm.tcti()))
        .args(["--only", "tpm", "--json"])
        .arg(&json)
        .output()
        .expect("run hsm-conformance");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("json written"))
            .expect("valid JSON");
    assert_eq!(v["pluginName"], "tpm2");
    assert!(v["counts"]["pass"].as_u64().is_some_and(|n| n >= 9), "{v}");
    drop(swtpm);
}

/// A command line missing a setting exits 3, not 1, and says SETUP with the plugin's hint;
/// the JUnit report carries it as a skipped test with a `SETUP:` message.
#[test]
fn missing_setting_exits_three_with_the_hint() {
    let dir = tempfile::tempdir().expect("temp dir");
    let junit = dir.path().join("report.xml");
    let out = harness()
        .arg(fixture("conf_needs_setting"))
        .arg("--junit")
        .arg(&junit)
        .output()
        .expect("run hsm-conformance");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(hsm_conformance::EXIT_SETUP),
        "{stdout}"
    );
    assert!(
        stdout.contains("SETUP   lifecycle.create-destroy") && stdout.contains("device_serial"),
        "{stdout}"
    );
    assert!(stdout.contains("1 need setup"), "{stdout}");
    let xml = std::fs::read_to_string(&junit).expect("junit written");
    assert!(xml.contains("<skipped message=\"SETUP: "), "{xml}");
}
