//! Certificate issuance end to end with the pkcs11 plugin on SoftHSM2: a device onboarded by
//! its X.509 certificate in the token, and one onboarded by an HMAC key imported into the
//! token, each registers with a CSR signed by an operational key generated in the token; the
//! issued chain verifies to the emulator's issuing CA, its leaf is for the token's key (read
//! from the token object itself, not from the plugin), it is stored in the token, and the
//! token key completes mutual TLS with it against a local server. Provisioning with issuance
//! (the `--issue-certificate` path) keeps the same token key across runs. SoftHSM2 missing
//! fails the test, with the install hint.

#[path = "support/e2e.rs"]
mod helpers;
#[path = "support/issuance.rs"]
mod issuance_helpers;

use base64::Engine;
use helpers::*;
use hsmkit_backend_pkcs11::softhsm::{create_token, TestToken};
use issuance_helpers::*;
use provisioning_core::dps::Attestation;
use provisioning_core::issuance::OPERATIONAL_KEY_LABEL;
use provisioning_core::plugin::PluginInstance;
use serde_json::json;
use std::sync::Arc;

fn softhsm_token(prefix: &str) -> TestToken {
    create_token(prefix).unwrap_or_else(|e| panic!("{e}"))
}

fn token_settings(tok: &TestToken) -> Vec<(&'static str, String)> {
    vec![
        ("module", tok.module.display().to_string()),
        ("token_uri", tok.uri()),
        ("pin_file", tok.pin_file.display().to_string()),
    ]
}

/// The operational public key as the token holds it (the `CKO_PUBLIC_KEY` object's
/// `CKA_EC_POINT`, as a DER SubjectPublicKeyInfo), read by the backend library through a
/// session of this process, not through the plugin instance that made it.
fn token_public_key(tok: &TestToken) -> Vec<u8> {
    let session = hsmkit_backend_pkcs11::session::TokenSession::open(
        &tok.module,
        &hsmkit_backend_pkcs11::uri::Pkcs11Uri::parse(&tok.uri()).unwrap(),
        &tok.pin,
    )
    .unwrap_or_else(|e| panic!("a session on the test token: {e}"));
    hsmkit_backend_pkcs11::operational::public_key(&session, OPERATIONAL_KEY_LABEL)
        .unwrap_or_else(|e| panic!("the operational key in the token: {e}"))
}

/// The SubjectPublicKeyInfo (DER) of the leaf of the chain the plugin stored.
fn stored_leaf_key(device: &PluginInstance) -> Vec<u8> {
    let pem = device
        .operational_key()
        .unwrap()
        .chain(OPERATIONAL_KEY_LABEL)
        .unwrap();
    let chain = x509_cert::Certificate::load_pem_chain(pem.as_bytes()).unwrap();
    der::Encode::to_der(&chain[0].tbs_certificate.subject_public_key_info).unwrap()
}

/// Issues, checks the chain and the mutual-TLS handshake (shared with the software backends),
/// then that the leaf is for the key in the token.
async fn issue_and_check_token(
    env: &Env,
    tok: &TestToken,
    device: Arc<PluginInstance>,
    attestation: Attestation,
    what: &str,
) {
    issue_and_check(env, device.clone(), attestation, what).await;
    assert_eq!(
        stored_leaf_key(&device),
        token_public_key(tok),
        "{what}: the issued leaf is for the token's operational key"
    );
}

#[tokio::test]
async fn pkcs11_x509_device_gets_its_operational_certificate() {
    let env = emulator().await;
    let tok = softhsm_token("issue-x509");
    let reg = "issue-pkcs11-x509-1";
    let out = pkcs11_init(
        &Pkcs11Token {
            module: &tok.module,
            uri: tok.uri(),
            pin_file: &tok.pin_file,
        },
        reg,
        "SoftHSM2",
    );
    individual(
        &env.emu,
        json!({"registrationId": reg, "attestation": {"type": "x509", "x509": {"clientCertificates": {"primary": {"certificate": out.certificate_pem}}}}, "certificateIssuancePolicy": policy()}),
    );
    let mut settings = token_settings(&tok);
    settings.push(("key_uri", out.key_uri.clone()));
    settings.push(("cert_uri", out.cert_uri.clone()));
    let device = instance("pkcs11", &settings);
    issue_and_check_token(&env, &tok, device.clone(), Attestation::X509, "pkcs11 x509").await;
    // The onboarding key and the operational key are two keys.
    let onboarding = x509_cert::Certificate::load_pem_chain(out.certificate_pem.as_bytes())
        .unwrap()[0]
        .tbs_certificate
        .subject_public_key_info
        .clone();
    assert_ne!(
        der::Encode::to_der(&onboarding).unwrap(),
        token_public_key(&tok)
    );
}

