//! The plugin end to end through its C ABI: chain verified by OpenSSL, signatures verified
//! against the leaf certificate, distinct devices, determinism, export policy, bad input.

mod common;

use common::{pem_blocks, uds_hex, AbiInstance};
use hsm_plugin_sdk::hsm_api::{
    HSM_ERR_INVALID_ARGUMENT, HSM_ERR_NOT_SUPPORTED, HSM_SIGN_ECDSA_P256_SHA256,
    HSM_SIGN_RSA_PKCS1_SHA256,
};
use openssl::ecdsa::EcdsaSig;
use openssl::nid::Nid;
use openssl::stack::Stack;
use openssl::x509::store::X509StoreBuilder;
use openssl::x509::verify::X509VerifyFlags;
use openssl::x509::{X509PurposeId, X509StoreContext, X509VerifyResult, X509};
use sha2::{Digest, Sha256};

fn create(state: &tempfile::TempDir, extra: &[(&str, &str)]) -> AbiInstance {
    let mut settings = vec![("state_dir", state.path().to_str().unwrap())];
    settings.extend_from_slice(extra);
    AbiInstance::create(&settings).unwrap_or_else(|e| panic!("create failed: {e:?}"))
}

fn certificates(plugin: &AbiInstance) -> Vec<X509> {
    let blocks = pem_blocks(&plugin.chain_pem().unwrap());
    assert_eq!(blocks.len(), 4, "leaf, CDI, DeviceID, root expected");
    blocks
        .iter()
        .map(|(label, der)| {
            assert_eq!(label, "CERTIFICATE");
            X509::from_der(der).unwrap()
        })
        .collect()
}

/// Verifies leaf ← CDI ← DeviceID against the root with OpenSSL as a TLS client chain.
/// Returns the verify result and the depth it refers to.
fn openssl_verify(certs: &[X509], ignore_critical: bool) -> (X509VerifyResult, u32, bool) {
    let mut store = X509StoreBuilder::new().unwrap();
    store.add_cert(certs[3].clone()).unwrap();
    store.set_purpose(X509PurposeId::SSL_CLIENT).unwrap();
    if ignore_critical {
        store.set_flags(X509VerifyFlags::IGNORE_CRITICAL).unwrap();
    }
    let store = store.build();
    let mut untrusted = Stack::new().unwrap();
    untrusted.push(certs[1].clone()).unwrap();
    untrusted.push(certs[2].clone()).unwrap();
    let mut context = X509StoreContext::new().unwrap();
    context
        .init(&store, &certs[0], &untrusted, |c| {
            let ok = c.verify_cert()?;
            Ok((c.error(), c.error_depth(), ok))
        })
        .unwrap()
}

#[test]
fn chain_verifies_with_openssl() {
    let state = tempfile::tempdir().unwrap();
    let plugin = create(&state, &[("uds_hex", &uds_hex(1))]);
    let certs = certificates(&plugin);

    // The CDI certificate carries open-dice's critical OpenDiceInput extension, which OpenSSL
    // does not know: without help it must stop there (depth 1) and nowhere else.
    let (result, depth, ok) = openssl_verify(&certs, false);
    assert!(!ok);
    assert_eq!(
        result.as_raw(),
        34,
        "X509_V_ERR_UNHANDLED_CRITICAL_EXTENSION expected, got {result}"
    );
    assert_eq!(depth, 1, "only the CDI certificate may be unknown-critical");
    // That extension is the only unknown critical one: with it waived the chain is valid,
    // signatures, names, key ids, CA flags, key usages and clientAuth purpose included.
    let (result, _, ok) = openssl_verify(&certs, true);
    assert!(ok, "OpenSSL rejected the chain: {result}");

    // Chain order and shape as enroll-info expects it.
    let root = &certs[3];
    assert_eq!(
        root.issuer_name().to_der().unwrap(),
        root.subject_name().to_der().unwrap(),
        "last block must be the self-signed root"
    );
    assert!(root.verify(&root.public_key().unwrap()).unwrap());
    let leaf_cn = String::from_utf8(
        certs[0]
            .subject_name()
            .entries_by_nid(Nid::COMMONNAME)
            .next()
            .unwrap()
            .data()
            .as_slice()
            .to_vec(),
    )
    .unwrap();
    assert_eq!(leaf_cn, plugin.common_name().unwrap());
}

