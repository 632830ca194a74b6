//! Errors from loading plugins and from calls into them.

use std::path::PathBuf;

/// Why a plugin file was refused. Every variant names the file and says what to do.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The path does not exist or cannot be read.
    #[error("{path}: cannot read: {error}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said (in the message, so not also the `source()`).
        error: std::io::Error,
    },
    /// Not a regular file (a folder, a device, a socket...).
    #[error("{path}: not a regular file")]
    NotRegularFile {
        /// The file.
        path: PathBuf,
    },
    /// Other users could replace or change the file or its folder.
    #[error("{path}: refused because {reason}")]
    InsecurePermissions {
        /// The file.
        path: PathBuf,
        /// Which permission is wrong and how to fix it.
        reason: String,
    },
    /// The file is not an ELF shared library.
    #[error("{path}: not a shared library ({reason})")]
    NotSharedLibrary {
        /// The file.
        path: PathBuf,
        /// What was found instead.
        reason: String,
    },
    /// An ELF file built for another machine.
    #[error("{path}: built for {found}, this host is {expected}")]
    WrongArchitecture {
        /// The file.
        path: PathBuf,
        /// The host's architecture.
        expected: String,
        /// The file's architecture.
        found: String,
    },
    /// The dynamic loader refused the file.
    #[error("{path}: dlopen failed: {message}")]
    Dlopen {
        /// The file.
        path: PathBuf,
        /// The loader's message.
        message: String,
    },
    /// The library has no `hsm_plugin_entry` symbol.
    #[error("{path}: no `{symbol}` symbol: not an hsmkit plugin (export it with C linkage, or use hsm_plugin_sdk::export_plugin!)")]
    MissingEntry {
        /// The file.
        path: PathBuf,
        /// The symbol looked for.
        symbol: &'static str,
    },
    /// Host and plugin speak different ABI majors.
    #[error("{path}: plugin ABI {plugin_major}.{plugin_minor} is incompatible with host ABI {host_major}.{host_minor} (major versions differ); rebuild the plugin against hsm-api {host_major}.x")]
    AbiMajorMismatch {
        /// The file.
        path: PathBuf,
        /// Plugin's major.
        plugin_major: u16,
        /// Plugin's minor.
        plugin_minor: u16,
        /// Host's major.
        host_major: u16,
        /// Host's minor.
        host_minor: u16,
    },
    /// The abi_stable layout check found a difference.
    #[error("{path}: type layout differs from the host's hsm-api: {details}")]
    LayoutMismatch {
        /// The file.
        path: PathBuf,
        /// abi_stable's report, naming the type and field.
        details: String,
    },
    /// The plugin panicked inside its entry point.
    #[error("{path}: the plugin panicked in its entry point (see the log for its message)")]
    EntryPanicked {
        /// The file.
        path: PathBuf,
    },
    /// The entry point returned an error.
    #[error("{path}: the entry point failed with {code}")]
    EntryFailed {
        /// The file.
        path: PathBuf,
        /// The status it returned.
        code: PluginErrorCode,
    },
    /// The plugin's tables break the ABI contract.
    #[error("{path}: malformed plugin table: {reason}")]
    MalformedTable {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

impl From<hsm_secure_fs::trust::TrustError> for LoadError {
    fn from(e: hsm_secure_fs::trust::TrustError) -> Self {
        use hsm_secure_fs::trust::TrustError;
        let path = e.path().to_path_buf();
        match e {
            TrustError::NotRegularFile { .. } => LoadError::NotRegularFile { path },
            TrustError::Insecure { reason, .. } => LoadError::InsecurePermissions { path, reason },
            TrustError::Io { error, .. } => LoadError::Io { path, error },
            other => LoadError::InsecurePermissions {
                path,
                reason: other.to_string(),
            },
        }
    }
}

impl LoadError {
    /// The failure's class, for exit codes and `--json` ([`crate::error_kind`]): always a
    /// plugin failure.
    pub fn error_kind(&self) -> crate::error_kind::ErrorKind {
        crate::error_kind::ErrorKind::Plugin
    }

    /// A short machine-readable kind, used in `--json` output.
    pub fn kind(&self) -> &'static str {
        match self {
            LoadError::Io { .. } => "io",
            LoadError::NotRegularFile { .. } => "not-regular-file",
            LoadError::InsecurePermissions { .. } => "insecure-permissions",
            LoadError::NotSharedLibrary { .. } => "not-shared-library",
            LoadError::WrongArchitecture { .. } => "wrong-architecture",
            LoadError::Dlopen { .. } => "dlopen",
            LoadError::MissingEntry { .. } => "missing-entry",
            LoadError::AbiMajorMismatch { .. } => "abi-major-mismatch",
            LoadError::LayoutMismatch { .. } => "layout-mismatch",
            LoadError::EntryPanicked { .. } => "entry-panicked",
            LoadError::EntryFailed { .. } => "entry-failed",
            LoadError::MalformedTable { .. } => "malformed-table",
        }
    }
}

