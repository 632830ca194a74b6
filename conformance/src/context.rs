//! What a check function gets: the plugin file, its settings and helpers to open it.

use crate::raw::{RawInstance, RawLibrary};
use crate::verdict::Verdict;
use hsm_api::{
    status_name, HsmPluginTable, HSM_ERR_INVALID_ARGUMENT, HSM_ERR_NOT_FOUND, HSM_ERR_NOT_SUPPORTED,
};
use std::path::PathBuf;
use std::sync::OnceLock;

/// Why each declared interface that an instance refuses is treated as absent, in this child
/// (see [`CheckContext::instance`]): (`tpm`, `x509` or `symmetric-key`, the plugin's message).
static REFUSED: OnceLock<Vec<(&'static str, String)>> = OnceLock::new();

/// The SKIP reason for `interface` when this child found it refused, else `None`.
pub(crate) fn refused(interface: &str) -> Option<String> {
    REFUSED.get()?.iter().find(|(i, _)| *i == interface).map(|(i, m)| {
        format!(
            "the plugin declares the {i} capability, but its instance refuses every call of it with HSM_ERR_NOT_SUPPORTED (a plugin that learns what it hosts from its settings): {m}"
        )
    })
}

/// The inputs of one check, inside its child process.
pub struct CheckContext {
    /// The plugin file.
    pub plugin: PathBuf,
    /// Settings for `create` (including the `state_dir` the runner chose).
    pub config: Vec<(String, String)>,
    library: Option<&'static RawLibrary>,
    offered: Option<&'static HsmPluginTable>,
}

impl std::fmt::Debug for CheckContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckContext")
            .field("plugin", &self.plugin)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl CheckContext {
    /// A context for `plugin` created with `config`.
    pub fn new(plugin: PathBuf, config: Vec<(String, String)>) -> Self {
        CheckContext {
            plugin,
            config,
            library: None,
            offered: None,
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

    /// The plugin table for this host's ABI version, as instances are given it: without the
    /// interfaces an instance refuses (see [`CheckContext::instance`]).
    pub fn table(&mut self) -> Result<&'static HsmPluginTable, Verdict> {
        self.offered_table()
    }

    /// The plugin table for this host's ABI version, as the plugin returned it.
    fn plugin_table(&mut self) -> Result<&'static HsmPluginTable, Verdict> {
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
    ///
    /// A plugin that declares several interfaces may learn only from its settings which of
    /// them it really has (one that hosts another library): an interface whose identity getter
    /// (EK, chain, registration id) answers `HSM_ERR_NOT_SUPPORTED` on a first instance is
    /// absent from the table the instance is given, so that checks of it SKIP with the plugin's
    /// message and checks of any interface use one that is there. Plugins declaring one
    /// interface are not probed.
    pub fn instance(&mut self) -> Result<RawInstance, Verdict> {
        let table = self.offered_table()?;
        RawInstance::create(table, &self.config).map_err(|e| {
            if e.status == HSM_ERR_INVALID_ARGUMENT || e.status == HSM_ERR_NOT_FOUND {
                Verdict::setup(format!(
                    "create refused the settings given ({}): {}; pass the setting with --set KEY=VALUE",
                    status_name(e.status),
                    e.message
                ))
            } else {
                Verdict::fail("create succeeds with the given settings", e.to_string())
            }
        })
    }

    /// The SKIP reason for `interface` (`tpm`, `x509`, `symmetric-key`) when the plugin declares
    /// it but its instance refuses it (see [`CheckContext::instance`]), for checks that reach
    /// the plugin in other processes.
    pub(crate) fn refusal(&mut self, interface: &str) -> Option<String> {
        self.offered_table().ok()?;
        refused(interface)
    }

    /// The plugin table with the interfaces an instance refuses made NULL (see
    /// [`CheckContext::instance`]); the plugin's own table when it refuses none.
    fn offered_table(&mut self) -> Result<&'static HsmPluginTable, Verdict> {
        if let Some(t) = self.offered {
            return Ok(t);
        }
        let table = self.plugin_table()?;
        let declared = [
            !table.tpm.is_null(),
            !table.x509.is_null(),
            !table.symmetric_key.is_null(),
        ];
        if declared.iter().filter(|d| **d).count() < 2 {
            self.offered = Some(table);
            return Ok(table);
        }
        // An instance that cannot be created is `instance`'s to report, with the real table.
        let Ok(probe) = RawInstance::create(table, &self.config) else {
            return Ok(table);
        };
        let mut refused = Vec::new();
        let not_supported = |r: Result<Result<Vec<u8>, crate::raw::RawFailure>, Verdict>| match r {
            Ok(Err(e)) if e.status == HSM_ERR_NOT_SUPPORTED => Some(e.message),
            _ => None,
        };
        if declared[0] {
            if let Some(m) = not_supported(probe.ek()) {
                refused.push(("tpm", m));
            }
        }
        if declared[1] {
            if let Some(m) = not_supported(probe.chain()) {
                refused.push(("x509", m));
            }
        }
        if declared[2] {
            if let Some(m) = not_supported(probe.registration_id()) {
                refused.push(("symmetric-key", m));
            }
        }
        drop(probe);
        let offered = if refused.is_empty() {
            table
        } else {
            // SAFETY: `table` is a valid plugin table, static for the process; the copy holds the
            // same static entries (no destructor runs for any of them) and is kept for the process.
            let mut copy: HsmPluginTable = unsafe { std::ptr::read(table) };
            for (interface, _) in &refused {
                match *interface {
                    "tpm" => copy.tpm = std::ptr::null(),
                    "x509" => copy.x509 = std::ptr::null(),
                    _ => copy.symmetric_key = std::ptr::null(),
                }
            }
            let _ = REFUSED.set(refused);
            Box::leak(Box::new(copy))
        };
        self.offered = Some(offered);
        Ok(offered)
    }
}
