//! The device API over MQTT 3.1.1 on TLS, as the service offers it (service documentation
//! "Communicate with DPS using the MQTT protocol"). DPS is not a broker: every connection is
//! one device talking to the service, and gets only its own answers.
//!
//! - CONNECT: client id = registration id; username
//!   `{idScope}/registrations/{registrationId}/api-version={v}` (more `&name=value` pairs, such
//!   as the SDKs' `ClientVersion`, are allowed); password = the SAS for symmetric keys, none for
//!   X.509 (the chain comes from the TLS session). The device is authenticated by the same
//!   code as an HTTPS request before the CONNACK; a refusal is CONNACK 5 "not authorized".
//!   TPM attestation is refused (the service does not offer it over MQTT). Sessions are never
//!   persistent (`session present` is always 0), as documented.
//! - SUBSCRIBE: only `$dps/registrations/res/#`, granted at most QoS 1.
//! - PUBLISH (QoS 0 or 1): `$dps/registrations/PUT/iotdps-register/?$rid={rid}` with the
//!   register body, `$dps/registrations/GET/iotdps-get-operationstatus/?$rid={rid}&operationId={id}`.
//!   Each is handled by the device API's own functions (`api::device`), so the rules and the
//!   records are the HTTPS ones; the answer is published on
//!   `$dps/registrations/res/{status}/?$rid={rid}[&retry-after={s}]` with the HTTPS body.
//!
//! The user name and topic rules are dps-proto's (`dps_proto::mqtt`), shared with the client.
//!
//! Bounds (the emulator's own, to stay up under hostile clients): a packet may carry at most
//! `max_body_bytes` of payload plus [`PACKET_OVERHEAD`]; the CONNECT must arrive within
//! [`CONNECT_TIMEOUT`]; a connection silent for 1.5 times its keep-alive (the MQTT 3.1.1 rule;
//! at most [`MAX_KEEP_ALIVE`], also when it asks for none) is closed; at most
//! `mqtt_max_packets_per_second` packets per second, [`MAX_IN_FLIGHT`] requests handled at
//! once per connection. Malformed packets, a second CONNECT, a subscription to another filter
//! or with wildcards elsewhere, a publish to another topic, QoS 2, an oversized payload and
//! any packet a client must not send close the connection; requests already being handled
//! still complete and are recorded.

use bytes::BytesMut;
use rumqttc::mqttbytes::v4::{
    ConnAck, ConnectReturnCode, Packet, PubAck, Publish, SubAck, SubscribeReasonCode, UnsubAck,
};
use rumqttc::mqttbytes::{Error as CodecError, Protocol, QoS};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch, Notify, Semaphore};
use tokio::time::Instant;
use tokio_rustls::server::TlsStream;

use super::Listener;
use crate::api::device::{
    authenticate_only, check_path, device_request, operation_status_request, register_request,
};
use crate::api::http::{ApiError, DeviceAnswer};
use crate::api::{device_fault, FaultAction};
use crate::app_state::{AppState, PeerChain};
use crate::auth::Transport;
use dps_proto::mqtt::{self as mqtt_rules, Request, RESPONSE_FILTER};
use dps_proto::DEVICE_API_VERSIONS;

/// Bytes a packet may carry beyond the payload bound (topic, header, CONNECT fields).
pub(crate) const PACKET_OVERHEAD: usize = 4096;
/// How long a new connection has for its TLS handshake and its CONNECT.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest keep-alive honoured, seconds (and the idle bound for a client that asks for
/// none): IoT Hub's MQTT maximum (1767 s); the DPS page names no figure.
pub(crate) const MAX_KEEP_ALIVE: u16 = 1767;
/// Requests one connection may have in progress; more wait (the connection is not read).
pub(crate) const MAX_IN_FLIGHT: usize = 4;

