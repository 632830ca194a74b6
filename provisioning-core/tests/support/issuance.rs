//! Shared by the certificate-issuance e2e tests (included with `#[path]` next to
//! `support/e2e.rs`, which the including test names `helpers`): the enrollment policy, the
//! emulator's issuing CA, devices enrolled with it (symmetric, dice, tpm-sim), the
//! issue-and-verify flow and the mutual-TLS handshake with the operational key against a local
//! rustls server.
#![allow(dead_code, unreachable_pub)] // shared by several test binaries, which see it through `pub`

use crate::helpers::{dps_config, Env, B64};
use base64::Engine;
use provisioning_core::dps::Attestation;
use provisioning_core::issuance::{
    chain_pem, register_with_certificate, verify_issued_chain, ChainError, OPERATIONAL_KEY_LABEL,
};
use provisioning_core::plugin::PluginInstance;
use std::sync::Arc;

pub const POLICY: &str = r#"{"validityDays": 30}"#;

pub fn policy() -> serde_json::Value {
    serde_json::from_str(POLICY).unwrap()
}

/// A symmetric-key device enrolled individually as `reg` with [`policy`]: its state folder
/// and plugin instance.
pub fn symmetric_with_issuance(env: &Env, reg: &str) -> (tempfile::TempDir, Arc<PluginInstance>) {
    let e = crate::helpers::individual(
        &env.emu,
        serde_json::json!({"registrationId": reg, "attestation": {"type": "symmetricKey"}, "certificateIssuancePolicy": policy()}),
    );
    let key = B64
        .decode(e.attestation.symmetric_key.unwrap().primary_key.unwrap())
        .unwrap();
    let state = tempfile::tempdir().unwrap();
    let device = crate::helpers::symmetric_device(state.path(), reg, &key);
    (state, device)
}

/// A dice device whose leaf is enrolled individually as `reg` with [`policy`].
pub fn dice_with_issuance(env: &Env, reg: &str) -> (tempfile::TempDir, Arc<PluginInstance>) {
    let state = tempfile::tempdir().unwrap();
    let device = crate::helpers::dice_device(state.path(), reg);
    let chain = device.x509().unwrap().certificate_chain_pem().unwrap();
    let leaf = chain
        .split_inclusive("-----END CERTIFICATE-----")
        .next()
        .unwrap()
        .trim()
        .to_string();
    crate::helpers::individual(
        &env.emu,
        serde_json::json!({"registrationId": reg, "attestation": {"type": "x509", "x509": {"clientCertificates": {"primary": {"certificate": leaf}}}}, "certificateIssuancePolicy": policy()}),
    );
    (state, device)
}

/// A tpm-sim device enrolled individually (its EK) with [`policy`].
pub fn tpm_sim_with_issuance(env: &Env) -> (tempfile::TempDir, Arc<PluginInstance>) {
    let state = tempfile::tempdir().unwrap();
    let device = crate::helpers::instance(
        "tpm_sim",
        &[("state_dir", state.path().display().to_string())],
    );
    let ek = device.tpm().unwrap().endorsement_key().unwrap();
    let reg = provisioning_core::dps::tpm_registration_id(&ek);
    crate::helpers::individual(
        &env.emu,
        serde_json::json!({"registrationId": reg, "attestation": {"type": "tpm", "tpm": {"endorsementKey": B64.encode(&ek)}}, "certificateIssuancePolicy": policy()}),
    );
    (state, device)
}

/// The emulator's issuing CA certificate (DER), from its state folder.
pub fn issuing_ca_der(env: &Env) -> Vec<u8> {
    let pem = std::fs::read(
        env.dir
            .path()
            .join("emulator")
            .join(dps_emulator::ISSUING_CA_CERT_FILE),
    )
    .unwrap();
    let mut r = std::io::BufReader::new(&pem[..]);
    let der = rustls_pemfile::certs(&mut r)
        .next()
        .expect("a certificate")
        .expect("PEM");
    der.to_vec()
}

