//! The adapter in this process against the project's C custom-HSM libraries: the good one
//! (signatures verify, keys import), and the bad ones (missing symbols, NULL members, NULL and
//! malformed returns) whose every failure is an error naming the function, never a crash. The
//! library that crashes is run under hsm-conformance (tests/conformance.rs).

mod support;

use hsm_fixture_azure_custom_hsm_c as fixture;
use hsm_plugin_sdk::{
    ErrorCode, HsmError, HsmPlugin, PluginConfig, SignAlgorithm, SymmetricKeyHsm, TpmHsm, X509Hsm,
};
use hsmkit_backend_azure_custom_hsm::AzureCustomHsmPlugin;
use std::os::unix::fs::PermissionsExt;
use support::Setup;

fn create(setup: &Setup, extra: &[(&str, &str)]) -> Result<AzureCustomHsmPlugin, HsmError> {
    let mut pairs = vec![
        ("library".to_string(), setup.library.display().to_string()),
        ("state_dir".to_string(), setup.state().display().to_string()),
    ];
    pairs.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    AzureCustomHsmPlugin::create(&PluginConfig::from_pairs(pairs))
}

fn expect_err<T: std::fmt::Debug>(r: Result<T, HsmError>, code: ErrorCode, needle: &str) {
    let e = r.expect_err("an error");
    assert_eq!(e.code(), code, "{e}");
    assert!(e.message().contains(needle), "`{needle}` not in: {e}");
}

#[test]
fn no_interface_symbol_is_refused_by_name() {
    let setup = Setup::new(fixture::NO_INTERFACE);
    expect_err(
        create(&setup, &[]),
        ErrorCode::InvalidArgument,
        "exports none of hsm_client_tpm_interface, hsm_client_x509_interface, hsm_client_key_interface",
    );
}

#[test]
fn a_null_table_member_is_refused_by_name() {
    let setup = Setup::new(fixture::NULL_MEMBER);
    expect_err(
        create(&setup, &[]),
        ErrorCode::InvalidArgument,
        "hsm_client_x509_interface() returned a table with NULL members (hsm_client_get_key); the C SDK refuses such a table",
    );
}

#[test]
fn null_and_malformed_returns_are_errors_naming_the_function() {
    let setup = Setup::new(fixture::NULL_RETURNS);
    let p = create(&setup, &[]).expect("a library with all three tables loads");
    expect_err(
        p.endorsement_key(),
        ErrorCode::Device,
        "hsm_client_get_ek returned success with a NULL output",
    );
    expect_err(
        p.storage_root_key(),
        ErrorCode::Device,
        "hsm_client_get_srk returned 4 bytes that are not a marshalled TPM2B_PUBLIC",
    );
    expect_err(
        p.sign_with_identity(b"x"),
        ErrorCode::Device,
        "hsm_client_sign_with_identity returned 5 bytes, not a 32-byte HMAC-SHA256",
    );
    expect_err(
        p.activate_identity_key(&[1, 2, 3]),
        ErrorCode::InvalidArgument,
        "not a DPS authenticationKey blob",
    );
    expect_err(
        p.certificate_chain_pem(),
        ErrorCode::Device,
        "hsm_client_get_cert returned NULL",
    );
    expect_err(
        p.common_name(),
        ErrorCode::Device,
        "hsm_client_get_common_name returned a string that is not UTF-8",
    );
    expect_err(
        p.sign_digest(SignAlgorithm::EcdsaP256Sha256, &[0; 32]),
        ErrorCode::Device,
        "hsm_client_get_key returned NULL",
    );
    expect_err(
        p.registration_id(),
        ErrorCode::Device,
        "hsm_client_key_create returned NULL",
    );
}

#[test]
fn a_missing_interface_symbol_means_not_supported() {
    let setup = Setup::new(fixture::SEGFAULT);
    let p = create(&setup, &[]).expect("a symmetric-key-only library loads");
    assert!(p.has_symmetric_key() && !p.has_tpm() && !p.has_x509());
    expect_err(
        p.endorsement_key(),
        ErrorCode::NotSupported,
        "does not export hsm_client_tpm_interface: it has no TPM interface",
    );
    expect_err(
        p.certificate_chain_pem(),
        ErrorCode::NotSupported,
        "does not export hsm_client_x509_interface: it has no X.509 interface",
    );
    assert_eq!(p.registration_id().expect("its name"), "segfault-device");
}