/// Why a connection was closed (logged at debug level, never sent: MQTT 3.1.1 has no way).
#[derive(Debug, thiserror::Error)]
enum Close {
    #[error("the client closed the connection")]
    Eof,
    #[error("read failed: {0}")]
    Io(std::io::Error),
    #[error("malformed packet: {0}")]
    Malformed(CodecError),
    #[error("no CONNECT within {0:?}")]
    ConnectTimeout(Duration),
    #[error("the first packet was not a CONNECT")]
    NotConnect,
    #[error("nothing received within 1.5 times the keep-alive")]
    KeepAlive,
    #[error("more than {0} packets per second")]
    Rate(u32),
    #[error("a second CONNECT")]
    SecondConnect,
    #[error("subscription to an unsupported filter")]
    UnsupportedFilter,
    #[error("publish to an unsupported topic")]
    UnsupportedTopic,
    #[error("publish with QoS 2")]
    QoS2,
    #[error("payload larger than {0} bytes")]
    Oversized(usize),
    #[error("a packet only a server sends")]
    UnexpectedPacket,
    #[error("DISCONNECT")]
    Disconnect,
    #[error("injected fault")]
    Fault,
    #[error("the emulator is shutting down")]
    Shutdown,
    #[error("the connection was refused at CONNECT")]
    Refused,
}

/// The MQTT listener: the CONNECT timeout bounds the TLS handshake too.
pub(crate) const LISTENER: Listener = Listener {
    label: "MQTT ",
    handshake_timeout: CONNECT_TIMEOUT,
    // Answers are small packets written one after another (PUBACK, then the answer):
    // without this, Nagle's algorithm holds the second until the first is acknowledged.
    nodelay: true,
};

/// One MQTT connection after its TLS handshake (run by [`super::accept_loop`]).
pub(crate) async fn serve(
    tls: TlsStream<TcpStream>,
    peer: SocketAddr,
    app: Arc<AppState>,
    chain: PeerChain,
    stop: watch::Receiver<bool>,
) {
    let why = serve_connection(tls, app, chain, stop).await;
    tracing::debug!(%peer, reason = %why, "MQTT connection closed");
}

/// A token bucket over the packets one connection sends.
struct RateLimit {
    per_second: u32,
    tokens: f64,
    last: Instant,
}

impl RateLimit {
    fn new(per_second: u32) -> Self {
        Self {
            per_second,
            tokens: f64::from(per_second),
            last: Instant::now(),
        }
    }

