//! DPS over HTTPS: one HTTP exchange per request (reqwest on the shared rustls settings) and
//! what became of it: an answer, or a transport failure sorted into the kinds the retry logic
//! and the error messages need.

use super::plugin_or_tls_failure;
use super::{Answer, DpsTransport, TransportFailure};
use crate::dps::config::ApiVersion;
use crate::dps::retry::parse_retry_after;
use crate::dps::tls::SignFailure;
use std::time::Duration;

/// Answers larger than this are refused: DPS answers are a few KiB.
pub(crate) const MAX_ANSWER_BYTES: usize = 256 * 1024;

/// The HTTPS client for one registration.
pub(crate) struct HttpsTransport {
    client: reqwest::Client,
    base: String,
    id_scope: String,
    registration_id: String,
    api_version: ApiVersion,
    request_timeout: Duration,
    max_retry_after: Duration,
    sign_failure: Option<SignFailure>,
    /// The HTTP proxy requests go through (`HTTPS_PROXY`), for messages.
    proxy: Option<String>,
}

/// Where an HTTPS transport goes and how long it waits.
pub(crate) struct HttpsTarget<'a> {
    /// `https://host[:port]`.
    pub base: String,
    pub id_scope: &'a str,
    pub registration_id: &'a str,
    pub api_version: ApiVersion,
    pub request_timeout: Duration,
    pub max_retry_after: Duration,
}

impl HttpsTransport {
    pub(crate) fn new(
        tls: rustls::ClientConfig,
        target: HttpsTarget<'_>,
        sign_failure: Option<SignFailure>,
    ) -> Result<Self, String> {
        // reqwest tunnels through the proxy the environment names (HTTPS_PROXY, NO_PROXY) by
        // itself; the same rules say which one here, for the log and the errors.
        let proxy = crate::dps::proxy::https_proxy_for(&target.base).map(|p| p.shown);
        match &proxy {
            Some(p) => tracing::info!(
                "DPS over HTTPS through the proxy {p} (HTTPS_PROXY or ALL_PROXY; NO_PROXY lists hosts reached directly)"
            ),
            None => tracing::debug!("DPS over HTTPS without a proxy"),
        }
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .http1_only()
            .connect_timeout(target.request_timeout)
            .user_agent(concat!("hsmkit/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("cannot build the HTTPS client: {e}"))?;
        Ok(Self {
            client,
            base: target.base,
            id_scope: target.id_scope.to_string(),
            registration_id: target.registration_id.to_string(),
            api_version: target.api_version,
            request_timeout: target.request_timeout,
            max_retry_after: target.max_retry_after,
            sign_failure,
            proxy,
        })
    }

    fn url(&self, tail: &str) -> String {
        format!(
            "{}/{}/registrations/{}/{tail}?api-version={}",
            self.base, self.id_scope, self.registration_id, self.api_version
        )
    }

    /// Sends one request; `body` is JSON.
    async fn send(
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
        let detail = match plugin_or_tls_failure(self.sign_failure.as_ref(), e) {
            Ok(detail) => detail,
            Err(failure) => return failure,
        };
        if e.is_timeout() {
            return TransportFailure::Transient(format!(
                "no answer within {:?} ({detail})",
                self.request_timeout
            ));
        }
        if e.is_connect() {
            return TransportFailure::Connect(match &self.proxy {
                // The proxy itself, or the tunnel it was asked for, failed: name it, since the
                // user may not know a variable sends hsmkit through one.
                Some(p) => format!(
                    "through the HTTP proxy {p} (from HTTPS_PROXY or ALL_PROXY; list the host in NO_PROXY to connect directly): {detail}"
                ),
                None => detail,
            });
        }
        TransportFailure::Transient(detail)
    }
}

impl DpsTransport for HttpsTransport {
    fn endpoint(&self) -> &str {
        &self.base
    }

    async fn register(
        &mut self,
        body: Vec<u8>,
        authorization: Option<&str>,
    ) -> Result<Answer, TransportFailure> {
        let url = self.url("register");
        self.send(reqwest::Method::PUT, &url, Some(body), authorization)
            .await
    }

    async fn operation_status(
        &mut self,
        operation_id: &str,
        authorization: Option<&str>,
    ) -> Result<Answer, TransportFailure> {
        let url = self.url(&format!("operations/{operation_id}"));
        self.send(reqwest::Method::GET, &url, None, authorization)
            .await
    }
}
