//! The process-wide part: the config file, the loaded plugin and the one plugin instance that
//! every handle shares, and the `*_init`/`*_deinit` count.
//!
//! The C SDK calls `hsm_client_x509_init` and `hsm_client_tpm_init` together, once for the
//! provisioning client and once more for the IoT Hub client, and their deinits as often. The
//! first init reads the config and loads the plugin (kept loaded for the life of the process);
//! every init counts; the last deinit drops the shared instance (handles still alive keep it).
//! Handles come and go several times per registration, so they share one instance: a TPM
//! behind a TCTI then sees one connection, and the identity is the one in the state folder.

use crate::error::AdapterError;
use provisioning_core::config::{ConfigFile, CONFIG_ENV};
use provisioning_core::plugin::{LoadedPlugin, PluginInstance, PluginSearchPath};
use provisioning_core::state_dir::{default_state_dir, prepare_state_dir, STATE_DIR_ENV};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

/// The plugin chosen by the config, with its settings.
pub(crate) struct Backend {
    plugin: Arc<LoadedPlugin>,
    /// `[plugins.NAME]` plus `state_dir`.
    settings: Vec<(String, String)>,
}

impl Backend {
    /// Reads `HSMKIT_CONFIG` and loads the plugin `[azure_custom_hsm]` names.
    fn load() -> Result<Backend, AdapterError> {
        let path = std::env::var_os(CONFIG_ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from);
        let config = ConfigFile::load(path.as_deref())?;
        let section = &config.azure_custom_hsm;
        let name = section
            .plugin
            .clone()
            .or_else(|| config.plugin.clone())
            .ok_or(AdapterError::NoPlugin {
                config: path.is_some(),
            })?;
        let search =
            PluginSearchPath::resolve(section.plugin_dir.as_deref(), config.plugin_dir.as_deref());
        let plugin = search.find(&name)?;
        // The state folder as hsmkit finds it without flags, so that `hsmkit enroll-info`
        // with the same config shows the identity the C SDK uses.
        let state_dir = std::env::var_os(STATE_DIR_ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| config.state_dir.clone())
            .or_else(default_state_dir)
            .ok_or(AdapterError::NoStateDir)?;
        prepare_state_dir(&state_dir)?;
        let mut settings = config.plugin_settings(plugin.name());
        if !settings.iter().any(|(k, _)| k == "state_dir") {
            settings.push(("state_dir".into(), state_dir.display().to_string()));
        }
        tracing::info!(
            plugin = plugin.name(),
            path = %plugin.path().display(),
            "serving the C SDK's custom HSM interface with this plugin"
        );
        Ok(Backend { plugin, settings })
    }

    /// The plugin's name.
    pub(crate) fn name(&self) -> &str {
        self.plugin.name()
    }
}

struct Process {
    inits: usize,
    backend: Option<Arc<Backend>>,
    instance: Option<Arc<PluginInstance>>,
}

static PROCESS: Mutex<Process> = Mutex::new(Process {
    inits: 0,
    backend: None,
    instance: None,
});

fn process() -> MutexGuard<'static, Process> {
    // A panic while holding the lock is caught at the boundary; the data stays consistent
    // (each field is replaced whole), so a poisoned lock is still usable.
    PROCESS.lock().unwrap_or_else(|e| e.into_inner())
}

/// `hsm_client_*_init`: counts, and loads config and plugin the first time. A failed load is
/// not remembered: the next init tries again.
pub(crate) fn init() -> Result<(), AdapterError> {
    let mut p = process();
    if p.backend.is_none() {
        // Before anything here can hold a secret, as hsmkit itself does.
        hsm_secure_fs::dump::disable_core_dumps().map_err(AdapterError::CoreDumps)?;
        p.backend = Some(Arc::new(Backend::load()?));
    }
    p.inits += 1;
    Ok(())
}

/// `hsm_client_*_deinit`: the last one drops the shared instance.
pub(crate) fn deinit() {
    let mut p = process();
    p.inits = p.inits.saturating_sub(1);
    if p.inits == 0 {
        p.instance = None;
    }
}

/// The shared instance and the backend it belongs to, created on first use.
pub(crate) fn instance() -> Result<(Arc<Backend>, Arc<PluginInstance>), AdapterError> {
    let mut p = process();
    if p.inits == 0 {
        return Err(AdapterError::NotInitialized);
    }
    let backend = p.backend.clone().ok_or(AdapterError::NotInitialized)?;
    if let Some(i) = &p.instance {
        return Ok((backend, i.clone()));
    }
    let instance = Arc::new(
        PluginInstance::create(&backend.plugin, &backend.settings)
            .map_err(|e| AdapterError::plugin("create", e))?,
    );
    p.instance = Some(instance.clone());
    Ok((backend, instance))
}
