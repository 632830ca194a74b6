//! The tpm2 plugin against a real TPM 2.0 implementation: swtpm, started per test on free
//! loopback ports (fails with an install hint when swtpm is missing). Includes the
//! cross-checks that tie the wire library to a real TPM in both directions.

use dps_proto::tpm_registration_id as registration_id_from_ek;
use hmac::{Hmac, Mac};
use hsm_plugin_sdk::{ErrorCode, HsmPlugin, PluginConfig, TpmHsm};
use hsm_tpm_common::dps::{make_dps_challenge, make_dps_challenge_for_key};
use hsm_tpm_common::public::{
    ek_template_rsa2048, srk_template_rsa2048, with_rsa_modulus, PublicArea, EK_ATTRIBUTES,
    SRK_ATTRIBUTES,
};
use hsm_tpm_common::swtpm::Swtpm;
use hsmkit_backend_tpm2::Tpm2Plugin;
use rsa::traits::PublicKeyParts;
use sha2::Sha256;

fn start_swtpm() -> Swtpm {
    Swtpm::start().unwrap_or_else(|e| panic!("cannot run the swtpm tests: {e}"))
}

fn plugin(tpm: &Swtpm, extra: &[(&str, &str)]) -> Tpm2Plugin {
    let tcti = tpm.tcti();
    let mut pairs = vec![("tcti", tcti.as_str())];
    pairs.extend_from_slice(extra);
    Tpm2Plugin::create(&PluginConfig::from_pairs(pairs)).unwrap()
}

/// The EK and SRK (TPM2B_PUBLIC) of some other device, made in software.
fn software_ek_and_srk() -> (Vec<u8>, Vec<u8>) {
    let mut rng = rand::thread_rng();
    let mut public = |template| {
        let key = rsa::RsaPrivateKey::new(&mut rng, 2048).unwrap();
        with_rsa_modulus(template, key.n().to_bytes_be())
            .to_tpm2b()
            .unwrap()
    };
    (
        public(ek_template_rsa2048()),
        public(srk_template_rsa2048()),
    )
}

/// Transient objects and sessions currently loaded in the TPM (handles 0x80..., 0x02..., 0x03...).
fn loaded_transients_and_sessions(p: &Tpm2Plugin) -> Vec<u32> {
    p.with_device(|device| Ok(loaded_in(device.context())))
        .unwrap()
}

fn loaded_in(ctx: &mut tss_esapi::Context) -> Vec<u32> {
    use tss_esapi::constants::CapabilityType;
    use tss_esapi::structures::CapabilityData;
    let mut found = Vec::new();
    for first in [0x8000_0000u32, 0x0200_0000, 0x0300_0000] {
        let (data, _) = ctx
            .get_capability(CapabilityType::Handles, first, 64)
            .unwrap();
        if let CapabilityData::Handles(list) = data {
            found.extend(
                list.iter()
                    .map(|h| u32::from(*h))
                    .filter(|h| h >> 24 == first >> 24),
            );
        }
    }
    found
}

fn software_hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap();
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

#[test]
fn ek_and_srk_are_created_once_follow_templates_and_survive_restart() {
    let mut tpm = start_swtpm();
    let p = plugin(&tpm, &[]);
    let ek = p.endorsement_key().unwrap();
    let srk = p.storage_root_key().unwrap();
    let ek_area = PublicArea::from_tpm2b(&ek).unwrap();
    let srk_area = PublicArea::from_tpm2b(&srk).unwrap();
    assert_eq!(ek_area.object_attributes, EK_ATTRIBUTES);
    assert_eq!(srk_area.object_attributes, SRK_ATTRIBUTES);
    assert_ne!(ek, srk);
    assert_eq!(registration_id_from_ek(&ek).len(), 52);
    drop(p);

    tpm.restart().unwrap();
    let again = plugin(&tpm, &[]);
    assert_eq!(again.endorsement_key().unwrap(), ek);
    assert_eq!(again.storage_root_key().unwrap(), srk);
}

