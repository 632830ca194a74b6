//! Helpers shared by the integration tests: an emulator in a temp state folder, HTTPS clients
//! that trust its dev CA (optionally with a client certificate), device-API calls.
#![allow(dead_code, unreachable_pub)] // shared by several test binaries, which see it through `pub`

pub mod hub;
pub mod mqtt;
pub mod sdk;
pub mod webhook;

use dps_emulator::pki::CertifiedKey;
use dps_emulator::{Emulator, EmulatorConfig, RunningEmulator};
use dps_proto::sas::create_token;
use reqwest::StatusCode;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

pub const API: &str = "2021-06-01";

pub struct Env {
    pub emu: RunningEmulator,
    pub dir: tempfile::TempDir,
}

pub async fn start() -> Env {
    start_with(|_| {}).await
}

pub async fn start_with(f: impl FnOnce(&mut EmulatorConfig)) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = EmulatorConfig::new(dir.path().join("state"));
    cfg.hubs = vec![
        "hub-a.azure-devices.net".into(),
        "hub-b.azure-devices.net".into(),
    ];
    f(&mut cfg);
    let emu = Emulator::start(cfg).await.unwrap();
    Env { emu, dir }
}

/// An emulator with its MQTT listener on `mqtt` (`127.0.0.1:0` for a free port) besides HTTPS.
pub async fn start_mqtt_on(mqtt: std::net::SocketAddr, f: impl FnOnce(&mut EmulatorConfig)) -> Env {
    start_with(|c| {
        c.mqtt_listen = Some(mqtt);
        f(c)
    })
    .await
}

/// An emulator with HTTPS and MQTT, each on a free loopback port.
pub async fn start_mqtt(f: impl FnOnce(&mut EmulatorConfig)) -> Env {
    start_mqtt_on(std::net::SocketAddr::from(([127, 0, 0, 1], 0)), f).await
}

/// Enrolls `reg` individually with a symmetric key.
pub fn enroll_symmetric(emu: &RunningEmulator, reg: &str, key_b64: &str) {
    use dps_emulator::model::*;
    emu.enrollments()
        .create_individual(IndividualEnrollment {
            registration_id: reg.into(),
            device_id: None,
            attestation: symmetric_attestation(key_b64),
            common: Default::default(),
        })
        .unwrap();
}

/// Symmetric-key attestation by `key_b64` (primary key only).
fn symmetric_attestation(key_b64: &str) -> dps_emulator::model::AttestationMechanism {
    use dps_emulator::model::*;
    AttestationMechanism {
        kind: "symmetricKey".into(),
        tpm: None,
        x509: None,
        symmetric_key: Some(SymmetricKeyAttestation {
            primary_key: Some(key_b64.into()),
            secondary_key: None,
        }),
    }
}

/// Creates a symmetric-key enrollment group.
pub fn enroll_symmetric_group(emu: &RunningEmulator, group: &str, key_b64: &str) {
    use dps_emulator::model::*;
    emu.enrollments()
        .create_group(EnrollmentGroup {
            enrollment_group_id: group.into(),
            attestation: symmetric_attestation(key_b64),
            common: Default::default(),
        })
        .unwrap();
}

/// X.509 attestation by `x509`.
fn x509_attestation(
    x509: dps_emulator::model::X509Attestation,
) -> dps_emulator::model::AttestationMechanism {
    dps_emulator::model::AttestationMechanism {
        kind: "x509".into(),
        tpm: None,
        x509: Some(x509),
        symmetric_key: None,
    }
}

/// Enrolls `reg` individually by its X.509 leaf certificate.
pub fn enroll_x509(emu: &RunningEmulator, reg: &str, leaf: &CertifiedKey) {
    use dps_emulator::model::*;
    emu.enrollments()
        .create_individual(IndividualEnrollment {
            registration_id: reg.into(),
            device_id: None,
            attestation: x509_attestation(X509Attestation {
                client_certificates: Some(X509Certificates::primary(leaf.cert_pem())),
                ..Default::default()
            }),
            common: Default::default(),
        })
        .unwrap();
}

/// Creates an X.509 enrollment group trusting `ca`.
pub fn enroll_x509_group(emu: &RunningEmulator, group: &str, ca: &CertifiedKey) {
    use dps_emulator::model::*;
    emu.enrollments()
        .create_group(EnrollmentGroup {
            enrollment_group_id: group.into(),
            attestation: x509_attestation(X509Attestation {
                signing_certificates: Some(X509Certificates::primary(ca.cert_pem())),
                ..Default::default()
            }),
            common: Default::default(),
        })
        .unwrap();
}

