//! `hsmkit provision`, `hsmkit hub-token` and `hsmkit demo` as a user runs them, against the
//! DPS emulator over TLS.

mod support;

use dps_emulator::enroll_files::EnrollmentInfo;
use dps_emulator::{Emulator, EmulatorConfig};
use serde_json::Value;
use support::*;

fn hsmkit(args: &[&str]) -> (bool, String, String) {
    run_hsmkit(args)
}

/// A device with one plugin in its own plugins folder and state folder, enrolled in the
/// emulator from the files `hsmkit enroll-info --out` writes.
struct Device {
    _plugins: tempfile::TempDir,
    plugin_dir: String,
    state: String,
    plugin: &'static str,
    settings: Vec<String>,
    info: EnrollmentInfo,
}

impl Device {
    fn enroll(
        emulator: &dps_emulator::BackgroundEmulator,
        root: &std::path::Path,
        plugin_file: &str,
        plugin: &'static str,
        settings: &[&str],
    ) -> Device {
        let plugins = plugin_dir_with(&[&bundled_plugin(plugin_file)]);
        let plugin_dir = plugins.path().to_str().unwrap().to_string();
        let state = root.join("device").to_str().unwrap().to_string();
        let out = root.join("enroll");
        let settings: Vec<String> = settings.iter().map(|s| s.to_string()).collect();
        let info = enroll_info_into(
            emulator,
            &plugin_dir,
            &state,
            plugin,
            &out,
            &settings.iter().map(String::as_str).collect::<Vec<_>>(),
        );
        Device {
            _plugins: plugins,
            plugin_dir,
            state,
            plugin,
            settings,
            info,
        }
    }

    /// `hsmkit provision ... --json` against `emulator`.
    fn provision(&self, emulator: &dps_emulator::BackgroundEmulator) -> (bool, String, String) {
        let endpoint = emulator.endpoint();
        let ca = emulator.ca_cert_path().to_str().unwrap().to_string();
        let mut args = vec![
            "--plugin-dir",
            &self.plugin_dir,
            "--state-dir",
            &self.state,
            "provision",
            "--plugin",
            self.plugin,
            "--id-scope",
            emulator.id_scope(),
            "--endpoint",
            &endpoint,
            "--trust-ca",
            &ca,
            "--json",
        ];
        args.extend(self.settings.iter().map(String::as_str));
        hsmkit(&args)
    }
}

#[test]
fn provision_then_reuse_then_hub_token() {
    let root = tempfile::tempdir().unwrap();
    let emulator =
        Emulator::start_in_background(EmulatorConfig::new(root.path().join("emu"))).unwrap();
    let device = Device::enroll(&emulator, root.path(), "tpm_sim", "tpm-sim", &[]);
    let info = &device.info;
    let provision = || device.provision(&emulator);
    let (ok, stdout, stderr) = provision();
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains("TPM challenge"),
        "progress goes to stderr: {stderr}"
    );
    let v: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["status"], "assigned");
    assert_eq!(v["attestation"], "tpm");
    assert_eq!(v["reused"], false);
    assert_eq!(v["registrationId"], info.registration_id());
    let hub = v["assignedHub"].as_str().unwrap().to_string();

    let (ok, stdout, _) = provision();
    assert!(ok);
    let again: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        again["reused"], true,
        "a second run reuses the saved result"
    );
    assert_eq!(emulator.registration_records().unwrap().len(), 1);

    let (ok, stdout, stderr) = hsmkit(&[
        "--plugin-dir",
        &device.plugin_dir,
        "--state-dir",
        &device.state,
        "hub-token",
        "--ttl",
        "30m",
        "--json",
    ]);
    assert!(ok, "{stderr}");
    let t: Value = serde_json::from_str(&stdout).unwrap();
    let token = t["sasToken"].as_str().unwrap();
    assert!(token.starts_with("SharedAccessSignature sr="), "{token}");
    assert!(token.contains(&hub), "{token}");
    assert_eq!(t["expiresInSecs"], 1800);
    emulator.shutdown();
}

/// `provision --issue-certificate`: the chain DPS issues is recorded and stored in the plugin;
/// without a policy on the enrollment the command fails saying so.
#[test]
fn provision_with_issue_certificate_records_the_chain() {
    let root = tempfile::tempdir().unwrap();
    let emulator =
        Emulator::start_in_background(EmulatorConfig::new(root.path().join("emu"))).unwrap();
    let mut device = Device::enroll(&emulator, root.path(), "tpm_sim", "tpm-sim", &[]);
    let reg = device.info.registration_id().to_string();
    device.settings.push("--issue-certificate".into());
    let issue = |d: &Device| d.provision(&emulator);
    let (ok, stdout, _) = issue(&device);
    assert!(!ok, "no policy yet");
    // With --json the failure is the error object on stdout.
    let error: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(error["error"]["kind"], "dps-refused", "{error}");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("certificateIssuancePolicy"),
        "{error}"
    );

    let store = emulator.enrollments();
    let mut e = store.individual(&reg).unwrap().unwrap();
    e.common.certificate_issuance_policy =
        Some(dps_emulator::model::CertificateIssuancePolicy { validity_days: 30 });
    store.put_individual(e, None).unwrap();
    let (ok, stdout, stderr) = issue(&device);
    assert!(ok, "{stderr}");
    let v: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["status"], "assigned");
    let record: Value = serde_json::from_slice(
        &std::fs::read(std::path::Path::new(&device.state).join("provisioning.json")).unwrap(),
    )
    .unwrap();
    let chain = record["issuedCertificateChain"].as_array().unwrap();
    assert_eq!(chain.len(), 2, "{record}");
    emulator.shutdown();
}

