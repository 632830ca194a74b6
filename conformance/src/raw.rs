//! Raw access to a plugin's C ABI, for checks that must do what the safe host never does:
//! pass NULL, call with a wrong host major, hold several buffers at once, count releases.
//! Only ever used inside a check's child process.

use hsm_api::*;
use std::ffi::CStr;
use std::path::Path;

/// Why the library could not be opened or its entry found.
#[derive(Debug, thiserror::Error)]
pub enum RawError {
    /// dlopen refused the file.
    #[error("dlopen failed: {0}")]
    Open(String),
    /// No `hsm_plugin_entry` symbol.
    #[error("no `{HSM_ENTRY_SYMBOL}` symbol exported")]
    NoEntry,
}

/// An opened plugin library (never closed, like the real host does).
pub struct RawLibrary {
    entry: HsmPluginEntryFn,
}

impl std::fmt::Debug for RawLibrary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RawLibrary")
    }
}

impl RawLibrary {
    /// The checked file's `dlopen(RTLD_NOW | RTLD_LOCAL)` and `dlsym(hsm_plugin_entry)`.
    pub fn open(path: &Path) -> Result<Self, RawError> {
        use libloading::os::unix::{Library, RTLD_LOCAL, RTLD_NOW};
        // The harness loads a plugin under the host's file rules: what was checked is what
        // is loaded.
        let checked = hsm_secure_fs::trust::open_trusted(path)
            .and_then(hsm_secure_fs::trust::TrustedFile::pin_for_dlopen)
            .map_err(|e| RawError::Open(e.to_string()))?;
        // SAFETY: loading runs the library's initializers; checking that code is this
        // harness's job, and it runs in a disposable child process.
        let lib = unsafe { Library::open(Some(&checked), RTLD_NOW | RTLD_LOCAL) }
            .map_err(|e| RawError::Open(e.to_string()))?;
        // SAFETY: the symbol's type is fixed by the ABI the plugin claims to implement.
        let entry =
            unsafe { lib.get::<HsmPluginEntryFn>(HSM_ENTRY_SYMBOL_CSTR.to_bytes_with_nul()) }
                .map(|s| *s)
                .map_err(|_| RawError::NoEntry)?;
        std::mem::forget(lib);
        Ok(RawLibrary { entry })
    }

    /// Calls the entry point as a host speaking `major.minor` would.
    pub fn call_entry(&self, major: u16, minor: u16) -> (HsmStatus, *const HsmPluginTable) {
        let mut table: *const HsmPluginTable = std::ptr::null();
        // SAFETY: a NULL host table is allowed by the ABI (no logger); valid out pointer.
        let status = unsafe { (self.entry)(major, minor, std::ptr::null(), &mut table) };
        (status, table)
    }

    /// The table for this host's version, when the entry accepts it.
    pub fn table(&self) -> Option<&'static HsmPluginTable> {
        let (status, table) = self.call_entry(HSM_ABI_MAJOR, HSM_ABI_MINOR);
        if status != HSM_OK {
            return None;
        }
        if table.is_null() {
            return None;
        }
        // SAFETY: a table returned with HSM_OK is static for the process lifetime and starts
        // with its header.
        let header = unsafe { std::ptr::read(table.cast::<HsmTableHeader>()) };
        if header.abi_major == HSM_ABI_MAJOR
            && header.struct_size as usize >= HsmPluginTable::SIZE_1_0
        {
            // SAFETY: as above, and its struct_size covers the 1.0 entries; a 1.0 table is
            // copied into this harness's layout instead of being read past its end, as the
            // host loader does. (A table with NULL entries is the loading checks' to report.)
            return Some(unsafe { HsmPluginTable::in_current_layout(table) });
        }
        // SAFETY: as above; a table too small even for 1.0 is read as it is, for the loading
        // checks to report.
        unsafe { table.as_ref() }
    }
}

/// Reads a table string (NUL-terminated static), `None` when NULL.
///
/// # Safety
/// `p` is NULL or points to a NUL-terminated string that lives for the process, as the
/// ABI requires of the strings in a plugin table.
pub unsafe fn table_string(p: HsmStaticStr) -> Option<Result<String, std::str::Utf8Error>> {
    if p.is_null() {
        return None;
    }
    // SAFETY: the caller's contract: non-NULL means a NUL-terminated static string.
    Some(unsafe { CStr::from_ptr(p) }.to_str().map(str::to_owned))
}

