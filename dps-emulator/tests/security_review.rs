//! The emulator's items of security review issue 12, each written as the attack it stops:
//! TPM challenge replacement, enumeration of enrolled ids, unfit X.509 device certificates,
//! service tokens for another host, and one peer holding every connection slot.

mod common;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use common::*;
use dps_emulator::model::*;
use dps_emulator::pki::{CertifiedKey, LeafUsage};
use hsm_tpm_common::public::{srk_template_rsa2048, with_rsa_modulus};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpSocket, TcpStream};

const KEY: &str = "q83vEjRWeJq8p7Bm6x7Ntx0YhEorkqGSTd1U7Nl2JWc=";
const OTHER_KEY: &str = "c2VjcmV0LWtleS1mb3ItdGVzdHMtb25seS0xMjM0NTY3OA==";

// ---------------------------------------------------------------------------------------------
// Helpers

/// Everything the emulator logs in this test binary (the refusal reasons go there, under the
/// trackingId the caller got).
fn log() -> Arc<Mutex<Vec<u8>>> {
    static LOG: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOG.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_ansi(false)
            .with_writer(move || LogWriter(sink.clone()))
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("first subscriber");
        buf
    })
    .clone()
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl Write for LogWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The log line naming `tracking_id`, if any.
fn logged_reason(tracking_id: &str) -> Option<String> {
    let buf = log();
    let text = String::from_utf8_lossy(&buf.lock().unwrap()).into_owned();
    text.lines()
        .find(|l| l.contains(tracking_id))
        .map(str::to_string)
}

fn mechanism(kind: &str) -> AttestationMechanism {
    AttestationMechanism {
        kind: kind.into(),
        tpm: None,
        x509: None,
        symmetric_key: None,
    }
}

fn certs(pem: String) -> X509Certificates {
    X509Certificates {
        primary: Some(X509CertificateWithInfo {
            certificate: Some(pem),
            info: None,
        }),
        secondary: None,
    }
}

fn enroll_individual(emu: &dps_emulator::RunningEmulator, reg: &str, a: AttestationMechanism) {
    emu.enrollments()
        .create_individual(IndividualEnrollment {
            registration_id: reg.into(),
            device_id: None,
            attestation: a,
            common: Default::default(),
        })
        .unwrap();
}

fn enroll_x509(emu: &dps_emulator::RunningEmulator, reg: &str, leaf: &CertifiedKey) {
    let mut a = mechanism("x509");
    a.x509 = Some(X509Attestation {
        client_certificates: Some(certs(leaf.cert_pem())),
        ..Default::default()
    });
    enroll_individual(emu, reg, a);
}

fn enroll_x509_group(emu: &dps_emulator::RunningEmulator, id: &str, ca: &CertifiedKey) {
    let mut a = mechanism("x509");
    a.x509 = Some(X509Attestation {
        signing_certificates: Some(certs(ca.cert_pem())),
        ..Default::default()
    });
    emu.enrollments()
        .create_group(EnrollmentGroup {
            enrollment_group_id: id.into(),
            attestation: a,
            common: Default::default(),
        })
        .unwrap();
}

fn enroll_symmetric(emu: &dps_emulator::RunningEmulator, reg: &str, key: &str) {
    let mut a = mechanism("symmetricKey");
    a.symmetric_key = Some(SymmetricKeyAttestation {
        primary_key: Some(key.into()),
        secondary_key: None,
    });
    enroll_individual(emu, reg, a);
}

fn enroll_tpm(emu: &dps_emulator::RunningEmulator, dev: &SoftTpm) {
    let mut a = mechanism("tpm");
    a.tpm = Some(TpmAttestation {
        endorsement_key: dev.ek_b64(),
        storage_root_key: None,
    });
    enroll_individual(emu, &dev.registration_id(), a);
}

