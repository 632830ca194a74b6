//! `hsmkit renew` and `hsmkit provision --renew-before` as a user runs them, against the DPS
//! emulator over TLS (tpm-sim): not due (nothing sent), renewed (--before, --force), what
//! `--json` prints, `hsmkit hub send` with the renewed certificate, `hub-token` pointing to
//! `hsmkit hub` for a device with an operational certificate, the errors, and `plugins info`'s
//! operational-key line.

mod support;

use dps_emulator::{Emulator, EmulatorConfig};
use serde_json::Value;
use support::*;

#[test]
fn renew_says_when_it_is_not_due_and_renews_when_asked() {
    let root = tempfile::tempdir().unwrap();
    let mut config = EmulatorConfig::new(root.path().join("emu"));
    config.mqtt_listen = Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
    let emulator = Emulator::start_in_background(config).unwrap();
    let plugins = plugin_dir_with(&[&bundled_plugin("tpm_sim")]);
    let plugin_dir = plugins.path().to_str().unwrap().to_string();
    let state = root.path().join("device").to_str().unwrap().to_string();
    let info = enroll_info_into(
        &emulator,
        &plugin_dir,
        &state,
        "tpm-sim",
        &root.path().join("enroll"),
        &[],
    );
    let store = emulator.enrollments();
    let mut e = store.individual(info.registration_id()).unwrap().unwrap();
    e.common.certificate_issuance_policy =
        Some(dps_emulator::model::CertificateIssuancePolicy { validity_days: 30 });
    store.put_individual(e, None).unwrap();
    let endpoint = emulator.endpoint();
    let ca = emulator.ca_cert_path().to_str().unwrap().to_string();
    let run = |args: &[&str]| {
        let mut all = vec!["--plugin-dir", &plugin_dir, "--state-dir", &state];
        all.extend_from_slice(args);
        run_hsmkit(&all)
    };
    let provision = |extra: &[&str]| {
        let mut args = vec![
            "provision",
            "--plugin",
            "tpm-sim",
            "--id-scope",
            emulator.id_scope(),
            "--endpoint",
            &endpoint,
            "--trust-ca",
            &ca,
        ];
        args.extend_from_slice(extra);
        run(&args)
    };
    let json = |stdout: &str| -> Value {
        serde_json::from_str(stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
    };

    // Not provisioned yet.
    let (ok, stdout, stderr) = run(&["renew", "--trust-ca", &ca]);
    assert!(!ok);
    assert!(
        format!("{stdout}{stderr}").contains("not provisioned yet"),
        "{stdout}{stderr}"
    );

    let (ok, stdout, stderr) = provision(&["--issue-certificate", "--json"]);
    assert!(ok, "{stderr}");
    assert_eq!(json(&stdout)["status"], "assigned");
    let records = || emulator.registration_records().unwrap();
    let before = records();

    // Just issued, 30 days: not due by the 80% rule, nor within 7 days; nothing sent.
    let (ok, stdout, stderr) = run(&["renew", "--trust-ca", &ca, "--json"]);
    assert!(ok, "{stderr}");
    let v = json(&stdout);
    assert_eq!(v["status"], "notDue", "{v}");
    assert_eq!(v["operationalKeyLabel"], "hsmkit-operational", "{v}");
    assert!(v["notAfter"].as_str().unwrap().ends_with('Z'), "{v}");
    assert_eq!(v["registrationId"], info.registration_id(), "{v}");
    let (ok, stdout, stderr) = provision(&["--renew-before", "7"]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("Not due"), "{stdout}");
    assert!(stdout.contains("nothing sent to DPS"), "{stdout}");
    assert_eq!(records(), before, "DPS was asked");

    // Expiring within 40 days: renewed, the old key removed.
    let (ok, stdout, stderr) = run(&["renew", "--before", "40", "--trust-ca", &ca, "--json"]);
    assert!(ok, "{stderr}");
    let v = json(&stdout);
    assert_eq!(v["status"], "renewed", "{v}");
    assert_eq!(v["operationalKeyLabel"], "hsmkit-operational.2", "{v}");
    assert_eq!(v["previousKeyLabel"], "hsmkit-operational", "{v}");
    assert_eq!(v["previousKeyRemoved"], true, "{v}");
    assert!(v.get("warning").is_none(), "{v}");
    assert!(
        stderr.contains("registering"),
        "progress on stderr: {stderr}"
    );
    assert_ne!(records(), before);

    // --force, in words.
    let (ok, stdout, stderr) = run(&["renew", "--force", "--trust-ca", &ca]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("Renewed:"), "{stdout}");
    assert!(
        stdout.contains("key under hsmkit-operational.3"),
        "{stdout}"
    );
    assert!(
        stdout.contains("Previous key:    hsmkit-operational.2, removed"),
        "{stdout}"
    );
    // provision (the record reused) names the current key.
    let (ok, stdout, stderr) = provision(&[]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("stored in the plugin under hsmkit-operational.3"),
        "{stdout}"
    );

    // hsmkit hub connects with the renewed certificate (mutual TLS, no SAS token).
    let hub_endpoint = format!("127.0.0.1:{}", emulator.mqtt_addr().unwrap().port());
    let (ok, stdout, stderr) = run(&[
        "hub",
        "send",
        "--hub-endpoint",
        &hub_endpoint,
        "--trust-ca",
        &ca,
        "after renewing",
    ]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("acknowledged"), "{stdout}");
    let bodies: Vec<Vec<u8>> = emulator
        .hub_registry()
        .messages(info.registration_id(), None)
        .unwrap()
        .into_iter()
        .map(|m| m.body)
        .collect();
    assert_eq!(bodies, [b"after renewing".to_vec()]);

    // No SAS token for a device that uses its operational certificate.
    let (ok, stdout, stderr) = run(&["hub-token"]);
    assert!(!ok);
    let text = format!("{stdout}{stderr}");
    assert!(text.contains("operational certificate"), "{text}");
    assert!(text.contains("hsmkit hub send"), "{text}");

    // --force and --before contradict each other; --before 0 is no number of days.
    let (ok, _, stderr) = run(&["renew", "--force", "--before", "3"]);
    assert!(!ok);
    assert!(stderr.contains("cannot be used with"), "{stderr}");
    let (ok, _, stderr) = run(&["renew", "--before", "0"]);
    assert!(!ok);
    assert!(stderr.contains("--before"), "{stderr}");
    emulator.shutdown();
}

/// `plugins info` says whether a plugin can hold an operational key (ABI 1.2), in words and
/// in `--json`.
#[test]
fn plugins_info_shows_the_operational_key_interface() {
    let plugins = plugin_dir_with(&[
        &bundled_plugin("symmetric"),
        std::path::Path::new(hsm_fixture_loader_c::ABI_1_0),
    ]);
    let dir = plugins.path().to_str().unwrap();
    let (ok, stdout, stderr) = run_hsmkit(&["--plugin-dir", dir, "plugins", "info", "symmetric"]);
    assert!(ok, "{stderr}");
    let line = stdout
        .lines()
        .find(|l| l.starts_with("op. key:"))
        .unwrap_or_else(|| panic!("no op. key line: {stdout}"));
    assert!(line.contains("yes (ABI 1.2"), "{line}");
    let (ok, stdout, stderr) = run_hsmkit(&[
        "--plugin-dir",
        dir,
        "plugins",
        "info",
        "symmetric",
        "--json",
    ]);
    assert!(ok, "{stderr}");
    let v: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["operationalKey"], true, "{v}");

    let old = std::path::Path::new(hsm_fixture_loader_c::ABI_1_0);
    let (ok, stdout, stderr) = run_hsmkit(&[
        "--plugin-dir",
        dir,
        "plugins",
        "info",
        old.to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("op. key:") && l.contains("no (no ABI 1.2")),
        "{stdout}"
    );
}
