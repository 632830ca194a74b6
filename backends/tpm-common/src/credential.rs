//! TPM2_MakeCredential and TPM2_ActivateCredential in software (TPM 2.0 Part 1 §24).

use rand::{CryptoRng, RngCore};
use rsa::RsaPrivateKey;
use zeroize::Zeroizing;

use crate::cipher::{aes128_cfb_decrypt, aes128_cfb_encrypt, hmac_sha256, verify_hmac_sha256};
use crate::error::{Result, TpmWireError};
use crate::marshal::{put_tpm2b, Reader};
use crate::public::PublicArea;
use crate::seed::{protect_seed, recover_seed, wrap_keys, WrapKeys, LABEL_IDENTITY};

/// Largest credential: a TPM2B_DIGEST.
const MAX_CREDENTIAL_BYTES: usize = 64;

/// What MakeCredential returns, each part without its TPM2B size prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialBlob {
    /// TPM2B_ID_OBJECT content: TPM2B_DIGEST integrityHMAC followed by encIdentity.
    pub id_object: Vec<u8>,
    /// TPM2B_ENCRYPTED_SECRET content: the seed encrypted to the EK.
    pub encrypted_secret: Vec<u8>,
}

/// Makes a credential for the key `ek`, bound to the object named `object_name` (the key that
/// ActivateCredential's activateHandle designates).
pub fn make_credential<R: RngCore + CryptoRng>(
    ek: &PublicArea,
    credential: &[u8],
    object_name: &[u8],
    rng: &mut R,
) -> Result<CredentialBlob> {
    if credential.len() > MAX_CREDENTIAL_BYTES {
        return Err(TpmWireError::TooLarge {
            what: "credential",
            size: credential.len(),
            max: MAX_CREDENTIAL_BYTES,
        });
    }
    let (seed, encrypted_secret) = protect_seed(ek, LABEL_IDENTITY, rng)?;
    let WrapKeys {
        sym: sym_key,
        hmac: hmac_key,
    } = wrap_keys(ek, &seed, object_name)?;
    let mut enc_identity = Zeroizing::new(Vec::with_capacity(credential.len() + 2));
    put_tpm2b(&mut enc_identity, credential, "credential")?;
    aes128_cfb_encrypt(&sym_key, &mut enc_identity)?;
    let integrity = hmac_sha256(&hmac_key, &[&enc_identity, object_name])?;
    let mut id_object = Vec::with_capacity(34 + enc_identity.len());
    put_tpm2b(&mut id_object, &integrity, "integrityHMAC")?;
    id_object.extend_from_slice(&enc_identity);
    Ok(CredentialBlob {
        id_object,
        encrypted_secret,
    })
}

/// Recovers the credential from a blob made for `ek` (whose private key is `ek_private`)
/// and bound to `object_name`; fails with [`TpmWireError::IntegrityCheckFailed`] when the
/// blob was made for another key or object.
pub fn activate_credential(
    ek_private: &RsaPrivateKey,
    ek: &PublicArea,
    object_name: &[u8],
    id_object: &[u8],
    encrypted_secret: &[u8],
) -> Result<Zeroizing<Vec<u8>>> {
    let mut r = Reader::new(id_object);
    let integrity = r.tpm2b_max("TPM2B_ID_OBJECT.integrityHMAC", 64)?;
    let enc_identity = r.take(r.remaining(), "TPM2B_ID_OBJECT.encIdentity")?;
    let seed = recover_seed(ek_private, ek, LABEL_IDENTITY, encrypted_secret)?;
    let WrapKeys {
        sym: sym_key,
        hmac: hmac_key,
    } = wrap_keys(ek, &seed, object_name)?;
    verify_hmac_sha256(
        &hmac_key,
        &[enc_identity, object_name],
        integrity,
        "credential (TPM2B_ID_OBJECT)",
    )?;
    let mut plain = Zeroizing::new(enc_identity.to_vec());
    aes128_cfb_decrypt(&sym_key, &mut plain)?;
    let mut inner = Reader::new(&plain);
    let credential = inner.tpm2b_max("encIdentity credential", MAX_CREDENTIAL_BYTES)?;
    inner.finish("encIdentity credential")?;
    Ok(Zeroizing::new(credential.to_vec()))
}