#[test]
fn a_library_others_can_write_is_refused() {
    let setup = Setup::new(fixture::NO_INTERFACE);
    std::fs::set_permissions(&setup.library, std::fs::Permissions::from_mode(0o666))
        .expect("chmod");
    expect_err(
        create(&setup, &[]),
        ErrorCode::InvalidArgument,
        "refused because",
    );
    expect_err(
        AzureCustomHsmPlugin::create(&PluginConfig::from_pairs([(
            "state_dir",
            setup.state().display().to_string(),
        )])),
        ErrorCode::InvalidArgument,
        "missing required setting `library`",
    );
}

#[test]
fn the_good_library_signs_imports_and_keeps_its_identity() {
    let setup = Setup::good();
    // The library reads its folder from the environment; this test process has only this one
    // (and no TPM for it: its TPM create must fail, by name).
    std::env::remove_var(fixture::ENV_TPM_PLUGIN);
    std::env::remove_var(fixture::ENV_CN);
    std::env::set_var(fixture::ENV_DIR, setup.root.path().join("library-state"));
    let p = create(&setup, &[("registration_id", "lib-test")]).expect("loads");
    assert!(p.has_x509() && p.has_symmetric_key() && p.has_tpm());

    // X.509: the signature verifies with the leaf's key.
    let chain = p.certificate_chain_pem().expect("chain");
    assert!(chain.starts_with("-----BEGIN CERTIFICATE-----"), "{chain}");
    assert_eq!(p.common_name().expect("cn"), "custom-hsm-x509");
    let digest = [0x5au8; 32];
    let der = p
        .sign_digest(SignAlgorithm::EcdsaP256Sha256, &digest)
        .expect("signs");
    let pem = std::fs::read_to_string(setup.root.path().join("library-state/x509.pem"))
        .expect("identity file");
    let key_pem: String = pem
        .split_inclusive('\n')
        .take_while(|l| !l.starts_with("-----BEGIN CERTIFICATE"))
        .collect();
    use p256::pkcs8::DecodePrivateKey;
    let secret = p256::SecretKey::from_pkcs8_pem(&key_pem).expect("PKCS#8 P-256");
    let vk = p256::ecdsa::VerifyingKey::from(p256::ecdsa::SigningKey::from(&secret));
    use p256::ecdsa::signature::hazmat::PrehashVerifier;
    vk.verify_prehash(
        &digest,
        &p256::ecdsa::Signature::from_der(&der).expect("DER"),
    )
    .expect("verifies with the library's key");
    expect_err(
        p.sign_digest(SignAlgorithm::RsaPkcs1Sha256, &digest),
        ErrorCode::NotSupported,
        "cannot sign",
    );

    // Symmetric: nothing held yet, then an imported key signs, in a second instance too.
    expect_err(
        p.sign(b"x"),
        ErrorCode::NotFound,
        "hsm_client_get_symm_key returned NULL",
    );
    let key = [0x0bu8; 20];
    p.import_key(None, &key).expect("imports");
    let expected = "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7";
    let q = create(&setup, &[]).expect("second instance");
    assert_eq!(q.registration_id().expect("the library's name"), "lib-test");
    let sig = q.sign(b"Hi There").expect("signs");
    assert_eq!(
        sig.iter().map(|b| format!("{b:02x}")).collect::<String>(),
        expected
    );
    expect_err(
        p.import_key(None, &[1; 4]),
        ErrorCode::InvalidArgument,
        "16 to 64 bytes",
    );

    // TPM: the test process set no TPM plugin for the library, so its create fails, by name.
    expect_err(
        p.endorsement_key(),
        ErrorCode::Device,
        "hsm_client_tpm_create returned NULL",
    );
}

#[test]
fn init_functions_run_once_per_process_and_their_failure_is_reported() {
    let setup = Setup::new(fixture::INIT_ONCE);
    let a = create(&setup, &[]).expect("loads");
    let b = create(&setup, &[]).expect("a second instance shares the loaded library");
    // hsm_client_x509_init ran once, although two instances were made.
    assert_eq!(a.common_name().expect("cn"), "x509-inits-1");
    assert_eq!(b.common_name().expect("cn"), "x509-inits-1");
    assert!(a.has_x509() && !a.has_tpm());
    expect_err(
        b.endorsement_key(),
        ErrorCode::Device,
        "hsm_client_tpm_init() returned 5 when the library was loaded",
    );
}