/// One instance made through the raw table, destroyed on drop.
pub struct RawInstance {
    /// The plugin table.
    pub table: &'static HsmPluginTable,
    /// The instance pointer.
    pub ptr: *mut HsmInstance,
}

impl std::fmt::Debug for RawInstance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RawInstance")
    }
}

/// A failed raw call: status and the plugin's message.
#[derive(Debug, Clone)]
pub struct RawFailure {
    /// The status.
    pub status: HsmStatus,
    /// The plugin's message (or a note that none came).
    pub message: String,
}

impl std::fmt::Display for RawFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", status_name(self.status), self.message)
    }
}

impl RawInstance {
    /// `create` with `config`.
    pub fn create(
        table: &'static HsmPluginTable,
        config: &[(String, String)],
    ) -> Result<Self, RawFailure> {
        let entries: Vec<HsmKeyValue> = config
            .iter()
            .map(|(k, v)| HsmKeyValue {
                key: HsmSlice::from_bytes(k.as_bytes()),
                value: HsmSlice::from_bytes(v.as_bytes()),
            })
            .collect();
        let mut ptr: *mut HsmInstance = std::ptr::null_mut();
        let mut err = HsmBuffer::EMPTY;
        // SAFETY: entries, out pointers valid for the call.
        let status = unsafe { (table.create)(entries.as_ptr(), entries.len(), &mut ptr, &mut err) };
        let message = take(table, err);
        if status != HSM_OK {
            return Err(RawFailure {
                status,
                message: text_or_note(&message),
            });
        }
        if ptr.is_null() {
            return Err(RawFailure {
                status,
                message: "create returned HSM_OK but no instance".into(),
            });
        }
        Ok(RawInstance { table, ptr })
    }

    /// Runs a call that fills one output buffer; on success the bytes (buffer released).
    pub fn output(
        &self,
        f: impl FnOnce(*mut HsmInstance, *mut HsmBuffer) -> HsmStatus,
    ) -> Result<Vec<u8>, RawFailure> {
        let mut out = HsmBuffer::EMPTY;
        let status = f(self.ptr, &mut out);
        let bytes = take(self.table, out);
        if status != HSM_OK {
            return Err(self.failure(status));
        }
        // Every ABI output (key, chain, name, id, signature, HMAC) is non-empty when it
        // exists, so HSM_OK with nothing in `out` is a plugin that forgot to fill it; saying
        // so here beats every caller failing later on "0 bytes that do not verify".
        if bytes.is_empty() {
            return Err(RawFailure {
                status,
                message: EMPTY_OUTPUT.into(),
            });
        }
        Ok(bytes)
    }

    /// Runs a call without output.
    pub fn status(&self, f: impl FnOnce(*mut HsmInstance) -> HsmStatus) -> Result<(), RawFailure> {
        let status = f(self.ptr);
        if status != HSM_OK {
            return Err(self.failure(status));
        }
        Ok(())
    }

    /// The failure for `status`, with the instance's `last_error` message.
    pub fn failure(&self, status: HsmStatus) -> RawFailure {
        let mut out = HsmBuffer::EMPTY;
        // SAFETY: live instance, valid out pointer.
        let s = unsafe { (self.table.last_error)(self.ptr, &mut out) };
        let message = take(self.table, out);
        RawFailure {
            status,
            message: if s == HSM_OK {
                text_or_note(&message)
            } else {
                format!("(last_error itself failed with {})", status_name(s))
            },
        }
    }
}

impl Drop for RawInstance {
    fn drop(&mut self) {
        // SAFETY: created by this table, destroyed once.
        unsafe { (self.table.destroy)(self.ptr) };
    }
}

/// The diagnosis of a call that returned `HSM_OK` with an empty output buffer.
pub const EMPTY_OUTPUT: &str = "HSM_OK with an empty output buffer: a call that succeeds must \
     fill `out` with its result (data and len > 0), and one that has nothing to give must \
     return an error status instead";

