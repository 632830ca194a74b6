//! The HTTP proxy that DPS requests over HTTPS and over MQTT-over-WebSocket go through:
//! `HTTPS_PROXY` / `https_proxy`, else `ALL_PROXY` / `all_proxy`, except for the hosts
//! `NO_PROXY` / `no_proxy` lists, read as curl reads them. reqwest applies these variables
//! itself, through hyper-util's matcher; this module asks that same matcher which proxy a URL
//! goes through (one copy of the rules: hyper-util's), so that hsmkit can name it in its log
//! and errors, and hand it to rumqttc for `wss://`.
//!
//! Through the proxy goes an HTTP CONNECT tunnel, in which the TLS (mutual TLS included) runs
//! end to end with DPS. MQTT on 8883 connects directly.

use base64::Engine;
use hyper_util::client::proxy::matcher::Matcher;

/// The proxy a URL goes through.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ProxyTarget {
    /// `scheme://host[:port]`, for messages (credentials never shown).
    pub shown: String,
    /// Whether it is spoken to in TLS (`https://proxy`), which only reqwest supports here.
    pub tls: bool,
    /// The proxy's host and port (80 for `http://`, 443 for `https://` when none is given).
    pub host: String,
    pub port: u16,
    /// User name and password from the variable's URL, for Basic proxy authorization.
    pub basic_auth: Option<(String, String)>,
}

/// The proxy `url` (an `https://host[:port]` URL) goes through by the environment; `None`
/// when no proxy variable is set or `NO_PROXY` names the host.
pub(crate) fn https_proxy_for(url: &str) -> Option<ProxyTarget> {
    proxy_for(&Matcher::from_env(), url)
}

/// [`https_proxy_for`] with the rules given (tests build them without touching the process
/// environment).
fn proxy_for(matcher: &Matcher, url: &str) -> Option<ProxyTarget> {
    let uri: http::Uri = url.parse().ok()?;
    let hit = matcher.intercept(&uri)?;
    let proxy = hit.uri();
    let host = proxy.host()?.to_string();
    let scheme = proxy.scheme_str().unwrap_or("http");
    let tls = scheme == "https";
    let shown = match proxy.port_u16() {
        Some(port) => format!("{scheme}://{host}:{port}"),
        None => format!("{scheme}://{host}"),
    };
    let port = proxy.port_u16().unwrap_or(if tls { 443 } else { 80 });
    // The matcher keeps `user:password@` as a ready `Basic ...` header value.
    let basic_auth = hit
        .basic_auth()
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok())
        .and_then(|raw| String::from_utf8(raw).ok())
        .and_then(|pair| {
            pair.split_once(':')
                .map(|(u, p)| (u.to_string(), p.to_string()))
        });
    Some(ProxyTarget {
        shown,
        tls,
        host,
        port,
        basic_auth,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_urls_go_through_the_https_proxy_without_showing_credentials() {
        let m = Matcher::builder()
            .https("http://user:secret@proxy.example:3128")
            .build();
        let p = proxy_for(&m, "https://global.azure-devices-provisioning.net").expect("a proxy");
        assert_eq!(p.shown, "http://proxy.example:3128");
        assert_eq!(
            (p.host.as_str(), p.port, p.tls),
            ("proxy.example", 3128, false)
        );
        assert_eq!(
            p.basic_auth,
            Some(("user".to_string(), "secret".to_string()))
        );
        let p = proxy_for(
            &Matcher::builder().https("http://proxy.example").build(),
            "https://h",
        )
        .expect("a proxy");
        assert_eq!(
            (p.shown.as_str(), p.port, p.basic_auth),
            ("http://proxy.example", 80, None)
        );
    }

    #[test]
    fn no_proxy_hosts_and_suffixes_connect_directly() {
        let m = Matcher::builder()
            .all("http://proxy.example:3128")
            .no("localhost,127.0.0.1,.internal.example")
            .build();
        assert_eq!(proxy_for(&m, "https://127.0.0.1:8443"), None);
        assert_eq!(proxy_for(&m, "https://dps.internal.example"), None);
        assert_eq!(
            proxy_for(&m, "https://global.azure-devices-provisioning.net").map(|p| p.shown),
            Some("http://proxy.example:3128".to_string())
        );
    }

    #[test]
    fn no_variable_no_proxy() {
        let m = Matcher::builder().build();
        assert_eq!(proxy_for(&m, "https://127.0.0.1:8443"), None);
        // Only HTTPS requests are proxied by these rules: an HTTP-only proxy does not apply.
        let m = Matcher::builder().http("http://proxy.example:3128").build();
        assert_eq!(proxy_for(&m, "https://127.0.0.1:8443"), None);
    }
}
