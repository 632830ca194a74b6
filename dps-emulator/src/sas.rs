//! Shared access signatures as DPS uses them: parsing, verification, and (for tests, the CLI and
//! the bench) creation. `sig` is base64(HMAC-SHA256(key, "<sr as sent>\n<se>")).

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

/// Why a token was refused. The messages name no key or signature material.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
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

/// DPS's URL encoding: unreserved characters kept, the rest as lowercase `%xx` (like the C SDK and
/// `encodeURIComponent` plus `!'()*`).
pub fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.!()*~'".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02x}"));
        }
    }
    out
}

fn url_decode(s: &str) -> Result<String, SasError> {
    percent_encoding::percent_decode_str(&s.replace('+', " "))
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| SasError::Malformed("a field is not valid UTF-8 after decoding"))
}

/// The HMAC-SHA256 of `data` with a base64 key, base64-encoded.
pub fn sign_b64(key_b64: &str, data: &[u8]) -> Result<String, SasError> {
    let key = Zeroizing::new(B64.decode(key_b64.trim()).map_err(|_| SasError::BadKey)?);
    Ok(B64.encode(hmac_sha256(&key, data)))
}

/// Raw HMAC-SHA256.
pub fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    // new_from_slice accepts any key length for HMAC, so this cannot fail.
    let mut mac = match <Hmac<Sha256> as Mac>::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    };
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// The device key of a symmetric-key group member: base64(HMAC-SHA256(b64decode(group key), id)).
pub fn derive_device_key(group_key_b64: &str, registration_id: &str) -> Result<String, SasError> {
    sign_b64(group_key_b64, registration_id.as_bytes())
}

/// Builds a token for `resource` (not yet encoded) with a base64 key.
pub fn create_token(
    resource: &str,
    key_b64: &str,
    key_name: Option<&str>,
    expiry_unix: u64,
) -> Result<String, SasError> {
    let sr = url_encode(resource);
    let sig = sign_b64(key_b64, format!("{sr}\n{expiry_unix}").as_bytes())?;
    let mut t = format!(
        "SharedAccessSignature sr={sr}&sig={}&se={expiry_unix}",
        url_encode(&sig)
    );
    if let Some(k) = key_name {
        t.push_str("&skn=");
        t.push_str(&url_encode(k));
    }
    Ok(t)
}

impl SasToken {
    /// Parses an Authorization header value.
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

    #[test]
    fn round_trip_verifies_and_tamper_fails() {
        let t = create_token(
            "0ne000/registrations/dev-1",
            KEY,
            Some("registration"),
            2_000_000_000,
        )
        .unwrap();
        assert!(t.contains("sr=0ne000%2fregistrations%2fdev-1"));
        let p = SasToken::parse(&t).unwrap();
        p.check_claims(
            Some("0ne000/registrations/dev-1"),
            Some("registration"),
            1_000,
        )
        .unwrap();
        p.verify_signature_b64(KEY).unwrap();
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

    #[test]
    fn group_key_derivation_matches_the_documented_formula() {
        // base64(HMAC-SHA256(b64decode(group key), registration id)), computed independently.
        let derived = derive_device_key(KEY, "dev-1").unwrap();
        let raw = B64.decode(KEY).unwrap();
        let expect = {
            let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&raw).unwrap();
            m.update(b"dev-1");
            B64.encode(m.finalize().into_bytes())
        };
        assert_eq!(derived, expect);
        assert_ne!(derived, derive_device_key(KEY, "dev-2").unwrap());
    }
}
