//! hsmkit on the network a device really has: the operating system's CA store (trusted beside
//! the bundled roots and `--trust-ca`), and an HTTP CONNECT proxy named by `HTTPS_PROXY`
//! (`NO_PROXY` honoured), run as a user runs hsmkit, against the DPS emulator and a small
//! CONNECT proxy written here (ephemeral ports only).

mod support;

use dps_emulator::{BackgroundEmulator, Emulator, EmulatorConfig};
use std::ffi::OsString;
use std::path::Path;
use std::sync::{Arc, Mutex};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// An HTTP CONNECT proxy on 127.0.0.1, port chosen by the OS: each CONNECT is tunnelled to its
/// target, which is recorded; anything else is answered 405. Stops when dropped.
struct ConnectProxy {
    port: u16,
    targets: Arc<Mutex<Vec<String>>>,
    _runtime: tokio::runtime::Runtime,
}

impl ConnectProxy {
    fn start() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime for the proxy");
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind the proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let targets = Arc::new(Mutex::new(Vec::new()));
        let seen = targets.clone();
        runtime.spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(tunnel(client, seen.clone()));
            }
        });
        Self {
            port,
            targets,
            _runtime: runtime,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn targets(&self) -> Vec<String> {
        self.targets.lock().expect("targets").clone()
    }
}

/// One proxied connection: reads the request head, records a CONNECT's target, connects to it,
/// answers 200 and copies bytes both ways until either side closes.
async fn tunnel(mut client: tokio::net::TcpStream, targets: Arc<Mutex<Vec<String>>>) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    // Byte by byte up to the blank line, so that nothing of the tunnelled TLS is read here.
    while !head.ends_with(b"\r\n\r\n") {
        match client.read(&mut byte).await {
            Ok(1) if head.len() < 8192 => head.push(byte[0]),
            _ => return,
        }
    }
    let text = String::from_utf8_lossy(&head);
    let mut words = text.split_whitespace();
    let (Some("CONNECT"), Some(target)) = (words.next(), words.next()) else {
        let _ = client
            .write_all(b"HTTP/1.1 405 Method Not Allowed\r\ncontent-length: 0\r\n\r\n")
            .await;
        return;
    };
    targets.lock().expect("targets").push(target.to_string());
    let Ok(mut upstream) = tokio::net::TcpStream::connect(target).await else {
        let _ = client
            .write_all(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n")
            .await;
        return;
    };
    if client
        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        .await
        .is_err()
    {
        return;
    }
    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
}

/// A device of `plugin` (file `plugin_file`) enrolled individually in `emulator`; returns its
/// plugins folder and state folder.
fn enrolled(
    emulator: &BackgroundEmulator,
    root: &Path,
    plugin_file: &str,
    plugin: &str,
    extra: &[&str],
) -> (tempfile::TempDir, String) {
    let plugins = plugin_dir_with(&[&bundled_plugin(plugin_file)]);
    let state = root.join(format!("device-{plugin}"));
    enroll_info_into(
        emulator,
        plugins.path().to_str().expect("UTF-8 path"),
        state.to_str().expect("UTF-8 path"),
        plugin,
        &root.join(format!("enroll-{plugin}")),
        extra,
    );
    (plugins, state.to_str().expect("UTF-8 path").to_string())
}

/// `hsmkit provision --force --json` of that device to the emulator (over HTTPS unless `extra`
/// says otherwise), `extra` added (`--trust-ca`, a transport), with `env`.
fn provision(
    emulator: &BackgroundEmulator,
    device: &(tempfile::TempDir, String),
    plugin: &str,
    extra: &[&str],
    env: &[(&str, &str)],
) -> (bool, String, String) {
    let endpoint = emulator.endpoint();
    let mut args = vec![
        "--plugin-dir",
        device.0.path().to_str().expect("UTF-8 path"),
        "--state-dir",
        &device.1,
        "provision",
        "--plugin",
        plugin,
        "--id-scope",
        emulator.id_scope(),
        "--force",
        "--timeout",
        "20",
        "--json",
    ];
    // The emulator's HTTPS endpoint unless `extra` names another (MQTT over WebSocket).
    if !extra.contains(&"--endpoint") {
        args.extend_from_slice(&["--endpoint", &endpoint]);
    }
    args.extend_from_slice(extra);
    run_hsmkit_with_env(&args, env)
}

fn emulator(root: &Path) -> BackgroundEmulator {
    let mut config = EmulatorConfig::new(root.join("emu"));
    config.mqtt_ws_listen = Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
    Emulator::start_in_background(config).expect("the emulator")
}

fn addr(emulator: &BackgroundEmulator) -> String {
    emulator
        .endpoint()
        .strip_prefix("https://")
        .expect("an https endpoint")
        .to_string()
}

