//! The emulated IoT hubs: every hub the emulator assigns devices to (config `hubs`) is also a
//! device endpoint over MQTT 3.1.1 on TLS, on the emulator's one MQTT listener (service
//! documentation "Communicate with an IoT hub using the MQTT protocol"; the protocol rules are
//! `dps_proto::hub`'s, shared with hsmkit's device client).
//!
//! - Identities ([`identity`]): a DPS assignment creates (or updates) the device in its hub
//!   with the credential the service gives it: the enrollment's symmetric key or the key
//!   derived from the group key, a TPM device's identity key (the one the challenge
//!   delivered), or an X.509 device's enrollment trust (its certificate, or the group's CA).
//!   A device DPS issued an operational certificate to may also present a chain from the
//!   emulator's issuing CA with CN = its device id (`HubDevice::issued_certificate`).
//!   The enrollment's `initialTwin` desired properties become the twin's desired document.
//!   A hub device has its own status: disabling the DPS enrollment does not disable it (the
//!   service's "disenroll" is both steps), `dps-emulator hub disable` does.
//! - The device API (`session`): telemetry stored with its properties, twin GET and
//!   reported patches, cloud-to-device messages and desired-property changes pushed.
//! - Records (`store`): devices, twins, telemetry and pending cloud-to-device messages in
//!   the emulator's database, so they survive a restart and the CLI can reach them.

pub mod identity;
pub(crate) mod session;
pub(crate) mod store;
pub mod twin;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::path::Path;
use std::time::Duration;
use tokio::sync::watch;

use crate::error::EmulatorError;
use crate::store::Store;

/// Most telemetry messages kept per device (the oldest go first): the emulator's stand-in for
/// the service's retention period, so a chatty device cannot fill the disk.
pub const MAX_STORED_TELEMETRY: usize = 1000;

/// Most cloud-to-device messages pending per device (the service's documented queue depth of
/// 50 per device, "Send cloud-to-device messages from an IoT hub").
pub const MAX_C2D_QUEUE: usize = 50;

/// Largest cloud-to-device message body (the service's 64 KB).
pub const MAX_C2D_BYTES: usize = 64 * 1024;

/// How often the running emulator looks for changes another process (the CLI) made.
pub(crate) const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// What went wrong with a hub record.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// No such device in the hub(s) asked.
    #[error("no hub device `{0}`")]
    DeviceNotFound(String),
    /// The device id names devices in several hubs: say which hub.
    #[error("device `{0}` exists in several hubs ({1}); name the hub")]
    Ambiguous(String, String),
    /// The device's cloud-to-device queue is full.
    #[error("the cloud-to-device queue of `{0}` is full ({MAX_C2D_QUEUE} messages)")]
    QueueFull(String),
    /// A message or property is over the service's limits or malformed.
    #[error("{0}")]
    Invalid(String),
    /// A twin patch broke the service's rules.
    #[error(transparent)]
    Twin(#[from] twin::TwinError),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] EmulatorError),
}

/// The identity registry's device status: an enabled device may connect, a disabled one may
/// not reach any device-facing endpoint (service documentation "Understand the identity
/// registry in your IoT hub", device identity properties: `status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum DeviceStatus {
    /// The device may connect.
    Enabled,
    /// Connections are refused (CONNACK "not authorized").
    Disabled,
}

/// How a hub device authenticates, as the identity registry's authentication types name it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum DeviceAuthentication {
    /// SAS tokens signed with one of these base64 keys: a symmetric-key device's enrollment
    /// key or derived group key, or a TPM device's identity key.
    #[serde(rename_all = "camelCase")]
    Sas {
        /// The primary key.
        primary_key: String,
        /// The secondary key, when the enrollment has one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        secondary_key: Option<String>,
    },
    /// X.509, individually enrolled: the device's leaf must be one of these (PEM).
    #[serde(rename_all = "camelCase")]
    SelfSigned {
        /// The enrolled device certificates.
        certificates: Vec<String>,
    },
    /// X.509 from an enrollment group: the chain must lead to one of these CAs (PEM).
    #[serde(rename_all = "camelCase")]
    CertificateAuthority {
        /// The group's signing certificates.
        certificates: Vec<String>,
    },
}

impl std::fmt::Debug for DeviceAuthentication {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Keys never reach a log line.
        f.write_str(self.type_name())
    }
}

