//! The device's IoT Hub connection after provisioning: MQTT 3.1.1 over TLS on 8883 to the hub
//! DPS assigned (service documentation "Communicate with an IoT hub using the MQTT
//! protocol"), with the identity the device was provisioned with, kept in the HSM plugin.
//!
//! - **Who**: client id = device id; user name `{hub}/{deviceId}/?api-version=...` with
//!   `DeviceClientType=hsmkit/<version>` ([`dps_proto::hub::username`]); password = a SAS token
//!   for `{hub}/devices/{deviceId}` signed inside the plugin (symmetric key, TPM identity key),
//!   renewed before it expires by reconnecting with a fresh one ([`renewal_delay`]); X.509:
//!   mutual TLS whose handshake signature the plugin makes, no password. A device DPS issued
//!   an operational certificate to (its record holds `issuedCertificateChain`) uses mutual TLS
//!   with that chain and the plugin's operational key instead, whatever it onboarded with.
//! - **Where**: the assigned hub on 8883 (or over a WebSocket on 443,
//!   [`HubOptions::websocket`]), or [`HubOptions::endpoint`]; TLS always verifies the
//!   server as the assigned hub's name and sends it as SNI; trust as for DPS (public roots
//!   and/or an extra CA).
//! - **What**: telemetry with properties, QoS 1, returned after PUBACK
//!   ([`HubClient::send`]); the twin ([`HubClient::twin`]) and reported-property patches
//!   ([`HubClient::report`]) with `$rid`; C2D messages and desired-property changes
//!   ([`HubClient::events`]).
//! - **Faults**: a dropped connection is opened again with exponential back-off
//!   ([`Backoff`]), subscribing again and re-sending telemetry the hub had not acknowledged
//!   (at least once); refusals are [`HubError`]s that say what to fix.
//!
//! The topics and property bags are [`dps_proto::hub`]'s, shared with the emulated hub.
//!
//! Module tree: `options` (settings, endpoint, renewal timing, back-off), `session` (one MQTT
//! connection: TCP, TLS, CONNECT, packets), `client` ([`HubClient`] and the task that keeps
//! the connection), `error`.

mod client;
mod error;
mod options;
mod session;

pub use client::{HubClient, CLIENT_TYPE};
pub use dps_proto::hub::Twin;
pub use error::HubError;
pub use options::{
    connect_target, renewal_delay, Backoff, HubOptions, HUB_MQTT_PORT, HUB_MQTT_WS_PORT,
};

/// Something the hub pushed, or a change of the connection, as [`HubClient::events`] gives it.
#[derive(Clone, Debug, PartialEq)]
pub enum HubEvent {
    /// A cloud-to-device message.
    Message(C2dMessage),
    /// A change of the twin's desired properties.
    DesiredPatch(DesiredPatch),
    /// The connection dropped (or was refused for good); the client is reconnecting unless
    /// the reason says otherwise.
    Disconnected {
        /// What happened.
        reason: String,
    },
    /// The connection is open again (subscribed, waiting telemetry re-sent).
    Reconnected,
}

/// A cloud-to-device message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct C2dMessage {
    /// Its property bag, decoded: application properties and system ones (`$.mid`, `$.to`,
    /// `$.ct`, ...), in the order the hub sent them.
    pub properties: Vec<(String, String)>,
    /// The body, as sent.
    pub body: Vec<u8>,
}

/// A change of the desired properties.
#[derive(Clone, Debug, PartialEq)]
pub struct DesiredPatch {
    /// The desired properties' new `$version`.
    pub version: u64,
    /// The patch (a JSON object; `null` removes a property).
    pub patch: serde_json::Value,
}
