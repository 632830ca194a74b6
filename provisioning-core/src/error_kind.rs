//! What kind of failure an error is, for automation: the `kind` of `hsmkit --json`'s error
//! object and the process exit code. Each library error type maps its variants to a kind in
//! its own `error_kind()`; [`classify`] finds the outermost library error in a chain of
//! sources and asks it. This is the only mapping from errors to kinds and exit codes.

use serde::Serialize;
use std::fmt;

/// The class of a failure, as a caller that retries or alerts needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum ErrorKind {
    /// Anything not classified below.
    Other,
    /// The command line is wrong (unknown flag, bad value, unknown `--set` key).
    Usage,
    /// The configuration cannot work: the config file, a missing setting, a CA file, the
    /// state folder.
    Config,
    /// No plugin by that name, or the plugin file was refused or lacks an interface.
    Plugin,
    /// The plugin loaded but its device (or its state) failed an operation.
    Hsm,
    /// DPS or the hub could not be reached, TLS with it failed, or its answer broke the
    /// protocol.
    Network,
    /// DPS (or the hub) answered and refused: no enrollment, disabled, wrong credentials,
    /// not assigned.
    DpsRefused,
    /// No final answer within the time allowed.
    Timeout,
}

impl ErrorKind {
    /// Every kind, in exit-code order.
    pub const ALL: [ErrorKind; 8] = [
        ErrorKind::Other,
        ErrorKind::Usage,
        ErrorKind::Config,
        ErrorKind::Plugin,
        ErrorKind::Hsm,
        ErrorKind::Network,
        ErrorKind::DpsRefused,
        ErrorKind::Timeout,
    ];

    /// The process exit code. 2 for usage is clap's own code for a bad command line, so
    /// that every usage error exits the same way.
    pub const fn exit_code(self) -> u8 {
        match self {
            ErrorKind::Other => 1,
            ErrorKind::Usage => 2,
            ErrorKind::Config => 3,
            ErrorKind::Plugin => 4,
            ErrorKind::Hsm => 5,
            ErrorKind::Network => 6,
            ErrorKind::DpsRefused => 7,
            ErrorKind::Timeout => 8,
        }
    }

    /// The name in JSON (`dps-refused`).
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Other => "other",
            ErrorKind::Usage => "usage",
            ErrorKind::Config => "config",
            ErrorKind::Plugin => "plugin",
            ErrorKind::Hsm => "hsm",
            ErrorKind::Network => "network",
            ErrorKind::DpsRefused => "dps-refused",
            ErrorKind::Timeout => "timeout",
        }
    }

    /// What the kind covers, one line (`hsmkit --help`'s exit-code table).
    pub const fn summary(self) -> &'static str {
        match self {
            ErrorKind::Other => "any other failure",
            ErrorKind::Usage => "bad command line: unknown flag or value, unknown --set key",
            ErrorKind::Config => {
                "configuration: config file, missing setting, CA file, state folder"
            }
            ErrorKind::Plugin => "plugin not found, refused, or lacking an interface",
            ErrorKind::Hsm => "the HSM (the plugin's device or its state) failed an operation",
            ErrorKind::Network => "DPS or the hub unreachable, TLS failed, or a non-DPS answer",
            ErrorKind::DpsRefused => {
                "DPS (or the hub) refused: no enrollment, disabled, wrong credentials"
            }
            ErrorKind::Timeout => "no final answer within --timeout",
        }
    }

    /// What to try first for this kind of failure (the message says more when it knows
    /// more).
    pub const fn hint(self) -> &'static str {
        match self {
            ErrorKind::Other => "run with -v for details",
            ErrorKind::Usage => "see `hsmkit --help` and `hsmkit COMMAND --help`",
            ErrorKind::Config => {
                "check the flags and the config file; `hsmkit check` reports each setting"
            }
            ErrorKind::Plugin => "`hsmkit plugins list` shows every plugin found and why any was refused",
            ErrorKind::Hsm => "check the plugin's settings (`hsmkit plugins info NAME`) and its device or state files",
            ErrorKind::Network => "check the endpoint, DNS, proxy, firewall and --trust-ca; `hsmkit check` tests the connection",
            ErrorKind::DpsRefused => "check the enrollment in DPS (it exists, is enabled, links a hub, matches this device's key or certificate)",
            ErrorKind::Timeout => "try again later or allow more time (--timeout, timeout_secs in [provisioning])",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The kind of the outermost library error in `error` and its sources, or `None` when none
/// of them is one (the caller decides: its own error types, or [`ErrorKind::Other`]).
pub fn classify(error: &(dyn std::error::Error + 'static)) -> Option<ErrorKind> {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(kind) = kind_of(e) {
            return Some(kind);
        }
        next = e.source();
    }
    None
}

/// The kind of `e` itself when it is one of the library's error types.
fn kind_of(e: &(dyn std::error::Error + 'static)) -> Option<ErrorKind> {
    use crate::dps::probe::ProbeError;
    use crate::dps::{DpsError, TlsSetupError};
    use crate::hub::HubError;
    use crate::issuance::{ChainError, IssuanceError, IssueError};
    use crate::plugin::{LoadError, PluginError, PluginFindError};
    use crate::provisioning::{
        EnrollmentInfoError, HubTokenError, ProvisionError, RecordError, RenewError,
    };
    macro_rules! try_types {
        ($($t:ty),*) => {
            $(if let Some(x) = e.downcast_ref::<$t>() {
                return Some(x.error_kind());
            })*
        };
    }
    try_types!(
        DpsError,
        ProbeError,
        TlsSetupError,
        HubError,
        IssueError,
        IssuanceError,
        ChainError,
        LoadError,
        PluginError,
        PluginFindError,
        EnrollmentInfoError,
        HubTokenError,
        ProvisionError,
        RecordError,
        RenewError
    );
    #[cfg(feature = "config")]
    try_types!(crate::config::ConfigError);
    if e.is::<hsm_secure_fs::trust::TrustError>() || e.is::<hsm_secure_fs::state::StateError>() {
        // A config, CA or state file refused for its owner or modes, or unreadable.
        return Some(ErrorKind::Config);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dps::DpsError;
    use crate::plugin::{PluginError, PluginErrorCode};

    #[test]
    fn exit_codes_are_distinct_and_clap_keeps_2() {
        let mut codes: Vec<u8> = ErrorKind::ALL.iter().map(|k| k.exit_code()).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), ErrorKind::ALL.len());
        assert!(!codes.contains(&0));
        assert_eq!(ErrorKind::Usage.exit_code(), 2);
        for k in ErrorKind::ALL {
            assert_eq!(
                serde_json::to_value(k).unwrap(),
                serde_json::json!(k.as_str())
            );
        }
    }

    #[test]
    fn the_outermost_library_error_decides() {
        let plugin = PluginError::Call {
            plugin: "p".into(),
            operation: "sign",
            code: PluginErrorCode::Device,
            message: "gone".into(),
        };
        assert_eq!(classify(&plugin), Some(ErrorKind::Hsm));
        let dps = DpsError::from(plugin);
        assert_eq!(classify(&dps), Some(ErrorKind::Hsm));
        let timeout = DpsError::Timeout {
            after: std::time::Duration::from_secs(1),
            last: String::new(),
        };
        assert_eq!(classify(&timeout), Some(ErrorKind::Timeout));
        let io = std::io::Error::other("x");
        assert_eq!(classify(&io), None);
    }
}
