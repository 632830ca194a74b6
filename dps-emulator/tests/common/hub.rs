//! A raw IoT Hub device for driving the emulated hubs packet by packet: the DPS test device's
//! TLS and codec (`super::mqtt::Device`) with the hub's CONNECT, topics and twin requests
//! (dps-proto's `hub` rules, as hsmkit's client uses them).

use super::mqtt::Device;
use dps_emulator::pki::CertifiedKey;
use dps_emulator::RunningEmulator;
use dps_proto::hub;
use rumqttc::mqttbytes::v4::{ConnAck, Connect, ConnectReturnCode, Packet, PubAck, Publish};
use rumqttc::mqttbytes::QoS;
use rustls::pki_types::ServerName;
use serde_json::Value;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// The api-version the tests announce.
pub const HUB_API: &str = "2021-04-12";

/// A TLS connection to the MQTT listener at 127.0.0.1, asking for (and verifying) `server_name`.
pub async fn hub_tls(
    emu: &RunningEmulator,
    server_name: &str,
    identity: Option<(&[&CertifiedKey], &CertifiedKey)>,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    hub_tls_at(
        super::mqtt::mqtt_addr(emu),
        emu.ca_cert_pem(),
        server_name,
        identity,
    )
    .await
}

/// A TLS connection to an MQTT listener at `addr` whose certificate `ca_pem` issued, asking
/// for (and verifying) `server_name`.
pub async fn hub_tls_at(
    addr: std::net::SocketAddr,
    ca_pem: &str,
    server_name: &str,
    identity: Option<(&[&CertifiedKey], &CertifiedKey)>,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let cfg = super::tls_client_config(ca_pem, &[&rustls::version::TLS12], identity);
    let tcp = TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    TlsConnector::from(Arc::new(cfg))
        .connect(ServerName::try_from(server_name.to_string()).unwrap(), tcp)
        .await
        .unwrap()
}

/// The hub CONNECT: client id = device id, user name `{hub}/{deviceId}/?api-version=...`.
pub fn hub_connect_packet(hub_name: &str, device_id: &str, password: Option<&str>) -> Connect {
    let mut c = Connect::new(device_id);
    c.keep_alive = 60;
    c.clean_session = true;
    c.set_login(
        hub::username(hub_name, device_id, HUB_API, Some("hsmkit-tests")).unwrap(),
        password.unwrap_or(""),
    );
    c
}

/// A SAS for the device's hub scope `{hub}/devices/{deviceId}`, expiring at `expiry`.
pub fn hub_sas(hub_name: &str, device_id: &str, key_b64: &str, expiry: u64) -> String {
    dps_proto::sas::create_token(
        &dps_proto::sas::hub_resource(hub_name, device_id),
        key_b64,
        None,
        expiry,
    )
    .unwrap()
}

/// Connects to `hub_name` (SNI = the hub) with `connect`; returns the device and the CONNACK code.
pub async fn hub_connect_with(
    emu: &RunningEmulator,
    hub_name: &str,
    identity: Option<(&[&CertifiedKey], &CertifiedKey)>,
    connect: Connect,
) -> (Device, ConnectReturnCode) {
    let mut d = Device::new(hub_tls(emu, hub_name, identity).await);
    d.send(Packet::Connect(connect)).await;
    match d.recv().await {
        Some(Packet::ConnAck(ConnAck {
            code,
            session_present,
        })) => {
            assert!(!session_present, "the emulated hub keeps no sessions");
            (d, code)
        }
        other => panic!("expected a CONNACK, got {other:?}"),
    }
}

/// Connects as `device_id` and expects the CONNACK accepted.
pub async fn hub_connect(
    emu: &RunningEmulator,
    hub_name: &str,
    device_id: &str,
    password: Option<&str>,
    identity: Option<(&[&CertifiedKey], &CertifiedKey)>,
) -> Device {
    let (d, code) = hub_connect_with(
        emu,
        hub_name,
        identity,
        hub_connect_packet(hub_name, device_id, password),
    )
    .await;
    assert_eq!(
        code,
        ConnectReturnCode::Success,
        "hub CONNECT of {device_id} refused"
    );
    d
}

/// A twin answer: status, `$version` from the topic, body (Null when empty).
#[derive(Debug)]
pub struct TwinAnswer {
    pub status: u16,
    pub version: Option<u64>,
    pub body: Value,
}

/// Sends twin request `topic` (QoS 0) with `payload`, then reads packets until the answer for
/// `rid` (PUBACKing QoS 1 ones, failing on anything else).
pub async fn twin_request<S: AsyncRead + AsyncWrite + Unpin>(
    d: &mut Device<S>,
    topic: String,
    rid: &str,
    payload: Vec<u8>,
) -> TwinAnswer {
    d.send(Packet::Publish(Publish::new(
        topic,
        QoS::AtMostOnce,
        payload,
    )))
    .await;
    loop {
        match d.recv().await {
            Some(Packet::Publish(p)) => {
                if p.qos == QoS::AtLeastOnce {
                    d.send(Packet::PubAck(PubAck::new(p.pkid))).await;
                }
                if !p.topic.starts_with(hub::TWIN_RESPONSE_PREFIX) {
                    continue;
                }
                let r = hub::parse_twin_response_topic(&p.topic).unwrap();
                assert_eq!(r.rid, rid, "an answer to another request: {}", p.topic);
                let body = if p.payload.is_empty() {
                    Value::Null
                } else {
                    serde_json::from_slice(&p.payload).unwrap()
                };
                return TwinAnswer {
                    status: r.status,
                    version: r.version,
                    body,
                };
            }
            other => panic!("expected a twin answer, got {other:?}"),
        }
    }
}

/// GETs the twin.
pub async fn get_twin<S: AsyncRead + AsyncWrite + Unpin>(
    d: &mut Device<S>,
    rid: &str,
) -> TwinAnswer {
    twin_request(d, hub::twin_get_topic(rid).unwrap(), rid, Vec::new()).await
}

/// PATCHes the reported properties.
pub async fn report<S: AsyncRead + AsyncWrite + Unpin>(
    d: &mut Device<S>,
    rid: &str,
    patch: &Value,
) -> TwinAnswer {
    twin_request(
        d,
        hub::twin_report_topic(rid).unwrap(),
        rid,
        serde_json::to_vec(patch).unwrap(),
    )
    .await
}

/// Publishes telemetry with `properties` at QoS 1 and waits for its PUBACK.
pub async fn send_telemetry<S: AsyncRead + AsyncWrite + Unpin>(
    d: &mut Device<S>,
    device_id: &str,
    properties: &[(&str, &str)],
    body: &[u8],
) {
    d.publish(
        &hub::telemetry_topic(device_id, properties).unwrap(),
        body.to_vec(),
    )
    .await;
}
