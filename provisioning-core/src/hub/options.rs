//! What a [`super::HubClient`] is run with: where to connect, whom to trust, how long SAS
//! tokens live and when they are renewed, timeouts and the reconnect back-off.

use super::HubError;
use std::time::Duration;

/// IoT Hub's MQTT port over TLS.
pub const HUB_MQTT_PORT: u16 = dps_proto::mqtt::MQTT_TLS_PORT;

/// IoT Hub's port for MQTT over a WebSocket (on TLS).
pub const HUB_MQTT_WS_PORT: u16 = dps_proto::mqtt::MQTT_WS_PORT;

/// Everything a hub connection needs besides the provisioning record and the plugin.
#[derive(Clone, Debug)]
pub struct HubOptions {
    /// Connect here (`HOST[:PORT]` or `mqtts://HOST[:PORT]`) instead of the assigned hub; TLS
    /// still verifies the server as the assigned hub's host name (and sends it as SNI), so an
    /// emulator on `127.0.0.1` is checked exactly as the real hub would be.
    pub endpoint: Option<String>,
    /// MQTT over a WebSocket on TLS (port 443, path `/$iothub/websocket`, sub-protocol
    /// `mqtt`), for networks where 8883 is closed; the MQTT session is the same.
    pub websocket: bool,
    /// Extra CA certificates (PEM) to trust besides the public web roots (an emulator's).
    pub extra_trust_pem: Option<Vec<u8>>,
    /// Trust the public web PKI roots (the real service).
    pub trust_public_roots: bool,
    /// Lifetime of each SAS token (symmetric key, TPM). The token is renewed, by reconnecting
    /// with a fresh one, after [`renewal_delay`] of it: IoT Hub's MQTT endpoint takes a new
    /// token only in a new CONNECT.
    pub sas_lifetime: Duration,
    /// TCP connect, TLS handshake and CONNACK, together.
    pub connect_timeout: Duration,
    /// Waiting for a PUBACK (telemetry) or a twin response.
    pub operation_timeout: Duration,
    /// MQTT keep-alive (the SDKs use 4 minutes; the hub allows up to 1177 s).
    pub keep_alive: Duration,
    /// Reconnecting after a dropped connection.
    pub reconnect: Backoff,
}

impl Default for HubOptions {
    /// The assigned hub on 8883, public roots, SAS valid 1 h (renewed after 48 min), 30 s to
    /// connect and per operation, keep-alive 4 min, [`Backoff::default`].
    fn default() -> Self {
        Self {
            endpoint: None,
            websocket: false,
            extra_trust_pem: None,
            trust_public_roots: true,
            sas_lifetime: Duration::from_secs(3600),
            connect_timeout: Duration::from_secs(30),
            operation_timeout: Duration::from_secs(30),
            keep_alive: Duration::from_secs(240),
            reconnect: Backoff::default(),
        }
    }
}

impl HubOptions {
    /// Checks the settings that a connection would only trip over later.
    pub(crate) fn validate(&self) -> Result<(), HubError> {
        let bad = |reason: &str| {
            Err(HubError::Config {
                reason: reason.to_string(),
            })
        };
        if self.sas_lifetime < Duration::from_secs(1) {
            return bad("the SAS token lifetime must be at least one second");
        }
        if self.connect_timeout.is_zero() || self.operation_timeout.is_zero() {
            return bad("timeouts must be longer than zero");
        }
        if self.keep_alive.as_secs() > u64::from(u16::MAX) {
            return bad("the keep-alive must fit MQTT's 16-bit seconds");
        }
        Ok(())
    }
}

/// When a token valid for `lifetime` is replaced: after four fifths of it (the C SDK's
/// refresh multiplier), so that a slow reconnect still finishes before the hub closes the
/// connection at expiry.
pub fn renewal_delay(lifetime: Duration) -> Duration {
    lifetime.mul_f64(0.8)
}

/// Exponential back-off between reconnect attempts, bounded in delay and in attempts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// The first wait; doubled per failed attempt.
    pub initial: Duration,
    /// The largest wait (before jitter).
    pub max: Duration,
    /// Attempts after which the client gives up and reports the last failure.
    pub max_attempts: u32,
}

impl Default for Backoff {
    /// 1 s doubling to 60 s, 12 attempts (about 8 minutes in all).
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(60),
            max_attempts: 12,
        }
    }
}

impl Backoff {
    /// The nominal wait before attempt `attempt` (1-based): `initial * 2^(attempt-1)`, at most
    /// `max`.
    pub fn nominal(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(31));
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// The wait before attempt `attempt`, with jitter: between half and all of
    /// [`Backoff::nominal`], so that a fleet cut off together does not come back in step.
    pub fn delay(&self, attempt: u32) -> Duration {
        use rand::Rng;
        let nominal = self.nominal(attempt);
        let half = nominal / 2;
        let jitter_ms = u64::try_from(half.as_millis()).unwrap_or(u64::MAX);
        half + Duration::from_millis(rand::thread_rng().gen_range(0..=jitter_ms))
    }
}

