//! The hosted library at the FFI boundary: loaded once per process and file under the plugin
//! rules, its interface tables resolved and checked, its init functions called once, and every
//! call into it serialized and guarded. All of this crate's `unsafe` is here.

use crate::error::LibraryError;
use hsmkit_azure_custom_hsm_api::{
    symbols, InitFn, KeyInterfaceFn, NullMembers, TpmInterfaceFn, X509InterfaceFn,
    HSM_CLIENT_HANDLE, HSM_CLIENT_KEY_INTERFACE, HSM_CLIENT_TPM_INTERFACE,
    HSM_CLIENT_X509_INTERFACE,
};
use libc::{c_char, c_int, c_uchar, c_void, size_t};
use std::collections::HashMap;
use std::ffi::CStr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use zeroize::{Zeroize, Zeroizing};

/// Longest EK, SRK or signature accepted from the library (a TPM2B_PUBLIC is at most ~1 KiB).
const MAX_BYTES: usize = 16 * 1024;
/// Longest string accepted from the library (a certificate chain of a few certificates).
const MAX_STRING: usize = 1024 * 1024;

/// One of the library's three interfaces, as found when it was loaded.
#[derive(Debug, Clone, Copy)]
enum Slot<T> {
    /// The symbol is not exported.
    Absent,
    /// The table, with every member present, and its init (if any) succeeded.
    Ready(T),
    /// The interface's init function answered this.
    InitFailed(&'static str, c_int),
}

/// A loaded custom-HSM library. Never unloaded: the libraries live as long as the process, as
/// plugins do (and their init functions are called once).
#[derive(Debug)]
pub(crate) struct CustomHsmLibrary {
    path: PathBuf,
    tpm: Slot<HSM_CLIENT_TPM_INTERFACE>,
    x509: Slot<HSM_CLIENT_X509_INTERFACE>,
    key: Slot<HSM_CLIENT_KEY_INTERFACE>,
    /// Held for every call into the library: the contract says nothing about threads.
    calls: Mutex<()>,
}

/// Libraries loaded in this process, by (device, inode) of the checked file.
type Registry = Mutex<HashMap<(u64, u64), Arc<CustomHsmLibrary>>>;

/// The process's [`Registry`].
fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Which interface a handle belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `hsm_client_tpm_interface`.
    Tpm,
    /// `hsm_client_x509_interface`.
    X509,
    /// `hsm_client_key_interface`.
    Key,
}

impl Kind {
    fn symbol(self) -> &'static str {
        match self {
            Kind::Tpm => "hsm_client_tpm_interface",
            Kind::X509 => "hsm_client_x509_interface",
            Kind::Key => "hsm_client_key_interface",
        }
    }
    fn name(self) -> &'static str {
        match self {
            Kind::Tpm => "TPM",
            Kind::X509 => "X.509",
            Kind::Key => "symmetric-key",
        }
    }
}

impl CustomHsmLibrary {
    /// Loads the library at `path` (or shares the one this process already loaded from the same
    /// file): opened once and checked on that descriptor like a plugin, `dlopen`ed from that
    /// descriptor, its interface tables read and checked for NULL members, and the init
    /// functions of the interfaces it has called, once per process.
    pub(crate) fn load(path: &Path) -> Result<Arc<Self>, LibraryError> {
        let checked =
            hsm_secure_fs::trust::open_trusted(path).map_err(|e| LibraryError::Untrusted {
                reason: e.to_string(),
            })?;
        let meta = checked
            .file()
            .metadata()
            .map_err(|e| LibraryError::Untrusted {
                reason: format!("{}: cannot read: {e}", path.display()),
            })?;
        let id = (meta.dev(), meta.ino());
        let mut map = registry().lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(lib) = map.get(&id) {
            return Ok(Arc::clone(lib));
        }
        let real = checked.real_path().to_path_buf();
        let load_path = checked
            .pin_for_dlopen()
            .map_err(|e| LibraryError::Untrusted {
                reason: e.to_string(),
            })?;
        // SAFETY: loading a library runs its constructors. The file passed the plugin rules
        // (owned by root or us, not writable by others, every folder up to `/`), is loaded from
        // the very descriptor that was checked, and was named by the operator's `library`
        // setting: it is trusted exactly as a plugin is.
        let lib =
            unsafe { libloading::Library::new(&load_path) }.map_err(|e| LibraryError::Load {
                path: real.clone(),
                reason: e.to_string(),
            })?;
        let tpm = resolve::<TpmInterfaceFn, _>(&lib, &real, symbols::TPM_INTERFACE, Kind::Tpm)?;
        let x509 = resolve::<X509InterfaceFn, _>(&lib, &real, symbols::X509_INTERFACE, Kind::X509)?;
        let key = resolve::<KeyInterfaceFn, _>(&lib, &real, symbols::KEY_INTERFACE, Kind::Key)?;
        if tpm.is_none() && x509.is_none() && key.is_none() {
            return Err(LibraryError::NoInterface { path: real });
        }
        // The init functions, once per process: not every library's are idempotent.
        let tpm = match tpm {
            None => Slot::Absent,
            Some(t) => init(&lib, symbols::TPM_INIT, "hsm_client_tpm_init", t),
        };
        let x509 = match x509 {
            None => Slot::Absent,
            Some(t) => init(&lib, symbols::X509_INIT, "hsm_client_x509_init", t),
        };
        let key = key.map_or(Slot::Absent, Slot::Ready);
        // Kept for the process: the tables and functions point into it.
        std::mem::forget(lib);
        let loaded = Arc::new(CustomHsmLibrary {
            path: real,
            tpm,
            x509,
            key,
            calls: Mutex::new(()),
        });
        map.insert(id, Arc::clone(&loaded));
        Ok(loaded)
    }