/// A root CA and a client leaf it issued with common name `cn`.
pub fn x509_leaf(cn: &str) -> (CertifiedKey, CertifiedKey) {
    use dps_emulator::pki::LeafUsage;
    let root = CertifiedKey::new_root_ca(&format!("{cn} root"), Duration::from_secs(3600)).unwrap();
    let leaf = root
        .issue_leaf(cn, LeafUsage::Client, &[], Duration::from_secs(3600))
        .unwrap();
    (root, leaf)
}

/// A TLS client configuration (ring, `versions`) trusting `ca_pem`, presenting `identity`
/// (leaf first chain + key) when given; shared by the HTTPS and the MQTT test clients.
pub fn tls_client_config(
    ca_pem: &str,
    versions: &[&'static rustls::SupportedProtocolVersion],
    identity: Option<(&[&CertifiedKey], &CertifiedKey)>,
) -> rustls::ClientConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots);
    match identity {
        None => builder.with_no_client_auth(),
        Some((chain, key)) => {
            let certs = chain
                .iter()
                .map(|c| CertificateDer::from(c.cert_der().to_vec()))
                .collect();
            let k = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
                key.key_pkcs8_der().unwrap().to_vec(),
            ));
            builder.with_client_auth_cert(certs, k).unwrap()
        }
    }
}

/// An HTTPS client trusting the emulator's CA, presenting `identity` (leaf first chain + key).
pub fn client(
    emu: &RunningEmulator,
    identity: Option<(&[&CertifiedKey], &CertifiedKey)>,
) -> reqwest::Client {
    client_for_ca(emu.ca_cert_pem(), identity)
}

