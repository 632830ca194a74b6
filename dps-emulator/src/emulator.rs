//! Starting and stopping an emulator: the state folder, the database and the listener put
//! together ([`Emulator`]), and the handle on a running one ([`RunningEmulator`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use zeroize::Zeroizing;

use crate::app_state::{AppState, PeerChain};
use crate::auth::tpm::Challenges;
use crate::config::{check_hub_host_name, EmulatorConfig};
use crate::error::{EmulatorError, Result};
use crate::faults::Faults;
use crate::model::RegistrationState;
use crate::store::state_dir as state;
use crate::store::Store;
use crate::transport::{
    accept_loop, mqtt, serve_https, tls, ws, ConnectionLimits, Listener, HTTPS,
};

/// Starts emulators.
#[derive(Debug)]
pub struct Emulator;

/// A running emulator. Dropping it stops accepting connections (like `shutdown`, without waiting).
#[derive(Debug)]
pub struct RunningEmulator {
    addr: SocketAddr,
    mqtt_addr: Option<SocketAddr>,
    mqtt_ws_addr: Option<SocketAddr>,
    ca_cert_pem: String,
    ca_cert_path: PathBuf,
    app: Arc<AppState>,
    shutdown: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
    mqtt_task: Option<JoinHandle<()>>,
    mqtt_ws_task: Option<JoinHandle<()>>,
}

impl Emulator {
    /// Prepares the state folder, opens the database and starts serving on `config.listen`.
    /// Must be called inside a Tokio runtime.
    pub async fn start(config: EmulatorConfig) -> Result<RunningEmulator> {
        if config.id_scope.is_empty() || !crate::validate::is_valid_id(&config.id_scope) {
            return Err(EmulatorError::Config(
                "the id scope is empty or malformed".into(),
            ));
        }
        if config.max_connections == 0
            || config.max_body_bytes == 0
            || config.max_connections_per_peer == Some(0)
            || config.mqtt_max_packets_per_second == 0
        {
            return Err(EmulatorError::Config(
                "max_connections, max_connections_per_peer, max_body_bytes and \
                 mqtt_max_packets_per_second must be positive"
                    .into(),
            ));
        }
        let dir = config.state_dir.clone();
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|error| EmulatorError::Bind {
                    addr: config.listen,
                    error,
                })?;
        let addr = listener.local_addr().map_err(|error| EmulatorError::Bind {
            addr: config.listen,
            error,
        })?;
        let mqtt_listener = bind_optional(config.mqtt_listen).await?;
        let mqtt_ws_listener = bind_optional(config.mqtt_ws_listen).await?;
        let mut names = vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
            "::1".to_string(),
        ];
        if !addr.ip().is_unspecified() && !names.contains(&addr.ip().to_string()) {
            names.push(addr.ip().to_string());
        }
        for n in &config.server_names {
            if !names.contains(n) {
                names.push(n.clone());
            }
        }
        let host_names = names.iter().map(|n| n.to_ascii_lowercase()).collect();
        // The hubs are served on the same listeners: a device that verifies its hub's name
        // (TLS SNI = the hub, connecting to this address) finds it in the certificate. They
        // are not service-API host names.
        let hubs: Vec<String> = config.hubs.clone();
        if let Some(bad) = hubs.iter().find(|h| !is_dns_name(h)) {
            return Err(EmulatorError::Config(format!(
                "the hub name `{}` is not a DNS host name (letters, digits and `-` in dot-separated labels)",
                bad.escape_debug()
            )));
        }
        for h in &hubs {
            check_hub_host_name(h).map_err(EmulatorError::Config)?;
        }
        for h in &hubs {
            if !names.iter().any(|n| n.eq_ignore_ascii_case(h)) {
                names.push(h.clone());
            }
        }
        let (ca, ca_cert_path, server, service_key, store) =
            tokio::task::spawn_blocking(move || -> Result<_> {
                let (ca, ca_path) = state::load_or_create_ca(&dir)?;
                let server = state::issue_server_cert(&dir, &ca, &names)?;
                let key = state::load_or_create_service_key(&dir)?;
                let store = Store::open(&dir.join(state::DATABASE_FILE))?;
                Ok((ca, ca_path, server, key, store))
            })
            .await
            .map_err(|e| EmulatorError::Config(format!("startup task failed: {e}")))??;
        let tls_config = tls::server_config(&server, &ca, &[b"http/1.1"])?;
        let mqtt_tls_config = tls::server_config(&server, &ca, &[])?;
        let (hub_changes, _) = watch::channel(0u64);
        // TPM challenges outlive a restart (kept in the database).
        let tpm = Challenges::persistent(store.clone())?;
        let webhooks = crate::custom_allocation::WebhookClient::new(config.webhook_timeout)?;
        let app = Arc::new(AppState {
            webhooks,
            config,
            hubs,
            store,
            faults: Faults::default(),
            service_key_b64: service_key,
            tpm,
            host_names,
            port: addr.port(),
            hub_changes,
            hub_sessions: Default::default(),
            issuing_ca: Default::default(),
        });
        let (tx, rx) = watch::channel(false);
        // Cloud-to-device messages and twin updates made by the CLI (another process) reach
        // connected devices through this.
        tokio::spawn(crate::hub::watch_database(
            app.store.clone(),
            app.hub_changes.clone(),
            rx.clone(),
        ));
        let limits = ConnectionLimits::new(&app.config);
        let mqtt_addr = mqtt_listener.as_ref().map(|(_, bound)| *bound);
        let mqtt_ws_addr = mqtt_ws_listener.as_ref().map(|(_, bound)| *bound);
        // MQTT over WebSocket has the MQTT listener's TLS (no ALPN; the upgrade is HTTP/1.1).
        let loops = MqttLoops {
            acceptor: TlsAcceptor::from(mqtt_tls_config),
            app: app.clone(),
            limits: limits.clone(),
            shutdown: rx.clone(),
        };
        let mqtt_task = loops.spawn(mqtt_listener, mqtt::LISTENER, mqtt::serve);
        let mqtt_ws_task = loops.spawn(mqtt_ws_listener, ws::LISTENER, ws::serve);
        let task = tokio::spawn(accept_loop(
            listener,
            TlsAcceptor::from(tls_config),
            app.clone(),
            limits,
            rx,
            HTTPS,
            serve_https,
        ));
        tracing::info!(%addr, "DPS emulator listening");
        Ok(RunningEmulator {
            addr,
            mqtt_addr,
            mqtt_ws_addr,
            ca_cert_pem: ca.cert_pem(),
            ca_cert_path,
            app,
            shutdown: tx,
            task: Some(task),
            mqtt_task,
            mqtt_ws_task,
        })
    }
}

