//! `dps-emulator serve`: the device and service APIs over HTTPS, and the device API over MQTT
//! (on TLS and over a WebSocket), until Ctrl-C.

use anyhow::{Context, Result};
use dps_emulator::{Emulator, EmulatorConfig};
use std::time::Duration;

use super::ServeArgs;

pub(crate) async fn run(a: ServeArgs) -> Result<()> {
    let mut cfg = EmulatorConfig::new(&a.state.state);
    cfg.listen = a.listen;
    cfg.id_scope = a.id_scope;
    if !a.hubs.is_empty() {
        cfg.hubs = a.hubs;
    }
    cfg.server_names = a.server_names;
    cfg.assignment_delay = Duration::from_millis(a.assignment_delay_ms);
    cfg.retry_after_secs = a.retry_after;
    cfg.complete_registrations_immediately = a.complete_immediately;
    cfg.max_body_bytes = a.max_body_bytes;
    cfg.max_connections = a.max_connections;
    cfg.max_connections_per_peer = a.max_connections_per_peer;
    cfg.mqtt_listen = (!a.no_mqtt).then_some(a.mqtt_listen);
    cfg.mqtt_ws_listen = (!a.no_mqtt_ws).then_some(a.mqtt_ws_listen);
    cfg.mqtt_max_packets_per_second = a.mqtt_max_packets_per_second;
    let running = Emulator::start(cfg).await?;
    println!("listening: {}", running.endpoint());
    if let Some(m) = running.mqtt_addr() {
        println!("mqtt: mqtts://{m}");
    }
    if let Some(w) = running.mqtt_ws_addr() {
        println!(
            "mqtt over websocket: wss://{w}{}",
            dps_proto::mqtt::MQTT_WS_PATH
        );
    }
    println!("id scope: {}", running.id_scope());
    println!("hubs: {}", running.hubs().join(", "));
    println!("dev CA certificate: {}", running.ca_cert_path().display());
    println!(
        "service connection string: dps-emulator connection-string --state-dir {}",
        a.state.state.display()
    );
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    running.shutdown().await;
    Ok(())
}
