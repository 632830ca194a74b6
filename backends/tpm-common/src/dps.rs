//! The DPS TPM challenge (`authenticationKey`): making it (what DPS does), splitting it (what a
//! TPM-backed device does before ActivateCredential + Import) and opening it in software
//! (what a simulated TPM does).
//!
//! Layout: TPM2B_ID_OBJECT, TPM2B_ENCRYPTED_SECRET (to the EK), TPM2B_PRIVATE (duplicate of the
//! identity key), TPM2B_ENCRYPTED_SECRET (to the SRK), TPM2B_PUBLIC (the identity key),
//! UINT16 size + encrypted data. The credential inside the ID object is the AES-128 key of the
//! duplicate's inner wrapper, bound to the SRK's name: only the TPM holding both the EK and
//! the SRK can recover the identity key.

use rand::rngs::OsRng;
use rand::RngCore;
use rsa::RsaPrivateKey;
use zeroize::Zeroizing;

use crate::credential::{activate_credential, make_credential};
use crate::duplication::{duplicate, hmac_key_object, import};
use crate::error::{Result, TpmWireError};
use crate::marshal::{put_tpm2b, Reader};
use crate::public::{PublicArea, MAX_PUBLIC_BYTES};

/// Largest TPM2B_ID_OBJECT content (TPMS_ID_OBJECT with SHA-512 digests).
const MAX_ID_OBJECT_BYTES: usize = 132;
/// Largest TPM2B_ENCRYPTED_SECRET content (RSA-4096).
const MAX_SECRET_BYTES: usize = 512;
/// Largest TPM2B_PRIVATE content accepted.
const MAX_PRIVATE_BYTES: usize = 1024;

/// A DPS TPM challenge: `blob` is the decoded `authenticationKey` (the bytes DPS base64-encodes
/// in its 401 answer): TPM2B_ID_OBJECT, TPM2B_ENCRYPTED_SECRET (to the EK), TPM2B_PRIVATE
/// (duplicate), TPM2B_ENCRYPTED_SECRET (to the SRK), TPM2B_PUBLIC (the HMAC identity key),
/// UINT16-size + encrypted data.
#[derive(Debug, Clone)]
pub struct DpsChallenge {
    /// The authenticationKey bytes.
    pub blob: Vec<u8>,
    /// The HMAC identity key (32 bytes) the device will sign SAS tokens with.
    pub identity_key: Zeroizing<Vec<u8>>,
}

/// The parts of an authenticationKey blob, each borrowed without its TPM2B size prefix, which
/// is the form TPM command parameters (tss-esapi's `IdObject`, `EncryptedSecret`, `Private`,
/// `PublicBuffer`) take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthenticationKeyBlob<'a> {
    /// TPM2B_ID_OBJECT content: ActivateCredential's credentialBlob.
    pub id_object: &'a [u8],
    /// TPM2B_ENCRYPTED_SECRET content: ActivateCredential's secret (seed to the EK).
    pub ek_encrypted_secret: &'a [u8],
    /// TPM2B_PRIVATE content: Import's duplicate.
    pub duplicate: &'a [u8],
    /// TPM2B_ENCRYPTED_SECRET content: Import's inSymSeed (seed to the SRK).
    pub srk_encrypted_secret: &'a [u8],
    /// TPMT_PUBLIC of the identity key: Import's objectPublic.
    pub identity_public: &'a [u8],
    /// The trailing encrypted data (not used by the import flow).
    pub encrypted_data: &'a [u8],
}

impl AuthenticationKeyBlob<'_> {
    /// Marshals the blob back into the DPS byte layout.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(900);
        put_tpm2b(&mut out, self.id_object, "TPM2B_ID_OBJECT")?;
        put_tpm2b(
            &mut out,
            self.ek_encrypted_secret,
            "TPM2B_ENCRYPTED_SECRET (EK)",
        )?;
        put_tpm2b(&mut out, self.duplicate, "TPM2B_PRIVATE")?;
        put_tpm2b(
            &mut out,
            self.srk_encrypted_secret,
            "TPM2B_ENCRYPTED_SECRET (SRK)",
        )?;
        put_tpm2b(&mut out, self.identity_public, "TPM2B_PUBLIC")?;
        put_tpm2b(&mut out, self.encrypted_data, "encrypted data")?;
        Ok(out)
    }

    /// The identity key's public area, parsed.
    pub fn identity_public_area(&self) -> Result<PublicArea> {
        PublicArea::from_tpmt(self.identity_public)
    }
}

