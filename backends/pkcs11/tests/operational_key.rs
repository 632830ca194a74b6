//! The operational key (ABI 1.2) on SoftHSM2: generated inside the token, never readable, its
//! signatures verified with the SubjectPublicKeyInfo it reports (RustCrypto p256), the chain
//! kept byte for byte as a token data object, delete, bad input, a device key that shares the
//! label left alone, and everything found again by another process.

mod common;

use common::{init_self_signed, instance, message, token, x509_settings};
use cryptoki::object::{Attribute, AttributeType, ObjectClass};
use hsm_plugin_sdk::{ErrorCode, HsmPlugin, OperationalKeyHsm, PluginConfig};
use hsmkit_backend_pkcs11::operational::{key_id, CHAIN_APPLICATION};
use hsmkit_backend_pkcs11::session::TokenSession;
use hsmkit_backend_pkcs11::softhsm::TestToken;
use hsmkit_backend_pkcs11::uri::Pkcs11Uri;
use hsmkit_backend_pkcs11::x509::P256_EC_PARAMS;
use hsmkit_backend_pkcs11::Pkcs11Plugin;
use p256::ecdsa::signature::hazmat::PrehashVerifier;
use p256::ecdsa::{Signature, VerifyingKey};
use p256::pkcs8::DecodePublicKey;
use provisioning_core::plugin::{PluginError, PluginErrorCode};
use sha2::{Digest, Sha256};

fn settings(tok: &TestToken) -> Vec<(String, String)> {
    vec![
        ("module".into(), tok.module.display().to_string()),
        ("token_uri".into(), tok.uri()),
        ("pin_file".into(), tok.pin_file.display().to_string()),
    ]
}

fn session(tok: &TestToken) -> TokenSession {
    TokenSession::open(
        &tok.module,
        &Pkcs11Uri::parse(&tok.uri()).unwrap(),
        &tok.pin,
    )
    .unwrap()
}

fn code(e: &PluginError) -> Option<PluginErrorCode> {
    e.code()
}

/// Verifies a DER signature of `digest` with a DER SubjectPublicKeyInfo, in software.
fn verifies(spki: &[u8], digest: &[u8; 32], der_sig: &[u8]) -> bool {
    let key = VerifyingKey::from_public_key_der(spki).expect("a P-256 SubjectPublicKeyInfo");
    let sig = Signature::from_der(der_sig).expect("a DER Ecdsa-Sig-Value");
    key.verify_prehash(digest, &sig).is_ok()
}

/// The key objects under `label` with the operational id.
fn key_objects(s: &TokenSession, class: ObjectClass, label: &str) -> usize {
    s.session()
        .find_objects(&[
            Attribute::Class(class),
            Attribute::Label(label.as_bytes().to_vec()),
            Attribute::Id(key_id(label)),
        ])
        .unwrap()
        .len()
}

fn chain_objects(s: &TokenSession, label: &str) -> usize {
    s.session()
        .find_objects(&[
            Attribute::Class(ObjectClass::DATA),
            Attribute::Label(label.as_bytes().to_vec()),
            Attribute::Application(CHAIN_APPLICATION.to_vec()),
        ])
        .unwrap()
        .len()
}

