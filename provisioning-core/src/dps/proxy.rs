//! The HTTP proxy that DPS requests over HTTPS go through: `HTTPS_PROXY` / `https_proxy`, else
//! `ALL_PROXY` / `all_proxy`, except for the hosts `NO_PROXY` / `no_proxy` lists, read as curl
//! reads them. reqwest applies these variables itself, through hyper-util's matcher; this module
//! asks that same matcher which proxy a URL goes through, so that hsmkit can say so in its log
//! and in its errors (one copy of the rules: hyper-util's).
//!
//! Only HTTPS is proxied (an HTTP CONNECT tunnel, in which the TLS, mutual TLS included, runs
//! end to end with DPS). MQTT on 8883 and MQTT over WebSocket connect directly.

use hyper_util::client::proxy::matcher::Matcher;

/// The proxy `url` (an `https://host[:port]` URL) goes through by the environment, as
/// `scheme://host[:port]` for messages (credentials in the variable are never shown); `None`
/// when no proxy variable is set or `NO_PROXY` names the host.
pub(crate) fn https_proxy_for(url: &str) -> Option<String> {
    proxy_for(&Matcher::from_env(), url)
}

/// [`https_proxy_for`] with the rules given (tests build them without touching the process
/// environment).
fn proxy_for(matcher: &Matcher, url: &str) -> Option<String> {
    let uri: http::Uri = url.parse().ok()?;
    let hit = matcher.intercept(&uri)?;
    let proxy = hit.uri();
    let host = proxy.host()?;
    let scheme = proxy.scheme_str().unwrap_or("http");
    Some(match proxy.port_u16() {
        Some(port) => format!("{scheme}://{host}:{port}"),
        None => format!("{scheme}://{host}"),
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
        let p = proxy_for(&m, "https://global.azure-devices-provisioning.net");
        assert_eq!(p.as_deref(), Some("http://proxy.example:3128"));
        assert!(!p.unwrap_or_default().contains("secret"));
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
            proxy_for(&m, "https://global.azure-devices-provisioning.net").as_deref(),
            Some("http://proxy.example:3128")
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
