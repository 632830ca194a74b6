//! Why a call failed. The C SDK only sees 0/non-zero or NULL; the reason goes to the log.

use provisioning_core::config::ConfigError;
use provisioning_core::plugin::{PluginError, PluginFindError};
use provisioning_core::state_dir::StateDirError;

/// A failed custom-HSM call, logged at the boundary (never with key material).
#[derive(Debug, thiserror::Error)]
pub(crate) enum AdapterError {
    /// The config file could not be used.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Neither `[azure_custom_hsm] plugin` nor `plugin` is set.
    #[error("no plugin selected: {}", if *.config {
        "set `plugin` in the [azure_custom_hsm] section (or the top-level `plugin`) of the HSMKIT_CONFIG file"
    } else {
        "HSMKIT_CONFIG is not set; point it at an hsmkit config file with an [azure_custom_hsm] section"
    })]
    NoPlugin {
        /// Whether a config file was read.
        config: bool,
    },
    /// No state folder could be chosen.
    #[error("no state folder: set HSMKIT_STATE_DIR or `state_dir` in the config")]
    NoStateDir,
    /// The plugin could not be found or loaded.
    #[error(transparent)]
    Find(#[from] PluginFindError),
    /// The state folder was refused.
    #[error(transparent)]
    StateDir(#[from] StateDirError),
    /// Core dumps could not be turned off.
    #[error("cannot keep secrets out of core dumps (prctl PR_SET_DUMPABLE)")]
    CoreDumps(#[source] std::io::Error),
    /// A handle was made before `hsm_client_*_init` (or after the last deinit).
    #[error("hsm_client_tpm_init/hsm_client_x509_init has not been called")]
    NotInitialized,
    /// A plugin call failed.
    #[error("{call}")]
    Plugin {
        /// The custom-HSM function.
        call: &'static str,
        /// The plugin's error.
        #[source]
        error: PluginError,
    },
    /// A NULL or otherwise unusable argument.
    #[error("invalid argument: {0}")]
    InvalidArgument(&'static str),
    /// A handle made by another interface's `create`.
    #[error("the handle was made by the {made_by} interface, not the {used_as} one")]
    WrongHandle {
        /// The interface that made it.
        made_by: &'static str,
        /// The interface it was passed to.
        used_as: &'static str,
    },
    /// `get_key` on a plugin whose settings do not allow exporting the key.
    #[error("the plugin does not export its private key, so get_key has nothing to return (the C SDK's TLS needs the key in memory); the key stays in the HSM")]
    KeyNotExported {
        /// Why the plugin refused (it names the plugin).
        #[source]
        error: PluginError,
    },
    /// `get_symm_key` without a key handed in through `set_symm_key_info`.
    #[error("plugin `{plugin}` holds the symmetric key and hsmkit never exports symmetric keys, but the C SDK computes the SAS itself from get_symm_key: give the SDK the key (prov_dev_set_symmetric_key_info / iothub_security symmetric key), which set_symm_key_info then imports into the plugin")]
    SymmetricKeyNotExported {
        /// The plugin.
        plugin: String,
    },
    /// The plugin returned text with a NUL byte, which a C string cannot carry.
    #[error("the plugin's {0} contains a NUL byte")]
    InteriorNul(&'static str),
    /// `malloc` failed.
    #[error("out of memory")]
    OutOfMemory,
}

impl AdapterError {
    /// A plugin error in `call`.
    pub(crate) fn plugin(call: &'static str, error: PluginError) -> Self {
        AdapterError::Plugin { call, error }
    }
}

/// The error and each of its sources, `: `-separated (each layer is printed once: the
/// workspace's errors show an inner error in their message or as source, never both).
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        text.push_str(": ");
        text.push_str(&s.to_string());
        next = s.source();
    }
    text
}
