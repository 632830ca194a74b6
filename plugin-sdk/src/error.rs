//! The error a plugin returns; its code is the ABI's [`ErrorCode`].

use std::fmt;

/// What kind of failure an [`HsmError`] is: the ABI's own status enum, so that the SDK, the
/// host and the conformance harness map codes in one place (`hsm_api::ErrorCode`).
/// [`ErrorCode::Panic`] and [`ErrorCode::AbiMismatch`] are what the SDK itself returns; a
/// plugin has no reason to pick them.
pub use hsm_api::ErrorCode;

/// A failure inside a plugin: a code and a message for people. Messages never carry secrets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HsmError {
    code: ErrorCode,
    message: String,
}

impl HsmError {
    /// A new error of kind `code`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        HsmError {
            code,
            message: message.into(),
        }
    }
    /// [`ErrorCode::InvalidArgument`].
    pub fn invalid_argument(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidArgument, message)
    }
    /// [`ErrorCode::NotSupported`].
    pub fn not_supported(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotSupported, message)
    }
    /// [`ErrorCode::NotFound`].
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }
    /// [`ErrorCode::Device`].
    pub fn device(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Device, message)
    }
    /// [`ErrorCode::Authentication`].
    pub fn authentication(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Authentication, message)
    }
    /// [`ErrorCode::InvalidState`].
    pub fn invalid_state(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidState, message)
    }
    /// [`ErrorCode::Internal`].
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Internal, message)
    }
    /// The kind of failure.
    pub fn code(&self) -> ErrorCode {
        self.code
    }
    /// The message for people.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for HsmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for HsmError {}

impl From<std::io::Error> for HsmError {
    fn from(e: std::io::Error) -> Self {
        HsmError::device(format!("I/O error: {e}"))
    }
}
