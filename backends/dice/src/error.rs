//! The one error type of this backend, mapped onto the SDK's error codes at the plugin seam.

use hsm_plugin_sdk::HsmError;

/// Everything that can go wrong while deriving or serving a DICE identity.
///
/// Messages never contain key material: they name the setting, file or step that failed.
#[derive(Debug, thiserror::Error)]
pub enum DiceError {
    /// A configuration value is malformed.
    #[error("invalid setting `{key}`: {reason}")]
    InvalidSetting {
        /// The configuration key.
        key: &'static str,
        /// What is wrong with its value (never the value itself for secrets).
        reason: String,
    },
    /// A state file exists but cannot be used.
    #[error("state file {path}: {reason}")]
    BadStateFile {
        /// The file.
        path: String,
        /// Why it was refused.
        reason: String,
    },
    /// Reading or writing a state file failed.
    #[error("state file {path}: {error}")]
    Io {
        /// The file.
        path: String,
        /// The underlying error (in the message, so not also the `source()`).
        error: std::io::Error,
    },
    /// The key derivation could not produce a key (practically unreachable for HKDF/DRBG).
    #[error("key derivation failed: {0}")]
    Derivation(&'static str),
    /// Encoding or signing a certificate failed.
    #[error("building the {which} certificate failed: {reason}")]
    Certificate {
        /// Which certificate of the chain.
        which: &'static str,
        /// What failed.
        reason: String,
    },
    /// An error reported by the plugin SDK (secret file helpers, configuration).
    #[error(transparent)]
    Sdk(#[from] HsmError),
}

impl DiceError {
    pub(crate) fn setting(key: &'static str, reason: impl Into<String>) -> Self {
        DiceError::InvalidSetting {
            key,
            reason: reason.into(),
        }
    }

    pub(crate) fn certificate(which: &'static str, reason: impl std::fmt::Display) -> Self {
        DiceError::Certificate {
            which,
            reason: reason.to_string(),
        }
    }
}

impl From<DiceError> for HsmError {
    fn from(error: DiceError) -> Self {
        match error {
            DiceError::Sdk(inner) => inner,
            DiceError::InvalidSetting { .. } => HsmError::invalid_argument(error.to_string()),
            DiceError::BadStateFile { .. } | DiceError::Io { .. } => {
                HsmError::device(error.to_string())
            }
            DiceError::Derivation(_) | DiceError::Certificate { .. } => {
                HsmError::internal(error.to_string())
            }
        }
    }
}