#[test]
fn operational_key_is_made_in_the_token_signs_and_keeps_its_chain() {
    let tok = token("op-abi");
    let p = instance(&settings(&tok)).unwrap();
    let ops = p
        .operational_key()
        .expect("the pkcs11 plugin offers the operational-key interface");
    let digest: [u8; 32] = Sha256::digest(b"certificate signing request").into();

    // Nothing yet: every call but create is NotFound, and nothing is created by them.
    for e in [
        ops.public_key("op").unwrap_err(),
        ops.sign_digest("op", &digest).unwrap_err(),
        ops.store_chain("op", "PEM").unwrap_err(),
        ops.chain("op").unwrap_err(),
        ops.delete_key("op").unwrap_err(),
    ] {
        assert_eq!(code(&e), Some(PluginErrorCode::NotFound), "{e:?}");
    }
    assert!(
        message(&ops.public_key("op").unwrap_err()).contains("`op`"),
        "the error names the label"
    );
    let s = session(&tok);
    assert_eq!(key_objects(&s, ObjectClass::PRIVATE_KEY, "op"), 0);

    let spki = ops.create_key("op").unwrap().to_vec();
    VerifyingKey::from_public_key_der(&spki).expect("a P-256 SubjectPublicKeyInfo");
    assert_eq!(ops.create_key("op").unwrap().to_vec(), spki, "the same key");
    assert_eq!(ops.public_key("op").unwrap().to_vec(), spki);
    assert_eq!(key_objects(&s, ObjectClass::PRIVATE_KEY, "op"), 1);
    assert_eq!(key_objects(&s, ObjectClass::PUBLIC_KEY, "op"), 1);
    let other = ops.create_key("op-2").unwrap().to_vec();
    assert_ne!(other, spki, "each label has its own key");

    // The token signs; the signature is DER and verifies with the reported key only.
    let sig = ops.sign_digest("op", &digest).unwrap().to_vec();
    assert_eq!(sig[0], 0x30, "DER, not raw r||s");
    assert!(verifies(&spki, &digest, &sig));
    assert!(!verifies(&other, &digest, &sig));
    let other_digest: [u8; 32] = Sha256::digest(b"something else").into();
    assert!(!verifies(&spki, &other_digest, &sig));

    // The chain: byte for byte (CRLF, trailing blanks, no final newline), replaced by a
    // second store, one data object throughout.
    let first = "-----BEGIN CERTIFICATE-----\r\nMIIB first \r\n-----END CERTIFICATE-----";
    ops.store_chain("op", first).unwrap();
    assert_eq!(ops.chain("op").unwrap(), first);
    let second = "-----BEGIN CERTIFICATE-----\nMIIB second\n-----END CERTIFICATE-----\n";
    ops.store_chain("op", second).unwrap();
    assert_eq!(ops.chain("op").unwrap(), second);
    assert_eq!(chain_objects(&s, "op"), 1);
    assert_eq!(
        code(&ops.chain("op-2").unwrap_err()),
        Some(PluginErrorCode::NotFound),
        "a chain belongs to its label"
    );

    // Delete removes the pair and the chain, and only those of its label.
    ops.delete_key("op").unwrap();
    assert_eq!(
        code(&ops.public_key("op").unwrap_err()),
        Some(PluginErrorCode::NotFound)
    );
    assert_eq!(
        code(&ops.chain("op").unwrap_err()),
        Some(PluginErrorCode::NotFound)
    );
    assert_eq!(key_objects(&s, ObjectClass::PRIVATE_KEY, "op"), 0);
    assert_eq!(key_objects(&s, ObjectClass::PUBLIC_KEY, "op"), 0);
    assert_eq!(chain_objects(&s, "op"), 0);
    assert_eq!(
        code(&ops.delete_key("op").unwrap_err()),
        Some(PluginErrorCode::NotFound)
    );
    assert_eq!(ops.public_key("op-2").unwrap().to_vec(), other);
    // A new key under the deleted label is a new key.
    assert_ne!(ops.create_key("op").unwrap().to_vec(), spki);
}

