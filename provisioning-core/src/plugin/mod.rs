//! Plugin discovery, loading and safe handles over loaded plugins.
//!
//! Loading is deliberately strict: a plugin is code that will run with the host's privileges
//! and hold its keys, so a file that is not a shared library for this machine, that other
//! users could have replaced, or that speaks another ABI is refused with the reason, before
//! or instead of being run.

mod bytes;
mod checks;
mod discovery;
mod error;
mod host_api;
mod instance;
mod interfaces;
mod library;

pub use bytes::PluginBytes;
pub use discovery::{
    PluginCandidate, PluginDirSource, PluginFindError, PluginScan, PluginSearchDir,
    PluginSearchPath, DEFAULT_SYSTEM_PLUGIN_DIRS, PLUGIN_DIR_ENV, PLUGIN_FILE_PREFIX,
};
pub use error::{LoadError, PluginError, PluginErrorCode};
/// Signature algorithms an X.509 plugin may be asked for: the ABI's own view, shared with the SDK.
pub use hsm_api::SignAlgorithm;
pub use instance::PluginInstance;
pub use interfaces::{OperationalKeyHandle, SymmetricKeyHandle, TpmHandle, X509Handle};
pub use library::{
    settings_lines, Capabilities, LoadedPlugin, PluginMetadata, PluginSetting,
    SETTINGS_NOT_DECLARED,
};
