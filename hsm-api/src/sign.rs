//! The Rust view of the `HSM_SIGN_*` values: what the X.509 `sign_digest` entry may be asked
//! for, shared by the SDK (which decodes it) and the host (which encodes it).

use crate::status::*;

/// Signature algorithms of the X.509 `sign_digest` entry. A later ABI minor may add
/// algorithms, so a plugin matching on it answers "not supported" for the ones it does not know.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SignAlgorithm {
    /// `HSM_SIGN_ECDSA_P256_SHA256`: ECDSA P-256 over a SHA-256 digest; DER
    /// `ECDSA-Sig-Value` out.
    EcdsaP256Sha256,
    /// `HSM_SIGN_ECDSA_P384_SHA384`: ECDSA P-384 over a SHA-384 digest; DER out.
    EcdsaP384Sha384,
    /// `HSM_SIGN_RSA_PKCS1_SHA256`: RSA PKCS#1 v1.5 over a SHA-256 digest.
    RsaPkcs1Sha256,
    /// `HSM_SIGN_RSA_PSS_SHA256`: RSA-PSS (MGF1-SHA256, 32-byte salt) over a SHA-256 digest.
    RsaPssSha256,
}

impl SignAlgorithm {
    /// Every algorithm of this ABI version, in `HSM_SIGN_*` order.
    pub const ALL: [SignAlgorithm; 4] = [
        SignAlgorithm::EcdsaP256Sha256,
        SignAlgorithm::EcdsaP384Sha384,
        SignAlgorithm::RsaPkcs1Sha256,
        SignAlgorithm::RsaPssSha256,
    ];

    /// The algorithm for an ABI `HSM_SIGN_*` value; `None` for a value this side does not know.
    pub const fn from_abi(value: u32) -> Option<Self> {
        match value {
            HSM_SIGN_ECDSA_P256_SHA256 => Some(SignAlgorithm::EcdsaP256Sha256),
            HSM_SIGN_ECDSA_P384_SHA384 => Some(SignAlgorithm::EcdsaP384Sha384),
            HSM_SIGN_RSA_PKCS1_SHA256 => Some(SignAlgorithm::RsaPkcs1Sha256),
            HSM_SIGN_RSA_PSS_SHA256 => Some(SignAlgorithm::RsaPssSha256),
            _ => None,
        }
    }

    /// The ABI `HSM_SIGN_*` value.
    pub const fn to_abi(self) -> u32 {
        match self {
            SignAlgorithm::EcdsaP256Sha256 => HSM_SIGN_ECDSA_P256_SHA256,
            SignAlgorithm::EcdsaP384Sha384 => HSM_SIGN_ECDSA_P384_SHA384,
            SignAlgorithm::RsaPkcs1Sha256 => HSM_SIGN_RSA_PKCS1_SHA256,
            SignAlgorithm::RsaPssSha256 => HSM_SIGN_RSA_PSS_SHA256,
        }
    }

    /// Length in bytes of the digest this algorithm signs.
    pub const fn digest_len(self) -> usize {
        match self {
            SignAlgorithm::EcdsaP384Sha384 => 48,
            _ => 32,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn abi_values_round_trip() {
        for alg in SignAlgorithm::ALL {
            assert_eq!(SignAlgorithm::from_abi(alg.to_abi()), Some(alg));
        }
        assert_eq!(SignAlgorithm::from_abi(0), None);
        assert_eq!(SignAlgorithm::from_abi(HSM_SIGN_RSA_PSS_SHA256 + 1), None);
    }
}
