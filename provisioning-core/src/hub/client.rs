//! [`HubClient`]: the device's connection to its IoT hub, kept open by one task that owns the
//! MQTT session ([`super::session`]), renews the SAS token by reconnecting, reconnects with
//! back-off after a drop and sends again whatever telemetry the hub had not acknowledged.

use super::options::{connect_target, renewal_delay, HubOptions};
use super::session::{packet_name, Session, Target};
use super::{C2dMessage, DesiredPatch, HubError, HubEvent};
use crate::dps::sas::expiry_from_now;
use crate::dps::tls::{
    client_config_with_operational_key, client_config_with_plugin_identity,
    client_config_without_identity,
};
use crate::dps::{root_store, Attestation, TlsSetupError};
use crate::plugin::PluginInstance;
use crate::provisioning::{hub_sas_token_until, HubTokenError, ProvisioningRecord};
use dps_proto::hub as proto;
use rumqttc::{Packet, PubAck, Publish, QoS, Subscribe, SubscribeFilter, SubscribeReasonCode};
use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use zeroize::Zeroizing;

/// The `DeviceClientType` hsmkit announces in the CONNECT user name.
pub const CLIENT_TYPE: &str = concat!("hsmkit/", env!("CARGO_PKG_VERSION"));

/// C2D messages and desired patches kept (unacknowledged) until a listener takes them.
const UNCLAIMED_LIMIT: usize = 64;

/// A device's connection to its IoT hub (MQTT 3.1.1 over TLS), made from the provisioning
/// record and the plugin that holds the identity.
///
/// ```no_run
/// # async fn demo(instance: std::sync::Arc<provisioning_core::plugin::PluginInstance>) -> Result<(), provisioning_core::hub::HubError> {
/// use provisioning_core::hub::{HubClient, HubOptions};
/// let hub = HubClient::from_state_dir("/var/lib/hsmkit".as_ref(), instance, HubOptions::default()).await?;
/// hub.send(b"{\"t\":21.5}".to_vec(), &[("$.ct".into(), "application/json".into())]).await?;
/// let twin = hub.twin().await?;
/// println!("desired: {:?}", twin.desired);
/// hub.close().await;
/// # Ok(()) }
/// ```
pub struct HubClient {
    commands: mpsc::UnboundedSender<Command>,
    closed: Arc<Mutex<Option<String>>>,
    connections: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
    hub: String,
    device_id: String,
    operation_timeout: Duration,
}

impl std::fmt::Debug for HubClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubClient")
            .field("hub", &self.hub)
            .field("device_id", &self.device_id)
            .finish_non_exhaustive()
    }
}

enum Command {
    Send {
        topic: String,
        body: Vec<u8>,
        done: oneshot::Sender<Result<(), HubError>>,
    },
    Twin {
        request: TwinKind,
        done: oneshot::Sender<Result<TwinAnswer, HubError>>,
    },
    Listen(mpsc::UnboundedSender<HubEvent>),
    Close(oneshot::Sender<()>),
}

#[derive(Clone, Debug)]
enum TwinKind {
    Get,
    Report(Vec<u8>),
}

enum TwinAnswer {
    Twin(proto::Twin),
    Version(u64),
}

impl HubClient {
    /// Connects the device that the provisioning record in `state_dir` describes; an error
    /// saying to run `hsmkit provision` first when there is none.
    pub async fn from_state_dir(
        state_dir: &Path,
        instance: Arc<PluginInstance>,
        options: HubOptions,
    ) -> Result<Self, HubError> {
        let record =
            crate::provisioning::load(state_dir)?.ok_or_else(|| HubError::NotProvisioned {
                state_dir: state_dir.display().to_string(),
            })?;
        Self::connect(&record, instance, options).await
    }

