//! End-to-end tests against SoftHSM2: each test makes its own token (unique label) in the
//! binary's token folder, so the tests run in parallel.

mod common;

use common::{init, token};
use hmac::{Hmac, Mac};
use hsm_plugin_sdk::{ErrorCode, HsmPlugin, PluginConfig, SignAlgorithm, SymmetricKeyHsm, X509Hsm};
use hsmkit_backend_pkcs11::provision::{CaFiles, InitOutcome};
use hsmkit_backend_pkcs11::softhsm::TestToken;
use hsmkit_backend_pkcs11::uri::Pkcs11Uri;
use hsmkit_backend_pkcs11::Pkcs11Plugin;
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::PKey;
use openssl::sign::Verifier;
use openssl::x509::X509;
use sha2::{Digest, Sha256};

fn base_config(tok: &TestToken) -> Vec<(String, String)> {
    vec![
        ("module".into(), tok.module.display().to_string()),
        ("token_uri".into(), tok.uri()),
        ("pin_file".into(), tok.pin_file.display().to_string()),
    ]
}

fn plugin(pairs: Vec<(String, String)>) -> Pkcs11Plugin {
    Pkcs11Plugin::create(&PluginConfig::from_pairs(pairs)).unwrap_or_else(|e| panic!("{e}"))
}

fn x509_plugin(tok: &TestToken, out: &InitOutcome) -> Pkcs11Plugin {
    let mut pairs = base_config(tok);
    pairs.push(("key_uri".into(), out.key_uri.clone()));
    pairs.push(("cert_uri".into(), out.cert_uri.clone()));
    plugin(pairs)
}

fn verify_with_openssl(chain_pem: &str, message: &[u8], der_sig: &[u8]) -> bool {
    let leaf = X509::stack_from_pem(chain_pem.as_bytes())
        .unwrap()
        .remove(0);
    let key = leaf.public_key().unwrap();
    let mut v = Verifier::new(MessageDigest::sha256(), &key).unwrap();
    v.update(message).unwrap();
    v.verify(der_sig).unwrap()
}

#[test]
fn self_signed_device_chain_sign_and_verify_with_openssl() {
    let tok = token("x509");
    let out = init(&tok, "device", "my-device-01", None);
    let p = x509_plugin(&tok, &out);

    let chain = p.certificate_chain_pem().unwrap();
    assert_eq!(chain, out.certificate_pem);
    assert_eq!(p.common_name().unwrap(), "my-device-01");
    let leaf = X509::from_pem(chain.as_bytes()).unwrap();
    // Self-signed through the token: the token key signed its own certificate.
    assert!(leaf.verify(&leaf.public_key().unwrap()).unwrap());

    let message = b"proof of possession";
    let sig = p
        .sign_digest(SignAlgorithm::EcdsaP256Sha256, &Sha256::digest(message))
        .unwrap();
    assert!(verify_with_openssl(&chain, message, &sig));
    assert!(!verify_with_openssl(&chain, b"another message", &sig));

    let e = p.export_private_key_pem().unwrap_err();
    assert_eq!(e.code(), ErrorCode::NotSupported);
    let e = p
        .sign_digest(SignAlgorithm::EcdsaP256Sha256, &[0u8; 20])
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidArgument);
    let e = p
        .sign_digest(SignAlgorithm::RsaPkcs1Sha256, &[0u8; 32])
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidArgument);
}

