//! The library's one error type: every failure names what was being done.

use std::path::PathBuf;

/// Why a fleet run (or a step of it) failed as a whole. Failures of single devices are not
/// errors: they are counted in the report by reason.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FleetError {
    /// A bad option.
    #[error("{0}")]
    Config(String),
    /// A bad `--mix`.
    #[error(transparent)]
    Mix(#[from] crate::mix::MixError),
    /// The service API failed (enrollment or cross-check).
    #[error(transparent)]
    Service(#[from] crate::service::ServiceError),
    /// A plugin file could not be loaded.
    #[error("loading the plugin {path}: {source}")]
    Load {
        /// The plugin file.
        path: PathBuf,
        /// Why.
        source: provisioning_core::plugin::LoadError,
    },
    /// A plugin call failed while making a device.
    #[error("manufacturing a {kind} device: {source}")]
    Plugin {
        /// The device kind.
        kind: &'static str,
        /// The plugin's error.
        source: provisioning_core::plugin::PluginError,
    },
    /// A state file or folder could not be written or read.
    #[error("{what}: {source}")]
    State {
        /// What was being done.
        what: String,
        /// Why.
        source: hsm_secure_fs::state::StateError,
    },
    /// A plain file system error.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why.
        source: std::io::Error,
    },
    /// The manufacture cache's manifest is unreadable or from another format.
    #[error(
        "manufacture manifest {path}: {reason}; remove the cache folder to make the devices again"
    )]
    Manifest {
        /// The manifest file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The in-process emulator did not start.
    #[error("starting the in-process emulator: {0}")]
    Emulator(String),
    /// A chart could not be drawn or written.
    #[error("drawing {file}: {reason}")]
    Chart {
        /// The chart file.
        file: PathBuf,
        /// What went wrong.
        reason: String,
    },
}

impl FleetError {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> FleetError {
        FleetError::Io {
            what: what.into(),
            source,
        }
    }
}
