//! The device client's items of security review issue 12: a TPM device still provisions while
//! someone floods DPS with challenge requests for its (public) EK, the client asks once for a
//! fresh challenge when its answer is refused, and registration ids that URL normalisation
//! would change are refused before anything is sent.

#[path = "support/e2e.rs"]
mod helpers;

use base64::Engine;
use dps_emulator::{Emulator, EmulatorConfig};
use helpers::*;
use provisioning_core::dps::{register, tpm_registration_id, Attestation, DpsError, ProgressEvent};
use provisioning_core::plugin::PluginInstance;
use serde_json::json;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// What an attacker needs to ask DPS for challenges: the endpoint, the CA to trust, and the
/// device's registration id and EK (both public: printed for enrollment). The SRK can be
/// anyone's; the device's own is used here.
#[derive(Clone)]
struct Flood {
    url: String,
    ca_pem: String,
    body: serde_json::Value,
}

impl Flood {
    fn new(emu: &dps_emulator::RunningEmulator, device: &PluginInstance) -> Self {
        let tpm = device.tpm().expect("TPM interface");
        let ek = tpm.endorsement_key().expect("EK");
        let srk = tpm.storage_root_key().expect("SRK");
        let reg = tpm_registration_id(&ek);
        Self {
            url: format!(
                "{}/{}/registrations/{reg}/register?api-version=2021-06-01",
                emu.endpoint(),
                emu.id_scope()
            ),
            ca_pem: emu.ca_cert_pem().to_string(),
            body: json!({"registrationId": reg,
                "tpm": {"endorsementKey": B64.encode(&ek), "storageRootKey": B64.encode(&srk)}}),
        }
    }

    fn client(&self) -> reqwest::Client {
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls_pemfile::certs(&mut self.ca_pem.as_bytes()) {
            roots.add(c.expect("CA PEM")).expect("CA");
        }
        let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        reqwest::Client::builder()
            .use_preconfigured_tls(cfg)
            .timeout(Duration::from_secs(20))
            .build()
            .expect("HTTP client")
    }

    /// Asks for one challenge; true when one came back.
    async fn one(&self, c: &reqwest::Client) -> bool {
        let Ok(r) = c.put(&self.url).json(&self.body).send().await else {
            return false;
        };
        let v: serde_json::Value = r.json().await.unwrap_or_default();
        v["authenticationKey"].is_string()
    }

    /// Asks for `n` challenges one after the other, on a thread of its own (usable from a
    /// synchronous progress callback); returns how many came back.
    fn blocking(&self, n: usize) -> usize {
        let me = self.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                let c = me.client();
                let mut got = 0;
                for _ in 0..n {
                    got += usize::from(me.one(&c).await);
                }
                got
            })
        })
        .join()
        .expect("flood thread")
    }
}

