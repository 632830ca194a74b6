//! DPS over MQTT 3.1.1 on TLS (service documentation "Communicate with DPS using the MQTT
//! protocol"), on `rumqttc`'s client and codec with the same rustls settings as HTTPS: the
//! trust roots, and for X.509 the client certificate whose handshake signature the plugin makes.
//!
//! One connection serves the whole registration: CONNECT (client id = registration id, user
//! name [`dps_proto::mqtt::username`], password = the SAS token for symmetric keys, none for
//! X.509), SUBSCRIBE to `$dps/registrations/res/#`, then one PUBLISH per request, answered on
//! `$dps/registrations/res/{status}/?$rid=...` with the HTTPS JSON body. A dropped connection
//! is a transient failure; the next request connects again, so the flow's retry rules apply
//! unchanged.
//!
//! The same session runs over TLS on 8883 ([`Carrier::Tls`]) or over a WebSocket on TLS, port
//! 443, path `/$iothub/websocket`, sub-protocol `mqtt` ([`Carrier::WebSocket`], rumqttc's
//! `websocket` feature: the TLS is the same rustls configuration, so the plugin signs the
//! X.509 handshake there too).

use super::https::MAX_ANSWER_BYTES;
use super::plugin_or_tls_failure;
use super::{Answer, DpsTransport, TransportFailure};
use crate::dps::proxy::{https_proxy_for, ProxyTarget};
use crate::dps::retry::parse_retry_after;
use crate::dps::tls::SignFailure;
use async_tungstenite::tungstenite::Error as WsError;
use dps_proto::mqtt as topics;
use dps_proto::wire::ErrorBody;
use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event, EventLoop, MqttOptions, Packet, QoS,
    SubscribeReasonCode, TlsConfiguration,
};
use std::sync::Arc;
use std::time::Duration;

/// Keep-alive announced in CONNECT (the SDKs use 4 minutes; a registration is shorter).
const KEEP_ALIVE: Duration = Duration::from_secs(60);

/// What carries the MQTT session to DPS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Carrier {
    /// MQTT 3.1.1 on TLS (`mqtts://`, port 8883 by default).
    Tls,
    /// MQTT 3.1.1 over a WebSocket on TLS (`wss://`, port 443 by default, path
    /// [`topics::MQTT_WS_PATH`], sub-protocol [`topics::MQTT_WS_SUBPROTOCOL`]).
    WebSocket,
}

impl Carrier {
    /// The URL scheme of its endpoints.
    pub(crate) const fn scheme(self) -> &'static str {
        match self {
            Carrier::Tls => "mqtts",
            Carrier::WebSocket => "wss",
        }
    }

    /// The service's port for it.
    pub(crate) const fn default_port(self) -> u16 {
        match self {
            Carrier::Tls => topics::MQTT_TLS_PORT,
            Carrier::WebSocket => topics::MQTT_WS_PORT,
        }
    }

    /// The `--transport` value that selects it.
    const fn flag(self) -> &'static str {
        match self {
            Carrier::Tls => "mqtt",
            Carrier::WebSocket => "mqtt-ws",
        }
    }

    /// The endpoint as messages show it: `mqtts://h:p`, `wss://h:p` (the WebSocket's path is
    /// always [`topics::MQTT_WS_PATH`]).
    pub(crate) fn url(self, host: &str, port: u16) -> String {
        format!("{}://{host}:{port}", self.scheme())
    }
}

/// Where an MQTT transport goes, who it is and how long it waits.
pub(crate) struct MqttTarget<'a> {
    pub carrier: Carrier,
    pub host: String,
    pub port: u16,
    pub id_scope: &'a str,
    pub registration_id: &'a str,
    pub api_version: &'a str,
    pub request_timeout: Duration,
    pub max_retry_after: Duration,
}

/// The MQTT client for one registration.
pub(crate) struct MqttTransport {
    endpoint: String,
    carrier: Carrier,
    host: String,
    port: u16,
    tls: Arc<rustls::ClientConfig>,
    client_id: String,
    username: String,
    request_timeout: Duration,
    max_retry_after: Duration,
    sign_failure: Option<SignFailure>,
    /// The HTTP proxy a WebSocket goes through (`HTTPS_PROXY`, see `dps::proxy`); MQTT on
    /// TLS connects directly.
    proxy: Option<ProxyTarget>,
    conn: Option<Connection>,
    next_rid: u64,
}

/// An open, subscribed connection.
struct Connection {
    client: AsyncClient,
    events: EventLoop,
}

/// A CONNECT the server refused (CONNACK with a return code), as the HTTPS status the same
/// request would get.
struct Refusal {
    status: u16,
    message: String,
}

