//! The error a plugin returns, and its mapping to ABI status codes.

use hsm_api as abi;
use std::fmt;

/// What kind of failure an [`HsmError`] is; maps one to one to the ABI's `HSM_ERR_*` codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// An argument was missing, malformed or out of range.
    InvalidArgument,
    /// The operation is not implemented, or refused by policy.
    NotSupported,
    /// A key, certificate, token or object does not exist.
    NotFound,
    /// The hardware, its driver or the file system failed.
    Device,
    /// Authentication to the device failed.
    Authentication,
    /// The operation is not valid in the current state.
    InvalidState,
    /// A bug or unexpected condition.
    Internal,
}

impl ErrorCode {
    /// The ABI status code for this kind of failure.
    pub fn status(self) -> abi::HsmStatus {
        match self {
            ErrorCode::InvalidArgument => abi::HSM_ERR_INVALID_ARGUMENT,
            ErrorCode::NotSupported => abi::HSM_ERR_NOT_SUPPORTED,
            ErrorCode::NotFound => abi::HSM_ERR_NOT_FOUND,
            ErrorCode::Device => abi::HSM_ERR_DEVICE,
            ErrorCode::Authentication => abi::HSM_ERR_AUTHENTICATION,
            ErrorCode::InvalidState => abi::HSM_ERR_INVALID_STATE,
            ErrorCode::Internal => abi::HSM_ERR_INTERNAL,
        }
    }
}

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
