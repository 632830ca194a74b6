//! `hsmkit provision --transport mqtt|mqtt-ws` and `hsmkit demo --transport mqtt|mqtt-ws` as a
//! user runs them, against the DPS emulator's MQTT listeners (on TLS, over a WebSocket).

mod support;

use dps_emulator::{BackgroundEmulator, Emulator, EmulatorConfig};
use serde_json::Value;
use std::net::SocketAddr;
use support::*;

fn mqtt_emulator(root: &std::path::Path) -> BackgroundEmulator {
    let mut config = EmulatorConfig::new(root.join("emu"));
    config.mqtt_listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    config.mqtt_ws_listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    Emulator::start_in_background(config).unwrap()
}

/// `enroll-info --out` for `plugin`, enrolled in the emulator; returns the plugins folder,
/// the state folder and the registration id.
fn enroll(
    emulator: &BackgroundEmulator,
    root: &std::path::Path,
    plugin_file: &str,
    plugin: &str,
) -> (tempfile::TempDir, String, String) {
    let plugins = plugin_dir_with(&[&bundled_plugin(plugin_file)]);
    let state = root.join(format!("device-{plugin}"));
    let out = root.join(format!("enroll-{plugin}"));
    let info = enroll_info_into(
        emulator,
        plugins.path().to_str().unwrap(),
        state.to_str().unwrap(),
        plugin,
        &out,
        &[],
    );
    let reg = info.registration_id().to_string();
    (plugins, state.to_str().unwrap().to_string(), reg)
}

fn provision(
    emulator: &BackgroundEmulator,
    plugins: &tempfile::TempDir,
    state: &str,
    plugin: &str,
    transport: &str,
) -> (bool, String, String) {
    let endpoint = match transport {
        "mqtt-ws" => format!(
            "wss://127.0.0.1:{}",
            emulator.mqtt_ws_addr().unwrap().port()
        ),
        _ => format!("127.0.0.1:{}", emulator.mqtt_addr().unwrap().port()),
    };
    run_hsmkit(&[
        "--plugin-dir",
        plugins.path().to_str().unwrap(),
        "--state-dir",
        state,
        "provision",
        "--plugin",
        plugin,
        "--id-scope",
        emulator.id_scope(),
        "--endpoint",
        &endpoint,
        "--trust-ca",
        emulator.ca_cert_path().to_str().unwrap(),
        "--transport",
        transport,
        "--json",
    ])
}

/// The message of the `{"error": {...}}` object a `--json` failure prints on stdout.
fn json_error_message(stdout: &str) -> String {
    let v: Value = serde_json::from_str(stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    v["error"]["message"]
        .as_str()
        .unwrap_or_else(|| panic!("no error message: {v}"))
        .to_string()
}

#[test]
fn provision_over_mqtt_and_what_mqtt_refuses() {
    let root = tempfile::tempdir().unwrap();
    let emulator = mqtt_emulator(root.path());

    let (plugins, state, reg) = enroll(&emulator, root.path(), "dice", "dice");
    let (ok, stdout, stderr) = provision(&emulator, &plugins, &state, "dice", "mqtt");
    assert!(ok, "{stderr}");
    let v: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["status"], "assigned");
    assert_eq!(v["attestation"], "x509");
    assert_eq!(v["registrationId"], reg.as_str());
    assert_eq!(v["reused"], false);
    assert_eq!(emulator.registration_records().unwrap().len(), 1);

    // TPM over MQTT: refused with the reason, nothing sent.
    let (plugins, state, _) = enroll(&emulator, root.path(), "tpm_sim", "tpm-sim");
    let (ok, stdout, _) = provision(&emulator, &plugins, &state, "tpm-sim", "mqtt");
    // With --json the failure is the error object on stdout.
    let stderr = json_error_message(&stdout);
    assert!(!ok);
    assert!(
        stderr.contains("TPM attestation is not available over mqtt"),
        "{stderr}"
    );
    assert!(stderr.contains("--transport https"), "{stderr}");
    assert_eq!(emulator.registration_records().unwrap().len(), 1);

    // `transport` in the config file's [provisioning] section is used the same way.
    let config = root.path().join("hsmkit.toml");
    std::fs::write(
        &config,
        format!(
            "[provisioning]\ntransport = \"mqtt\"\nid_scope = \"{}\"\nendpoint = \"127.0.0.1:{}\"\ntrust_ca = \"{}\"\n",
            emulator.id_scope(),
            emulator.mqtt_addr().unwrap().port(),
            emulator.ca_cert_path().display()
        ),
    )
    .unwrap();
    let (ok, _, stderr) = run_hsmkit(&[
        "--config",
        config.to_str().unwrap(),
        "--plugin-dir",
        plugins.path().to_str().unwrap(),
        "--state-dir",
        &state,
        "provision",
        "--plugin",
        "tpm-sim",
    ]);
    assert!(!ok);
    assert!(
        stderr.contains("TPM attestation is not available over mqtt"),
        "{stderr}"
    );

    // Unknown transports: refused with what to use.
    let (ok, stdout, _) = provision(&emulator, &plugins, &state, "tpm-sim", "amqp");
    // With --json the failure is the error object on stdout.
    let stderr = json_error_message(&stdout);
    assert!(!ok);
    assert!(
        stderr.contains("unknown transport `amqp`; use https, mqtt or mqtt-ws"),
        "{stderr}"
    );
    emulator.shutdown();
}