    /// Connects the device `record` describes to its assigned hub, signing through `instance`
    /// (SAS for symmetric key and TPM, the TLS handshake for X.509; a device with an issued
    /// operational certificate in its record presents that chain, the handshake signed by the
    /// operational key under the recorded label, whatever it onboarded with). Returns once the hub has
    /// accepted the connection and the subscriptions (C2D, twin answers, desired changes);
    /// refusals are reported at once, without retrying.
    pub async fn connect(
        record: &ProvisioningRecord,
        instance: Arc<PluginInstance>,
        options: HubOptions,
    ) -> Result<Self, HubError> {
        options.validate()?;
        let hub = record.assigned_hub().to_string();
        let device_id = record.device_id().to_string();
        let attestation = record.attestation();
        let (host, port) = connect_target(&hub, options.endpoint.as_deref(), options.websocket)?;
        let username = proto::username(&hub, &device_id, proto::API_VERSION, Some(CLIENT_TYPE))
            .map_err(|e| HubError::Config {
                reason: format!("the provisioning record's hub or device id is unusable: {e}"),
            })?;
        let roots = root_store(
            options.extra_trust_pem.as_deref(),
            options.trust_public_roots,
        )
        .map_err(tls_setup)?;
        // A device DPS issued an operational certificate to connects with it (mutual TLS,
        // the handshake signed by the operational key in the plugin) whatever it onboarded
        // with; the others as they onboarded: X.509 with their chain, SAS otherwise.
        let operational = record.operational_key_label();
        let (mut tls, sign_failure) = match (operational, attestation) {
            (Some(label), _) => {
                let (cfg, failure) =
                    client_config_with_operational_key(instance.clone(), label, roots)
                        .map_err(tls_setup)?;
                (cfg, Some(failure))
            }
            (None, Attestation::X509) => {
                let (cfg, failure) = client_config_with_plugin_identity(instance.clone(), roots)
                    .map_err(tls_setup)?;
                (cfg, Some(failure))
            }
            _ => (
                client_config_without_identity(roots).map_err(tls_setup)?,
                None,
            ),
        };
        // IoT Hub's MQTT endpoint negotiates no ALPN protocol.
        tls.alpn_protocols.clear();
        let target = Target {
            hub: hub.clone(),
            device_id: device_id.clone(),
            host,
            port,
            username,
            tls: Arc::new(tls),
            x509: sign_failure.is_some(),
            sign_failure,
            websocket: options.websocket,
        };
        let credentials = Credentials {
            instance,
            attestation,
            mutual_tls: target.x509,
            lifetime: options.sas_lifetime,
        };
        let (session, renew_at, early) = establish(&target, &credentials, &options).await?;
        let (commands, rx) = mpsc::unbounded_channel();
        let closed = Arc::new(Mutex::new(None));
        // This one; the driver counts the later ones.
        let connections = Arc::new(AtomicU64::new(1));
        let operation_timeout = options.operation_timeout;
        let driver = Driver {
            target,
            credentials,
            options,
            commands: rx,
            conn: Conn::Up(Box::new(session)),
            renew_at,
            ping_at: Instant::now(),
            awaiting_pingresp: false,
            epoch: 0,
            next_pkid: 1,
            next_rid: 1,
            telemetry: VecDeque::new(),
            twin: HashMap::new(),
            listener: None,
            unclaimed: VecDeque::new(),
            closed: closed.clone(),
            connections: connections.clone(),
            renewing: false,
        };
        let task = tokio::spawn(driver.run(early));
        Ok(HubClient {
            commands,
            closed,
            connections,
            task,
            hub,
            device_id,
            operation_timeout,
        })
    }

    /// The assigned hub's host name.
    pub fn hub(&self) -> &str {
        &self.hub
    }

    /// The device id.
    pub fn device_id(&self) -> &str {
        &self.device_id
    }

    /// How many connections the hub has accepted so far: 1 after [`HubClient::connect`], one
    /// more per reconnect and per token renewal.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }

    /// Sends one telemetry message (QoS 1) with `properties` in its property bag (application
    /// properties, and system properties as `$.ct`, `$.ce`, `$.mid`...); returns once the hub
    /// acknowledged it (PUBACK). A message sent while the connection is down, or not yet
    /// acknowledged when it dropped, is sent (again) after reconnecting: at least once.
    pub async fn send(
        &self,
        body: Vec<u8>,
        properties: &[(String, String)],
    ) -> Result<(), HubError> {
        if body.len() > proto::MAX_MESSAGE_BYTES {
            return Err(HubError::TooLarge {
                what: "message",
                size: body.len(),
                max: proto::MAX_MESSAGE_BYTES,
            });
        }
        let topic =
            proto::telemetry_topic(&self.device_id, properties).map_err(|e| HubError::Config {
                reason: e.to_string(),
            })?;
        let (done, answer) = oneshot::channel();
        self.command(Command::Send { topic, body, done })?;
        self.wait(
            answer,
            "waiting for the hub to acknowledge the message (PUBACK)",
        )
        .await
    }

    /// Reads the device twin (desired and reported properties, with their `$version`s).
    pub async fn twin(&self) -> Result<proto::Twin, HubError> {
        match self.twin_request(TwinKind::Get).await? {
            TwinAnswer::Twin(t) => Ok(t),
            TwinAnswer::Version(_) => Err(HubError::Protocol {
                detail: "a twin GET was answered as a patch".into(),
            }),
        }
    }

    /// Patches the reported properties with `patch` (a JSON object; `null` removes a
    /// property); returns the reported properties' new `$version`.
    pub async fn report(&self, patch: &serde_json::Value) -> Result<u64, HubError> {
        if !patch.is_object() {
            return Err(HubError::Config {
                reason: "a reported-properties patch must be a JSON object".into(),
            });
        }
        let body = serde_json::to_vec(patch).map_err(|e| HubError::Config {
            reason: format!("the patch cannot be serialised: {e}"),
        })?;
        if body.len() > proto::MAX_TWIN_SECTION_BYTES {
            return Err(HubError::TooLarge {
                what: "reported-properties patch",
                size: body.len(),
                max: proto::MAX_TWIN_SECTION_BYTES,
            });
        }
        match self.twin_request(TwinKind::Report(body)).await? {
            TwinAnswer::Version(v) => Ok(v),
            TwinAnswer::Twin(_) => Err(HubError::Protocol {
                detail: "a reported-properties patch was answered with a twin".into(),
            }),
        }
    }

