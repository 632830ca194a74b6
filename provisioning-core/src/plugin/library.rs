//! Opening a plugin library, calling its entry point and validating what it returns.

use super::checks::{check_elf, check_permissions};
use super::host_api::HOST_API;
use super::{LoadError, PluginErrorCode};
use hsm_api::*;
use serde::Serialize;
use std::ffi::CStr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

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
}

/// A loaded, validated plugin. Never unloaded: its code may still be referenced by instances,
/// thread-locals or atexit handlers, so closing it is not safe.
pub struct LoadedPlugin {
    path: PathBuf,
    table: &'static HsmPluginTable,
    metadata: PluginMetadata,
    load_time: Duration,
}

impl std::fmt::Debug for LoadedPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedPlugin")
            .field("path", &self.path)
            .field("metadata", &self.metadata)
            .finish()
    }
}

impl LoadedPlugin {
    /// Checks and loads the plugin at `path`: permissions, ELF header, `dlopen` with
    /// `RTLD_NOW | RTLD_LOCAL`, the entry point, the ABI version and (for Rust plugins) the
    /// abi_stable layout of the tables.
    pub fn load(path: &Path) -> Result<Arc<LoadedPlugin>, LoadError> {
        let started = Instant::now();
        check_permissions(path)?;
        check_elf(path)?;
        let library = open(path)?;
        // SAFETY: the entry symbol's type is fixed by the ABI; a library exporting the name
        // with another type breaks the contract it claims by exporting it.
        let entry: HsmPluginEntryFn = unsafe {
            match library.get::<HsmPluginEntryFn>(b"hsm_plugin_entry\0") {
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
                .get::<HsmLayoutFn>(b"hsm_plugin_abi_layout\0")
                .ok()
                .map(|s| *s)
        };
        // Never unload: see the type's documentation.
        std::mem::forget(library);

        let mut table_ptr: *const HsmPluginTable = std::ptr::null();
        // SAFETY: calling the plugin's entry with a valid static host table and a valid out
        // pointer, per the ABI.
        let status = unsafe { entry(HSM_ABI_MAJOR, HSM_ABI_MINOR, &HOST_API, &mut table_ptr) };
        // SAFETY: a non-NULL table pointer from the entry is valid for the process lifetime.
        let table = unsafe { table_ptr.as_ref() };
        let path_buf = path.to_path_buf();
        if let Some(t) = table {
            if t.header.abi_major != HSM_ABI_MAJOR {
                return Err(LoadError::AbiMajorMismatch {
                    path: path_buf,
                    plugin_major: t.header.abi_major,
                    plugin_minor: t.header.abi_minor,
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
        let table = table.ok_or_else(|| LoadError::MalformedTable {
            path: path.to_path_buf(),
            reason: "the entry point returned HSM_OK but no table".into(),
        })?;
        let layout_checked = match layout_fn {
            Some(f) => check_layout(path, f)?,
            None => false,
        };
        let metadata = validate_table(path, table, layout_checked)?;
        Ok(Arc::new(LoadedPlugin {
            path: path.to_path_buf(),
            table,
            metadata,
            load_time: started.elapsed(),
        }))
    }

    /// The file it was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
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

fn open(path: &Path) -> Result<libloading::os::unix::Library, LoadError> {
    use libloading::os::unix::{Library, RTLD_LOCAL, RTLD_NOW};
    // SAFETY: loading a library runs its initializers; the file passed the permission and ELF
    // checks above, which is the trust decision this host makes about plugin code.
    unsafe { Library::open(Some(path), RTLD_NOW | RTLD_LOCAL) }.map_err(|e| LoadError::Dlopen {
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
    if (t.header.struct_size as usize) < std::mem::size_of::<HsmPluginTable>() {
        return Err(bad(format!(
            "plugin table is {} bytes, ABI {}.{} needs at least {}",
            t.header.struct_size,
            t.header.abi_major,
            t.header.abi_minor,
            std::mem::size_of::<HsmPluginTable>()
        )));
    }
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
    check_interface(
        &bad,
        "TPM",
        caps.tpm,
        t.tpm.cast(),
        size_of_val_hdr::<HsmTpmTable>(),
    )?;
    check_interface(
        &bad,
        "X.509",
        caps.x509,
        t.x509.cast(),
        size_of_val_hdr::<HsmX509Table>(),
    )?;
    check_interface(
        &bad,
        "symmetric-key",
        caps.symmetric_key,
        t.symmetric_key.cast(),
        size_of_val_hdr::<HsmSymmetricKeyTable>(),
    )?;
    Ok(PluginMetadata {
        name,
        version: c_string(t.version).unwrap_or_default(),
        vendor: c_string(t.vendor).unwrap_or_default(),
        description: c_string(t.description).unwrap_or_default(),
        abi_version: format!("{}.{}", t.header.abi_major, t.header.abi_minor),
        capabilities: caps,
        thread_safe: t.threading == HSM_THREADING_CONCURRENT,
        layout_checked,
    })
}

const fn size_of_val_hdr<T>() -> usize {
    std::mem::size_of::<T>()
}

fn check_interface(
    bad: &dyn Fn(String) -> LoadError,
    name: &str,
    declared: bool,
    table: *const HsmTableHeader,
    min_size: usize,
) -> Result<(), LoadError> {
    match (declared, table.is_null()) {
        (false, true) => Ok(()),
        (true, true) => Err(bad(format!(
            "declares the {name} capability but its {name} table is NULL"
        ))),
        (false, false) => Err(bad(format!(
            "has a {name} table but does not declare the {name} capability"
        ))),
        (true, false) => {
            // SAFETY: every interface table starts with HsmTableHeader (ABI rule), and a
            // non-NULL table pointer is valid for the life of the process.
            let header = unsafe { *table };
            if header.abi_major != HSM_ABI_MAJOR {
                return Err(bad(format!(
                    "{name} table is ABI {}.{}, host is {HSM_ABI_MAJOR}.{HSM_ABI_MINOR}",
                    header.abi_major, header.abi_minor
                )));
            }
            if (header.struct_size as usize) < min_size {
                return Err(bad(format!(
                    "{name} table is {} bytes, ABI {HSM_ABI_MAJOR}.0 needs at least {min_size}",
                    header.struct_size
                )));
            }
            Ok(())
        }
    }
}
