//! What the official-SDK interop tests share: the emulator on the fixed ports the SDKs connect
//! to, and running an SDK script that prints its result as JSON.

use dps_emulator::{Emulator, EmulatorConfig, RunningEmulator};
use serde_json::Value;
use std::path::Path;
use std::process::Command;

/// An emulator with its MQTT listener on 127.0.0.1:8883, where the SDKs connect.
pub async fn start_on_8883(dir: &Path) -> RunningEmulator {
    start_at(dir, |c| {
        c.mqtt_listen = Some("127.0.0.1:8883".parse().unwrap())
    })
    .await
}

/// An emulator with its MQTT over WebSocket listener on 127.0.0.1:443, where the Python SDK
/// connects with `websockets=True`.
pub async fn start_on_443(dir: &Path) -> RunningEmulator {
    start_at(dir, |c| {
        c.mqtt_ws_listen = Some("127.0.0.1:443".parse().unwrap())
    })
    .await
}

/// An emulator with two hubs and the listener `listen` sets, on the port the SDK connects to.
async fn start_at(dir: &Path, listen: impl FnOnce(&mut EmulatorConfig)) -> RunningEmulator {
    let mut cfg = EmulatorConfig::new(dir.join("state"));
    cfg.hubs = vec![
        "hub-a.azure-devices.net".into(),
        "hub-b.azure-devices.net".into(),
    ];
    listen(&mut cfg);
    let at = cfg.mqtt_listen.or(cfg.mqtt_ws_listen);
    match Emulator::start(cfg).await {
        Ok(e) => e,
        Err(e) => panic!(
            "cannot start the emulator's listener on {at:?}, the port the SDK connects to (is \
             another program using it? port 443 needs root or CAP_NET_BIND_SERVICE): {e}"
        ),
    }
}

/// Runs an SDK script that must succeed and print its result as JSON on its last line.
pub fn run_json(cmd: &mut Command, what: &str) -> Value {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{what} failed\nstdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last.trim())
        .unwrap_or_else(|e| panic!("{what} printed no JSON ({e}): {stdout}"))
}