#[test]
fn openssl_cli_verifies_the_chain() {
    let state = tempfile::tempdir().unwrap();
    let plugin = create(&state, &[("uds_hex", &uds_hex(9))]);
    let pem = plugin.chain_pem().unwrap();
    let blocks: Vec<String> = pem
        .split_inclusive("-----END CERTIFICATE-----\n")
        .map(str::to_owned)
        .collect();
    assert_eq!(blocks.len(), 4);
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, body: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, body).unwrap();
        path
    };
    let leaf = write("leaf.pem", &blocks[0]);
    let untrusted = write("untrusted.pem", &format!("{}{}", blocks[1], blocks[2]));
    let root = write("root.pem", &blocks[3]);
    let output = std::process::Command::new("openssl")
        .args([
            "verify",
            "-purpose",
            "sslclient",
            "-ignore_critical",
            "-CAfile",
        ])
        .arg(&root)
        .arg("-untrusted")
        .arg(&untrusted)
        .arg(&leaf)
        .output()
        .expect("the openssl command line tool is needed (apt-get install openssl)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains(": OK"),
        "openssl verify failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn signature_through_the_plugin_verifies_against_the_leaf() {
    let state = tempfile::tempdir().unwrap();
    let plugin = create(&state, &[("uds_hex", &uds_hex(2))]);
    let leaf = &certificates(&plugin)[0];
    let digest = Sha256::digest(b"TLS 1.3, client CertificateVerify");
    let der = plugin
        .sign_digest(HSM_SIGN_ECDSA_P256_SHA256, &digest)
        .unwrap();
    let signature = EcdsaSig::from_der(&der).unwrap();
    let key = leaf.public_key().unwrap().ec_key().unwrap();
    assert!(signature.verify(&digest, &key).unwrap());
    let other = Sha256::digest(b"something else");
    assert!(!signature.verify(&other, &key).unwrap());
    // RFC 6979: repeatable.
    assert_eq!(
        der,
        plugin
            .sign_digest(HSM_SIGN_ECDSA_P256_SHA256, &digest)
            .unwrap()
    );
}

#[test]
fn bad_sign_requests_get_typed_errors() {
    let state = tempfile::tempdir().unwrap();
    let plugin = create(&state, &[("uds_hex", &uds_hex(3))]);
    let short = plugin
        .sign_digest(HSM_SIGN_ECDSA_P256_SHA256, &[0u8; 31])
        .unwrap_err();
    assert_eq!(short.status, HSM_ERR_INVALID_ARGUMENT, "{short:?}");
    let rsa = plugin
        .sign_digest(HSM_SIGN_RSA_PKCS1_SHA256, &[0u8; 32])
        .unwrap_err();
    assert_eq!(rsa.status, HSM_ERR_NOT_SUPPORTED, "{rsa:?}");
}

