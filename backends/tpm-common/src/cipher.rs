//! The symmetric primitives of TPM protected blobs: AES-128-CFB with a zero IV and
//! HMAC-SHA256 with constant-time verification.

use aes::Aes128;
use cfb_mode::cipher::{AsyncStreamCipher, KeyIvInit};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::error::{Result, TpmWireError};

fn key16(key: &[u8]) -> Result<&[u8; 16]> {
    key.try_into().map_err(|_| TpmWireError::Invalid {
        what: "AES-128 key",
        reason: "must be 16 bytes",
    })
}

/// Encrypts `data` in place with AES-128-CFB and an all-zero IV (the TPM's choice for
/// credential and duplication blobs, whose keys are single-use).
pub fn aes128_cfb_encrypt(key: &[u8], data: &mut [u8]) -> Result<()> {
    cfb_mode::Encryptor::<Aes128>::new(key16(key)?.into(), &[0u8; 16].into()).encrypt(data);
    Ok(())
}

/// Decrypts `data` in place (see [`aes128_cfb_encrypt`]).
pub fn aes128_cfb_decrypt(key: &[u8], data: &mut [u8]) -> Result<()> {
    cfb_mode::Decryptor::<Aes128>::new(key16(key)?.into(), &[0u8; 16].into()).decrypt(data);
    Ok(())
}

fn mac_over(key: &[u8], parts: &[&[u8]]) -> Result<Hmac<Sha256>> {
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(key).map_err(|_| TpmWireError::Invalid {
            what: "HMAC key",
            reason: "rejected by HMAC",
        })?;
    for p in parts {
        mac.update(p);
    }
    Ok(mac)
}

/// HMAC-SHA256 over the concatenation of `parts`.
pub fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> Result<[u8; 32]> {
    Ok(mac_over(key, parts)?.finalize().into_bytes().into())
}

/// Checks `expected` against HMAC-SHA256 over `parts` in constant time.
pub fn verify_hmac_sha256(
    key: &[u8],
    parts: &[&[u8]],
    expected: &[u8],
    what: &'static str,
) -> Result<()> {
    mac_over(key, parts)?
        .verify_slice(expected)
        .map_err(|_| TpmWireError::IntegrityCheckFailed { what })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cfb_round_trip_any_length() {
        let key = [3u8; 16];
        let plain: Vec<u8> = (0..37u8).collect();
        let mut buf = plain.clone();
        aes128_cfb_encrypt(&key, &mut buf).unwrap();
        assert_ne!(buf, plain);
        aes128_cfb_decrypt(&key, &mut buf).unwrap();
        assert_eq!(buf, plain);
        assert!(aes128_cfb_encrypt(&[0u8; 15], &mut buf).is_err());
    }

    #[test]
    fn hmac_verify_detects_change() {
        let tag = hmac_sha256(b"key", &[b"a", b"b"]).unwrap();
        verify_hmac_sha256(b"key", &[b"ab"], &tag, "t").unwrap();
        let mut bad = tag;
        bad[0] ^= 1;
        assert!(verify_hmac_sha256(b"key", &[b"ab"], &bad, "t").is_err());
    }
}