#[test]
fn the_private_key_is_sensitive_and_never_leaves_the_token() {
    let tok = token("op-attrs");
    let p = instance(&settings(&tok)).unwrap();
    p.operational_key().unwrap().create_key("op-attrs").unwrap();
    let s = session(&tok);
    let found = s
        .session()
        .find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Label(b"op-attrs".to_vec()),
            Attribute::Id(key_id("op-attrs")),
        ])
        .unwrap();
    let [private] = found.as_slice() else {
        panic!("one private key, found {}", found.len())
    };
    let attrs = s
        .session()
        .get_attributes(
            *private,
            &[
                AttributeType::Token,
                AttributeType::Private,
                AttributeType::Sensitive,
                AttributeType::Extractable,
                AttributeType::AlwaysSensitive,
                AttributeType::NeverExtractable,
                AttributeType::Sign,
                AttributeType::Derive,
            ],
        )
        .unwrap();
    let flag = |want: AttributeType| -> bool {
        attrs
            .iter()
            .find_map(|a| match (a, want) {
                (Attribute::Token(v), AttributeType::Token)
                | (Attribute::Private(v), AttributeType::Private)
                | (Attribute::Sensitive(v), AttributeType::Sensitive)
                | (Attribute::Extractable(v), AttributeType::Extractable)
                | (Attribute::AlwaysSensitive(v), AttributeType::AlwaysSensitive)
                | (Attribute::NeverExtractable(v), AttributeType::NeverExtractable)
                | (Attribute::Sign(v), AttributeType::Sign)
                | (Attribute::Derive(v), AttributeType::Derive) => Some(*v),
                _ => None,
            })
            .unwrap_or_else(|| panic!("{want:?} not reported"))
    };
    assert!(flag(AttributeType::Token), "a token object");
    assert!(flag(AttributeType::Private), "readable only after login");
    assert!(flag(AttributeType::Sensitive));
    assert!(!flag(AttributeType::Extractable));
    // Generated in the token, never anything else.
    assert!(flag(AttributeType::AlwaysSensitive));
    assert!(flag(AttributeType::NeverExtractable));
    assert!(flag(AttributeType::Sign));
    // No ECDH with it.
    assert!(!flag(AttributeType::Derive));
    assert_eq!(
        s.attribute_bytes(*private, AttributeType::EcParams)
            .unwrap(),
        P256_EC_PARAMS
    );
    // CKA_VALUE (the private scalar) cannot be read.
    let e = s
        .attribute_bytes(*private, AttributeType::Value)
        .expect_err("the private value must not be readable");
    assert_eq!(e.code(), ErrorCode::NotSupported, "{e}");
    assert!(e.message().contains("secret"), "{e}");
}

/// The plugin's own label check (the host checks too, so this goes through the library), and
/// the other refused inputs.
#[test]
fn bad_labels_and_empty_chains_are_refused() {
    let tok = token("op-bad");
    let p = Pkcs11Plugin::create(&PluginConfig::from_pairs(settings(&tok)))
        .unwrap_or_else(|e| panic!("{e}"));
    let long = "a".repeat(65);
    for bad in ["", ".", "..", "a/b", "a b", "ключ", long.as_str()] {
        for e in [
            p.create_operational_key(bad).unwrap_err(),
            p.operational_public_key(bad).unwrap_err(),
            p.sign_operational_digest(bad, &[1; 32]).unwrap_err(),
            p.store_operational_chain(bad, "PEM").unwrap_err(),
            p.operational_chain(bad).unwrap_err(),
            p.delete_operational_key(bad).unwrap_err(),
        ] {
            assert_eq!(e.code(), ErrorCode::InvalidArgument, "{bad:?}: {e}");
            assert!(e.message().contains("label"), "{e}");
        }
    }
    // Nothing was made for any of them.
    let s = session(&tok);
    assert!(s
        .session()
        .find_objects(&[Attribute::Class(ObjectClass::PRIVATE_KEY)])
        .unwrap()
        .is_empty());
    p.create_operational_key("op").unwrap();
    let e = p.store_operational_chain("op", "").unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidArgument, "{e}");

    // Through the host: refused before the plugin is called.
    let inst = instance(&settings(&tok)).unwrap();
    let e = inst
        .operational_key()
        .unwrap()
        .create_key("a/b")
        .unwrap_err();
    assert!(
        matches!(e, PluginError::InvalidOperationalKeyLabel { .. }),
        "{e:?}"
    );
}