pub async fn issue_and_check(
    env: &Env,
    device: Arc<PluginInstance>,
    attestation: Attestation,
    what: &str,
) {
    let (result, chain) = register_with_certificate(
        &dps_config(&env.emu),
        device.clone(),
        attestation,
        OPERATIONAL_KEY_LABEL,
        &|_| {},
    )
    .await
    .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(result.status, "assigned", "{what}");
    assert_eq!(chain.len(), 2, "{what}");
    // The issuer is the emulator's issuing CA, and the leaf verifies with it (checked again
    // here through the library's own check against that file's certificate).
    assert_eq!(chain[1], issuing_ca_der(env), "{what}");
    let ops = device.operational_key().unwrap();
    let spki = ops.public_key(OPERATIONAL_KEY_LABEL).unwrap().to_vec();
    let b64: Vec<String> = [&chain[0], &issuing_ca_der(env)]
        .iter()
        .map(|d| B64.encode(d))
        .collect();
    verify_issued_chain(&spki, &b64).unwrap_or_else(|e| panic!("{what}: {e}"));
    // Stored beside the key, byte for byte.
    assert_eq!(
        ops.chain(OPERATIONAL_KEY_LABEL).unwrap(),
        chain_pem(&chain),
        "{what}"
    );
    mutual_tls_with_the_operational_key(env, device.clone(), what);
    // Another key's certificate is refused.
    assert!(matches!(
        verify_issued_chain(&[0x30, 0x00], &b64),
        Err(ChainError::WrongKey)
    ));
}

/// A small local rustls server that requires a client certificate chaining to the emulator's
/// issuing CA: the device presents its issued chain and the plugin's operational key signs the
/// handshake. The server sees the issued leaf.
pub fn mutual_tls_with_the_operational_key(env: &Env, device: Arc<PluginInstance>, what: &str) {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    use std::io::{Read, Write};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server_ca = dps_emulator::pki::CertifiedKey::new_root_ca(
        "mtls test server CA",
        std::time::Duration::from_secs(3600),
    )
    .unwrap();
    let server = server_ca
        .issue_leaf(
            "localhost",
            dps_emulator::pki::LeafUsage::Server,
            &["localhost".into()],
            std::time::Duration::from_secs(3600),
        )
        .unwrap();
    let mut client_roots = rustls::RootCertStore::empty();
    client_roots
        .add(CertificateDer::from(issuing_ca_der(env)))
        .unwrap();
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(client_roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    let server_config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![CertificateDer::from(server.cert_der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
                server.key_pkcs8_der().unwrap().to_vec(),
            )),
        )
        .unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server_thread = std::thread::spawn(move || {
        let (mut tcp, _) = listener.accept().unwrap();
        let mut conn = rustls::ServerConnection::new(Arc::new(server_config)).unwrap();
        let mut tls = rustls::Stream::new(&mut conn, &mut tcp);
        let mut buf = [0u8; 4];
        let read = tls.read_exact(&mut buf).map(|_| buf);
        let peer = conn
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.to_vec());
        (read.map_err(|e| e.to_string()), peer)
    });
    let mut server_roots = rustls::RootCertStore::empty();
    server_roots
        .add(CertificateDer::from(server_ca.cert_der().to_vec()))
        .unwrap();
    let client_config = provisioning_core::dps::tls_client_config_with_operational_key(
        device.clone(),
        OPERATIONAL_KEY_LABEL,
        server_roots,
    )
    .unwrap_or_else(|e| panic!("{what}: {e}"));
    let mut conn =
        rustls::ClientConnection::new(Arc::new(client_config), "localhost".try_into().unwrap())
            .unwrap();
    let mut tcp = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut tls = rustls::Stream::new(&mut conn, &mut tcp);
    tls.write_all(b"ping")
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    tls.flush().unwrap();
    let (read, peer) = server_thread.join().unwrap();
    assert_eq!(read, Ok(*b"ping"), "{what}");
    let stored = device
        .operational_key()
        .unwrap()
        .chain(OPERATIONAL_KEY_LABEL)
        .unwrap();
    let mut r = std::io::BufReader::new(stored.as_bytes());
    let leaf = rustls_pemfile::certs(&mut r)
        .next()
        .unwrap()
        .unwrap()
        .to_vec();
    assert_eq!(peer, Some(leaf), "{what}: the server saw the issued leaf");
}
