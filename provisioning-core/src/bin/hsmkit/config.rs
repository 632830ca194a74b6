//! The TOML configuration file. Every setting here can also be given as a flag.

use anyhow::{Context, Result};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// hsmkit.toml.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ConfigFile {
    /// Default plugin name or path.
    pub plugin: Option<String>,
    /// Plugins folder.
    pub plugin_dir: Option<PathBuf>,
    /// State folder.
    pub state_dir: Option<PathBuf>,
    /// DPS settings.
    #[serde(default)]
    pub provisioning: ProvisioningSection,
    /// Settings per plugin name, passed to the plugin as strings.
    #[serde(default)]
    pub plugins: BTreeMap<String, BTreeMap<String, toml::Value>>,
}

/// `[provisioning]`.
#[derive(Debug, Default, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub(crate) struct ProvisioningSection {
    /// DPS host (default global.azure-devices-provisioning.net).
    pub endpoint: Option<String>,
    /// ID scope.
    pub id_scope: Option<String>,
    /// api-version.
    pub api_version: Option<String>,
    /// Extra CA certificate (PEM) to trust.
    pub trust_ca: Option<PathBuf>,
    /// Registration id override.
    pub registration_id: Option<String>,
    /// Custom payload (JSON text).
    pub payload: Option<String>,
    /// Overall timeout in seconds.
    pub timeout_secs: Option<u64>,
}

impl ConfigFile {
    /// Reads `path`; a missing explicit file is an error, as is any unknown key.
    pub(crate) fn load(path: Option<&Path>) -> Result<ConfigFile> {
        let Some(path) = path else {
            return Ok(ConfigFile::default());
        };
        // The config chooses which code runs (plugin, PKCS#11 module) and whom to trust, so it
        // gets the plugin rules: refused when other users could change it or its folders.
        let text =
            hsm_secure_fs::trust::read_to_string(path).context("cannot use the config file")?;
        toml::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))
    }

    /// The `[plugins.NAME]` settings as strings.
    pub(crate) fn plugin_settings(&self, name: &str) -> Vec<(String, String)> {
        self.plugins
            .get(name)
            .map(|table| {
                table
                    .iter()
                    .map(|(k, v)| {
                        let value = match v {
                            toml::Value::String(s) => s.clone(),
                            other => other.to_string(),
                        };
                        (k.clone(), value)
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_parses() {
        let text = include_str!("../../../../hsmkit.example.toml");
        let c: ConfigFile = toml::from_str(text).unwrap();
        assert_eq!(c.plugin.as_deref(), Some("tpm-sim"));
        assert!(c.plugin_settings("tpm2").iter().any(|(k, _)| k == "tcti"));
    }

    #[test]
    fn unknown_keys_are_errors() {
        assert!(toml::from_str::<ConfigFile>("plugn = \"x\"").is_err());
    }
}