#[test]
fn ca_signed_device_and_chain_from_file() {
    let tok = token("ca");
    let dir = tempfile::tempdir().unwrap();
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
    let ca_key = PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap();
    let mut name = openssl::x509::X509NameBuilder::new().unwrap();
    name.append_entry_by_text("CN", "test-ca").unwrap();
    let name = name.build();
    let mut b = X509::builder().unwrap();
    b.set_version(2).unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(&name).unwrap();
    b.set_pubkey(&ca_key).unwrap();
    b.set_not_before(&openssl::asn1::Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    b.set_not_after(&openssl::asn1::Asn1Time::days_from_now(10).unwrap())
        .unwrap();
    b.sign(&ca_key, MessageDigest::sha256()).unwrap();
    let ca_cert = b.build();
    let ca_files = CaFiles {
        cert_pem: dir.path().join("ca.pem"),
        key_pem: dir.path().join("ca.key"),
    };
    std::fs::write(&ca_files.cert_pem, ca_cert.to_pem().unwrap()).unwrap();
    std::fs::write(
        &ca_files.key_pem,
        ca_key.private_key_to_pem_pkcs8().unwrap(),
    )
    .unwrap();

    let out = init(&tok, "leaf", "ca-device", Some(ca_files));
    let chain = X509::stack_from_pem(out.certificate_pem.as_bytes()).unwrap();
    assert_eq!(chain.len(), 2);
    assert!(chain[0].verify(&ca_key).unwrap());

    // The chain can also come from a file while the key stays in the token.
    let chain_file = dir.path().join("chain.pem");
    std::fs::write(&chain_file, &out.certificate_pem).unwrap();
    let mut pairs = base_config(&tok);
    pairs.push(("key_uri".into(), out.key_uri.clone()));
    pairs.push(("cert_file".into(), chain_file.display().to_string()));
    let p = plugin(pairs);
    assert_eq!(p.certificate_chain_pem().unwrap(), out.certificate_pem);
    assert_eq!(p.common_name().unwrap(), "ca-device");
    let sig = p
        .sign_digest(SignAlgorithm::EcdsaP256Sha256, &Sha256::digest(b"m"))
        .unwrap();
    assert!(verify_with_openssl(&out.certificate_pem, b"m", &sig));
}

#[test]
fn hmac_of_imported_key_equals_software_hmac() {
    let tok = token("hmac");
    let mut pairs = base_config(&tok);
    pairs.push(("hmac_key_uri".into(), "pkcs11:object=sym-device".into()));
    let p = plugin(pairs);
    assert_eq!(p.sign(b"x").unwrap_err().code(), ErrorCode::NotFound);

    let key: Vec<u8> = (0u8..32).map(|i| i.wrapping_mul(37)).collect();
    p.import_key(None, &key).unwrap();
    let data = b"0ne000000A%2Fregistrations%2Fsym-device\n1700000000";
    let mut soft = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    soft.update(data);
    assert_eq!(p.sign(data).unwrap(), soft.finalize().into_bytes().to_vec());
    assert_eq!(p.registration_id().unwrap(), "sym-device");

    // A second instance finds the stored key by its URI; re-import replaces it.
    let mut pairs = base_config(&tok);
    pairs.push(("hmac_key_uri".into(), "pkcs11:object=sym-device".into()));
    let q = plugin(pairs);
    assert_eq!(q.sign(data).unwrap(), p.sign(data).unwrap());
    let key2 = [9u8; 32];
    q.import_key(Some("renamed-id"), &key2).unwrap();
    assert_eq!(q.registration_id().unwrap(), "renamed-id");
    let mut soft = Hmac::<Sha256>::new_from_slice(&key2).unwrap();
    soft.update(data);
    let expected = soft.finalize().into_bytes().to_vec();
    assert_eq!(q.sign(data).unwrap(), expected);
    // p's cached handle now points at the destroyed key: it finds the new one by its URI.
    assert_eq!(p.sign(data).unwrap(), expected);

    // The key is stored sensitive and non-extractable: its value cannot be read back.
    let e = q.with_session(|s| {
        let handle = s
            .find_one(
                cryptoki::object::ObjectClass::SECRET_KEY,
                &Pkcs11Uri::parse("pkcs11:object=sym-device").unwrap(),
                "key",
            )
            .unwrap();
        s.attribute_bytes(handle, cryptoki::object::AttributeType::Value)
            .unwrap_err()
    });
    assert_eq!(
        e.code(),
        hsmkit_backend_pkcs11::error::ErrorKind::NotSupported,
        "{e}"
    );
    assert!(e.message().contains("secret"), "{e}");
    assert!(!e.message().contains("09090909"));
}

#[test]
fn import_without_configured_uri_uses_registration_id_as_label() {
    let tok = token("hmac2");
    let p = plugin(base_config(&tok));
    let e = p.import_key(None, &[1; 32]).unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidArgument);
    // SoftHSM refuses HMAC-SHA256 keys shorter than the hash (32 bytes).
    p.import_key(Some("dev-42"), &[1; 32]).unwrap();
    assert_eq!(p.registration_id().unwrap(), "dev-42");
    assert_eq!(p.sign(b"a").unwrap().len(), 32);
    assert_eq!(
        p.import_key(Some("dev-42"), &[]).unwrap_err().code(),
        ErrorCode::InvalidArgument
    );
}

