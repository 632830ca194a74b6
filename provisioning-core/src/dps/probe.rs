//! Reaching DPS without registering: resolve the endpoint, connect and complete a TLS
//! handshake with the configured trust (`hsmkit check`). Server authentication only: the
//! device's own identity is not presented, so nothing is signed and DPS records nothing.

use super::tls::{client_config_without_identity, root_store, TlsSetupError};
use super::{DpsClientConfig, Transport};
use rumqttc::tokio_rustls::TlsConnector;
use rustls_pki_types::ServerName;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// What a successful probe found.
#[derive(Debug, Clone)]
pub struct ProbeReport {
    /// The host name checked against the certificate.
    pub host: String,
    /// The port connected to.
    pub port: u16,
    /// The addresses the host resolved to.
    pub addresses: Vec<SocketAddr>,
    /// The address the handshake completed with.
    pub connected: SocketAddr,
}

/// Why DPS could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The endpoint setting is not `host`, `host:port` or a URL of those.
    #[error("the DPS endpoint `{0}` is not host, host:port or scheme://host[:port]")]
    BadEndpoint(String),
    /// Name resolution failed or gave nothing.
    #[error("cannot resolve {host}")]
    Resolve {
        /// The host.
        host: String,
        /// The resolver's error.
        #[source]
        error: std::io::Error,
    },
    /// No address accepted a TCP connection.
    #[error("cannot connect to {host}:{port}")]
    Connect {
        /// The host.
        host: String,
        /// The port.
        port: u16,
        /// The last connection error.
        #[source]
        error: std::io::Error,
    },
    /// The trust settings are unusable.
    #[error("cannot set up TLS")]
    Trust(#[source] TlsSetupError),
    /// The handshake failed (an untrusted or wrong certificate, a server that is no TLS server).
    #[error("TLS handshake with {host}:{port} failed")]
    Handshake {
        /// The host.
        host: String,
        /// The port.
        port: u16,
        /// What rustls said.
        #[source]
        error: std::io::Error,
    },
    /// Nothing answered in time.
    #[error("no answer from {host}:{port} within {} s", timeout.as_secs())]
    Timeout {
        /// The host.
        host: String,
        /// The port.
        port: u16,
        /// The time allowed.
        timeout: Duration,
    },
}

impl ProbeError {
    /// The failure's class, for exit codes and `--json` ([`crate::error_kind`]).
    pub fn error_kind(&self) -> crate::error_kind::ErrorKind {
        use crate::error_kind::ErrorKind;
        match self {
            ProbeError::BadEndpoint(_) => ErrorKind::Config,
            ProbeError::Trust(e) => e.error_kind(),
            ProbeError::Resolve { .. }
            | ProbeError::Connect { .. }
            | ProbeError::Handshake { .. } => ErrorKind::Network,
            ProbeError::Timeout { .. } => ErrorKind::Timeout,
        }
    }
}

/// Splits an endpoint setting into host and port, with the transport's default port.
pub fn endpoint_host_port(
    endpoint: &str,
    transport: Transport,
) -> Result<(String, u16), ProbeError> {
    let bad = || ProbeError::BadEndpoint(endpoint.to_string());
    let e = endpoint.trim();
    let rest = e.split_once("://").map_or(e, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or_default();
    let default_port = match transport {
        Transport::Mqtt => 8883,
        Transport::Https | Transport::MqttWs => 443,
    };
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, after) = v6.split_once(']').ok_or_else(bad)?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| bad())?,
            None if after.is_empty() => default_port,
            None => return Err(bad()),
        };
        (h.to_string(), port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), p.parse().map_err(|_| bad())?),
            None => (authority.to_string(), default_port),
        }
    };
    if host.is_empty() {
        return Err(bad());
    }
    Ok((host, port))
}

