//! The Rust view of the status codes: one enum that the SDK, the host and the conformance
//! harness all read, so that a code, its C name and its readable name are written once.

use crate::status::*;
use std::fmt;

/// Declares [`ErrorCode`] and every conversion from one list, so that adding a code is one
/// row here and no mapping can forget it.
macro_rules! error_codes {
    ($( $(#[$doc:meta])* $variant:ident = $code:ident, $name:literal; )*) => {
        /// Why a call failed: every `HSM_ERR_*` status as a Rust enum.
        ///
        /// A plugin built with the SDK returns one through its `HsmError`; the host reads one
        /// from every failed call. Codes this side does not know (from a newer ABI minor or a
        /// broken plugin) are kept as [`ErrorCode::Unknown`] and, as the ABI says, treated like
        /// [`ErrorCode::Internal`].
        // Non-exhaustive: a later ABI minor may add codes.
        #[non_exhaustive]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $( $(#[$doc])* $variant, )*
            /// A status this side does not know, with its raw value.
            Unknown(HsmStatus),
        }

        impl ErrorCode {
            /// The code of a status already known to be a failure (not `HSM_OK`, which
            /// would come back as `Unknown(HSM_OK)`); see [`ErrorCode::check`] otherwise.
            pub const fn from_status(status: HsmStatus) -> Self {
                match status {
                    $( $code => Self::$variant, )*
                    other => Self::Unknown(other),
                }
            }

            /// The raw status. Never `HSM_OK`: `Unknown(HSM_OK)` becomes `HSM_ERR_INTERNAL`,
            /// so that an error can never reach the other side as a success.
            pub const fn status(self) -> HsmStatus {
                match self {
                    $( Self::$variant => $code, )*
                    Self::Unknown(HSM_OK) => HSM_ERR_INTERNAL,
                    Self::Unknown(other) => other,
                }
            }

            /// The C name (`HSM_ERR_NOT_FOUND`); `None` for an unknown code.
            pub const fn c_name(self) -> Option<&'static str> {
                match self {
                    $( Self::$variant => Some(stringify!($code)), )*
                    Self::Unknown(_) => None,
                }
            }

            /// The stable readable name used in messages and JSON (`not-found`).
            pub const fn as_str(self) -> &'static str {
                match self {
                    $( Self::$variant => $name, )*
                    Self::Unknown(_) => "unknown",
                }
            }
        }
    };
}

error_codes! {
    /// `HSM_ERR_INVALID_ARGUMENT`: an argument was missing, malformed or out of range.
    InvalidArgument = HSM_ERR_INVALID_ARGUMENT, "invalid-argument";
    /// `HSM_ERR_NOT_SUPPORTED`: the operation is not implemented, or refused by policy.
    NotSupported = HSM_ERR_NOT_SUPPORTED, "not-supported";
    /// `HSM_ERR_NOT_FOUND`: a key, certificate, token or object does not exist.
    NotFound = HSM_ERR_NOT_FOUND, "not-found";
    /// `HSM_ERR_DEVICE`: the hardware, its driver or the file system failed.
    Device = HSM_ERR_DEVICE, "device-error";
    /// `HSM_ERR_AUTHENTICATION`: authentication to the device failed.
    Authentication = HSM_ERR_AUTHENTICATION, "authentication";
    /// `HSM_ERR_INVALID_STATE`: the operation is not valid in the current state.
    InvalidState = HSM_ERR_INVALID_STATE, "invalid-state";
    /// `HSM_ERR_INTERNAL`: a bug or unexpected condition.
    Internal = HSM_ERR_INTERNAL, "internal";
    /// `HSM_ERR_PANIC`: the plugin panicked and the panic was caught at the boundary.
    Panic = HSM_ERR_PANIC, "panic";
    /// `HSM_ERR_ABI_MISMATCH`: host and plugin speak different ABI majors.
    AbiMismatch = HSM_ERR_ABI_MISMATCH, "abi-mismatch";
}

impl ErrorCode {
    /// `Ok` for `HSM_OK`, else the code of the failure.
    pub const fn check(status: HsmStatus) -> Result<(), ErrorCode> {
        match status {
            HSM_OK => Ok(()),
            failed => Err(ErrorCode::from_status(failed)),
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unknown(code) => write!(f, "unknown status {code}"),
            known => f.write_str(known.as_str()),
        }
    }
}

/// The C name of any raw status, `HSM_OK` included, for reports that print what a plugin
/// returned (`HSM_ERR_NOT_FOUND`, or `unknown status 42`).
pub fn status_name(status: HsmStatus) -> String {
    match ErrorCode::check(status) {
        Ok(()) => "HSM_OK".into(),
        Err(code) => match code.c_name() {
            Some(name) => name.into(),
            None => code.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_raw_code_round_trips_and_is_named() {
        assert_eq!(ErrorCode::check(HSM_OK), Ok(()));
        for raw in HSM_ERR_INVALID_ARGUMENT..=HSM_ERR_ABI_MISMATCH {
            let code = ErrorCode::from_status(raw);
            assert_eq!(ErrorCode::check(raw), Err(code));
            assert_eq!(code.status(), raw);
            assert!(!matches!(code, ErrorCode::Unknown(_)), "{raw} is known");
            assert!(code.c_name().is_some_and(|n| n.starts_with("HSM_ERR_")));
            assert_eq!(status_name(raw), code.c_name().unwrap());
        }
        assert_eq!(
            ErrorCode::from_status(HSM_ERR_NOT_FOUND).as_str(),
            "not-found"
        );
        assert_eq!(status_name(HSM_OK), "HSM_OK");
    }

    #[test]
    fn unknown_codes_keep_their_value_and_never_read_as_success() {
        let odd = ErrorCode::from_status(42);
        assert_eq!(odd, ErrorCode::Unknown(42));
        assert_eq!(odd.status(), 42);
        assert_eq!(odd.to_string(), "unknown status 42");
        assert_eq!(status_name(42), "unknown status 42");
        assert_eq!(ErrorCode::from_status(HSM_OK).status(), HSM_ERR_INTERNAL);
    }
}