    /// The C2D messages and desired-property changes from now on (and those that arrived
    /// before anyone listened, up to 64), plus connection changes. A C2D message is
    /// acknowledged to the hub once it is in this channel; until someone listens, the hub
    /// keeps it. Calling this again replaces the previous listener.
    pub fn events(&self) -> Result<mpsc::UnboundedReceiver<HubEvent>, HubError> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.command(Command::Listen(tx))?;
        Ok(rx)
    }

    /// Disconnects cleanly (DISCONNECT) and ends the connection task. Unacknowledged
    /// telemetry is given up.
    pub async fn close(self) {
        let (done, closed) = oneshot::channel();
        if self.commands.send(Command::Close(done)).is_ok() {
            let _ = closed.await;
        }
        let _ = self.task.await;
    }

    async fn twin_request(&self, request: TwinKind) -> Result<TwinAnswer, HubError> {
        let during = match request {
            TwinKind::Get => "waiting for the twin (GET)",
            TwinKind::Report(_) => "waiting for the reported-properties patch's answer",
        };
        let (done, answer) = oneshot::channel();
        self.command(Command::Twin { request, done })?;
        self.wait(answer, during).await
    }

    fn command(&self, c: Command) -> Result<(), HubError> {
        self.commands.send(c).map_err(|_| self.closed_error())
    }

    fn closed_error(&self) -> HubError {
        HubError::Closed {
            reason: self.closed.lock().ok().and_then(|r| r.clone()),
        }
    }

    async fn wait<T>(
        &self,
        answer: oneshot::Receiver<Result<T, HubError>>,
        during: &str,
    ) -> Result<T, HubError> {
        match tokio::time::timeout(self.operation_timeout, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(self.closed_error()),
            Err(_) => Err(HubError::Timeout {
                after: self.operation_timeout,
                during: during.to_string(),
            }),
        }
    }
}

fn tls_setup(e: TlsSetupError) -> HubError {
    match e {
        TlsSetupError::Plugin(p) => HubError::Plugin(p),
        other => HubError::Config {
            reason: other.to_string(),
        },
    }
}

/// How the device proves itself on each CONNECT.
struct Credentials {
    instance: Arc<PluginInstance>,
    attestation: Attestation,
    /// The TLS handshake proves the device (X.509, or an issued operational certificate):
    /// no SAS token.
    mutual_tls: bool,
    lifetime: Duration,
}

/// A CONNECT password and when it expires.
struct Token {
    password: Zeroizing<String>,
    expiry: u64,
}

impl Credentials {
    /// A fresh SAS token signed inside the plugin, or `None` for mutual TLS.
    fn token(&self, target: &Target) -> Result<Option<Token>, HubError> {
        if self.mutual_tls {
            return Ok(None);
        }
        let expiry = expiry_from_now(self.lifetime);
        let password = hub_sas_token_until(
            &self.instance,
            self.attestation,
            &target.hub,
            &target.device_id,
            expiry,
        )
        .map_err(|e| match e {
            HubTokenError::Plugin(p) => HubError::Plugin(p),
            other => HubError::Config {
                reason: other.to_string(),
            },
        })?;
        Ok(Some(Token {
            password: Zeroizing::new(password),
            expiry,
        }))
    }
}

/// The topic filters every connection subscribes to: C2D (QoS 1), twin answers and desired
/// changes.
fn subscriptions(device_id: &str) -> Result<Vec<SubscribeFilter>, HubError> {
    let c2d = proto::c2d_filter(device_id).map_err(|e| HubError::Config {
        reason: e.to_string(),
    })?;
    Ok(vec![
        SubscribeFilter::new(c2d, QoS::AtLeastOnce),
        SubscribeFilter::new(proto::TWIN_RESPONSE_FILTER.into(), QoS::AtMostOnce),
        SubscribeFilter::new(proto::TWIN_DESIRED_FILTER.into(), QoS::AtMostOnce),
    ])
}

/// The packet id of the connection's SUBSCRIBE (telemetry ids start above it).
const SUBSCRIBE_PKID: u16 = 1;