#[test]
fn wire_library_challenge_is_accepted_by_swtpm_and_hmac_matches_software() {
    let tpm = start_swtpm();
    let p = plugin(&tpm, &[]);
    assert_eq!(
        p.sign_with_identity(b"too early").unwrap_err().code(),
        ErrorCode::InvalidState
    );
    let ek = p.endorsement_key().unwrap();
    let srk = p.storage_root_key().unwrap();
    let challenge = make_dps_challenge(&ek, &srk).unwrap();
    p.activate_identity_key(&challenge.blob).unwrap();

    let long: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
    let exact = vec![7u8; 1024];
    for data in [
        &b""[..],
        b"0ne00000A0A/registrations/abc\n1700000000",
        &exact,
        &long,
    ] {
        assert_eq!(
            p.sign_with_identity(data).unwrap(),
            software_hmac(&challenge.identity_key, data),
            "input of {} bytes",
            data.len()
        );
    }
    // After the sequence path the plugin reconnects transparently.
    assert_eq!(
        p.sign_with_identity(b"again").unwrap(),
        software_hmac(&challenge.identity_key, b"again")
    );
    assert_eq!(loaded_transients_and_sessions(&p), Vec::<u32>::new());
}

#[test]
fn reimport_replaces_the_persisted_key_and_it_survives_restart() {
    let mut tpm = start_swtpm();
    let p = plugin(&tpm, &[("identity_handle", "0x81000123")]);
    let ek = p.endorsement_key().unwrap();
    let srk = p.storage_root_key().unwrap();
    let first = make_dps_challenge_for_key(&ek, &srk, &[1u8; 32]).unwrap();
    let second = make_dps_challenge_for_key(&ek, &srk, &[2u8; 32]).unwrap();
    p.activate_identity_key(&first.blob).unwrap();
    assert_eq!(
        p.sign_with_identity(b"d").unwrap(),
        software_hmac(&[1u8; 32], b"d")
    );
    p.activate_identity_key(&second.blob).unwrap();
    assert_eq!(
        p.sign_with_identity(b"d").unwrap(),
        software_hmac(&[2u8; 32], b"d")
    );
    drop(p);
    tpm.restart().unwrap();
    let again = plugin(&tpm, &[("identity_handle", "0x81000123")]);
    assert_eq!(
        again.sign_with_identity(b"d").unwrap(),
        software_hmac(&[2u8; 32], b"d")
    );
    // The default handle was never used.
    let default = plugin(&tpm, &[]);
    drop(again);
    assert_eq!(
        default.sign_with_identity(b"d").unwrap_err().code(),
        ErrorCode::InvalidState
    );
}

/// Replacing the identity evicts the old key and persists the new one at the same handle on the
/// same ESYS context. ESYS keeps a record (with the object's name) per TPM handle: if the
/// evicted key's record is not closed, the next look-up of the handle
/// (`Esys_TR_FromTPMPublic`) can find it and fail ("Name mismatch between two calls of
/// Esys_TR_FromTPMPublic"), as it did for operational keys. This replaces the identity three
/// times on one instance, with and without a signature (which caches the handle) in between;
/// without the close in `replace_identity` the replacements still work, and the final look-up
/// is what fails.
#[test]
fn repeated_reimports_on_one_instance_replace_the_identity_each_time() {
    let tpm = start_swtpm();
    let p = plugin(&tpm, &[("identity_handle", "0x81000124")]);
    let ek = p.endorsement_key().unwrap();
    let srk = p.storage_root_key().unwrap();
    let keys: Vec<[u8; 32]> = (1..=4u8).map(|i| [i; 32]).collect();
    for (i, key) in keys.iter().enumerate() {
        let challenge = make_dps_challenge_for_key(&ek, &srk, key).unwrap();
        p.activate_identity_key(&challenge.blob)
            .unwrap_or_else(|e| panic!("activation {} of 4: {}", i + 1, e.message()));
        // The third key is replaced before any signature looked it up.
        if i != 2 {
            assert_eq!(
                p.sign_with_identity(b"d").unwrap(),
                software_hmac(key, b"d"),
                "signature after activation {}",
                i + 1
            );
        }
    }
    assert_eq!(loaded_transients_and_sessions(&p), Vec::<u32>::new());
    // The plugin itself keeps the newest record open, which hides records of replaced keys
    // left behind (a look-up finds the newest record for a handle first). Close it, as the
    // operational-key code closes its records, and look the handle up again: a stale record
    // of a replaced key would now be found, and its name would not match the TPM's.
    p.with_device(|device| {
        let current = device.identity_key()?;
        device.close(current);
        let handle = tss_esapi::handles::TpmHandle::Persistent(
            tss_esapi::handles::PersistentTpmHandle::new(0x8100_0124).unwrap(),
        );
        let again = device
            .context()
            .tr_from_tpm_public(handle)
            .unwrap_or_else(|e| panic!("looking the identity handle up again: {e}"));
        device.close(again);
        Ok(())
    })
    .unwrap();
}