/// Why no connection was made.
enum ConnectFailure {
    Refused(Refusal),
    Failed(TransportFailure),
}

impl From<TransportFailure> for ConnectFailure {
    fn from(f: TransportFailure) -> Self {
        ConnectFailure::Failed(f)
    }
}

/// What happened while waiting on the connection.
enum Waited {
    Answer(Answer),
    Failure(TransportFailure),
}

impl MqttTransport {
    /// `tls` is the configuration the HTTPS path uses; its ALPN list is cleared (DPS's MQTT
    /// endpoints negotiate none; a WebSocket upgrade is HTTP/1.1 without ALPN).
    pub(crate) fn new(
        mut tls: rustls::ClientConfig,
        target: MqttTarget<'_>,
        sign_failure: Option<SignFailure>,
    ) -> Result<Self, String> {
        tls.alpn_protocols.clear();
        let username = topics::username(
            target.id_scope,
            target.registration_id,
            target.api_version,
            Some(concat!("hsmkit/", env!("CARGO_PKG_VERSION"))),
        )
        .map_err(|e| e.to_string())?;
        // The WebSocket is an HTTPS request to the same host and port, so the HTTPS proxy
        // rules apply to it (as for the official SDKs' WebSocket transports).
        let proxy = match target.carrier {
            Carrier::WebSocket => {
                https_proxy_for(&format!("https://{}:{}", target.host, target.port))
            }
            Carrier::Tls => None,
        };
        match &proxy {
            Some(p) if p.tls => {
                return Err(format!(
                    "the proxy {} is spoken to over TLS (https://), which MQTT over WebSocket does not support here; name an http:// proxy in HTTPS_PROXY, or use --transport https",
                    p.shown
                ))
            }
            Some(p) => tracing::info!(
                "MQTT over WebSocket through the proxy {} (HTTPS_PROXY or ALL_PROXY; NO_PROXY lists hosts reached directly)",
                p.shown
            ),
            None => {}
        }
        Ok(Self {
            endpoint: target.carrier.url(&target.host, target.port),
            carrier: target.carrier,
            host: target.host,
            port: target.port,
            tls: Arc::new(tls),
            client_id: target.registration_id.to_string(),
            username,
            request_timeout: target.request_timeout,
            max_retry_after: target.max_retry_after,
            sign_failure,
            proxy,
            conn: None,
            next_rid: 1,
        })
    }