#[test]
fn wrong_pin_is_an_authentication_error_naming_the_ckr() {
    let tok = token("pin");
    let dir = tempfile::tempdir().unwrap();
    let wrong = dir.path().join("wrong.pin");
    std::fs::write(&wrong, "not-the-pin-5678\n").unwrap();
    let pairs = vec![
        ("module".to_string(), tok.module.display().to_string()),
        ("token_uri".into(), tok.uri()),
        ("pin_file".into(), wrong.display().to_string()),
    ];
    let e = Pkcs11Plugin::create(&PluginConfig::from_pairs(pairs)).unwrap_err();
    assert_eq!(e.code(), ErrorCode::Authentication, "{e}");
    assert!(e.message().contains("CKR_PIN_INCORRECT"), "{e}");
    assert!(!e.message().contains("not-the-pin-5678"));
}

#[test]
fn missing_objects_and_tokens_are_not_found() {
    let tok = token("missing");
    let mut pairs = base_config(&tok);
    pairs.push(("key_uri".into(), "pkcs11:object=nope".into()));
    pairs.push(("cert_uri".into(), "pkcs11:object=nope".into()));
    let p = plugin(pairs);
    let e = p
        .sign_digest(SignAlgorithm::EcdsaP256Sha256, &[0; 32])
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::NotFound, "{e}");
    assert!(e.message().contains("object=nope"), "{e}");
    assert_eq!(
        p.certificate_chain_pem().unwrap_err().code(),
        ErrorCode::NotFound
    );
    assert_eq!(p.common_name().unwrap_err().code(), ErrorCode::NotFound);

    let mut pairs = base_config(&tok);
    pairs[1].1 = "pkcs11:token=no-such-token-label".into();
    let e = Pkcs11Plugin::create(&PluginConfig::from_pairs(pairs)).unwrap_err();
    assert_eq!(e.code(), ErrorCode::NotFound, "{e}");

    let mut pairs = base_config(&tok);
    pairs[0].1 = "/nonexistent/libpkcs11.so".into();
    let e = Pkcs11Plugin::create(&PluginConfig::from_pairs(pairs)).unwrap_err();
    assert_eq!(e.code(), ErrorCode::NotFound, "{e}");
}

#[test]
fn two_instances_in_one_process_on_two_threads() {
    let tok = token("two");
    let out = init(&tok, "dev", "two-dev", None);
    let a = x509_plugin(&tok, &out);
    let b = x509_plugin(&tok, &out);
    let other = token("two-b");
    let out2 = init(&other, "dev", "other-dev", None);
    let c = x509_plugin(&other, &out2);

    let handles: Vec<_> = [a, b, c]
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            std::thread::spawn(move || {
                for n in 0..20u32 {
                    let msg = format!("thread {i} message {n}");
                    let sig = p
                        .sign_digest(
                            SignAlgorithm::EcdsaP256Sha256,
                            &Sha256::digest(msg.as_bytes()),
                        )
                        .unwrap();
                    let chain = p.certificate_chain_pem().unwrap();
                    assert!(verify_with_openssl(&chain, msg.as_bytes(), &sig));
                }
                p
            })
        })
        .collect();
    let mut plugins: Vec<Pkcs11Plugin> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    // Dropping one instance must not log out or finalize under the others.
    let last = plugins.pop().unwrap();
    let first = plugins.remove(0);
    drop(first);
    let second = plugins.remove(0);
    assert_eq!(second.common_name().unwrap(), "two-dev");
    assert!(second
        .sign_digest(SignAlgorithm::EcdsaP256Sha256, &[1; 32])
        .is_ok());
    assert_eq!(last.common_name().unwrap(), "other-dev");
}