/// The ABI status of a failed call: the ABI's own enum, so that the host names codes exactly
/// as the SDK and the conformance harness do.
pub use hsm_api::ErrorCode as PluginErrorCode;

/// A failed call into a loaded plugin.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The plugin returned an error status.
    #[error("plugin `{plugin}`: {operation} failed ({code}): {message}")]
    Call {
        /// Plugin name.
        plugin: String,
        /// The ABI operation.
        operation: &'static str,
        /// The status.
        code: PluginErrorCode,
        /// The plugin's message (`last_error`), or a note that it gave none.
        message: String,
    },
    /// The plugin does not implement an interface the caller needs.
    #[error(
        "plugin `{plugin}` does not implement the {interface} interface (it offers: {offered})"
    )]
    InterfaceMissing {
        /// Plugin name.
        plugin: String,
        /// The interface asked for.
        interface: &'static str,
        /// The interfaces it does offer.
        offered: String,
    },
    /// The plugin has no operational-key interface (ABI 1.2), so it cannot make or keep the
    /// key an issued certificate needs.
    #[error("plugin `{plugin}` (ABI {abi_version}) cannot hold an operational key: it has no operational-key interface (ABI 1.2 or later, `operational_key` in its table)")]
    NoOperationalKey {
        /// Plugin name.
        plugin: String,
        /// The ABI version the plugin was built for.
        abi_version: String,
    },
    /// An operational-key label the ABI does not allow, refused before the call.
    #[error("plugin `{plugin}`: {operation}: an operational-key label is 1 to 64 ASCII letters, digits, '-', '_' or '.'")]
    InvalidOperationalKeyLabel {
        /// Plugin name.
        plugin: String,
        /// The ABI operation.
        operation: &'static str,
    },
    /// The plugin broke the ABI contract in its answer.
    #[error("plugin `{plugin}`: {operation} broke the ABI contract: {reason}")]
    Contract {
        /// Plugin name.
        plugin: String,
        /// The ABI operation.
        operation: &'static str,
        /// What was wrong.
        reason: String,
    },
}

impl PluginError {
    /// The failure's class, for exit codes and `--json` ([`crate::error_kind`]): a call
    /// that failed is the HSM's; a missing interface or a broken contract is the plugin's;
    /// settings refused by `create` are configuration.
    pub fn error_kind(&self) -> crate::error_kind::ErrorKind {
        use crate::error_kind::ErrorKind;
        match self {
            PluginError::Call {
                operation: "create",
                code: PluginErrorCode::InvalidArgument,
                ..
            } => ErrorKind::Config,
            PluginError::Call {
                code: PluginErrorCode::AbiMismatch,
                ..
            } => ErrorKind::Plugin,
            PluginError::Call { .. } => ErrorKind::Hsm,
            PluginError::InvalidOperationalKeyLabel { .. } => ErrorKind::Usage,
            PluginError::InterfaceMissing { .. }
            | PluginError::NoOperationalKey { .. }
            | PluginError::Contract { .. } => ErrorKind::Plugin,
        }
    }

    /// The status code, for call failures.
    pub fn code(&self) -> Option<PluginErrorCode> {
        match self {
            PluginError::Call { code, .. } => Some(*code),
            _ => None,
        }
    }
}
