//! Shared access signatures, the one token format DPS (symmetric key and TPM) and IoT Hub both
//! accept. The HMAC is always computed by a [`SasSigner`] (the plugin), so the key never has to
//! reach this process.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Something that computes HMAC-SHA256 over a string to sign with a key it holds.
pub trait SasSigner {
    /// The error a failed signature carries.
    type Error;
    /// The signature bytes; a plugin hands back its own buffer, read in place.
    type Signature: AsRef<[u8]>;
    /// HMAC-SHA256 of `data`.
    fn sign(&self, data: &[u8]) -> Result<Self::Signature, Self::Error>;
}

/// URL-encodes as the Azure IoT SDKs do: unreserved characters (`A-Z a-z 0-9 - _ . ! ( ) *`)
/// stay, everything else becomes `%xx` with lowercase hex, byte by byte of the UTF-8 form.
pub fn url_encode(text: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(text.len() * 3);
    for &b in text.as_bytes() {
        if b.is_ascii_alphanumeric() || b"-_.!()*".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
    }
    out
}

/// Seconds since the Unix epoch, `ttl` from now. A clock before 1970 counts as 1970: the
/// token then expires early and the service says so, which is better than panicking.
pub fn expiry_from_now(ttl: Duration) -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
        .saturating_add(ttl.as_secs())
}

/// The string the HMAC is computed over: `<url-encoded resource>\n<expiry>`.
pub fn string_to_sign(resource: &str, expiry_unix: u64) -> String {
    format!("{}\n{expiry_unix}", url_encode(resource))
}

/// Builds `SharedAccessSignature sr=<enc resource>&sig=<enc b64 hmac>&se=<expiry>[&skn=<name>]`
/// for `resource` (not yet encoded), signed by `signer`.
pub fn build_token<S: SasSigner>(
    signer: &S,
    resource: &str,
    expiry_unix: u64,
    key_name: Option<&str>,
) -> Result<String, S::Error> {
    let sig = signer.sign(string_to_sign(resource, expiry_unix).as_bytes())?;
    let mut token = format!(
        "SharedAccessSignature sr={}&sig={}&se={expiry_unix}",
        url_encode(resource),
        url_encode(&B64.encode(sig))
    );
    if let Some(name) = key_name {
        token.push_str("&skn=");
        token.push_str(&url_encode(name));
    }
    Ok(token)
}

/// The DPS device scope: `{idScope}/registrations/{registrationId}`.
pub fn dps_resource(id_scope: &str, registration_id: &str) -> String {
    format!("{id_scope}/registrations/{registration_id}")
}

/// The IoT Hub device scope: `{hub}/devices/{deviceId}`.
pub fn hub_resource(hub: &str, device_id: &str) -> String {
    format!("{hub}/devices/{device_id}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use hmac::{Hmac, Mac};

    struct KeySigner(Vec<u8>);
    impl SasSigner for KeySigner {
        type Error = std::convert::Infallible;
        type Signature = Vec<u8>;
        fn sign(&self, data: &[u8]) -> Result<Vec<u8>, Self::Error> {
            let mut mac =
                Hmac::<sha2::Sha256>::new_from_slice(&self.0).unwrap_or_else(|_| unreachable!());
            mac.update(data);
            Ok(mac.finalize().into_bytes().to_vec())
        }
    }

    #[test]
    fn url_encoding_follows_the_sdk_rules() {
        assert_eq!(
            url_encode("0ne00000001/registrations/dev-1"),
            "0ne00000001%2fregistrations%2fdev-1"
        );
        assert_eq!(url_encode("a+b=c/ d"), "a%2bb%3dc%2f%20d");
        assert_eq!(url_encode("AZaz09-_.!()*"), "AZaz09-_.!()*");
        assert_eq!(url_encode("é"), "%c3%a9");
    }

    #[test]
    fn token_verifies_with_an_independent_hmac() {
        let key = b"0123456789abcdef0123456789abcdef".to_vec();
        let t = build_token(
            &KeySigner(key.clone()),
            "scope/registrations/r1",
            1_700_000_000,
            Some("registration"),
        )
        .unwrap_or_else(|e| match e {});
        assert!(t.starts_with("SharedAccessSignature sr=scope%2fregistrations%2fr1&sig="));
        assert!(t.ends_with("&se=1700000000&skn=registration"));
        let sig_enc = t
            .split("&sig=")
            .nth(1)
            .and_then(|s| s.split('&').next())
            .unwrap_or_default();
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap_or_else(|_| unreachable!());
        mac.update(b"scope%2fregistrations%2fr1\n1700000000");
        let expected = url_encode(&B64.encode(mac.finalize().into_bytes()));
        assert_eq!(sig_enc, expected);
    }

    #[test]
    fn hub_token_has_no_key_name_when_none_is_given() {
        let t = build_token(
            &KeySigner(vec![7; 32]),
            &hub_resource("h.azure-devices.net", "d1"),
            5,
            None,
        )
        .unwrap_or_else(|e| match e {});
        assert!(t.contains("sr=h.azure-devices.net%2fdevices%2fd1&"));
        assert!(!t.contains("skn="));
    }
}
