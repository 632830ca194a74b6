//! Opening a plugin library, calling its entry point and validating what it returns.

use super::checks::check_elf;
use super::host_api::HOST_API;
use super::{LoadError, PluginErrorCode};
use hsm_api::*;
use serde::{Deserialize, Serialize};
use std::ffi::CStr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod builtin;

/// Which interfaces a plugin implements.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Capabilities {
    /// TPM attestation.
    pub tpm: bool,
    /// X.509 attestation.
    pub x509: bool,
    /// Symmetric-key attestation.
    #[serde(rename = "symmetricKey")]
    pub symmetric_key: bool,
}

impl Capabilities {
    fn from_bits(bits: u32) -> Self {
        Capabilities {
            tpm: bits & HSM_CAP_TPM != 0,
            x509: bits & HSM_CAP_X509 != 0,
            symmetric_key: bits & HSM_CAP_SYMMETRIC_KEY != 0,
        }
    }

    /// The interface names, for people (`tpm, x509`).
    pub fn names(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if self.tpm {
            v.push("tpm");
        }
        if self.x509 {
            v.push("x509");
        }
        if self.symmetric_key {
            v.push("symmetricKey");
        }
        v
    }
}

/// One setting a plugin declares (ABI 1.1): a key its `create` accepts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginSetting {
    /// The key.
    pub name: String,
    /// What it is, one line.
    pub description: String,
    /// Whether `create` refuses to start without it.
    pub required: bool,
}

impl PluginSetting {
    /// The setting on one line, as `hsmkit plugins info` and `hsm-conformance
    /// --list-settings` print it: name, required or optional, description.
    pub fn line(&self) -> String {
        format!(
            "{:<24} {:<8}  {}",
            self.name,
            if self.required {
                "required"
            } else {
                "optional"
            },
            self.description
        )
    }
}

/// The settings part of `hsmkit plugins info` and `hsm-conformance --list-settings`: one line
/// per declared setting, then `state_dir` (always passed by the host); for a plugin that
/// declares none (ABI 1.0), the one line "settings not declared".
pub fn settings_lines(settings: Option<&[PluginSetting]>) -> Vec<String> {
    let Some(settings) = settings else {
        return vec![SETTINGS_NOT_DECLARED.to_string()];
    };
    let mut lines: Vec<String> = settings
        .iter()
        .filter(|s| s.name != STATE_DIR_SETTING)
        .map(PluginSetting::line)
        .collect();
    lines.push(
        PluginSetting {
            name: STATE_DIR_SETTING.into(),
            description: "the state folder; always passed by the host".into(),
            required: false,
        }
        .line(),
    );
    lines
}

/// What hosts show for a plugin that does not declare its settings (built for ABI 1.0).
pub const SETTINGS_NOT_DECLARED: &str =
    "settings not declared (ABI 1.0 plugin: see its documentation)";

/// The setting every host passes and every plugin accepts without declaring it.
const STATE_DIR_SETTING: &str = "state_dir";

/// What a plugin says about itself.
#[derive(Clone, Debug, Serialize)]
pub struct PluginMetadata {
    /// Selection name.
    pub name: String,
    /// Version string.
    pub version: String,
    /// Vendor.
    pub vendor: String,
    /// One-line description.
    pub description: String,
    /// ABI version the plugin was built for (`1.0`).
    #[serde(rename = "abiVersion")]
    pub abi_version: String,
    /// Interfaces it implements.
    pub capabilities: Capabilities,
    /// Whether one instance may be called from several threads at once.
    #[serde(rename = "threadSafe")]
    pub thread_safe: bool,
    /// Whether the abi_stable layout was checked field by field (Rust SDK plugins).
    #[serde(rename = "layoutChecked")]
    pub layout_checked: bool,
    /// The settings `create` accepts besides `state_dir` (ABI 1.1); `None` (JSON `null`) for
    /// a plugin that does not declare them (ABI 1.0).
    pub settings: Option<Vec<PluginSetting>>,
    /// Whether it can hold an operational key (ABI 1.2 `operational_key` entry present).
    #[serde(rename = "operationalKey")]
    pub operational_key: bool,
}