/// The endpoint as one target is always written, for saving it in the provisioning record and
/// comparing it with the configured one: `host:port`, the host in lower case (DNS names are
/// case-insensitive), the transport's default port when none is given, without scheme or
/// trailing slash; so `https://H:8443/` and `h:8443` are the same. An endpoint that does not
/// parse is returned trimmed (registering with it fails, saying why).
pub fn normalized_endpoint(endpoint: &str, transport: Transport) -> String {
    match endpoint_host_port(endpoint, transport) {
        Ok((host, port)) if host.contains(':') => format!("[{}]:{port}", host.to_lowercase()),
        Ok((host, port)) => format!("{}:{port}", host.to_lowercase()),
        Err(_) => endpoint.trim().to_string(),
    }
}

/// Resolves the endpoint, connects and completes a TLS handshake trusting what `config`
/// trusts (its extra PEM and, when on, the public roots); each step within `timeout`.
pub async fn probe(config: &DpsClientConfig, timeout: Duration) -> Result<ProbeReport, ProbeError> {
    let (host, port) = endpoint_host_port(&config.endpoint, config.transport)?;
    let timed_out = || ProbeError::Timeout {
        host: host.clone(),
        port,
        timeout,
    };
    let addresses: Vec<SocketAddr> =
        tokio::time::timeout(timeout, tokio::net::lookup_host((host.as_str(), port)))
            .await
            .map_err(|_| timed_out())?
            .map_err(|error| ProbeError::Resolve {
                host: host.clone(),
                error,
            })?
            .collect();
    if addresses.is_empty() {
        return Err(ProbeError::Resolve {
            host: host.clone(),
            error: std::io::Error::new(std::io::ErrorKind::NotFound, "no address"),
        });
    }
    let mut last = None;
    let mut stream = None;
    for addr in &addresses {
        match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
            Ok(Ok(s)) => {
                stream = Some((s, *addr));
                break;
            }
            Ok(Err(e)) => last = Some(e),
            Err(_) => {
                last = Some(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "connect timed out",
                ))
            }
        }
    }
    let Some((stream, connected)) = stream else {
        return Err(ProbeError::Connect {
            host,
            port,
            error: last.unwrap_or_else(|| std::io::Error::other("no address to try")),
        });
    };
    let roots = root_store(config.extra_trust_pem.as_deref(), config.trust_public_roots)
        .map_err(ProbeError::Trust)?;
    let tls = client_config_without_identity(roots).map_err(ProbeError::Trust)?;
    let name = ServerName::try_from(host.clone())
        .map_err(|_| ProbeError::BadEndpoint(config.endpoint.clone()))?;
    tokio::time::timeout(
        timeout,
        TlsConnector::from(Arc::new(tls)).connect(name, stream),
    )
    .await
    .map_err(|_| timed_out())?
    .map_err(|error| ProbeError::Handshake {
        host: host.clone(),
        port,
        error,
    })?;
    Ok(ProbeReport {
        host,
        port,
        addresses,
        connected,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_split_with_the_transports_default_port() {
        let hp = |e, t| endpoint_host_port(e, t).map_err(|e| e.to_string());
        assert_eq!(
            hp("h.example", Transport::Https),
            Ok(("h.example".into(), 443))
        );
        assert_eq!(
            hp("h.example", Transport::Mqtt),
            Ok(("h.example".into(), 8883))
        );
        assert_eq!(
            hp("https://h:8443/", Transport::Https),
            Ok(("h".into(), 8443))
        );
        assert_eq!(hp("[::1]:9", Transport::Https), Ok(("::1".into(), 9)));
        assert!(hp("h:x", Transport::Https).is_err());
        assert!(hp("https://", Transport::Https).is_err());
    }

    #[test]
    fn one_target_is_written_one_way() {
        let n = normalized_endpoint;
        assert_eq!(n("https://H:8443/", Transport::Https), "h:8443");
        assert_eq!(n("h:8443", Transport::Https), "h:8443");
        assert_eq!(n(" h ", Transport::Https), "h:443");
        assert_eq!(n("https://h", Transport::Https), "h:443");
        assert_eq!(n("h", Transport::Mqtt), "h:8883");
        assert_eq!(n("wss://h", Transport::MqttWs), "h:443");
        assert_eq!(n("[::1]:9", Transport::Https), "[::1]:9");
        assert_eq!(n("h:x", Transport::Https), "h:x");
    }
}
