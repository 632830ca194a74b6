//! The `hsmkit-pkcs11` tool end to end: `init --json` and `import-hmac`, then the plugin uses
//! what the tool stored. Alone in its binary because the tool is a second process on the token.

use hmac::{Hmac, Mac};
use hsm_plugin_sdk::{HsmPlugin, PluginConfig, SignAlgorithm, SymmetricKeyHsm, X509Hsm};
use hsmkit_backend_pkcs11::softhsm::create_token;
use hsmkit_backend_pkcs11::Pkcs11Plugin;
use openssl::x509::X509;
use sha2::{Digest, Sha256};
use std::process::{Command, Output};

/// The tool exited 0; its stderr otherwise.
fn assert_succeeded(out: &Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn init_and_import_hmac_with_the_tool() {
    let tok = create_token("cli").unwrap_or_else(|e| panic!("{e}"));
    let tool = env!("CARGO_BIN_EXE_hsmkit-pkcs11");
    let module = tok.module.display().to_string();
    let pin_file = tok.pin_file.display().to_string();
    let token_uri = tok.uri();
    // `init` with the token and its PIN file; the caller adds the device's arguments.
    let init = || {
        let mut c = Command::new(tool);
        c.args([
            "init",
            "--module",
            &module,
            "--token-uri",
            &token_uri,
            "--pin-file",
            &pin_file,
        ]);
        c
    };
    let out = init()
        .args([
            "--label",
            "cli-dev",
            "--common-name",
            "cli-device-7",
            "--json",
        ])
        .output()
        .unwrap();
    assert_succeeded(&out);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["registrationId"], "cli-device-7");
    let key_uri = json["keyUri"].as_str().unwrap().to_string();
    let cert_uri = json["certUri"].as_str().unwrap().to_string();

    // Running init again with the same label refuses instead of making duplicates.
    let again = init()
        .args(["--label", "cli-dev", "--common-name", "x"])
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already holds"));

    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("key.b64");
    let key = [0x5au8; 64];
    use base64::Engine;
    std::fs::write(
        &key_file,
        base64::engine::general_purpose::STANDARD.encode(key),
    )
    .unwrap();
    // The PIN from an environment variable, given to the child only (setting it in this
    // multi-threaded test process would race other threads' environment reads).
    let out = Command::new(tool)
        .env("HSMKIT_TEST_CLI_PIN", &tok.pin)
        .args([
            "import-hmac",
            "--module",
            &module,
            "--token-uri",
            &tok.uri(),
            "--pin-env",
            "HSMKIT_TEST_CLI_PIN",
        ])
        .args([
            "--label",
            "cli-sym",
            "--key-file",
            key_file.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_succeeded(&out);

    let config = PluginConfig::from_pairs([
        ("module", module.clone()),
        ("token_uri", tok.uri()),
        ("pin_file", pin_file.clone()),
        ("key_uri", key_uri),
        ("cert_uri", cert_uri),
        ("hmac_key_uri", "pkcs11:object=cli-sym".to_string()),
    ]);
    let p = Pkcs11Plugin::create(&config).unwrap();
    assert_eq!(p.common_name().unwrap(), "cli-device-7");
    let chain = p.certificate_chain_pem().unwrap();
    assert_eq!(chain, json["certificate"].as_str().unwrap());
    let cert = X509::from_pem(chain.as_bytes()).unwrap();
    let sig = p
        .sign_digest(SignAlgorithm::EcdsaP256Sha256, &Sha256::digest(b"hello"))
        .unwrap();
    let public = cert.public_key().unwrap();
    let mut v =
        openssl::sign::Verifier::new(openssl::hash::MessageDigest::sha256(), &public).unwrap();
    v.update(b"hello").unwrap();
    assert!(v.verify(&sig).unwrap());

    assert_eq!(p.registration_id().unwrap(), "cli-sym");
    let mut soft = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    soft.update(b"data");
    assert_eq!(
        p.sign(b"data").unwrap(),
        soft.finalize().into_bytes().to_vec()
    );
}
