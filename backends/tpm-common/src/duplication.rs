//! TPM2_Duplicate (by software, to a new parent) and TPM2_Import (in software), with the
//! optional inner symmetric wrapper and the mandatory outer wrapper (TPM 2.0 Part 1 §23.3).

use rand::{CryptoRng, RngCore};
use rsa::RsaPrivateKey;
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::alg;
use crate::cipher::{aes128_cfb_decrypt, aes128_cfb_encrypt, hmac_sha256, verify_hmac_sha256};
use crate::error::{Result, TpmWireError};
use crate::marshal::{put_tpm2b, put_u16, Reader};
use crate::public::{identity_key_public, name_of_tpmt, PublicArea, PublicUnique};
use crate::seed::{protect_seed, recover_seed, wrap_keys, WrapKeys, LABEL_DUPLICATE};

/// Largest sensitive field (TPM2B_SENSITIVE_DATA / key material) accepted.
const MAX_SENSITIVE_BYTES: usize = 512;

/// A TPMT_SENSITIVE: the secret half of an object.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct Sensitive {
    /// The object type (TPM_ALG_KEYEDHASH for an HMAC key).
    pub sensitive_type: u16,
    /// The object's authValue.
    pub auth_value: Vec<u8>,
    /// The seedValue (for a keyed-hash object: the obfuscation value of its unique field).
    pub seed_value: Vec<u8>,
    /// The key material (TPM2B_SENSITIVE_DATA for keyed-hash).
    pub sensitive: Vec<u8>,
}

impl std::fmt::Debug for Sensitive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sensitive")
            .field("sensitive_type", &self.sensitive_type)
            .finish_non_exhaustive()
    }
}

impl Sensitive {
    /// Marshals the TPMT_SENSITIVE.
    pub fn to_tpmt(&self) -> Result<Zeroizing<Vec<u8>>> {
        let mut out = Zeroizing::new(Vec::with_capacity(8 + self.sensitive.len() + 64));
        put_u16(&mut out, self.sensitive_type);
        put_tpm2b(&mut out, &self.auth_value, "TPMT_SENSITIVE.authValue")?;
        put_tpm2b(&mut out, &self.seed_value, "TPMT_SENSITIVE.seedValue")?;
        put_tpm2b(&mut out, &self.sensitive, "TPMT_SENSITIVE.sensitive")?;
        Ok(out)
    }

    /// Parses a TPMT_SENSITIVE that must fill `bytes`.
    pub fn from_tpmt(bytes: &[u8]) -> Result<Self> {
        let mut r = Reader::new(bytes);
        let sensitive = Self {
            sensitive_type: r.u16("TPMT_SENSITIVE.sensitiveType")?,
            auth_value: r.tpm2b_max("TPMT_SENSITIVE.authValue", 64)?.to_vec(),
            seed_value: r.tpm2b_max("TPMT_SENSITIVE.seedValue", 64)?.to_vec(),
            sensitive: r
                .tpm2b_max("TPMT_SENSITIVE.sensitive", MAX_SENSITIVE_BYTES)?
                .to_vec(),
        };
        r.finish("TPMT_SENSITIVE")?;
        Ok(sensitive)
    }
}

/// A new HMAC-SHA256 keyed-hash object for `key`: its public area (unique bound to a random
/// seedValue) and its sensitive area.
pub fn hmac_key_object<R: RngCore + CryptoRng>(
    key: &[u8],
    rng: &mut R,
) -> Result<(PublicArea, Sensitive)> {
    if key.is_empty() || key.len() > 128 {
        return Err(TpmWireError::Invalid {
            what: "HMAC key",
            reason: "must be 1 to 128 bytes",
        });
    }
    let mut seed_value = vec![0u8; 32];
    rng.fill_bytes(&mut seed_value);
    let unique = keyed_hash_unique(&seed_value, key);
    let sensitive = Sensitive {
        sensitive_type: alg::TPM_ALG_KEYEDHASH,
        auth_value: Vec::new(),
        seed_value,
        sensitive: key.to_vec(),
    };
    Ok((identity_key_public(unique), sensitive))
}

/// unique = SHA-256(seedValue || key): what binds a keyed-hash public area to its secret.
fn keyed_hash_unique(seed_value: &[u8], key: &[u8]) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(seed_value);
    h.update(key);
    h.finalize().to_vec()
}

/// A duplication blob, each part without its TPM2B size prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DuplicateBlob {
    /// TPM2B_PRIVATE content: TPM2B_DIGEST outerHMAC followed by the encrypted sensitive.
    pub duplicate: Vec<u8>,
    /// TPM2B_ENCRYPTED_SECRET content: the outer seed encrypted to the new parent.
    pub in_sym_seed: Vec<u8>,
}

