//! One device's connection to its emulated hub, over the emulator's MQTT listener (service
//! documentation "Communicate with an IoT hub using the MQTT protocol"; topics and user name
//! are `dps_proto::hub`'s).
//!
//! - CONNECT: user name `{hub}/{deviceId}/?api-version=...` naming one of the emulator's hubs
//!   (and, when the TLS SNI names a hub, that one), client id = device id, no module identity;
//!   password = a SAS token for `{hub}/devices/{deviceId}` signed with the device's key (none
//!   for X.509: the TLS client chain, leaf CN = device id, trusted as the enrollment trusted
//!   it). Refusals: a malformed user name, an unknown hub or a module: CONNACK 4; a client id
//!   other than the device id: 2; an unknown or disabled device or a refused credential: 5
//!   "not authorized" (the reason is logged, never sent). No session is kept (`session
//!   present` 0, whatever `clean session` asked): pending cloud-to-device messages are kept by
//!   the hub, not the session, and are delivered when the device subscribes again.
//! - PUBLISH (QoS 0 or 1) to the device's own telemetry topic: stored with its property bag
//!   (at most 256 KiB of body, the service's message size); the PUBACK is sent once it is on
//!   disk. A message with the RETAIN flag is not retained: it gets the application property
//!   `mqtt-retain` = `true`, as the service documents. A Will message (CONNECT) on the
//!   device's telemetry topic is stored as telemetry with `iothub-MessageType` = `Will` when
//!   the connection ends without a DISCONNECT; a Will on another topic is ignored. Twin GET (`$iothub/twin/GET/?$rid=`) is answered `200` with `{"desired",
//!   "reported"}`, a reported patch (`$iothub/twin/PATCH/properties/reported/?$rid=`) merged
//!   (`null` deletes) and answered `204` with the new `$version`, a refused patch `400`; answers
//!   go to a device subscribed to `$iothub/twin/res/#`.
//! - SUBSCRIBE: the device's own `devices/{deviceId}/messages/devicebound/#` (pending
//!   cloud-to-device messages are then published, QoS 1 when granted, and removed once
//!   PUBACKed), `$iothub/twin/res/#`, `$iothub/twin/PATCH/properties/desired/#` (desired
//!   changes pushed with their `$version`); granted at most QoS 1. Direct methods
//!   (`$iothub/methods/POST/#`) are not emulated: that filter gets a failure code (0x80) in the
//!   SUBACK. Any other filter, another device's topics, another topic, QoS 2, an oversized
//!   payload: the connection is closed.

use bytes::Bytes;
use rumqttc::mqttbytes::v4::{
    ConnectReturnCode, Packet, PubAck, Publish, SubAck, SubscribeReasonCode, UnsubAck,
};
use rumqttc::mqttbytes::QoS;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, Notify};

use super::identity::verify_connect;
use super::{twin, DeviceStatus, HubDevice, HubError};
use crate::app_state::AppState;
use crate::transport::mqtt::{Close, Connected, Service, PACKET_OVERHEAD};
use dps_proto::hub::{
    self as rules, Username, MAX_MESSAGE_BYTES, TWIN_DESIRED_FILTER, TWIN_RESPONSE_FILTER,
};

/// The direct-methods filter, which the emulator acknowledges with a failure code.
const METHODS_FILTER: &str = "$iothub/methods/POST/#";

/// Cloud-to-device messages sent and not yet acknowledged, per connection.
const MAX_C2D_IN_FLIGHT: usize = 16;

/// A connected device: (hub, device id).
type DeviceKey = (String, String);

/// The open hub connections, by device: each with its own number and the notifier that
/// closes it.
#[derive(Default)]
pub(crate) struct Sessions {
    open: Mutex<HashMap<DeviceKey, (u64, Arc<Notify>)>>,
    next: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sessions { .. }")
    }
}

impl Sessions {
    /// Registers a new connection of `key`, closing the one it replaces; returns its number.
    fn take_over(&self, key: DeviceKey, replaced: Arc<Notify>) -> u64 {
        let id = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, old)) = open.insert(key, (id, replaced)) {
            // notify_one stores a permit: the old loop ends even if it is not waiting yet.
            old.notify_one();
        }
        id
    }

    /// Forgets connection `id` of `key`, unless a newer one took its place.
    fn end(&self, key: &DeviceKey, id: u64) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if open.get(key).is_some_and(|(n, _)| *n == id) {
            open.remove(key);
        }
    }
}

