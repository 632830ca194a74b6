//! The device API over MQTT 3.1.1 carried by a WebSocket on TLS, as the service offers it on
//! port 443 (service documentation "Communicate with DPS using the MQTT protocol": "MQTT v3.1.1
//! over WebSocket on port 443"; the SDKs open `wss://{host}/$iothub/websocket` with the
//! WebSocket sub-protocol `mqtt`).
//!
//! After the TLS handshake (the MQTT listener's certificate and client-certificate handling),
//! the HTTP/1.1 upgrade is accepted only for GET [`MQTT_WS_PATH`] offering the sub-protocol
//! [`MQTT_WS_SUBPROTOCOL`] (404 and 400 otherwise), within [`CONNECT_TIMEOUT`] and
//! [`MAX_UPGRADE_REQUEST`] bytes. The WebSocket's binary messages are then read as one byte
//! stream by the same MQTT session as the TLS listener's ([`mqtt::serve_connection`]): the same
//! authentication, bounds (a WebSocket message is bounded like an MQTT packet), refusals and
//! faults, for whichever service its CONNECT names. A text message is refused by closing the
//! WebSocket (MQTT travels in binary messages), which ends the session.

use async_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use async_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use async_tungstenite::tungstenite::protocol::WebSocketConfig;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::server::TlsStream;
use ws_stream_tungstenite::WsStream;

use super::mqtt::{self, CONNECT_TIMEOUT, PACKET_OVERHEAD};
use super::Listener;
use crate::app_state::{AppState, PeerChain};
use dps_proto::mqtt::{MQTT_WS_PATH, MQTT_WS_SUBPROTOCOL};

/// The most bytes a client may send before its upgrade is accepted (the HTTP request).
pub(crate) const MAX_UPGRADE_REQUEST: usize = 16 * 1024;

/// The MQTT over WebSocket listener: the MQTT listener's settings (the CONNECT timeout bounds
/// the TLS handshake, and here the upgrade once more).
pub(crate) const LISTENER: Listener = Listener {
    label: "MQTT-WS ",
    ..mqtt::LISTENER
};

/// One connection after its TLS handshake (run by [`super::accept_loop`]): the upgrade, then
/// the MQTT session over the WebSocket's bytes.
pub(crate) async fn serve(
    tls: TlsStream<TcpStream>,
    peer: SocketAddr,
    app: Arc<AppState>,
    chain: PeerChain,
    stop: watch::Receiver<bool>,
) {
    // The name the client asked for in its TLS ClientHello, as the MQTT listener takes it.
    let sni = tls.get_ref().1.server_name().map(str::to_ascii_lowercase);
    // A WebSocket message is buffered whole before the session reads it: bounded like the
    // largest MQTT packet a session accepts (the DPS body bound, or IoT Hub's 256 KiB
    // messages), which the session checks again on the bytes.
    let max_packet = app
        .config
        .max_body_bytes
        .max(dps_proto::hub::MAX_MESSAGE_BYTES)
        .saturating_add(PACKET_OVERHEAD);
    let config = WebSocketConfig::default()
        .read_buffer_size(16 * 1024)
        .max_message_size(Some(max_packet))
        .max_frame_size(Some(max_packet));
    let upgrade = async_tungstenite::tokio::accept_hdr_async_with_config(
        Capped::new(tls, MAX_UPGRADE_REQUEST),
        check_upgrade,
        Some(config),
    );
    let mut ws = match tokio::time::timeout(CONNECT_TIMEOUT, upgrade).await {
        Ok(Ok(ws)) => ws,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "MQTT-WS upgrade refused");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "MQTT-WS upgrade timed out");
            return;
        }
    };
    // From here the MQTT session's own bounds apply.
    ws.get_mut().get_mut().lift();
    let why = mqtt::serve_connection(WsStream::new(ws), app, chain, sni, stop).await;
    tracing::debug!(%peer, reason = %why, "MQTT-WS connection closed");
}

/// Accepts the upgrade for the documented path and sub-protocol only, and names the
/// sub-protocol in the answer (clients such as rumqttc require it back).
#[allow(clippy::result_large_err)] // the signature of tungstenite's upgrade callback
fn check_upgrade(request: &Request, mut response: Response) -> Result<Response, ErrorResponse> {
    if request.uri().path() != MQTT_WS_PATH {
        return Err(refusal(
            StatusCode::NOT_FOUND,
            format!("no WebSocket endpoint here; MQTT is at {MQTT_WS_PATH}"),
        ));
    }
    let offers_mqtt = request
        .headers()
        .get_all("Sec-WebSocket-Protocol")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim() == MQTT_WS_SUBPROTOCOL);
    if !offers_mqtt {
        return Err(refusal(
            StatusCode::BAD_REQUEST,
            format!("the WebSocket sub-protocol `{MQTT_WS_SUBPROTOCOL}` is required"),
        ));
    }
    response.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static(MQTT_WS_SUBPROTOCOL),
    );
    Ok(response)
}

/// An HTTP error answer to a refused upgrade.
fn refusal(status: StatusCode, message: String) -> ErrorResponse {
    let mut r = ErrorResponse::new(Some(message));
    *r.status_mut() = status;
    r
}

/// A stream that fails reads past `remaining` bytes until [`Capped::lift`]: bounds what a
/// client can make the upgrade buffer.
struct Capped<S> {
    inner: S,
    remaining: Option<usize>,
}

impl<S> Capped<S> {
    fn new(inner: S, cap: usize) -> Self {
        Self {
            inner,
            remaining: Some(cap),
        }
    }

    fn lift(&mut self) {
        self.remaining = None;
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Capped<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let Some(remaining) = self.remaining else {
            return Pin::new(&mut self.inner).poll_read(cx, buf);
        };
        if remaining == 0 {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("upgrade request longer than {MAX_UPGRADE_REQUEST} bytes"),
            )));
        }
        let take = remaining.min(buf.remaining());
        let mut limited = ReadBuf::new(buf.initialize_unfilled_to(take));
        let poll = Pin::new(&mut self.inner).poll_read(cx, &mut limited);
        let n = limited.filled().len();
        if let Poll::Ready(Ok(())) = poll {
            buf.advance(n);
            self.remaining = Some(remaining - n);
        }
        poll
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Capped<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(path: &str, protocols: Option<&str>) -> Request {
        let mut b = Request::builder().uri(path);
        if let Some(p) = protocols {
            b = b.header("Sec-WebSocket-Protocol", p);
        }
        b.body(()).expect("request")
    }

    #[test]
    fn upgrades_only_the_documented_path_and_subprotocol() {
        let ok = check_upgrade(
            &request("/$iothub/websocket", Some("mqtt")),
            Response::new(()),
        )
        .expect("accepted");
        assert_eq!(ok.headers()["Sec-WebSocket-Protocol"], "mqtt");
        check_upgrade(
            &request("/$iothub/websocket?x=1", Some("wamp, mqtt")),
            Response::new(()),
        )
        .expect("mqtt among others");
        let e = check_upgrade(&request("/mqtt", Some("mqtt")), Response::new(()))
            .expect_err("wrong path");
        assert_eq!(e.status(), StatusCode::NOT_FOUND);
        for protocols in [None, Some("mqttv3.1"), Some("MQTT")] {
            let e = check_upgrade(&request("/$iothub/websocket", protocols), Response::new(()))
                .expect_err("no mqtt sub-protocol");
            assert_eq!(e.status(), StatusCode::BAD_REQUEST, "{protocols:?}");
        }
    }
}