/// Opens a session with a fresh token and subscribes; returns it, when to renew the token, and
/// the packets that arrived before the SUBACK (handled first by the driver).
async fn establish(
    target: &Target,
    credentials: &Credentials,
    options: &HubOptions,
) -> Result<(Session, Option<Instant>, Vec<Packet>), HubError> {
    let token = credentials.token(target)?;
    let opened = Session::open(
        target,
        token.as_ref().map(|t| &t.password),
        options.keep_alive,
        options.connect_timeout,
    )
    .await;
    let mut session = match opened {
        Ok(s) => s,
        Err(e) => return Err(expired_or(e, token.as_ref(), target)),
    };
    let renew_at = token
        .as_ref()
        .map(|_| Instant::now() + renewal_delay(credentials.lifetime));
    drop(token);
    let mut subscribe = Subscribe::new_many(subscriptions(&target.device_id)?);
    subscribe.pkid = SUBSCRIBE_PKID;
    session.write(&Packet::Subscribe(subscribe)).await?;
    let mut early = Vec::new();
    let deadline = Instant::now() + options.connect_timeout;
    loop {
        let packet = tokio::time::timeout_at(deadline, session.read())
            .await
            .map_err(|_| HubError::Timeout {
                after: options.connect_timeout,
                during: "waiting for the subscriptions to be acknowledged (SUBACK)".into(),
            })??;
        match packet {
            Packet::SubAck(ack) if ack.pkid == SUBSCRIBE_PKID => {
                check_suback(&ack.return_codes)?;
                return Ok((session, renew_at, early));
            }
            other => early.push(other),
        }
    }
}

/// The C2D and twin-answer subscriptions must hold; desired-property changes are optional
/// (a hub without them still serves telemetry, C2D and the twin).
fn check_suback(codes: &[SubscribeReasonCode]) -> Result<(), HubError> {
    let refused = |i: usize| matches!(codes.get(i), Some(SubscribeReasonCode::Failure) | None);
    if refused(0) || refused(1) {
        return Err(HubError::Protocol {
            detail: format!(
                "the hub refused the subscription to C2D messages or twin answers (SUBACK {codes:?})"
            ),
        });
    }
    if refused(2) {
        tracing::warn!("the hub refused the desired-property subscription; desired changes will not be received");
    }
    Ok(())
}

/// A credentials refusal while the token's expiry has passed is an expired token.
fn expired_or(e: HubError, token: Option<&Token>, target: &Target) -> HubError {
    match (e, token) {
        (HubError::NotAuthorized { .. } | HubError::BadCredentials { .. }, Some(t))
            if t.expiry <= expiry_from_now(Duration::ZERO) =>
        {
            HubError::TokenExpired {
                device_id: target.device_id.clone(),
                expiry: t.expiry,
            }
        }
        (e, _) => e,
    }
}

/// A copy of `e` for each waiting caller (the plugin's and the record's errors, which cannot be
/// copied, as their message).
fn duplicate(e: &HubError) -> HubError {
    match e {
        HubError::BadCredentials { hub, device_id } => HubError::BadCredentials {
            hub: hub.clone(),
            device_id: device_id.clone(),
        },
        HubError::NotAuthorized { hub, device_id } => HubError::NotAuthorized {
            hub: hub.clone(),
            device_id: device_id.clone(),
        },
        HubError::TokenExpired { device_id, expiry } => HubError::TokenExpired {
            device_id: device_id.clone(),
            expiry: *expiry,
        },
        HubError::TlsTrust {
            verified_name,
            endpoint,
            detail,
        } => HubError::TlsTrust {
            verified_name: verified_name.clone(),
            endpoint: endpoint.clone(),
            detail: detail.clone(),
        },
        HubError::ClientCertificateRefused { hub, alert } => HubError::ClientCertificateRefused {
            hub: hub.clone(),
            alert: alert.clone(),
        },
        HubError::ReconnectFailed { attempts, last } => HubError::ReconnectFailed {
            attempts: *attempts,
            last: last.clone(),
        },
        other => HubError::Closed {
            reason: Some(other.to_string()),
        },
    }
}

/// The connection, or the wait before the next attempt to open one.
enum Conn {
    Up(Box<Session>),
    Down { attempt: u32, retry_at: Instant },
}

/// Telemetry waiting for its PUBACK (sent, or to be sent once connected).
struct Pending {
    pkid: u16,
    topic: String,
    body: Vec<u8>,
    /// Whether it went out on the current connection.
    sent: bool,
    /// Whether it went out on any connection (a resend is marked DUP).
    ever_sent: bool,
    done: oneshot::Sender<Result<(), HubError>>,
}

/// A twin request waiting for its answer.
struct TwinPending {
    request: TwinKind,
    sent: bool,
    done: oneshot::Sender<Result<TwinAnswer, HubError>>,
}

/// A C2D message or desired change nobody has listened for yet.
struct Unclaimed {
    event: HubEvent,
    /// The C2D message's packet id and the connection it came on (acknowledged only there).
    ack: Option<(u16, u64)>,
}

/// What woke the driver.
enum Wake {
    Command(Option<Command>),
    Packet(Result<Packet, HubError>),
    Ping,
    Renew,
    Retry,
}

struct Driver {
    target: Target,
    credentials: Credentials,
    options: HubOptions,
    commands: mpsc::UnboundedReceiver<Command>,
    conn: Conn,
    renew_at: Option<Instant>,
    ping_at: Instant,
    awaiting_pingresp: bool,
    /// Counts connections, so that a C2D message is acknowledged only on its own.
    epoch: u64,
    next_pkid: u16,
    next_rid: u64,
    telemetry: VecDeque<Pending>,
    twin: HashMap<String, TwinPending>,
    listener: Option<mpsc::UnboundedSender<HubEvent>>,
    unclaimed: VecDeque<Unclaimed>,
    closed: Arc<Mutex<Option<String>>>,
    connections: Arc<AtomicU64>,
    /// The connection is down for a token renewal, not a failure: no events for it.
    renewing: bool,
}

