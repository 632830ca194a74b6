//! The MQTT 3.1.1 listener on TLS: one listener for every service the emulator imitates. The
//! connection machinery is here, shared by both services: the packet codec within the size
//! bound, the CONNECT deadline, keep-alive, the packet rate limit, the ordered writer, and the
//! read loop that answers PINGREQ and closes on anything a client must not send. After the
//! CONNECT, its user name decides which service the connection talks to:
//!
//! - `{idScope}/registrations/{registrationId}/api-version=...`: DPS's device API ([`dps`],
//!   service documentation "Communicate with DPS using the MQTT protocol").
//! - `{hubHostName}/{deviceId}/?api-version=...` (`dps_proto::hub::parse_username`): the
//!   device endpoint of one of the emulated IoT hubs ([`crate::hub::session`], service
//!   documentation "Communicate with an IoT hub using the MQTT protocol").
//!
//! Neither is a broker: every connection is one device talking to the service, and gets only
//! its own messages.
//!
//! Bounds (the emulator's own, to stay up under hostile clients): a packet may carry at most
//! the service's payload bound plus [`PACKET_OVERHEAD`] (DPS: `max_body_bytes`; a hub: its
//! documented 256 KiB message size); the CONNECT must arrive within [`CONNECT_TIMEOUT`]; a
//! connection silent for 1.5 times its keep-alive (the MQTT 3.1.1 rule; at most
//! [`MAX_KEEP_ALIVE`], also when it asks for none) is closed; at most
//! `mqtt_max_packets_per_second` packets per second. Malformed packets, a second CONNECT, a
//! packet only a server sends, and whatever the service refuses close the connection.

pub(crate) mod dps;

use bytes::BytesMut;
use rumqttc::mqttbytes::v4::{ConnAck, Connect, ConnectReturnCode, Packet};
use rumqttc::mqttbytes::{Error as CodecError, Protocol};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_rustls::server::TlsStream;