#[test]
fn provision_over_mqtt_ws_and_what_it_refuses() {
    let root = tempfile::tempdir().unwrap();
    let emulator = mqtt_emulator(root.path());
    let (plugins, state, reg) = enroll(&emulator, root.path(), "dice", "dice");
    let (ok, stdout, stderr) = provision(&emulator, &plugins, &state, "dice", "mqtt-ws");
    assert!(ok, "{stderr}");
    let v: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["status"], "assigned", "{v}");
    assert_eq!(v["attestation"], "x509", "{v}");
    assert_eq!(v["registrationId"], reg.as_str());
    assert_eq!(emulator.registration_records().unwrap().len(), 1);

    // TPM over MQTT over WebSocket: refused with the reason, nothing sent.
    let (plugins, state, _) = enroll(&emulator, root.path(), "tpm_sim", "tpm-sim");
    let (ok, stdout, _) = provision(&emulator, &plugins, &state, "tpm-sim", "mqtt-ws");
    // With --json the failure is the error object on stdout.
    let stderr = json_error_message(&stdout);
    assert!(!ok);
    assert!(
        stderr.contains("TPM attestation is not available over mqtt-ws"),
        "{stderr}"
    );
    assert_eq!(emulator.registration_records().unwrap().len(), 1);
    emulator.shutdown();
}

#[test]
fn demo_over_mqtt_provisions_every_software_plugin_mqtt_allows() {
    for transport in ["mqtt", "mqtt-ws"] {
        demo_over(transport);
    }
}

/// `hsmkit demo --transport TRANSPORT`: dice and symmetric assigned, tpm-sim skipped with the
/// reason.
fn demo_over(transport: &str) {
    let dir = software_plugin_dir();
    let v = demo_json(dir.path(), &["--transport", transport]);
    assert_eq!(v["transport"], transport);
    let results = v["results"].as_array().unwrap();
    let row = |name: &str| {
        results
            .iter()
            .find(|r| r["plugin"] == name)
            .unwrap_or_else(|| panic!("no row for {name}: {v}"))
    };
    for name in ["dice", "symmetric"] {
        let r = row(name);
        assert_eq!(r["status"], "assigned", "{r}");
        assert!(r.get("error").is_none(), "{r}");
    }
    let tpm = row("tpm-sim");
    assert!(tpm.get("status").is_none(), "{tpm}");
    assert!(
        tpm["skipped"]
            .as_str()
            .unwrap()
            .contains("TPM attestation over HTTPS only"),
        "{tpm}"
    );
}
