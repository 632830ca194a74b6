//! Turning flags and the config file into a loaded plugin instance.

use crate::cli::{GlobalArgs, PluginArgs};
use crate::config::ConfigFile;
use crate::failure::{config as config_error, usage};
use anyhow::{bail, Context, Result};
use provisioning_core::config::{CONFIG_ENV, DEFAULT_CONFIG_PATH};
use provisioning_core::dps::Attestation;
use provisioning_core::plugin::{
    LoadedPlugin, PluginDirSource, PluginInstance, PluginSearchPath, PluginSetting, PLUGIN_DIR_ENV,
};
use provisioning_core::state_dir::{default_state_dir, prepare_state_dir};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Everything resolved from flags, environment and config.
pub(crate) struct Context_ {
    pub config: ConfigFile,
    pub search: PluginSearchPath,
    pub state_dir: PathBuf,
    /// The state folder was named (--state-dir, HSMKIT_STATE_DIR or `state_dir` in the
    /// config) rather than the default. Only `demo` asks (it keeps a chosen folder).
    #[cfg(feature = "demo")]
    pub state_dir_chosen: bool,
}

/// The plugin search path. clap merges --plugin-dir and HSMKIT_PLUGIN_DIR into one value; the
/// variable holding that same value means it came from there, which `plugins list` says. A
/// folder named by any of them must exist: a typo would otherwise search nothing and report
/// only that no plugin was found.
fn plugin_search_path(global: &GlobalArgs, config_dir: Option<&Path>) -> Result<PluginSearchPath> {
    let flag = global.plugin_dir.as_deref();
    let from_env = flag.is_some_and(|p| {
        std::env::var_os(PLUGIN_DIR_ENV).is_some_and(|v| !v.is_empty() && Path::new(&v) == p)
    });
    let (flag, env) = if from_env { (None, flag) } else { (flag, None) };
    let search =
        PluginSearchPath::resolve_with(flag, env, config_dir, std::env::current_exe().ok());
    if let [only] = search.dirs.as_slice() {
        if !only.path.is_dir() {
            let what = format!(
                "the plugin folder {} ({}) does not exist or is not a folder",
                only.path.display(),
                only.source.describe()
            );
            return Err(match only.source {
                PluginDirSource::Flag => usage(what),
                _ => config_error(what),
            });
        }
    }
    Ok(search)
}

impl Context_ {
    pub(crate) fn new(global: &GlobalArgs) -> Result<Self> {
        // clap merges --config and HSMKIT_CONFIG into one value; the variable holding that
        // same value means it came from there (or both say the same, which is the same file).
        let from_env = global
            .config
            .as_deref()
            .is_some_and(|p| std::env::var_os(CONFIG_ENV).is_some_and(|v| Path::new(&v) == p));
        let config = ConfigFile::load_chosen(
            global.config.as_deref(),
            from_env,
            Path::new(DEFAULT_CONFIG_PATH),
        )?;
        tracing::info!(
            "config: {} ({})",
            config
                .path
                .as_deref()
                .map_or("none".into(), |p| p.display().to_string()),
            config.source.as_str()
        );
        let search = plugin_search_path(global, config.plugin_dir.as_deref())?;
        let state_dir = global
            .state_dir
            .clone()
            .or_else(|| config.state_dir.clone())
            .or_else(default_state_dir)
            .ok_or_else(|| {
                config_error("no state folder: pass --state-dir or set HSMKIT_STATE_DIR")
            })?;
        Ok(Context_ {
            #[cfg(feature = "demo")]
            state_dir_chosen: global.state_dir.is_some() || config.state_dir.is_some(),
            config,
            search,
            state_dir,
        })
    }

    /// Loads the plugin named by --plugin or the config.
    pub(crate) fn load_plugin(&self, args: &PluginArgs) -> Result<Arc<LoadedPlugin>> {
        let name = args
            .plugin
            .clone()
            .or_else(|| self.config.plugin.clone())
            .ok_or_else(|| {
                config_error("no plugin selected: pass --plugin NAME (see `hsmkit plugins list`) or set `plugin` in the config")
            })?;
        Ok(self.search.find(&name)?)
    }

    /// Creates an instance with `[plugins.NAME]` settings, --set overrides and the state folder.
    pub(crate) fn create_instance(
        &self,
        plugin: &Arc<LoadedPlugin>,
        args: &PluginArgs,
    ) -> Result<Arc<PluginInstance>> {
        prepare_state_dir(&self.state_dir)?;
        if let (Some(path), Some(declared)) = (
            self.config.path.as_deref(),
            plugin.metadata().settings.as_deref(),
        ) {
            let names: Vec<&str> = declared.iter().map(|s| s.name.as_str()).collect();
            self.config.check_plugin_keys(path, plugin.name(), &names)?;
        }
        if let Some(declared) = plugin.metadata().settings.as_deref() {
            check_set_keys(plugin.name(), declared, &args.settings)?;
        }
        let mut settings = self.config.plugin_settings(plugin.name());
        settings.extend(args.settings.iter().cloned());
        if !settings.iter().any(|(k, _)| k == "state_dir") {
            settings.push(("state_dir".into(), self.state_dir.display().to_string()));
        }
        let instance = PluginInstance::create(plugin, &settings)
            .with_context(|| format!("cannot start plugin `{}`", plugin.name()))?;
        Ok(Arc::new(instance))
    }
}

/// Refuses a `--set` key the plugin does not declare, naming the valid ones, before the plugin
/// is created (its own refusal would not say that the key came from --set).
fn check_set_keys(
    plugin: &str,
    declared: &[PluginSetting],
    settings: &[(String, String)],
) -> Result<()> {
    for (key, _) in settings {
        if key != "state_dir" && !declared.iter().any(|d| &d.name == key) {
            let mut valid: Vec<&str> = declared.iter().map(|d| d.name.as_str()).collect();
            valid.push("state_dir");
            return Err(usage(format!(
                "unknown setting `{key}` in --set for plugin `{plugin}`; valid keys: {} (see `hsmkit plugins info {plugin}`)",
                valid.join(", ")
            )));
        }
    }
    Ok(())
}

/// Which attestation to use: the flag, or the only one the plugin offers.
pub(crate) fn choose_attestation(
    plugin: &LoadedPlugin,
    requested: Option<&str>,
) -> Result<Attestation> {
    let caps = plugin.metadata().capabilities;
    let offered: Vec<Attestation> = [
        (caps.tpm, Attestation::Tpm),
        (caps.x509, Attestation::X509),
        (caps.symmetric_key, Attestation::SymmetricKey),
    ]
    .into_iter()
    .filter_map(|(has, k)| has.then_some(k))
    .collect();
    let kind = match requested {
        Some(r) => r.parse::<Attestation>().map_err(|e| usage(e.to_string()))?,
        None => match offered.as_slice() {
            [only] => *only,
            [] => bail!("plugin `{}` implements no interface", plugin.name()),
            several => {
                return Err(usage(format!(
                    "plugin `{}` offers several attestations ({}); choose one with --attestation",
                    plugin.name(),
                    several
                        .iter()
                        .map(|k| k.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )))
            }
        },
    };
    if !offered.contains(&kind) {
        bail!(
            "plugin `{}` does not implement {} attestation",
            plugin.name(),
            kind.as_str()
        );
    }
    Ok(kind)
}
