//! What a registration is run with.

use std::time::Duration;

/// The global DPS endpoint devices use unless told otherwise.
pub const GLOBAL_ENDPOINT: &str = "global.azure-devices-provisioning.net";

pub use dps_proto::ApiVersion;

use super::transport::Transport;

/// How transient failures (connection drops, 429, 5xx, request timeouts) are retried. Every
/// wait is also bounded by the overall timeout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// First back-off after a failure without Retry-After; doubled per failure.
    pub initial_backoff: Duration,
    /// Largest back-off (before jitter).
    pub max_backoff: Duration,
    /// Wait between operation polls when the service gives no usable Retry-After.
    pub default_poll_interval: Duration,
    /// Largest Retry-After honoured; larger or unparsable values fall back to the default.
    pub max_retry_after: Duration,
    /// Consecutive failures to connect at all before giving up as unreachable.
    pub max_connect_failures: u32,
}

impl Default for RetryPolicy {
    /// 0.5 s doubling to 30 s, polls every 1 s unless told otherwise, Retry-After up to 300 s
    /// (the Azure SDKs' rule), unreachable after 3 connection failures in a row.
    fn default() -> Self {
        Self {
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            default_poll_interval: Duration::from_secs(1),
            max_retry_after: Duration::from_secs(300),
            max_connect_failures: 3,
        }
    }
}

/// Everything a DPS registration needs besides the plugin.
#[derive(Clone, Debug)]
pub struct DpsClientConfig {
    /// `host`, `host:port` or `https://host[:port]` (`mqtts://host[:port]` with MQTT); defaults
    /// to the global endpoint. The port defaults to 443 for HTTPS, 8883 for MQTT.
    pub endpoint: String,
    /// HTTPS (the default) or MQTT; TPM attestation needs HTTPS.
    pub transport: Transport,
    /// The DPS instance's id scope (`0ne...`).
    pub id_scope: String,
    /// The device API version.
    pub api_version: ApiVersion,
    /// Extra CA certificates (PEM) to trust besides the public web roots, e.g. an emulator's.
    pub extra_trust_pem: Option<Vec<u8>>,
    /// Trust the public web PKI roots (the real service); off trusts only `extra_trust_pem`.
    pub trust_public_roots: bool,
    /// The whole registration, retries and polls included, ends after this.
    pub overall_timeout: Duration,
    /// One exchange (connect, send, answer; over MQTT one request on the open connection, with
    /// the connection and subscription when there is none yet) ends after this and is retried.
    pub request_timeout: Duration,
    /// Use this registration id instead of the one the plugin derives.
    pub registration_id: Option<String>,
    /// Custom JSON sent as `payload` (DPS hands it to custom allocation and echoes it).
    pub payload: Option<serde_json::Value>,
    /// Lifetime of the SAS tokens sent to DPS.
    pub sas_ttl: Duration,
    /// Retry and polling rules.
    pub retry: RetryPolicy,
    /// A DER PKCS#10 request for an operational certificate (see
    /// [`crate::issuance::build_csr`]), sent base64 as `csr` in the register body; send it
    /// with api-version [`ApiVersion::V2025_07_01Preview`]. The issued chain comes back in
    /// [`super::RegistrationResult::issued_certificate_chain`].
    pub csr: Option<Vec<u8>>,
}

impl DpsClientConfig {
    /// A configuration for `id_scope` at the global endpoint with the defaults: api-version
    /// 2021-06-01 over HTTPS, public roots, 2 min overall, 30 s per request, SAS valid 40 min (the C SDK's).
    pub fn new(id_scope: impl Into<String>) -> Self {
        Self {
            endpoint: GLOBAL_ENDPOINT.to_string(),
            transport: Transport::Https,
            id_scope: id_scope.into(),
            api_version: ApiVersion::default(),
            extra_trust_pem: None,
            trust_public_roots: true,
            overall_timeout: Duration::from_secs(120),
            request_timeout: Duration::from_secs(30),
            registration_id: None,
            payload: None,
            sas_ttl: Duration::from_secs(2400),
            retry: RetryPolicy::default(),
            csr: None,
        }
    }
}

/// Turns the endpoint setting into a base URL without a trailing slash, or says why not.
pub(crate) fn base_url(endpoint: &str) -> Result<String, String> {
    let e = endpoint.trim();
    if e.is_empty() {
        return Err("the DPS endpoint is empty".into());
    }
    if e.starts_with("http://") {
        return Err(format!(
            "the DPS endpoint `{e}` uses plain http; DPS only speaks https"
        ));
    }
    let rest = e
        .strip_prefix("https://")
        .unwrap_or(e)
        .trim_end_matches('/');
    let ok = !rest.is_empty()
        && rest
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b));
    if !ok {
        return Err(format!(
            "the DPS endpoint `{e}` is not a host name, host:port or https://host[:port] URL"
        ));
    }
    Ok(format!("https://{rest}"))
}

pub(crate) use dps_proto::{is_valid_id, survives_url_normalisation};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_normalise() {
        assert_eq!(
            base_url("example.net").as_deref(),
            Ok("https://example.net")
        );
        assert_eq!(
            base_url("127.0.0.1:8443").as_deref(),
            Ok("https://127.0.0.1:8443")
        );
        assert_eq!(base_url("https://h:1/").as_deref(), Ok("https://h:1"));
        assert!(base_url("http://h").is_err());
        assert!(base_url("").is_err());
        assert!(base_url("h/path?x").is_err());
    }
}
