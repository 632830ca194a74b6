//! The TPM key derivation functions KDFa (SP 800-108 counter mode with HMAC) and KDFe
//! (SP 800-56A concatenation KDF), TPM 2.0 Part 1 §11.4.10.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::alg;
use crate::error::{Result, TpmWireError};

/// Largest derivation this library performs; far above what any TPM structure needs, and it
/// keeps a hostile `bits` from allocating without bound.
const MAX_KDF_BITS: u32 = 8 * 1024 * 8;

fn checked_len(hash_alg: u16, bits: u32) -> Result<usize> {
    if hash_alg != alg::TPM_ALG_SHA256 {
        return Err(TpmWireError::UnsupportedAlgorithm {
            what: "KDF hash",
            alg: hash_alg,
        });
    }
    if bits == 0 || bits > MAX_KDF_BITS {
        return Err(TpmWireError::Invalid {
            what: "KDF length",
            reason: "must be between 1 bit and 64 KiB",
        });
    }
    Ok(bits.div_ceil(8) as usize)
}

/// The label as the TPM hashes it: its bytes plus one terminating zero (added when missing).
fn label_with_nul(label: &[u8]) -> Vec<u8> {
    let mut l = label.to_vec();
    if l.last() != Some(&0) {
        l.push(0);
    }
    l
}

/// Clears the bits above `bits` in the first byte, as the TPM does for odd lengths.
fn mask_leading_bits(out: &mut [u8], bits: u32) {
    let spare = (8 - bits % 8) % 8;
    if let Some(first) = out.first_mut() {
        *first &= 0xffu8 >> spare;
    }
}

/// KDFa(hashAlg, key, label, contextU, contextV, bits).
pub fn kdfa(
    hash_alg: u16,
    key: &[u8],
    label: &[u8],
    context_u: &[u8],
    context_v: &[u8],
    bits: u32,
) -> Result<Zeroizing<Vec<u8>>> {
    let len = checked_len(hash_alg, bits)?;
    let label = label_with_nul(label);
    let mut out = Zeroizing::new(Vec::with_capacity(len + 32));
    let mut counter: u32 = 1;
    while out.len() < len {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(key).map_err(|_| TpmWireError::Invalid {
                what: "KDFa key",
                reason: "rejected by HMAC",
            })?;
        mac.update(&counter.to_be_bytes());
        mac.update(&label);
        mac.update(context_u);
        mac.update(context_v);
        mac.update(&bits.to_be_bytes());
        out.extend_from_slice(&mac.finalize().into_bytes());
        counter += 1;
    }
    out.truncate(len);
    mask_leading_bits(&mut out, bits);
    Ok(out)
}

/// KDFe(hashAlg, Z, label, partyUInfo, partyVInfo, bits), used for ECC-protected secrets.
pub fn kdfe(
    hash_alg: u16,
    z: &[u8],
    label: &[u8],
    party_u_info: &[u8],
    party_v_info: &[u8],
    bits: u32,
) -> Result<Zeroizing<Vec<u8>>> {
    let len = checked_len(hash_alg, bits)?;
    let label = label_with_nul(label);
    let mut out = Zeroizing::new(Vec::with_capacity(len + 32));
    let mut counter: u32 = 1;
    while out.len() < len {
        let mut h = Sha256::new();
        h.update(counter.to_be_bytes());
        h.update(z);
        h.update(&label);
        h.update(party_u_info);
        h.update(party_v_info);
        out.extend_from_slice(&h.finalize());
        counter += 1;
    }
    out.truncate(len);
    mask_leading_bits(&mut out, bits);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Recomputes one KDFa block by hand so the counter/label/length layout is pinned.
    #[test]
    fn kdfa_matches_hand_computed_block() {
        let key = [0x11u8; 32];
        let got = kdfa(alg::TPM_ALG_SHA256, &key, b"STORAGE", b"name", b"", 128).unwrap();
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&key).unwrap();
        mac.update(&[0, 0, 0, 1]);
        mac.update(b"STORAGE\0name");
        mac.update(&[0, 0, 0, 128]);
        let want = mac.finalize().into_bytes();
        assert_eq!(&got[..], &want[..16]);
    }

    #[test]
    fn kdfa_label_nul_is_added_once() {
        let a = kdfa(alg::TPM_ALG_SHA256, b"k", b"INTEGRITY", b"", b"", 256).unwrap();
        let b = kdfa(alg::TPM_ALG_SHA256, b"k", b"INTEGRITY\0", b"", b"", 256).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn kdfa_multi_block_and_odd_bits() {
        let long = kdfa(alg::TPM_ALG_SHA256, b"k", b"L", b"", b"", 520).unwrap();
        assert_eq!(long.len(), 65);
        let odd = kdfa(alg::TPM_ALG_SHA256, b"k", b"L", b"", b"", 12).unwrap();
        assert_eq!(odd.len(), 2);
        assert_eq!(odd[0] & 0xf0, 0);
    }

    #[test]
    fn kdfe_matches_hand_computed_block() {
        let got = kdfe(alg::TPM_ALG_SHA256, b"zz", b"IDENTITY", b"u", b"v", 256).unwrap();
        let want = Sha256::digest(b"\0\0\0\x01zzIDENTITY\0uv");
        assert_eq!(&got[..], &want[..]);
    }

    #[test]
    fn kdf_refuses_bad_parameters() {
        assert!(kdfa(alg::TPM_ALG_SHA1, b"k", b"L", b"", b"", 128).is_err());
        assert!(kdfa(alg::TPM_ALG_SHA256, b"k", b"L", b"", b"", 0).is_err());
        assert!(kdfe(alg::TPM_ALG_SHA256, b"k", b"L", b"", b"", u32::MAX).is_err());
    }
}
