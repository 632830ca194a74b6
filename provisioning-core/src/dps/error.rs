//! Why a registration failed. Every message says what the user can do about it; none carries
//! a key, token or PIN.

use crate::plugin::PluginError;
use std::time::Duration;

/// A failed registration.
#[derive(Debug, thiserror::Error)]
pub enum DpsError {
    /// The configuration cannot work (bad endpoint, id scope, registration id...).
    #[error("invalid DPS settings: {reason}")]
    Config {
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// No connection could be made.
    #[error("cannot reach DPS at {endpoint}: {detail}; check the endpoint name, DNS, proxy and that outbound TCP 443 (8883 for MQTT, or the given port) is allowed")]
    Unreachable {
        /// The endpoint tried.
        endpoint: String,
        /// The last connection error.
        detail: String,
    },
    /// The server's certificate is not trusted (or the handshake failed for TLS reasons).
    #[error("TLS with {endpoint} failed: {detail}; for an emulator or private DPS pass its CA certificate (--trust-ca) or add it to the system's CA certificates (update-ca-certificates, or SSL_CERT_FILE), otherwise check the system clock and any TLS-intercepting proxy")]
    TlsTrust {
        /// The endpoint.
        endpoint: String,
        /// What rustls reported.
        detail: String,
    },
    /// The server ended the TLS handshake with an alert after the device presented its
    /// X.509 client certificate: DPS refused the chain or the signature made with its key.
    #[error("DPS at {endpoint} refused the device's TLS client certificate during the handshake ({alert}); the chain must be leaf first and verify, and the handshake signature (sign_digest through the plugin) must verify with the leaf's public key")]
    ClientCertificateRefused {
        /// The endpoint.
        endpoint: String,
        /// The alert the server sent, as rustls reports it.
        alert: String,
    },
    /// The service refused the credentials: no enrollment, wrong key or certificate.
    #[error("DPS refused registration id `{registration_id}` ({attestation} attestation) with HTTP 401 (error {error_code}): {message}; check that an enrollment (or group) exists for it in this id scope with {attestation} attestation and that the device's key or certificate matches it (tracking id {tracking_id})")]
    Unauthorized {
        /// The registration id used.
        registration_id: String,
        /// The attestation tried.
        attestation: &'static str,
        /// DPS errorCode (401002 from the real service; 0 when none was given).
        error_code: u64,
        /// The service's message.
        message: String,
        /// The service's tracking id, for support requests.
        tracking_id: String,
    },
    /// The id scope or path is unknown to the service.
    #[error("DPS answered 404 for id scope `{id_scope}`: {message}; check the id scope (DPS overview page) and the endpoint (tracking id {tracking_id})")]
    NotFound {
        /// The id scope used.
        id_scope: String,
        /// The service's message.
        message: String,
        /// The service's tracking id.
        tracking_id: String,
    },
    /// The enrollment exists but is disabled.
    #[error("the enrollment of `{registration_id}` is disabled; enable it in DPS (or its group) and provision again")]
    Disabled {
        /// The registration id.
        registration_id: String,
    },
    /// The service accepted the device but could not assign it.
    #[error("DPS could not assign `{registration_id}` (error {error_code}): {message}; check that the enrollment links an IoT hub and its allocation policy")]
    AssignmentFailed {
        /// The registration id.
        registration_id: String,
        /// registrationState.errorCode (0 when none was given).
        error_code: u64,
        /// registrationState.errorMessage.
        message: String,
    },
    /// The plugin failed (its error is in the message, so not also the `source()`).
    #[error("the HSM plugin failed: {0}; check the plugin's settings and its device (see `hsmkit plugins list`)")]
    Plugin(PluginError),
    /// No final answer within the overall timeout.
    #[error("no final answer from DPS within {after:?} (last: {last}); try again later or allow more time with --timeout SECS (timeout_secs in [provisioning] of the config)")]
    Timeout {
        /// The overall timeout.
        after: Duration,
        /// The last thing that happened.
        last: String,
    },
    /// The service's answer did not follow the protocol.
    #[error("unexpected answer from DPS: {detail}; check that the endpoint is a DPS device endpoint and the api-version is supported")]
    Protocol {
        /// What was wrong.
        detail: String,
    },
    /// Any other error answer from the service.
    #[error(
        "DPS answered HTTP {status} (error {error_code}): {message} (tracking id {tracking_id})"
    )]
    Service {
        /// HTTP status.
        status: u16,
        /// DPS errorCode (0 when none was given).
        error_code: u64,
        /// The service's message.
        message: String,
        /// The service's tracking id.
        tracking_id: String,
    },
}

impl From<PluginError> for DpsError {
    fn from(e: PluginError) -> Self {
        DpsError::Plugin(e)
    }
}

impl DpsError {
    /// The failure's class, for exit codes and `--json` ([`crate::error_kind`]).
    pub fn error_kind(&self) -> crate::error_kind::ErrorKind {
        use crate::error_kind::ErrorKind;
        match self {
            DpsError::Config { .. } => ErrorKind::Config,
            DpsError::Unreachable { .. }
            | DpsError::TlsTrust { .. }
            | DpsError::Protocol { .. } => ErrorKind::Network,
            DpsError::ClientCertificateRefused { .. }
            | DpsError::Unauthorized { .. }
            | DpsError::NotFound { .. }
            | DpsError::Disabled { .. }
            | DpsError::AssignmentFailed { .. }
            | DpsError::Service { .. } => ErrorKind::DpsRefused,
            DpsError::Plugin(e) => e.error_kind(),
            DpsError::Timeout { .. } => ErrorKind::Timeout,
        }
    }

    /// A short machine-readable kind, for `--json` output.
    pub fn kind(&self) -> &'static str {
        match self {
            DpsError::Config { .. } => "config",
            DpsError::Unreachable { .. } => "unreachable",
            DpsError::TlsTrust { .. } => "tls-trust",
            DpsError::ClientCertificateRefused { .. } => "client-certificate-refused",
            DpsError::Unauthorized { .. } => "unauthorized",
            DpsError::NotFound { .. } => "not-found",
            DpsError::Disabled { .. } => "disabled",
            DpsError::AssignmentFailed { .. } => "assignment-failed",
            DpsError::Plugin(_) => "plugin",
            DpsError::Timeout { .. } => "timeout",
            DpsError::Protocol { .. } => "protocol",
            DpsError::Service { .. } => "service",
        }
    }
}
