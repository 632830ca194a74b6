//! One MQTT 3.1.1 connection to the hub: TCP to the connect target, TLS verified against the
//! hub's host name (also sent as SNI), CONNECT/CONNACK, then packets in and out with rumqttc's
//! codec (`mqttbytes::v4`).
//!
//! Why not rumqttc's `EventLoop`, as the DPS transport uses: it takes the TLS server name from
//! the address it connects to, so `--hub-endpoint 127.0.0.1:PORT` could not verify the
//! certificate as the hub; and each token renewal is a new CONNECT with another password,
//! after which the unacknowledged telemetry must be sent again under packet ids this client
//! keeps. Owning the connection makes both plain.

use super::HubError;
use crate::dps::tls::SignFailure;
use crate::dps::transport::{mqtt::is_connect_error, plugin_or_tls_failure, TransportFailure};
use bytes::BytesMut;
use rumqttc::tokio_rustls::TlsConnector;
use rumqttc::{ConnectReturnCode, Packet};
use rustls::pki_types::ServerName;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use zeroize::{Zeroize, Zeroizing};

/// Largest packet accepted from the hub: a 256 KiB C2D message or a twin (two 32 KiB
/// sections and metadata), with room for the topic and its property bag.
pub(crate) const MAX_INCOMING_PACKET: usize = 512 * 1024;

/// Largest packet sent: the service's 256 KiB message limit plus topic and properties.
pub(crate) const MAX_OUTGOING_PACKET: usize = dps_proto::hub::MAX_MESSAGE_BYTES + 64 * 1024;

/// Where and as whom a session connects; the same for every reconnect.
pub(crate) struct Target {
    /// The assigned hub's host name: the TLS server name and the user name's host.
    pub hub: String,
    /// The device id: the client id.
    pub device_id: String,
    /// The TCP connect host and port.
    pub host: String,
    pub port: u16,
    /// The CONNECT user name.
    pub username: String,
    /// TLS settings (trust roots; for X.509 the certificate whose signature the plugin makes).
    pub tls: Arc<rustls::ClientConfig>,
    /// Where a plugin's handshake-signature failure is kept (X.509).
    pub sign_failure: Option<SignFailure>,
    /// Whether the device presents a client certificate.
    pub x509: bool,
    /// MQTT over a WebSocket on the TLS connection.
    pub websocket: bool,
}

