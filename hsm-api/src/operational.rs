//! The Rust view of the operational-key rules (ABI 1.2) that both sides check.

/// The longest operational-key label, in bytes.
pub const OPERATIONAL_KEY_LABEL_MAX: usize = 64;

/// Whether `label` names an operational key: 1 to [`OPERATIONAL_KEY_LABEL_MAX`] ASCII
/// letters, digits, `-`, `_` or `.`, so that every backend can use it as a file name, a
/// PKCS#11 `CKA_LABEL` or a derivation label without escaping, and `.`/`..` are refused.
pub fn is_valid_operational_key_label(label: &str) -> bool {
    !label.is_empty()
        && label.len() <= OPERATIONAL_KEY_LABEL_MAX
        && label != "."
        && label != ".."
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_short_portable_names() {
        assert!(is_valid_operational_key_label("hub-operational"));
        assert!(is_valid_operational_key_label("op_1.v2"));
        assert!(is_valid_operational_key_label(&"a".repeat(64)));
        for bad in ["", ".", "..", "a/b", "a b", "é", &"a".repeat(65)] {
            assert!(!is_valid_operational_key_label(bad), "{bad:?}");
        }
    }
}