impl Driver {
    /// Keeps the connection until the client is closed or dropped, or reconnecting fails.
    async fn run(mut self, early: Vec<Packet>) {
        self.connected(early).await;
        let reason = loop {
            let wake = self.next_wake().await;
            let result = match wake {
                Wake::Command(None) => break None,
                Wake::Command(Some(Command::Close(done))) => {
                    self.shut_down().await;
                    let _ = done.send(());
                    break None;
                }
                Wake::Command(Some(c)) => {
                    self.command(c).await;
                    Ok(())
                }
                Wake::Packet(Ok(p)) => self.incoming(p).await,
                Wake::Packet(Err(e)) => {
                    self.lost(e);
                    Ok(())
                }
                Wake::Ping => {
                    self.ping().await;
                    Ok(())
                }
                Wake::Renew => {
                    self.renew().await;
                    Ok(())
                }
                Wake::Retry => self.retry().await,
            };
            if let Err(fatal) = result {
                let reason = fatal.to_string();
                self.fail_all(&fatal);
                break Some(reason);
            }
        };
        if let Ok(mut slot) = self.closed.lock() {
            *slot = reason.or_else(|| Some("closed by the application".into()));
        }
    }

    async fn next_wake(&mut self) -> Wake {
        let commands = &mut self.commands;
        match &mut self.conn {
            Conn::Up(session) => {
                let renew_at = self.renew_at;
                tokio::select! {
                    c = commands.recv() => Wake::Command(c),
                    p = session.read() => Wake::Packet(p),
                    _ = tokio::time::sleep_until(self.ping_at) => Wake::Ping,
                    _ = sleep_until_opt(renew_at) => Wake::Renew,
                }
            }
            Conn::Down { retry_at, .. } => {
                let retry_at = *retry_at;
                tokio::select! {
                    c = commands.recv() => Wake::Command(c),
                    _ = tokio::time::sleep_until(retry_at) => Wake::Retry,
                }
            }
        }
    }

    /// After a CONNACK and SUBACK: handle what came early, send what waits, schedule pings.
    async fn connected(&mut self, early: Vec<Packet>) {
        self.epoch += 1;
        self.awaiting_pingresp = false;
        self.ping_at = Instant::now() + self.ping_interval();
        for p in early {
            if let Err(e) = self.incoming(p).await {
                self.lost(e);
                return;
            }
        }
        self.flush_waiting().await;
    }

    /// Pings at three quarters of the keep-alive, so the hub never waits longer than it was
    /// told.
    fn ping_interval(&self) -> Duration {
        (self.options.keep_alive * 3 / 4).max(Duration::from_millis(500))
    }

    /// Sends the telemetry and twin requests that have not gone out on this connection, in
    /// the order they were made; callers that gave up are dropped first.
    async fn flush_waiting(&mut self) {
        self.telemetry.retain(|p| !p.done.is_closed());
        self.twin.retain(|_, t| !t.done.is_closed());
        let mut out = Vec::new();
        for p in self.telemetry.iter_mut().filter(|p| !p.sent) {
            let mut publish = Publish::new(p.topic.clone(), QoS::AtLeastOnce, p.body.clone());
            publish.pkid = p.pkid;
            // Sent before, on a connection that dropped: a duplicate for the hub.
            publish.dup = p.ever_sent;
            p.sent = true;
            p.ever_sent = true;
            out.push(Packet::Publish(publish));
        }
        let mut rids: Vec<&String> = self
            .twin
            .iter()
            .filter(|(_, t)| !t.sent)
            .map(|(r, _)| r)
            .collect();
        rids.sort_by_key(|r| r.parse::<u64>().unwrap_or(u64::MAX));
        let mut twin_out = Vec::new();
        for rid in rids {
            if let Some(t) = self.twin.get(rid) {
                match twin_packet(rid, &t.request) {
                    Ok(p) => twin_out.push((rid.clone(), p)),
                    Err(e) => tracing::warn!("cannot build a twin request: {e}"),
                }
            }
        }
        for (rid, _) in &twin_out {
            if let Some(t) = self.twin.get_mut(rid) {
                t.sent = true;
            }
        }
        out.extend(twin_out.into_iter().map(|(_, p)| p));
        for p in out {
            if let Err(e) = self.write(&p).await {
                self.lost(e);
                return;
            }
        }
    }

    async fn write(&mut self, p: &Packet) -> Result<(), HubError> {
        match &mut self.conn {
            Conn::Up(session) => session.write(p).await,
            Conn::Down { .. } => Err(HubError::ConnectionLost {
                detail: "not connected".into(),
            }),
        }
    }