    /// Opens the connection and subscribes to the answers.
    async fn connect(&mut self, password: Option<&str>) -> Result<Connection, ConnectFailure> {
        let tls = TlsConfiguration::Rustls(self.tls.clone());
        // Over a WebSocket, rumqttc takes the whole URL as the broker address (the port
        // argument is unused) and sends the `mqtt` sub-protocol, which it requires back.
        let (broker, transport) = match self.carrier {
            Carrier::Tls => (self.host.clone(), rumqttc::Transport::tls_with_config(tls)),
            Carrier::WebSocket => (
                format!("{}{}", self.endpoint, topics::MQTT_WS_PATH),
                rumqttc::Transport::wss_with_config(tls),
            ),
        };
        let mut options = MqttOptions::new(self.client_id.clone(), broker, self.port);
        options
            .set_credentials(self.username.clone(), password.unwrap_or_default())
            .set_clean_session(true)
            .set_keep_alive(KEEP_ALIVE)
            .set_max_packet_size(MAX_ANSWER_BYTES + 1024, 64 * 1024)
            .set_transport(transport);
        if let Some(p) = &self.proxy {
            options.set_proxy(rumqttc::Proxy {
                ty: rumqttc::ProxyType::Http,
                auth: match &p.basic_auth {
                    Some((username, password)) => rumqttc::ProxyAuth::Basic {
                        username: username.clone(),
                        password: password.clone(),
                    },
                    None => rumqttc::ProxyAuth::None,
                },
                addr: p.host.clone(),
                port: p.port,
            });
        }
        let (client, mut events) = AsyncClient::new(options, 8);
        events
            .network_options
            .set_connection_timeout(self.request_timeout.as_secs().max(1));
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => break,
                Ok(_) => {}
                Err(ConnectionError::ConnectionRefused(code)) => {
                    return Err(ConnectFailure::Refused(refused(code)));
                }
                Err(e) => return Err(self.classify(&e, true).into()),
            }
        }
        client
            .try_subscribe(topics::RESPONSE_FILTER, QoS::AtLeastOnce)
            .map_err(|e| TransportFailure::Transient(format!("cannot subscribe: {e}")))?;
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::SubAck(ack))) => {
                    if ack.return_codes.contains(&SubscribeReasonCode::Failure) {
                        return Err(TransportFailure::Transient(format!(
                            "DPS refused the subscription to {}",
                            topics::RESPONSE_FILTER
                        ))
                        .into());
                    }
                    break;
                }
                Ok(Event::Incoming(Packet::Disconnect)) => {
                    return Err(TransportFailure::Transient(
                        "DPS closed the connection before the subscription was acknowledged".into(),
                    )
                    .into())
                }
                Ok(_) => {}
                Err(e) => return Err(self.classify(&e, false).into()),
            }
        }
        Ok(Connection { client, events })
    }

    fn classify(&self, e: &ConnectionError, connecting: bool) -> TransportFailure {
        if let (ConnectionError::Proxy(err), Some(p)) = (e, &self.proxy) {
            // The proxy could not be reached or refused the tunnel: name it, as over HTTPS.
            return TransportFailure::Connect(format!(
                "through the HTTP proxy {} (from HTTPS_PROXY or ALL_PROXY; list the host in NO_PROXY to connect directly): {}",
                p.shown,
                super::describe(err)
            ));
        }
        classify(&self.sign_failure, self.request_timeout, e, connecting)
    }

    /// Publishes one request and waits for its answer, connecting first when needed.
    async fn request(
        &mut self,
        topic_for: impl Fn(&str) -> Result<String, topics::MqttTopicError>,
        payload: Vec<u8>,
        password: Option<&str>,
    ) -> Result<Answer, TransportFailure> {
        let timeout = self.request_timeout;
        let rid = self.next_rid.to_string();
        self.next_rid += 1;
        let topic = topic_for(&rid).map_err(|e| TransportFailure::Transient(e.to_string()))?;
        let result = tokio::time::timeout(timeout, self.exchange(&topic, &rid, payload, password))
            .await
            .unwrap_or_else(|_| {
                Waited::Failure(TransportFailure::Transient(format!(
                    "no answer within {timeout:?}"
                )))
            });
        match result {
            Waited::Answer(a) => Ok(a),
            Waited::Failure(f) => {
                // Whatever state the connection is in, the next request starts a fresh one.
                self.conn = None;
                Err(f)
            }
        }
    }

    async fn exchange(
        &mut self,
        topic: &str,
        rid: &str,
        payload: Vec<u8>,
        password: Option<&str>,
    ) -> Waited {
        if self.conn.is_none() {
            match self.connect(password).await {
                Ok(c) => self.conn = Some(c),
                Err(ConnectFailure::Refused(r)) => return Waited::Answer(refusal_answer(r)),
                Err(ConnectFailure::Failed(f)) => return Waited::Failure(f),
            }
        }
        let max_retry_after = self.max_retry_after;
        let request_timeout = self.request_timeout;
        let sign_failure = self.sign_failure.clone();
        let Some(conn) = self.conn.as_mut() else {
            return Waited::Failure(TransportFailure::Transient("not connected".into()));
        };
        if let Err(e) = conn
            .client
            .try_publish(topic, QoS::AtLeastOnce, false, payload)
        {
            return Waited::Failure(TransportFailure::Transient(format!("cannot publish: {e}")));
        }
        loop {
            let event = conn.events.poll().await;
            match event {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let Ok(response) = topics::parse_response_topic(&p.topic) else {
                        tracing::debug!(topic = %p.topic.escape_debug(), "ignoring a message on an unknown topic");
                        continue;
                    };
                    if response.rid != rid {
                        // An answer to an earlier request that timed out on this connection.
                        continue;
                    }
                    return Waited::Answer(Answer {
                        status: response.status,
                        retry_after: parse_retry_after(
                            response.retry_after_raw.as_deref(),
                            max_retry_after,
                        ),
                        body: p.payload.to_vec(),
                    });
                }
                Ok(Event::Incoming(Packet::Disconnect)) => {
                    return Waited::Failure(TransportFailure::Transient(
                        "DPS closed the MQTT connection before answering".into(),
                    ))
                }
                Ok(_) => {}
                Err(e) => {
                    return Waited::Failure(classify(&sign_failure, request_timeout, &e, false))
                }
            }
        }
    }
}

/// CONNACK with a refusal: the MQTT form of the HTTPS status the same request would get.
fn refused(code: ConnectReturnCode) -> Refusal {
    let (status, what) = match code {
        ConnectReturnCode::BadUserNamePassword => (401, "bad user name or password"),
        ConnectReturnCode::NotAuthorized => (401, "not authorized"),
        ConnectReturnCode::ServiceUnavailable => (503, "server unavailable"),
        ConnectReturnCode::BadClientId => (400, "identifier rejected"),
        ConnectReturnCode::RefusedProtocolVersion => (400, "unacceptable protocol version"),
        ConnectReturnCode::Success => (500, "success without a session"),
    };
    Refusal {
        status,
        message: format!(
            "DPS refused the MQTT CONNECT: {what} (return code {})",
            code as u8
        ),
    }
}