/// Whether `name` is a DNS host name: dot-separated labels of 1-63 letters, digits and `-`
/// (not at either end), at most 253 bytes. A hub's name goes into the server certificate, the
/// devices' MQTT user names and their SAS scopes.
fn is_dns_name(name: &str) -> bool {
    name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// What each MQTT listener's accept loop shares: TLS, the app, the connection caps, shutdown.
struct MqttLoops {
    acceptor: TlsAcceptor,
    app: Arc<AppState>,
    limits: ConnectionLimits,
    shutdown: watch::Receiver<bool>,
}

impl MqttLoops {
    /// Starts the accept loop of `kind` on `bound`, when it was bound.
    fn spawn<F, Fut>(
        &self,
        bound: Option<(TcpListener, SocketAddr)>,
        kind: Listener,
        serve: F,
    ) -> Option<JoinHandle<()>>
    where
        F: Fn(
                TlsStream<TcpStream>,
                SocketAddr,
                Arc<AppState>,
                PeerChain,
                watch::Receiver<bool>,
            ) -> Fut
            + Clone
            + Send
            + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let (listener, addr) = bound?;
        tracing::info!(%addr, "DPS emulator listening for {}", kind.label.trim_end());
        Some(tokio::spawn(accept_loop(
            listener,
            self.acceptor.clone(),
            self.app.clone(),
            self.limits.clone(),
            self.shutdown.clone(),
            kind,
            serve,
        )))
    }
}

/// Binds `at` when given: the listener and the address it got.
async fn bind_optional(at: Option<SocketAddr>) -> Result<Option<(TcpListener, SocketAddr)>> {
    let Some(at) = at else {
        return Ok(None);
    };
    let l = TcpListener::bind(at)
        .await
        .map_err(|error| EmulatorError::Bind { addr: at, error })?;
    let bound = l
        .local_addr()
        .map_err(|error| EmulatorError::Bind { addr: at, error })?;
    Ok(Some((l, bound)))
}

impl RunningEmulator {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address the MQTT listener is bound to, when one was configured.
    pub fn mqtt_addr(&self) -> Option<SocketAddr> {
        self.mqtt_addr
    }

