//! The CSR for a DPS-issued certificate, signed by a loaded plugin's operational key: it names
//! the registration id, carries the plugin's public key and verifies with it.

use der::Decode;
use hsm_test_support::bundled_plugin;
use p256::ecdsa::signature::Verifier;
use p256::ecdsa::{DerSignature, VerifyingKey};
use p256::pkcs8::DecodePublicKey;
use provisioning_core::issuance::build_csr;
use provisioning_core::plugin::{LoadedPlugin, PluginInstance};
use x509_cert::request::CertReq;

#[test]
fn a_csr_signed_inside_each_software_plugin_verifies_with_its_operational_key() {
    for backend in ["symmetric", "dice", "tpm_sim"] {
        let plugin = LoadedPlugin::load(&bundled_plugin(backend)).unwrap();
        let state = tempfile::tempdir().unwrap();
        let config = [("state_dir", state.path().to_str().unwrap())];
        let inst = PluginInstance::create(&plugin, &config).unwrap();
        let ops = inst.operational_key().unwrap();
        let csr = build_csr(&ops, "hub-op", "device-7").unwrap();
        let req = CertReq::from_der(&csr).unwrap();
        assert_eq!(req.info.subject.to_string(), "CN=device-7", "{backend}");
        let spki = ops.public_key("hub-op").unwrap();
        assert_eq!(
            der::Encode::to_der(&req.info.public_key).unwrap(),
            &spki[..]
        );
        let tbs = der::Encode::to_der(&req.info).unwrap();
        let sig = DerSignature::try_from(req.signature.raw_bytes()).unwrap();
        let key = VerifyingKey::from_public_key_der(&spki).unwrap();
        key.verify(&tbs, &sig).unwrap();
        // Another request body does not verify with that signature.
        assert!(key.verify(b"something else", &sig).is_err(), "{backend}");
    }
}

#[test]
fn a_plugin_without_an_operational_key_cannot_make_a_csr() {
    let plugin = LoadedPlugin::load(std::path::Path::new(hsm_fixture_loader_c::ABI_1_0)).unwrap();
    let inst = PluginInstance::create(&plugin, &[("state_dir", "/nonexistent")]).unwrap();
    let e = inst.operational_key().unwrap_err();
    assert!(
        e.to_string().contains("cannot hold an operational key"),
        "{e}"
    );
}