/// A loaded, validated plugin. Never unloaded: its code may still be referenced by instances,
/// thread-locals or atexit handlers, so closing it is not safe.
pub struct LoadedPlugin {
    /// The file, or `builtin:NAME` for a backend linked into this build.
    path: PathBuf,
    builtin: bool,
    table: &'static HsmPluginTable,
    metadata: PluginMetadata,
    load_time: Duration,
}

impl std::fmt::Debug for LoadedPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedPlugin")
            .field("path", &self.path)
            .field("builtin", &self.builtin)
            .field("metadata", &self.metadata)
            .finish()
    }
}

impl LoadedPlugin {
    /// Checks and loads the plugin at `path`: the file is opened once and its owner, mode,
    /// folders and ELF header are checked on that descriptor (`hsm_secure_fs::trust`), which
    /// is then what `dlopen` (`RTLD_NOW | RTLD_LOCAL`) loads, through `/proc/self/fd`; then the
    /// entry point, the ABI version and (for Rust plugins) the abi_stable layout of the tables.
    /// A relative path is relative to the working folder, never a library search.
    pub fn load(path: &Path) -> Result<Arc<LoadedPlugin>, LoadError> {
        let started = Instant::now();
        let file = hsm_secure_fs::trust::open_trusted(path)?;
        check_elf(&file)?;
        let library = open(path, file)?;
        // SAFETY: the entry symbol's type is fixed by the ABI; a library exporting the name
        // with another type breaks the contract it claims by exporting it.
        let entry: HsmPluginEntryFn = unsafe {
            match library.get::<HsmPluginEntryFn>(HSM_ENTRY_SYMBOL_CSTR.to_bytes_with_nul()) {
                Ok(sym) => *sym,
                Err(_) => {
                    return Err(LoadError::MissingEntry {
                        path: path.to_path_buf(),
                        symbol: HSM_ENTRY_SYMBOL,
                    })
                }
            }
        };
        // SAFETY: as above, for the optional layout symbol.
        let layout_fn: Option<HsmLayoutFn> = unsafe {
            library
                .get::<HsmLayoutFn>(HSM_LAYOUT_SYMBOL_CSTR.to_bytes_with_nul())
                .ok()
                .map(|s| *s)
        };
        // Never unload: see the type's documentation.
        std::mem::forget(library);
        Self::from_entry(path, entry, layout_fn, started, false)
    }

    /// The backend called `name` that was linked into this build (`builtin-*` features of
    /// provisioning-core), or `None` when there is none. No file is involved: the backend's
    /// entry function is called directly, and its table goes through the same checks as a
    /// loaded plugin's (ABI version, NULL entries, capabilities, layout, name).
    pub fn builtin(name: &str) -> Option<Result<Arc<LoadedPlugin>, LoadError>> {
        let (builtin_name, entry) = builtin::BACKENDS.iter().find(|(n, _)| *n == name)?;
        let started = Instant::now();
        let path = PathBuf::from(format!("builtin:{builtin_name}"));
        let plugin = Self::from_entry(&path, *entry, Some(builtin::layout), started, true);
        Some(plugin.and_then(|p| {
            // The list and the table are written separately; a mismatch would select one
            // backend under another's name.
            if p.name() == *builtin_name {
                Ok(p)
            } else {
                Err(LoadError::MalformedTable {
                    path,
                    reason: format!(
                        "builtin backend `{builtin_name}` calls itself `{}`",
                        p.name()
                    ),
                })
            }
        }))
    }

