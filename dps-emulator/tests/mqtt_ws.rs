//! The device API over MQTT carried by a WebSocket on TLS, as the service offers it on 443
//! ("Communicate with DPS using the MQTT protocol": MQTT v3.1.1 over WebSocket; the SDKs open
//! `wss://{host}/$iothub/websocket` with the sub-protocol `mqtt`): the same MQTT session as
//! over TLS once upgraded (symmetric key, X.509 from the TLS session, refusals), and upgrades
//! that are not the documented one refused, garbage closed, the caps shared, the emulator
//! still serving afterwards with no record from any of it.

mod common;

use async_tungstenite::tokio::TokioAdapter;
use async_tungstenite::tungstenite::client::IntoClientRequest;
use async_tungstenite::tungstenite::{Error as WsError, Message};
use async_tungstenite::WebSocketStream;
use common::mqtt::*;
use common::*;
use dps_emulator::pki::CertifiedKey;
use dps_emulator::RunningEmulator;
use rumqttc::mqttbytes::v4::{ConnectReturnCode, Packet};
use rustls::pki_types::ServerName;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use ws_stream_tungstenite::WsStream;

const KEY: &str = "q83vEjRWeJq8p7Bm6x7Ntx0YhEorkqGSTd1U7Nl2JWc=";

type Ws = WebSocketStream<TokioAdapter<TlsStream<TcpStream>>>;

async fn ws_emulator(f: impl FnOnce(&mut dps_emulator::EmulatorConfig)) -> Env {
    start_with(|c| {
        c.mqtt_ws_listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
        f(c)
    })
    .await
}

/// A TLS connection to the WebSocket listener.
async fn tls_to_ws_listener(
    emu: &RunningEmulator,
    identity: Option<(&[&CertifiedKey], &CertifiedKey)>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let cfg = tls_client_config(emu.ca_cert_pem(), rustls::DEFAULT_VERSIONS, identity);
    let at = emu.mqtt_ws_addr().expect("the WebSocket listener is on");
    let tcp = TcpStream::connect(at).await?;
    TlsConnector::from(Arc::new(cfg))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
}

/// The upgrade to `path` offering `protocols` (none when `None`).
async fn upgrade(
    emu: &RunningEmulator,
    identity: Option<(&[&CertifiedKey], &CertifiedKey)>,
    path: &str,
    protocols: Option<&str>,
) -> Result<Ws, WsError> {
    let tls = tls_to_ws_listener(emu, identity).await.expect("TLS");
    let port = emu.mqtt_ws_addr().unwrap().port();
    let mut request = format!("wss://localhost:{port}{path}")
        .into_client_request()
        .unwrap();
    if let Some(p) = protocols {
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", p.parse().unwrap());
    }
    tokio::time::timeout(WAIT, async_tungstenite::tokio::client_async(request, tls))
        .await
        .expect("an answer to the upgrade")
        .map(|(ws, _)| ws)
}

/// An MQTT device over the documented WebSocket.
async fn ws_device(
    emu: &RunningEmulator,
    identity: Option<(&[&CertifiedKey], &CertifiedKey)>,
) -> Device<WsStream<TokioAdapter<TlsStream<TcpStream>>>> {
    let ws = upgrade(emu, identity, "/$iothub/websocket", Some("mqtt"))
        .await
        .expect("the documented upgrade is accepted");
    Device::new(WsStream::new(ws))
}