/// The answer a refused CONNECT stands for: its status and a DPS-shaped error body, so the
/// flow reports it as it reports the same refusal over HTTPS.
fn refusal_answer(refusal: Refusal) -> Answer {
    let body = ErrorBody {
        message: Some(refusal.message),
        ..ErrorBody::default()
    };
    Answer {
        status: refusal.status,
        retry_after: None,
        body: serde_json::to_vec(&body).unwrap_or_default(),
    }
}

/// Sorts an MQTT connection error into the kinds the flow retries or reports.
fn classify(
    sign_failure: &Option<SignFailure>,
    request_timeout: Duration,
    e: &ConnectionError,
    connecting: bool,
) -> TransportFailure {
    let detail = match plugin_or_tls_failure(sign_failure.as_ref(), e) {
        Ok(detail) => detail,
        Err(failure) => return failure,
    };
    match e {
        ConnectionError::NetworkTimeout | ConnectionError::FlushTimeout => {
            TransportFailure::Transient(format!(
                "no answer within {:?} ({detail})",
                request_timeout
            ))
        }
        ConnectionError::Io(io) if connecting && is_connect_error(io) => {
            TransportFailure::Connect(detail)
        }
        // The server answered the WebSocket upgrade with an HTTP error: a server error (or
        // 429) is worth retrying; any other, like an upgrade without the `mqtt` sub-protocol,
        // means no MQTT endpoint there (counted like a refused connection).
        ConnectionError::Websocket(WsError::Http(response)) => {
            let status = response.status();
            let what = format!("the WebSocket upgrade was refused with HTTP {status}");
            if status.is_server_error() || status.as_u16() == 429 {
                TransportFailure::Transient(what)
            } else {
                TransportFailure::Connect(what)
            }
        }
        ConnectionError::ResponseValidation(_) => TransportFailure::Connect(format!(
            "the server accepted the WebSocket without the `{}` sub-protocol ({detail})",
            topics::MQTT_WS_SUBPROTOCOL
        )),
        ConnectionError::Websocket(WsError::Io(io)) if connecting && is_connect_error(io) => {
            TransportFailure::Connect(detail)
        }
        _ => TransportFailure::Transient(detail),
    }
}

/// Errors of the TCP connect itself (nothing reached the server).
pub(crate) fn is_connect_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionRefused | NotFound | AddrNotAvailable | HostUnreachable | NetworkUnreachable
    ) || e.to_string().contains("lookup")
}

impl DpsTransport for MqttTransport {
    fn endpoint(&self) -> &str {
        &self.endpoint
    }

    async fn register(
        &mut self,
        body: Vec<u8>,
        authorization: Option<&str>,
    ) -> Result<Answer, TransportFailure> {
        self.request(topics::register_topic, body, authorization)
            .await
    }

    async fn operation_status(
        &mut self,
        operation_id: &str,
        authorization: Option<&str>,
    ) -> Result<Answer, TransportFailure> {
        let op = operation_id.to_string();
        self.request(
            move |rid| topics::operation_status_topic(rid, &op),
            Vec::new(),
            authorization,
        )
        .await
    }
}