// ---------------------------------------------------------------------------------------------
// (a) TPM challenge replacement

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tpm_answer_still_verifies_after_someone_asked_for_newer_challenges() {
    let env = start().await;
    let emu = &env.emu;
    let dev = SoftTpm::new();
    enroll_tpm(emu, &dev);
    let reg = dev.registration_id();
    let c = client(emu, None);
    let device_challenge = put_register(&c, emu, &reg, dev.body(), None).await;
    assert_eq!(device_challenge.status, StatusCode::UNAUTHORIZED);
    let identity_key = dev.open(&device_challenge);

    // The EK is public: anyone can ask for challenges for it, with any SRK.
    let attacker_srk = B64.encode(
        with_rsa_modulus(srk_template_rsa2048(), vec![0xc5; 256])
            .to_tpm2b()
            .unwrap(),
    );
    let attacker_body = json!({"registrationId": reg,
        "tpm": {"endorsementKey": dev.ek_b64(), "storageRootKey": attacker_srk}});
    for _ in 0..10 {
        let a = put_register(&c, emu, &reg, attacker_body.clone(), None).await;
        assert!(a.body["authenticationKey"].is_string(), "{}", a.body);
    }

    // The device's answer to its own (older) challenge is still accepted.
    let token = device_sas(emu, &reg, &identity_key, in_an_hour());
    let done = register(&c, emu, &reg, dev.body(), Some(&token)).await;
    assert_eq!(done.body["status"], "assigned", "{}", done.body);
    assert_eq!(
        done.body["registrationState"]["tpm"]["authenticationKey"],
        device_challenge.body["authenticationKey"],
        "the state carries the challenge the device answered"
    );
}

// ---------------------------------------------------------------------------------------------
// (b) No enumeration of enrolled ids or their attestation