impl Target {
    /// `host:port` (`wss://host:port/$iothub/websocket` over a WebSocket), for messages.
    pub(crate) fn endpoint(&self) -> String {
        if self.websocket {
            format!(
                "wss://{}:{}{}",
                self.host,
                self.port,
                dps_proto::mqtt::MQTT_WS_PATH
            )
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// The byte stream MQTT runs on: TLS, or a WebSocket on TLS.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// An open, accepted MQTT connection.
pub(crate) struct Session {
    stream: Box<dyn Io>,
    read_buf: BytesMut,
}

impl Session {
    /// Connects, handshakes and sends CONNECT with `password` (SAS, zeroized after use; none
    /// for X.509); returns once the hub accepted it. Everything within `timeout`.
    pub(crate) async fn open(
        target: &Target,
        password: Option<&Zeroizing<String>>,
        keep_alive: Duration,
        timeout: Duration,
    ) -> Result<Session, HubError> {
        tokio::time::timeout(timeout, Self::open_inner(target, password, keep_alive))
            .await
            .unwrap_or_else(|_| {
                Err(HubError::Timeout {
                    after: timeout,
                    during: format!("connecting to {} (TCP, TLS, CONNACK)", target.endpoint()),
                })
            })
    }

    async fn open_inner(
        target: &Target,
        password: Option<&Zeroizing<String>>,
        keep_alive: Duration,
    ) -> Result<Session, HubError> {
        let tcp = TcpStream::connect((target.host.as_str(), target.port))
            .await
            .map_err(|e| {
                if is_connect_error(&e) {
                    HubError::Unreachable {
                        hub: target.hub.clone(),
                        endpoint: target.endpoint(),
                        detail: e.to_string(),
                    }
                } else {
                    HubError::ConnectionLost {
                        detail: format!("TCP connect to {}: {e}", target.endpoint()),
                    }
                }
            })?;
        // Small telemetry messages and their PUBACKs should not wait for Nagle.
        let _ = tcp.set_nodelay(true);
        let name = ServerName::try_from(target.hub.clone()).map_err(|_| HubError::Config {
            reason: format!(
                "the assigned hub `{}` is not a valid TLS server name",
                target.hub.escape_debug()
            ),
        })?;
        let tls = TlsConnector::from(target.tls.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| classify_tls(target, &e))?;
        let stream: Box<dyn Io> = if target.websocket {
            Box::new(websocket(target, tls).await?)
        } else {
            Box::new(tls)
        };
        let mut session = Session {
            stream,
            read_buf: BytesMut::with_capacity(4096),
        };
        let mut connect = rumqttc::Connect::new(target.device_id.clone());
        connect.keep_alive = u16::try_from(keep_alive.as_secs()).unwrap_or(u16::MAX);
        // Each connection subscribes again; the hub keeps C2D messages in the device's queue
        // either way.
        connect.clean_session = true;
        connect.set_login(
            target.username.clone(),
            password.map(|p| p.as_str()).unwrap_or_default(),
        );
        let mut packet = Packet::Connect(connect);
        let written = session.write(&packet).await;
        wipe_login(&mut packet);
        written?;
        match session.read().await.map_err(|e| match e {
            // A hub that closes right after CONNECT refused it without a CONNACK.
            HubError::ConnectionLost { detail } => HubError::ConnectionLost {
                detail: format!(
                    "the hub closed the connection instead of answering CONNECT ({detail})"
                ),
            },
            other => other,
        })? {
            Packet::ConnAck(ack) if ack.code == ConnectReturnCode::Success => Ok(session),
            Packet::ConnAck(ack) => Err(refused(target, ack.code)),
            other => Err(HubError::Protocol {
                detail: format!("expected CONNACK, got {}", packet_name(&other)),
            }),
        }
    }

    /// Writes one packet and flushes it. A CONNECT's bytes, which hold the token, are wiped
    /// from the buffer afterwards.
    pub(crate) async fn write(&mut self, packet: &Packet) -> Result<(), HubError> {
        let mut buf = BytesMut::with_capacity(packet.size() + 8);
        let encoded = packet.write(&mut buf, MAX_OUTGOING_PACKET);
        let result = match encoded {
            Ok(_) => self
                .stream
                .write_all(&buf)
                .await
                .and(self.stream.flush().await)
                .map_err(|e| HubError::ConnectionLost {
                    detail: format!("cannot write to the hub: {e}"),
                }),
            Err(e) => Err(HubError::Protocol {
                detail: format!("cannot encode {}: {e}", packet_name(packet)),
            }),
        };
        buf.as_mut().zeroize();
        result
    }

    /// The next packet from the hub. Cancel-safe: bytes read so far stay in the buffer.
    pub(crate) async fn read(&mut self) -> Result<Packet, HubError> {
        loop {
            match Packet::read(&mut self.read_buf, MAX_INCOMING_PACKET) {
                Ok(p) => return Ok(p),
                Err(rumqttc::Error::InsufficientBytes(_)) => {}
                Err(e) => {
                    return Err(HubError::Protocol {
                        detail: format!("malformed packet from the hub: {e}"),
                    })
                }
            }
            let n = self
                .stream
                .read_buf(&mut self.read_buf)
                .await
                .map_err(|e| HubError::ConnectionLost {
                    detail: e.to_string(),
                })?;
            if n == 0 {
                return Err(HubError::ConnectionLost {
                    detail: "the hub closed the connection".into(),
                });
            }
        }
    }

    /// Sends DISCONNECT and closes TLS; errors do not matter any more.
    pub(crate) async fn close(mut self) {
        let _ = self.write(&Packet::Disconnect).await;
        let _ = self.stream.shutdown().await;
    }
}

/// The WebSocket upgrade on the TLS connection: `GET /$iothub/websocket` for the hub's host
/// with the `mqtt` sub-protocol, which the server must choose; then its binary messages as a
/// byte stream.
async fn websocket<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    target: &Target,
    tls: S,
) -> Result<impl Io, HubError> {
    use async_tungstenite::tungstenite::client::IntoClientRequest;
    use async_tungstenite::tungstenite::http::HeaderValue;
    let sub = dps_proto::mqtt::MQTT_WS_SUBPROTOCOL;
    let url = format!(
        "wss://{}:{}{}",
        target.hub,
        target.port,
        dps_proto::mqtt::MQTT_WS_PATH
    );
    let bad = |detail: String| HubError::Protocol {
        detail: format!("the WebSocket upgrade at {}: {detail}", target.endpoint()),
    };
    let mut request = url.into_client_request().map_err(|e| bad(e.to_string()))?;
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", HeaderValue::from_static(sub));
    let (ws, response) = async_tungstenite::tokio::client_async(request, tls)
        .await
        .map_err(|e| match e {
            async_tungstenite::tungstenite::Error::Http(r) => {
                bad(format!("refused with HTTP {}", r.status()))
            }
            other => HubError::ConnectionLost {
                detail: format!("WebSocket upgrade at {}: {other}", target.endpoint()),
            },
        })?;
    let chosen = response
        .headers()
        .get("Sec-WebSocket-Protocol")
        .and_then(|v| v.to_str().ok());
    if chosen != Some(sub) {
        return Err(bad(format!(
            "the server did not choose the `{sub}` sub-protocol"
        )));
    }
    Ok(ws_stream_tungstenite::WsStream::new(ws))
}

/// Wipes the password (the SAS token) held in a CONNECT packet once it has been written.
fn wipe_login(packet: &mut Packet) {
    if let Packet::Connect(c) = packet {
        if let Some(login) = c.login.as_mut() {
            login.password.zeroize();
        }
    }
}

/// A refused CONNECT, as the error a person can act on. IoT Hub answers "not authorized" to a
/// refused token or certificate and to an unknown or disabled device, and "bad user name or
/// password" to a user name it cannot serve (another hub).
pub(crate) fn refused(target: &Target, code: ConnectReturnCode) -> HubError {
    let (hub, device_id) = (target.hub.clone(), target.device_id.clone());
    match code {
        ConnectReturnCode::BadUserNamePassword => HubError::BadCredentials { hub, device_id },
        ConnectReturnCode::NotAuthorized => HubError::NotAuthorized { hub, device_id },
        ConnectReturnCode::ServiceUnavailable => HubError::Unavailable { hub },
        ConnectReturnCode::BadClientId => HubError::Protocol {
            detail: format!(
                "the hub rejected the client id `{device_id}` (CONNACK: identifier rejected)"
            ),
        },
        ConnectReturnCode::RefusedProtocolVersion => HubError::Protocol {
            detail: "the hub does not accept MQTT 3.1.1 (CONNACK: unacceptable protocol version)"
                .into(),
        },
        ConnectReturnCode::Success => HubError::Protocol {
            detail: "CONNACK success treated as a refusal".into(),
        },
    }
}

/// Sorts a failed TLS handshake: the plugin failed to sign, the hub refused the device's
/// certificate, the server's certificate is not trusted for the hub's name, or the connection
/// dropped.
fn classify_tls(target: &Target, e: &std::io::Error) -> HubError {
    match plugin_or_tls_failure(target.sign_failure.as_ref(), e) {
        Err(TransportFailure::Plugin(p)) => HubError::Plugin(p),
        // An alert once the device has shown its certificate is the hub refusing it, not a
        // trust problem on this side.
        Err(TransportFailure::Tls(detail))
            if target.x509 && detail.contains("received fatal alert") =>
        {
            HubError::ClientCertificateRefused {
                hub: target.hub.clone(),
                alert: detail,
            }
        }
        Err(TransportFailure::Tls(detail)) => HubError::TlsTrust {
            verified_name: target.hub.clone(),
            endpoint: target.endpoint(),
            detail,
        },
        Err(other) => HubError::ConnectionLost {
            detail: format!("TLS handshake with {}: {other:?}", target.endpoint()),
        },
        Ok(detail) => HubError::ConnectionLost {
            detail: format!("TLS handshake with {}: {detail}", target.endpoint()),
        },
    }
}

/// A packet's kind, for messages (never its payload).
pub(crate) fn packet_name(p: &Packet) -> &'static str {
    match p {
        Packet::Connect(_) => "CONNECT",
        Packet::ConnAck(_) => "CONNACK",
        Packet::Publish(_) => "PUBLISH",
        Packet::PubAck(_) => "PUBACK",
        Packet::PubRec(_) => "PUBREC",
        Packet::PubRel(_) => "PUBREL",
        Packet::PubComp(_) => "PUBCOMP",
        Packet::Subscribe(_) => "SUBSCRIBE",
        Packet::SubAck(_) => "SUBACK",
        Packet::Unsubscribe(_) => "UNSUBSCRIBE",
        Packet::UnsubAck(_) => "UNSUBACK",
        Packet::PingReq => "PINGREQ",
        Packet::PingResp => "PINGRESP",
        Packet::Disconnect => "DISCONNECT",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connack_refusals_say_what_to_fix() {
        let roots = crate::dps::root_store(None, true).unwrap();
        let t = Target {
            hub: "h.azure-devices.net".into(),
            device_id: "dev-1".into(),
            host: "127.0.0.1".into(),
            port: 18883,
            username: "u".into(),
            tls: Arc::new(crate::dps::tls::client_config_without_identity(roots).unwrap()),
            sign_failure: None,
            x509: false,
            websocket: false,
        };
        assert_eq!(t.endpoint(), "127.0.0.1:18883");
        let e = refused(&t, ConnectReturnCode::NotAuthorized);
        assert_eq!(e.kind(), "not-authorized");
        let text = e.to_string();
        for part in [
            "h.azure-devices.net",
            "dev-1",
            "disabled",
            "forged",
            "expired",
        ] {
            assert!(text.contains(part), "{part} not in {text}");
        }
        let e = refused(&t, ConnectReturnCode::BadUserNamePassword);
        assert_eq!(e.kind(), "bad-credentials");
        assert!(e.to_string().contains("another hub"), "{e}");
        let e = refused(&t, ConnectReturnCode::ServiceUnavailable);
        assert!(e.is_transient(), "{e}");
        assert!(!refused(&t, ConnectReturnCode::NotAuthorized).is_transient());
        assert_eq!(
            refused(&t, ConnectReturnCode::BadClientId).kind(),
            "protocol"
        );
    }
}
