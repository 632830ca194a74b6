//! The one error type of the wire library.

/// Everything that can be wrong with TPM wire data or with the crypto over it.
///
/// Messages name the structure and the field, never secret bytes.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum TpmWireError {
    /// The input ended before a structure was complete.
    #[error("truncated {what}: needed {needed} more bytes, {available} left")]
    Truncated {
        /// The structure or field being read.
        what: &'static str,
        /// Bytes the field needs.
        needed: usize,
        /// Bytes that were left in the input.
        available: usize,
    },
    /// Bytes were left over after a structure that must fill its whole buffer.
    #[error("{count} unexpected trailing bytes after {what}")]
    TrailingBytes {
        /// The structure that should have ended the input.
        what: &'static str,
        /// Number of unread bytes.
        count: usize,
    },
    /// A size field exceeds what the TPM structure allows.
    #[error("{what} is {size} bytes, more than the allowed {max}")]
    TooLarge {
        /// The structure or field.
        what: &'static str,
        /// Its size.
        size: usize,
        /// The maximum allowed.
        max: usize,
    },
    /// An algorithm identifier this library does not handle in that position.
    #[error("unsupported {what} algorithm 0x{alg:04x}")]
    UnsupportedAlgorithm {
        /// Where the algorithm appeared.
        what: &'static str,
        /// The TPM_ALG_ID value.
        alg: u16,
    },
    /// A well-formed structure whose content is not acceptable here.
    #[error("invalid {what}: {reason}")]
    Invalid {
        /// The structure or field.
        what: &'static str,
        /// Why it is refused.
        reason: &'static str,
    },
    /// An HMAC over a credential or duplication blob did not verify: the blob was not made
    /// for this key, or it was altered.
    #[error("integrity check failed for {what}")]
    IntegrityCheckFailed {
        /// The blob whose HMAC failed.
        what: &'static str,
    },
    /// An RSA operation failed (bad key, decryption error).
    #[error("RSA {operation} failed")]
    Rsa {
        /// Which operation.
        operation: &'static str,
    },
    /// An ECC operation failed (point not on the curve, bad scalar).
    #[error("ECC {operation} failed")]
    Ecc {
        /// Which operation.
        operation: &'static str,
    },
}

/// Shorthand for results of this crate.
pub type Result<T> = std::result::Result<T, TpmWireError>;