#[test]
fn two_udses_give_two_registration_ids() {
    let state = tempfile::tempdir().unwrap();
    let a = create(&state, &[("uds_hex", &uds_hex(4))]);
    let b = create(&state, &[("uds_hex", &uds_hex(5))]);
    let (id_a, id_b) = (a.common_name().unwrap(), b.common_name().unwrap());
    assert_ne!(id_a, id_b);
    for id in [&id_a, &id_b] {
        assert!(id.starts_with("dice-") && id.len() == 25, "{id}");
        assert!(hsmkit_backend_dice::settings::validate_registration_id(id).is_ok());
    }
    // Two devices created from scratch (random UDS files) differ as well.
    let (s1, s2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    assert_ne!(
        create(&s1, &[]).common_name().unwrap(),
        create(&s2, &[]).common_name().unwrap()
    );
}

#[test]
fn same_uds_and_inputs_give_the_same_chain_byte_for_byte() {
    let state = tempfile::tempdir().unwrap();
    let uds = uds_hex(6);
    let first = create(&state, &[("uds_hex", &uds)]).chain_pem().unwrap();
    let second = create(&state, &[("uds_hex", &uds)]).chain_pem().unwrap();
    assert_eq!(first, second);
    // A new firmware hash changes the CDI and leaf certificates but not the DeviceID one.
    let updated = create(
        &state,
        &[("uds_hex", &uds), ("code_hash_hex", &"ab".repeat(64))],
    )
    .chain_pem()
    .unwrap();
    let (old, new) = (pem_blocks(&first), pem_blocks(&updated));
    assert_ne!(old[0], new[0]);
    assert_ne!(old[1], new[1]);
    assert_eq!(old[2], new[2]);
    assert_eq!(old[3], new[3]);
}

#[test]
fn uds_file_is_created_once_and_reused() {
    let state = tempfile::tempdir().unwrap();
    let first = create(&state, &[]).chain_pem().unwrap();
    assert!(state.path().join("dice/uds").is_file());
    assert!(state.path().join("dice/root-ca-key.pem").is_file());
    assert_eq!(first, create(&state, &[]).chain_pem().unwrap());
}

#[test]
fn shared_root_key_signs_every_device() {
    let fleet = tempfile::tempdir().unwrap();
    let root_key = fleet.path().join("dice/root-ca-key.pem");
    // Creates the fleet's root key.
    let _ = create(&fleet, &[("uds_hex", &uds_hex(10))]);
    let root_path = root_key.to_str().unwrap();
    let (s1, s2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = certificates(&create(&s1, &[("root_ca_key_path", root_path)]));
    let b = certificates(&create(&s2, &[("root_ca_key_path", root_path)]));
    assert_eq!(a[3].to_der().unwrap(), b[3].to_der().unwrap());
    assert_ne!(a[2].to_der().unwrap(), b[2].to_der().unwrap());
}

#[test]
fn private_key_export_is_refused_by_default() {
    let state = tempfile::tempdir().unwrap();
    let plugin = create(&state, &[("uds_hex", &uds_hex(7))]);
    let refused = plugin.export_private_key().unwrap_err();
    assert_eq!(refused.status, HSM_ERR_NOT_SUPPORTED, "{refused:?}");
    assert!(refused.message.contains("allow_key_export"), "{refused:?}");

    let allowed = create(
        &state,
        &[("uds_hex", &uds_hex(7)), ("allow_key_export", "true")],
    );
    let pem = allowed.export_private_key().unwrap();
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
    let key = openssl::pkey::PKey::private_key_from_pem(pem.as_bytes()).unwrap();
    let leaf = &certificates(&allowed)[0];
    assert!(leaf.public_key().unwrap().public_eq(&key));
}

#[test]
fn bad_settings_are_refused_with_the_key_named() {
    let state = tempfile::tempdir().unwrap();
    let dir = state.path().to_str().unwrap();
    for (key, value) in [
        ("uds_hex", "1234"),
        ("mode", "fast"),
        ("registration_id", "Not Valid"),
        ("config_hex", "zz"),
        ("allow_key_export", "maybe"),
    ] {
        let error = AbiInstance::create(&[("state_dir", dir), (key, value)])
            .err()
            .unwrap_or_else(|| panic!("{key}={value} was accepted"));
        assert_eq!(error.status, HSM_ERR_INVALID_ARGUMENT, "{error:?}");
        assert!(error.message.contains(key), "{error:?}");
    }
}

#[test]
fn configured_registration_id_is_the_leaf_cn() {
    let state = tempfile::tempdir().unwrap();
    let plugin = create(
        &state,
        &[
            ("uds_hex", &uds_hex(8)),
            ("registration_id", "line-7.press_3:a"),
        ],
    );
    assert_eq!(plugin.common_name().unwrap(), "line-7.press_3:a");
}
