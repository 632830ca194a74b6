//! Ids in DPS paths: registration ids, id scopes, device ids, operation ids.

use sha2::{Digest, Sha256};

/// The longest id DPS accepts.
pub const MAX_ID_LEN: usize = 128;

/// The characters allowed besides ASCII letters and digits.
const ID_SPECIALS: &[u8] = b"-._:";

/// What [`is_valid_id`] checks, in words, for error messages.
pub const ID_RULE: &str = "1-128 characters of a-z A-Z 0-9 - . _ :";

/// DPS's rule for ids in paths: 1-128 of `a-z A-Z 0-9 - . _ :`. An id that passes needs no
/// escaping in a URL path (but see [`survives_url_normalisation`] for `.` and `..`).
///
/// The REST reference also says special characters may not start or end an id
/// (<https://learn.microsoft.com/rest/api/iot-dps/device/runtime-registration/register-device>,
/// `registrationId`); that is not enforced here, as neither the client nor the emulator ever
/// did, and enforcing it would refuse ids that work today.
pub fn is_valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || ID_SPECIALS.contains(&b))
}

/// Whether `segment` reaches the server unchanged as one path segment after `base` (an
/// `https://host[:port]` URL). URL normalisation (RFC 3986 section 5.2.4 "Remove Dot
/// Segments", which URL parsers, proxies and servers apply) drops `.` and resolves `..`, so a
/// registration id like `..` would send the request to another path than the one its SAS
/// scope names. Checked by building a URL and comparing the parsed path, so any other
/// rewriting is caught too.
pub fn survives_url_normalisation(base: &str, segment: &str) -> bool {
    let expected = format!("/probe/{segment}/probe");
    url::Url::parse(&format!("{base}{expected}")).is_ok_and(|u| u.path() == expected)
}

/// The TPM registration id: lowercase unpadded RFC 4648 base32 of SHA-256 of the marshalled
/// EK (`TPM2B_PUBLIC`), 52 characters; the Azure IoT C SDK's rule
/// (`prov_auth_client.c`, `tpm_device_provision`).
pub fn tpm_registration_id(ek_tpm2b_public: &[u8]) -> String {
    data_encoding::BASE32_NOPAD
        .encode(&Sha256::digest(ek_tpm2b_public))
        .to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_checked() {
        assert!(is_valid_id("dev-1.a_b:c"));
        assert!(is_valid_id(&"a".repeat(128)));
        assert!(!is_valid_id("a/b"));
        assert!(!is_valid_id(""));
        assert!(!is_valid_id("é"));
        assert!(!is_valid_id(&"a".repeat(129)));
    }

    #[test]
    fn dot_segments_do_not_survive_normalisation() {
        let base = "https://127.0.0.1:8443";
        for bad in [".", ".."] {
            assert!(
                is_valid_id(bad),
                "the character rule alone lets {bad} through"
            );
            assert!(!survives_url_normalisation(base, bad), "{bad}");
        }
        for good in ["...", "a..b", ".a", "a.", "dev-1:x", "0ne00000001"] {
            assert!(survives_url_normalisation(base, good), "{good}");
        }
    }

    #[test]
    fn tpm_registration_id_known_answer() {
        // SHA-256("") base32, computed independently (python base64.b32encode).
        assert_eq!(
            tpm_registration_id(b""),
            "4oymiquy7qobjgx36tejs35zeqt24qpemsnzgtfeswmrw6csxbkq"
        );
        assert_eq!(tpm_registration_id(b"ek").len(), 52);
    }
}