/// Copies a plugin buffer and releases it.
pub fn take(table: &HsmPluginTable, mut buf: HsmBuffer) -> Vec<u8> {
    let bytes = if buf.data.is_null() || buf.len == 0 {
        Vec::new()
    } else {
        // SAFETY: the plugin produced `len` readable bytes at `data`.
        unsafe { std::slice::from_raw_parts(buf.data, buf.len) }.to_vec()
    };
    if !buf.data.is_null() {
        // SAFETY: the buffer came from this plugin and is released once.
        unsafe { (table.release_buffer)(&mut buf) };
    }
    bytes
}

fn text_or_note(bytes: &[u8]) -> String {
    if bytes.is_empty() {
        "(no message)".into()
    } else {
        String::from_utf8_lossy(bytes)
            .trim_end_matches('\0')
            .to_string()
    }
}

/// Reads a function-pointer slot as an address: a NULL slot must never be read as a Rust fn
/// pointer (that type cannot be NULL), so it is read as a plain word.
///
/// # Safety
/// `slot` points to a readable, pointer-sized table entry.
unsafe fn slot_is_null<T>(slot: *const T) -> bool {
    debug_assert_eq!(std::mem::size_of::<T>(), std::mem::size_of::<usize>());
    // SAFETY: per the caller, `slot` is a readable pointer-sized entry.
    unsafe { slot.cast::<usize>().read_unaligned() == 0 }
}

/// The names of the function entries that are NULL in `table` and in the interface tables it
/// points to. Every ABI 1.0 entry is mandatory.
pub fn null_entries(table: &HsmPluginTable) -> Vec<&'static str> {
    use std::ptr::addr_of;
    let mut v = Vec::new();
    // SAFETY: (every slot_is_null call below) each pointer is the address of a field of a
    // live static table, valid for reading one word.
    unsafe {
        let t: *const HsmPluginTable = table;
        for (name, null) in [
            ("create", slot_is_null(addr_of!((*t).create))),
            ("destroy", slot_is_null(addr_of!((*t).destroy))),
            ("last_error", slot_is_null(addr_of!((*t).last_error))),
            (
                "release_buffer",
                slot_is_null(addr_of!((*t).release_buffer)),
            ),
        ] {
            if null {
                v.push(name);
            }
        }
        let tpm = table.tpm;
        if !tpm.is_null() {
            for (name, null) in [
                (
                    "tpm.get_endorsement_key",
                    slot_is_null(addr_of!((*tpm).get_endorsement_key)),
                ),
                (
                    "tpm.get_storage_root_key",
                    slot_is_null(addr_of!((*tpm).get_storage_root_key)),
                ),
                (
                    "tpm.activate_identity_key",
                    slot_is_null(addr_of!((*tpm).activate_identity_key)),
                ),
                (
                    "tpm.sign_with_identity",
                    slot_is_null(addr_of!((*tpm).sign_with_identity)),
                ),
            ] {
                if null {
                    v.push(name);
                }
            }
        }
        let x = table.x509;
        if !x.is_null() {
            for (name, null) in [
                (
                    "x509.get_certificate_chain",
                    slot_is_null(addr_of!((*x).get_certificate_chain)),
                ),
                (
                    "x509.get_common_name",
                    slot_is_null(addr_of!((*x).get_common_name)),
                ),
                ("x509.sign_digest", slot_is_null(addr_of!((*x).sign_digest))),
                (
                    "x509.export_private_key",
                    slot_is_null(addr_of!((*x).export_private_key)),
                ),
            ] {
                if null {
                    v.push(name);
                }
            }
        }
        let s = table.symmetric_key;
        if !s.is_null() {
            for (name, null) in [
                (
                    "symmetric_key.get_registration_id",
                    slot_is_null(addr_of!((*s).get_registration_id)),
                ),
                ("symmetric_key.sign", slot_is_null(addr_of!((*s).sign))),
                (
                    "symmetric_key.import_key",
                    slot_is_null(addr_of!((*s).import_key)),
                ),
            ] {
                if null {
                    v.push(name);
                }
            }
        }
    }
    v
}
