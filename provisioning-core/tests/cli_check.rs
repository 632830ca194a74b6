//! `hsmkit check [--json]` against the DPS emulator: each finding with its status and, unless
//! ok, a fix hint; exit 1 when any check failed.

mod support;

use dps_emulator::{BackgroundEmulator, Emulator, EmulatorConfig};
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use support::*;

struct Setup {
    _plugins: tempfile::TempDir,
    plugin_dir: String,
    dir: tempfile::TempDir,
    state: PathBuf,
    config: PathBuf,
}

impl Setup {
    fn new() -> Setup {
        let plugins = plugin_dir_with(&[&bundled_plugin("symmetric")]);
        let dir = tempfile::tempdir().unwrap();
        Setup {
            plugin_dir: plugins.path().to_str().unwrap().to_string(),
            _plugins: plugins,
            state: dir.path().join("state"),
            config: dir.path().join("config.toml"),
            dir,
        }
    }

    /// A config for the symmetric plugin at `emulator`, trusting its CA when `trust`, plus `extra`
    /// lines in `[provisioning]`.
    fn write_config(&self, emulator: &BackgroundEmulator, trust: bool, extra: &str) {
        let ca = emulator.ca_cert_path().display().to_string();
        let trust_line = if trust {
            format!("trust_ca = \"{ca}\"\n")
        } else {
            String::new()
        };
        std::fs::write(
            &self.config,
            format!(
                "plugin = \"symmetric\"\n[provisioning]\nattestation = \"symmetricKey\"\nid_scope = \"{}\"\nendpoint = \"{}\"\n{trust_line}{extra}[plugins.symmetric]\nregistration_id = \"check-device\"\n",
                emulator.id_scope(),
                emulator.endpoint()
            ),
        )
        .unwrap();
    }

    fn run(&self, args: &[&str]) -> (bool, String, String) {
        let mut all = vec![
            "--config",
            self.config.to_str().unwrap(),
            "--plugin-dir",
            &self.plugin_dir,
            "--state-dir",
            self.state.to_str().unwrap(),
        ];
        all.extend_from_slice(args);
        run_hsmkit(&all)
    }

    /// `hsmkit check --json`: (exit status success, the findings by id).
    fn check(&self) -> (bool, Value) {
        let (ok, stdout, stderr) = self.run(&["check", "--json"]);
        let v: Value =
            serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout} {stderr}"));
        (ok, v)
    }
}

fn finding<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["id"] == id)
        .unwrap_or_else(|| panic!("no finding `{id}` in {report}"))
}

fn assert_status(report: &Value, id: &str, status: &str, hint_has: &str) {
    let f = finding(report, id);
    assert_eq!(f["status"], status, "{id}: {f}");
    if status == "ok" {
        assert!(f.get("hint").is_none(), "{f}");
    } else {
        assert!(f["hint"].as_str().unwrap().contains(hint_has), "{id}: {f}");
    }
}

fn emulator(root: &Path) -> BackgroundEmulator {
    Emulator::start_in_background(EmulatorConfig::new(root.join("emu"))).unwrap()
}

#[test]
fn a_device_goes_from_failing_checks_to_all_ok_after_enroll_and_provision() {
    let s = Setup::new();
    let emu = emulator(s.dir.path());
    s.write_config(&emu, true, "");

    // Nothing enrolled yet: no key, no record; the rest is fine.
    let (ok, r) = s.check();
    assert!(!ok, "{r}");
    assert_status(&r, "config", "ok", "");
    assert!(
        finding(&r, "config")["message"]
            .as_str()
            .unwrap()
            .contains("--config"),
        "{r}"
    );
    assert_status(&r, "clock", "ok", "");
    assert_status(&r, "plugin-load", "ok", "");
    assert_status(&r, "plugin-instance", "ok", "");
    assert_status(&r, "identity", "fail", "enroll-info");
    assert_status(&r, "dps-config", "ok", "");
    assert_status(&r, "dps-tls", "ok", "");
    assert_status(&r, "record", "warn", "hsmkit provision");
    assert!(r["failed"].as_u64().unwrap() >= 1, "{r}");

    // Enroll (the key is generated and imported), register, provision.
    let out = s.dir.path().join("enroll");
    let (ok, _, stderr) = s.run(&["enroll-info", "--out", out.to_str().unwrap()]);
    assert!(ok, "{stderr}");
    let info = dps_emulator::enroll_files::EnrollmentInfo::read_dir(&out).unwrap();
    use dps_emulator::enroll_files::EnrollmentInfoExt;
    emu.enrollments()
        .create_individual(info.individual())
        .unwrap();
    let (ok, _, stderr) = s.run(&["provision"]);
    assert!(ok, "{stderr}");

    let (ok, r) = s.check();
    assert!(ok, "{r}");
    assert_eq!(r["failed"], 0, "{r}");
    for id in [
        "config",
        "clock",
        "state-dir",
        "plugin-load",
        "plugin-instance",
        "identity",
        "dps-config",
        "dps-tls",
        "record",
    ] {
        assert_status(&r, id, "ok", "");
    }
    assert!(
        finding(&r, "record")["message"]
            .as_str()
            .unwrap()
            .contains("matching the current identity"),
        "{r}"
    );

    // The text form says the same, a line per finding.
    let (ok, stdout, _) = s.run(&["check"]);
    assert!(
        ok && stdout.contains("[ok  ] record:") && stdout.contains("0 failed"),
        "{stdout}"
    );

    // Another registration id configured: the record no longer matches.
    s.write_config(&emu, true, "registration_id = \"someone-else\"\n");
    let (ok, r) = s.check();
    assert!(!ok);
    assert_status(&r, "record", "fail", "provision --force");
    assert!(
        finding(&r, "record")["message"]
            .as_str()
            .unwrap()
            .contains("someone-else"),
        "{r}"
    );

    // Without the emulator's CA the handshake fails, naming trust_ca.
    s.write_config(&emu, false, "");
    let (ok, r) = s.check();
    assert!(!ok);
    assert_status(&r, "dps-tls", "fail", "trust_ca");

    // A state folder others can write: refused, with the chmod to run.
    std::fs::set_permissions(&s.state, std::fs::Permissions::from_mode(0o777)).unwrap();
    s.write_config(&emu, true, "");
    let (ok, r) = s.check();
    assert!(!ok);
    assert_status(&r, "state-dir", "fail", "chmod 0700");
    assert_status(&r, "plugin-instance", "fail", "state-dir");
    std::fs::set_permissions(&s.state, std::fs::Permissions::from_mode(0o700)).unwrap();
}

#[test]
fn nothing_listens_and_the_config_is_bad() {
    let s = Setup::new();
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::fs::write(
        &s.config,
        format!("plugin = \"symmetric\"\n[provisioning]\nid_scope = \"0ne1\"\nendpoint = \"localhost:{port}\"\n"),
    )
    .unwrap();
    let (ok, r) = s.check();
    assert!(!ok);
    assert_status(&r, "dps-tls", "fail", &format!("port {port}"));

    // A config that does not parse: one failing finding naming the key, exit 1.
    std::fs::write(&s.config, "plugn = \"symmetric\"\n").unwrap();
    let (ok, r) = s.check();
    assert!(!ok);
    assert_status(&r, "config", "fail", "hsmkit config new");
    assert!(
        finding(&r, "config")["message"]
            .as_str()
            .unwrap()
            .contains("plugn"),
        "{r}"
    );
    assert_eq!(r["checks"].as_array().unwrap().len(), 1, "{r}");
}
