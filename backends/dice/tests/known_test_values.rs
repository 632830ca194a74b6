//! open-dice's published known test values, reproduced.
//!
//! Source: google/open-dice `include/dice/known_test_values.h` (the revision whose
//! `kExpectedX509P256Cert_ZeroInput` is the 721-byte ecdsa-with-SHA256 certificate with
//! profile name "opendice.example", produced by the boringssl P-256 ops). The certificate is
//! stored byte for byte in `tests/data/open_dice_x509_p256_zero_input.der`; the CDIs below are
//! `kExpectedCdiAttest_ZeroInput` / `kExpectedCdiSeal_ZeroInput`, and the IDs are the issuer
//! and subject serialNumber names of that certificate.

use hsmkit_backend_dice::certificates::{cdi_certificate, DEFAULT_PROFILE_NAME};
use hsmkit_backend_dice::derive::{
    derive_cdis, derive_identity, id_from_public_key, key_pair_seed, p256_key_from_seed,
    DiceInputs, Mode, Secret32,
};

const EXPECTED_CDI_ATTEST: &str =
    "fbfc679771342eeacb908659ce49d6b63b4535da2c51433d7f04efa6319e0c19";
const EXPECTED_CDI_SEAL: &str = "8ff8b22571325e7defefbfea8df1c9f34bf4d9ee03b75b788219c6b1ef49bdc5";
const EXPECTED_UDS_ID: &str = "672d0053ae4513fbb3bac8209daeb3e8897681cd";
const EXPECTED_CDI_ID: &str = "2e75b6e7230c20f2960bde4acf1288d4ab665b9b";
/// Uncompressed public key of the ZeroInput CDI key, as printed in the header's comment.
const EXPECTED_CDI_PUBLIC_KEY: &str = "044f3b4e82c45ada084589c2197baf1f376eac40e1fd49b0240602aec269541c6be7eb4019ab55c66bc88bb8b469ad7ee8589e07d2f8bc888eb311c2df973b1b4a";

const EXPECTED_CERT: &[u8] = include_bytes!("data/open_dice_x509_p256_zero_input.der");

fn zero_uds() -> Secret32 {
    Secret32::new([0; 32])
}

#[test]
fn zero_input_cdis_match() {
    let cdis = derive_cdis(
        &zero_uds(),
        &zero_uds(),
        &DiceInputs::zero(Mode::NotConfigured),
    )
    .unwrap();
    assert_eq!(hex::encode(cdis.attest.expose()), EXPECTED_CDI_ATTEST);
    assert_eq!(hex::encode(cdis.seal.expose()), EXPECTED_CDI_SEAL);
}

#[test]
fn zero_input_ids_and_key_match() {
    let identity = derive_identity(&zero_uds(), &DiceInputs::zero(Mode::NotConfigured)).unwrap();
    assert_eq!(hex::encode(identity.device_id.id), EXPECTED_UDS_ID);
    assert_eq!(hex::encode(identity.cdi.id), EXPECTED_CDI_ID);
    let public = identity.cdi.key.verifying_key().to_encoded_point(false);
    assert_eq!(hex::encode(public.as_bytes()), EXPECTED_CDI_PUBLIC_KEY);
    // The same steps by hand, to pin each one rather than only the composition.
    let uds_key = p256_key_from_seed(&key_pair_seed(&zero_uds()).unwrap()).unwrap();
    assert_eq!(
        hex::encode(id_from_public_key(uds_key.verifying_key()).unwrap()),
        EXPECTED_UDS_ID
    );
}

#[test]
fn zero_input_cdi_certificate_is_byte_identical() {
    assert_eq!(EXPECTED_CERT.len(), 721, "test data damaged");
    let inputs = DiceInputs::zero(Mode::NotConfigured);
    let identity = derive_identity(&zero_uds(), &inputs).unwrap();
    let cert = cdi_certificate(
        identity.cdi.key.verifying_key(),
        &identity.cdi.id,
        &identity.device_id.key,
        &identity.device_id.id,
        &inputs,
        DEFAULT_PROFILE_NAME,
    )
    .unwrap();
    if cert != EXPECTED_CERT {
        let first_difference = cert
            .iter()
            .zip(EXPECTED_CERT)
            .position(|(a, b)| a != b)
            .unwrap_or(cert.len().min(EXPECTED_CERT.len()));
        panic!(
            "CDI certificate differs from open-dice's at byte {first_difference} \
             (ours {} bytes, theirs {}):\nours   {}\ntheirs {}",
            cert.len(),
            EXPECTED_CERT.len(),
            hex::encode(&cert),
            hex::encode(EXPECTED_CERT)
        );
    }
}

#[test]
fn mode_changes_the_cdi_and_lands_in_the_certificate() {
    let zero = derive_identity(&zero_uds(), &DiceInputs::zero(Mode::NotConfigured)).unwrap();
    let debug_inputs = DiceInputs::zero(Mode::Debug);
    let debug = derive_identity(&zero_uds(), &debug_inputs).unwrap();
    // The authority key comes from the UDS alone; the CDI key from the inputs.
    assert_eq!(zero.device_id.id, debug.device_id.id);
    assert_ne!(zero.cdi.id, debug.cdi.id);
    let cert = cdi_certificate(
        debug.cdi.key.verifying_key(),
        &debug.cdi.id,
        &debug.device_id.key,
        &debug.device_id.id,
        &debug_inputs,
        DEFAULT_PROFILE_NAME,
    )
    .unwrap();
    // [6] { ENUMERATED 2 }
    assert!(cert.windows(5).any(|w| w == [0xa6, 0x03, 0x0a, 0x01, 0x02]));
}