    /// The names of the backends linked into this build, in listing order; empty without the
    /// `builtin-*` features.
    pub fn builtin_names() -> impl Iterator<Item = &'static str> {
        builtin::BACKENDS.iter().map(|(name, _)| *name)
    }

    /// Calls `entry` and validates the table it returns; shared by files and builtins so that
    /// both are held to the same rules.
    fn from_entry(
        path: &Path,
        entry: HsmPluginEntryFn,
        layout_fn: Option<HsmLayoutFn>,
        started: Instant,
        builtin: bool,
    ) -> Result<Arc<LoadedPlugin>, LoadError> {
        let mut table_ptr: *const HsmPluginTable = std::ptr::null();
        // SAFETY: calling the plugin's entry with a valid static host table and a valid out
        // pointer, per the ABI.
        let status = unsafe { entry(HSM_ABI_MAJOR, HSM_ABI_MINOR, &HOST_API, &mut table_ptr) };
        let path_buf = path.to_path_buf();
        if !table_ptr.is_null() {
            // Only the header is read here: the rest may be laid out for another major.
            // SAFETY: a non-NULL table from the entry is valid static data that starts with
            // an HsmTableHeader (ABI rule).
            let header = unsafe { std::ptr::read(table_ptr.cast::<HsmTableHeader>()) };
            if header.abi_major != HSM_ABI_MAJOR {
                return Err(LoadError::AbiMajorMismatch {
                    path: path_buf,
                    plugin_major: header.abi_major,
                    plugin_minor: header.abi_minor,
                    host_major: HSM_ABI_MAJOR,
                    host_minor: HSM_ABI_MINOR,
                });
            }
        }
        match status {
            HSM_OK => {}
            HSM_ERR_PANIC => return Err(LoadError::EntryPanicked { path: path_buf }),
            other => {
                return Err(LoadError::EntryFailed {
                    path: path_buf,
                    code: PluginErrorCode::from_status(other),
                })
            }
        }
        if table_ptr.is_null() {
            return Err(LoadError::MalformedTable {
                path: path.to_path_buf(),
                reason: "the entry point returned HSM_OK but no table".into(),
            });
        }
        // SAFETY: non-NULL, same-major table from the entry (checked above).
        unsafe { check_entries_not_null(path, table_ptr) }?;
        // SAFETY: every function entry was checked non-NULL and struct_size covers the table
        // of the minor it claims (1.0 at least), as `in_current_layout` needs.
        let table = unsafe { HsmPluginTable::in_current_layout(table_ptr) };
        let layout_checked = match layout_fn {
            Some(f) => check_layout(path, f)?,
            None => false,
        };
        let metadata = validate_table(path, table, layout_checked)?;
        Ok(Arc::new(LoadedPlugin {
            path: path.to_path_buf(),
            builtin,
            table,
            metadata,
            load_time: started.elapsed(),
        }))
    }

    /// The file it was loaded from (`builtin:NAME` for a builtin backend).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether it is a backend linked into this build rather than a loaded file.
    pub fn is_builtin(&self) -> bool {
        self.builtin
    }

    /// Name, version, capabilities...
    pub fn metadata(&self) -> &PluginMetadata {
        &self.metadata
    }

    /// The selection name.
    pub fn name(&self) -> &str {
        &self.metadata.name
    }

    /// How long checking and loading took.
    pub fn load_time(&self) -> Duration {
        self.load_time
    }

    pub(crate) fn table(&self) -> &'static HsmPluginTable {
        self.table
    }
}