/// A device key (made by `init_device`) labelled like the operational key is a different
/// object: create makes a new pair beside it, and delete leaves it signing.
#[test]
fn a_device_key_with_the_same_label_is_left_alone() {
    let tok = token("op-shared");
    let out = init_self_signed(&tok, "shared", "op-shared-device");
    let p = instance(&x509_settings(&tok, &out)).unwrap();
    let ops = p.operational_key().unwrap();
    let spki = ops.create_key("shared").unwrap().to_vec();
    let leaf =
        x509_cert::Certificate::load_pem_chain(out.certificate_pem.as_bytes()).unwrap()[0].clone();
    let device_spki = der::Encode::to_der(&leaf.tbs_certificate.subject_public_key_info).unwrap();
    assert_ne!(spki, device_spki, "a new key, not the device's");
    ops.delete_key("shared").unwrap();
    let digest: [u8; 32] = Sha256::digest(b"device").into();
    let sig = p
        .x509()
        .unwrap()
        .sign_digest(
            provisioning_core::plugin::SignAlgorithm::EcdsaP256Sha256,
            &digest,
        )
        .expect("the device key is still there");
    assert!(verifies(&device_spki, &digest, &sig));
    assert_eq!(
        p.x509().unwrap().certificate_chain_pem().unwrap(),
        out.certificate_pem
    );
}

/// Instances on several threads creating the same label at once get one key pair between
/// them, not one each.
#[test]
fn concurrent_creates_make_one_pair() {
    let tok = token("op-race");
    let instances: Vec<_> = (0..4).map(|_| instance(&settings(&tok)).unwrap()).collect();
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(instances.len()));
    let keys: Vec<Vec<u8>> = instances
        .into_iter()
        .map(|p| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                p.operational_key()
                    .unwrap()
                    .create_key("race")
                    .unwrap()
                    .to_vec()
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .collect();
    assert!(keys.windows(2).all(|w| w[0] == w[1]), "one key for all");
    let s = session(&tok);
    assert_eq!(key_objects(&s, ObjectClass::PRIVATE_KEY, "race"), 1);
    assert_eq!(key_objects(&s, ObjectClass::PUBLIC_KEY, "race"), 1);
}

/// Set in the child process of [`the_key_and_chain_survive_into_another_process`].
const CHILD_ENV: &str = "HSMKIT_PKCS11_OPKEY_CHILD";

/// The key and chain made through one instance are found by another process on the same
/// token (token objects, not session state): this test runs itself again as a child (the
/// SoftHSM2 configuration is inherited), which reads the public key and chain and signs.
#[test]
fn the_key_and_chain_survive_into_another_process() {
    if let Ok(config) = std::env::var(CHILD_ENV) {
        // The child: print what it finds for the parent to check.
        let pairs: Vec<(String, String)> = serde_json::from_str(&config).unwrap();
        let p = instance(&pairs).unwrap();
        let ops = p.operational_key().unwrap();
        let digest: [u8; 32] = Sha256::digest(b"from the child").into();
        let out = serde_json::json!({
            "spki": base64_encode(&ops.public_key("persist").unwrap()),
            "chain": ops.chain("persist").unwrap(),
            "sig": base64_encode(&ops.sign_digest("persist", &digest).unwrap()),
        });
        println!("CHILD-RESULT {out}");
        return;
    }
    let tok = token("op-persist");
    let chain = "-----BEGIN CERTIFICATE-----\nY2hpbGQ=\n-----END CERTIFICATE-----\n";
    let spki = {
        let p = instance(&settings(&tok)).unwrap();
        let ops = p.operational_key().unwrap();
        let spki = ops.create_key("persist").unwrap().to_vec();
        ops.store_chain("persist", chain).unwrap();
        spki
    };
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "the_key_and_chain_survive_into_another_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, serde_json::to_string(&settings(&tok)).unwrap())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "child failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let line = stdout
        .lines()
        .find_map(|l| l.split_once("CHILD-RESULT ").map(|(_, result)| result))
        .unwrap_or_else(|| panic!("no result from the child:\n{stdout}"));
    let got: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(got["spki"], base64_encode(&spki), "the same key");
    assert_eq!(got["chain"], chain, "the same chain");
    let sig = base64_decode(got["sig"].as_str().unwrap());
    let digest: [u8; 32] = Sha256::digest(b"from the child").into();
    assert!(verifies(&spki, &digest, &sig), "the child signed with it");
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap()
}