    /// The address the MQTT over WebSocket listener is bound to, when one was configured
    /// (clients connect to `wss://HOST:PORT/$iothub/websocket`).
    pub fn mqtt_ws_addr(&self) -> Option<SocketAddr> {
        self.mqtt_ws_addr
    }

    /// `https://127.0.0.1:PORT` (or the bound address): the global endpoint for device clients.
    pub fn endpoint(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// The id scope.
    pub fn id_scope(&self) -> &str {
        &self.app.config.id_scope
    }

    /// The hubs it allocates to (normalised host names).
    pub fn hubs(&self) -> &[String] {
        &self.app.hubs
    }

    /// The dev CA certificate clients must trust, PEM.
    pub fn ca_cert_pem(&self) -> &str {
        &self.ca_cert_pem
    }

    /// Where the dev CA certificate is stored.
    pub fn ca_cert_path(&self) -> &Path {
        &self.ca_cert_path
    }

    /// The store of enrollments and registration records.
    pub fn enrollments(&self) -> Store {
        self.app.store.clone()
    }

    /// Every registration record.
    pub fn registration_records(&self) -> Result<Vec<RegistrationState>> {
        self.app.store.registrations()
    }

    /// The emulated hubs' devices, telemetry, cloud-to-device messages and twins; changes made
    /// through it reach connected devices at once.
    pub fn hub_registry(&self) -> crate::hub::Hubs {
        crate::hub::Hubs::running(self.app.store.clone(), self.app.hub_changes.clone())
    }

    /// Fault injection for the device API, adjustable while running.
    pub fn faults(&self) -> &Faults {
        &self.app.faults
    }

    /// A service connection string for `host` (the name clients connect to), as the portal
    /// shows it. Secret: do not log it.
    pub fn service_connection_string(&self, host: &str) -> Zeroizing<String> {
        Zeroizing::new(format!(
            "HostName={host};SharedAccessKeyName={};SharedAccessKey={}",
            self.app.config.service_policy_name,
            self.app.service_key_b64.as_str()
        ))
    }

    /// A service-API SAS token for `host`, valid for `ttl`.
    pub fn service_sas_token(&self, host: &str, ttl: Duration) -> Result<Zeroizing<String>> {
        dps_proto::sas::create_token(
            host,
            &self.app.service_key_b64,
            Some(&self.app.config.service_policy_name),
            crate::timeutil::unix_now() + ttl.as_secs(),
        )
        .map(Zeroizing::new)
        .map_err(|e| EmulatorError::Config(e.to_string()))
    }

    /// Stops accepting, lets open connections finish their current request, and waits.
    pub async fn shutdown(mut self) {
        self.stop().await;
    }

    async fn stop(&mut self) {
        let _ = self.shutdown.send(true);
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
        for t in [self.mqtt_task.take(), self.mqtt_ws_task.take()]
            .into_iter()
            .flatten()
        {
            let _ = t.await;
        }
    }
}

impl Drop for RunningEmulator {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

/// An emulator running on its own Tokio runtime, for synchronous callers (`hsmkit demo`, plain
/// `#[test]`s). Derefs to [`RunningEmulator`]; dropping it stops the server and the runtime.
#[derive(Debug)]
pub struct BackgroundEmulator {
    running: RunningEmulator,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Emulator {
    /// Starts an emulator on a private two-thread runtime. Refused (with an error, not a panic)
    /// when called from inside a Tokio runtime: use [`Emulator::start`] there.
    pub fn start_in_background(config: EmulatorConfig) -> Result<BackgroundEmulator> {
        if tokio::runtime::Handle::try_current().is_ok() {
            return Err(EmulatorError::Config(
                "start_in_background called inside a Tokio runtime; use Emulator::start".into(),
            ));
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("dps-emulator")
            .enable_all()
            .build()
            .map_err(|e| EmulatorError::Config(format!("cannot build a runtime: {e}")))?;
        let running = runtime.block_on(Emulator::start(config))?;
        Ok(BackgroundEmulator {
            running,
            runtime: Some(runtime),
        })
    }
}

impl std::ops::Deref for BackgroundEmulator {
    type Target = RunningEmulator;

    fn deref(&self) -> &RunningEmulator {
        &self.running
    }
}

impl BackgroundEmulator {
    /// Stops the server, waits for open connections to finish, then stops the runtime.
    pub fn shutdown(mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.block_on(self.running.stop());
            rt.shutdown_background();
        }
    }
}

impl Drop for BackgroundEmulator {
    fn drop(&mut self) {
        let _ = self.running.shutdown.send(true);
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}
