//! The crate's one error type and the mapping of PKCS#11 return values onto the ABI's codes.
//!
//! Messages name the `CKR_` value and the `C_` function so that a field engineer can look the
//! failure up in the PKCS#11 specification; they never carry a PIN or key bytes.

use cryptoki::error::{Error as CkError, RvError};

/// The ABI's error codes: this crate's errors are the SDK's own `HsmError`, so a token failure
/// reaches the host with no second mapping.
pub use hsm_plugin_sdk::ErrorCode as ErrorKind;

/// An error of the PKCS#11 backend: the SDK's error (an ABI code and a readable message).
pub type Pkcs11Error = hsm_plugin_sdk::HsmError;

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, Pkcs11Error>;

/// Wraps an error from cryptoki, prefixed with what we were doing.
pub fn from_cryptoki(context: &str, err: CkError) -> Pkcs11Error {
    match err {
        CkError::Pkcs11(rv, function) => Pkcs11Error::new(
            kind_of(rv),
            format!("{context}: {} from C_{function:?}", ckr_name(rv)),
        ),
        CkError::LibraryLoading(e) => {
            Pkcs11Error::device(format!("{context}: cannot load the PKCS#11 module: {e}"))
        }
        CkError::NullFunctionPointer | CkError::MissingSymbol(_) | CkError::NotSupported => {
            Pkcs11Error::not_supported(format!("{context}: {err}"))
        }
        other => Pkcs11Error::internal(format!("{context}: {other}")),
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
        let e = crate::error::from_cryptoki(
            "login",
            CkError::Pkcs11(RvError::PinIncorrect, Function::Login),
        );
        assert_eq!(e.code(), ErrorKind::Authentication);
        assert_eq!(e.message(), "login: CKR_PIN_INCORRECT from C_Login");
    }
}
