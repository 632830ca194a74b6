//! One HTTP exchange with DPS and what became of it: an answer, or a transport failure sorted
//! into the kinds the retry logic and the error messages need.

use super::retry::parse_retry_after;
use super::tls::SignFailure;
use crate::plugin::PluginError;
use std::time::Duration;

/// Answers larger than this are refused: DPS answers are a few KiB.
const MAX_ANSWER_BYTES: usize = 256 * 1024;

/// An HTTP answer.
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

/// The client for one registration.
pub(crate) struct DpsHttp {
    client: reqwest::Client,
    request_timeout: Duration,
    max_retry_after: Duration,
    sign_failure: Option<SignFailure>,
}

impl DpsHttp {
    pub(super) fn new(
        tls: rustls::ClientConfig,
        request_timeout: Duration,
        max_retry_after: Duration,
        sign_failure: Option<SignFailure>,
    ) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .http1_only()
            .connect_timeout(request_timeout)
            .user_agent(concat!("hsmkit/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("cannot build the HTTPS client: {e}"))?;
        Ok(Self {
            client,
            request_timeout,
            max_retry_after,
            sign_failure,
        })
    }

    /// Sends one request; `body` is JSON.
    pub(super) async fn send(
        &self,
        method: reqwest::Method,
        url: &str,
        body: Option<Vec<u8>>,
        authorization: Option<&str>,
    ) -> Result<Answer, TransportFailure> {
        let mut rb = self
            .client
            .request(method, url)
            .timeout(self.request_timeout)
            .header(reqwest::header::ACCEPT, "application/json")
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/json; charset=utf-8",
            );
        if let Some(a) = authorization {
            rb = rb.header(reqwest::header::AUTHORIZATION, a);
        }
        rb = rb.body(body.unwrap_or_default());
        let mut resp = rb.send().await.map_err(|e| self.classify(&e))?;
        let status = resp.status().as_u16();
        let retry_after = parse_retry_after(
            resp.headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok()),
            self.max_retry_after,
        );
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| self.classify(&e))? {
            if body.len() + chunk.len() > MAX_ANSWER_BYTES {
                return Err(TransportFailure::Transient(format!(
                    "the answer is larger than {MAX_ANSWER_BYTES} bytes"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Answer {
            status,
            retry_after,
            body,
        })
    }

    fn classify(&self, e: &reqwest::Error) -> TransportFailure {
        if let Some(slot) = &self.sign_failure {
            if let Some(p) = slot.lock().ok().and_then(|mut s| s.take()) {
                return TransportFailure::Plugin(p);
            }
        }
        let detail = describe(e);
        if let Some(tls) = find_rustls_error(e) {
            return TransportFailure::Tls(tls.to_string());
        }
        // Some layers flatten the rustls error into text; its messages are recognisable.
        const TLS_MARKERS: [&str; 4] = [
            "invalid peer certificate",
            "peer is incompatible",
            "received fatal alert",
            "peer sent no certificates",
        ];
        if let Some(m) = TLS_MARKERS.iter().find(|m| detail.contains(*m)) {
            let start = detail.find(m).unwrap_or(0);
            return TransportFailure::Tls(detail[start..].to_string());
        }
        if e.is_timeout() {
            return TransportFailure::Transient(format!(
                "no answer within {:?} ({detail})",
                self.request_timeout
            ));
        }
        if e.is_connect() {
            return TransportFailure::Connect(detail);
        }
        TransportFailure::Transient(detail)
    }
}

/// The error and its causes, joined; reqwest's own Display alone says little.
fn describe(e: &(dyn std::error::Error + 'static)) -> String {
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
fn find_rustls_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
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
