//! The HTTPS transport: accept loop with a connection limit overall and per source address
//! (connection caps), TLS handshake with a timeout, HTTP/1.1 per connection, graceful
//! shutdown. Requests go to [`crate::api::handle`]; an MQTT listener would sit beside this.

pub(crate) mod tls;

use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio_rustls::TlsAcceptor;

use crate::api::handle;
use crate::app_state::{AppState, PeerChain};

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

pub(crate) async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    app: Arc<AppState>,
    mut shutdown: watch::Receiver<bool>,
) {
    let limit = Arc::new(Semaphore::new(app.config.max_connections));
    let peers = PeerConnections::new(app.config.connections_per_peer());
    loop {
        let accepted = tokio::select! {
            _ = shutdown.changed() => break,
            r = listener.accept() => r,
        };
        let (tcp, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Per source first: a client over its own share must not use up a global slot.
        let Some(peer_slot) = peers.try_acquire(peer.ip()) else {
            tracing::debug!(%peer, "connection limit for this address reached, closing");
            drop(tcp);
            continue;
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "connection limit reached, closing");
            drop(tcp);
            continue;
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        let mut stop = shutdown.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _peer_slot = peer_slot;
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let chain: PeerChain = Arc::new(
                tls.get_ref()
                    .1
                    .peer_certificates()
                    .map(|c| c.iter().map(|d| d.to_vec()).collect())
                    .unwrap_or_default(),
            );
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
        });
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