/// A tpm-sim device enrolled in `emu`.
fn tpm_device(emu: &dps_emulator::RunningEmulator, state: &std::path::Path) -> Arc<PluginInstance> {
    let device = instance("tpm_sim", &[("state_dir", state.display().to_string())]);
    let ek = device.tpm().unwrap().endorsement_key().unwrap();
    individual(
        emu,
        json!({"registrationId": tpm_registration_id(&ek),
               "attestation": {"type": "tpm", "tpm": {"endorsementKey": B64.encode(&ek)}}}),
    );
    device
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tpm_device_provisions_while_someone_floods_challenges_for_its_ek() {
    let env = emulator().await;
    let state = tempfile::tempdir().unwrap();
    let device = tpm_device(&env.emu, state.path());
    let flood = Flood::new(&env.emu, &device);

    // The flood starts when the device got its challenge (so it races the device's answer)
    // and stops when the device is done, after at most 24 requests.
    let started = Arc::new(tokio::sync::Notify::new());
    let done = Arc::new(AtomicBool::new(false));
    let flooder = tokio::spawn({
        let (started, done, flood) = (started.clone(), done.clone(), flood.clone());
        async move {
            started.notified().await;
            let c = flood.client();
            let mut sent = 0;
            while sent < 24 && !done.load(Ordering::SeqCst) {
                flood.one(&c).await;
                sent += 1;
            }
            sent
        }
    });
    let events = Events::default();
    let sink = events.sink();
    let progress = |e: &ProgressEvent| {
        if *e == ProgressEvent::TpmChallenge {
            started.notify_one();
        }
        sink(e);
    };
    let result = register(&dps_config(&env.emu), device, Attestation::Tpm, &progress).await;
    done.store(true, Ordering::SeqCst);
    let sent = flooder.await.unwrap();
    let r = result.unwrap_or_else(|e| panic!("provisioning failed under a flood of {sent}: {e}"));
    assert_eq!(r.attestation, Attestation::Tpm);
    assert!(sent > 0, "the flood never ran");
    single_record(&env.emu, &r.registration_id);
}

/// An emulator on its own runtime, so a progress callback can block on a flood.
fn background_emulator() -> (dps_emulator::BackgroundEmulator, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let emu = Emulator::start_in_background(EmulatorConfig::new(dir.path().join("emu"))).unwrap();
    (emu, dir)
}

/// Registers `device` while, on each of the first `flood_on` TPM challenges the client gets,
/// 40 newer challenges are requested before it answers: more than DPS keeps per device, so
/// the client's answer to that challenge is refused. Returns the outcome and the number of
/// challenges the client received.
fn register_with_floods(flood_on: usize) -> (Result<String, DpsError>, usize) {
    let (emu, _dir) = background_emulator();
    let state = tempfile::tempdir().unwrap();
    let device = tpm_device(&emu, state.path());
    let flood = Flood::new(&emu, &device);
    let challenges = AtomicUsize::new(0);
    let progress = |e: &ProgressEvent| {
        if *e == ProgressEvent::TpmChallenge {
            let n = challenges.fetch_add(1, Ordering::SeqCst) + 1;
            if n <= flood_on {
                assert_eq!(flood.blocking(40), 40, "the flood got its challenges");
            }
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let result = rt
        .block_on(register(
            &dps_config(&emu),
            device,
            Attestation::Tpm,
            &progress,
        ))
        .map(|r| r.registration_id);
    (result, challenges.load(Ordering::SeqCst))
}

#[test]
fn a_refused_tpm_answer_makes_the_client_ask_once_for_a_fresh_challenge() {
    let (result, challenges) = register_with_floods(1);
    let reg = result.unwrap_or_else(|e| panic!("not provisioned after a fresh challenge: {e}"));
    assert!(!reg.is_empty());
    assert_eq!(challenges, 2, "one refused answer, one fresh challenge");
}

#[test]
fn a_second_refusal_after_the_fresh_challenge_is_a_clear_error() {
    let (result, challenges) = register_with_floods(usize::MAX);
    let e = result.unwrap_err();
    assert!(matches!(e, DpsError::Unauthorized { .. }), "{e}");
    let text = e.to_string();
    assert!(
        text.contains("twice") && text.contains("fresh challenge"),
        "{text}"
    );
    assert_eq!(challenges, 2, "exactly one fresh challenge was asked for");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_that_url_normalisation_would_change_are_refused_before_sending() {
    // Nothing must reach this listener.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let state = tempfile::tempdir().unwrap();
    let device = symmetric_device(state.path(), "sym-dev", &[7u8; 32]);
    for (what, scope, reg) in [
        ("registration id", "0ne00000001", ".."),
        ("registration id", "0ne00000001", "."),
        ("id scope", "..", "sym-dev"),
        ("id scope", ".", "sym-dev"),
    ] {
        let mut config = provisioning_core::dps::DpsClientConfig::new(scope);
        config.endpoint = format!("127.0.0.1:{}", listener.local_addr().unwrap().port());
        config.registration_id = Some(reg.to_string());
        // Public roots, as for the real service: without the check the client would connect.
        config.trust_public_roots = true;
        config.overall_timeout = Duration::from_secs(5);
        config.request_timeout = Duration::from_secs(2);
        let e = register(&config, device.clone(), Attestation::SymmetricKey, &|_| {})
            .await
            .unwrap_err();
        assert!(
            matches!(e, DpsError::Config { .. }),
            "{what} {scope}/{reg}: {e}"
        );
        let text = e.to_string();
        assert!(
            text.contains(what) && text.contains("URL normalisation"),
            "{text}"
        );
        assert!(
            matches!(listener.accept(), Err(ref err) if err.kind() == std::io::ErrorKind::WouldBlock),
            "{what} {reg}: a connection was made"
        );
    }
}
