//! Where plugins are looked for, and scanning those folders.

use super::{LoadError, LoadedPlugin};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Environment variable naming the plugins folder.
pub const PLUGIN_DIR_ENV: &str = "HSMKIT_PLUGIN_DIR";
/// File-name prefix of bundled plugins, used when looking next to the executable, where
/// other libraries may sit too.
pub const PLUGIN_FILE_PREFIX: &str = "libhsmkit_plugin_";
/// System folders searched last.
pub const DEFAULT_SYSTEM_PLUGIN_DIRS: &[&str] =
    &["/usr/local/lib/hsmkit/plugins", "/usr/lib/hsmkit/plugins"];

/// Why a folder is on the search path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PluginDirSource {
    /// `--plugin-dir`.
    Flag,
    /// `HSMKIT_PLUGIN_DIR`.
    Environment,
    /// `plugin_dir` in the config file.
    Config,
    /// `plugins/` next to the executable.
    ExecutablePlugins,
    /// The executable's own folder (development builds); only `libhsmkit_plugin_*.so` there.
    ExecutableDir,
    /// A system folder.
    System,
}

impl PluginDirSource {
    /// Where the folder came from, as `hsmkit plugins list` and messages say it: `flag
    /// --plugin-dir`, `env HSMKIT_PLUGIN_DIR`, `config plugin_dir`, or which default.
    pub fn describe(self) -> &'static str {
        match self {
            PluginDirSource::Flag => "flag --plugin-dir",
            PluginDirSource::Environment => "env HSMKIT_PLUGIN_DIR",
            PluginDirSource::Config => "config plugin_dir",
            PluginDirSource::ExecutablePlugins => "default: plugins/ next to hsmkit",
            PluginDirSource::ExecutableDir => "default: hsmkit's folder",
            PluginDirSource::System => "default: system",
        }
    }
}

/// One folder on the search path.
#[derive(Clone, Debug, Serialize)]
pub struct PluginSearchDir {
    /// The folder.
    pub path: PathBuf,
    /// Why it is searched.
    pub source: PluginDirSource,
}

/// The folders searched, in order.
#[derive(Clone, Debug, Serialize)]
pub struct PluginSearchPath {
    /// Folders, first match wins.
    pub dirs: Vec<PluginSearchDir>,
}

impl PluginSearchPath {
    /// The search path: the first of flag, environment and config that is set, alone;
    /// otherwise `plugins/` next to the executable, the executable's folder, then the system
    /// folders.
    pub fn resolve(flag: Option<&Path>, config: Option<&Path>) -> Self {
        let env = std::env::var_os(PLUGIN_DIR_ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from);
        Self::resolve_with(flag, env.as_deref(), config, std::env::current_exe().ok())
    }

    /// [`Self::resolve`] with every input given (for tests and embedders).
    pub fn resolve_with(
        flag: Option<&Path>,
        env: Option<&Path>,
        config: Option<&Path>,
        exe: Option<PathBuf>,
    ) -> Self {
        let explicit = [
            (flag, PluginDirSource::Flag),
            (env, PluginDirSource::Environment),
            (config, PluginDirSource::Config),
        ];
        for (dir, source) in explicit {
            if let Some(d) = dir {
                return PluginSearchPath {
                    dirs: vec![PluginSearchDir {
                        path: d.to_path_buf(),
                        source,
                    }],
                };
            }
        }
        let mut dirs = Vec::new();
        if let Some(exe_dir) = exe.as_deref().and_then(Path::parent) {
            dirs.push(PluginSearchDir {
                path: exe_dir.join("plugins"),
                source: PluginDirSource::ExecutablePlugins,
            });
            dirs.push(PluginSearchDir {
                path: exe_dir.to_path_buf(),
                source: PluginDirSource::ExecutableDir,
            });
        }
        for d in DEFAULT_SYSTEM_PLUGIN_DIRS {
            dirs.push(PluginSearchDir {
                path: PathBuf::from(d),
                source: PluginDirSource::System,
            });
        }
        PluginSearchPath { dirs }
    }

    /// Lists candidate files in every existing folder, in search order. In a plugins folder
    /// every visible file is a candidate (so that strays are reported); in the executable's
    /// folder only `libhsmkit_plugin_*.so`.
    pub fn candidates(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for dir in &self.dirs {
            let Ok(entries) = std::fs::read_dir(&dir.path) else {
                continue;
            };
            let mut files: Vec<PathBuf> = entries
                .filter_map(Result::ok)
                .filter(|e| e.file_type().map(|t| !t.is_dir()).unwrap_or(false))
                .map(|e| e.path())
                .filter(|p| {
                    let name = p
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    if name.starts_with('.') {
                        return false;
                    }
                    match dir.source {
                        PluginDirSource::ExecutableDir => {
                            name.starts_with(PLUGIN_FILE_PREFIX) && name.ends_with(".so")
                        }
                        _ => true,
                    }
                })
                .collect();
            files.sort();
            out.extend(files);
        }
        out
    }

    /// Loads every candidate, after the backends linked into this build (path
    /// `builtin:NAME`). Refused files are kept with their reason.
    pub fn scan(&self) -> PluginScan {
        let builtins = LoadedPlugin::builtin_names().filter_map(|name| {
            let result = LoadedPlugin::builtin(name)?;
            Some(PluginCandidate {
                path: PathBuf::from(format!("builtin:{name}")),
                result,
            })
        });
        let files = self.candidates().into_iter().map(|path| {
            let result = LoadedPlugin::load(&path);
            PluginCandidate { path, result }
        });
        PluginScan {
            candidates: builtins.chain(files).collect(),
        }
    }