    /// The library's real path.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Which interfaces the library has (exported, complete, initialised).
    pub(crate) fn has(&self, kind: Kind) -> bool {
        match kind {
            Kind::Tpm => matches!(self.tpm, Slot::Ready(_)),
            Kind::X509 => matches!(self.x509, Slot::Ready(_)),
            Kind::Key => matches!(self.key, Slot::Ready(_)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, ()> {
        self.calls.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn slot_error<T>(&self, kind: Kind, slot: &Slot<T>) -> Option<LibraryError> {
        match slot {
            Slot::Ready(_) => None,
            Slot::Absent => Some(LibraryError::Absent {
                path: self.path.clone(),
                symbol: kind.symbol(),
                interface: kind.name(),
            }),
            Slot::InitFailed(function, code) => Some(LibraryError::InitFailed {
                path: self.path.clone(),
                function,
                code: *code,
            }),
        }
    }

    /// A new handle of interface `kind` (its `create`), destroyed when dropped.
    pub(crate) fn create(self: &Arc<Self>, kind: Kind) -> Result<Handle, LibraryError> {
        let (create, function) = match (kind, &self.tpm, &self.x509, &self.key) {
            (Kind::Tpm, Slot::Ready(t), _, _) => (t.hsm_client_tpm_create, "hsm_client_tpm_create"),
            (Kind::X509, _, Slot::Ready(t), _) => {
                (t.hsm_client_x509_create, "hsm_client_x509_create")
            }
            (Kind::Key, _, _, Slot::Ready(t)) => (t.hsm_client_key_create, "hsm_client_key_create"),
            (Kind::Tpm, s, _, _) => {
                return Err(self.slot_error(kind, s).unwrap_or_else(|| self.null("")))
            }
            (Kind::X509, _, s, _) => {
                return Err(self.slot_error(kind, s).unwrap_or_else(|| self.null("")))
            }
            (Kind::Key, _, _, s) => {
                return Err(self.slot_error(kind, s).unwrap_or_else(|| self.null("")))
            }
        };
        let create = create.ok_or_else(|| self.null(function))?;
        let _guard = self.lock();
        // SAFETY: a member of a table the library returned, checked non-NULL; it takes nothing.
        let ptr = unsafe { create() };
        let ptr = NonNull::new(ptr).ok_or_else(|| self.null(function))?;
        Ok(Handle {
            lib: Arc::clone(self),
            kind,
            ptr,
        })
    }

    fn null(&self, function: &'static str) -> LibraryError {
        LibraryError::Null {
            path: self.path.clone(),
            function,
        }
    }

    fn failed(&self, function: &'static str, code: c_int) -> LibraryError {
        LibraryError::Failed {
            path: self.path.clone(),
            function,
            code,
        }
    }

    fn malformed(&self, function: &'static str, what: impl Into<String>) -> LibraryError {
        LibraryError::Malformed {
            path: self.path.clone(),
            function,
            what: what.into(),
        }
    }

    /// The bytes a successful byte getter wrote, copied and released with `free` (wiped first).
    ///
    /// # Safety
    /// `ptr` is NULL or a `malloc`ed block of at least `len` bytes the library handed over.
    unsafe fn take_bytes(
        &self,
        function: &'static str,
        ptr: *mut c_uchar,
        len: size_t,
    ) -> Result<Zeroizing<Vec<u8>>, LibraryError> {
        if ptr.is_null() {
            return Err(self.malformed(function, "success with a NULL output"));
        }
        let result = if len == 0 {
            Err(self.malformed(function, "success with an empty output"))
        } else if len > MAX_BYTES {
            Err(self.malformed(function, format!("{len} bytes (more than {MAX_BYTES})")))
        } else {
            // SAFETY: per the caller, `ptr` holds `len` bytes.
            let data = unsafe { std::slice::from_raw_parts_mut(ptr, len) };
            let copy = Zeroizing::new(data.to_vec());
            data.zeroize();
            Ok(copy)
        };
        // SAFETY: the contract: what the library returns was malloc'ed and is the caller's to free.
        unsafe { libc::free(ptr.cast::<c_void>()) };
        result
    }

    /// The string a string getter returned, copied and released with `free` (wiped first).
    ///
    /// # Safety
    /// `ptr` is NULL or a `malloc`ed NUL-terminated string the library handed over.
    unsafe fn take_string(
        &self,
        function: &'static str,
        ptr: *mut c_char,
    ) -> Result<Zeroizing<String>, LibraryError> {
        if ptr.is_null() {
            return Err(self.null(function));
        }
        // SAFETY: per the caller, a NUL-terminated string.
        let len = unsafe { CStr::from_ptr(ptr) }.to_bytes().len();
        // SAFETY: the `len` bytes before the NUL are the string's.
        let data = unsafe { std::slice::from_raw_parts_mut(ptr.cast::<u8>(), len) };
        let copy = Zeroizing::new(data.to_vec());
        data.zeroize();
        // SAFETY: the contract: malloc'ed, the caller's to free.
        unsafe { libc::free(ptr.cast::<c_void>()) };
        if len > MAX_STRING {
            return Err(self.malformed(
                function,
                format!("a {len}-byte string (more than {MAX_STRING})"),
            ));
        }
        if len == 0 {
            return Err(self.malformed(function, "an empty string"));
        }
        match std::str::from_utf8(&copy) {
            Ok(s) => Ok(Zeroizing::new(s.to_owned())),
            Err(e) => Err(self.malformed(function, format!("a string that is not UTF-8 ({e})"))),
        }
    }
}

/// Resolves interface symbol `name`: `None` when not exported, else its table (checked).
fn resolve<F, T>(
    lib: &libloading::Library,
    path: &Path,
    name: &'static [u8],
    kind: Kind,
) -> Result<Option<T>, LibraryError>
where
    F: Copy + InterfaceFn<T>,
    T: Copy + NullMembers,
{
    // SAFETY: the symbol, when present, has the contract's type `F`.
    let f = match unsafe { lib.get::<F>(name) } {
        Ok(sym) => *sym,
        Err(_) => return Ok(None),
    };
    let table = f.call();
    // SAFETY: a non-NULL table pointer from the library points to a table of the contract's
    // layout, static for the life of the library (kept loaded for the process).
    let table = unsafe { table.as_ref() }
        .copied()
        .ok_or(LibraryError::NullTable {
            path: path.to_path_buf(),
            function: kind.symbol(),
        })?;
    let nulls = table.null_members();
    if !nulls.is_empty() {
        return Err(LibraryError::NullMembers {
            path: path.to_path_buf(),
            function: kind.symbol(),
            members: nulls.join(", "),
        });
    }
    Ok(Some(table))
}

/// The three interface functions, called the same way.
trait InterfaceFn<T> {
    /// Calls it.
    fn call(self) -> *const T;
}

macro_rules! interface_fn {
    ($f:ty, $t:ty) => {
        impl InterfaceFn<$t> for $f {
            fn call(self) -> *const $t {
                // SAFETY: the exported interface function takes nothing and returns its table.
                unsafe { self() }
            }
        }
    };
}
interface_fn!(TpmInterfaceFn, HSM_CLIENT_TPM_INTERFACE);
interface_fn!(X509InterfaceFn, HSM_CLIENT_X509_INTERFACE);
interface_fn!(KeyInterfaceFn, HSM_CLIENT_KEY_INTERFACE);

/// Calls the init function `symbol` if exported: `Ready(table)` when absent or 0.
fn init<T>(
    lib: &libloading::Library,
    symbol: &'static [u8],
    function: &'static str,
    table: T,
) -> Slot<T> {
    // SAFETY: the symbol, when present, is the contract's `int hsm_client_*_init(void)`.
    let f = match unsafe { lib.get::<InitFn>(symbol) } {
        Ok(sym) => *sym,
        Err(_) => return Slot::Ready(table),
    };
    // SAFETY: takes nothing; called once per process for this library.
    match unsafe { f() } {
        0 => Slot::Ready(table),
        code => Slot::InitFailed(function, code),
    }
}

/// A handle made by an interface's `create`; its `destroy` runs on drop.
#[derive(Debug)]
pub(crate) struct Handle {
    lib: Arc<CustomHsmLibrary>,
    kind: Kind,
    ptr: NonNull<c_void>,
}

// SAFETY: the handle is an opaque pointer of the library's; every call that uses it (including
// destroy) holds the library's call lock, so it is never used from two threads at once.
unsafe impl Send for Handle {}
// SAFETY: as above: shared references only reach the library under its call lock.
unsafe impl Sync for Handle {}

impl Handle {
    fn raw(&self) -> HSM_CLIENT_HANDLE {
        self.ptr.as_ptr()
    }

    fn tpm(&self) -> &HSM_CLIENT_TPM_INTERFACE {
        match &self.lib.tpm {
            Slot::Ready(t) => t,
            // A TPM handle exists only when the table is ready.
            _ => unreachable!("TPM handle without a TPM table"),
        }
    }

    fn x509(&self) -> &HSM_CLIENT_X509_INTERFACE {
        match &self.lib.x509 {
            Slot::Ready(t) => t,
            _ => unreachable!("X.509 handle without an X.509 table"),
        }
    }

    fn key(&self) -> &HSM_CLIENT_KEY_INTERFACE {
        match &self.lib.key {
            Slot::Ready(t) => t,
            _ => unreachable!("symmetric-key handle without a symmetric-key table"),
        }
    }

    /// A byte getter (`get_ek`, `get_srk`).
    fn bytes_getter(
        &self,
        function: &'static str,
        f: Option<unsafe extern "C" fn(HSM_CLIENT_HANDLE, *mut *mut c_uchar, *mut size_t) -> c_int>,
    ) -> Result<Zeroizing<Vec<u8>>, LibraryError> {
        let f = f.ok_or_else(|| self.lib.null(function))?;
        let mut out: *mut c_uchar = std::ptr::null_mut();
        let mut len: size_t = 0;
        let _guard = self.lib.lock();
        // SAFETY: a checked member called with this interface's live handle and valid outputs.
        let rc = unsafe { f(self.raw(), &mut out, &mut len) };
        if rc != 0 {
            return Err(self.lib.failed(function, rc));
        }
        // SAFETY: on success the contract gives a malloc'ed block of `len` bytes.
        unsafe { self.lib.take_bytes(function, out, len) }
    }

    /// A string getter.
    fn string_getter(
        &self,
        function: &'static str,
        f: Option<unsafe extern "C" fn(HSM_CLIENT_HANDLE) -> *mut c_char>,
    ) -> Result<Zeroizing<String>, LibraryError> {
        let f = f.ok_or_else(|| self.lib.null(function))?;
        let _guard = self.lib.lock();
        // SAFETY: a checked member called with this interface's live handle.
        let s = unsafe { f(self.raw()) };
        // SAFETY: the contract: NULL or a malloc'ed NUL-terminated string.
        unsafe { self.lib.take_string(function, s) }
    }

    /// `hsm_client_get_ek`: the EK as marshalled `TPM2B_PUBLIC` bytes (not yet parsed).
    pub(crate) fn get_ek(&self) -> Result<Zeroizing<Vec<u8>>, LibraryError> {
        self.bytes_getter("hsm_client_get_ek", self.tpm().hsm_client_get_ek)
    }

    /// `hsm_client_get_srk`.
    pub(crate) fn get_srk(&self) -> Result<Zeroizing<Vec<u8>>, LibraryError> {
        self.bytes_getter("hsm_client_get_srk", self.tpm().hsm_client_get_srk)
    }

    /// `hsm_client_activate_identity_key`.
    pub(crate) fn activate_identity_key(&self, blob: &[u8]) -> Result<(), LibraryError> {
        let function = "hsm_client_activate_identity_key";
        let f = self
            .tpm()
            .hsm_client_activate_identity_key
            .ok_or_else(|| self.lib.null(function))?;
        let _guard = self.lib.lock();
        // SAFETY: checked member, live handle, `blob` valid for the call (the library copies).
        match unsafe { f(self.raw(), blob.as_ptr(), blob.len()) } {
            0 => Ok(()),
            rc => Err(self.lib.failed(function, rc)),
        }
    }

    /// `hsm_client_sign_with_identity`: exactly 32 bytes (HMAC-SHA256).
    pub(crate) fn sign_with_identity(&self, data: &[u8]) -> Result<Vec<u8>, LibraryError> {
        let function = "hsm_client_sign_with_identity";
        let f = self
            .tpm()
            .hsm_client_sign_with_identity
            .ok_or_else(|| self.lib.null(function))?;
        let mut out: *mut c_uchar = std::ptr::null_mut();
        let mut len: size_t = 0;
        let _guard = self.lib.lock();
        // SAFETY: checked member, live handle, `data` valid for the call, valid outputs.
        let rc = unsafe { f(self.raw(), data.as_ptr(), data.len(), &mut out, &mut len) };
        if rc != 0 {
            return Err(self.lib.failed(function, rc));
        }
        // SAFETY: on success the contract gives a malloc'ed block of `len` bytes.
        let sig = unsafe { self.lib.take_bytes(function, out, len) }?;
        if sig.len() != 32 {
            return Err(self.lib.malformed(
                function,
                format!("{} bytes, not a 32-byte HMAC-SHA256", sig.len()),
            ));
        }
        Ok(sig.to_vec())
    }

    /// `hsm_client_get_cert`: the PEM chain, leaf first.
    pub(crate) fn get_cert(&self) -> Result<Zeroizing<String>, LibraryError> {
        self.string_getter("hsm_client_get_cert", self.x509().hsm_client_get_cert)
    }

    /// `hsm_client_get_key`: the private key PEM (secret: wiped wherever it was).
    pub(crate) fn get_key(&self) -> Result<Zeroizing<String>, LibraryError> {
        self.string_getter("hsm_client_get_key", self.x509().hsm_client_get_key)
    }

    /// `hsm_client_get_common_name`.
    pub(crate) fn get_common_name(&self) -> Result<Zeroizing<String>, LibraryError> {
        self.string_getter(
            "hsm_client_get_common_name",
            self.x509().hsm_client_get_common_name,
        )
    }

    /// `hsm_client_get_symm_key`: the key, base64 (secret).
    pub(crate) fn get_symm_key(&self) -> Result<Zeroizing<String>, LibraryError> {
        self.string_getter(
            "hsm_client_get_symm_key",
            self.key().hsm_client_get_symm_key,
        )
    }

    /// `hsm_client_get_registration_name`.
    pub(crate) fn get_registration_name(&self) -> Result<Zeroizing<String>, LibraryError> {
        self.string_getter(
            "hsm_client_get_registration_name",
            self.key().hsm_client_get_registration_name,
        )
    }

    /// `hsm_client_set_symm_key_info` (the library copies both strings).
    pub(crate) fn set_symm_key_info(
        &self,
        registration_id: &CStr,
        key_base64: &CStr,
    ) -> Result<(), LibraryError> {
        let function = "hsm_client_set_symm_key_info";
        let f = self
            .key()
            .hsm_client_set_symm_key_info
            .ok_or_else(|| self.lib.null(function))?;
        let _guard = self.lib.lock();
        // SAFETY: checked member, live handle, NUL-terminated strings valid for the call.
        match unsafe { f(self.raw(), registration_id.as_ptr(), key_base64.as_ptr()) } {
            0 => Ok(()),
            rc => Err(self.lib.failed(function, rc)),
        }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        let destroy = match self.kind {
            Kind::Tpm => self.tpm().hsm_client_tpm_destroy,
            Kind::X509 => self.x509().hsm_client_x509_destroy,
            Kind::Key => self.key().hsm_client_key_destroy,
        };
        if let Some(destroy) = destroy {
            let _guard = self.lib.lock();
            // SAFETY: the handle came from the same interface's create and is destroyed once.
            unsafe { destroy(self.raw()) };
        }
    }
}

/// A NUL-terminated copy of `s` for the library (wiped when dropped), or `None` when `s`
/// holds a NUL.
pub(crate) fn c_string(s: &str) -> Option<Zeroizing<Vec<u8>>> {
    if s.as_bytes().contains(&0) {
        return None;
    }
    let mut v = Zeroizing::new(Vec::with_capacity(s.len() + 1));
    v.extend_from_slice(s.as_bytes());
    v.push(0);
    Some(v)
}
