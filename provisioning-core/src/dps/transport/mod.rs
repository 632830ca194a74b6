//! The seam between the registration flow and the wire: one [`DpsTransport`] per protocol
//! (HTTPS, MQTT on TLS or over a WebSocket), each turning the two device requests (register,
//! operation status) into an [`Answer`] with the HTTP status, Retry-After and JSON body DPS
//! gives over HTTPS, or a [`TransportFailure`] sorted for the retry logic. The flow
//! (`client.rs`) — TPM challenge, polling, Retry-After, back-off, the overall deadline, the
//! errors — is written once above it.

pub(crate) mod https;
pub(crate) mod mqtt;

use crate::dps::tls::SignFailure;
use crate::plugin::PluginError;
use std::future::Future;
use std::time::Duration;

/// How hsmkit talks to DPS.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Transport {
    /// HTTPS (port 443 unless the endpoint names another): every attestation.
    #[default]
    Https,
    /// MQTT 3.1.1 over TLS (port 8883 unless the endpoint names another): X.509 and
    /// symmetric key; DPS does not offer TPM attestation over MQTT.
    Mqtt,
    /// MQTT 3.1.1 over a WebSocket on TLS (port 443 unless the endpoint names another, path
    /// `/$iothub/websocket`, sub-protocol `mqtt`): what MQTT allows, where only 443 is open.
    MqttWs,
}

impl Transport {
    /// The name used on the command line and in the config file.
    pub const fn as_str(self) -> &'static str {
        match self {
            Transport::Https => "https",
            Transport::Mqtt => "mqtt",
            Transport::MqttWs => "mqtt-ws",
        }
    }
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A transport name that is none of `https`, `mqtt`, `mqtt-ws`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown transport `{0}`; use https, mqtt or mqtt-ws")]
pub struct UnknownTransport(pub String);

impl std::str::FromStr for Transport {
    type Err = UnknownTransport;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "https" => Ok(Transport::Https),
            "mqtt" => Ok(Transport::Mqtt),
            "mqtt-ws" => Ok(Transport::MqttWs),
            _ => Err(UnknownTransport(s.to_string())),
        }
    }
}

/// DPS's answer to one request, as HTTPS carries it (MQTT carries the same status and body in
/// its response topic and payload).
#[derive(Debug)]
pub(crate) struct Answer {
    pub status: u16,
    pub retry_after: Option<Duration>,
    pub body: Vec<u8>,
}

/// A request that got no (complete) answer.
#[derive(Debug)]
pub(crate) enum TransportFailure {
    /// No connection could be made (refused, DNS, unreachable).
    Connect(String),
    /// The server's certificate is not trusted, or TLS failed for another TLS reason.
    Tls(String),
    /// The plugin failed to sign the TLS handshake.
    Plugin(PluginError),
    /// Dropped connection, timeout, truncated answer: worth retrying.
    Transient(String),
}

/// One protocol's way of sending the device's two requests. A transport keeps whatever
/// connection it likes between calls and reconnects on its own after a failure.
pub(crate) trait DpsTransport {
    /// Where requests go, for messages (`https://host:port`, `mqtts://host:port`).
    fn endpoint(&self) -> &str;

    /// Sends the register request with `body` (a `DeviceRegistration`, JSON); `authorization`
    /// is the SAS token when the attestation uses one.
    fn register(
        &mut self,
        body: Vec<u8>,
        authorization: Option<&str>,
    ) -> impl Future<Output = Result<Answer, TransportFailure>> + Send;

    /// Asks for the status of `operation_id`.
    fn operation_status(
        &mut self,
        operation_id: &str,
        authorization: Option<&str>,
    ) -> impl Future<Output = Result<Answer, TransportFailure>> + Send;
}

/// The error and its causes, joined; many layers' own Display alone says little.
pub(crate) fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        let t = s.to_string();
        if !parts.iter().any(|p| p.contains(&t)) {
            parts.push(t);
        }
        cur = s.source();
    }
    parts.join(": ")
}

/// rustls's error somewhere in the chain. `io::Error` hides its payload from `source()`, so it
/// is unwrapped by hand.
pub(crate) fn find_rustls_error<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> Option<&'a rustls::Error> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(r) = err.downcast_ref::<rustls::Error>() {
            return Some(r);
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if let Some(inner) = io.get_ref() {
                if let Some(r) = inner.downcast_ref::<rustls::Error>() {
                    return Some(r);
                }
            }
        }
        cur = err.source();
    }
    None
}

/// The failures every transport sorts the same way, in this order: the plugin failed to sign
/// the TLS handshake (taken from `sign_failure`), or TLS failed (rustls's error in the chain, or
/// its message in the text). `Err` carries that failure; `Ok` carries the error's description
/// (see [`describe`]) for the transport to sort the rest by its own error kinds.
pub(crate) fn plugin_or_tls_failure(
    sign_failure: Option<&SignFailure>,
    e: &(dyn std::error::Error + 'static),
) -> Result<String, TransportFailure> {
    if let Some(slot) = sign_failure {
        if let Some(p) = slot.lock().ok().and_then(|mut s| s.take()) {
            return Err(TransportFailure::Plugin(p));
        }
    }
    let detail = describe(e);
    if let Some(tls) = find_rustls_error(e) {
        return Err(TransportFailure::Tls(tls.to_string()));
    }
    if let Some(tls) = tls_failure_in_text(&detail) {
        return Err(TransportFailure::Tls(tls));
    }
    Ok(detail)
}

/// rustls messages that some layers flatten into text, recognisable in it.
const TLS_MARKERS: [&str; 4] = [
    "invalid peer certificate",
    "peer is incompatible",
    "received fatal alert",
    "peer sent no certificates",
];

/// A TLS failure found in an error's text, from the rustls message on.
pub(crate) fn tls_failure_in_text(detail: &str) -> Option<String> {
    TLS_MARKERS
        .iter()
        .find_map(|m| detail.find(m).map(|start| detail[start..].to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_names() {
        assert_eq!("https".parse(), Ok(Transport::Https));
        assert_eq!("MQTT".parse(), Ok(Transport::Mqtt));
        assert_eq!("mqtt-ws".parse(), Ok(Transport::MqttWs));
        assert!("amqp".parse::<Transport>().is_err());
        for t in [Transport::Https, Transport::Mqtt, Transport::MqttWs] {
            assert_eq!(t.as_str().parse(), Ok(t));
        }
        assert_eq!(Transport::default(), Transport::Https);
    }

    #[test]
    fn tls_text_markers() {
        assert_eq!(
            tls_failure_in_text("io: x: received fatal alert: BadCertificate").as_deref(),
            Some("received fatal alert: BadCertificate")
        );
        assert_eq!(tls_failure_in_text("connection reset"), None);
    }
}
