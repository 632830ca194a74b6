//! The plugin on a second real PKCS#11 module: tpm2-pkcs11 1.9 on a private swtpm behind a
//! private tpm2-abrmd on a private D-Bus (issue 13). The harness starts all of it and fails
//! with the packages to install when a tool is missing. One token per process at a time (the
//! module's settings are environment variables), so this binary's tests take turns.

use hsm_plugin_sdk::{ErrorCode, HsmPlugin, PluginConfig, SignAlgorithm, SymmetricKeyHsm, X509Hsm};
use hsmkit_backend_pkcs11::config::PinSource;
use hsmkit_backend_pkcs11::provision::{init_device, InitOptions, InitOutcome};
use hsmkit_backend_pkcs11::tpm2_pkcs11::Tpm2Pkcs11Token;
use hsmkit_backend_pkcs11::uri::Pkcs11Uri;
use hsmkit_backend_pkcs11::Pkcs11Plugin;
use sha2::{Digest, Sha256};

fn start(label: &str) -> (Tpm2Pkcs11Token, InitOutcome) {
    let token = Tpm2Pkcs11Token::start(label).unwrap_or_else(|e| panic!("{e}"));
    let out = init_device(&InitOptions {
        module: token.module.clone(),
        token: Pkcs11Uri::parse(&token.uri()).unwrap_or_else(|e| panic!("{e}")),
        pin: PinSource::File(token.pin_file.clone()),
        label: "device".into(),
        id: None,
        common_name: "tpm2-device".into(),
        ca: None,
        validity_days: 30,
    })
    .unwrap_or_else(|e| panic!("device init on tpm2-pkcs11: {e}"));
    (token, out)
}

fn config(token: &Tpm2Pkcs11Token, out: &InitOutcome) -> PluginConfig {
    PluginConfig::from_pairs(vec![
        ("module".to_string(), token.module.display().to_string()),
        ("token_uri".to_string(), token.uri()),
        ("pin_file".to_string(), token.pin_file.display().to_string()),
        ("key_uri".to_string(), out.key_uri.clone()),
        ("cert_uri".to_string(), out.cert_uri.clone()),
        ("registration_id".to_string(), "tpm2-device".to_string()),
    ])
}

/// The key generated in the TPM signs, and the signature verifies against the certificate the
/// token holds; an HMAC key cannot be imported, which is not-supported (the module cannot hold
/// generic secrets: `CKR_ATTRIBUTE_VALUE_INVALID` from `C_CreateObject`), not a bad argument.
#[test]
fn signs_with_the_tpm_key_and_hmac_import_is_not_supported() {
    let (token, out) = start("t2p-sign");
    let plugin = Pkcs11Plugin::create(&config(&token, &out)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(plugin.common_name().unwrap(), "tpm2-device");
    let chain = plugin.certificate_chain_pem().unwrap();
    assert_eq!(chain, out.certificate_pem);
    let digest = Sha256::digest(b"tls transcript");
    let sig = plugin
        .sign_digest(SignAlgorithm::EcdsaP256Sha256, &digest)
        .unwrap_or_else(|e| panic!("{e}"));
    let leaf = openssl::x509::X509::from_pem(chain.as_bytes()).unwrap();
    let key = leaf.public_key().unwrap();
    let mut v = openssl::sign::Verifier::new(openssl::hash::MessageDigest::sha256(), &key).unwrap();
    v.update(b"tls transcript").unwrap();
    assert!(v.verify(&sig).unwrap(), "the TPM signature verifies");

    let e = plugin.import_key(None, &[0x11; 32]).unwrap_err();
    assert_eq!(e.code(), ErrorCode::NotSupported, "{e}");
    assert!(e.message().contains("cannot hold HMAC keys"), "{e}");
    assert!(
        e.message()
            .contains("CKR_ATTRIBUTE_VALUE_INVALID from C_CreateObject"),
        "{e}"
    );
    // An empty key is still the caller's mistake.
    let e = plugin.import_key(None, &[]).unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidArgument, "{e}");
    // The X.509 side is untouched by the refused import.
    plugin
        .sign_digest(SignAlgorithm::EcdsaP256Sha256, &digest)
        .unwrap_or_else(|e| panic!("{e}"));
}

/// Instances created and dropped on many threads at once: tpm2-pkcs11 fails a `C_Login` that
/// overlaps another thread's `C_CloseSession` (`CKR_GENERAL_ERROR`), which the plugin prevents
/// by serializing session open, login and close per module. Like the harness's
/// `concurrency.instance-per-thread`, but 25 rounds of 6 threads that start together, each
/// creating an instance, reading the identity and dropping it. A failure is recorded and the
/// thread goes on, so that no thread is left waiting at the barrier.
#[test]
fn instances_on_many_threads_never_race_login_against_close() {
    const THREADS: usize = 6;
    let (token, out) = start("t2p-race");
    let config = config(&token, &out);
    let barrier = std::sync::Barrier::new(THREADS);
    let failures = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let (config, barrier, failures) = (&config, &barrier, &failures);
            s.spawn(move || {
                for round in 0..25 {
                    barrier.wait();
                    let result = Pkcs11Plugin::create(config)
                        .and_then(|p| (0..5).try_for_each(|_| p.common_name().map(drop)));
                    if let Err(e) = result {
                        let mut f = failures.lock().unwrap_or_else(|p| p.into_inner());
                        f.push(format!("round {round}, thread {t}: {e}"));
                    }
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap_or_else(|p| p.into_inner());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