/// The host and port of the MQTT endpoint for `carrier`: `host`, `host:port` or
/// `{scheme}://host[:port]` (`mqtts://` over TLS, `wss://` over a WebSocket); the port defaults
/// to the service's (8883 over TLS, 443 over a WebSocket). A URL of another scheme is refused,
/// since it names another endpoint; so is a path (the WebSocket path is the documented one).
pub(crate) fn host_port(endpoint: &str, carrier: Carrier) -> Result<(String, u16), String> {
    let e = endpoint.trim();
    let (flag, scheme) = (carrier.flag(), carrier.scheme());
    let forms = format!("host, host:port or {scheme}://host[:port]");
    if e.is_empty() {
        return Err("the DPS endpoint is empty".into());
    }
    let prefix = format!("{scheme}://");
    if e.contains("://") && !e.starts_with(&prefix) {
        return Err(format!(
            "the DPS endpoint `{e}` is a URL for another protocol; with --transport {flag} give {forms}"
        ));
    }
    let rest = e.strip_prefix(&prefix).unwrap_or(e).trim_end_matches('/');
    if rest.starts_with('[') {
        return Err(format!(
            "the DPS endpoint `{e}` is an IPv6 address; MQTT needs a host name or IPv4 address in this version"
        ));
    }
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) => {
            let port: u16 =
                p.parse().ok().filter(|p| *p != 0).ok_or_else(|| {
                    format!("the port in the DPS endpoint `{e}` is not a TCP port")
                })?;
            (h, port)
        }
        None => (rest, carrier.default_port()),
    };
    let ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.".contains(&b));
    if !ok {
        return Err(format!(
            "the DPS endpoint `{e}` is not a {}",
            forms.replacen("host, ", "host name, ", 1)
        ));
    }
    Ok((host.to_string(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        let tls = |e| host_port(e, Carrier::Tls);
        assert_eq!(
            tls("global.azure-devices-provisioning.net"),
            Ok(("global.azure-devices-provisioning.net".into(), 8883))
        );
        assert_eq!(tls("127.0.0.1:18883"), Ok(("127.0.0.1".into(), 18883)));
        assert_eq!(tls("mqtts://h:1/"), Ok(("h".into(), 1)));
        assert!(tls("https://h").is_err());
        assert!(tls("wss://h").is_err());
        assert!(tls("").is_err());
        assert!(tls("h:0").is_err());
        assert!(tls("h:x").is_err());
        assert!(tls("h/p").is_err());
        assert!(tls("[::1]:8883").is_err());
    }

    #[test]
    fn refused_websocket_upgrades_are_sorted_by_status() {
        use async_tungstenite::tungstenite::http::Response;
        let refused = |status: u16| {
            let response = Response::builder()
                .status(status)
                .body(None)
                .expect("a response");
            let e = ConnectionError::Websocket(WsError::Http(response));
            classify(&None, Duration::from_secs(1), &e, true)
        };
        for status in [400, 404] {
            match refused(status) {
                TransportFailure::Connect(what) => assert!(
                    what.contains(&format!("refused with HTTP {status}")),
                    "{what}"
                ),
                other => panic!("{status}: {other:?}"),
            }
        }
        for status in [429, 500, 503] {
            assert!(
                matches!(refused(status), TransportFailure::Transient(_)),
                "{status}"
            );
        }
    }

    #[test]
    fn websocket_endpoints() {
        let ws = |e| host_port(e, Carrier::WebSocket);
        assert_eq!(
            ws("global.azure-devices-provisioning.net"),
            Ok(("global.azure-devices-provisioning.net".into(), 443))
        );
        assert_eq!(ws("wss://h"), Ok(("h".into(), 443)));
        assert_eq!(ws("wss://h:8444/"), Ok(("h".into(), 8444)));
        assert_eq!(ws("127.0.0.1:1443"), Ok(("127.0.0.1".into(), 1443)));
        let e = ws("mqtts://h").expect_err("another scheme");
        assert!(
            e.contains("--transport mqtt-ws give host, host:port or wss://host[:port]"),
            "{e}"
        );
        assert!(ws("wss://h/$iothub/websocket").is_err());
        assert!(ws("wss://h:0").is_err());
        assert!(ws("wss://[::1]").is_err());
        assert_eq!(Carrier::WebSocket.url("h", 443), "wss://h:443");
        assert_eq!(Carrier::Tls.url("h", 8883), "mqtts://h:8883");
    }

    #[test]
    fn refused_connects_become_the_https_status() {
        let t = MqttTransport::new(
            rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .expect("ring supports the default versions")
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth(),
            MqttTarget {
                carrier: Carrier::Tls,
                host: "h".into(),
                port: 8883,
                id_scope: "0ne1",
                registration_id: "dev",
                api_version: "2021-06-01",
                request_timeout: Duration::from_secs(1),
                max_retry_after: Duration::from_secs(300),
            },
            None,
        )
        .expect("valid target");
        assert_eq!(t.endpoint(), "mqtts://h:8883");
        assert!(t
            .username
            .starts_with("0ne1/registrations/dev/api-version=2021-06-01&ClientVersion=hsmkit"));
        for (code, status) in [
            (ConnectReturnCode::NotAuthorized, 401),
            (ConnectReturnCode::BadUserNamePassword, 401),
            (ConnectReturnCode::ServiceUnavailable, 503),
            (ConnectReturnCode::BadClientId, 400),
        ] {
            let r = refused(code);
            assert_eq!(r.status, status);
            let a = refusal_answer(r);
            assert_eq!(a.status, status);
            let body: ErrorBody = serde_json::from_slice(&a.body).expect("JSON body");
            assert!(body
                .message
                .is_some_and(|m| m.starts_with("DPS refused the MQTT CONNECT")));
        }
    }
}
