//! `hsmkit hub send|twin|listen` as a user runs them (issue 20), for each software plugin:
//! `enroll-info`, the enrollment (with an initialTwin) in the emulator, `provision` over HTTPS,
//! then the device on its assigned, emulated hub through the emulator's MQTT listener, TLS
//! verifying the hub's name. The emulator's store is the witness; the refusals are checked for
//! the message a person acts on.

mod support;

use dps_emulator::enroll_files::{EnrollmentInfo, EnrollmentInfoExt};
use dps_emulator::hub::DeviceStatus;
use dps_emulator::{BackgroundEmulator, Emulator, EmulatorConfig};
use serde_json::{json, Value};
use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use support::*;

fn hub_emulator(root: &std::path::Path) -> BackgroundEmulator {
    let mut config = EmulatorConfig::new(root.join("emu"));
    config.mqtt_listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    Emulator::start_in_background(config).expect("emulator starts")
}

/// One enrolled, provisioned device and how to run hsmkit as it.
struct Device<'a> {
    emulator: &'a BackgroundEmulator,
    plugins: tempfile::TempDir,
    state: String,
    device_id: String,
}

impl Device<'_> {
    /// `hsmkit --plugin-dir .. --state-dir .. hub <sub> <args> --hub-endpoint .. --trust-ca ..`.
    fn hub_args(&self, sub: &str, args: &[&str]) -> Vec<String> {
        let mut v: Vec<String> = [
            "--plugin-dir",
            self.plugins.path().to_str().unwrap(),
            "--state-dir",
            &self.state,
            "hub",
            sub,
            "--hub-endpoint",
            &format!("127.0.0.1:{}", self.emulator.mqtt_addr().unwrap().port()),
            "--trust-ca",
            self.emulator.ca_cert_path().to_str().unwrap(),
            "--timeout",
            "20",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        v.extend(args.iter().map(|s| s.to_string()));
        v
    }

    fn hub(&self, sub: &str, args: &[&str]) -> (bool, String, String) {
        run_hsmkit(&self.hub_args(sub, args))
    }

    /// Like [`Device::hub`], with `input` on standard input.
    fn hub_with_stdin(&self, sub: &str, args: &[&str], input: &[u8]) -> (bool, String, String) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_hsmkit"))
            .args(self.hub_args(sub, args))
            .env_remove("HSMKIT_CONFIG")
            .env_remove("HSMKIT_PLUGIN_DIR")
            .env_remove("HSMKIT_STATE_DIR")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run hsmkit");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input)
            .expect("write stdin");
        let out = child.wait_with_output().expect("hsmkit ends");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

/// `enroll-info --out` for `plugin`, enrolled with an initialTwin, then `provision` over HTTPS.
fn provisioned<'a>(
    emulator: &'a BackgroundEmulator,
    root: &std::path::Path,
    plugin_file: &str,
    plugin: &str,
    enroll_extra: &[&str],
) -> Device<'a> {
    let plugins = plugin_dir_with(&[&bundled_plugin(plugin_file)]);
    let state = root.join(format!("device-{plugin}"));
    let out = root.join(format!("enroll-{plugin}"));
    let mut args = vec![
        "--plugin-dir",
        plugins.path().to_str().unwrap(),
        "--state-dir",
        state.to_str().unwrap(),
        "enroll-info",
        "--plugin",
        plugin,
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(enroll_extra);
    let (ok, _, err) = run_hsmkit(&args);
    assert!(ok, "{err}");
    let info = EnrollmentInfo::read_dir(&out).expect("the enrollment files");
    let mut enrollment = info.individual();
    enrollment.common.initial_twin =
        Some(json!({"tags": {"site": "lab"}, "properties": {"desired": {"interval": 5}}}));
    emulator
        .enrollments()
        .create_individual(enrollment)
        .expect("enrollment stored");
    let (ok, stdout, err) = run_hsmkit(&[
        "--plugin-dir",
        plugins.path().to_str().unwrap(),
        "--state-dir",
        state.to_str().unwrap(),
        "provision",
        "--plugin",
        plugin,
        "--id-scope",
        emulator.id_scope(),
        "--endpoint",
        &emulator.endpoint(),
        "--trust-ca",
        emulator.ca_cert_path().to_str().unwrap(),
        "--json",
    ]);
    assert!(ok, "{err}");
    let v: Value = serde_json::from_str(&stdout).unwrap();
    Device {
        emulator,
        plugins,
        state: state.to_str().unwrap().to_string(),
        device_id: v["deviceId"].as_str().unwrap().to_string(),
    }
}