pub fn client_for_ca(
    ca_pem: &str,
    identity: Option<(&[&CertifiedKey], &CertifiedKey)>,
) -> reqwest::Client {
    let cfg = tls_client_config(ca_pem, rustls::DEFAULT_VERSIONS, identity);
    reqwest::Client::builder()
        .use_preconfigured_tls(cfg)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

pub fn device_sas(emu: &RunningEmulator, reg: &str, key_b64: &str, expiry: u64) -> String {
    create_token(
        &format!("{}/registrations/{reg}", emu.id_scope()),
        key_b64,
        Some("registration"),
        expiry,
    )
    .unwrap()
}

pub fn in_an_hour() -> u64 {
    dps_emulator::timeutil::unix_now() + 3600
}

pub struct Answer {
    pub status: StatusCode,
    pub body: Value,
    pub headers: reqwest::header::HeaderMap,
}

pub async fn send(rb: reqwest::RequestBuilder) -> Answer {
    let r = rb.send().await.unwrap();
    let status = r.status();
    let headers = r.headers().clone();
    let text = r.text().await.unwrap();
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    Answer {
        status,
        body,
        headers,
    }
}

pub async fn put_register(
    c: &reqwest::Client,
    emu: &RunningEmulator,
    reg: &str,
    body: Value,
    auth: Option<&str>,
) -> Answer {
    let url = format!(
        "{}/{}/registrations/{reg}/register?api-version={API}",
        emu.endpoint(),
        emu.id_scope()
    );
    let mut rb = c.put(url).json(&body);
    if let Some(a) = auth {
        rb = rb.header("authorization", a);
    }
    send(rb).await
}

pub async fn get_operation(
    c: &reqwest::Client,
    emu: &RunningEmulator,
    reg: &str,
    op: &str,
    auth: Option<&str>,
) -> Answer {
    let url = format!(
        "{}/{}/registrations/{reg}/operations/{op}?api-version={API}",
        emu.endpoint(),
        emu.id_scope()
    );
    let mut rb = c.get(url);
    if let Some(a) = auth {
        rb = rb.header("authorization", a);
    }
    send(rb).await
}

/// Registers and polls until the operation leaves "assigning"; returns the final answer.
pub async fn register(
    c: &reqwest::Client,
    emu: &RunningEmulator,
    reg: &str,
    body: Value,
    auth: Option<&str>,
) -> Answer {
    let a = put_register(c, emu, reg, body, auth).await;
    assert_eq!(
        a.status,
        StatusCode::ACCEPTED,
        "register answered {}: {}",
        a.status,
        a.body
    );
    assert_eq!(a.body["status"], "assigning");
    let op = a.body["operationId"].as_str().unwrap().to_string();
    for _ in 0..100 {
        let s = get_operation(c, emu, reg, &op, auth).await;
        if s.status == StatusCode::OK {
            assert_eq!(s.body["operationId"], op.as_str());
            return s;
        }
        assert_eq!(s.status, StatusCode::ACCEPTED, "{}", s.body);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("operation {op} never completed");
}

pub fn assert_error_body(a: &Answer, status: StatusCode) {
    assert_eq!(a.status, status, "body: {}", a.body);
    assert!(
        a.body["errorCode"].as_u64().is_some(),
        "no errorCode in {}",
        a.body
    );
    assert!(
        a.body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{}",
        a.body
    );
    assert!(a.body["trackingId"].as_str().is_some(), "{}", a.body);
    assert!(a.body["timestampUtc"].as_str().is_some(), "{}", a.body);
}

pub fn body_reg(reg: &str) -> Value {
    json!({ "registrationId": reg })
}

/// A service-API request with a valid SAS.
pub fn service(
    c: &reqwest::Client,
    emu: &RunningEmulator,
    method: reqwest::Method,
    path: &str,
) -> reqwest::RequestBuilder {
    let token = emu
        .service_sas_token("localhost", Duration::from_secs(600))
        .unwrap();
    c.request(
        method,
        format!("{}/{path}?api-version=2021-10-01", emu.endpoint()),
    )
    .header("authorization", token.as_str())
}

/// A software TPM for driving the emulator's TPM attestation: EK and SRK key pairs and their
/// TPM2B_PUBLIC areas.
pub struct SoftTpm {
    /// The EK's private key.
    pub ek: rsa::RsaPrivateKey,
    /// The EK's public area.
    pub ek_pub: hsm_tpm_common::public::PublicArea,
    /// The SRK's private key.
    pub srk: rsa::RsaPrivateKey,
    /// The SRK's public area.
    pub srk_pub: hsm_tpm_common::public::PublicArea,
}

impl SoftTpm {
    /// A new TPM with fresh RSA-2048 EK and SRK.
    pub fn new() -> Self {
        use hsm_tpm_common::public::{ek_template_rsa2048, srk_template_rsa2048, with_rsa_modulus};
        use rsa::traits::PublicKeyParts;
        let mut rng = rand::thread_rng();
        let ek = rsa::RsaPrivateKey::new(&mut rng, 2048).unwrap();
        let srk = rsa::RsaPrivateKey::new(&mut rng, 2048).unwrap();
        let ek_pub = with_rsa_modulus(ek_template_rsa2048(), ek.n().to_bytes_be());
        let srk_pub = with_rsa_modulus(srk_template_rsa2048(), srk.n().to_bytes_be());
        Self {
            ek,
            ek_pub,
            srk,
            srk_pub,
        }
    }

    /// The EK as DPS carries it (base64 TPM2B_PUBLIC).
    pub fn ek_b64(&self) -> String {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(self.ek_pub.to_tpm2b().unwrap())
    }

    /// The SRK as DPS carries it.
    pub fn srk_b64(&self) -> String {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(self.srk_pub.to_tpm2b().unwrap())
    }

    /// The registration id DPS derives from the EK.
    pub fn registration_id(&self) -> String {
        dps_proto::tpm_registration_id(&self.ek_pub.to_tpm2b().unwrap())
    }

    /// The register request body with EK and SRK.
    pub fn body(&self) -> Value {
        json!({"registrationId": self.registration_id(),
               "tpm": {"endorsementKey": self.ek_b64(), "storageRootKey": self.srk_b64()}})
    }

    /// The keys `open_dps_challenge` needs.
    pub fn keys(&self) -> hsm_tpm_common::dps::SoftwareTpmKeys<'_> {
        hsm_tpm_common::dps::SoftwareTpmKeys {
            ek_private: &self.ek,
            ek_public: &self.ek_pub,
            srk_private: &self.srk,
            srk_public: &self.srk_pub,
        }
    }

    /// Opens the challenge in a 401 answer: the identity key, base64.
    pub fn open(&self, challenge: &Answer) -> String {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD;
        let blob = b64
            .decode(
                challenge.body["authenticationKey"]
                    .as_str()
                    .expect("a challenge"),
            )
            .unwrap();
        let opened = hsm_tpm_common::dps::open_dps_challenge(&self.keys(), &blob).unwrap();
        b64.encode(opened.key.as_slice())
    }
}
