//! A raw MQTT 3.1.1 device for driving the emulator's MQTT listener packet by packet: TLS
//! (tokio-rustls, trusting the emulator's CA, optionally with a client certificate) and the
//! rumqttc packet codec, nothing else, so tests can send exactly what a hostile or broken
//! client would.

use bytes::BytesMut;
use dps_emulator::pki::CertifiedKey;
use dps_emulator::RunningEmulator;
use rumqttc::mqttbytes::v4::{ConnAck, Connect, ConnectReturnCode, Packet, Publish, Subscribe};
use rumqttc::mqttbytes::QoS;
use rustls::pki_types::ServerName;
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// The response filter and the request topics of the service documentation ("Communicate with
/// DPS using the MQTT protocol").
pub const RESPONSES: &str = "$dps/registrations/res/#";
pub const API_VERSION: &str = "2019-03-31";

/// How long a test waits for any one packet before it fails.
pub const WAIT: Duration = Duration::from_secs(30);

/// The registration ids of the emulator's records, in its order.
pub fn record_ids(emu: &RunningEmulator) -> Vec<String> {
    emu.registration_records()
        .unwrap()
        .into_iter()
        .map(|r| r.registration_id)
        .collect()
}

pub fn mqtt_addr(emu: &RunningEmulator) -> SocketAddr {
    emu.mqtt_addr()
        .expect("the emulator was started with an MQTT listener")
}

/// A TLS connection to the MQTT listener (TLS 1.2, as the service documents for MQTT).
pub async fn tls(
    emu: &RunningEmulator,
    identity: Option<(&[&CertifiedKey], &CertifiedKey)>,
) -> TlsStream<TcpStream> {
    let cfg = super::tls_client_config(emu.ca_cert_pem(), &[&rustls::version::TLS12], identity);
    let tcp = TcpStream::connect(mqtt_addr(emu)).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    TlsConnector::from(Arc::new(cfg))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap()
}

/// One device's MQTT connection: over TLS by default, or over any byte stream (the WebSocket
/// tests' `WsStream`).
pub struct Device<S = TlsStream<TcpStream>> {
    pub io: S,
    buf: BytesMut,
    next_rid: u32,
    next_pkid: u16,
}

/// The username the service documents: `{idScope}/registrations/{registrationId}/api-version=...`.
pub fn username(emu: &RunningEmulator, reg: &str) -> String {
    format!(
        "{}/registrations/{reg}/api-version={API_VERSION}&ClientVersion=hsmkit-tests",
        emu.id_scope()
    )
}

/// A CONNECT as the service documents it: client id = registration id, clean session.
pub fn connect_packet(emu: &RunningEmulator, reg: &str, password: Option<&str>) -> Connect {
    let mut c = Connect::new(reg);
    c.keep_alive = 60;
    c.clean_session = true;
    c.set_login(username(emu, reg), password.unwrap_or(""));
    c
}

impl<S: AsyncRead + AsyncWrite + Unpin> Device<S> {
    pub fn new(io: S) -> Self {
        Self {
            io,
            buf: BytesMut::new(),
            next_rid: 0,
            next_pkid: 0,
        }
    }
}

impl Device {
    /// Connects over TLS and sends `connect`; returns the device and the CONNACK's code.
    pub async fn connect_with(
        emu: &RunningEmulator,
        identity: Option<(&[&CertifiedKey], &CertifiedKey)>,
        connect: Connect,
    ) -> (Self, ConnectReturnCode) {
        let mut d = Self::new(tls(emu, identity).await);
        let code = d.connack(connect).await;
        (d, code)
    }

    /// Connects as `reg` (SAS `password` or the TLS `identity`), expects the CONNACK accepted,
    /// and subscribes to the response filter with QoS 1.
    pub async fn connect(
        emu: &RunningEmulator,
        reg: &str,
        password: Option<&str>,
        identity: Option<(&[&CertifiedKey], &CertifiedKey)>,
    ) -> Self {
        let (mut d, code) =
            Self::connect_with(emu, identity, connect_packet(emu, reg, password)).await;
        assert_eq!(code, ConnectReturnCode::Success, "CONNECT of {reg} refused");
        d.subscribe(RESPONSES, QoS::AtLeastOnce).await;
        d
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Device<S> {
    /// Sends `connect` and returns the CONNACK's code.
    pub async fn connack(&mut self, connect: Connect) -> ConnectReturnCode {
        self.send(Packet::Connect(connect)).await;
        match self.recv().await {
            Some(Packet::ConnAck(ConnAck {
                code,
                session_present,
            })) => {
                assert!(!session_present, "DPS keeps no sessions");
                code
            }
            other => panic!("expected a CONNACK, got {other:?}"),
        }
    }

    pub async fn send(&mut self, p: Packet) {
        let mut b = BytesMut::new();
        p.write(&mut b, usize::MAX).unwrap();
        self.send_raw(&b).await;
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        // A write into a closed connection is what some tests provoke: ignore its error; the
        // next read tells.
        let _ = self.io.write_all(bytes).await;
        let _ = self.io.flush().await;
    }

    /// The next packet, or `None` when the emulator closed the connection. Fails the test when
    /// nothing comes within [`WAIT`].
    pub async fn recv(&mut self) -> Option<Packet> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match Packet::read(&mut self.buf, 1 << 20) {
                Ok(p) => return Some(p),
                Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => {}
                Err(e) => panic!("the emulator sent a malformed packet: {e}"),
            }
            match tokio::time::timeout_at(deadline, self.io.read_buf(&mut self.buf)).await {
                Err(_) => panic!("no packet and no close within {WAIT:?}"),
                Ok(Ok(0)) | Ok(Err(_)) => return None,
                Ok(Ok(_)) => {}
            }
        }
    }