impl DeviceAuthentication {
    /// The registry's name of the type: `sas`, `selfSigned`, `certificateAuthority`.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::Sas { .. } => "sas",
            Self::SelfSigned { .. } => "selfSigned",
            Self::CertificateAuthority { .. } => "certificateAuthority",
        }
    }
}

/// A device in an emulated hub: identity, status and twin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HubDevice {
    /// The hub's host name.
    pub hub: String,
    /// The device id (case-sensitive).
    pub device_id: String,
    /// The DPS registration that created it.
    pub registration_id: String,
    /// Enabled or disabled.
    pub status: DeviceStatus,
    /// Its credential (secret: never printed).
    pub authentication: DeviceAuthentication,
    /// When it was created (RFC 3339).
    pub created: String,
    /// When it last changed.
    pub last_updated: String,
    /// The twin's desired properties, with `$version`.
    pub desired: Map<String, Value>,
    /// The twin's reported properties, with `$version`.
    pub reported: Map<String, Value>,
    /// The last desired-properties patch with its `$version`, pushed to subscribed devices.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_desired_patch: Option<Map<String, Value>>,
    /// DPS issued the device an operational certificate: the hub also accepts a client chain
    /// from the emulator's issuing CA with CN = the device id. Kept once set (an issued
    /// certificate stays valid until it expires, whatever later registrations do).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub issued_certificate: bool,
}

impl HubDevice {
    /// The twin as the device reads it.
    pub fn twin(&self) -> dps_proto::hub::Twin {
        dps_proto::hub::Twin {
            desired: self.desired.clone(),
            reported: self.reported.clone(),
        }
    }

    /// What `hub devices --json` shows: everything but the credential's secrets.
    pub fn public_view(&self) -> Value {
        serde_json::json!({
            "hub": self.hub,
            "deviceId": self.device_id,
            "registrationId": self.registration_id,
            "status": self.status,
            "authenticationType": self.authentication.type_name(),
            "created": self.created,
            "lastUpdated": self.last_updated,
            "twin": self.twin(),
        })
    }
}

/// A stored telemetry message.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Telemetry {
    /// Its sequence number (the order messages were stored in).
    pub seq: i64,
    /// The hub.
    pub hub: String,
    /// The device that sent it.
    pub device_id: String,
    /// When it was stored (RFC 3339).
    pub enqueued: String,
    /// Its property bag, in the order sent.
    pub properties: Vec<(String, String)>,
    /// Its body.
    #[serde(serialize_with = "body_text")]
    pub body: Vec<u8>,
}

/// A pending cloud-to-device message.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct C2dMessage {
    /// Its sequence number.
    pub seq: i64,
    /// The hub.
    pub hub: String,
    /// The device it is for.
    pub device_id: String,
    /// When it was queued.
    pub enqueued: String,
    /// Its property bag (system properties `$.mid`, `$.to` first).
    pub properties: Vec<(String, String)>,
    /// Its body.
    #[serde(serialize_with = "body_text")]
    pub body: Vec<u8>,
}

/// Bodies as text when they are UTF-8, else base64 under `{"base64": ...}`.
fn body_text<S: serde::Serializer>(body: &[u8], s: S) -> Result<S::Ok, S::Error> {
    use base64::Engine;
    match std::str::from_utf8(body) {
        Ok(t) => s.serialize_str(t),
        Err(_) => serde_json::json!({
            "base64": base64::engine::general_purpose::STANDARD.encode(body)
        })
        .serialize(s),
    }
}

/// The hubs of a state folder, for the CLI and for a running emulator's owner: devices,
/// telemetry, cloud-to-device messages, twins. Changes reach a running emulator's connected
/// devices promptly (directly when made through its own handle, by polling the database when
/// made by another process).
#[derive(Debug, Clone)]
pub struct Hubs {
    store: Store,
    changed: Option<watch::Sender<u64>>,
}

impl Hubs {
    /// The hubs of the state folder `state_dir` (of a running emulator or not).
    pub fn open(state_dir: &Path) -> Result<Self, EmulatorError> {
        Ok(Self {
            store: crate::store::state_dir::open_store(state_dir)?,
            changed: None,
        })
    }

    pub(crate) fn running(store: Store, changed: watch::Sender<u64>) -> Self {
        Self {
            store,
            changed: Some(changed),
        }
    }