#[test]
fn foreign_and_malformed_blobs_are_refused_without_losing_the_key() {
    let tpm = start_swtpm();
    let p = plugin(&tpm, &[]);
    let ek = p.endorsement_key().unwrap();
    let srk = p.storage_root_key().unwrap();
    let good = make_dps_challenge_for_key(&ek, &srk, &[9u8; 32]).unwrap();
    p.activate_identity_key(&good.blob).unwrap();

    let (other_ek, other_srk) = software_ek_and_srk();
    let foreign = make_dps_challenge(&other_ek, &other_srk).unwrap();
    let err = p.activate_identity_key(&foreign.blob).unwrap_err();
    assert_eq!(err.code(), ErrorCode::Authentication, "{}", err.message());

    for cut in [0, 3, good.blob.len() / 2, good.blob.len() - 1] {
        let err = p.activate_identity_key(&good.blob[..cut]).unwrap_err();
        assert_eq!(err.code(), ErrorCode::InvalidArgument);
    }
    assert_eq!(
        p.sign_with_identity(b"d").unwrap(),
        software_hmac(&[9u8; 32], b"d")
    );
}

#[test]
fn hierarchy_auth_from_config_is_used() {
    let tpm = start_swtpm();
    {
        let p = plugin(&tpm, &[]);
        p.with_device(|device| {
            let ctx = device.context();
            for handle in [
                tss_esapi::handles::AuthHandle::Owner,
                tss_esapi::handles::AuthHandle::Endorsement,
            ] {
                ctx.execute_with_session(
                    Some(tss_esapi::interface_types::session_handles::AuthSession::Password),
                    |ctx| {
                        ctx.hierarchy_change_auth(
                            handle,
                            tss_esapi::structures::Auth::try_from(b"hunter2".to_vec()).unwrap(),
                        )
                    },
                )
                .unwrap();
            }
            Ok(())
        })
        .unwrap();
    }
    let wrong = plugin(&tpm, &[]);
    let err = wrong.endorsement_key().unwrap_err();
    assert_eq!(err.code(), ErrorCode::Authentication, "{}", err.message());
    assert!(!err.message().contains("hunter2"));
    drop(wrong);

    let p = plugin(
        &tpm,
        &[
            ("owner_auth", "hunter2"),
            ("endorsement_auth", "hex:68756e74657232"),
        ],
    );
    let ek = p.endorsement_key().unwrap();
    let srk = p.storage_root_key().unwrap();
    let challenge = make_dps_challenge(&ek, &srk).unwrap();
    p.activate_identity_key(&challenge.blob).unwrap();
    assert_eq!(
        p.sign_with_identity(b"x").unwrap(),
        software_hmac(&challenge.identity_key, b"x")
    );
}

#[test]
fn unreachable_tpm_is_a_device_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let tcti = format!("swtpm:host=127.0.0.1,port={port}");
    let p = Tpm2Plugin::create(&PluginConfig::from_pairs([("tcti", tcti.as_str())])).unwrap();
    let err = p.endorsement_key().unwrap_err();
    assert_eq!(err.code(), ErrorCode::Device);
    assert!(err.message().contains("TCTI"), "{}", err.message());
}
