//! The simulated TPM through its Rust types: keys, persistence, the DPS flow, errors.

use std::os::unix::fs::PermissionsExt;

use dps_proto::tpm_registration_id as registration_id_from_ek;
use hmac::{Hmac, Mac};
use hsm_plugin_sdk::{ErrorCode, HsmPlugin, PluginConfig, TpmHsm};
use hsm_tpm_common::dps::{make_dps_challenge, make_dps_challenge_for_key};
use hsm_tpm_common::public::{PublicArea, EK_ATTRIBUTES, SRK_ATTRIBUTES};
use hsmkit_backend_tpm_sim::TpmSimPlugin;
use sha2::Sha256;

fn sim_in(dir: &std::path::Path) -> TpmSimPlugin {
    TpmSimPlugin::create(&PluginConfig::from_pairs([(
        "state_dir",
        dir.to_str().unwrap(),
    )]))
    .unwrap()
}

fn software_hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap();
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

fn challenge_for(sim: &TpmSimPlugin, key: &[u8]) -> Vec<u8> {
    let ek = sim.endorsement_key().unwrap();
    let srk = sim.storage_root_key().unwrap();
    make_dps_challenge_for_key(&ek, &srk, key).unwrap().blob
}

#[test]
fn ek_and_srk_follow_the_templates_and_persist_privately() {
    let dir = tempfile::tempdir().unwrap();
    let sim = sim_in(dir.path());
    let ek_bytes = sim.endorsement_key().unwrap();
    let srk_bytes = sim.storage_root_key().unwrap();
    let ek = PublicArea::from_tpm2b(&ek_bytes).unwrap();
    let srk = PublicArea::from_tpm2b(&srk_bytes).unwrap();
    assert_eq!(ek.object_attributes, EK_ATTRIBUTES);
    assert_eq!(srk.object_attributes, SRK_ATTRIBUTES);
    assert_eq!(
        rsa::traits::PublicKeyParts::size(&ek.rsa_public_key().unwrap()),
        256
    );
    assert_ne!(ek_bytes, srk_bytes);
    assert_eq!(sim.endorsement_key().unwrap(), ek_bytes);

    let file = sim.state_file().to_path_buf();
    assert_eq!(file, dir.path().join("tpm-sim/state"));
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let folder = file.parent().unwrap();
    assert_eq!(
        std::fs::metadata(folder).unwrap().permissions().mode() & 0o777,
        0o700
    );
    drop(sim);

    let again = sim_in(dir.path());
    assert_eq!(again.endorsement_key().unwrap(), ek_bytes);
    assert_eq!(again.storage_root_key().unwrap(), srk_bytes);
    assert_eq!(registration_id_from_ek(&ek_bytes).len(), 52);
}

#[test]
fn separate_state_dirs_and_instances_are_separate_tpms() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let ek_a = sim_in(a.path()).endorsement_key().unwrap();
    let ek_b = sim_in(b.path()).endorsement_key().unwrap();
    assert_ne!(ek_a, ek_b);
    let named = TpmSimPlugin::create(&PluginConfig::from_pairs([
        ("state_dir", a.path().to_str().unwrap()),
        ("instance", "device-7"),
    ]))
    .unwrap()
    .endorsement_key()
    .unwrap();
    assert_ne!(named, ek_a);
    let bad = TpmSimPlugin::create(&PluginConfig::from_pairs([
        ("state_dir", a.path().to_str().unwrap()),
        ("instance", "../escape"),
    ]));
    assert_eq!(bad.unwrap_err().code(), ErrorCode::InvalidArgument);
}

#[test]
fn dps_flow_signs_like_software_hmac_for_any_length_and_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let sim = sim_in(dir.path());
    let err = sim.sign_with_identity(b"x").unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidState);

    let ek = sim.endorsement_key().unwrap();
    let srk = sim.storage_root_key().unwrap();
    let challenge = make_dps_challenge(&ek, &srk).unwrap();
    sim.activate_identity_key(&challenge.blob).unwrap();
    let big = vec![0xa5u8; 1 << 20];
    for data in [&b""[..], b"scope\n1700000000", &big] {
        assert_eq!(
            sim.sign_with_identity(data).unwrap(),
            software_hmac(&challenge.identity_key, data)
        );
    }
    drop(sim);
    let again = sim_in(dir.path());
    assert_eq!(
        again.sign_with_identity(b"after restart").unwrap(),
        software_hmac(&challenge.identity_key, b"after restart")
    );
}

#[test]
fn reimport_replaces_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let sim = sim_in(dir.path());
    let first = challenge_for(&sim, &[1u8; 32]);
    let second = challenge_for(&sim, &[2u8; 32]);
    sim.activate_identity_key(&first).unwrap();
    assert_eq!(
        sim.sign_with_identity(b"d").unwrap(),
        software_hmac(&[1u8; 32], b"d")
    );
    sim.activate_identity_key(&second).unwrap();
    assert_eq!(
        sim.sign_with_identity(b"d").unwrap(),
        software_hmac(&[2u8; 32], b"d")
    );
    drop(sim);
    assert_eq!(
        sim_in(dir.path()).sign_with_identity(b"d").unwrap(),
        software_hmac(&[2u8; 32], b"d")
    );
}

#[test]
fn foreign_or_malformed_blobs_are_refused_and_keep_the_old_key() {
    let mine = tempfile::tempdir().unwrap();
    let other = tempfile::tempdir().unwrap();
    let sim = sim_in(mine.path());
    let stranger = sim_in(other.path());
    let good = challenge_for(&sim, &[9u8; 32]);
    sim.activate_identity_key(&good).unwrap();

    let foreign = challenge_for(&stranger, &[3u8; 32]);
    let err = sim.activate_identity_key(&foreign).unwrap_err();
    assert_eq!(err.code(), ErrorCode::Authentication);

    for cut in [0, 1, 10, good.len() / 2, good.len() - 1] {
        let err = sim.activate_identity_key(&good[..cut]).unwrap_err();
        assert_eq!(err.code(), ErrorCode::InvalidArgument, "cut {cut}");
    }
    assert_eq!(
        sim.sign_with_identity(b"d").unwrap(),
        software_hmac(&[9u8; 32], b"d")
    );
}

#[test]
fn corrupt_or_exposed_state_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let path = sim_in(dir.path()).state_file().to_path_buf();
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.truncate(bytes.len() - 3);
    std::fs::write(&path, &bytes).unwrap();
    let err = TpmSimPlugin::open(path.clone()).unwrap_err();
    assert_eq!(err.code(), ErrorCode::Device);
    assert!(err.message().contains("corrupt"));

    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = TpmSimPlugin::open(path).unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidArgument);
}