/// Splits a decoded authenticationKey into its parts, checking every size against the input
/// and the TPM limits, and that nothing follows the last part.
pub fn parse_authentication_key(blob: &[u8]) -> Result<AuthenticationKeyBlob<'_>> {
    let mut r = Reader::new(blob);
    let parsed = AuthenticationKeyBlob {
        id_object: r.tpm2b_max("TPM2B_ID_OBJECT", MAX_ID_OBJECT_BYTES)?,
        ek_encrypted_secret: r.tpm2b_max("TPM2B_ENCRYPTED_SECRET (EK)", MAX_SECRET_BYTES)?,
        duplicate: r.tpm2b_max("TPM2B_PRIVATE", MAX_PRIVATE_BYTES)?,
        srk_encrypted_secret: r.tpm2b_max("TPM2B_ENCRYPTED_SECRET (SRK)", MAX_SECRET_BYTES)?,
        identity_public: r.tpm2b_max("TPM2B_PUBLIC (identity key)", MAX_PUBLIC_BYTES)?,
        encrypted_data: r.tpm2b("encrypted data")?,
    };
    r.finish("authenticationKey")?;
    if parsed.id_object.is_empty()
        || parsed.ek_encrypted_secret.is_empty()
        || parsed.duplicate.is_empty()
        || parsed.srk_encrypted_secret.is_empty()
    {
        return Err(TpmWireError::Invalid {
            what: "authenticationKey",
            reason: "a required part is empty",
        });
    }
    Ok(parsed)
}

/// Makes a DPS challenge for a device whose EK and SRK are `ek_tpm2b_public` and
/// `srk_tpm2b_public` (marshalled TPM2B_PUBLIC), with a fresh random 32-byte identity key.
pub fn make_dps_challenge(ek_tpm2b_public: &[u8], srk_tpm2b_public: &[u8]) -> Result<DpsChallenge> {
    let mut key = Zeroizing::new(vec![0u8; 32]);
    OsRng.fill_bytes(&mut key);
    make_dps_challenge_for_key(ek_tpm2b_public, srk_tpm2b_public, &key)
}

/// Like [`make_dps_challenge`] with a caller-chosen identity key (DPS re-sends the same key in
/// `registrationState.tpm.authenticationKey`).
pub fn make_dps_challenge_for_key(
    ek_tpm2b_public: &[u8],
    srk_tpm2b_public: &[u8],
    identity_key: &[u8],
) -> Result<DpsChallenge> {
    let ek = PublicArea::from_tpm2b(ek_tpm2b_public)?;
    let srk = PublicArea::from_tpm2b(srk_tpm2b_public)?;
    let mut rng = OsRng;
    let srk_name = srk.name()?;
    let mut inner_key = Zeroizing::new(vec![0u8; 16]);
    rng.fill_bytes(&mut inner_key);
    let credential = make_credential(&ek, &inner_key, &srk_name, &mut rng)?;
    let (identity_public, sensitive) = hmac_key_object(identity_key, &mut rng)?;
    let dup = duplicate(
        &srk,
        &identity_public,
        &sensitive,
        Some(&inner_key),
        &mut rng,
    )?;
    let identity_tpmt = identity_public.to_tpmt()?;
    let blob = AuthenticationKeyBlob {
        id_object: &credential.id_object,
        ek_encrypted_secret: &credential.encrypted_secret,
        duplicate: &dup.duplicate,
        srk_encrypted_secret: &dup.in_sym_seed,
        identity_public: &identity_tpmt,
        encrypted_data: &[],
    }
    .to_bytes()?;
    Ok(DpsChallenge {
        blob,
        identity_key: Zeroizing::new(identity_key.to_vec()),
    })
}

/// The private halves a software TPM holds to answer a DPS challenge.
pub struct SoftwareTpmKeys<'a> {
    /// EK private key.
    pub ek_private: &'a RsaPrivateKey,
    /// EK public area.
    pub ek_public: &'a PublicArea,
    /// SRK private key.
    pub srk_private: &'a RsaPrivateKey,
    /// SRK public area.
    pub srk_public: &'a PublicArea,
}

/// What a software TPM keeps after accepting a DPS challenge.
pub struct ImportedIdentityKey {
    /// The identity key's TPMT_PUBLIC bytes.
    pub public: Vec<u8>,
    /// The HMAC key.
    pub key: Zeroizing<Vec<u8>>,
}

/// Runs ActivateCredential + Import on `blob` in software, as a TPM would.
pub fn open_dps_challenge(keys: &SoftwareTpmKeys<'_>, blob: &[u8]) -> Result<ImportedIdentityKey> {
    let parts = parse_authentication_key(blob)?;
    let srk_name = keys.srk_public.name()?;
    let inner_key = activate_credential(
        keys.ek_private,
        keys.ek_public,
        &srk_name,
        parts.id_object,
        parts.ek_encrypted_secret,
    )?;
    let (_, sensitive) = import(
        keys.srk_private,
        keys.srk_public,
        parts.identity_public,
        parts.duplicate,
        parts.srk_encrypted_secret,
        Some(&inner_key),
    )?;
    Ok(ImportedIdentityKey {
        public: parts.identity_public.to_vec(),
        key: Zeroizing::new(sensitive.sensitive.clone()),
    })
}
