//! The settings a plugin declares, and the check that refuses every other key before the
//! plugin's `create` runs.

use crate::{HsmError, PluginConfig};

/// The key every host passes (the state folder); always valid, never declared.
pub const STATE_DIR: &str = "state_dir";

/// One setting a plugin's `create` accepts, as shown by `hsmkit plugins info` and
/// `hsm-conformance --list-settings`. Declare every key the plugin reads in
/// [`crate::HsmPlugin::SETTINGS`]; `state_dir` is always valid and is not declared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Setting {
    /// The key (`tcti`, `registration_id`...): ASCII letters, digits, `_`, `-` or `.`.
    pub name: &'static str,
    /// What it is, on one line, with its default when it has one.
    pub description: &'static str,
    /// Whether the plugin's `create` refuses to start without it (shown to people; the
    /// plugin checks it, with its own message).
    pub required: bool,
}

impl Setting {
    /// An optional setting.
    pub const fn optional(name: &'static str, description: &'static str) -> Self {
        Setting {
            name,
            description,
            required: false,
        }
    }

    /// A setting `create` cannot start without.
    pub const fn required(name: &'static str, description: &'static str) -> Self {
        Setting {
            name,
            description,
            required: true,
        }
    }
}

/// Refuses a configuration with a key that is neither `state_dir` nor declared:
/// [`crate::ErrorCode::InvalidArgument`] naming the key(s) and the valid settings, never a
/// value (a value may be a secret). Required settings are the plugin's own `create` to check:
/// its message knows best what to give.
pub(crate) fn check(declared: &[Setting], config: &PluginConfig) -> Result<(), HsmError> {
    let known = |key: &str| key == STATE_DIR || declared.iter().any(|s| s.name == key);
    let unknown: Vec<&str> = config
        .iter()
        .map(|(k, _)| k)
        .filter(|k| !known(k))
        .collect();
    if !unknown.is_empty() {
        let named: Vec<String> = unknown.iter().map(|k| format!("`{k}`")).collect();
        return Err(HsmError::invalid_argument(format!(
            "unknown setting{} {}; valid settings: {}",
            if unknown.len() == 1 { "" } else { "s" },
            named.join(", "),
            valid_names(declared)
        )));
    }
    Ok(())
}

/// The declared names in order, then `state_dir` (once, even if declared).
fn valid_names(declared: &[Setting]) -> String {
    let mut names: Vec<&str> = declared
        .iter()
        .map(|s| s.name)
        .filter(|n| *n != STATE_DIR)
        .collect();
    names.push(STATE_DIR);
    names.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorCode;

    const DECLARED: &[Setting] = &[
        Setting::optional("a", "first"),
        Setting::required("b", "second, needed"),
    ];

    #[test]
    fn an_unknown_key_is_refused_naming_it_and_the_valid_ones() {
        let c = PluginConfig::from_pairs([("b", "1"), ("bogus", "secret-value")]);
        let e = check(DECLARED, &c).unwrap_err();
        assert_eq!(e.code(), ErrorCode::InvalidArgument);
        assert_eq!(
            e.message(),
            "unknown setting `bogus`; valid settings: a, b, state_dir"
        );
        let c = PluginConfig::from_pairs([("b", "1"), ("x", "1"), ("y", "2")]);
        assert_eq!(
            check(DECLARED, &c).unwrap_err().message(),
            "unknown settings `x`, `y`; valid settings: a, b, state_dir"
        );
    }

    #[test]
    fn state_dir_and_declared_keys_pass() {
        let ok = PluginConfig::from_pairs([("state_dir", "/s"), ("a", "1"), ("b", "2")]);
        assert_eq!(check(DECLARED, &ok), Ok(()));
        // A required setting left out is the plugin's own create to refuse.
        assert_eq!(
            check(DECLARED, &PluginConfig::from_pairs([("a", "1")])),
            Ok(())
        );
        // No declaration: only state_dir is valid.
        assert_eq!(
            check(&[], &PluginConfig::from_pairs([("state_dir", "/s")])),
            Ok(())
        );
        assert_eq!(
            check(&[], &PluginConfig::from_pairs([("a", "1")]))
                .unwrap_err()
                .message(),
            "unknown setting `a`; valid settings: state_dir"
        );
    }
}
