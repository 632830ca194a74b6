//! Protecting a random seed to a storage key (TPM 2.0 Part 1 §24, "secret sharing"): RSA-OAEP
//! with the key's nameAlg and a purpose label. ECC parents (ECDH + KDFe) are not implemented:
//! DPS accepts RSA EKs only.

use rand::{CryptoRng, RngCore};
use rsa::{Oaep, RsaPrivateKey};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::alg;
use crate::error::{Result, TpmWireError};
use crate::kdf::kdfa;
use crate::public::{PublicArea, PublicParameters};

/// The OAEP label of a credential seed (MakeCredential / ActivateCredential).
pub const LABEL_IDENTITY: &str = "IDENTITY\0";
/// The OAEP label of a duplication seed (Duplicate / Import).
pub const LABEL_DUPLICATE: &str = "DUPLICATE\0";

/// The seed size for `parent`: the digest size of its nameAlg.
fn seed_len(parent: &PublicArea) -> Result<usize> {
    alg::digest_size(parent.name_alg).ok_or(TpmWireError::UnsupportedAlgorithm {
        what: "parent nameAlg",
        alg: parent.name_alg,
    })
}

/// A fresh random seed and its encryption to `parent` (the TPM2B_ENCRYPTED_SECRET content).
pub fn protect_seed<R: RngCore + CryptoRng>(
    parent: &PublicArea,
    label: &'static str,
    rng: &mut R,
) -> Result<(Zeroizing<Vec<u8>>, Vec<u8>)> {
    if !matches!(parent.parameters, PublicParameters::Rsa { .. }) {
        return Err(TpmWireError::UnsupportedAlgorithm {
            what: "seed protection key type",
            alg: parent.object_type(),
        });
    }
    let mut seed = Zeroizing::new(vec![0u8; seed_len(parent)?]);
    rng.fill_bytes(&mut seed);
    let key = parent.rsa_public_key()?;
    let encrypted = key
        .encrypt(rng, Oaep::new_with_label::<Sha256, _>(label), &seed)
        .map_err(|_| TpmWireError::Rsa {
            operation: "OAEP encryption",
        })?;
    Ok((seed, encrypted))
}

/// Recovers a seed encrypted by [`protect_seed`] with the parent's private key.
pub fn recover_seed(
    private: &RsaPrivateKey,
    parent: &PublicArea,
    label: &'static str,
    encrypted: &[u8],
) -> Result<Zeroizing<Vec<u8>>> {
    let seed = Zeroizing::new(
        private
            .decrypt(Oaep::new_with_label::<Sha256, _>(label), encrypted)
            .map_err(|_| TpmWireError::Rsa {
                operation: "OAEP decryption",
            })?,
    );
    // The TPM refuses seeds longer than the nameAlg digest (Part 1 §24.2.2).
    if seed.len() > seed_len(parent)? {
        return Err(TpmWireError::Invalid {
            what: "encrypted seed",
            reason: "longer than the parent's nameAlg digest",
        });
    }
    Ok(seed)
}

/// The two keys a protected seed yields for the object named `name`: the AES key of the
/// wrapper (KDFa "STORAGE") and the key of its HMAC (KDFa "INTEGRITY").
pub struct WrapKeys {
    /// Symmetric key, the parent's symmetric key size.
    pub sym: Zeroizing<Vec<u8>>,
    /// HMAC key, the nameAlg digest size.
    pub hmac: Zeroizing<Vec<u8>>,
}

/// Derives [`WrapKeys`] from `seed` for a blob protected by `parent` about object `name`.
pub fn wrap_keys(parent: &PublicArea, seed: &[u8], name: &[u8]) -> Result<WrapKeys> {
    let symmetric = parent.storage_symmetric()?;
    let digest_bits = seed_len(parent)? as u32 * 8;
    Ok(WrapKeys {
        sym: kdfa(
            parent.name_alg,
            seed,
            b"STORAGE",
            name,
            &[],
            u32::from(symmetric.key_bits),
        )?,
        hmac: kdfa(parent.name_alg, seed, b"INTEGRITY", &[], &[], digest_bits)?,
    })
}