    fn notify(&self) {
        if let Some(c) = &self.changed {
            c.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// Every device of every hub.
    pub fn devices(&self) -> Result<Vec<HubDevice>, HubError> {
        self.store.hub_devices()
    }

    /// The device `device_id`, in `hub` when given, else in whichever hub has it (an error
    /// when several do).
    pub fn device(&self, device_id: &str, hub: Option<&str>) -> Result<HubDevice, HubError> {
        let mut found = self.store.hub_devices()?.into_iter().filter(|d| {
            d.device_id == device_id && hub.is_none_or(|h| d.hub.eq_ignore_ascii_case(h))
        });
        match (found.next(), found.next()) {
            (None, _) => Err(HubError::DeviceNotFound(device_id.to_string())),
            (Some(d), None) => Ok(d),
            (Some(a), Some(b)) => Err(HubError::Ambiguous(
                device_id.to_string(),
                std::iter::once(a)
                    .chain(std::iter::once(b))
                    .chain(found)
                    .map(|d| d.hub)
                    .collect::<Vec<_>>()
                    .join(", "),
            )),
        }
    }

    /// The telemetry `device_id` sent, oldest first.
    pub fn messages(&self, device_id: &str, hub: Option<&str>) -> Result<Vec<Telemetry>, HubError> {
        let d = self.device(device_id, hub)?;
        self.store.telemetry(&d.hub, &d.device_id)
    }

    /// Queues a cloud-to-device message; a connected, subscribed device gets it at once,
    /// another when it next subscribes. Properties follow the property-bag rules; the body is
    /// at most [`MAX_C2D_BYTES`].
    pub fn send_c2d(
        &self,
        device_id: &str,
        hub: Option<&str>,
        properties: &[(String, String)],
        body: &[u8],
    ) -> Result<C2dMessage, HubError> {
        if body.len() > MAX_C2D_BYTES {
            return Err(HubError::Invalid(format!(
                "a cloud-to-device message is at most {MAX_C2D_BYTES} bytes"
            )));
        }
        for (k, v) in properties {
            if k.is_empty() || k.starts_with('$') || k.len() > 128 || v.len() > 4096 {
                return Err(HubError::Invalid(format!(
                    "property `{}`: names are 1-128 bytes and not `$`-prefixed (those are the service's), values at most 4096 bytes",
                    k.escape_debug()
                )));
            }
        }
        let d = self.device(device_id, hub)?;
        // The topic the device gets must be buildable.
        dps_proto::hub::c2d_topic(&d.device_id, properties)
            .map_err(|e| HubError::Invalid(e.to_string()))?;
        let m = self
            .store
            .enqueue_c2d(&d.hub, &d.device_id, properties, body)?;
        self.notify();
        Ok(m)
    }

    /// The cloud-to-device messages still pending for a device.
    pub fn pending_c2d(
        &self,
        device_id: &str,
        hub: Option<&str>,
    ) -> Result<Vec<C2dMessage>, HubError> {
        let d = self.device(device_id, hub)?;
        self.store.pending_c2d(&d.hub, &d.device_id, MAX_C2D_QUEUE)
    }

    /// Enables or disables a device; a disabled one is refused at its next CONNECT (a
    /// connected one is not cut off).
    pub fn set_status(
        &self,
        device_id: &str,
        hub: Option<&str>,
        status: DeviceStatus,
    ) -> Result<(), HubError> {
        let d = self.device(device_id, hub)?;
        self.store
            .set_hub_device_status(&d.hub, &d.device_id, status)?;
        self.notify();
        Ok(())
    }

    /// Applies a desired-properties patch (`null` deletes); returns the new desired
    /// `$version`. A connected device subscribed to desired changes gets the patch.
    pub fn update_desired(
        &self,
        device_id: &str,
        hub: Option<&str>,
        patch: Value,
    ) -> Result<u64, HubError> {
        let patch = twin::check_patch(patch)?;
        let d = self.device(device_id, hub)?;
        let v = self.store.patch_desired(&d.hub, &d.device_id, &patch)?;
        self.notify();
        Ok(v)
    }
}

/// Runs until `stop`: bumps `changed` whenever another process committed to the database, so
/// sessions look for new cloud-to-device messages and desired changes.
pub(crate) async fn watch_database(
    store: Store,
    changed: watch::Sender<u64>,
    mut stop: watch::Receiver<bool>,
) {
    let mut last = None;
    loop {
        let s = store.clone();
        if let Ok(Ok(v)) = tokio::task::spawn_blocking(move || s.data_version()).await {
            if last.is_some_and(|l| l != v) {
                changed.send_modify(|n| *n = n.wrapping_add(1));
            }
            last = Some(v);
        }
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(POLL_INTERVAL) => {}
        }
    }
}