/// A symmetric-key device registers over the WebSocket and gets its record.
async fn still_serves(emu: &RunningEmulator, reg: &str) {
    enroll_symmetric(emu, reg, KEY);
    let sas = device_sas(emu, reg, KEY, in_an_hour());
    let mut d = ws_device(emu, None).await;
    assert_eq!(
        d.connack(connect_packet(emu, reg, Some(&sas))).await,
        ConnectReturnCode::Success
    );
    d.subscribe(RESPONSES, rumqttc::mqttbytes::QoS::AtLeastOnce)
        .await;
    let done = d.register(&body_reg(reg)).await;
    assert_eq!(done.body["status"], "assigned", "{}", done.body);
    assert_eq!(done.body["registrationState"]["deviceId"], reg);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn symmetric_and_x509_devices_register_over_the_websocket() {
    let env = ws_emulator(|_| {}).await;
    let emu = &env.emu;
    still_serves(emu, "ws-sym").await;

    let (_root, leaf) = x509_leaf("ws-x509");
    enroll_x509(emu, "ws-x509", &leaf);
    let mut d = ws_device(emu, Some((&[&leaf], &leaf))).await;
    assert_eq!(
        d.connack(connect_packet(emu, "ws-x509", None)).await,
        ConnectReturnCode::Success
    );
    d.subscribe(RESPONSES, rumqttc::mqttbytes::QoS::AtLeastOnce)
        .await;
    let done = d.register(&body_reg("ws-x509")).await;
    assert_eq!(done.body["status"], "assigned", "{}", done.body);
    assert_eq!(record_ids(emu), ["ws-sym", "ws-x509"]);

    // A wrong key: refused at the CONNECT as over TLS, nothing recorded.
    enroll_symmetric(emu, "ws-wrong", KEY);
    let forged = device_sas(
        emu,
        "ws-wrong",
        "bm90IHRoZSBrZXkgbm90IHRoZSBrZXkgbm90IHRoZSBrZXk=",
        in_an_hour(),
    );
    let mut d = ws_device(emu, None).await;
    assert_eq!(
        d.connack(connect_packet(emu, "ws-wrong", Some(&forged)))
            .await,
        ConnectReturnCode::NotAuthorized
    );
    assert!(d.closed_by_emulator().await);
    assert_eq!(record_ids(emu), ["ws-sym", "ws-x509"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrades_other_than_the_documented_one_are_refused() {
    let env = ws_emulator(|_| {}).await;
    let emu = &env.emu;
    let status = |r: Result<Ws, WsError>| match r {
        Err(WsError::Http(resp)) => resp.status().as_u16(),
        Err(e) => panic!("expected an HTTP refusal, got {e}"),
        Ok(_) => panic!("the upgrade was accepted"),
    };
    // Another path, with or without the sub-protocol: 404.
    assert_eq!(status(upgrade(emu, None, "/mqtt", Some("mqtt")).await), 404);
    assert_eq!(status(upgrade(emu, None, "/", None).await), 404);
    // The path without the `mqtt` sub-protocol, or with another one: 400.
    assert_eq!(
        status(upgrade(emu, None, "/$iothub/websocket", None).await),
        400
    );
    assert_eq!(
        status(upgrade(emu, None, "/$iothub/websocket", Some("wamp")).await),
        400
    );

    // Not a WebSocket request at all, garbage instead of HTTP, an endless request: closed.
    let long_header = format!(
        "GET /$iothub/websocket HTTP/1.1\r\nHost: localhost\r\nX-Pad: {}",
        "a".repeat(64 * 1024)
    );
    for bytes in [
        b"GET /$iothub/websocket HTTP/1.1\r\nHost: localhost\r\n\r\n".to_vec(),
        vec![0x10, 0xff, 0xff, 0xff, 0xff, 0x01, 0x00],
        long_header.into_bytes(),
    ] {
        let mut tls = tls_to_ws_listener(emu, None).await.unwrap();
        let _ = tls.write_all(&bytes).await;
        let _ = tls.flush().await;
        let mut answer = Vec::new();
        let read = tokio::time::timeout(WAIT, tls.read_to_end(&mut answer)).await;
        assert!(read.is_ok(), "still open after {WAIT:?}");
        let text = String::from_utf8_lossy(&answer);
        assert!(
            answer.is_empty() || text.starts_with("HTTP/1.1 4"),
            "{text}"
        );
    }
    still_serves(emu, "ws-after-bad-upgrades").await;
    assert_eq!(record_ids(emu), ["ws-after-bad-upgrades"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_after_the_upgrade_closes_the_connection() {
    let env = ws_emulator(|_| {}).await;
    let emu = &env.emu;

    // A text message: MQTT travels in binary messages.
    let mut ws = upgrade(emu, None, "/$iothub/websocket", Some("mqtt"))
        .await
        .unwrap();
    ws.send(Message::text("CONNECT")).await.unwrap();
    let mut d = Device::new(WsStream::new(ws));
    assert!(d.closed_by_emulator().await);

    // Bytes that are no MQTT packet, and a first packet that is not a CONNECT.
    let mut d = ws_device(emu, None).await;
    d.send_raw(&[0xf0, 0xff, 0xff, 0xff, 0xff, 0xff]).await;
    assert!(d.closed_by_emulator().await);
    let mut d = ws_device(emu, None).await;
    d.send(Packet::PingReq).await;
    assert!(d.closed_by_emulator().await);

    // A WebSocket message larger than any packet the session accepts.
    let mut ws = upgrade(emu, None, "/$iothub/websocket", Some("mqtt"))
        .await
        .unwrap();
    let _ = ws.send(Message::binary(vec![0u8; 2 << 20])).await;
    let mut d = Device::new(WsStream::new(ws));
    assert!(d.closed_by_emulator().await);

    still_serves(emu, "ws-after-garbage").await;
    assert_eq!(record_ids(emu), ["ws-after-garbage"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_connections_count_against_the_shared_caps() {
    let env = ws_emulator(|c| c.max_connections_per_peer = Some(1)).await;
    let emu = &env.emu;
    // One upgraded connection holds this address's only slot: the next is closed at once.
    let held = ws_device(emu, None).await;
    let refused = tls_to_ws_listener(emu, None).await;
    assert!(refused.is_err(), "a second connection was admitted");
    drop(held);
    // Its slot is given back when it closes.
    let mut admitted = None;
    for _ in 0..50 {
        if let Ok(tls) = tls_to_ws_listener(emu, None).await {
            admitted = Some(tls);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(admitted.is_some(), "the slot was not given back");
    drop(admitted);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    still_serves(emu, "ws-after-caps").await;
}