#[tokio::test]
async fn pkcs11_symmetric_key_device_gets_its_operational_certificate() {
    let env = emulator().await;
    let tok = softhsm_token("issue-sym");
    let reg = "issue-pkcs11-sym-1";
    let e = individual(
        &env.emu,
        json!({"registrationId": reg, "attestation": {"type": "symmetricKey"}, "certificateIssuancePolicy": policy()}),
    );
    let key = B64
        .decode(e.attestation.symmetric_key.unwrap().primary_key.unwrap())
        .unwrap();
    let mut settings = token_settings(&tok);
    settings.push(("registration_id", reg.to_string()));
    let device = instance("pkcs11", &settings);
    // The enrollment key goes into the token (non-extractable) before onboarding.
    device
        .symmetric_key()
        .unwrap()
        .import_key(Some(reg), &key)
        .unwrap();
    issue_and_check_token(
        &env,
        &tok,
        device,
        Attestation::SymmetricKey,
        "pkcs11 symmetric key",
    )
    .await;
}

/// `hsmkit provision --issue-certificate` (`issue_certificate = true`) runs
/// `provisioning::provision_with_certificate`: the record keeps the issued chain, whose leaf is
/// for the token key; a later run with a new instance reuses the record; a forced run
/// registers again and gets a new certificate for the same token key (create_key finds the
/// pair it made before).
#[tokio::test]
async fn pkcs11_provision_with_issuance_keeps_the_token_key_across_runs() {
    use provisioning_core::provisioning::{provision_with_certificate, Outcome};
    let env = emulator().await;
    let tok = softhsm_token("issue-runs");
    let reg = "issue-pkcs11-runs-1";
    let out = pkcs11_init(
        &Pkcs11Token {
            module: &tok.module,
            uri: tok.uri(),
            pin_file: &tok.pin_file,
        },
        reg,
        "SoftHSM2",
    );
    individual(
        &env.emu,
        json!({"registrationId": reg, "attestation": {"type": "x509", "x509": {"clientCertificates": {"primary": {"certificate": out.certificate_pem}}}}, "certificateIssuancePolicy": policy()}),
    );
    let state = tempfile::tempdir().unwrap();
    let mut settings = token_settings(&tok);
    settings.push(("key_uri", out.key_uri.clone()));
    settings.push(("cert_uri", out.cert_uri.clone()));
    let leaf_key = |chain: &[String]| {
        let der = B64.decode(&chain[0]).unwrap();
        let leaf: x509_cert::Certificate = der::Decode::from_der(&der).unwrap();
        der::Encode::to_der(&leaf.tbs_certificate.subject_public_key_info).unwrap()
    };
    let run = |force: bool| {
        let device = instance("pkcs11", &settings);
        let config = dps_config(&env.emu);
        let state = state.path().to_path_buf();
        async move {
            provision_with_certificate(
                &config,
                device,
                Attestation::X509,
                &state,
                force,
                OPERATIONAL_KEY_LABEL,
                &|_| {},
            )
            .await
            .unwrap_or_else(|e| panic!("provisioning with issuance: {e}"))
        }
    };
    let (first, outcome) = run(false).await;
    assert_eq!(outcome, Outcome::Registered);
    let first_chain = first
        .result
        .issued_certificate_chain
        .clone()
        .expect("the record keeps the issued chain");
    assert_eq!(leaf_key(&first_chain), token_public_key(&tok));

    let (again, outcome) = run(false).await;
    assert_eq!(outcome, Outcome::Reused, "the saved record is used");
    assert_eq!(
        again.result.issued_certificate_chain,
        Some(first_chain.clone())
    );

    let (forced, outcome) = run(true).await;
    assert_eq!(outcome, Outcome::Registered);
    let forced_chain = forced.result.issued_certificate_chain.unwrap();
    assert_ne!(forced_chain[0], first_chain[0], "a new certificate");
    assert_eq!(
        leaf_key(&forced_chain),
        leaf_key(&first_chain),
        "for the same token key"
    );
    assert_eq!(leaf_key(&forced_chain), token_public_key(&tok));
}
