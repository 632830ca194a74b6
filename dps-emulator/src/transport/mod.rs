//! The transports: HTTPS (this module: accept loop, TLS handshake with a timeout, HTTP/1.1
//! per connection, graceful shutdown; requests go to [`crate::api::handle`]) and MQTT
//! ([`mqtt`]; over a WebSocket: [`ws`]), which share the connection caps (overall and per
//! source address) and the TLS set-up ([`tls`]).

pub(crate) mod mqtt;
pub(crate) mod tls;
pub(crate) mod ws;

use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::api::handle;
use crate::app_state::{AppState, PeerChain};
use crate::config::EmulatorConfig;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// The connection caps both listeners share: most connections overall and per source address.
#[derive(Clone)]
pub(crate) struct ConnectionLimits {
    global: Arc<Semaphore>,
    peers: PeerConnections,
}

/// One admitted connection's share of the caps, given back on drop.
pub(crate) struct Admitted {
    _permit: OwnedSemaphorePermit,
    _peer_slot: PeerSlot,
}

impl ConnectionLimits {
    pub(crate) fn new(config: &EmulatorConfig) -> Self {
        Self {
            global: Arc::new(Semaphore::new(config.max_connections)),
            peers: PeerConnections::new(config.connections_per_peer()),
        }
    }

    /// Admits a connection from `peer`, or `None` when it must be closed at once.
    pub(crate) fn try_admit(&self, peer: SocketAddr) -> Option<Admitted> {
        // Per source first: a client over its own share must not use up a global slot.
        let Some(peer_slot) = self.peers.try_acquire(peer.ip()) else {
            tracing::debug!(%peer, "connection limit for this address reached, closing");
            return None;
        };
        let Ok(permit) = self.global.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "connection limit reached, closing");
            return None;
        };
        Some(Admitted {
            _permit: permit,
            _peer_slot: peer_slot,
        })
    }
}

/// The client's certificate chain from a finished handshake, leaf first (empty without one).
pub(crate) fn peer_chain(conn: &rustls::ServerConnection) -> PeerChain {
    Arc::new(
        conn.peer_certificates()
            .map(|c| c.iter().map(|d| d.to_vec()).collect())
            .unwrap_or_default(),
    )
}

/// The next connection `limits` admit from `listener`, or `None` once `shutdown` fires. A
/// connection over the caps is closed at once; a failed accept is logged (as `{label}accept
/// failed`) and retried after a pause. Shared by both listeners.
async fn next_admitted(
    listener: &TcpListener,
    limits: &ConnectionLimits,
    shutdown: &mut watch::Receiver<bool>,
    label: &str,
) -> Option<(TcpStream, SocketAddr, Admitted)> {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.changed() => return None,
            r = listener.accept() => r,
        };
        let (tcp, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "{label}accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(admitted) = limits.try_admit(peer) else {
            drop(tcp);
            continue;
        };
        return Some((tcp, peer, admitted));
    }
}

/// The TLS handshake on `tcp` from `peer`, within `timeout`; `None` when it failed or timed
/// out (logged at debug as `{label}TLS handshake failed` / `... timed out`).
async fn handshake(
    acceptor: &TlsAcceptor,
    tcp: TcpStream,
    timeout: Duration,
    peer: SocketAddr,
    label: &str,
) -> Option<TlsStream<TcpStream>> {
    match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
        Ok(Ok(s)) => Some(s),
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "{label}TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(%peer, "{label}TLS handshake timed out");
            None
        }
    }
}

/// What sets one listener apart in [`accept_loop`].
pub(crate) struct Listener {
    /// Prefix of its log lines (`""` or `"MQTT "`).
    pub(crate) label: &'static str,
    /// How long a TLS handshake may take.
    pub(crate) handshake_timeout: Duration,
    /// Whether to set `TCP_NODELAY` on its connections.
    pub(crate) nodelay: bool,
}

/// The HTTPS listener.
pub(crate) const HTTPS: Listener = Listener {
    label: "",
    handshake_timeout: HANDSHAKE_TIMEOUT,
    nodelay: false,
};

/// Accepts connections until `shutdown`, each admitted by the shared connection caps, and
/// hands each finished TLS handshake to `serve` on its own task (with the client's chain and
/// a shutdown receiver). Both listeners run this.
pub(crate) async fn accept_loop<F, Fut>(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    app: Arc<AppState>,
    limits: ConnectionLimits,
    mut shutdown: watch::Receiver<bool>,
    kind: Listener,
    serve: F,
) where
    F: Fn(TlsStream<TcpStream>, SocketAddr, Arc<AppState>, PeerChain, watch::Receiver<bool>) -> Fut
        + Clone
        + Send
        + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    while let Some((tcp, peer, admitted)) =
        next_admitted(&listener, &limits, &mut shutdown, kind.label).await
    {
        if kind.nodelay {
            let _ = tcp.set_nodelay(true);
        }
        let acceptor = acceptor.clone();
        let app = app.clone();
        let stop = shutdown.clone();
        let serve = serve.clone();
        let (label, timeout) = (kind.label, kind.handshake_timeout);
        tokio::spawn(async move {
            let _admitted = admitted;
            let Some(tls) = handshake(&acceptor, tcp, timeout, peer, label).await else {
                return;
            };
            let chain = peer_chain(tls.get_ref().1);
            serve(tls, peer, app, chain, stop).await;
        });
    }
}

/// One HTTPS connection: HTTP/1.1 until the client closes it or the emulator shuts down.
pub(crate) async fn serve_https(
    tls: TlsStream<TcpStream>,
    peer: SocketAddr,
    app: Arc<AppState>,
    chain: PeerChain,
    mut stop: watch::Receiver<bool>,
) {
    let svc = service_fn(move |req| handle(app.clone(), chain.clone(), req));
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(64 * 1024)
        .serve_connection(TokioIo::new(tls), svc);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        }
        _ = stop.changed() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
        }
    }
}

/// Open connections per source address, bounded by `limit`.
#[derive(Clone)]
struct PeerConnections {
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
    limit: usize,
}

/// One connection's share of its address's count, given back on drop.
struct PeerSlot {
    peers: PeerConnections,
    ip: IpAddr,
}

impl PeerConnections {
    fn new(limit: usize) -> Self {
        Self {
            open: Arc::new(Mutex::new(HashMap::new())),
            limit,
        }
    }

    fn try_acquire(&self, ip: IpAddr) -> Option<PeerSlot> {
        // An IPv4 client of a dual-stack listener shows up as ::ffff:a.b.c.d: count it as a.b.c.d.
        let ip = ip.to_canonical();
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(ip).or_insert(0);
        if *n >= self.limit {
            return None;
        }
        *n += 1;
        Some(PeerSlot {
            peers: self.clone(),
            ip,
        })
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut open = self.peers.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}