#[test]
fn a_register_answered_with_200_assigned_needs_no_poll() {
    let root = tempfile::tempdir().unwrap();
    let mut config = EmulatorConfig::new(root.path().join("emu"));
    config.complete_registrations_immediately = true;
    let emulator = Emulator::start_in_background(config).unwrap();
    let device = Device::enroll(
        &emulator,
        root.path(),
        "symmetric",
        "symmetric",
        &["--set", "registration_id=immediate"],
    );
    let (ok, stdout, stderr) = device.provision(&emulator);
    assert!(ok, "{stderr}");
    let v: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["status"], "assigned");
    assert!(
        !stderr.contains("assigning") && !stderr.contains("waiting"),
        "{stderr}"
    );
    assert_eq!(emulator.registration_records().unwrap().len(), 1);
    emulator.shutdown();
}

#[test]
fn provision_errors_say_what_to_do() {
    let dir = plugin_dir_with(&[&bundled_plugin("symmetric")]);
    let d = dir.path().to_str().unwrap();
    let state = tempfile::tempdir().unwrap();
    let s = state.path().to_str().unwrap();
    // No id scope.
    let (ok, _, err) = hsmkit(&[
        "--plugin-dir",
        d,
        "--state-dir",
        s,
        "provision",
        "--plugin",
        "symmetric",
    ]);
    assert!(!ok);
    assert!(err.contains("--id-scope"), "{err}");
    // The plugin has no key yet: the plugin's own hint comes through, once.
    let (ok, _, err) = hsmkit(&[
        "--plugin-dir",
        d,
        "--state-dir",
        s,
        "provision",
        "--plugin",
        "symmetric",
        "--set",
        "registration_id=dev",
        "--id-scope",
        "0ne00000001",
        "--endpoint",
        "127.0.0.1:9",
    ]);
    assert!(!ok);
    assert_eq!(
        err.matches("no symmetric key imported yet").count(),
        1,
        "{err}"
    );
    let (ok, _, err) = hsmkit(&[
        "--plugin-dir",
        d,
        "--state-dir",
        s,
        "enroll-info",
        "--plugin",
        "symmetric",
        "--set",
        "registration_id=dev",
    ]);
    assert!(ok, "{err}");
    // Nothing listening.
    let (ok, _, err) = hsmkit(&[
        "--plugin-dir",
        d,
        "--state-dir",
        s,
        "provision",
        "--plugin",
        "symmetric",
        "--set",
        "registration_id=dev",
        "--id-scope",
        "0ne00000001",
        "--endpoint",
        "127.0.0.1:9",
        "--timeout",
        "3",
    ]);
    assert!(!ok);
    assert!(err.to_lowercase().contains("127.0.0.1:9"), "{err}");
    // Not provisioned yet.
    let (ok, _, err) = hsmkit(&["--plugin-dir", d, "--state-dir", s, "hub-token"]);
    assert!(!ok);
    assert!(err.contains("hsmkit provision"), "{err}");
    // Bad TTL.
    let (ok, _, err) = hsmkit(&[
        "--plugin-dir",
        d,
        "--state-dir",
        s,
        "hub-token",
        "--ttl",
        "soon",
    ]);
    assert!(!ok);
    assert!(err.contains("invalid duration"), "{err}");
}

#[test]
fn demo_provisions_every_software_plugin() {
    let dir = software_plugin_dir();
    let v = demo_json(dir.path(), &[]);
    let results = v["results"].as_array().unwrap();
    let mut plugins: Vec<&str> = results
        .iter()
        .map(|r| r["plugin"].as_str().unwrap())
        .collect();
    plugins.sort();
    assert_eq!(plugins, ["dice", "symmetric", "tpm-sim"]);
    for r in results {
        assert_eq!(r["status"], "assigned", "{r}");
        for key in [
            "attestation",
            "registrationId",
            "assignedHub",
            "deviceId",
            "millis",
        ] {
            assert!(!r[key].is_null(), "{key} missing in {r}");
        }
    }
    // A plugin that cannot be found makes the demo fail loudly, row by row.
    let (ok, stdout, _) = hsmkit(&[
        "--plugin-dir",
        dir.path().to_str().unwrap(),
        "demo",
        "--json",
        "--plugins",
        "symmetric,nope",
    ]);
    assert!(!ok);
    let v: Value = serde_json::from_str(&stdout).unwrap();
    let nope = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["plugin"] == "nope")
        .unwrap();
    assert!(
        nope["error"]
            .as_str()
            .unwrap()
            .contains("no plugin named `nope`"),
        "{nope}"
    );
}