fn open(
    path: &Path,
    file: hsm_secure_fs::trust::TrustedFile,
) -> Result<libloading::os::unix::Library, LoadError> {
    use libloading::os::unix::{Library, RTLD_LOCAL, RTLD_NOW};
    let checked = file.pin_for_dlopen()?;
    // SAFETY: loading a library runs its initializers; `checked` names the very descriptor
    // that passed the ownership, mode and ELF checks, which is the trust decision this host
    // makes about plugin code.
    unsafe { Library::open(Some(&checked), RTLD_NOW | RTLD_LOCAL) }.map_err(|e| LoadError::Dlopen {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// Compares the plugin's abi_stable layout with ours when both were built for the same minor.
/// Across minors the tables legitimately differ (appended entries), and the header sizes
/// checked in [`validate_table`] are what keeps the host safe.
fn check_layout(path: &Path, layout_fn: HsmLayoutFn) -> Result<bool, LoadError> {
    let mut minor = 0u16;
    // SAFETY: the symbol has the ABI's layout-function type; out pointer is valid.
    let theirs = unsafe { layout_fn(&mut minor) };
    if minor != HSM_ABI_MINOR {
        return Ok(false);
    }
    let ours = <HsmPluginTable as abi_stable::StableAbi>::LAYOUT;
    match abi_stable::abi_stability::abi_checking::check_layout_compatibility(ours, theirs) {
        Ok(()) => Ok(true),
        Err(e) => Err(LoadError::LayoutMismatch {
            path: path.to_path_buf(),
            details: summarize_layout_error(&e.to_string()),
        }),
    }
}

/// abi_stable's report is long and repeats itself per nesting level; keep the lines that name
/// types and fields, which is what a plugin author needs.
fn summarize_layout_error(report: &str) -> String {
    let lines: Vec<&str> = report
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let mut out = lines.join(" | ");
    if out.len() > 4000 {
        let mut cut = 4000;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        out.push_str(" ...");
    }
    out
}

/// Reads `T`'s machine word at `offset` in the table at `base` as a plain integer, so that a
/// NULL function entry is found before the table is ever read as a Rust type (where a NULL fn
/// pointer would be undefined behaviour).
///
/// # Safety
/// `base` points to at least `offset + size_of::<usize>()` readable bytes.
unsafe fn word_at(base: *const u8, offset: usize) -> usize {
    // SAFETY: per the caller; the read is unaligned-tolerant.
    unsafe { std::ptr::read_unaligned(base.add(offset).cast::<usize>()) }
}

/// An interface's name, its pointer's offset in the plugin table, and its function entries
/// (name, offset).
type InterfaceEntries = (&'static str, usize, &'static [(&'static str, usize)]);

/// Refuses tables with a NULL function entry (the C ABI cannot stop a vendor from leaving one
/// out), naming the entry.
///
/// # Safety
/// `table` is a non-NULL plugin table of this major.
unsafe fn check_entries_not_null(
    path: &Path,
    table: *const HsmPluginTable,
) -> Result<(), LoadError> {
    use std::mem::offset_of;
    let bad = |reason: String| LoadError::MalformedTable {
        path: path.to_path_buf(),
        reason,
    };
    let base = table.cast::<u8>();
    // SAFETY: the header is part of every table.
    let header = unsafe { std::ptr::read(table.cast::<HsmTableHeader>()) };
    let needed = match header.abi_minor {
        0 => HsmPluginTable::SIZE_1_0,
        1 => HsmPluginTable::SIZE_1_1,
        _ => HsmPluginTable::SIZE_1_2,
    };
    if (header.struct_size as usize) < needed {
        return Err(bad(format!(
            "plugin table is {} bytes, ABI {}.{} needs at least {needed}",
            header.struct_size, header.abi_major, header.abi_minor,
        )));
    }
    let plugin_entries = [
        ("create", offset_of!(HsmPluginTable, create)),
        ("destroy", offset_of!(HsmPluginTable, destroy)),
        ("last_error", offset_of!(HsmPluginTable, last_error)),
        ("release_buffer", offset_of!(HsmPluginTable, release_buffer)),
    ];
    for (name, off) in plugin_entries {
        // SAFETY: struct_size covers the whole 1.0 table (checked above).
        if unsafe { word_at(base, off) } == 0 {
            return Err(bad(format!("plugin table entry `{name}` is NULL")));
        }
    }
    let mut interfaces: Vec<InterfaceEntries> = vec![
        (
            "TPM",
            offset_of!(HsmPluginTable, tpm),
            &[
                (
                    "get_endorsement_key",
                    offset_of!(HsmTpmTable, get_endorsement_key),
                ),
                (
                    "get_storage_root_key",
                    offset_of!(HsmTpmTable, get_storage_root_key),
                ),
                (
                    "activate_identity_key",
                    offset_of!(HsmTpmTable, activate_identity_key),
                ),
                (
                    "sign_with_identity",
                    offset_of!(HsmTpmTable, sign_with_identity),
                ),
            ],
        ),
        (
            "X.509",
            offset_of!(HsmPluginTable, x509),
            &[
                (
                    "get_certificate_chain",
                    offset_of!(HsmX509Table, get_certificate_chain),
                ),
                ("get_common_name", offset_of!(HsmX509Table, get_common_name)),
                ("sign_digest", offset_of!(HsmX509Table, sign_digest)),
                (
                    "export_private_key",
                    offset_of!(HsmX509Table, export_private_key),
                ),
            ],
        ),
        (
            "symmetric-key",
            offset_of!(HsmPluginTable, symmetric_key),
            &[
                (
                    "get_registration_id",
                    offset_of!(HsmSymmetricKeyTable, get_registration_id),
                ),
                ("sign", offset_of!(HsmSymmetricKeyTable, sign)),
                ("import_key", offset_of!(HsmSymmetricKeyTable, import_key)),
            ],
        ),
    ];
    // The 1.2 entry exists only in a table that says it does (minor and size checked above).
    if HsmPluginTable::has_operational_key(&header) {
        interfaces.push((
            "operational-key",
            offset_of!(HsmPluginTable, operational_key),
            &[
                ("create_key", offset_of!(HsmOperationalKeyTable, create_key)),
                (
                    "get_public_key",
                    offset_of!(HsmOperationalKeyTable, get_public_key),
                ),
                (
                    "sign_digest",
                    offset_of!(HsmOperationalKeyTable, sign_digest),
                ),
                (
                    "store_chain",
                    offset_of!(HsmOperationalKeyTable, store_chain),
                ),
                ("get_chain", offset_of!(HsmOperationalKeyTable, get_chain)),
                ("delete_key", offset_of!(HsmOperationalKeyTable, delete_key)),
            ],
        ));
    }
    for (iface, table_off, entries) in interfaces {
        // SAFETY: within the plugin table: the 1.0 entries, or `operational_key` when the header
        // says the table has it.
        let sub = unsafe { word_at(base, table_off) } as *const u8;
        if sub.is_null() {
            continue;
        }
        // SAFETY: a non-NULL interface table is valid static data starting with a header.
        let sub_header = unsafe { std::ptr::read(sub.cast::<HsmTableHeader>()) };
        let needed = entries
            .iter()
            .map(|(_, o)| o + std::mem::size_of::<usize>())
            .max()
            .unwrap_or(0);
        if sub_header.abi_major != HSM_ABI_MAJOR || (sub_header.struct_size as usize) < needed {
            return Err(bad(format!(
                "{iface} table is ABI {}.{} with {} bytes; host needs ABI {HSM_ABI_MAJOR}.x with at least {needed}",
                sub_header.abi_major, sub_header.abi_minor, sub_header.struct_size
            )));
        }
        for (name, off) in entries {
            // SAFETY: struct_size covers `off` (checked above).
            if unsafe { word_at(sub, *off) } == 0 {
                return Err(bad(format!("{iface} table entry `{name}` is NULL")));
            }
        }
    }
    Ok(())
}

/// The settings a 1.1 table declares; `None` for a 1.0 one. Refuses a declaration the hosts
/// could not show or a plugin could not keep: NULL with entries, NULL or non-UTF-8 text, a
/// name that is not a key, a description of several lines, `required` other than 0 or 1, a
/// name declared twice.
fn read_settings(
    t: &'static HsmPluginTable,
    bad: &dyn Fn(String) -> LoadError,
) -> Result<Option<Vec<PluginSetting>>, LoadError> {
    if !HsmPluginTable::has_settings(&t.header) {
        return Ok(None);
    }
    /// More than any plugin needs; a larger count is a stray value, not a list.
    const MAX_SETTINGS: usize = 256;
    if t.settings_len == 0 {
        return Ok(Some(Vec::new()));
    }
    if t.settings.is_null() || t.settings_len > MAX_SETTINGS {
        return Err(bad(format!(
            "the settings declaration has {} entries at {:?} (NULL or more than {MAX_SETTINGS})",
            t.settings_len, t.settings
        )));
    }
    // SAFETY: a non-NULL `settings` points to `settings_len` static declarations (ABI rule).
    let decls = unsafe { std::slice::from_raw_parts(t.settings, t.settings_len) };
    let mut out: Vec<PluginSetting> = Vec::with_capacity(decls.len());
    for (i, d) in decls.iter().enumerate() {
        let text = |p: HsmStaticStr, what: &str| -> Result<String, LoadError> {
            if p.is_null() {
                return Err(bad(format!("setting {i} has a NULL {what}")));
            }
            // SAFETY: non-NULL strings in the table are NUL-terminated statics per the ABI.
            let s = unsafe { CStr::from_ptr(p) };
            s.to_str()
                .map(str::to_owned)
                .map_err(|_| bad(format!("setting {i} has a {what} that is not UTF-8")))
        };
        let name = text(d.name, "name")?;
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return Err(bad(format!(
                "setting name `{name}` must be non-empty ASCII letters, digits, '-', '_' or '.'"
            )));
        }
        let description = text(d.description, "description")?;
        if description.contains(['\n', '\r']) {
            return Err(bad(format!(
                "setting `{name}` has a description of several lines; hosts show one line"
            )));
        }
        let required = match d.required {
            0 => false,
            1 => true,
            other => {
                return Err(bad(format!(
                    "setting `{name}` has required = {other}; 0 or 1 expected"
                )))
            }
        };
        if out.iter().any(|s| s.name == name) {
            return Err(bad(format!("setting `{name}` is declared twice")));
        }
        out.push(PluginSetting {
            name,
            description,
            required,
        });
    }
    Ok(Some(out))
}

fn c_string(p: HsmStaticStr) -> Option<String> {
    if p.is_null() {
        None
    } else {
        // SAFETY: non-NULL strings in the table are NUL-terminated statics per the ABI.
        Some(unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
    }
}

fn validate_table(
    path: &Path,
    t: &'static HsmPluginTable,
    layout_checked: bool,
) -> Result<PluginMetadata, LoadError> {
    let bad = |reason: String| LoadError::MalformedTable {
        path: path.to_path_buf(),
        reason,
    };
    let name = c_string(t.name).ok_or_else(|| bad("the plugin has no name".into()))?;
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        return Err(bad(format!(
            "plugin name `{name}` must be non-empty ASCII letters, digits, '-', '_' or '.'"
        )));
    }
    let caps = Capabilities::from_bits(t.capabilities);
    // Sizes, majors and NULL entries of the interface tables were checked before the table
    // was read as a Rust type; here the declared capabilities must match the tables present.
    check_interface(&bad, "TPM", caps.tpm, t.tpm.is_null())?;
    check_interface(&bad, "X.509", caps.x509, t.x509.is_null())?;
    check_interface(
        &bad,
        "symmetric-key",
        caps.symmetric_key,
        t.symmetric_key.is_null(),
    )?;
    let settings = read_settings(t, &bad)?;
    Ok(PluginMetadata {
        name,
        version: c_string(t.version).unwrap_or_default(),
        vendor: c_string(t.vendor).unwrap_or_default(),
        description: c_string(t.description).unwrap_or_default(),
        abi_version: format!("{}.{}", t.header.abi_major, t.header.abi_minor),
        capabilities: caps,
        thread_safe: t.threading == HSM_THREADING_CONCURRENT,
        layout_checked,
        settings,
        operational_key: !t.operational_key.is_null(),
    })
}

fn check_interface(
    bad: &dyn Fn(String) -> LoadError,
    name: &str,
    declared: bool,
    table_is_null: bool,
) -> Result<(), LoadError> {
    match (declared, table_is_null) {
        (true, true) => Err(bad(format!(
            "declares the {name} capability but its {name} table is NULL"
        ))),
        (false, false) => Err(bad(format!(
            "has a {name} table but does not declare the {name} capability"
        ))),
        _ => Ok(()),
    }
}