/// Duplicates `object`/`sensitive` to `new_parent`. With `inner_key` (a 16-byte AES key) the
/// sensitive area also gets the inner wrapper, which Import then opens with the same key as
/// its encryptionKey and AES-128-CFB as symmetricAlg.
pub fn duplicate<R: RngCore + CryptoRng>(
    new_parent: &PublicArea,
    object: &PublicArea,
    sensitive: &Sensitive,
    inner_key: Option<&[u8]>,
    rng: &mut R,
) -> Result<DuplicateBlob> {
    let name = object.name()?;
    let mut tpm2b_sensitive = Zeroizing::new(Vec::new());
    put_tpm2b(
        &mut tpm2b_sensitive,
        &sensitive.to_tpmt()?,
        "TPM2B_SENSITIVE",
    )?;
    let mut enc_sensitive = match inner_key {
        Some(key) => {
            let inner_integrity = Sha256::new()
                .chain_update(&*tpm2b_sensitive)
                .chain_update(&name)
                .finalize();
            let mut wrapped = Zeroizing::new(Vec::with_capacity(34 + tpm2b_sensitive.len()));
            put_tpm2b(&mut wrapped, &inner_integrity, "innerIntegrity")?;
            wrapped.extend_from_slice(&tpm2b_sensitive);
            aes128_cfb_encrypt(key, &mut wrapped)?;
            wrapped
        }
        None => tpm2b_sensitive,
    };
    let (seed, in_sym_seed) = protect_seed(new_parent, LABEL_DUPLICATE, rng)?;
    let WrapKeys {
        sym: sym_key,
        hmac: hmac_key,
    } = wrap_keys(new_parent, &seed, &name)?;
    aes128_cfb_encrypt(&sym_key, &mut enc_sensitive)?;
    let outer = hmac_sha256(&hmac_key, &[&enc_sensitive, &name])?;
    let mut duplicate = Vec::with_capacity(34 + enc_sensitive.len());
    put_tpm2b(&mut duplicate, &outer, "outerHMAC")?;
    duplicate.extend_from_slice(&enc_sensitive);
    Ok(DuplicateBlob {
        duplicate,
        in_sym_seed,
    })
}

/// Imports a duplicate under `parent` (private key `parent_private`): checks the outer HMAC,
/// removes both wrappers, checks the inner integrity and that the sensitive area matches
/// `object_public` (a TPMT_PUBLIC). Returns the parsed public area and the sensitive area.
pub fn import(
    parent_private: &RsaPrivateKey,
    parent: &PublicArea,
    object_public: &[u8],
    duplicate: &[u8],
    in_sym_seed: &[u8],
    inner_key: Option<&[u8]>,
) -> Result<(PublicArea, Sensitive)> {
    let object = PublicArea::from_tpmt(object_public)?;
    let name = name_of_tpmt(object.name_alg, object_public)?;
    let mut r = Reader::new(duplicate);
    let outer = r.tpm2b_max("TPM2B_PRIVATE.outerHMAC", 64)?;
    let enc_sensitive = r.take(r.remaining(), "TPM2B_PRIVATE.sensitive")?;
    let seed = recover_seed(parent_private, parent, LABEL_DUPLICATE, in_sym_seed)?;
    let WrapKeys {
        sym: sym_key,
        hmac: hmac_key,
    } = wrap_keys(parent, &seed, &name)?;
    verify_hmac_sha256(
        &hmac_key,
        &[enc_sensitive, &name],
        outer,
        "duplicate outer wrapper",
    )?;
    let mut plain = Zeroizing::new(enc_sensitive.to_vec());
    aes128_cfb_decrypt(&sym_key, &mut plain)?;
    if let Some(key) = inner_key {
        aes128_cfb_decrypt(key, &mut plain)?;
        let mut inner = Reader::new(&plain);
        let integrity = inner.tpm2b_max("innerIntegrity", 64)?.to_vec();
        let rest = inner.take(inner.remaining(), "TPM2B_SENSITIVE")?;
        let want = Sha256::new()
            .chain_update(rest)
            .chain_update(&name)
            .finalize();
        if integrity.as_slice() != &want[..] {
            return Err(TpmWireError::IntegrityCheckFailed {
                what: "duplicate inner wrapper",
            });
        }
        plain = Zeroizing::new(rest.to_vec());
    }
    let mut r = Reader::new(&plain);
    let sensitive = Sensitive::from_tpmt(r.tpm2b("TPM2B_SENSITIVE")?)?;
    r.finish("TPM2B_SENSITIVE")?;
    check_binding(&object, &sensitive)?;
    Ok((object, sensitive))
}

/// The checks TPM2_Import makes between the public and sensitive halves.
fn check_binding(object: &PublicArea, sensitive: &Sensitive) -> Result<()> {
    if sensitive.sensitive_type != object.object_type() {
        return Err(TpmWireError::Invalid {
            what: "imported object",
            reason: "sensitive type differs from public type",
        });
    }
    if object.object_type() != alg::TPM_ALG_KEYEDHASH {
        return Err(TpmWireError::UnsupportedAlgorithm {
            what: "imported object type",
            alg: object.object_type(),
        });
    }
    let want = keyed_hash_unique(&sensitive.seed_value, &sensitive.sensitive);
    match &object.unique {
        PublicUnique::Digest(d) if d.as_slice() == want.as_slice() => Ok(()),
        _ => Err(TpmWireError::Invalid {
            what: "imported object",
            reason: "public unique does not match the sensitive area",
        }),
    }
}
