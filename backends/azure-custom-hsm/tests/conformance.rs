//! hsm-conformance through the adapter: the project's C custom-HSM library passes every check
//! (the two that depend on what an earlier check left may SKIP), and a library that crashes
//! inside a call is reported as CRASH while the run goes on to its summary, the interfaces it
//! does not export SKIPPED.

mod support;

use hsm_fixture_azure_custom_hsm_c as fixture;
use std::collections::BTreeMap;
use std::process::Command;
use support::*;

/// Runs hsm-conformance on the adapter hosting `setup`'s library: (exit code, verdict by check
/// id, whole output).
fn conformance(setup: &Setup, extra: &[&str]) -> (i32, BTreeMap<String, String>, String) {
    let mut cmd = Command::new(built_exe("hsm-conformance"));
    setup.env(&mut cmd, "custom-hsm-conformance");
    cmd.arg(setup.adapter())
        .arg("--config")
        .arg(setup.library_setting())
        // The library's state is one folder for every check (its contract has no settings):
        // one check at a time, so that no check sees another's key mid-way.
        .args(["--jobs", "1"])
        .args(extra);
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running hsm-conformance: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let text = format!("{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let mut verdicts = BTreeMap::new();
    for line in stdout.lines() {
        let mut words = line.split_whitespace();
        if let (Some(status), Some(id)) = (words.next(), words.next()) {
            if ["PASS", "FAIL", "CRASH", "SKIP", "TIMEOUT", "WARN", "SETUP"].contains(&status)
                && id.contains('.')
                && !id.ends_with(':')
            {
                verdicts.insert(id.to_string(), status.to_string());
            }
        }
    }
    (out.status.code().unwrap_or(-1), verdicts, text)
}

#[test]
fn the_c_custom_hsm_library_passes_every_check() {
    let setup = Setup::good();
    let (code, verdicts, text) =
        conformance(&setup, &["--config", "registration_id=custom-hsm-sym"]);
    assert!(verdicts.len() > 60, "too few checks parsed:\n{text}");
    // These two answer what an earlier check left behind in the library's one state folder.
    let may_skip = ["symmetric-key.sign-without-key", "tpm.sign-before-activate"];
    for (id, status) in &verdicts {
        // The C SDK's custom-HSM contract has no operational key, so this plugin offers none
        // (ABI 1.2's interface is absent) and the harness skips its checks.
        let no_operational_key = id.starts_with("operational-key.");
        let ok = status == "PASS"
            || (status == "SKIP" && (may_skip.contains(&id.as_str()) || no_operational_key));
        assert!(ok, "{id}: {status}\n{text}");
    }
    assert!(
        text.lines()
            .filter(|l| l.starts_with("SKIP") && l.contains("operational-key."))
            .all(|l| l.contains("cannot hold an operational key")),
        "the operational-key checks are skipped for another reason:\n{text}"
    );
    for id in [
        "provisioning.tpm",
        "provisioning.x509",
        "provisioning.symmetric-key",
    ] {
        assert_eq!(verdicts.get(id).map(String::as_str), Some("PASS"), "{text}");
    }
    assert_eq!(code, 0, "{text}");
}

#[test]
fn a_crash_inside_the_library_is_reported_and_the_run_goes_on() {
    let setup = Setup::new(fixture::SEGFAULT);
    let (code, verdicts, text) = conformance(&setup, &[]);
    // Every check that reaches hsm_client_get_symm_key crashes in its own process...
    for id in [
        "symmetric-key.import-and-sign",
        "symmetric-key.reimport-replaces",
        "symmetric-key.sign-deterministic",
        "symmetric-key.sign-without-key",
        "lifecycle.imported-key-survives-process",
    ] {
        assert_eq!(
            verdicts.get(id).map(String::as_str),
            Some("CRASH"),
            "{id}\n{text}"
        );
    }
    assert!(text.contains("SIGSEGV"), "{text}");
    // ...and the others still run: the library loads and answers what does not crash.
    for id in [
        "loading.host-loader",
        "symmetric-key.registration-id",
        "symmetric-key.empty-key-refused",
    ] {
        assert_eq!(
            verdicts.get(id).map(String::as_str),
            Some("PASS"),
            "{id}\n{text}"
        );
    }
    // The interfaces the library does not export SKIP, naming the missing symbol.
    for (id, symbol) in [
        ("tpm.ek-format", "hsm_client_tpm_interface"),
        ("provisioning.tpm", "hsm_client_tpm_interface"),
        ("x509.sign-verifies", "hsm_client_x509_interface"),
        ("provisioning.x509", "hsm_client_x509_interface"),
    ] {
        assert_eq!(
            verdicts.get(id).map(String::as_str),
            Some("SKIP"),
            "{id}\n{text}"
        );
        assert!(
            text.contains(&format!("does not export {symbol}")),
            "{text}"
        );
    }
    let failed: Vec<_> = verdicts.iter().filter(|(_, s)| *s == "FAIL").collect();
    assert_eq!(
        failed,
        [(&"provisioning.symmetric-key".to_string(), &"FAIL".to_string())],
        "only the provisioning check, whose register step crashes in its own process, fails:\n{text}"
    );
    assert!(text.contains("crashed"), "the summary is printed:\n{text}");
    assert_ne!(code, 0, "{text}");
}

#[test]
fn libraries_the_c_sdk_refuses_are_setup_naming_why() {
    for (library, why) in [
        (
            fixture::NULL_MEMBER,
            "hsm_client_x509_interface() returned a table with NULL members (hsm_client_get_key); the C SDK refuses such a table",
        ),
        (
            fixture::NO_INTERFACE,
            "exports none of hsm_client_tpm_interface, hsm_client_x509_interface, hsm_client_key_interface",
        ),
    ] {
        let setup = Setup::new(library);
        let (_, verdicts, text) = conformance(&setup, &[]);
        assert_eq!(
            verdicts.get("lifecycle.create-destroy").map(String::as_str),
            Some("SETUP"),
            "{text}"
        );
        assert!(text.contains(why), "{text}");
        assert!(
            !verdicts.values().any(|s| s == "FAIL" || s == "CRASH"),
            "{text}"
        );
    }
}

#[test]
fn null_and_malformed_returns_fail_the_checks_without_a_crash() {
    let setup = Setup::new(fixture::NULL_RETURNS);
    let (code, verdicts, text) = conformance(&setup, &[]);
    for (id, why) in [
        (
            "tpm.ek-format",
            "hsm_client_get_ek returned success with a NULL output",
        ),
        ("x509.chain-parses", "hsm_client_get_cert returned NULL"),
        (
            "symmetric-key.registration-id",
            "hsm_client_key_create returned NULL",
        ),
    ] {
        assert_eq!(
            verdicts.get(id).map(String::as_str),
            Some("FAIL"),
            "{id}\n{text}"
        );
        assert!(text.contains(why), "{why}\n{text}");
    }
    assert!(
        !verdicts.values().any(|s| s == "CRASH" || s == "TIMEOUT"),
        "{text}"
    );
    assert_ne!(code, 0, "{text}");
}