    async fn command(&mut self, c: Command) {
        match c {
            Command::Send { topic, body, done } => {
                let Some(pkid) = self.take_pkid() else {
                    let _ = done.send(Err(HubError::Protocol {
                        detail: "65 000 messages are waiting for their PUBACK".into(),
                    }));
                    return;
                };
                self.telemetry.push_back(Pending {
                    pkid,
                    topic,
                    body,
                    sent: false,
                    ever_sent: false,
                    done,
                });
            }
            Command::Twin { request, done } => {
                let rid = self.next_rid.to_string();
                self.next_rid += 1;
                self.twin.insert(
                    rid,
                    TwinPending {
                        request,
                        sent: false,
                        done,
                    },
                );
            }
            Command::Listen(tx) => {
                self.listener = Some(tx);
                self.deliver_unclaimed().await;
                return;
            }
            Command::Close(_) => return,
        }
        if matches!(self.conn, Conn::Up(_)) {
            self.flush_waiting().await;
        }
    }

    /// A packet id no waiting message uses (1 is the SUBSCRIBE's).
    fn take_pkid(&mut self) -> Option<u16> {
        for _ in 0..u16::MAX {
            let id = self.next_pkid;
            self.next_pkid = if id == u16::MAX {
                SUBSCRIBE_PKID + 1
            } else {
                id + 1
            };
            if id > SUBSCRIBE_PKID && !self.telemetry.iter().any(|p| p.pkid == id) {
                return Some(id);
            }
        }
        None
    }

    async fn incoming(&mut self, packet: Packet) -> Result<(), HubError> {
        // Any packet shows the connection is alive.
        self.awaiting_pingresp = false;
        match packet {
            Packet::PubAck(ack) => {
                if let Some(i) = self
                    .telemetry
                    .iter()
                    .position(|p| p.pkid == ack.pkid && p.sent)
                {
                    if let Some(p) = self.telemetry.remove(i) {
                        let _ = p.done.send(Ok(()));
                    }
                }
            }
            Packet::Publish(p) => self.publish(p).await,
            Packet::PingResp | Packet::SubAck(_) | Packet::UnsubAck(_) => {}
            Packet::Disconnect => self.lost(HubError::ConnectionLost {
                detail: "the hub sent DISCONNECT".into(),
            }),
            other => {
                tracing::debug!(
                    packet = packet_name(&other),
                    "ignoring a packet the hub should not send"
                );
            }
        }
        Ok(())
    }

    async fn publish(&mut self, p: Publish) {
        let ack = (p.qos == QoS::AtLeastOnce).then_some(p.pkid);
        if p.topic.starts_with(proto::TWIN_RESPONSE_PREFIX) {
            self.twin_answer(&p);
            self.ack(ack).await;
            return;
        }
        let event = if p.topic.starts_with(proto::TWIN_DESIRED_PREFIX) {
            match (
                proto::parse_desired_patch_topic(&p.topic),
                serde_json::from_slice::<serde_json::Value>(&p.payload),
            ) {
                (Ok(version), Ok(patch)) => {
                    Some(HubEvent::DesiredPatch(DesiredPatch { version, patch }))
                }
                _ => {
                    tracing::warn!(topic = %p.topic.escape_debug(), "ignoring a malformed desired-property change");
                    None
                }
            }
        } else {
            match proto::parse_c2d_topic(&self.target.device_id, &p.topic) {
                Ok(properties) => Some(HubEvent::Message(C2dMessage {
                    properties,
                    body: p.payload.to_vec(),
                })),
                Err(_) => {
                    tracing::debug!(topic = %p.topic.escape_debug(), "ignoring a message on an unknown topic");
                    None
                }
            }
        };
        let Some(event) = event else {
            self.ack(ack).await;
            return;
        };
        if self.hand_over(event.clone()) {
            self.ack(ack).await;
        } else if self.unclaimed.len() < UNCLAIMED_LIMIT {
            // Not acknowledged: the hub keeps a C2D message until a listener has it.
            self.unclaimed.push_back(Unclaimed {
                event,
                ack: ack.map(|pkid| (pkid, self.epoch)),
            });
        }
    }

    /// Gives `event` to the listener; false when there is none (any more).
    fn hand_over(&mut self, event: HubEvent) -> bool {
        match &self.listener {
            Some(tx) if tx.send(event).is_ok() => true,
            Some(_) => {
                self.listener = None;
                false
            }
            None => false,
        }
    }

    async fn deliver_unclaimed(&mut self) {
        while let Some(u) = self.unclaimed.pop_front() {
            if !self.hand_over(u.event.clone()) {
                self.unclaimed.push_front(u);
                return;
            }
            if let Some((pkid, epoch)) = u.ack {
                if epoch == self.epoch {
                    self.ack(Some(pkid)).await;
                }
            }
        }
    }

    async fn ack(&mut self, pkid: Option<u16>) {
        if let Some(pkid) = pkid {
            if let Err(e) = self.write(&Packet::PubAck(PubAck::new(pkid))).await {
                self.lost(e);
            }
        }
    }