/// A hub connection, from its CONNECT to its close.
pub(crate) async fn serve<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    mut conn: Connected<S>,
    app: Arc<AppState>,
    user: Username,
) -> Close {
    let Some(hub) = app
        .hubs
        .iter()
        .find(|h| h.eq_ignore_ascii_case(&user.hub))
        .cloned()
    else {
        tracing::info!(hub = %user.hub, "hub CONNECT refused: not a hub of this emulator");
        return conn.refuse(ConnectReturnCode::BadUserNamePassword).await;
    };
    if let Some(sni) = &conn.sni {
        if app.hubs.iter().any(|h| h.eq_ignore_ascii_case(sni)) && !sni.eq_ignore_ascii_case(&hub) {
            tracing::info!(%hub, %sni, "hub CONNECT refused: the TLS server name is another hub");
            return conn.refuse(ConnectReturnCode::BadUserNamePassword).await;
        }
    }
    if user.module_id.is_some() {
        tracing::info!(%hub, "hub CONNECT refused: module identities are not emulated");
        return conn.refuse(ConnectReturnCode::BadUserNamePassword).await;
    }
    if conn.connect.client_id != user.device_id {
        return conn.refuse(ConnectReturnCode::BadClientId).await;
    }
    let device_id = user.device_id.clone();
    let password = conn
        .connect
        .login
        .as_ref()
        .map(|l| l.password.clone())
        .unwrap_or_default();
    let chain = conn.chain.clone();
    let will = conn.connect.last_will.clone().and_then(|w| {
        match rules::parse_telemetry_topic(&user.device_id, &w.topic) {
            Ok(mut properties) if w.message.len() <= MAX_MESSAGE_BYTES => {
                if w.retain {
                    properties.push(retain_property());
                }
                properties.push(("iothub-MessageType".into(), "Will".into()));
                Some((properties, w.message))
            }
            _ => {
                tracing::debug!(device_id = %user.device_id, "Will message ignored: not on the device's telemetry topic");
                None
            }
        }
    });
    let store = app.store.clone();
    let (h, d) = (hub.clone(), device_id.clone());
    let app_for_check = app.clone();
    let checked = tokio::task::spawn_blocking(move || -> Result<HubDevice, String> {
        let device = store
            .hub_device(&h, &d)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| "no such device in this hub".to_string())?;
        if device.status == DeviceStatus::Disabled {
            return Err("the device is disabled".into());
        }
        // A device DPS issued an operational certificate to may present it (the hub trusts
        // the issuing CA for that device id); otherwise, or when that check fails, the
        // credential it onboarded with.
        let issued_refused = if device.issued_certificate && !chain.is_empty() {
            match crate::issuance::verify_issued_client(
                &app_for_check.issuing_ca,
                &app_for_check.config.state_dir,
                &chain,
                &device.device_id,
            ) {
                Ok(()) => return Ok(device),
                Err(reason) => Some(reason),
            }
        } else {
            None
        };
        verify_connect(&device, &password, &chain).map_err(|reason| match issued_refused {
            Some(issued) => {
                format!("issued certificate: {issued}; onboarding credential: {reason}")
            }
            None => reason,
        })?;
        Ok(device)
    })
    .await
    .unwrap_or_else(|_| Err("the check failed".into()));
    let device = match checked {
        Ok(d) => d,
        Err(reason) => {
            tracing::info!(%hub, device_id, %reason, "hub CONNECT refused");
            return conn.refuse(ConnectReturnCode::NotAuthorized).await;
        }
    };
    // The hub's message size, not the DPS body bound.
    conn.reader.max_packet = MAX_MESSAGE_BYTES + PACKET_OVERHEAD;
    let open = match conn.accept().await {
        Ok(o) => o,
        Err(e) => return e,
    };
    tracing::debug!(%hub, device_id, "hub device connected");
    let key = (hub.clone(), device_id.clone());
    let session_id = app
        .hub_sessions
        .take_over(key.clone(), open.replaced.clone());
    let shared = Arc::new(Mutex::new(Shared {
        desired_seen: twin::section_version(&device.desired),
        ..Shared::default()
    }));
    let wake = Arc::new(Notify::new());
    let mut session = HubSession {
        app: app.clone(),
        hub,
        device_id,
        tx: open.tx.clone(),
        shared,
        wake,
        delivering: Arc::new(tokio::sync::Mutex::new(())),
    };
    let delivery = tokio::spawn(session.clone_for_delivery().deliver());
    let why = open.run(&app, &mut session).await;
    delivery.abort();
    app.hub_sessions.end(&key, session_id);
    if let (Some((properties, message)), false) = (will, matches!(why, Close::Disconnect)) {
        // The connection ended without a DISCONNECT: the Will is sent (MQTT 3.1.1, 3.1.2.5).
        let store = app.store.clone();
        let (hub, dev) = key;
        if let Err(e) =
            blocking(move || store.store_telemetry(&hub, &dev, &properties, &message)).await
        {
            tracing::warn!(error = %e, "storing a Will message failed");
        }
    }
    why
}