use super::Listener;
use crate::app_state::{AppState, PeerChain};

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
pub(crate) enum Close {
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
    #[error("the same client connected again")]
    Replaced,
    #[error("the service failed: {0}")]
    Internal(String),
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
    // The name the client asked for in its TLS ClientHello (none when it connected by IP
    // address): a hub connection must name the hub its user name names.
    let sni = tls.get_ref().1.server_name().map(str::to_ascii_lowercase);
    let why = serve_connection(tls, app, chain, sni, stop).await;
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
pub(crate) struct Reader<R> {
    io: R,
    buf: BytesMut,
    /// The largest packet accepted; a service may raise it once the CONNECT named it.
    pub(crate) max_packet: usize,
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

/// Writes packets in order until the channel closes or `finish` fires (then what is queued is
/// still written), then shuts the stream down. `finish` is needed because the service's tasks
/// may hold senders for as long as the connection lives.
async fn writer<W: AsyncWrite + Unpin>(
    mut io: W,
    mut rx: mpsc::Receiver<Packet>,
    mut finish: oneshot::Receiver<()>,
) {
    let mut buf = BytesMut::new();
    let mut finishing = false;
    loop {
        let next = if finishing {
            rx.try_recv().ok()
        } else {
            tokio::select! {
                biased;
                p = rx.recv() => p,
                _ = &mut finish => {
                    finishing = true;
                    rx.try_recv().ok()
                }
            }
        };
        let Some(packet) = next else { break };
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

/// A connection whose CONNECT was read: what a service needs to answer it.
pub(crate) struct Connected<S> {
    /// The reading half, positioned after the CONNECT.
    pub(crate) reader: Reader<ReadHalf<S>>,
    /// The writing half, until the service accepts and the writer task takes it.
    pub(crate) wr: WriteHalf<S>,
    /// The CONNECT.
    pub(crate) connect: Connect,
    /// The TLS client chain, leaf first.
    pub(crate) chain: PeerChain,
    /// The TLS server name the client asked for, lowercase.
    pub(crate) sni: Option<String>,
    /// Fires when the emulator shuts down.
    pub(crate) stop: watch::Receiver<bool>,
}

impl<S: AsyncRead + AsyncWrite + Send + 'static> Connected<S> {
    /// Answers the CONNECT with a refusal `code` and ends the connection.
    pub(crate) async fn refuse(mut self, code: ConnectReturnCode) -> Close {
        let _ = write_now(&mut self.wr, Packet::ConnAck(ConnAck::new(code, false))).await;
        Close::Refused
    }

    /// Accepts the CONNECT (CONNACK 0, `session present` 0: no session is ever kept) and
    /// starts the writer: the open connection, for the service's read loop.
    pub(crate) async fn accept(mut self) -> Result<Open<S>, Close> {
        write_now(
            &mut self.wr,
            Packet::ConnAck(ConnAck::new(ConnectReturnCode::Success, false)),
        )
        .await
        .map_err(|_| Close::Eof)?;
        let keep_alive = match self.connect.keep_alive {
            0 => MAX_KEEP_ALIVE,
            k => k.min(MAX_KEEP_ALIVE),
        };
        let (tx, rx) = mpsc::channel::<Packet>(MAX_IN_FLIGHT * 2 + 8);
        let (finish, finish_rx) = oneshot::channel();
        let writer_task = tokio::spawn(writer(self.wr, rx, finish_rx));
        Ok(Open {
            reader: self.reader,
            idle: Duration::from_millis(u64::from(keep_alive) * 1500),
            tx,
            writer_task,
            finish,
            kill: Arc::new(Notify::new()),
            replaced: Arc::new(Notify::new()),
            stop: self.stop,
        })
    }
}

/// An accepted connection: its reader, the queue to its writer, and a way to kill it.
pub(crate) struct Open<S> {
    reader: Reader<ReadHalf<S>>,
    idle: Duration,
    /// Packets to send, in order.
    pub(crate) tx: mpsc::Sender<Packet>,
    writer_task: JoinHandle<()>,
    /// Tells the writer to write what is queued and end.
    finish: oneshot::Sender<()>,
    /// Notified to close the connection from a task the service spawned (a fault).
    pub(crate) kill: Arc<Notify>,
    /// Notified when a new connection of the same client takes over (MQTT 3.1.1, 3.1.4-2:
    /// "If the ClientId represents a Client already connected to the Server then the Server
    /// MUST disconnect the existing Client").
    pub(crate) replaced: Arc<Notify>,
    stop: watch::Receiver<bool>,
}

/// A service's side of an open connection: the packets the shared loop does not answer
/// itself.
pub(crate) trait Service: Send {
    /// One SUBSCRIBE, UNSUBSCRIBE, PUBLISH or PUBACK from the client; an `Err` closes the
    /// connection for that reason.
    fn packet(&mut self, packet: Packet) -> impl Future<Output = Result<(), Close>> + Send;
}

impl<S: AsyncRead + AsyncWrite + Send + 'static> Open<S> {
    /// Reads packets until the connection ends: PINGREQ is answered here, DISCONNECT, a
    /// second CONNECT and packets only a server sends end it, the rest goes to `service`.
    /// Returns why it ended; what was queued is still written after a DISCONNECT.
    pub(crate) async fn run<T: Service>(mut self, app: &AppState, service: &mut T) -> Close {
        let mut rate = RateLimit::new(app.config.mqtt_max_packets_per_second.max(1));
        let why = loop {
            let packet = tokio::select! {
                _ = self.stop.changed() => break Close::Shutdown,
                _ = self.kill.notified() => break Close::Fault,
                _ = self.replaced.notified() => break Close::Replaced,
                p = self.reader.next(Instant::now() + self.idle, Close::KeepAlive) => p,
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
                    if self.tx.send(Packet::PingResp).await.is_err() {
                        break Close::Eof;
                    }
                }
                p @ (Packet::Subscribe(_)
                | Packet::Unsubscribe(_)
                | Packet::Publish(_)
                | Packet::PubAck(_)) => {
                    if let Err(e) = service.packet(p).await {
                        break e;
                    }
                }
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
        drop(self.tx);
        match why {
            // A clean end: what was already queued is still written.
            Close::Disconnect => {
                let _ = self.finish.send(());
                let _ = tokio::time::timeout(Duration::from_secs(5), self.writer_task).await;
            }
            _ => self.writer_task.abort(),
        }
        why
    }
}

/// One connection, from its CONNECT to its close: reads the CONNECT and hands the connection
/// to the service its user name names.
pub(crate) async fn serve_connection<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    stream: S,
    app: Arc<AppState>,
    chain: PeerChain,
    sni: Option<String>,
    stop: watch::Receiver<bool>,
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
    let hub_user = connect
        .login
        .as_ref()
        .and_then(|l| dps_proto::hub::parse_username(&l.username).ok());
    let conn = Connected {
        reader,
        wr,
        connect,
        chain,
        sni,
        stop,
    };
    match hub_user {
        Some(user) => crate::hub::session::serve(conn, app, user).await,
        None => dps::serve(conn, app).await,
    }
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