/// The parts of a refusal a caller can compare: status, errorCode, x-ms-error-code, message,
/// the set of body fields.
fn shape(a: &Answer) -> (StatusCode, Value, Option<String>, Value, Vec<String>) {
    let mut keys: Vec<String> = a
        .body
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    keys.sort();
    (
        a.status,
        a.body["errorCode"].clone(),
        a.headers
            .get("x-ms-error-code")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        a.body["message"].clone(),
        keys,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_look_the_same_for_unknown_and_enrolled_ids_of_every_attestation() {
    let _ = log();
    let env = start().await;
    let emu = &env.emu;
    let root = CertifiedKey::new_root_ca("enum root", Duration::from_secs(86400)).unwrap();
    let leaf = root
        .issue_leaf(
            "x509-dev",
            LeafUsage::Client,
            &[],
            Duration::from_secs(3600),
        )
        .unwrap();
    let stranger = root
        .issue_leaf("nobody", LeafUsage::Client, &[], Duration::from_secs(3600))
        .unwrap();
    enroll_x509(emu, "x509-dev", &leaf);
    enroll_symmetric(emu, "sym-dev", KEY);
    let dev = SoftTpm::new();
    let other = SoftTpm::new();
    enroll_tpm(emu, &dev);
    let tpm_reg = dev.registration_id();
    let plain = client(emu, None);
    let with_cert = client(emu, Some((&[&stranger], &stranger)));
    let with_x509_dev_cert_of_other_cn = client(emu, Some((&[&leaf], &leaf)));

    let reg_body = |reg: &str| json!({"registrationId": reg});
    let wrong_ek = |reg: &str| json!({"registrationId": reg, "tpm": {"endorsementKey": other.ek_b64(), "storageRootKey": other.srk_b64()}});
    let bad_ek = |reg: &str| json!({"registrationId": reg, "tpm": {"endorsementKey": "!!not base64!!", "storageRootKey": dev.srk_b64()}});
    let sas = |reg: &str| device_sas(emu, reg, OTHER_KEY, in_an_hour());

    // (what, client, registration id, body, authorization)
    let mut cases: Vec<(String, &reqwest::Client, String, Value, Option<String>)> = Vec::new();
    for reg in ["nobody", "sym-dev", tpm_reg.as_str(), "x509-dev"] {
        cases.push((
            format!("{reg}: nothing"),
            &plain,
            reg.into(),
            reg_body(reg),
            None,
        ));
        cases.push((
            format!("{reg}: wrong SAS"),
            &plain,
            reg.into(),
            reg_body(reg),
            Some(sas(reg)),
        ));
        cases.push((
            format!("{reg}: garbage SAS"),
            &plain,
            reg.into(),
            reg_body(reg),
            Some("SharedAccessSignature sr=x&sig=AA==&se=1".into()),
        ));
        cases.push((
            format!("{reg}: wrong EK"),
            &plain,
            reg.into(),
            wrong_ek(reg),
            None,
        ));
        cases.push((
            format!("{reg}: EK not base64"),
            &plain,
            reg.into(),
            bad_ek(reg),
            None,
        ));
        cases.push((
            format!("{reg}: stranger's certificate"),
            &with_cert,
            reg.into(),
            reg_body(reg),
            None,
        ));
    }
    cases.push((
        "x509-dev's certificate for another id".into(),
        &with_x509_dev_cert_of_other_cn,
        "nobody".into(),
        reg_body("nobody"),
        None,
    ));

    let mut reference = None;
    for (what, c, reg, body, auth) in &cases {
        let a = put_register(c, emu, reg, body.clone(), auth.as_deref()).await;
        let s = shape(&a);
        assert_eq!(s.0, StatusCode::UNAUTHORIZED, "{what}: {}", a.body);
        assert_eq!(s.1, json!(401002), "{what}: {}", a.body);
        // The real service's words (see UNAUTHORIZED_MESSAGE in src/http.rs for the sources).
        assert_eq!(s.3, json!("Unauthorized"), "{what}: {}", a.body);
        assert!(a.body.get("authenticationKey").is_none(), "{what}");
        match &reference {
            None => reference = Some(s),
            Some(r) => assert_eq!(&s, r, "{what} differs: {}", a.body),
        }
        // The reason is not lost: it is logged under the trackingId the caller got.
        let tracking = a.body["trackingId"].as_str().unwrap();
        assert!(
            logged_reason(tracking).is_some(),
            "{what}: no log line for {tracking}"
        );
    }

    // Operation status and registration lookup too.
    for reg in ["nobody", "sym-dev", tpm_reg.as_str(), "x509-dev"] {
        let op = get_operation(&plain, emu, reg, "0123", Some(&sas(reg))).await;
        let lookup = send(
            plain
                .post(format!(
                    "{}/{}/registrations/{reg}?api-version={API}",
                    emu.endpoint(),
                    emu.id_scope()
                ))
                .json(&reg_body(reg)),
        )
        .await;
        for a in [op, lookup] {
            assert_eq!(Some(&shape(&a)), reference.as_ref(), "{reg}: {}", a.body);
        }
    }

    // The service does answer a TPM challenge to the enrolled EK: that is the protocol.
    let ch = put_register(&plain, emu, &tpm_reg, dev.body(), None).await;
    assert_eq!(ch.status, StatusCode::UNAUTHORIZED);
    assert!(ch.body["authenticationKey"].is_string(), "{}", ch.body);
}

// ---------------------------------------------------------------------------------------------
// (c) X.509 device certificates must be end-entity client certificates

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_only_and_ca_certificates_cannot_register_as_devices() {
    let _ = log();
    let env = start().await;
    let emu = &env.emu;
    let root = CertifiedKey::new_root_ca("leaf root", Duration::from_secs(86400)).unwrap();
    enroll_x509_group(emu, "leaf-fleet", &root);

    // A serverAuth-only certificate (say, a web server's) from the group's CA.
    let server_only = root
        .issue_leaf("srv-dev", LeafUsage::Server, &[], Duration::from_secs(3600))
        .unwrap();
    // A CA certificate whose CN is a registration id, from the group's CA.
    let ca_leaf = root
        .issue_intermediate_ca("ca-dev", Duration::from_secs(3600))
        .unwrap();
    // The same two enrolled individually.
    let server_only_ind = root
        .issue_leaf("srv-ind", LeafUsage::Server, &[], Duration::from_secs(3600))
        .unwrap();
    let ca_ind = root
        .issue_intermediate_ca("ca-ind", Duration::from_secs(3600))
        .unwrap();
    enroll_x509(emu, "srv-ind", &server_only_ind);
    enroll_x509(emu, "ca-ind", &ca_ind);

    for (reg, cert, needle) in [
        ("srv-dev", &server_only, "clientAuth"),
        ("ca-dev", &ca_leaf, "CA certificate"),
        ("srv-ind", &server_only_ind, "clientAuth"),
        ("ca-ind", &ca_ind, "CA certificate"),
    ] {
        let c = client(emu, Some((&[cert, &root], cert)));
        let a = put_register(&c, emu, reg, body_reg(reg), None).await;
        assert_error_body(&a, StatusCode::UNAUTHORIZED);
        let reason = logged_reason(a.body["trackingId"].as_str().unwrap()).unwrap_or_default();
        assert!(reason.contains(needle), "{reg}: {reason}");
    }
    assert!(emu.registration_records().unwrap().is_empty());

    // A client certificate from the same CA is fine.
    let good = root
        .issue_leaf(
            "good-dev",
            LeafUsage::Client,
            &[],
            Duration::from_secs(3600),
        )
        .unwrap();
    let c = client(emu, Some((&[&good, &root], &good)));
    let done = register(&c, emu, "good-dev", body_reg("good-dev"), None).await;
    assert_eq!(done.body["status"], "assigned", "{}", done.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_group_device_is_told_about_its_own_ca_not_the_last_group_tried() {
    let _ = log();
    let env = start().await;
    let emu = &env.emu;
    let issuer = CertifiedKey::new_root_ca("issuing root", Duration::from_secs(86400)).unwrap();
    let unrelated = CertifiedKey::new_root_ca("other root", Duration::from_secs(86400)).unwrap();
    // Groups are tried in id order: the unrelated one last.
    enroll_x509_group(emu, "a-issuer", &issuer);
    enroll_x509_group(emu, "z-unrelated", &unrelated);
    let now = SystemTime::now();
    let expired = issuer
        .issue_leaf_valid(
            "old-dev",
            LeafUsage::Client,
            &[],
            now - Duration::from_secs(7200),
            now - Duration::from_secs(60),
        )
        .unwrap();
    let c = client(emu, Some((&[&expired, &issuer], &expired)));
    let a = put_register(&c, emu, "old-dev", body_reg("old-dev"), None).await;
    assert_error_body(&a, StatusCode::UNAUTHORIZED);
    let reported = format!(
        "{} {}",
        a.body["message"],
        logged_reason(a.body["trackingId"].as_str().unwrap()).unwrap_or_default()
    );
    assert!(reported.contains("expired"), "{reported}");
}

// ---------------------------------------------------------------------------------------------
// (d) Service tokens are for this service only

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_tokens_minted_for_another_host_are_refused() {
    let env = start().await;
    let emu = &env.emu;
    let c = client(emu, None);
    let get = |token: String, path: &str| {
        c.get(format!("{}/{path}?api-version=2021-10-01", emu.endpoint()))
            .header("authorization", token)
    };
    let token = |sr: &str| {
        emu.service_sas_token(sr, Duration::from_secs(600))
            .unwrap()
            .to_string()
    };
    // Signed with this service's own key, but for another DPS (same key reused, or a token
    // lifted from another service's traffic): the signature alone must not be enough.
    for sr in [
        "other-dps.azure-devices-provisioning.net",
        "localhost.evil.example",
        "evil.example/localhost",
        "localhost/enrollmentGroups",
        "localhost:1",
    ] {
        let a = send(get(token(sr), "enrollments/none")).await;
        assert_error_body(&a, StatusCode::UNAUTHORIZED);
        assert_eq!(a.body["message"], "Unauthorized", "{sr}");
    }
    // This service's names (any case, with its port, or a path prefix by segment) work.
    let port = emu.addr().port();
    for sr in [
        "localhost".to_string(),
        "LOCALHOST".to_string(),
        "127.0.0.1".to_string(),
        format!("localhost:{port}"),
        "localhost/enrollments".to_string(),
        "localhost/enrollments/none".to_string(),
    ] {
        let a = send(get(token(&sr), "enrollments/none")).await;
        assert_eq!(a.status, StatusCode::NOT_FOUND, "{sr}: {}", a.body);
    }
    let a = send(service(&c, emu, Method::GET, "enrollmentGroups/none")).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND, "{}", a.body);
}

// ---------------------------------------------------------------------------------------------
// (e) One peer cannot hold every connection slot

/// A TLS session from `source` (a loopback address), left idle.
async fn idle_tls_from(
    emu: &dps_emulator::RunningEmulator,
    source: std::net::IpAddr,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut emu.ca_cert_pem().as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let socket = TcpSocket::new_v4()?;
    socket.bind((source, 0).into())?;
    let tcp = socket.connect(emu.addr()).await?;
    tokio::time::timeout(
        Duration::from_secs(10),
        tokio_rustls::TlsConnector::from(Arc::new(cfg))
            .connect("localhost".try_into().unwrap(), tcp),
    )
    .await
    .map_err(|_| std::io::Error::other("TLS handshake timed out"))?
}

/// True when the peer closed `s` (EOF or reset) within 10 s.
async fn closed_by_peer<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> bool {
    let mut buf = [0u8; 256];
    loop {
        match tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_from_one_address_do_not_lock_out_other_devices() {
    let env = start_with(|c| c.max_connections = 8).await;
    let emu = &env.emu;
    enroll_symmetric(emu, "victim", KEY);
    let attacker: std::net::IpAddr = [127, 0, 0, 2].into();

    // The attacker opens as many idle TLS sessions as the whole server allows, and more.
    let mut held = Vec::new();
    for _ in 0..12 {
        if let Ok(s) = idle_tls_from(emu, attacker).await {
            held.push(s);
        }
    }
    assert!(!held.is_empty(), "the attacker got no connection at all");
    // One more raw connection: once it is closed, the accept loop (which takes connections in
    // order) has dealt with every earlier one.
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind((attacker, 0).into()).unwrap();
    let mut probe = socket.connect(emu.addr()).await.unwrap();
    assert!(
        closed_by_peer(&mut probe).await,
        "over-limit connection kept open"
    );

    // A device from 127.0.0.1 still gets in while the attacker's sessions stay open.
    let c = client(emu, None);
    let auth = device_sas(emu, "victim", KEY, in_an_hour());
    let first = c
        .put(format!(
            "{}/{}/registrations/victim/register?api-version={API}",
            emu.endpoint(),
            emu.id_scope()
        ))
        .header("authorization", &auth)
        .json(&body_reg("victim"))
        .send()
        .await;
    assert!(
        first.is_ok(),
        "the device was locked out by {} idle connections from {attacker}: {first:?}",
        held.len()
    );
    let done = register(&c, emu, "victim", body_reg("victim"), Some(&auth)).await;
    assert_eq!(done.body["status"], "assigned", "{}", done.body);
    drop(held);
}

/// The emulator's state folder holds its CA key and service policy key: one that another user
/// owns, or that others can write, is refused before anything is written into it (the same
/// rules as hsmkit's state folder). Needs root to give the folder away.
#[test]
fn a_state_folder_another_user_controls_is_refused_before_anything_is_written() {
    use std::os::unix::fs::PermissionsExt;
    hsm_test_support::attacker::require_root();
    let root = tempfile::tempdir().unwrap();
    let state = root.path().join("emu");
    std::fs::create_dir(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();
    // The attacker's folder, with a link where a key might be written.
    std::os::unix::fs::chown(&state, Some(65534), Some(65534)).unwrap();
    let victim = root.path().join("victim");
    std::fs::write(&victim, "untouched").unwrap();
    std::os::unix::fs::symlink(&victim, state.join("dev-ca.key.pem")).unwrap();
    let start = |dir: &std::path::Path| match dps_emulator::Emulator::start_in_background(
        dps_emulator::EmulatorConfig::new(dir),
    ) {
        Ok(_) => panic!("the state folder {} must be refused", dir.display()),
        Err(e) => e,
    };
    let e = start(&state);
    assert!(e.to_string().contains("65534"), "{e}");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched");
    // Ours but group-writable: refused too.
    std::os::unix::fs::chown(&state, Some(0), Some(0)).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o770)).unwrap();
    let e = start(&state);
    assert!(e.to_string().contains("chmod 700"), "{e}");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched");
}
