//! Why an IoT Hub operation failed. Every message says what the user can do about it; none
//! carries a SAS token, a key or a PIN.

use crate::plugin::PluginError;
use crate::provisioning::RecordError;
use std::time::Duration;

/// A failed IoT Hub connection or operation.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// The state folder holds no provisioning record.
    #[error("the device is not provisioned yet (no provisioning record in {state_dir}): run `hsmkit provision` first")]
    NotProvisioned {
        /// The state folder searched.
        state_dir: String,
    },
    /// The provisioning record could not be read.
    #[error(transparent)]
    Record(#[from] RecordError),
    /// The options cannot work (bad endpoint, zero lifetime, unusable CA file...).
    #[error("invalid IoT Hub settings: {reason}")]
    Config {
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// No TCP connection could be made.
    #[error("cannot reach the IoT hub {hub} at {endpoint}: {detail}; check the host name, DNS, proxy and that outbound TCP 8883 (or the given port) is allowed")]
    Unreachable {
        /// The hub's host name.
        hub: String,
        /// Where the connection went (`host:port`).
        endpoint: String,
        /// The connection error.
        detail: String,
    },
    /// The server's certificate is not trusted for the hub's name (or TLS failed for another
    /// TLS reason).
    #[error("TLS with {endpoint} failed while verifying the server as `{verified_name}`: {detail}; the certificate must be valid for the hub's name and issued by a trusted CA (for an emulator pass its CA with --trust-ca); check the system clock and any TLS-intercepting proxy")]
    TlsTrust {
        /// The name the server certificate was verified against (the assigned hub).
        verified_name: String,
        /// Where the connection went.
        endpoint: String,
        /// What rustls reported.
        detail: String,
    },
    /// The hub ended the TLS handshake with an alert after the device presented its X.509
    /// certificate: the hub does not accept that chain or its handshake signature.
    #[error("the IoT hub {hub} refused the device's X.509 certificate during the TLS handshake ({alert}); the device must be registered in this hub with this certificate (or its CA), and the plugin's handshake signature must verify")]
    ClientCertificateRefused {
        /// The hub.
        hub: String,
        /// The alert, as rustls reports it.
        alert: String,
    },
    /// CONNACK "bad user name or password": the user name was refused, which IoT Hub does
    /// when it names another hub (or is malformed).
    #[error("the IoT hub {hub} refused the CONNECT of device `{device_id}` (CONNACK: bad user name or password): the user name names a hub this endpoint does not serve; check --hub-endpoint, or provision again if the device was moved to another hub")]
    BadCredentials {
        /// The hub.
        hub: String,
        /// The device id.
        device_id: String,
    },
    /// CONNACK "not authorized": the hub refused the device's credentials or the device.
    #[error("the IoT hub {hub} refused device `{device_id}` (CONNACK: not authorized): its SAS token or certificate was not accepted (forged, expired, or signed with another key), or the device is unknown to this hub or disabled; check that the device is enabled in the hub and its identity matches, or provision again")]
    NotAuthorized {
        /// The hub.
        hub: String,
        /// The device id.
        device_id: String,
    },
    /// The SAS token's expiry had passed when the hub refused it or closed the connection.
    #[error("the SAS token for device `{device_id}` expired (at Unix time {expiry}) and the hub refused it; check the system clock or use a longer --sas-lifetime")]
    TokenExpired {
        /// The device id.
        device_id: String,
        /// The token's `se`.
        expiry: u64,
    },
    /// CONNACK "server unavailable", after the reconnect attempts.
    #[error("the IoT hub {hub} is unavailable (CONNACK: server unavailable); try again later")]
    Unavailable {
        /// The hub.
        hub: String,
    },
    /// The connection dropped (reset, closed by the hub, keep-alive unanswered).
    #[error("the connection to the IoT hub was lost: {detail}")]
    ConnectionLost {
        /// What happened.
        detail: String,
    },
    /// The hub broke the protocol (unexpected packet, refused subscription, bad answer).
    #[error("unexpected answer from the IoT hub: {detail}")]
    Protocol {
        /// What was wrong.
        detail: String,
    },
    /// The hub answered a twin request with an error status.
    #[error("the IoT hub answered the twin {operation} with status {status}{}", if *status == 429 { " (throttled; try again later)" } else { "" })]
    TwinStatus {
        /// `GET` or `PATCH reported`.
        operation: &'static str,
        /// The status in the response topic.
        status: u16,
    },
    /// No answer (CONNACK, PUBACK, twin response) in time.
    #[error("no answer from the IoT hub within {after:?} while {during}")]
    Timeout {
        /// The time waited.
        after: Duration,
        /// What was being waited for.
        during: String,
    },
    /// The message or twin patch is larger than the service accepts.
    #[error("the {what} is {size} bytes; IoT Hub accepts at most {max}")]
    TooLarge {
        /// Message or twin patch.
        what: &'static str,
        /// Its size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The HSM plugin failed (its error is in the message, so not also the `source()`).
    #[error("the HSM plugin failed: {0}; check the plugin's settings and its device (see `hsmkit plugins list`)")]
    Plugin(PluginError),
    /// The connection was lost and could not be opened again within the reconnect attempts;
    /// `last` is the last failure.
    #[error("the connection to the IoT hub was lost and {attempts} reconnect attempts failed; last: {last}")]
    ReconnectFailed {
        /// Attempts made.
        attempts: u32,
        /// The last failure's message.
        last: String,
    },
    /// The client was closed (or its connection task ended) before the operation finished.
    #[error("the IoT Hub client is closed{}", reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default())]
    Closed {
        /// Why, when known.
        reason: Option<String>,
    },
}

impl From<PluginError> for HubError {
    fn from(e: PluginError) -> Self {
        HubError::Plugin(e)
    }
}

impl HubError {
    /// The failure's class, for exit codes and `--json` ([`crate::error_kind`]).
    pub fn error_kind(&self) -> crate::error_kind::ErrorKind {
        use crate::error_kind::ErrorKind;
        match self {
            HubError::NotProvisioned { .. } | HubError::Config { .. } => ErrorKind::Config,
            HubError::Record(e) => e.error_kind(),
            HubError::Unreachable { .. }
            | HubError::TlsTrust { .. }
            | HubError::Unavailable { .. }
            | HubError::ConnectionLost { .. }
            | HubError::Protocol { .. }
            | HubError::ReconnectFailed { .. }
            | HubError::Closed { .. } => ErrorKind::Network,
            HubError::ClientCertificateRefused { .. }
            | HubError::BadCredentials { .. }
            | HubError::NotAuthorized { .. }
            | HubError::TokenExpired { .. }
            | HubError::TwinStatus { .. } => ErrorKind::DpsRefused,
            HubError::Timeout { .. } => ErrorKind::Timeout,
            HubError::TooLarge { .. } => ErrorKind::Usage,
            HubError::Plugin(e) => e.error_kind(),
        }
    }

    /// A short machine-readable kind, for `--json` output.
    pub fn kind(&self) -> &'static str {
        match self {
            HubError::NotProvisioned { .. } => "not-provisioned",
            HubError::Record(_) => "record",
            HubError::Config { .. } => "config",
            HubError::Unreachable { .. } => "unreachable",
            HubError::TlsTrust { .. } => "tls-trust",
            HubError::ClientCertificateRefused { .. } => "client-certificate-refused",
            HubError::BadCredentials { .. } => "bad-credentials",
            HubError::NotAuthorized { .. } => "not-authorized",
            HubError::TokenExpired { .. } => "token-expired",
            HubError::Unavailable { .. } => "unavailable",
            HubError::ConnectionLost { .. } => "connection-lost",
            HubError::Protocol { .. } => "protocol",
            HubError::TwinStatus { .. } => "twin-status",
            HubError::Timeout { .. } => "timeout",
            HubError::TooLarge { .. } => "too-large",
            HubError::Plugin(_) => "plugin",
            HubError::ReconnectFailed { .. } => "reconnect-failed",
            HubError::Closed { .. } => "closed",
        }
    }

    /// Whether reconnecting (with back-off) may cure it: dropped connections, timeouts, an
    /// unavailable or unreachable hub. Refused credentials, trust failures and plugin errors
    /// need a person.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            HubError::Unreachable { .. }
                | HubError::Unavailable { .. }
                | HubError::Timeout { .. }
                | HubError::ConnectionLost { .. }
        )
    }
}