/// What the read loop and the delivery task share.
#[derive(Default)]
struct Shared {
    /// Granted QoS of each subscription, `None` while not subscribed.
    c2d: Option<QoS>,
    twin_res: Option<QoS>,
    desired: Option<QoS>,
    /// Cloud-to-device messages sent at QoS 1 and not yet acknowledged: packet id → message.
    in_flight: HashMap<u16, i64>,
    next_pkid: u16,
    /// The desired `$version` the device has (from the CONNECT, then from pushes).
    desired_seen: u64,
}

impl Shared {
    fn pkid(&mut self) -> u16 {
        loop {
            self.next_pkid = self.next_pkid.wrapping_add(1);
            if self.next_pkid != 0 && !self.in_flight.contains_key(&self.next_pkid) {
                return self.next_pkid;
            }
        }
    }
}

struct HubSession {
    app: Arc<AppState>,
    hub: String,
    device_id: String,
    tx: mpsc::Sender<Packet>,
    shared: Arc<Mutex<Shared>>,
    /// Nudges the delivery task (after a SUBSCRIBE).
    wake: Arc<Notify>,
    /// Held by a delivery pass and by a PUBACK's completion, so a pass that read the pending
    /// messages before an acknowledged one was removed cannot send it again.
    delivering: Arc<tokio::sync::Mutex<()>>,
}

/// Runs blocking store work off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, HubError> + Send + 'static,
) -> Result<T, HubError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| HubError::Invalid(format!("a worker task failed: {e}")))?
}

/// The property the service adds to a message published with the RETAIN flag (it does not
/// retain it).
fn retain_property() -> (String, String) {
    ("mqtt-retain".into(), "true".into())
}

fn granted(q: QoS) -> QoS {
    // The service does not support QoS 2 and grants at most QoS 1.
    if q == QoS::AtMostOnce {
        QoS::AtMostOnce
    } else {
        QoS::AtLeastOnce
    }
}

