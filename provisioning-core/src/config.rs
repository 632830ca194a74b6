//! The hsmkit configuration file (`hsmkit.toml`, see `hsmkit.example.toml`): one reader for
//! the `hsmkit` command line and for `libhsmkit_azure_hsm`, the custom HSM for the Azure IoT
//! C SDK (its `[azure_custom_hsm]` section).

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Environment variable naming the config file.
pub const CONFIG_ENV: &str = "HSMKIT_CONFIG";

/// The config file read when neither `--config` nor `HSMKIT_CONFIG` names one, if it exists
/// (the place `/etc/aziot/config.toml` and `/etc/parsec/config.toml` have for those services).
pub const DEFAULT_CONFIG_PATH: &str = "/etc/hsmkit/config.toml";

/// Where the config file in use came from, in the order they are tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConfigSource {
    /// `--config FILE`.
    Flag,
    /// `HSMKIT_CONFIG`.
    Env,
    /// [`DEFAULT_CONFIG_PATH`], which exists.
    Default,
    /// None: no flag, no variable and no file at the default place.
    #[default]
    None,
}

impl ConfigSource {
    /// How `hsmkit check` and the logs name it: `--config`, `HSMKIT_CONFIG`, `default`, `none`.
    pub fn as_str(self) -> &'static str {
        match self {
            ConfigSource::Flag => "--config",
            ConfigSource::Env => CONFIG_ENV,
            ConfigSource::Default => "default",
            ConfigSource::None => "none",
        }
    }
}

/// Chooses the config file: `explicit` (from `--config` or `HSMKIT_CONFIG`, `from_env` saying
/// which), else `default_path` when something exists there. An explicit file is used even when
/// missing, so that the error names it; a missing default file is no configuration.
pub fn choose_config_path(
    explicit: Option<&Path>,
    from_env: bool,
    default_path: &Path,
) -> (Option<PathBuf>, ConfigSource) {
    match explicit {
        Some(p) if from_env => (Some(p.to_path_buf()), ConfigSource::Env),
        Some(p) => (Some(p.to_path_buf()), ConfigSource::Flag),
        // symlink_metadata: a dangling link at the default place is still "something there",
        // and reading it then fails naming it instead of being silently ignored.
        None if std::fs::symlink_metadata(default_path).is_ok() => {
            (Some(default_path.to_path_buf()), ConfigSource::Default)
        }
        None => (None, ConfigSource::None),
    }
}

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
    /// The file this was read from (not a key: set by the loaders).
    #[serde(skip)]
    pub path: Option<PathBuf>,
    /// Where the file's name came from (not a key: set by [`ConfigFile::load_chosen`]).
    #[serde(skip)]
    pub source: ConfigSource,
}

/// `[provisioning]`.
#[derive(Debug, Default, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct ProvisioningSection {
    /// `tpm`, `x509` or `symmetricKey` (`--attestation`), when the plugin offers several.
    pub attestation: Option<String>,
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
    /// Ask DPS for an operational certificate for the plugin's operational key
    /// (`--issue-certificate`).
    #[serde(default)]
    pub issue_certificate: bool,
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
    /// A key in `[plugins.NAME]` that plugin does not declare.
    #[error("unknown key `{key}` in [plugins.{plugin}] of {}; valid keys: {}", path.display(), valid.join(", "))]
    UnknownPluginKey {
        /// The file.
        path: PathBuf,
        /// The plugin's section.
        plugin: String,
        /// The key.
        key: String,
        /// The keys the plugin declares, then `state_dir`.
        valid: Vec<String>,
    },
}

impl ConfigError {
    /// The failure's class, for exit codes and `--json` ([`crate::error_kind`]).
    pub fn error_kind(&self) -> crate::error_kind::ErrorKind {
        use crate::error_kind::ErrorKind;
        ErrorKind::Config
    }
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
        let mut config: ConfigFile = toml::from_str(&text).map_err(|error| ConfigError::Parse {
            path: path.to_path_buf(),
            error,
        })?;
        config.path = Some(path.to_path_buf());
        Ok(config)
    }

    /// [`choose_config_path`], then [`ConfigFile::load`]; the result remembers its source.
    pub fn load_chosen(
        explicit: Option<&Path>,
        from_env: bool,
        default_path: &Path,
    ) -> Result<ConfigFile, ConfigError> {
        let (path, source) = choose_config_path(explicit, from_env, default_path);
        let mut config = ConfigFile::load(path.as_deref())?;
        config.source = source;
        Ok(config)
    }

    /// Checks the keys of `[plugins.NAME]` against the settings the plugin declares (`declared`,
    /// without `state_dir`, which every plugin accepts). The plugin refuses unknown keys itself
    /// too, but only when it is created and without naming the file; this names both.
    pub fn check_plugin_keys(
        &self,
        path: &Path,
        plugin: &str,
        declared: &[&str],
    ) -> Result<(), ConfigError> {
        let Some(table) = self.plugins.get(plugin) else {
            return Ok(());
        };
        for key in table.keys() {
            if key != "state_dir" && !declared.contains(&key.as_str()) {
                let mut valid: Vec<String> = declared.iter().map(|s| s.to_string()).collect();
                valid.push("state_dir".into());
                return Err(ConfigError::UnknownPluginKey {
                    path: path.to_path_buf(),
                    plugin: plugin.to_string(),
                    key: key.clone(),
                    valid,
                });
            }
        }
        Ok(())
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
    fn unknown_keys_name_the_key_and_the_valid_ones() {
        let e = toml::from_str::<ConfigFile>("[provisioning]\nid_scop = \"x\"").unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("id_scop") && text.contains("id_scope"),
            "{text}"
        );

        let c: ConfigFile = toml::from_str("[plugins.tpm2]\ntcti = \"x\"\ntctti = \"y\"").unwrap();
        let e = c
            .check_plugin_keys(Path::new("/etc/hsmkit/config.toml"), "tpm2", &["tcti"])
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown key `tctti` in [plugins.tpm2] of /etc/hsmkit/config.toml; valid keys: tcti, state_dir"
        );
        c.check_plugin_keys(Path::new("c.toml"), "tpm2", &["tcti", "tctti"])
            .unwrap();
        // Another plugin's section is not this plugin's business.
        c.check_plugin_keys(Path::new("c.toml"), "dice", &[])
            .unwrap();
    }

    #[test]
    fn the_default_file_is_used_only_when_nothing_names_one_and_it_exists() {
        let dir = tempfile::tempdir().unwrap();
        let default = dir.path().join("config.toml");
        let flag = Path::new("/x/flag.toml");
        assert_eq!(
            choose_config_path(None, false, &default),
            (None, ConfigSource::None)
        );
        std::fs::write(&default, "").unwrap();
        assert_eq!(
            choose_config_path(None, false, &default),
            (Some(default.clone()), ConfigSource::Default)
        );
        assert_eq!(
            choose_config_path(Some(flag), false, &default),
            (Some(flag.to_path_buf()), ConfigSource::Flag)
        );
        assert_eq!(
            choose_config_path(Some(flag), true, &default),
            (Some(flag.to_path_buf()), ConfigSource::Env)
        );
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
