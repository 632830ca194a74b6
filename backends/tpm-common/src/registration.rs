//! The DPS registration id of a TPM device.

use sha2::{Digest, Sha256};

/// Lowercase RFC 4648 base32 without padding of SHA-256(ek_tpm2b_public bytes): 52 chars.
pub fn registration_id_from_ek(ek_tpm2b_public: &[u8]) -> String {
    data_encoding::BASE32_NOPAD
        .encode(&Sha256::digest(ek_tpm2b_public))
        .to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registration_id_known_answer() {
        // SHA-256("") = e3b0c442...; its base32 computed independently (python base64.b32encode).
        assert_eq!(
            registration_id_from_ek(b""),
            "4oymiquy7qobjgx36tejs35zeqt24qpemsnzgtfeswmrw6csxbkq"
        );
        assert_eq!(registration_id_from_ek(b"ek").len(), 52);
    }
}
