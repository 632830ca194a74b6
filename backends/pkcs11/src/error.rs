//! The crate's one error type and the mapping of PKCS#11 return values onto the ABI's codes.
//!
//! Messages name the `CKR_` value and the `C_` function so that a field engineer can look the
//! failure up in the PKCS#11 specification; they never carry a PIN or key bytes.

use cryptoki::error::{Error as CkError, RvError};

/// Which ABI error code an error maps to (mirrors `hsm_plugin_sdk::ErrorCode`, kept separate so
/// the token logic can be used and tested without the plugin layer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// Bad configuration, URI or argument.
    InvalidArgument,
    /// The token or this plugin does not support the operation.
    NotSupported,
    /// A token, key or certificate does not exist.
    NotFound,
    /// The module or token failed or is gone.
    Device,
    /// Wrong or locked PIN, or not logged in.
    Authentication,
    /// The operation does not fit the current state.
    InvalidState,
    /// A bug or unexpected condition in this plugin.
    Internal,
}

/// An error of the PKCS#11 backend: a kind for the ABI and a readable message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Pkcs11Error {
    kind: ErrorKind,
    message: String,
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, Pkcs11Error>;

impl Pkcs11Error {
    /// An error of the given kind.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    /// Bad configuration, URI or argument.
    pub fn invalid_argument(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidArgument, message)
    }

    /// Something that does not exist.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }

    /// Refused or unsupported operation.
    pub fn not_supported(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotSupported, message)
    }

    /// Unexpected condition inside the plugin.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }

    /// Failure of the module or token outside the PKCS#11 return values.
    pub fn device(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Device, message)
    }

    /// Wraps an error from cryptoki, prefixed with what we were doing.
    pub fn from_cryptoki(context: &str, err: CkError) -> Self {
        match err {
            CkError::Pkcs11(rv, function) => Self::new(
                kind_of(rv),
                format!("{context}: {} from C_{function:?}", ckr_name(rv)),
            ),
            CkError::LibraryLoading(e) => {
                Self::device(format!("{context}: cannot load the PKCS#11 module: {e}"))
            }
            CkError::NullFunctionPointer | CkError::MissingSymbol(_) | CkError::NotSupported => {
                Self::not_supported(format!("{context}: {err}"))
            }
            other => Self::internal(format!("{context}: {other}")),
        }
    }

    /// The ABI kind.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The readable message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// Maps a PKCS#11 return value onto the ABI's error kinds.
pub fn kind_of(rv: RvError) -> ErrorKind {
    use RvError as R;
    match rv {
        R::PinIncorrect
        | R::PinInvalid
        | R::PinLenRange
        | R::PinExpired
        | R::PinLocked
        | R::UserNotLoggedIn
        | R::UserPinNotInitialized
        | R::UserTypeInvalid
        | R::UserAnotherAlreadyLoggedIn => ErrorKind::Authentication,
        R::ObjectHandleInvalid | R::KeyHandleInvalid | R::SlotIdInvalid => ErrorKind::NotFound,
        R::MechanismInvalid
        | R::MechanismParamInvalid
        | R::FunctionNotSupported
        | R::CurveNotSupported
        | R::KeyFunctionNotPermitted
        | R::KeySizeRange => ErrorKind::NotSupported,
        R::ArgumentsBad
        | R::DataInvalid
        | R::DataLenRange
        | R::AttributeValueInvalid
        | R::AttributeTypeInvalid
        | R::TemplateIncomplete
        | R::TemplateInconsistent
        | R::KeyTypeInconsistent => ErrorKind::InvalidArgument,
        R::CryptokiNotInitialized | R::OperationActive | R::OperationNotInitialized => {
            ErrorKind::InvalidState
        }
        R::HostMemory => ErrorKind::Internal,
        // Token gone, device errors, general failures: the hardware is the problem.
        _ => ErrorKind::Device,
    }
}

/// The specification's name of a return value, such as `CKR_PIN_INCORRECT`.
///
/// cryptoki only offers long descriptions; its variant names are the CamelCase form of the
/// `CKR_` names, so the name is rebuilt from them.
pub fn ckr_name(rv: RvError) -> String {
    match rv {
        RvError::VendorDefined(v) => format!("CKR_VENDOR_DEFINED(0x{v:08x})"),
        RvError::UnknownErrorCode(v) => format!("unknown CK_RV 0x{v:08x}"),
        other => {
            let camel = format!("{other:?}");
            let mut name = String::from("CKR");
            for c in camel.chars() {
                if c.is_ascii_uppercase() {
                    name.push('_');
                }
                name.push(c.to_ascii_uppercase());
            }
            name
        }
    }
}

impl From<Pkcs11Error> for hsm_plugin_sdk::HsmError {
    fn from(e: Pkcs11Error) -> Self {
        use hsm_plugin_sdk::ErrorCode;
        let code = match e.kind {
            ErrorKind::InvalidArgument => ErrorCode::InvalidArgument,
            ErrorKind::NotSupported => ErrorCode::NotSupported,
            ErrorKind::NotFound => ErrorCode::NotFound,
            ErrorKind::Device => ErrorCode::Device,
            ErrorKind::Authentication => ErrorCode::Authentication,
            ErrorKind::InvalidState => ErrorCode::InvalidState,
            ErrorKind::Internal => ErrorCode::Internal,
        };
        hsm_plugin_sdk::HsmError::new(code, e.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cryptoki::context::Function;

    #[test]
    fn names_follow_the_specification() {
        assert_eq!(ckr_name(RvError::PinIncorrect), "CKR_PIN_INCORRECT");
        assert_eq!(
            ckr_name(RvError::CryptokiAlreadyInitialized),
            "CKR_CRYPTOKI_ALREADY_INITIALIZED"
        );
        assert_eq!(ckr_name(RvError::TokenNotPresent), "CKR_TOKEN_NOT_PRESENT");
        assert_eq!(
            ckr_name(RvError::VendorDefined(0x8000_0001)),
            "CKR_VENDOR_DEFINED(0x80000001)"
        );
    }

    #[test]
    fn kinds_follow_the_issue() {
        assert_eq!(kind_of(RvError::PinIncorrect), ErrorKind::Authentication);
        assert_eq!(kind_of(RvError::PinLenRange), ErrorKind::Authentication);
        assert_eq!(kind_of(RvError::ObjectHandleInvalid), ErrorKind::NotFound);
        assert_eq!(kind_of(RvError::MechanismInvalid), ErrorKind::NotSupported);
        assert_eq!(kind_of(RvError::TokenNotPresent), ErrorKind::Device);
        assert_eq!(kind_of(RvError::DeviceRemoved), ErrorKind::Device);
        assert_eq!(kind_of(RvError::DeviceError), ErrorKind::Device);
    }

    #[test]
    fn message_names_value_and_function() {
        let e = Pkcs11Error::from_cryptoki(
            "login",
            CkError::Pkcs11(RvError::PinIncorrect, Function::Login),
        );
        assert_eq!(e.kind(), ErrorKind::Authentication);
        assert_eq!(e.message(), "login: CKR_PIN_INCORRECT from C_Login");
    }
}