/// Send (argument and stdin), twin get and report, listen for a C2D message.
fn hub_walkthrough(plugin_file: &str, plugin: &str, enroll_extra: &[&str]) {
    let root = tempfile::tempdir().unwrap();
    let emulator = hub_emulator(root.path());
    let d = provisioned(&emulator, root.path(), plugin_file, plugin, enroll_extra);
    let registry = emulator.hub_registry();

    let (ok, stdout, err) = d.hub(
        "send",
        &[
            "--property",
            "unit=C",
            "--property",
            "$.ct=application/json",
            "--json",
            r#"{"t": 21.5}"#,
        ],
    );
    assert!(ok, "{plugin}: {err}");
    let v: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["acknowledged"], true);
    assert_eq!(v["deviceId"], d.device_id.as_str());
    let (ok, stdout, err) = d.hub_with_stdin("send", &["-"], b"from stdin\n");
    assert!(ok, "{plugin}: {err}");
    assert!(stdout.contains("acknowledged"), "{stdout}");
    let stored = registry.messages(&d.device_id, None).unwrap();
    assert_eq!(stored.len(), 2, "{plugin}: {stored:?}");
    assert_eq!(stored[0].body, br#"{"t": 21.5}"#);
    assert_eq!(
        stored[0].properties,
        [
            ("unit".to_string(), "C".to_string()),
            ("$.ct".to_string(), "application/json".to_string())
        ]
    );
    assert_eq!(stored[1].body, b"from stdin\n");

    // The twin: the enrollment's initialTwin desired properties; a reported patch is stored.
    let (ok, stdout, err) = d.hub("twin", &["--get", "--json"]);
    assert!(ok, "{plugin}: {err}");
    let twin: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(twin["desired"]["interval"], 5, "{twin}");
    let (ok, stdout, err) = d.hub("twin", &["--report", r#"{"fw": "2.0"}"#, "--json"]);
    assert!(ok, "{plugin}: {err}");
    let v: Value = serde_json::from_str(&stdout).unwrap();
    let version = v["reportedVersion"].as_u64().expect("a version");
    let twin = registry.device(&d.device_id, None).unwrap().twin();
    assert_eq!(twin.reported.get("fw"), Some(&json!("2.0")));
    assert_eq!(twin.reported_version(), Some(version));

    // A C2D message waiting in the hub reaches `listen`, which stops after --count.
    registry
        .send_c2d(
            &d.device_id,
            None,
            &[("cmd".to_string(), "blink".to_string())],
            b"twice",
        )
        .unwrap();
    let (ok, stdout, err) = d.hub("listen", &["--count", "1", "--json"]);
    assert!(ok, "{plugin}: {err}");
    let line: Value = serde_json::from_str(stdout.trim()).expect("one JSON line");
    assert_eq!(line["type"], "message");
    assert_eq!(line["body"], "twice");
    assert_eq!(line["properties"]["cmd"], "blink");
    // Acknowledged before listen disconnected: the hub no longer holds it (it records the
    // PUBACK on its own time, so allow it a moment).
    let pending = || registry.pending_c2d(&d.device_id, None).unwrap();
    for _ in 0..50 {
        if pending().is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(
        pending().is_empty(),
        "{plugin}: still pending: {:?}",
        pending()
    );
}

#[test]
fn symmetric_device_sends_twins_and_listens() {
    hub_walkthrough(
        "symmetric",
        "symmetric",
        &["--set", "registration_id=cli-hub-sym"],
    );
}

#[test]
fn dice_device_sends_twins_and_listens() {
    hub_walkthrough("dice", "dice", &[]);
}

#[test]
fn tpm_sim_device_sends_twins_and_listens() {
    hub_walkthrough("tpm_sim", "tpm-sim", &[]);
}

#[test]
fn hub_commands_say_what_is_wrong() {
    let root = tempfile::tempdir().unwrap();
    let emulator = hub_emulator(root.path());

    // Not provisioned.
    let empty = root.path().join("empty");
    let (ok, _, err) = run_hsmkit(&["--state-dir", empty.to_str().unwrap(), "hub", "send", "x"]);
    assert!(!ok);
    assert!(err.contains("run `hsmkit provision` first"), "{err}");

    let d = provisioned(
        &emulator,
        root.path(),
        "symmetric",
        "symmetric",
        &["--set", "registration_id=cli-hub-refused"],
    );
    // The server is not trusted without the emulator's CA: the verified name is the hub's.
    let mut args = d.hub_args("send", &["x"]);
    let at = args.iter().position(|a| a == "--trust-ca").unwrap();
    args.drain(at..at + 2);
    let (ok, _, err) = run_hsmkit(&args);
    assert!(!ok);
    let hub = &registry_hub(&emulator, &d.device_id);
    assert!(
        err.contains(&format!("verifying the server as `{hub}`")),
        "{err}"
    );

    // Disabled in the hub after provisioning.
    emulator
        .hub_registry()
        .set_status(&d.device_id, None, DeviceStatus::Disabled)
        .unwrap();
    let (ok, _, err) = d.hub("send", &["x"]);
    assert!(!ok);
    assert!(err.contains("CONNACK: not authorized"), "{err}");
    assert!(err.contains("disabled"), "{err}");
    assert!(
        !err.contains("SharedAccessSignature"),
        "a token in the error: {err}"
    );

    let (ok, _, err) = d.hub("twin", &["--report", "[1]"]);
    assert!(!ok);
    assert!(err.contains("JSON object"), "{err}");
}

fn registry_hub(emulator: &BackgroundEmulator, device_id: &str) -> String {
    emulator.hub_registry().device(device_id, None).unwrap().hub
}

#[test]
fn hub_send_over_a_websocket() {
    let root = tempfile::tempdir().unwrap();
    let mut config = EmulatorConfig::new(root.path().join("emu"));
    config.mqtt_listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    config.mqtt_ws_listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    let emulator = Emulator::start_in_background(config).expect("emulator starts");
    let d = provisioned(
        &emulator,
        root.path(),
        "symmetric",
        "symmetric",
        &["--set", "registration_id=cli-hub-ws"],
    );
    let mut args = d.hub_args("send", &["--websocket", "over a websocket"]);
    let at = args.iter().position(|a| a == "--hub-endpoint").unwrap();
    args[at + 1] = format!(
        "wss://127.0.0.1:{}",
        emulator.mqtt_ws_addr().unwrap().port()
    );
    let (ok, _, err) = run_hsmkit(&args);
    assert!(ok, "{err}");
    let stored = emulator
        .hub_registry()
        .messages(&d.device_id, None)
        .unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].body, b"over a websocket");
}

#[test]
fn listen_prints_desired_changes_and_stops_cleanly_on_ctrl_c() {
    let root = tempfile::tempdir().unwrap();
    let emulator = hub_emulator(root.path());
    let d = provisioned(
        &emulator,
        root.path(),
        "symmetric",
        "symmetric",
        &["--set", "registration_id=cli-hub-ctrl-c"],
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_hsmkit"))
        .args(d.hub_args("listen", &["--json"]))
        .env_remove("HSMKIT_CONFIG")
        .env_remove("HSMKIT_PLUGIN_DIR")
        .env_remove("HSMKIT_STATE_DIR")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run hsmkit");
    // Wait until it listens (its stderr says so), then interrupt it as Ctrl-C does.
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    while !seen.contains("listening for C2D") {
        let mut line = String::new();
        let n = std::io::BufRead::read_line(&mut stderr, &mut line).unwrap();
        assert!(n > 0, "hsmkit ended before listening: {seen}");
        seen.push_str(&line);
    }
    // A desired change while it listens: one JSON line.
    emulator
        .hub_registry()
        .update_desired(&d.device_id, None, json!({"interval": 7}))
        .unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
    let v: Value = serde_json::from_str(line.trim()).expect("a JSON line");
    assert_eq!(v["type"], "desired", "{v}");
    assert_eq!(v["patch"]["interval"], 7, "{v}");
    assert!(v["version"].as_u64().is_some(), "{v}");
    let pid = i32::try_from(child.id()).unwrap();
    // SAFETY: kill(2) on our own child's pid, which has not been waited for yet.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0);
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "listen did not stop on SIGINT"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
}

#[test]
fn demo_devices_send_a_message_and_read_their_initial_twin() {
    // Needs hsmkit built with `demo` (the README test command turns it on).
    let dir = software_plugin_dir();
    let v = demo_json(dir.path(), &[]);
    let rows = v["results"].as_array().expect("results");
    assert_eq!(rows.len(), 3, "{v}");
    for row in rows {
        assert_eq!(row["hub"]["messageAcknowledged"], true, "{row}");
        assert_eq!(
            row["hub"]["desired"],
            json!({"telemetryInterval": 30}),
            "{row}"
        );
    }
}
