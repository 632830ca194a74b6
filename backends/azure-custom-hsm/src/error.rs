//! What can go wrong with a hosted custom-HSM library, each naming the library and, for calls,
//! the contract function that misbehaved.

use hsm_plugin_sdk::{ErrorCode, HsmError};
use std::path::PathBuf;

/// A failure of the hosted library or of loading it.
#[derive(Debug, thiserror::Error)]
pub enum LibraryError {
    /// The `library` setting names a file the plugin rules refuse (owner, mode, folders).
    #[error("custom-HSM library {reason}")]
    Untrusted {
        /// The secure-fs verdict, naming the path and the fix.
        reason: String,
    },
    /// The file passed the checks but `dlopen` refused it.
    #[error("custom-HSM library {path}: cannot load it: {reason}")]
    Load {
        /// The library.
        path: PathBuf,
        /// What the dynamic loader said.
        reason: String,
    },
    /// None of the three interface symbols is exported.
    #[error("custom-HSM library {path} exports none of hsm_client_tpm_interface, hsm_client_x509_interface, hsm_client_key_interface: it is not a custom-HSM library")]
    NoInterface {
        /// The library.
        path: PathBuf,
    },
    /// An interface function returned NULL instead of its table.
    #[error(
        "custom-HSM library {path}: {function}() returned NULL instead of its interface table"
    )]
    NullTable {
        /// The library.
        path: PathBuf,
        /// The interface symbol.
        function: &'static str,
    },
    /// An interface table has NULL members.
    #[error("custom-HSM library {path}: {function}() returned a table with NULL members ({members}); the C SDK refuses such a table")]
    NullMembers {
        /// The library.
        path: PathBuf,
        /// The interface symbol.
        function: &'static str,
        /// The NULL members, comma-separated, in member order.
        members: String,
    },
    /// The interface is not exported by the library.
    #[error("custom-HSM library {path} does not export {symbol}: it has no {interface} interface")]
    Absent {
        /// The library.
        path: PathBuf,
        /// The missing symbol.
        symbol: &'static str,
        /// `TPM`, `X.509` or `symmetric-key`.
        interface: &'static str,
    },
    /// An init function answered non-zero (when the library was loaded; it is not retried).
    #[error("custom-HSM library {path}: {function}() returned {code} when the library was loaded")]
    InitFailed {
        /// The library.
        path: PathBuf,
        /// `hsm_client_tpm_init` or `hsm_client_x509_init`.
        function: &'static str,
        /// Its result.
        code: i32,
    },
    /// A call answered non-zero.
    #[error("custom-HSM library {path}: {function} returned {code}")]
    Failed {
        /// The library.
        path: PathBuf,
        /// The table member.
        function: &'static str,
        /// Its result.
        code: i32,
    },
    /// A call answered NULL (a create, or a getter: the contract's failure).
    #[error("custom-HSM library {path}: {function} returned NULL")]
    Null {
        /// The library.
        path: PathBuf,
        /// The table member.
        function: &'static str,
    },
    /// A call answered success with an output the contract does not allow.
    #[error("custom-HSM library {path}: {function} returned {what}")]
    Malformed {
        /// The library.
        path: PathBuf,
        /// The table member.
        function: &'static str,
        /// What was wrong with it.
        what: String,
    },
}

impl LibraryError {
    /// The ABI code: a refused or unusable library is a setting problem, an absent interface
    /// is not supported, a misbehaving call is a device failure.
    pub fn code(&self) -> ErrorCode {
        match self {
            LibraryError::Untrusted { .. }
            | LibraryError::Load { .. }
            | LibraryError::NoInterface { .. }
            | LibraryError::NullTable { .. }
            | LibraryError::NullMembers { .. } => ErrorCode::InvalidArgument,
            LibraryError::Absent { .. } => ErrorCode::NotSupported,
            LibraryError::InitFailed { .. }
            | LibraryError::Failed { .. }
            | LibraryError::Null { .. }
            | LibraryError::Malformed { .. } => ErrorCode::Device,
        }
    }
}

impl From<LibraryError> for HsmError {
    fn from(e: LibraryError) -> Self {
        HsmError::new(e.code(), e.to_string())
    }
}
