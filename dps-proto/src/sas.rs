//! Shared access signatures, the one token format DPS (symmetric key, TPM, service API) and
//! IoT Hub accept:
//! `SharedAccessSignature sr=<enc resource>&sig=<enc base64 HMAC>&se=<expiry>[&skn=<key name>]`,
//! where the HMAC-SHA256 is computed over `<enc resource>\n<expiry>`.
//!
//! Building goes through a [`SasSigner`], so a device's key can stay inside its HSM; parsing and
//! verifying are for the service side.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

/// Why a token was refused or could not be made. The messages name no key or signature
/// material.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum SasError {
    /// Not of the form `SharedAccessSignature k=v&k=v...` with sr, sig and se.
    #[error("malformed SharedAccessSignature: {0}")]
    Malformed(&'static str),
    /// `se` is in the past.
    #[error("the token has expired")]
    Expired,
    /// `sr` names another resource.
    #[error("the token's scope does not match this resource")]
    WrongScope,
    /// `skn` names another key.
    #[error("the token's key name does not match")]
    WrongKeyName,
    /// The HMAC does not verify.
    #[error("the token's signature does not verify")]
    BadSignature,
    /// The key itself is not valid base64.
    #[error("the key is not valid base64")]
    BadKey,
}

/// Something that computes HMAC-SHA256 over a string to sign with a key it holds (an HSM
/// plugin, or [`KeySigner`] for a key in memory).
pub trait SasSigner {
    /// The error a failed signature carries.
    type Error;
    /// The signature bytes; a plugin hands back its own buffer, read in place.
    type Signature: AsRef<[u8]>;
    /// HMAC-SHA256 of `data`.
    fn sign(&self, data: &[u8]) -> Result<Self::Signature, Self::Error>;
}

/// A [`SasSigner`] over a raw key in memory (service side, tests, tools).
pub struct KeySigner(pub Zeroizing<Vec<u8>>);

impl std::fmt::Debug for KeySigner {
    // The key stays out of debug output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeySigner { .. }")
    }
}

impl SasSigner for KeySigner {
    type Error = std::convert::Infallible;
    type Signature = [u8; 32];
    fn sign(&self, data: &[u8]) -> Result<[u8; 32], Self::Error> {
        Ok(hmac_sha256(&self.0, data))
    }
}

/// Raw HMAC-SHA256.
pub fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length (longer ones are hashed), so this cannot fail.
    let mut mac = match <Hmac<Sha256> as Mac>::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    };
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// The characters the service's URL encoding keeps: ASCII letters and digits and
/// `- _ . ! ~ * ' ( )`. DPS documents `sr` as the "lower case URL-encoding" of the resource
/// and shows it computed with JavaScript's `encodeURIComponent`, which keeps exactly these
/// (<https://learn.microsoft.com/azure/iot-dps/how-to-control-access>, "Security token
/// structure" and `generateSasToken`). The Azure IoT C SDK also escapes `~` and `'`; the
/// service verifies the signature over `sr` as sent, so both are accepted, and the two
/// characters never occur in a valid DPS id anyway.
const KEPT: &[u8] = b"-_.!~*'()";

/// URL-encodes as the service documents: ASCII letters, digits and `-_.!~*'()` stay, every
/// other byte of the UTF-8 form becomes `%xx` with lowercase hex.
pub fn url_encode(text: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(text.len() * 3);
    for &b in text.as_bytes() {
        if b.is_ascii_alphanumeric() || KEPT.contains(&b) {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
    }
    out
}

fn url_decode(s: &str) -> Result<String, SasError> {
    // `+` is a space in form encoding, which some SDKs (Python's urlencode) use for tokens.
    percent_encoding::percent_decode_str(&s.replace('+', " "))
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| SasError::Malformed("a field is not valid UTF-8 after decoding"))
}

/// The string the HMAC is computed over: `<url-encoded resource>\n<expiry>`.
pub fn string_to_sign(resource: &str, expiry_unix: u64) -> String {
    format!("{}\n{expiry_unix}", url_encode(resource))
}

/// The DPS device scope: `{idScope}/registrations/{registrationId}`.
pub fn dps_resource(id_scope: &str, registration_id: &str) -> String {
    format!("{id_scope}/registrations/{registration_id}")
}

/// The IoT Hub device scope: `{hub}/devices/{deviceId}`.
pub fn hub_resource(hub: &str, device_id: &str) -> String {
    format!("{hub}/devices/{device_id}")
}

/// The key name of every device-API token (symmetric key; TPM unless the challenge names
/// another).
pub const DEVICE_KEY_NAME: &str = "registration";

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

