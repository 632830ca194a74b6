//! Cross-check against a real TPM implementation: a credential made by swtpm's own
//! TPM2_MakeCredential for tpm-sim's EK (bound to tpm-sim's SRK name) is accepted by tpm-sim,
//! and one bound to another name is refused. swtpm is started by the test on free loopback
//! ports; the test fails with an install hint when swtpm is missing.

use std::str::FromStr;

use hmac::{Hmac, Mac};
use hsm_plugin_sdk::{ErrorCode, TpmHsm};
use hsm_tpm_common::dps::AuthenticationKeyBlob;
use hsm_tpm_common::duplication::{duplicate, hmac_key_object};
use hsm_tpm_common::public::PublicArea;
use hsm_tpm_common::swtpm::Swtpm;
use hsmkit_backend_tpm_sim::TpmSimPlugin;
use sha2::Sha256;
use tss_esapi::interface_types::resource_handles::Hierarchy;
use tss_esapi::structures::{Digest, EncryptedSecret, IdObject, Name, Public};
use tss_esapi::traits::UnMarshall;
use tss_esapi::{Context, TctiNameConf};

/// TPM2_MakeCredential on swtpm for an external EK public.
fn swtpm_make_credential(
    ctx: &mut Context,
    ek_tpm2b: &[u8],
    credential: &[u8],
    object_name: Vec<u8>,
) -> (IdObject, EncryptedSecret) {
    let ek = Public::unmarshall(
        PublicArea::from_tpm2b(ek_tpm2b)
            .map(|_| &ek_tpm2b[2..])
            .unwrap(),
    )
    .unwrap();
    let handle = ctx.load_external_public(ek, Hierarchy::Null).unwrap();
    let made = ctx.make_credential(
        handle,
        Digest::try_from(credential.to_vec()).unwrap(),
        Name::try_from(object_name).unwrap(),
    );
    ctx.flush_context(handle.into()).unwrap();
    made.unwrap()
}

fn software_hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap();
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

#[test]
fn swtpm_make_credential_is_accepted_by_tpm_sim() {
    let tpm = Swtpm::start().unwrap_or_else(|e| panic!("cannot run the swtpm cross-check: {e}"));
    let mut ctx = Context::new(TctiNameConf::from_str(&tpm.tcti()).unwrap()).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let sim = TpmSimPlugin::open(dir.path().join("state")).unwrap();
    let ek = sim.endorsement_key().unwrap();
    let srk = PublicArea::from_tpm2b(&sim.storage_root_key().unwrap()).unwrap();
    let inner_key = [0x5au8; 16];
    let identity_key = [0x33u8; 32];

    // Duplication half from the wire library, inner-wrapped with the credential.
    let mut rng = rand::thread_rng();
    let (public, sensitive) = hmac_key_object(&identity_key, &mut rng).unwrap();
    let dup = duplicate(&srk, &public, &sensitive, Some(&inner_key), &mut rng).unwrap();
    let identity_public = public.to_tpmt().unwrap();
    let blob_with = |id_object: &IdObject, secret: &EncryptedSecret| {
        AuthenticationKeyBlob {
            id_object: id_object.value(),
            ek_encrypted_secret: secret.value(),
            duplicate: &dup.duplicate,
            srk_encrypted_secret: &dup.in_sym_seed,
            identity_public: &identity_public,
            encrypted_data: &[],
        }
        .to_bytes()
        .unwrap()
    };

    // Credential half from swtpm, bound to tpm-sim's SRK.
    let (id_object, secret) = swtpm_make_credential(&mut ctx, &ek, &inner_key, srk.name().unwrap());
    sim.activate_identity_key(&blob_with(&id_object, &secret))
        .unwrap();
    assert_eq!(
        sim.sign_with_identity(b"sas").unwrap(),
        software_hmac(&identity_key, b"sas")
    );

    // Bound to another object's name: refused.
    let (wrong_id, wrong_secret) =
        swtpm_make_credential(&mut ctx, &ek, &inner_key, public.name().unwrap());
    let err = sim
        .activate_identity_key(&blob_with(&wrong_id, &wrong_secret))
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::Authentication);
}
