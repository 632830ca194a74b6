//! Key/value settings handed to a plugin's `create`.

use crate::HsmError;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::str::FromStr;

/// The settings an instance is created with. Keys are snake_case; the host always passes
/// `state_dir`, the resolved state folder.
#[derive(Clone, Debug, Default)]
pub struct PluginConfig {
    values: BTreeMap<String, String>,
}

impl PluginConfig {
    /// Builds a configuration from pairs (later pairs override earlier ones).
    pub fn from_pairs<I, K, V>(pairs: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        PluginConfig {
            values: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    /// The value of `key`, if set.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(String::as_str)
    }

    /// The value of `key`, or an invalid-argument error naming it.
    pub fn require(&self, key: &str) -> Result<&str, HsmError> {
        self.get(key)
            .ok_or_else(|| HsmError::invalid_argument(format!("missing required setting `{key}`")))
    }

    /// A boolean setting (`true/false`, `1/0`, `yes/no`, `on/off`), `default` when unset.
    pub fn get_bool(&self, key: &str, default: bool) -> Result<bool, HsmError> {
        match self.get(key).map(|v| v.trim().to_ascii_lowercase()) {
            None => Ok(default),
            Some(v) => match v.as_str() {
                "true" | "1" | "yes" | "on" => Ok(true),
                "false" | "0" | "no" | "off" => Ok(false),
                _ => Err(HsmError::invalid_argument(format!(
                    "setting `{key}` must be true or false, got `{v}`"
                ))),
            },
        }
    }

    /// A setting parsed with `FromStr`; `None` when unset.
    pub fn get_parsed<T: FromStr>(&self, key: &str) -> Result<Option<T>, HsmError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.trim().parse().map(Some).map_err(|_| {
                HsmError::invalid_argument(format!(
                    "setting `{key}` has an invalid value `{v}` (expected {})",
                    std::any::type_name::<T>()
                ))
            }),
        }
    }

    /// The state folder: `state_dir`, else `$HSMKIT_STATE_DIR`, else `$XDG_STATE_HOME/hsmkit`,
    /// `~/.local/state/hsmkit`, or `/var/lib/hsmkit` for root. Created with mode 0700.
    pub fn state_dir(&self) -> Result<PathBuf, HsmError> {
        let dir = if let Some(d) = self.get("state_dir") {
            PathBuf::from(d)
        } else if let Some(d) = std::env::var_os("HSMKIT_STATE_DIR") {
            PathBuf::from(d)
        } else if let Some(d) = std::env::var_os("XDG_STATE_HOME") {
            PathBuf::from(d).join("hsmkit")
        } else if is_root() {
            PathBuf::from("/var/lib/hsmkit")
        } else if let Some(home) = std::env::var_os("HOME") {
            PathBuf::from(home).join(".local/state/hsmkit")
        } else {
            return Err(HsmError::invalid_argument(
                "no state folder: set `state_dir`, HSMKIT_STATE_DIR or HOME",
            ));
        };
        crate::secret_file::create_private_dir(&dir)?;
        Ok(dir)
    }

    /// All settings, sorted by key.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.values.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_getters_report_the_key() {
        let c = PluginConfig::from_pairs([("a", "yes"), ("n", "12"), ("bad", "x")]);
        assert!(c.get_bool("a", false).unwrap());
        assert!(!c.get_bool("missing", false).unwrap());
        assert_eq!(c.get_parsed::<u32>("n").unwrap(), Some(12));
        let e = c.get_parsed::<u32>("bad").unwrap_err();
        assert!(e.message().contains("`bad`"), "{e}");
        let e = c.require("nope").unwrap_err();
        assert_eq!(e.code(), crate::ErrorCode::InvalidArgument);
        assert!(e.message().contains("`nope`"));
        assert!(c.get_bool("bad", true).is_err());
    }
}