/// The HMAC-SHA256 of `data` with a base64 key, base64-encoded.
pub fn sign_b64(key_b64: &str, data: &[u8]) -> Result<String, SasError> {
    let key = Zeroizing::new(B64.decode(key_b64.trim()).map_err(|_| SasError::BadKey)?);
    Ok(B64.encode(hmac_sha256(&key, data)))
}

/// Builds a token for `resource` (not yet encoded) with a base64 key, as the portal shows keys.
pub fn create_token(
    resource: &str,
    key_b64: &str,
    key_name: Option<&str>,
    expiry_unix: u64,
) -> Result<String, SasError> {
    let key = Zeroizing::new(B64.decode(key_b64.trim()).map_err(|_| SasError::BadKey)?);
    build_token(&KeySigner(key), resource, expiry_unix, key_name).map_err(|e| match e {})
}

/// A parsed token; `sr_raw` keeps the exact bytes that were signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SasToken {
    /// `sr` exactly as it appears in the token (URL-encoded).
    pub sr_raw: String,
    /// `sr` decoded.
    pub sr: String,
    /// The signature, base64-decoded.
    pub sig: Vec<u8>,
    /// Expiry, seconds since the Unix epoch.
    pub se: u64,
    /// The key name, if any.
    pub skn: Option<String>,
}

impl SasToken {
    /// Parses an Authorization header value. Fields may come in any order (the service's
    /// documentation shows `sig` first, the SDKs `sr` first); unknown fields are ignored.
    pub fn parse(header: &str) -> Result<Self, SasError> {
        let rest =
            header
                .trim()
                .strip_prefix("SharedAccessSignature ")
                .ok_or(SasError::Malformed(
                    "missing the SharedAccessSignature prefix",
                ))?;
        let (mut sr_raw, mut sig, mut se, mut skn) = (None, None, None, None);
        for part in rest.trim().split('&') {
            let (k, v) = part
                .split_once('=')
                .ok_or(SasError::Malformed("a field has no '='"))?;
            let slot = match k {
                "sr" => &mut sr_raw,
                "sig" => &mut sig,
                "se" => &mut se,
                "skn" => &mut skn,
                _ => continue,
            };
            if slot.replace(v.to_string()).is_some() {
                return Err(SasError::Malformed("a field appears twice"));
            }
        }
        let sr_raw = sr_raw.ok_or(SasError::Malformed("missing sr"))?;
        let sig = sig.ok_or(SasError::Malformed("missing sig"))?;
        let se = se.ok_or(SasError::Malformed("missing se"))?;
        let sig = B64
            .decode(url_decode(&sig)?)
            .map_err(|_| SasError::Malformed("sig is not base64"))?;
        let se = url_decode(&se)?
            .parse::<u64>()
            .map_err(|_| SasError::Malformed("se is not a number"))?;
        Ok(Self {
            sr: url_decode(&sr_raw)?,
            sr_raw,
            sig,
            se,
            skn: skn.map(|s| url_decode(&s)).transpose()?,
        })
    }

    /// Checks scope (case-insensitively, as DPS ids are), expiry and key name, but not the
    /// signature.
    pub fn check_claims(
        &self,
        expected_scope: Option<&str>,
        expected_key_name: Option<&str>,
        now_unix: u64,
    ) -> Result<(), SasError> {
        if let Some(scope) = expected_scope {
            if !self.sr.eq_ignore_ascii_case(scope) {
                return Err(SasError::WrongScope);
            }
        }
        if let Some(name) = expected_key_name {
            if self.skn.as_deref() != Some(name) {
                return Err(SasError::WrongKeyName);
            }
        }
        if self.se <= now_unix {
            return Err(SasError::Expired);
        }
        Ok(())
    }

