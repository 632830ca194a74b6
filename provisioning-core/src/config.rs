//! The hsmkit configuration file (`hsmkit.toml`, see `hsmkit.example.toml`): one reader for
//! the `hsmkit` command line and for `libhsmkit_azure_hsm`, the custom HSM for the Azure IoT
//! C SDK (its `[azure_custom_hsm]` section).

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Environment variable naming the config file.
pub const CONFIG_ENV: &str = "HSMKIT_CONFIG";

/// hsmkit.toml.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
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
    /// `[azure_custom_hsm]`: the plugin behind `libhsmkit_azure_hsm`.
    #[serde(default)]
    pub azure_custom_hsm: AzureCustomHsmSection,
}

/// `[provisioning]`.
#[derive(Debug, Default, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct ProvisioningSection {
    /// DPS host (default global.azure-devices-provisioning.net).
    pub endpoint: Option<String>,
    /// `https` (default), `mqtt` or `mqtt-ws` (see `provisioning_core::dps::Transport`).
    pub transport: Option<String>,
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

/// `[azure_custom_hsm]`: which plugin `libhsmkit_azure_hsm` serves the C SDK with. Its
/// settings come from `[plugins.NAME]`, as for `hsmkit`.
#[derive(Debug, Default, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct AzureCustomHsmSection {
    /// Plugin name or path; default: the top-level `plugin`.
    pub plugin: Option<String>,
    /// Plugins folder; default: `HSMKIT_PLUGIN_DIR`, then the top-level `plugin_dir`.
    pub plugin_dir: Option<PathBuf>,
}

/// The config file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Refused or unreadable (the trust rules of `hsm_secure_fs::trust`).
    #[error("cannot use the config file")]
    Read(#[source] hsm_secure_fs::trust::TrustError),
    /// Not valid TOML, or a key hsmkit does not know.
    #[error("invalid config file {}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the TOML reader said.
        #[source]
        error: toml::de::Error,
    },
}

impl ConfigFile {
    /// Reads `path` (`None`: the empty configuration); a missing explicit file is an error, as
    /// is any unknown key.
    pub fn load(path: Option<&Path>) -> Result<ConfigFile, ConfigError> {
        let Some(path) = path else {
            return Ok(ConfigFile::default());
        };
        // The config chooses which code runs (plugin, PKCS#11 module) and whom to trust, so it
        // gets the plugin rules: refused when other users could change it or its folders.
        let text = hsm_secure_fs::trust::read_to_string(path).map_err(ConfigError::Read)?;
        toml::from_str(&text).map_err(|error| ConfigError::Parse {
            path: path.to_path_buf(),
            error,
        })
    }

    /// The `[plugins.NAME]` settings as strings.
    pub fn plugin_settings(&self, name: &str) -> Vec<(String, String)> {
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
        let text = include_str!("../../hsmkit.example.toml");
        let c: ConfigFile = toml::from_str(text).unwrap();
        assert_eq!(c.plugin.as_deref(), Some("tpm-sim"));
        assert!(c.plugin_settings("tpm2").iter().any(|(k, _)| k == "tcti"));
        assert_eq!(c.azure_custom_hsm.plugin.as_deref(), Some("tpm2"));
    }

    #[test]
    fn unknown_keys_are_errors() {
        assert!(toml::from_str::<ConfigFile>("plugn = \"x\"").is_err());
        assert!(toml::from_str::<ConfigFile>("[azure_custom_hsm]\nplugn = \"x\"").is_err());
    }

    #[test]
    fn a_missing_file_is_an_error_naming_it() {
        let e = ConfigFile::load(Some(Path::new("/nonexistent-hsmkit/hsmkit.toml"))).unwrap_err();
        assert_eq!(e.to_string(), "cannot use the config file");
        let source = std::error::Error::source(&e).map(ToString::to_string);
        assert!(
            source.is_some_and(|s| s.contains("/nonexistent-hsmkit/hsmkit.toml")),
            "{e:?}"
        );
    }
}