    /// Finds a plugin by name (`dice`) or by path (anything with a `/` or ending in `.so`; a
    /// bare `libx.so` is `./libx.so`). A name that a backend linked into this build carries
    /// (`builtin-*` features) selects that backend, without looking at any folder.
    /// Files named after the plugin (`libhsmkit_plugin_<name>.so`) are tried first and the
    /// search stops at the first match, so selecting one plugin does not run every other
    /// plugin's initialisation.
    pub fn find(&self, name_or_path: &str) -> Result<Arc<LoadedPlugin>, FindError> {
        if name_or_path.contains('/') {
            return LoadedPlugin::load(Path::new(name_or_path)).map_err(FindError::Load);
        }
        if name_or_path.ends_with(".so") {
            // A file name alone is a file in the working folder, never a library search: the
            // `./` makes that visible in every message about it.
            return LoadedPlugin::load(&Path::new(".").join(name_or_path)).map_err(FindError::Load);
        }
        // `tpm_sim`, the file-name form, names the plugin `tpm-sim`: plugin names use `-`.
        let wanted = canonical_name(name_or_path);
        if let Some(builtin) = LoadedPlugin::builtin(&wanted) {
            return builtin.map_err(FindError::Load);
        }
        let conventional = format!("{PLUGIN_FILE_PREFIX}{}.so", name_or_path.replace('-', "_"));
        let mut candidates = self.candidates();
        // Stable sort: search order is kept among conventional names and among the rest.
        candidates.sort_by_key(|p| {
            p.file_name()
                .is_none_or(|n| n.to_string_lossy() != conventional)
        });
        let mut refused = Vec::new();
        let mut seen: Vec<String> = LoadedPlugin::builtin_names().map(String::from).collect();
        for path in candidates {
            match LoadedPlugin::load(&path) {
                Ok(p) if p.name() == name_or_path || canonical_name(p.name()) == wanted => {
                    return Ok(p)
                }
                Ok(p) => seen.push(p.name().to_string()),
                Err(e) => refused.push(e.to_string()),
            }
        }
        Err(FindError::NotFound {
            suggestion: nearest_name(&wanted, &seen),
            name: name_or_path.to_string(),
            searched: self
                .dirs
                .iter()
                .map(|d| d.path.display().to_string())
                .collect(),
            refused,
        })
    }
}

/// A plugin could not be found or loaded.
#[derive(Debug, thiserror::Error)]
pub enum FindError {
    /// The file named was refused.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// No loadable plugin has that name.
    #[error("no plugin named `{name}` in {searched:?}{}{}", suggestion_note(.suggestion), refused_note(.refused))]
    NotFound {
        /// Name asked for.
        name: String,
        /// The name of a plugin that was found and is spelled nearly the same.
        suggestion: Option<String>,
        /// Folders searched.
        searched: Vec<String>,
        /// Files refused on the way, with reasons.
        refused: Vec<String>,
    },
}

impl FindError {
    /// The failure's class, for exit codes and `--json` ([`crate::error_kind`]).
    pub fn error_kind(&self) -> crate::error_kind::ErrorKind {
        use crate::error_kind::ErrorKind;
        match self {
            FindError::Load(e) => e.error_kind(),
            FindError::NotFound { .. } => ErrorKind::Plugin,
        }
    }
}

fn suggestion_note(suggestion: &Option<String>) -> String {
    suggestion
        .as_deref()
        .map(|s| format!("; did you mean `{s}`?"))
        .unwrap_or_default()
}

/// A plugin name as plugins spell it: the file-name form `tpm_sim` is `tpm-sim`.
fn canonical_name(name: &str) -> String {
    name.replace('_', "-")
}

/// The name in `found` nearest to `wanted` (optimal string alignment distance, so that a
/// swapped pair such as `tmp-sim` is one edit), when it is near enough to be a typo: at most
/// 2 edits, and fewer than half of the name's characters.
fn nearest_name(wanted: &str, found: &[String]) -> Option<String> {
    found
        .iter()
        .map(|n| (strsim::osa_distance(wanted, &canonical_name(n)), n))
        .filter(|(d, n)| {
            *d > 0 && *d <= 2 && *d * 2 < n.chars().count().max(wanted.chars().count())
        })
        .min_by_key(|(d, _)| *d)
        .map(|(_, n)| n.clone())
}

fn refused_note(refused: &[String]) -> String {
    if refused.is_empty() {
        "; set --plugin-dir or HSMKIT_PLUGIN_DIR to the folder holding the plugin".into()
    } else {
        format!(
            "; refused on the way: {}; see `hsmkit plugins list`",
            refused.join("; ")
        )
    }
}

/// One file found while scanning.
#[derive(Debug)]
pub struct PluginCandidate {
    /// The file.
    pub path: PathBuf,
    /// The loaded plugin, or why it was refused.
    pub result: Result<Arc<LoadedPlugin>, LoadError>,
}

/// Everything a scan found.
#[derive(Debug)]
pub struct PluginScan {
    /// Files in search order.
    pub candidates: Vec<PluginCandidate>,
}

pub use FindError as PluginFindError;
