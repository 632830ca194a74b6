//! The DPS challenge round trip in software, and malformed-blob handling.

use dps_proto::tpm_registration_id as registration_id_from_ek;
use hsm_tpm_common::dps::{
    make_dps_challenge, make_dps_challenge_for_key, open_dps_challenge, parse_authentication_key,
    SoftwareTpmKeys,
};
use hsm_tpm_common::public::{
    ek_template_rsa2048, srk_template_rsa2048, with_rsa_modulus, PublicArea,
    IDENTITY_KEY_ATTRIBUTES,
};
use hsm_tpm_common::TpmWireError;
use rsa::traits::PublicKeyParts;
use rsa::RsaPrivateKey;
use std::sync::OnceLock;

struct Device {
    ek_private: RsaPrivateKey,
    ek_public: PublicArea,
    srk_private: RsaPrivateKey,
    srk_public: PublicArea,
}

impl Device {
    fn keys(&self) -> SoftwareTpmKeys<'_> {
        SoftwareTpmKeys {
            ek_private: &self.ek_private,
            ek_public: &self.ek_public,
            srk_private: &self.srk_private,
            srk_public: &self.srk_public,
        }
    }
}

fn new_device() -> Device {
    let mut rng = rand::thread_rng();
    let ek_private = RsaPrivateKey::new(&mut rng, 2048).unwrap();
    let srk_private = RsaPrivateKey::new(&mut rng, 2048).unwrap();
    let ek_public = with_rsa_modulus(ek_template_rsa2048(), ek_private.n().to_bytes_be());
    let srk_public = with_rsa_modulus(srk_template_rsa2048(), srk_private.n().to_bytes_be());
    Device {
        ek_private,
        ek_public,
        srk_private,
        srk_public,
    }
}

/// RSA key generation is slow; tests share devices.
fn device(i: usize) -> &'static Device {
    static DEVICES: OnceLock<Vec<Device>> = OnceLock::new();
    &DEVICES.get_or_init(|| vec![new_device(), new_device()])[i]
}

#[test]
fn challenge_opens_with_the_right_keys_and_yields_the_identity_key() {
    let d = device(0);
    let ek = d.ek_public.to_tpm2b().unwrap();
    let srk = d.srk_public.to_tpm2b().unwrap();
    let challenge = make_dps_challenge(&ek, &srk).unwrap();
    assert_eq!(challenge.identity_key.len(), 32);

    let parts = parse_authentication_key(&challenge.blob).unwrap();
    // Sizes of the real DPS sample: 2+32 HMAC + 2+16 credential, RSA-2048 seeds, 142-byte duplicate.
    assert_eq!(parts.id_object.len(), 52);
    assert_eq!(parts.ek_encrypted_secret.len(), 256);
    assert_eq!(parts.duplicate.len(), 142);
    assert_eq!(parts.srk_encrypted_secret.len(), 256);
    let public = parts.identity_public_area().unwrap();
    assert_eq!(public.object_attributes, IDENTITY_KEY_ATTRIBUTES);
    assert_eq!(parts.to_bytes().unwrap(), challenge.blob);

    let imported = open_dps_challenge(&d.keys(), &challenge.blob).unwrap();
    assert_eq!(imported.key, challenge.identity_key);
}

#[test]
fn challenge_for_another_device_is_refused() {
    let a = device(0);
    let b = device(1);
    let challenge = make_dps_challenge(
        &a.ek_public.to_tpm2b().unwrap(),
        &a.srk_public.to_tpm2b().unwrap(),
    )
    .unwrap();
    assert!(open_dps_challenge(&b.keys(), &challenge.blob).is_err());
    // Right EK, wrong SRK: the credential is bound to the SRK name.
    let mixed = SoftwareTpmKeys {
        srk_private: &b.srk_private,
        srk_public: &b.srk_public,
        ..a.keys()
    };
    assert!(matches!(
        open_dps_challenge(&mixed, &challenge.blob),
        Err(TpmWireError::IntegrityCheckFailed { .. })
    ));
}

#[test]
fn tampered_duplicate_is_refused() {
    let d = device(0);
    let challenge = make_dps_challenge_for_key(
        &d.ek_public.to_tpm2b().unwrap(),
        &d.srk_public.to_tpm2b().unwrap(),
        &[5u8; 32],
    )
    .unwrap();
    let parts = parse_authentication_key(&challenge.blob).unwrap();
    // Offset of the duplicate body: id object and EK secret with their size prefixes, plus
    // the duplicate's own size prefix.
    let dup_at = 2 + parts.id_object.len() + 2 + parts.ek_encrypted_secret.len() + 2;
    for flip in [dup_at + 2, dup_at + 40, dup_at + parts.duplicate.len() - 1] {
        let mut bad = challenge.blob.clone();
        bad[flip] ^= 0x01;
        assert!(matches!(
            open_dps_challenge(&d.keys(), &bad),
            Err(TpmWireError::IntegrityCheckFailed { .. })
        ));
    }
}

#[test]
fn every_truncation_and_inflated_size_is_a_typed_error() {
    let d = device(0);
    let challenge = make_dps_challenge(
        &d.ek_public.to_tpm2b().unwrap(),
        &d.srk_public.to_tpm2b().unwrap(),
    )
    .unwrap();
    for cut in 0..challenge.blob.len() {
        assert!(parse_authentication_key(&challenge.blob[..cut]).is_err());
    }
    let mut inflated = challenge.blob.clone();
    inflated[0] = 0xff;
    assert!(parse_authentication_key(&inflated).is_err());
    let mut trailing = challenge.blob.clone();
    trailing.push(0);
    assert!(matches!(
        parse_authentication_key(&trailing),
        Err(TpmWireError::TrailingBytes { count: 1, .. })
    ));
}

#[test]
fn bad_ek_input_is_refused() {
    let d = device(0);
    let srk = d.srk_public.to_tpm2b().unwrap();
    assert!(make_dps_challenge(&[], &srk).is_err());
    assert!(make_dps_challenge(&[0, 4, 1, 2, 3, 4], &srk).is_err());
    // A keyed-hash public is not an RSA storage key.
    let hmac_public = hsm_tpm_common::public::identity_key_public(vec![1; 32])
        .to_tpm2b()
        .unwrap();
    assert!(make_dps_challenge(&hmac_public, &srk).is_err());
}

#[test]
fn registration_id_is_52_lowercase_base32_chars() {
    let ek = device(0).ek_public.to_tpm2b().unwrap();
    let id = registration_id_from_ek(&ek);
    assert_eq!(id.len(), 52);
    assert!(id
        .chars()
        .all(|c| c.is_ascii_lowercase() || ('2'..='7').contains(&c)));
    assert_ne!(
        id,
        registration_id_from_ek(&device(1).ek_public.to_tpm2b().unwrap())
    );
}