impl HubSession {
    fn clone_for_delivery(&self) -> HubSession {
        HubSession {
            app: self.app.clone(),
            hub: self.hub.clone(),
            device_id: self.device_id.clone(),
            tx: self.tx.clone(),
            shared: self.shared.clone(),
            wake: self.wake.clone(),
            delivering: self.delivering.clone(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn send(&self, p: Packet) -> Result<(), Close> {
        self.tx.send(p).await.map_err(|_| Close::Eof)
    }

    /// Publishes the answer to twin request `rid`, when the device listens for answers.
    async fn twin_answer(
        &self,
        status: u16,
        rid: &str,
        version: Option<u64>,
        body: Vec<u8>,
    ) -> Result<(), Close> {
        if self.lock().twin_res.is_none() {
            tracing::debug!(%rid, "twin answer not delivered: the device is not subscribed");
            return Ok(());
        }
        let topic = rules::twin_response_topic(status, rid, version)
            .map_err(|e| Close::Internal(e.to_string()))?;
        // Answers go at QoS 0 whatever was granted: nothing is resent, the device asks again.
        self.send(Packet::Publish(Publish::new(topic, QoS::AtMostOnce, body)))
            .await
    }

    async fn telemetry(&self, p: &Publish, properties: Vec<(String, String)>) -> Result<(), Close> {
        let store = self.app.store.clone();
        let (hub, dev, body) = (self.hub.clone(), self.device_id.clone(), p.payload.clone());
        blocking(move || store.store_telemetry(&hub, &dev, &properties, &body))
            .await
            .map_err(|e| Close::Internal(e.to_string()))?;
        // Only now, with the message on disk, is it acknowledged.
        if p.qos == QoS::AtLeastOnce {
            self.send(Packet::PubAck(PubAck::new(p.pkid))).await?;
        }
        Ok(())
    }

    async fn twin_request(&self, request: rules::TwinRequest, payload: Bytes) -> Result<(), Close> {
        let store = self.app.store.clone();
        let (hub, dev) = (self.hub.clone(), self.device_id.clone());
        match request {
            rules::TwinRequest::Get { rid } => {
                match blocking(move || store.hub_device(&hub, &dev)).await {
                    Ok(Some(d)) => {
                        let body = serde_json::to_vec(&d.twin()).unwrap_or_default();
                        self.twin_answer(200, &rid, None, body).await
                    }
                    Ok(None) => {
                        self.twin_answer(404, &rid, None, error_body("no such device"))
                            .await
                    }
                    Err(e) => {
                        self.twin_answer(500, &rid, None, error_body(&e.to_string()))
                            .await
                    }
                }
            }
            rules::TwinRequest::PatchReported { rid } => {
                let patch = match twin::parse_patch(&payload) {
                    Ok(p) => p,
                    Err(e) => {
                        return self
                            .twin_answer(400, &rid, None, error_body(&e.to_string()))
                            .await
                    }
                };
                match blocking(move || store.patch_reported(&hub, &dev, &patch)).await {
                    Ok(v) => self.twin_answer(204, &rid, Some(v), Vec::new()).await,
                    Err(HubError::Twin(e)) => {
                        self.twin_answer(400, &rid, None, error_body(&e.to_string()))
                            .await
                    }
                    Err(HubError::DeviceNotFound(_)) => {
                        self.twin_answer(404, &rid, None, error_body("no such device"))
                            .await
                    }
                    Err(e) => {
                        self.twin_answer(500, &rid, None, error_body(&e.to_string()))
                            .await
                    }
                }
            }
        }
    }

    /// Publishes pending cloud-to-device messages and desired changes, each time something
    /// changed, until the connection ends.
    async fn deliver(self) {
        let mut changed = self.app.hub_changes.subscribe();
        loop {
            if self.deliver_once().await.is_err() {
                return;
            }
            tokio::select! {
                r = changed.changed() => if r.is_err() { return },
                _ = self.wake.notified() => {}
            }
        }
    }

    async fn deliver_once(&self) -> Result<(), Close> {
        let _pass = self.delivering.lock().await;
        let (c2d, desired, seen, busy) = {
            let s = self.lock();
            (s.c2d, s.desired, s.desired_seen, s.in_flight.len())
        };
        if c2d.is_none() && desired.is_none() {
            return Ok(());
        }
        let store = self.app.store.clone();
        let (hub, dev) = (self.hub.clone(), self.device_id.clone());
        let want = if c2d.is_some() {
            MAX_C2D_IN_FLIGHT + busy
        } else {
            0
        };
        let found = blocking(move || {
            let pending = if want > 0 {
                store.pending_c2d(&hub, &dev, want)?
            } else {
                Vec::new()
            };
            Ok((pending, store.hub_device(&hub, &dev)?))
        })
        .await;
        let Ok((pending, device)) = found else {
            return Ok(());
        };
        if let Some(qos) = c2d {
            for m in pending {
                let pkid = {
                    let mut s = self.lock();
                    if s.in_flight.values().any(|seq| *seq == m.seq) {
                        continue;
                    }
                    if s.in_flight.len() >= MAX_C2D_IN_FLIGHT {
                        break;
                    }
                    if qos == QoS::AtLeastOnce {
                        let id = s.pkid();
                        s.in_flight.insert(id, m.seq);
                        id
                    } else {
                        0
                    }
                };
                let Ok(topic) = rules::c2d_topic(&self.device_id, &m.properties) else {
                    continue;
                };
                let mut p = Publish::new(topic, qos, m.body);
                p.pkid = pkid;
                self.send(Packet::Publish(p)).await?;
                if qos == QoS::AtMostOnce {
                    // Nothing will acknowledge it: delivered once is delivered.
                    let store = self.app.store.clone();
                    let _ = blocking(move || store.complete_c2d(m.seq)).await;
                }
            }
        }
        if let (Some(_), Some(d)) = (desired, device) {
            let version = twin::section_version(&d.desired);
            if version > seen {
                // The last patch when the device missed only that one; else the whole desired
                // document, which brings it up to date as well.
                let patch = match d.last_desired_patch {
                    Some(p) if version == seen + 1 && twin::section_version(&p) == version => p,
                    _ => d.desired.clone(),
                };
                self.lock().desired_seen = version;
                let body = serde_json::to_vec(&Value::Object(patch)).unwrap_or_default();
                self.send(Packet::Publish(Publish::new(
                    rules::desired_patch_topic(version),
                    QoS::AtMostOnce,
                    body,
                )))
                .await?;
            }
        }
        Ok(())
    }
}

fn error_body(message: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({ "message": message })).unwrap_or_default()
}

impl Service for HubSession {
    async fn packet(&mut self, packet: Packet) -> Result<(), Close> {
        match packet {
            Packet::Subscribe(s) => {
                let c2d =
                    rules::c2d_filter(&self.device_id).map_err(|_| Close::UnsupportedFilter)?;
                let mut codes = Vec::with_capacity(s.filters.len());
                for f in &s.filters {
                    let q = granted(f.qos);
                    let mut sh = self.lock();
                    if f.path == c2d {
                        sh.c2d = Some(q);
                    } else if f.path == TWIN_RESPONSE_FILTER {
                        sh.twin_res = Some(q);
                    } else if f.path == TWIN_DESIRED_FILTER {
                        sh.desired = Some(q);
                    } else if f.path == METHODS_FILTER {
                        codes.push(SubscribeReasonCode::Failure);
                        continue;
                    } else {
                        return Err(Close::UnsupportedFilter);
                    }
                    codes.push(SubscribeReasonCode::Success(q));
                }
                self.send(Packet::SubAck(SubAck::new(s.pkid, codes)))
                    .await?;
                self.wake.notify_one();
                Ok(())
            }
            Packet::Unsubscribe(u) => {
                let c2d =
                    rules::c2d_filter(&self.device_id).map_err(|_| Close::UnsupportedFilter)?;
                for t in &u.topics {
                    let mut sh = self.lock();
                    if *t == c2d {
                        sh.c2d = None;
                    } else if t == TWIN_RESPONSE_FILTER {
                        sh.twin_res = None;
                    } else if t == TWIN_DESIRED_FILTER {
                        sh.desired = None;
                    } else if t != METHODS_FILTER {
                        return Err(Close::UnsupportedFilter);
                    }
                }
                self.send(Packet::UnsubAck(UnsubAck::new(u.pkid))).await
            }
            Packet::Publish(p) => {
                if p.qos == QoS::ExactlyOnce {
                    return Err(Close::QoS2);
                }
                if p.payload.len() > MAX_MESSAGE_BYTES {
                    return Err(Close::Oversized(MAX_MESSAGE_BYTES));
                }
                if let Some(request) = rules::parse_twin_request_topic(&p.topic) {
                    let request = request.map_err(|_| Close::UnsupportedTopic)?;
                    if p.qos == QoS::AtLeastOnce {
                        self.send(Packet::PubAck(PubAck::new(p.pkid))).await?;
                    }
                    return self.twin_request(request, p.payload).await;
                }
                match rules::parse_telemetry_topic(&self.device_id, &p.topic) {
                    Ok(mut properties) => {
                        if p.retain {
                            properties.push(retain_property());
                        }
                        self.telemetry(&p, properties).await
                    }
                    Err(_) => Err(Close::UnsupportedTopic),
                }
            }
            Packet::PubAck(a) => {
                let _pass = self.delivering.lock().await;
                let seq = self.lock().in_flight.get(&a.pkid).copied();
                if let Some(seq) = seq {
                    let store = self.app.store.clone();
                    blocking(move || store.complete_c2d(seq))
                        .await
                        .map_err(|e| Close::Internal(e.to_string()))?;
                    self.lock().in_flight.remove(&a.pkid);
                    // A slot is free: more may be waiting.
                    self.wake.notify_one();
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
}
