//! The settings contract (ABI 1.1): `create` refuses a key it does not know. A plugin that
//! drops unknown keys fails exactly `lifecycle.unknown-setting-refused`; every bundled plugin
//! passes it, an ABI 1.0 plugin is held to it too; `--list-settings` shows what a plugin
//! declares, learnt in a child process.

mod support;

use hsm_conformance::Status;
use std::path::{Path, PathBuf};
use std::process::Command;
use support::*;

const CHECK: &str = "lifecycle.unknown-setting-refused";

/// Runs only the settings check on `plugin` with `config`; its report line.
fn settings_check(plugin: &Path, config: &[(&str, &str)]) -> hsm_conformance::CheckReport {
    let mut o = options(plugin, config);
    o.only = vec![CHECK.into()];
    let report = run_report(&o);
    report.get(CHECK).expect("the check ran").clone()
}

#[test]
fn a_plugin_that_ignores_unknown_keys_fails_exactly_the_settings_check() {
    let report = run_report(&options(
        &fixture("conf_ignores_unknown_keys"),
        &[("registration_id", "conf-device")],
    ));
    assert_exactly(&report, Status::Fail, &[CHECK]);
    let r = report.get(CHECK).expect("ran");
    assert!(
        r.message.contains("hsm_conformance_unknown_key")
            && r.message.contains("it returned HSM_OK")
            && r.message
                .contains("a typo in a setting would silently configure a different device"),
        "{}",
        r.message
    );
    // Otherwise it is a correct plugin: nothing else is even SETUP or skipped for a reason
    // other than an interface it does not declare.
    assert!(report.load_error.is_none(), "{:?}", report.load_error);
    for r in &report.results {
        if r.id != CHECK && r.status == Status::Skip {
            assert!(
                r.message.contains("does not declare") || r.message.contains("already"),
                "{} skipped: {}",
                r.id,
                r.message
            );
        }
        assert_ne!(r.status, Status::Setup, "{}: {}", r.id, r.message);
    }
}

/// A plugin, the settings it needs, and settings its refusal must name.
type Case = (
    PathBuf,
    &'static [(&'static str, &'static str)],
    &'static [&'static str],
);

#[test]
fn every_bundled_plugin_refuses_an_unknown_key_naming_it_and_its_settings() {
    let cases: [Case; 5] = [
        (
            bundled("symmetric"),
            &[("registration_id", "conf-device")],
            &["registration_id"],
        ),
        (
            bundled("dice"),
            &[],
            &["uds_hex", "mode", "registration_id"],
        ),
        (bundled("tpm_sim"), &[], &["instance"]),
        (
            profile_dir().join("libhsmkit_plugin_rust_x509.so"),
            &[],
            &["registration_id"],
        ),
        (
            bundled("c_example"),
            &[("registration_id", "c-device")],
            &["registration_id"],
        ),
    ];
    for (plugin, config, named) in cases {
        let r = settings_check(&plugin, config);
        assert_eq!(
            r.status,
            Status::Pass,
            "{}: {}",
            plugin.display(),
            r.message
        );
        assert!(
            r.message
                .contains("unknown setting `hsm_conformance_unknown_key`; valid settings: "),
            "{}: {}",
            plugin.display(),
            r.message
        );
        for name in named {
            assert!(
                r.message.contains(name),
                "{}: {}",
                plugin.display(),
                r.message
            );
        }
    }
}

#[test]
fn an_abi_1_0_plugin_is_held_to_the_rule_too() {
    // The fixture's create accepts whatever it is given, as many 1.0 plugins do: the rule was
    // already in the 1.0 header and only the plugin knows its keys, so it fails.
    let r = settings_check(Path::new(hsm_fixture_loader_c::ABI_1_0), &[]);
    assert_eq!(r.status, Status::Fail, "{}", r.message);
    assert!(r.message.contains("it returned HSM_OK"), "{}", r.message);
}

fn harness() -> Command {
    Command::new(env!("CARGO_BIN_EXE_hsm-conformance"))
}

#[test]
fn list_settings_prints_one_line_per_setting_then_state_dir() {
    let out = harness()
        .arg("--list-settings")
        .arg(bundled("pkcs11"))
        .output()
        .expect("run hsm-conformance");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    let names: Vec<&str> = lines
        .iter()
        .map(|l| l.split_whitespace().next().unwrap_or(""))
        .collect();
    assert_eq!(
        names,
        [
            "module",
            "token_uri",
            "pin_file",
            "pin_env",
            "key_uri",
            "cert_uri",
            "cert_file",
            "hmac_key_uri",
            "registration_id",
            "state_dir",
        ],
        "{stdout}"
    );
    assert!(
        lines[0].contains("required") && lines[0].contains("PKCS#11 library"),
        "{stdout}"
    );
    assert!(lines[2].contains("optional"), "{stdout}");

    // By name in a plugins folder, as for a run.
    let by_name = harness()
        .args(["--plugin-dir"])
        .arg(profile_dir())
        .args(["--list-settings", "tpm2"])
        .output()
        .expect("run hsm-conformance");
    let stdout = String::from_utf8_lossy(&by_name.stdout);
    assert_eq!(by_name.status.code(), Some(0), "{stdout}");
    assert!(stdout.starts_with("tcti "), "{stdout}");
}

#[test]
fn list_settings_of_an_abi_1_0_plugin_says_not_declared() {
    let out = harness()
        .args(["--list-settings", hsm_fixture_loader_c::ABI_1_0])
        .output()
        .expect("run hsm-conformance");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(stdout.starts_with("settings not declared"), "{stdout}");
}

#[test]
fn list_settings_of_a_plugin_that_does_not_load_is_an_error_not_a_crash() {
    // The entry panics: only the probe child sees it; the harness reports the refusal.
    let out = harness()
        .arg("--list-settings")
        .arg(built_library("hsm_fixture_panic_entry"))
        .output()
        .expect("run hsm-conformance");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("the plugin did not load"), "{stderr}");
}
