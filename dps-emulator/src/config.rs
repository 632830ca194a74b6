//! What an emulator instance is started with.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Configuration of one emulator instance.
#[derive(Debug, Clone)]
pub struct EmulatorConfig {
    /// Where to listen; port 0 picks a free port (see `RunningEmulator::addr`).
    pub listen: SocketAddr,
    /// The state folder (created 0700): dev CA, server certificate, service key, database.
    pub state_dir: PathBuf,
    /// The DPS id scope devices put in their paths and SAS scopes.
    pub id_scope: String,
    /// IoT hub host names to allocate devices to (full host names: a bare name is refused).
    pub hubs: Vec<String>,
    /// How long an operation stays "assigning" before its final status is visible.
    pub assignment_delay: Duration,
    /// The Retry-After (seconds) sent with 202 assigning answers.
    pub retry_after_secs: u64,
    /// With no assignment delay, answer the register PUT itself with `200` and the final
    /// registration state (the documented `200 RegistrationOperationStatus` answer) instead
    /// of `202 assigning` and a poll. Off by default: the real service usually answers 202.
    pub complete_registrations_immediately: bool,
    /// Extra host names or IPs for the server certificate (localhost and 127.0.0.1 are always in).
    pub server_names: Vec<String>,
    /// Largest accepted request body, bytes.
    pub max_body_bytes: usize,
    /// Most simultaneous connections; more are closed at once.
    pub max_connections: usize,
    /// Most simultaneous connections from one source address; more from it are closed at
    /// once, so one client holding idle connections cannot take every slot from the other
    /// devices. `None`: a quarter of `max_connections` (at least 1). Devices behind one NAT
    /// share an address: raise it for a fleet simulated from one host.
    pub max_connections_per_peer: Option<usize>,
    /// Name of the service API's shared access policy.
    pub service_policy_name: String,
    /// Where to serve the device API over MQTT 3.1.1 (TLS, the HTTPS listener's certificate
    /// and client-certificate handling); `None`: no MQTT listener. The service listens on
    /// 8883; port 0 picks a free port (see `RunningEmulator::mqtt_addr`). MQTT connections
    /// count against `max_connections` and `max_connections_per_peer` with the HTTPS ones.
    pub mqtt_listen: Option<SocketAddr>,
    /// Where to serve the device API over MQTT 3.1.1 carried by a WebSocket on TLS (path
    /// `/$iothub/websocket`, sub-protocol `mqtt`; the MQTT listener's TLS and session rules);
    /// `None`: none. The service offers it on 443, beside HTTPS; here it has a port of its own
    /// (port 0 picks a free one, see `RunningEmulator::mqtt_ws_addr`). Its connections count
    /// against the same connection caps.
    pub mqtt_ws_listen: Option<SocketAddr>,
    /// Most packets one MQTT connection may send per second (a burst of as many is allowed);
    /// a connection sending faster is closed. The emulator's own flood bound.
    pub mqtt_max_packets_per_second: u32,
    /// How long a custom allocation webhook may take to answer (connection included) before
    /// the registration fails with 400207. The service's limit is not documented.
    pub webhook_timeout: Duration,
}

impl EmulatorConfig {
    /// Defaults for a state folder: loopback with a free port, scope `0ne00000001`, one hub, no
    /// assignment delay, Retry-After 1 s, 64 KiB bodies, 512 connections (128 per source
    /// address), no MQTT listeners (20 packets/s per connection when one is configured), 10 s
    /// for a custom allocation webhook.
    pub fn new(state_dir: impl Into<PathBuf>) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            state_dir: state_dir.into(),
            id_scope: "0ne00000001".to_string(),
            hubs: vec!["emulated-hub.azure-devices.net".to_string()],
            assignment_delay: Duration::ZERO,
            retry_after_secs: 1,
            complete_registrations_immediately: false,
            server_names: Vec::new(),
            max_body_bytes: 64 * 1024,
            max_connections: 512,
            max_connections_per_peer: None,
            service_policy_name: "provisioningserviceowner".to_string(),
            mqtt_listen: None,
            mqtt_ws_listen: None,
            mqtt_max_packets_per_second: 20,
            webhook_timeout: Duration::from_secs(10),
        }
    }
}

impl EmulatorConfig {
    /// The per-source-address connection limit in effect.
    pub fn connections_per_peer(&self) -> usize {
        self.max_connections_per_peer
            .unwrap_or(self.max_connections / 4)
            .clamp(1, self.max_connections.max(1))
    }
}

/// Checks that a hub is named by its host name, as the service names linked hubs and an
/// enrollment's `iotHubs` ("The list of IoT Hub hostnames the device(s) in this resource can
/// be allocated to", "Individual Enrollment - Create Or Update",
/// <https://learn.microsoft.com/rest/api/iot-dps/service/individual-enrollment/create-or-update>).
/// A bare name such as `hub-a` used to be rewritten to `hub-a.azure-devices.net`; now it is
/// refused with a message giving that full name, since a device is told its hub's host name
/// and another cloud's domain would be silently wrong.
pub fn check_hub_host_name(name: &str) -> Result<(), String> {
    if name.contains('.') {
        Ok(())
    } else {
        Err(format!(
            "the IoT hub `{}` is not a host name: give the hub's full host name, such as `{}.azure-devices.net`",
            name.escape_debug(),
            name.escape_debug()
        ))
    }
}