/// Where the TCP connection goes: `endpoint` when given (`HOST`, `HOST:PORT`,
/// `mqtts://HOST[:PORT]`, or `wss://HOST[:PORT]` over a WebSocket), else the hub itself; the
/// port defaults to 8883, or 443 over a WebSocket.
pub fn connect_target(
    hub: &str,
    endpoint: Option<&str>,
    websocket: bool,
) -> Result<(String, u16), HubError> {
    let (scheme, default_port) = if websocket {
        ("wss://", HUB_MQTT_WS_PORT)
    } else {
        ("mqtts://", HUB_MQTT_PORT)
    };
    let Some(e) = endpoint else {
        return Ok((hub.to_string(), default_port));
    };
    let bad = |why: &str| HubError::Config {
        reason: format!(
            "the hub endpoint `{}` {why}; give HOST[:PORT] (for example 127.0.0.1:8883)",
            e.escape_debug()
        ),
    };
    let t = e.trim();
    if t.contains("://") && !t.starts_with(scheme) {
        return Err(bad(if websocket {
            "is not a wss:// URL (MQTT over WebSocket)"
        } else {
            "is a URL for another protocol (wss:// needs the WebSocket option)"
        }));
    }
    let rest = t.strip_prefix(scheme).unwrap_or(t).trim_end_matches('/');
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) => {
            let port = p
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| bad("has no valid TCP port"))?;
            (h, port)
        }
        None => (rest, default_port),
    };
    let ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.".contains(&b));
    if !ok {
        return Err(bad("is not a host name or IPv4 address"));
    }
    Ok((host.to_string(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        assert_eq!(
            connect_target("h.azure-devices.net", None, false).unwrap(),
            ("h.azure-devices.net".into(), 8883)
        );
        assert_eq!(
            connect_target("h", Some("127.0.0.1:18883"), false).unwrap(),
            ("127.0.0.1".into(), 18883)
        );
        assert_eq!(
            connect_target("h", Some("mqtts://localhost/"), false).unwrap(),
            ("localhost".into(), 8883)
        );
        for bad in [
            "",
            "https://h",
            "h:0",
            "h:x",
            "h/p",
            "[::1]:8883",
            "h:70000",
        ] {
            let e = connect_target("h", Some(bad), false).unwrap_err();
            assert!(matches!(e, HubError::Config { .. }), "{bad}: {e}");
            assert!(e.to_string().contains("HOST[:PORT]"), "{e}");
        }
        // Over a WebSocket: 443 unless told, wss:// URLs.
        assert_eq!(connect_target("h", None, true).unwrap(), ("h".into(), 443));
        assert_eq!(
            connect_target("h", Some("wss://127.0.0.1:8444"), true).unwrap(),
            ("127.0.0.1".into(), 8444)
        );
        assert!(connect_target("h", Some("wss://h"), false).is_err());
        assert!(connect_target("h", Some("mqtts://h"), true).is_err());
    }

    #[test]
    fn renewal_comes_before_expiry() {
        assert_eq!(
            renewal_delay(Duration::from_secs(3600)),
            Duration::from_secs(2880)
        );
        assert_eq!(
            renewal_delay(Duration::from_secs(5)),
            Duration::from_secs(4)
        );
        for secs in [1, 2, 60, 86_400] {
            let l = Duration::from_secs(secs);
            assert!(renewal_delay(l) < l && !renewal_delay(l).is_zero());
        }
    }

    #[test]
    fn backoff_doubles_and_is_bounded() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(1000),
            max_attempts: 5,
        };
        let nominal: Vec<u64> = (1..=6).map(|a| b.nominal(a).as_millis() as u64).collect();
        assert_eq!(nominal, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(b.nominal(u32::MAX), Duration::from_millis(1000));
        for attempt in 1..=6 {
            for _ in 0..50 {
                let d = b.delay(attempt);
                assert!(
                    d >= b.nominal(attempt) / 2 && d <= b.nominal(attempt),
                    "{d:?}"
                );
            }
        }
    }

    #[test]
    fn options_are_checked() {
        assert!(HubOptions::default().validate().is_ok());
        let o = HubOptions {
            sas_lifetime: Duration::from_millis(500),
            ..HubOptions::default()
        };
        assert!(o.validate().unwrap_err().to_string().contains("lifetime"));
        let o = HubOptions {
            operation_timeout: Duration::ZERO,
            ..HubOptions::default()
        };
        assert!(o.validate().is_err());
    }
}
