//! What a check function gets: the plugin file, its settings and helpers to open it.

use crate::raw::{RawInstance, RawLibrary};
use crate::verdict::Verdict;
use hsm_api::{status_name, HsmPluginTable, HSM_ERR_INVALID_ARGUMENT, HSM_ERR_NOT_FOUND};
use std::path::PathBuf;

/// The inputs of one check, inside its child process.
#[derive(Debug)]
pub struct CheckContext {
    /// The plugin file.
    pub plugin: PathBuf,
    /// Settings for `create` (including the `state_dir` the runner chose).
    pub config: Vec<(String, String)>,
    library: Option<&'static RawLibrary>,
}

impl CheckContext {
    /// A context for `plugin` created with `config`.
    pub fn new(plugin: PathBuf, config: Vec<(String, String)>) -> Self {
        CheckContext {
            plugin,
            config,
            library: None,
        }
    }

    /// The opened library (opened once per child).
    pub fn library(&mut self) -> Result<&'static RawLibrary, Verdict> {
        if let Some(l) = self.library {
            return Ok(l);
        }
        let lib = RawLibrary::open(&self.plugin)
            .map_err(|e| Verdict::fail("the plugin opens with its entry symbol", e.to_string()))?;
        // The library is never closed, so leaking its handle matches its lifetime.
        let lib: &'static RawLibrary = Box::leak(Box::new(lib));
        self.library = Some(lib);
        Ok(lib)
    }

    /// The plugin table for this host's ABI version.
    pub fn table(&mut self) -> Result<&'static HsmPluginTable, Verdict> {
        self.library()?.table().ok_or_else(|| {
            Verdict::fail(
                "the entry point returns HSM_OK and a table",
                "it refused this host's ABI version",
            )
        })
    }

    /// A new instance with the configured settings. A `create` refused with
    /// `HSM_ERR_INVALID_ARGUMENT` or `HSM_ERR_NOT_FOUND` is a setup problem (a missing or wrong
    /// setting, a token or file that is not there), reported as [`Verdict::Setup`] with the
    /// plugin's message; any other refusal is a failure of the plugin.
    pub fn instance(&mut self) -> Result<RawInstance, Verdict> {
        let table = self.table()?;
        RawInstance::create(table, &self.config).map_err(|e| {
            if e.status == HSM_ERR_INVALID_ARGUMENT || e.status == HSM_ERR_NOT_FOUND {
                Verdict::setup(format!(
                    "create refused the settings given ({}): {}; pass the setting with --config KEY=VALUE",
                    status_name(e.status),
                    e.message
                ))
            } else {
                Verdict::fail("create succeeds with the given settings", e.to_string())
            }
        })
    }
}
