//! The child side: runs one check (or the probe) and prints its result as one marked JSON
//! line on stdout, where the parent finds it among whatever the plugin printed.

use crate::check::find_check;
use crate::context::CheckContext;
use crate::verdict::Verdict;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::PathBuf;

/// Prefix of the line carrying a child's result.
pub const RESULT_MARKER: &str = "@@hsm-conformance-result@@ ";

/// What the probe child learns about a plugin before any check runs.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Probe {
    /// Whether the host loader accepted the plugin.
    pub loaded: bool,
    /// The loader's refusal or the first instance's failure, when any.
    pub error: Option<String>,
    /// Plugin name.
    pub name: Option<String>,
    /// Plugin version.
    pub version: Option<String>,
    /// Declares the TPM interface.
    pub tpm: bool,
    /// Declares the X.509 interface.
    pub x509: bool,
    /// Declares the symmetric-key interface.
    pub symmetric_key: bool,
    /// Has the operational-key table (ABI 1.2).
    pub operational_key: bool,
    /// Declares concurrent calls on one instance safe.
    pub thread_safe: bool,
    /// Function entries that are NULL (calling them would crash every check).
    pub null_entries: Vec<String>,
    /// The settings the plugin declares (ABI 1.1); `None` when it declares none (ABI 1.0) or
    /// did not load.
    #[serde(default)]
    pub settings: Option<Vec<provisioning_core::plugin::PluginSetting>>,
}

/// Prints `value` as the marked result line; the process exit code.
pub(crate) fn emit<T: Serialize>(value: &T) -> i32 {
    match serde_json::to_string(value) {
        Ok(json) => {
            let mut out = std::io::stdout().lock();
            // A plugin may have left a partial line on stdout: start on a fresh one.
            let written = writeln!(out, "\n{RESULT_MARKER}{json}").and_then(|_| out.flush());
            if written.is_ok() {
                0
            } else {
                3
            }
        }
        Err(_) => 3,
    }
}

/// Runs check `id` and prints its verdict; the process exit code.
pub fn run_check(id: &str, plugin: PathBuf, config: Vec<(String, String)>) -> i32 {
    let Some(check) = find_check(id) else {
        eprintln!("hsm-conformance: no check named `{id}`");
        return 2;
    };
    let mut ctx = CheckContext::new(plugin, config);
    let verdict = match (check.run)(&mut ctx) {
        Ok(v) | Err(v) => v,
    };
    emit(&verdict)
}

/// What a loaded plugin declares, as a [`Probe`] (no instance made yet).
fn declared(m: &provisioning_core::plugin::PluginMetadata) -> Probe {
    Probe {
        loaded: true,
        name: Some(m.name.clone()),
        version: Some(m.version.clone()),
        tpm: m.capabilities.tpm,
        x509: m.capabilities.x509,
        symmetric_key: m.capabilities.symmetric_key,
        operational_key: m.operational_key,
        thread_safe: m.thread_safe,
        settings: m.settings.clone(),
        ..Probe::default()
    }
}

/// Loads the plugin with the real host loader and creates one instance (which also prepares
/// the plugin's state folder that every check then gets a copy of); prints a [`Probe`].
pub fn run_probe(plugin: PathBuf, config: Vec<(String, String)>) -> i32 {
    use provisioning_core::plugin::{LoadedPlugin, PluginInstance};
    let probe = match LoadedPlugin::load(&plugin) {
        Err(e) => Probe {
            error: Some(e.to_string()),
            ..Probe::default()
        },
        Ok(p) => {
            let null_entries = crate::raw::RawLibrary::open(&plugin)
                .ok()
                .and_then(|l| l.table())
                .map(crate::raw::null_entries)
                .unwrap_or_default()
                .into_iter()
                .map(str::to_owned)
                .collect::<Vec<_>>();
            if !null_entries.is_empty() {
                // Only what identifies the plugin: with NULL entries, no check may rely on
                // what it declares.
                return emit(&Probe {
                    loaded: true,
                    error: Some(format!(
                        "NULL function entries: {}",
                        null_entries.join(", ")
                    )),
                    name: Some(p.metadata().name.clone()),
                    null_entries,
                    settings: p.metadata().settings.clone(),
                    ..Probe::default()
                });
            }
            let error = PluginInstance::create(&p, &config)
                .err()
                .map(|e| format!("creating an instance failed: {e}"));
            Probe {
                error,
                ..declared(p.metadata())
            }
        }
    };
    emit(&probe)
}

/// Loads the plugin with the real host loader, without creating an instance (listing
/// settings needs none, and must neither need the settings nor touch any state), and prints
/// a [`Probe`] with its name, version and settings (`--probe --list-settings`).
pub fn run_settings_probe(plugin: PathBuf) -> i32 {
    use provisioning_core::plugin::LoadedPlugin;
    let probe = match LoadedPlugin::load(&plugin) {
        Err(e) => Probe {
            error: Some(e.to_string()),
            ..Probe::default()
        },
        Ok(p) => declared(p.metadata()),
    };
    emit(&probe)
}

/// Finds the marked result line in a child's stdout and returns it with the rest of the
/// output (the plugin's own prints).
pub fn split_result(stdout: &str) -> (Option<&str>, String) {
    let mut result = None;
    let mut rest = String::new();
    for line in stdout.lines() {
        match line.strip_prefix(RESULT_MARKER) {
            Some(json) => result = Some(json),
            None if !line.is_empty() => {
                rest.push_str(line);
                rest.push('\n');
            }
            None => {}
        }
    }
    (result, rest)
}

/// Parses a verdict line.
pub fn parse_verdict(json: &str) -> Option<Verdict> {
    serde_json::from_str(json).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_line_is_found_among_plugin_output() {
        let v = Verdict::fail("a", "b");
        let json = serde_json::to_string(&v).unwrap();
        let out = format!(
            "plugin says hi\npartial{}\n{RESULT_MARKER}{json}\nbye\n",
            ""
        );
        let (line, rest) = split_result(&out);
        assert_eq!(line.and_then(parse_verdict), Some(v));
        assert_eq!(rest, "plugin says hi\npartial\nbye\n");
        assert_eq!(split_result("no marker\n").0, None);
        assert_eq!(parse_verdict("{\"result\":\"bogus\"}"), None);
    }
}