    fn twin_answer(&mut self, p: &Publish) {
        let Ok(answer) = proto::parse_twin_response_topic(&p.topic) else {
            tracing::debug!(topic = %p.topic.escape_debug(), "ignoring a malformed twin answer");
            return;
        };
        let Some(pending) = self.twin.remove(&answer.rid) else {
            return;
        };
        let result = match (&pending.request, answer.status) {
            (TwinKind::Get, 200) => serde_json::from_slice::<proto::Twin>(&p.payload)
                .map(TwinAnswer::Twin)
                .map_err(|e| HubError::Protocol {
                    detail: format!("the twin is not the documented JSON: {e}"),
                }),
            (TwinKind::Report(_), 200..=299) => {
                answer
                    .version
                    .map(TwinAnswer::Version)
                    .ok_or(HubError::Protocol {
                        detail: "the patch's answer has no $version".into(),
                    })
            }
            (kind, status) => Err(HubError::TwinStatus {
                operation: match kind {
                    TwinKind::Get => "GET",
                    TwinKind::Report(_) => "PATCH reported",
                },
                status,
            }),
        };
        let _ = pending.done.send(result);
    }

    async fn ping(&mut self) {
        if self.awaiting_pingresp {
            self.lost(HubError::ConnectionLost {
                detail: format!(
                    "no answer to a keep-alive ping within {:?}",
                    self.ping_interval()
                ),
            });
            return;
        }
        self.ping_at = Instant::now() + self.ping_interval();
        self.awaiting_pingresp = true;
        if let Err(e) = self.write(&Packet::PingReq).await {
            self.lost(e);
        }
    }

    /// The token is close to expiry: a clean DISCONNECT, then a new connection with a fresh
    /// token (IoT Hub over MQTT renews only by reconnecting).
    async fn renew(&mut self) {
        tracing::info!("renewing the SAS token: reconnecting");
        self.renew_at = None;
        self.renewing = true;
        let old = std::mem::replace(
            &mut self.conn,
            Conn::Down {
                attempt: 0,
                retry_at: Instant::now(),
            },
        );
        if let Conn::Up(session) = old {
            session.close().await;
        }
        self.mark_unsent();
    }

    /// The connection dropped: tell the listener, and try again right away (later attempts
    /// back off).
    fn lost(&mut self, e: HubError) {
        if matches!(self.conn, Conn::Down { .. }) {
            return;
        }
        tracing::warn!("IoT Hub connection lost: {e}");
        self.renewing = false;
        let _ = self.hand_over(HubEvent::Disconnected {
            reason: e.to_string(),
        });
        self.conn = Conn::Down {
            attempt: 0,
            retry_at: Instant::now(),
        };
        self.renew_at = None;
        self.mark_unsent();
    }

    /// Nothing on the old connection counts as sent any more; unacknowledged C2D messages
    /// come again from the hub.
    fn mark_unsent(&mut self) {
        for p in &mut self.telemetry {
            p.sent = false;
        }
        for t in self.twin.values_mut() {
            t.sent = false;
        }
        self.unclaimed.retain(|u| u.ack.is_none());
    }

    async fn retry(&mut self) -> Result<(), HubError> {
        let Conn::Down { attempt, .. } = &self.conn else {
            return Ok(());
        };
        let attempt = *attempt + 1;
        match establish(&self.target, &self.credentials, &self.options).await {
            Ok((session, renew_at, early)) => {
                tracing::info!(attempt, "reconnected to the IoT hub");
                self.connections.fetch_add(1, Ordering::Relaxed);
                self.conn = Conn::Up(Box::new(session));
                self.renew_at = renew_at;
                if !std::mem::take(&mut self.renewing) {
                    let _ = self.hand_over(HubEvent::Reconnected);
                }
                self.connected(early).await;
                Ok(())
            }
            Err(e) if !e.is_transient() => Err(e),
            Err(e) if attempt >= self.options.reconnect.max_attempts => {
                Err(HubError::ReconnectFailed {
                    attempts: attempt,
                    last: e.to_string(),
                })
            }
            Err(e) => {
                if std::mem::take(&mut self.renewing) {
                    // The renewal's reconnect failed: from here on it is a lost connection.
                    let _ = self.hand_over(HubEvent::Disconnected {
                        reason: e.to_string(),
                    });
                }
                let wait = self.options.reconnect.delay(attempt);
                tracing::warn!(
                    attempt,
                    "reconnecting to the IoT hub failed ({e}); next attempt in {wait:?}"
                );
                self.conn = Conn::Down {
                    attempt,
                    retry_at: Instant::now() + wait,
                };
                Ok(())
            }
        }
    }

    fn fail_all(&mut self, e: &HubError) {
        for p in self.telemetry.drain(..) {
            let _ = p.done.send(Err(duplicate(e)));
        }
        for (_, t) in self.twin.drain() {
            let _ = t.done.send(Err(duplicate(e)));
        }
        let _ = self.hand_over(HubEvent::Disconnected {
            reason: e.to_string(),
        });
    }