    /// Verifies the signature with a raw key, in constant time.
    pub fn verify_signature_raw(&self, key: &[u8]) -> Result<(), SasError> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).map_err(|_| SasError::BadKey)?;
        mac.update(format!("{}\n{}", self.sr_raw, self.se).as_bytes());
        mac.verify_slice(&self.sig)
            .map_err(|_| SasError::BadSignature)
    }

    /// Verifies the signature with a base64 key.
    pub fn verify_signature_b64(&self, key_b64: &str) -> Result<(), SasError> {
        let key = Zeroizing::new(B64.decode(key_b64.trim()).map_err(|_| SasError::BadKey)?);
        self.verify_signature_raw(&key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "c2VjcmV0LWtleS1mb3ItdGVzdHMtb25seS0xMjM0NTY3OA==";

    fn key_signer(raw: &[u8]) -> KeySigner {
        KeySigner(Zeroizing::new(raw.to_vec()))
    }

    #[test]
    fn url_encoding_follows_the_service_documentation() {
        assert_eq!(
            url_encode("0ne00000001/registrations/dev-1"),
            "0ne00000001%2fregistrations%2fdev-1"
        );
        assert_eq!(url_encode("a+b=c/ d"), "a%2bb%3dc%2f%20d");
        assert_eq!(url_encode("AZaz09-_.!()*~'"), "AZaz09-_.!()*~'");
        assert_eq!(url_encode("é"), "%c3%a9");
    }

    /// The drift test that used to compare the client's and the emulator's copies: a token
    /// built through a signer (the client's path, the key in an HSM) is the token built from a
    /// base64 key (the service's tools), and it parses and verifies on the service side.
    #[test]
    fn device_built_tokens_verify_on_the_service_side() {
        let raw = B64.decode(KEY).unwrap_or_default();
        for resource in [
            dps_resource("0ne00000001", "dev-1.a_b:c"),
            hub_resource("h.azure-devices.net", "d'1~x"),
            "mydps.azure-devices-provisioning.net".to_string(),
        ] {
            let via_signer = build_token(&key_signer(&raw), &resource, 2_000_000_000, Some("k"))
                .unwrap_or_else(|e| match e {});
            let via_b64 = create_token(&resource, KEY, Some("k"), 2_000_000_000);
            assert_eq!(via_b64.as_ref(), Ok(&via_signer));
            let parsed = SasToken::parse(&via_signer).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(parsed.sr, resource);
            assert_eq!(
                parsed.check_claims(Some(&resource), Some("k"), 1_000),
                Ok(())
            );
            assert_eq!(parsed.verify_signature_b64(KEY), Ok(()));
            assert_eq!(parsed.verify_signature_raw(&raw), Ok(()));
        }
        // A group member's derived key signs tokens the group key verifies through derivation.
        let device_key = crate::group_key::derive_device_key(&raw, "member-1");
        let t = build_token(
            &key_signer(&device_key),
            &dps_resource("0ne00000001", "member-1"),
            2_000_000_000,
            Some(DEVICE_KEY_NAME),
        )
        .unwrap_or_else(|e| match e {});
        let derived_b64 = crate::group_key::derive_device_key_b64(KEY, "member-1")
            .unwrap_or_else(|e| panic!("{e}"));
        let parsed = SasToken::parse(&t).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(parsed.verify_signature_b64(&derived_b64), Ok(()));
    }

    #[test]
    fn token_verifies_with_an_independent_hmac() {
        let key = b"0123456789abcdef0123456789abcdef".to_vec();
        let t = build_token(
            &key_signer(&key),
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
        let expected =
            url_encode(&B64.encode(hmac_sha256(&key, b"scope%2fregistrations%2fr1\n1700000000")));
        assert_eq!(sig_enc, expected);
    }

    #[test]
    fn hub_token_has_no_key_name_when_none_is_given() {
        let t = build_token(
            &key_signer(&[7; 32]),
            &hub_resource("h.azure-devices.net", "d1"),
            5,
            None,
        )
        .unwrap_or_else(|e| match e {});
        assert!(t.contains("sr=h.azure-devices.net%2fdevices%2fd1&"));
        assert!(!t.contains("skn="));
    }

    #[test]
    fn round_trip_verifies_and_tamper_fails() {
        let t = create_token(
            "0ne000/registrations/dev-1",
            KEY,
            Some("registration"),
            2_000_000_000,
        )
        .unwrap_or_default();
        assert!(t.contains("sr=0ne000%2fregistrations%2fdev-1"));
        let p = SasToken::parse(&t).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            p.check_claims(
                Some("0ne000/registrations/dev-1"),
                Some("registration"),
                1_000,
            ),
            Ok(())
        );
        let other = B64.encode(b"another key");
        assert_eq!(p.verify_signature_b64(&other), Err(SasError::BadSignature));
        assert_eq!(
            p.check_claims(Some("0ne000/registrations/dev-2"), None, 1_000),
            Err(SasError::WrongScope)
        );
        assert_eq!(
            p.check_claims(None, None, 2_000_000_000),
            Err(SasError::Expired)
        );
        assert_eq!(
            create_token("r", "%%%", None, 1).map(|_| ()),
            Err(SasError::BadKey)
        );
    }

    #[test]
    fn malformed_tokens_are_typed_errors() {
        for bad in [
            "",
            "Bearer x",
            "SharedAccessSignature sr",
            "SharedAccessSignature sr=a&se=1",
            "SharedAccessSignature sr=a&sig=%%%&se=1",
            "SharedAccessSignature sr=a&sig=AA==&se=x",
            "SharedAccessSignature sr=a&sr=b&sig=AA==&se=1",
        ] {
            assert!(
                matches!(SasToken::parse(bad), Err(SasError::Malformed(_))),
                "{bad}"
            );
        }
    }
}
