//! Symmetric-key enrollment groups: a member's device key is
//! `HMAC-SHA256(group key, registration id)`, base64 when written down
//! (<https://learn.microsoft.com/azure/iot-dps/how-to-legacy-device-symm-key>, "Derive a device
//! key").

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use zeroize::Zeroizing;

use crate::sas::{hmac_sha256, SasError};

/// The device key of a group member, raw: `HMAC-SHA256(group_key, registration_id)`.
pub fn derive_device_key(group_key: &[u8], registration_id: &str) -> Zeroizing<Vec<u8>> {
    Zeroizing::new(hmac_sha256(group_key, registration_id.as_bytes()).to_vec())
}

/// The device key of a group member with both keys in base64, as the portal and the service
/// API show them. Fails only when `group_key_b64` is not base64.
pub fn derive_device_key_b64(
    group_key_b64: &str,
    registration_id: &str,
) -> Result<Zeroizing<String>, SasError> {
    let key = Zeroizing::new(
        B64.decode(group_key_b64.trim())
            .map_err(|_| SasError::BadKey)?,
    );
    Ok(Zeroizing::new(
        B64.encode(&*derive_device_key(&key, registration_id)),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hmac::{Hmac, Mac};
    use sha2::Sha256;

    const KEY: &str = "c2VjcmV0LWtleS1mb3ItdGVzdHMtb25seS0xMjM0NTY3OA==";

    #[test]
    fn derivation_matches_the_documented_formula() {
        let raw = B64.decode(KEY).unwrap_or_default();
        let expect = {
            let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&raw)
                .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
            m.update(b"dev-1");
            m.finalize().into_bytes().to_vec()
        };
        assert_eq!(*derive_device_key(&raw, "dev-1"), expect);
        let b64 = derive_device_key_b64(KEY, "dev-1").unwrap_or_default();
        assert_eq!(*b64, B64.encode(&expect));
        assert_ne!(
            *b64,
            *derive_device_key_b64(KEY, "dev-2").unwrap_or_default()
        );
        assert_eq!(
            derive_device_key_b64("%%%", "dev-1").map(|_| ()),
            Err(SasError::BadKey)
        );
    }
}