    fn allow(&mut self) -> bool {
        let now = Instant::now();
        let rate = f64::from(self.per_second);
        self.tokens = (self.tokens + now.duration_since(self.last).as_secs_f64() * rate).min(rate);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Reads whole packets from one connection, within deadlines.
struct Reader<R> {
    io: R,
    buf: BytesMut,
    max_packet: usize,
}

impl<R: AsyncRead + Unpin> Reader<R> {
    async fn next(&mut self, deadline: Instant, on_timeout: Close) -> Result<Packet, Close> {
        loop {
            match Packet::read(&mut self.buf, self.max_packet) {
                Ok(p) => return Ok(p),
                Err(CodecError::InsufficientBytes(_)) => {}
                Err(e) => return Err(Close::Malformed(e)),
            }
            match tokio::time::timeout_at(deadline, self.io.read_buf(&mut self.buf)).await {
                Err(_) => return Err(on_timeout),
                Ok(Err(e)) => return Err(Close::Io(e)),
                Ok(Ok(0)) => return Err(Close::Eof),
                Ok(Ok(_)) => {}
            }
        }
    }
}

/// What the writer task is asked to do.
enum Out {
    Packet(Packet),
    /// A device-API answer, published on the response topic for `rid` when subscribed.
    Answer {
        rid: String,
        answer: DeviceAnswer,
    },
}

/// Writes packets in order; answers are published with the granted QoS, only while the
/// client is subscribed to the response filter.
async fn writer<W: AsyncWrite + Unpin>(
    mut io: W,
    mut rx: mpsc::Receiver<Out>,
    subscribed: watch::Receiver<Option<QoS>>,
) {
    let mut next_pkid: u16 = 0;
    let mut buf = BytesMut::new();
    while let Some(out) = rx.recv().await {
        let packet = match out {
            Out::Packet(p) => p,
            Out::Answer { rid, answer } => {
                let Some(qos) = *subscribed.borrow() else {
                    tracing::debug!(%rid, "answer not delivered: the client is not subscribed");
                    continue;
                };
                let Ok(topic) =
                    mqtt_rules::response_topic(answer.status.as_u16(), &rid, answer.retry_after)
                else {
                    continue;
                };
                let payload = serde_json::to_vec(&answer.body).unwrap_or_default();
                let mut p = Publish::new(topic, qos, payload);
                if qos == QoS::AtLeastOnce {
                    next_pkid = next_pkid.checked_add(1).unwrap_or(1);
                    p.pkid = next_pkid;
                }
                Packet::Publish(p)
            }
        };
        buf.clear();
        if packet.write(&mut buf, usize::MAX).is_err() {
            break;
        }
        if io.write_all(&buf).await.is_err() || io.flush().await.is_err() {
            break;
        }
    }
    let _ = io.shutdown().await;
}

/// The device a CONNECT names (dps-proto's user name rule), when its api-version is one the
/// device API accepts: (id scope, registration id).
fn parse_username(username: &str) -> Option<(String, String)> {
    let u = mqtt_rules::parse_username(username).ok()?;
    DEVICE_API_VERSIONS
        .contains(&u.api_version.as_str())
        .then_some((u.id_scope, u.registration_id))
}

/// The CONNACK code for a refused CONNECT's device-API error.
fn refusal_code(e: &ApiError) -> ConnectReturnCode {
    if e.status.is_server_error() {
        ConnectReturnCode::ServiceUnavailable
    } else {
        ConnectReturnCode::NotAuthorized
    }
}

/// One connection, from its CONNECT to its close.
async fn serve_connection<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    stream: S,
    app: Arc<AppState>,
    chain: PeerChain,
    mut stop: watch::Receiver<bool>,
) -> Close {
    let (rd, mut wr) = tokio::io::split(stream);
    let mut reader = Reader {
        io: rd,
        buf: BytesMut::with_capacity(4096),
        max_packet: app.config.max_body_bytes.saturating_add(PACKET_OVERHEAD),
    };
    let connect = match reader
        .next(
            Instant::now() + CONNECT_TIMEOUT,
            Close::ConnectTimeout(CONNECT_TIMEOUT),
        )
        .await
    {
        Ok(Packet::Connect(c)) => c,
        Ok(_) => return Close::NotConnect,
        Err(Close::Malformed(CodecError::InvalidProtocolLevel(_))) => {
            return refuse_protocol_version(&mut wr).await;
        }
        Err(e) => return e,
    };
    if connect.protocol != Protocol::V4 {
        return refuse_protocol_version(&mut wr).await;
    }
    if app.faults.take_mqtt_connect_drop() {
        return Close::Fault;
    }
    let (username, password) = match &connect.login {
        Some(l) => (l.username.as_str(), l.password.as_str()),
        None => ("", ""),
    };
    let refuse = |code| Packet::ConnAck(ConnAck::new(code, false));
    let Some((scope, reg)) = parse_username(username) else {
        let _ = write_now(&mut wr, refuse(ConnectReturnCode::BadUserNamePassword)).await;
        return Close::Refused;
    };
    if connect.client_id != reg {
        let _ = write_now(&mut wr, refuse(ConnectReturnCode::BadClientId)).await;
        return Close::Refused;
    }
    let (scope, reg) = (scope.as_str(), reg.as_str());
    if let Err(e) = check_path(&app, scope, reg) {
        tracing::info!(registration_id = reg, reason = %e.message, "MQTT CONNECT refused");
        let _ = write_now(&mut wr, refuse(ConnectReturnCode::BadUserNamePassword)).await;
        return Close::Refused;
    }
    let registration_id = reg.to_string();
    let authorization = (!password.is_empty()).then(|| password.to_string());
    let auth = match device_request(
        &registration_id,
        b"",
        authorization.clone(),
        chain.clone(),
        Transport::Mqtt,
        false,
    ) {
        Ok(r) => authenticate_only(app.clone(), r).await,
        Err(e) => Err(e),
    };
    if let Err(e) = auth {
        // The reason was logged under a trackingId by the device API; the client only learns
        // "not authorized", as from the service.
        let _ = write_now(&mut wr, refuse(refusal_code(&e))).await;
        return Close::Refused;
    }
    if write_now(
        &mut wr,
        Packet::ConnAck(ConnAck::new(ConnectReturnCode::Success, false)),
    )
    .await
    .is_err()
    {
        return Close::Eof;
    }

    let keep_alive = match connect.keep_alive {
        0 => MAX_KEEP_ALIVE,
        k => k.min(MAX_KEEP_ALIVE),
    };
    let idle = Duration::from_millis(u64::from(keep_alive) * 1500);
    let (tx, rx) = mpsc::channel::<Out>(MAX_IN_FLIGHT * 2 + 8);
    let (sub_tx, sub_rx) = watch::channel(None);
    let writer_task = tokio::spawn(writer(wr, rx, sub_rx));
    let kill = Arc::new(Notify::new());
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut rate = RateLimit::new(app.config.mqtt_max_packets_per_second.max(1));
    let ctx = Ctx {
        app: app.clone(),
        registration_id,
        authorization,
        chain,
    };

    let why = loop {
        let packet = tokio::select! {
            _ = stop.changed() => break Close::Shutdown,
            _ = kill.notified() => break Close::Fault,
            p = reader.next(Instant::now() + idle, Close::KeepAlive) => p,
        };
        let packet = match packet {
            Ok(p) => p,
            Err(e) => break e,
        };
        if !rate.allow() {
            break Close::Rate(app.config.mqtt_max_packets_per_second);
        }
        match packet {
            Packet::PingReq => {
                if tx.send(Out::Packet(Packet::PingResp)).await.is_err() {
                    break Close::Eof;
                }
            }
            Packet::Subscribe(s) => {
                if s.filters.iter().any(|f| f.path != RESPONSE_FILTER) {
                    break Close::UnsupportedFilter;
                }
                // "DPS grants at most QoS 1 in the SUBACK" (service documentation).
                let granted: Vec<QoS> = s
                    .filters
                    .iter()
                    .map(|f| {
                        if f.qos == QoS::AtMostOnce {
                            QoS::AtMostOnce
                        } else {
                            QoS::AtLeastOnce
                        }
                    })
                    .collect();
                let codes = granted
                    .iter()
                    .map(|q| SubscribeReasonCode::Success(*q))
                    .collect();
                if let Some(q) = granted.last() {
                    sub_tx.send_replace(Some(*q));
                }
                if tx
                    .send(Out::Packet(Packet::SubAck(SubAck::new(s.pkid, codes))))
                    .await
                    .is_err()
                {
                    break Close::Eof;
                }
            }
            Packet::Unsubscribe(u) => {
                if u.topics.iter().any(|t| t != RESPONSE_FILTER) {
                    break Close::UnsupportedFilter;
                }
                sub_tx.send_replace(None);
                if tx
                    .send(Out::Packet(Packet::UnsubAck(UnsubAck::new(u.pkid))))
                    .await
                    .is_err()
                {
                    break Close::Eof;
                }
            }
            Packet::Publish(p) => {
                if p.qos == QoS::ExactlyOnce {
                    break Close::QoS2;
                }
                if p.payload.len() > app.config.max_body_bytes {
                    break Close::Oversized(app.config.max_body_bytes);
                }
                let Ok(request) = mqtt_rules::parse_request_topic(&p.topic) else {
                    break Close::UnsupportedTopic;
                };
                if p.qos == QoS::AtLeastOnce
                    && tx
                        .send(Out::Packet(Packet::PubAck(PubAck::new(p.pkid))))
                        .await
                        .is_err()
                {
                    break Close::Eof;
                }
                // Backpressure: with MAX_IN_FLIGHT requests in progress, stop reading.
                let Ok(permit) = in_flight.clone().acquire_owned().await else {
                    break Close::Shutdown;
                };
                let ctx = ctx.clone();
                let tx = tx.clone();
                let kill = kill.clone();
                tokio::spawn(async move {
                    let _permit = permit;
                    handle_request(ctx, request, p.payload, tx, kill).await;
                });
            }
            // The client acknowledges a QoS 1 answer: nothing is kept to resend (no sessions).
            Packet::PubAck(_) => {}
            Packet::Disconnect => break Close::Disconnect,
            Packet::Connect(_) => break Close::SecondConnect,
            Packet::ConnAck(_)
            | Packet::PubRec(_)
            | Packet::PubRel(_)
            | Packet::PubComp(_)
            | Packet::SubAck(_)
            | Packet::UnsubAck(_)
            | Packet::PingResp => break Close::UnexpectedPacket,
        }
    };
    drop(tx);
    match why {
        // A clean end: what was already queued is still written.
        Close::Disconnect => {
            let _ = tokio::time::timeout(Duration::from_secs(5), writer_task).await;
        }
        _ => writer_task.abort(),
    }
    why
}

/// What a request handler needs from its connection.
#[derive(Clone)]
struct Ctx {
    app: Arc<AppState>,
    registration_id: String,
    authorization: Option<String>,
    chain: PeerChain,
}

/// Handles one register or poll request through the device API and queues its answer.
async fn handle_request(
    ctx: Ctx,
    request: Request,
    payload: bytes::Bytes,
    tx: mpsc::Sender<Out>,
    kill: Arc<Notify>,
) {
    let rid = request.rid().to_string();
    let answer = match device_fault(&ctx.app).await {
        Some(FaultAction::Drop) => {
            kill.notify_one();
            return;
        }
        Some(FaultAction::Answer(a)) => a,
        None => {
            let body_required = matches!(request, Request::Register { .. });
            let result = match device_request(
                &ctx.registration_id,
                &payload,
                ctx.authorization.clone(),
                ctx.chain.clone(),
                Transport::Mqtt,
                body_required,
            ) {
                Err(e) => Err(e),
                Ok(r) => match request {
                    Request::Register { .. } => register_request(ctx.app.clone(), r).await,
                    Request::OperationStatus { operation_id, .. } => {
                        operation_status_request(ctx.app.clone(), r, operation_id).await
                    }
                },
            };
            result.unwrap_or_else(ApiError::into_answer)
        }
    };
    let _ = tx.send(Out::Answer { rid, answer }).await;
}

/// Refuses a CONNECT of another protocol level with CONNACK return code 1 (MQTT 3.1.1,
/// 3.1.2.2: an unsupported level is answered so), then closes.
async fn refuse_protocol_version<W: AsyncWrite + Unpin>(wr: &mut W) -> Close {
    let _ = write_now(
        wr,
        Packet::ConnAck(ConnAck::new(
            ConnectReturnCode::RefusedProtocolVersion,
            false,
        )),
    )
    .await;
    Close::Refused
}

/// Writes one packet before the writer task exists (CONNACK).
async fn write_now<W: AsyncWrite + Unpin>(io: &mut W, packet: Packet) -> std::io::Result<()> {
    let mut buf = BytesMut::new();
    packet
        .write(&mut buf, usize::MAX)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))?;
    io.write_all(&buf).await?;
    io.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_need_an_api_version_of_the_device_api() {
        assert_eq!(
            parse_username("0ne1/registrations/dev-1/api-version=2019-03-31&ClientVersion=x"),
            Some(("0ne1".into(), "dev-1".into()))
        );
        assert_eq!(
            parse_username("0ne1/registrations/dev-1/api-version=2021-06-01"),
            Some(("0ne1".into(), "dev-1".into()))
        );
        for bad in [
            "",
            "0ne1/registrations/dev-1",
            "0ne1/registrations/dev-1/api-version=1999-01-01",
            "0ne1/devices/dev-1/api-version=2019-03-31",
        ] {
            assert_eq!(parse_username(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_codec_survives_arbitrary_bytes() {
        // Every prefix of every byte pattern: an answer or an error, never a panic.
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            let mut v = Vec::new();
            let n = (seed % 64) as usize;
            for _ in 0..n {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                v.push(seed as u8);
            }
            let mut buf = BytesMut::from(&v[..]);
            let _ = Packet::read(&mut buf, 1024);
        }
    }
}