    async fn shut_down(&mut self) {
        let closing = HubError::Closed {
            reason: Some("closed by the application".into()),
        };
        self.fail_all(&closing);
        if let Conn::Up(session) = std::mem::replace(
            &mut self.conn,
            Conn::Down {
                attempt: 0,
                retry_at: Instant::now(),
            },
        ) {
            session.close().await;
        }
    }
}

fn twin_packet(rid: &str, request: &TwinKind) -> Result<Packet, HubError> {
    let bad = |e: dps_proto::mqtt::MqttTopicError| HubError::Protocol {
        detail: e.to_string(),
    };
    let p = match request {
        TwinKind::Get => Publish::new(
            proto::twin_get_topic(rid).map_err(bad)?,
            QoS::AtMostOnce,
            Vec::new(),
        ),
        TwinKind::Report(body) => Publish::new(
            proto::twin_report_topic(rid).map_err(bad)?,
            QoS::AtMostOnce,
            body.clone(),
        ),
    };
    Ok(Packet::Publish(p))
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscriptions_must_hold_for_c2d_and_twin_answers() {
        let ok = SubscribeReasonCode::Success(QoS::AtMostOnce);
        let fail = SubscribeReasonCode::Failure;
        assert!(check_suback(&[ok, ok, ok]).is_ok());
        // A hub without desired-property changes still serves the rest.
        assert!(check_suback(&[ok, ok, fail]).is_ok());
        for codes in [vec![fail, ok, ok], vec![ok, fail, ok], vec![ok]] {
            let e = check_suback(&codes).unwrap_err();
            assert!(matches!(e, HubError::Protocol { .. }), "{e}");
        }
        let filters = subscriptions("dev-1").unwrap();
        let paths: Vec<&str> = filters.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "devices/dev-1/messages/devicebound/#",
                "$iothub/twin/res/#",
                "$iothub/twin/PATCH/properties/desired/#"
            ]
        );
        assert_eq!(filters[0].qos, QoS::AtLeastOnce);
        assert!(subscriptions("a/b").is_err());
    }

    fn target() -> Target {
        let roots = root_store(None, true).unwrap();
        Target {
            hub: "h.azure-devices.net".into(),
            device_id: "dev-1".into(),
            host: "127.0.0.1".into(),
            port: 8883,
            username: "u".into(),
            tls: Arc::new(client_config_without_identity(roots).unwrap()),
            sign_failure: None,
            x509: false,
            websocket: false,
        }
    }

    #[test]
    fn a_refusal_with_an_expired_token_is_an_expired_token() {
        let t = target();
        let refused = || HubError::NotAuthorized {
            hub: t.hub.clone(),
            device_id: t.device_id.clone(),
        };
        let past = Token {
            password: Zeroizing::new(String::new()),
            expiry: 1,
        };
        let e = expired_or(refused(), Some(&past), &t);
        assert!(matches!(e, HubError::TokenExpired { expiry: 1, .. }), "{e}");
        assert!(e.to_string().contains("expired"), "{e}");
        let future = Token {
            password: Zeroizing::new(String::new()),
            expiry: expiry_from_now(Duration::from_secs(60)),
        };
        assert!(matches!(
            expired_or(refused(), Some(&future), &t),
            HubError::NotAuthorized { .. }
        ));
        // X.509 has no token: the refusal stays what it is.
        assert!(matches!(
            expired_or(refused(), None, &t),
            HubError::NotAuthorized { .. }
        ));
        // Other failures are not about the token.
        let e = expired_or(
            HubError::Unavailable { hub: t.hub.clone() },
            Some(&past),
            &t,
        );
        assert!(matches!(e, HubError::Unavailable { .. }));
    }

    #[test]
    fn every_waiting_caller_gets_the_failure() {
        let e = HubError::TlsTrust {
            verified_name: "h".into(),
            endpoint: "127.0.0.1:1".into(),
            detail: "invalid peer certificate: UnknownIssuer".into(),
        };
        let d = duplicate(&e);
        assert_eq!(d.kind(), "tls-trust");
        assert_eq!(d.to_string(), e.to_string());
        let e = HubError::ConnectionLost {
            detail: "reset".into(),
        };
        let d = duplicate(&e);
        assert_eq!(d.kind(), "closed");
        assert!(d.to_string().contains("reset"), "{d}");
    }

    #[test]
    fn twin_requests_use_the_documented_topics() {
        let Packet::Publish(p) = twin_packet("7", &TwinKind::Get).unwrap() else {
            panic!("a PUBLISH")
        };
        assert_eq!(p.topic, "$iothub/twin/GET/?$rid=7");
        assert!(p.payload.is_empty());
        let Packet::Publish(p) =
            twin_packet("8", &TwinKind::Report(b"{\"a\":1}".to_vec())).unwrap()
        else {
            panic!("a PUBLISH")
        };
        assert_eq!(p.topic, "$iothub/twin/PATCH/properties/reported/?$rid=8");
        assert_eq!(&p.payload[..], b"{\"a\":1}");
    }
}