/// HTTPS_PROXY: provisioning goes through the proxy's tunnel for a symmetric-key device and
/// for an X.509 device (mutual TLS end to end inside the tunnel, the handshake signed by the
/// plugin); NO_PROXY naming the host connects directly; an unreachable proxy is an error that
/// names it and the variable.
#[test]
fn https_goes_through_the_connect_proxy_unless_no_proxy_names_the_host() {
    let root = tempfile::tempdir().expect("temp dir");
    let emulator = emulator(root.path());
    let ca = emulator.ca_cert_path().to_str().expect("UTF-8").to_string();
    let trust = ["--trust-ca", ca.as_str()];
    let proxy = ConnectProxy::start();
    let target = addr(&emulator);
    let via_proxy = [("HTTPS_PROXY", proxy.url())];
    let via_proxy: Vec<(&str, &str)> = via_proxy.iter().map(|(k, v)| (*k, v.as_str())).collect();

    let symmetric = enrolled(
        &emulator,
        root.path(),
        "symmetric",
        "symmetric",
        &["--set", "registration_id=proxied-sym"],
    );
    let (ok, out, err) = provision(&emulator, &symmetric, "symmetric", &trust, &via_proxy);
    assert!(ok, "{err}\n{out}");
    let tunnels = proxy.targets();
    assert!(
        !tunnels.is_empty() && tunnels.iter().all(|t| *t == target),
        "the proxy saw {tunnels:?}, expected CONNECT {target}"
    );

    // X.509: the client certificate and the plugin's handshake signature pass the tunnel.
    let dice = enrolled(&emulator, root.path(), "dice", "dice", &[]);
    let before = proxy.targets().len();
    let (ok, out, err) = provision(&emulator, &dice, "dice", &trust, &via_proxy);
    assert!(ok, "{err}\n{out}");
    assert!(
        proxy.targets().len() > before,
        "the X.509 registration did not go through the proxy: {:?}",
        proxy.targets()
    );
    let records = emulator.registration_records().expect("records");
    assert_eq!(records.len(), 2, "{records:?}");

    // MQTT over WebSocket: the same tunnel (the WebSocket is an HTTPS request), X.509 again.
    let ws = emulator.mqtt_ws_addr().expect("a WebSocket listener");
    let before = proxy.targets().len();
    let wss = format!("wss://{ws}");
    let over_ws = [&trust[..], &["--transport", "mqtt-ws", "--endpoint", &wss]].concat();
    let (ok, out, err) = provision(&emulator, &dice, "dice", &over_ws, &via_proxy);
    assert!(ok, "{err}\n{out}");
    let tunnels = proxy.targets();
    assert!(
        tunnels[before..].iter().any(|t| *t == ws.to_string()),
        "MQTT over WebSocket did not go through the proxy: {tunnels:?}"
    );

    // NO_PROXY lists the host: straight to DPS, the proxy sees nothing.
    let before = proxy.targets().len();
    let mut direct = via_proxy.clone();
    direct.push(("NO_PROXY", "localhost,127.0.0.1"));
    let (ok, out, err) = provision(&emulator, &symmetric, "symmetric", &trust, &direct);
    assert!(ok, "{err}\n{out}");
    assert_eq!(proxy.targets().len(), before, "{:?}", proxy.targets());

    // A proxy that is not there: the error names it and where it came from.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let dead_url = format!(
        "http://127.0.0.1:{}",
        dead.local_addr().expect("port").port()
    );
    drop(dead);
    let (ok, out, err) = provision(
        &emulator,
        &symmetric,
        "symmetric",
        &trust,
        &[("https_proxy", dead_url.as_str())],
    );
    assert!(!ok);
    // The error as --json prints it (stdout), or as a line on stderr.
    let error = format!("{out}\n{err}");
    for wanted in [
        dead_url.as_str(),
        "HTTPS_PROXY",
        "NO_PROXY",
        "cannot reach DPS",
    ] {
        assert!(error.contains(wanted), "`{wanted}` missing: {error}");
    }
}

/// The operating system's CA store is trusted beside the bundled roots: with the emulator's
/// CA in the store (`SSL_CERT_FILE`, which rustls-native-certs reads instead of the system
/// bundle), hsmkit reaches it without `--trust-ca`; without it, the TLS error says to pass
/// the CA or add it to the system's store.
#[test]
fn the_system_ca_store_is_trusted_without_trust_ca() {
    let root = tempfile::tempdir().expect("temp dir");
    let emulator = emulator(root.path());
    let device = enrolled(
        &emulator,
        root.path(),
        "symmetric",
        "symmetric",
        &["--set", "registration_id=os-store"],
    );
    // A CA folder as a distribution keeps it, holding only the emulator's CA (SSL_CERT_DIR).
    let store = root.path().join("os-store");
    std::fs::create_dir(&store).expect("store folder");
    std::fs::copy(emulator.ca_cert_path(), store.join("emulator-ca.pem")).expect("copy CA");
    let store_dir: OsString = store.clone().into_os_string();
    let store_dir = store_dir.to_str().expect("UTF-8");

    let (ok, out, err) = provision(
        &emulator,
        &device,
        "symmetric",
        &[],
        &[("SSL_CERT_DIR", store_dir)],
    );
    assert!(ok, "{err}\n{out}");
    let ca_file = emulator.ca_cert_path().to_str().expect("UTF-8");
    let (ok, out, err) = provision(
        &emulator,
        &device,
        "symmetric",
        &[],
        &[("SSL_CERT_FILE", ca_file)],
    );
    assert!(ok, "{err}\n{out}");

    // The store without the emulator's CA (an empty file): not trusted, and the error says
    // what to do about it.
    let empty = root.path().join("empty.pem");
    std::fs::write(&empty, "").expect("empty store");
    let (ok, out, err) = provision(
        &emulator,
        &device,
        "symmetric",
        &[],
        &[("SSL_CERT_FILE", empty.to_str().expect("UTF-8"))],
    );
    assert!(!ok);
    // The error as --json prints it (stdout), or as a line on stderr.
    let error = format!("{out}\n{err}");
    assert!(error.contains("--trust-ca"), "{error}");
    assert!(error.contains("system's CA certificates"), "{error}");
}
