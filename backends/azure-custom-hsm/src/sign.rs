//! Signing with the private key the library hands out (`hsm_client_get_key`), in software: the
//! C SDK's own model for custom-HSM X.509 (the key is in the library's memory). The parsed key
//! lives only for one signature and is wiped with it.

use hsm_plugin_sdk::{HsmError, SignAlgorithm};
use p256::ecdsa::signature::hazmat::PrehashSigner;
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs8::DecodePrivateKey;
use rsa::{Pkcs1v15Sign, Pss, RsaPrivateKey};
use sha2::Sha256;

/// A private key from PEM: PKCS#8 (`PRIVATE KEY`), SEC1 (`EC PRIVATE KEY`) or PKCS#1
/// (`RSA PRIVATE KEY`).
enum PrivateKey {
    P256(p256::ecdsa::SigningKey),
    Rsa(Box<RsaPrivateKey>),
}

fn parse(pem: &str) -> Result<PrivateKey, HsmError> {
    let refused = |what: &str| {
        HsmError::device(format!(
            "hsm_client_get_key returned {what}; this plugin signs with P-256 and RSA keys in PEM (PKCS#8, SEC1 or PKCS#1)"
        ))
    };
    if pem.contains("-----BEGIN EC PRIVATE KEY-----") {
        return p256::SecretKey::from_sec1_pem(pem)
            .map(|k| PrivateKey::P256(k.into()))
            .map_err(|_| refused("an EC key that is not a P-256 SEC1 key"));
    }
    if pem.contains("-----BEGIN RSA PRIVATE KEY-----") {
        return RsaPrivateKey::from_pkcs1_pem(pem)
            .map(|k| PrivateKey::Rsa(Box::new(k)))
            .map_err(|_| refused("an RSA key that does not parse"));
    }
    if pem.contains("-----BEGIN PRIVATE KEY-----") {
        if let Ok(k) = p256::SecretKey::from_pkcs8_pem(pem) {
            return Ok(PrivateKey::P256(k.into()));
        }
        return RsaPrivateKey::from_pkcs8_pem(pem)
            .map(|k| PrivateKey::Rsa(Box::new(k)))
            .map_err(|_| refused("a PKCS#8 key that is neither P-256 nor RSA"));
    }
    Err(refused(
        "no PEM private key (an opaque key token needs the TLS layer it was made for)",
    ))
}

/// Signs `digest` (checked by the SDK to be `algorithm.digest_len()` bytes) with the PEM key.
pub(crate) fn sign_digest(
    key_pem: &str,
    algorithm: SignAlgorithm,
    digest: &[u8],
) -> Result<Vec<u8>, HsmError> {
    let key = parse(key_pem)?;
    let mismatch = |key: &str| {
        HsmError::not_supported(format!(
            "the library's key is {key}; it cannot sign {algorithm:?}"
        ))
    };
    match (key, algorithm) {
        (PrivateKey::P256(k), SignAlgorithm::EcdsaP256Sha256) => {
            let sig: p256::ecdsa::Signature = k
                .sign_prehash(digest)
                .map_err(|e| HsmError::internal(format!("ECDSA signing failed: {e}")))?;
            Ok(sig.to_der().as_bytes().to_vec())
        }
        (PrivateKey::Rsa(k), SignAlgorithm::RsaPkcs1Sha256) => k
            .sign(Pkcs1v15Sign::new::<Sha256>(), digest)
            .map_err(|e| HsmError::internal(format!("RSA signing failed: {e}"))),
        (PrivateKey::Rsa(k), SignAlgorithm::RsaPssSha256) => k
            .sign_with_rng(
                &mut rand_core::OsRng,
                Pss::new_with_salt::<Sha256>(32),
                digest,
            )
            .map_err(|e| HsmError::internal(format!("RSA-PSS signing failed: {e}"))),
        (PrivateKey::P256(_), _) => Err(mismatch("ECDSA P-256")),
        (PrivateKey::Rsa(_), _) => Err(mismatch("RSA")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::ecdsa::signature::hazmat::PrehashVerifier;
    use p256::pkcs8::EncodePrivateKey;

    #[test]
    fn p256_pkcs8_signs_and_verifies_and_other_algorithms_are_refused() {
        let secret = p256::SecretKey::random(&mut rand_core::OsRng);
        let pem = secret.to_pkcs8_pem(Default::default()).unwrap();
        let digest = [7u8; 32];
        let der = sign_digest(&pem, SignAlgorithm::EcdsaP256Sha256, &digest).unwrap();
        let sig = p256::ecdsa::Signature::from_der(&der).unwrap();
        let vk = p256::ecdsa::VerifyingKey::from(&p256::ecdsa::SigningKey::from(&secret));
        vk.verify_prehash(&digest, &sig).unwrap();
        let e = sign_digest(&pem, SignAlgorithm::RsaPkcs1Sha256, &digest).unwrap_err();
        assert_eq!(e.code(), hsm_plugin_sdk::ErrorCode::NotSupported, "{e}");
    }

    #[test]
    fn a_token_or_garbage_is_a_device_error_naming_the_function() {
        let e = sign_digest("opaque-token", SignAlgorithm::EcdsaP256Sha256, &[0; 32]).unwrap_err();
        assert_eq!(e.code(), hsm_plugin_sdk::ErrorCode::Device);
        assert!(e.message().contains("hsm_client_get_key"), "{e}");
    }
}