    /// Whether the emulator closes the connection (reading and discarding anything it still
    /// sends first). Fails the test when it is still open after [`WAIT`].
    pub async fn closed_by_emulator(&mut self) -> bool {
        while let Some(p) = self.recv().await {
            if matches!(p, Packet::ConnAck(_)) {
                // A CONNACK may precede the close (e.g. refused): keep reading.
                continue;
            }
        }
        true
    }

    pub async fn subscribe(&mut self, filter: &str, qos: QoS) -> Packet {
        self.next_pkid += 1;
        let mut s = Subscribe::new(filter, qos);
        s.pkid = self.next_pkid;
        self.send(Packet::Subscribe(s)).await;
        self.recv().await.expect("a SUBACK")
    }

    fn rid(&mut self) -> String {
        self.next_rid += 1;
        self.next_rid.to_string()
    }

    /// Publishes `payload` on `topic` with QoS 1 and returns after its PUBACK.
    pub async fn publish(&mut self, topic: &str, payload: Vec<u8>) {
        self.next_pkid += 1;
        let mut p = Publish::new(topic, QoS::AtLeastOnce, payload);
        p.pkid = self.next_pkid;
        self.send(Packet::Publish(p)).await;
        match self.recv().await {
            Some(Packet::PubAck(a)) => assert_eq!(a.pkid, self.next_pkid),
            other => panic!("expected a PUBACK, got {other:?}"),
        }
    }

    /// Waits for the answer to request `rid`: (status, retry-after, body). Acknowledges QoS 1
    /// answers. `None` when the connection was closed first.
    pub async fn answer(&mut self, rid: &str) -> Option<MqttAnswer> {
        match self.recv().await? {
            Packet::Publish(p) => {
                if p.qos == QoS::AtLeastOnce {
                    self.send(Packet::PubAck(rumqttc::mqttbytes::v4::PubAck::new(p.pkid)))
                        .await;
                }
                let a = MqttAnswer::parse(&p);
                assert_eq!(a.rid, rid, "an answer to another request: {}", p.topic);
                Some(a)
            }
            other => panic!("expected an answer, got {other:?}"),
        }
    }

    /// Sends a register request; returns its `$rid`.
    pub async fn send_register(&mut self, body: &Value) -> String {
        let rid = self.rid();
        self.publish(
            &format!("$dps/registrations/PUT/iotdps-register/?$rid={rid}"),
            serde_json::to_vec(body).unwrap(),
        )
        .await;
        rid
    }

    /// Sends an operation-status request; returns its `$rid`.
    pub async fn send_poll(&mut self, operation_id: &str) -> String {
        let rid = self.rid();
        self.publish(
            &format!(
                "$dps/registrations/GET/iotdps-get-operationstatus/?$rid={rid}&operationId={operation_id}"
            ),
            Vec::new(),
        )
        .await;
        rid
    }

    pub async fn register_once(&mut self, body: &Value) -> MqttAnswer {
        let rid = self.send_register(body).await;
        self.answer(&rid).await.expect("an answer before the close")
    }

    pub async fn poll_once(&mut self, operation_id: &str) -> MqttAnswer {
        let rid = self.send_poll(operation_id).await;
        self.answer(&rid).await.expect("an answer before the close")
    }

    /// Registers and polls until the operation leaves "assigning" (honouring retry-after
    /// with 50 ms steps); returns the final answer.
    pub async fn register(&mut self, body: &Value) -> MqttAnswer {
        let a = self.register_once(body).await;
        assert_eq!(a.status, 202, "register answered {}: {}", a.status, a.body);
        assert_eq!(a.body["status"], "assigning");
        assert!(
            a.retry_after.is_some(),
            "202 without retry-after: {}",
            a.topic
        );
        let op = a.body["operationId"].as_str().unwrap().to_string();
        for _ in 0..200 {
            let s = self.poll_once(&op).await;
            if s.status == 200 {
                assert_eq!(s.body["operationId"], op.as_str());
                return s;
            }
            assert_eq!(s.status, 202, "{}", s.body);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("operation {op} never completed");
    }
}

/// One answer on `$dps/registrations/res/{status}/?$rid={rid}[&retry-after={s}]`.
#[derive(Debug)]
pub struct MqttAnswer {
    pub topic: String,
    pub status: u16,
    pub rid: String,
    pub retry_after: Option<u64>,
    pub body: Value,
}

impl MqttAnswer {
    pub fn parse(p: &Publish) -> Self {
        let rest = p
            .topic
            .strip_prefix("$dps/registrations/res/")
            .unwrap_or_else(|| panic!("answer on an unexpected topic {}", p.topic));
        let (status, query) = rest.split_once("/?").expect("status/?query");
        let param = |n: &str| {
            query.split('&').find_map(|kv| {
                let (k, v) = kv.split_once('=')?;
                (k == n).then(|| v.to_string())
            })
        };
        Self {
            topic: p.topic.clone(),
            status: status.parse().expect("a numeric status"),
            rid: param("$rid").expect("$rid in the answer topic"),
            retry_after: param("retry-after").map(|s| s.parse().expect("numeric retry-after")),
            body: serde_json::from_slice(&p.payload).expect("a JSON answer"),
        }
    }
}
