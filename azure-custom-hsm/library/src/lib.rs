//! `libhsmkit_azure_hsm`: a custom HSM for the Azure IoT C SDK backed by any hsmkit plugin.
//!
//! An existing C SDK application built with `-Dhsm_type_custom=ON
//! -Dhsm_custom_lib=.../libhsmkit_azure_hsm.so` (or `.a`) gets TPM 2.0, PKCS#11, DICE,
//! tpm-sim or a symmetric key through hsmkit: this library exports the SDK's custom-HSM symbols
//! (`hsm_client_tpm_init` ... `hsm_client_key_interface`, with the types of
//! `hsmkit-azure-custom-hsm-api`), reads the hsmkit config file named by `HSMKIT_CONFIG`, loads
//! the plugin its `[azure_custom_hsm]` section names with provisioning-core's loader (the same
//! file rules as `hsmkit`), and answers each SDK call with a plugin call.
//!
//! - TPM: EK and SRK as marshalled `TPM2B_PUBLIC`; `activate_identity_key` and
//!   `sign_with_identity` run in the plugin (HMAC-SHA256, 32 bytes).
//! - X.509: the plugin's chain (PEM, leaf first) and common name. `get_key` returns the
//!   private key only when the plugin's settings allow exporting it (dice
//!   `allow_key_export = true`); otherwise it fails and logs why.
//! - Symmetric key: the SDK computes the SAS itself from `get_symm_key`, and hsmkit never
//!   exports a symmetric key. `set_symm_key_info` (the key the application gave the SDK)
//!   imports that key into the plugin and keeps it for the handle; `get_symm_key` returns the
//!   key handed in that way, and fails with a logged reason when none was.
//!
//! Every function catches panics and returns its failure value; every returned buffer is
//! `malloc`ed for the SDK's `free`; reasons for failures go to stderr (`RUST_LOG` for more),
//! never key material.

#![deny(missing_docs)]

mod error;
mod ffi;
mod setup;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use error::AdapterError;
use ffi::{boundary, c_str, malloc_bytes, malloc_string};
use hsmkit_azure_custom_hsm_api::{
    HSM_CLIENT_HANDLE, HSM_CLIENT_KEY_INTERFACE, HSM_CLIENT_TPM_INTERFACE,
    HSM_CLIENT_X509_INTERFACE,
};
use libc::{c_char, c_int, c_uchar, size_t};
use provisioning_core::plugin::{
    PluginBytes, PluginError, PluginErrorCode, PluginInstance, SymmetricKeyHandle, TpmHandle,
    X509Handle,
};
use setup::Backend;
use std::sync::{Arc, Mutex};
use zeroize::Zeroizing;

/// The value an `int` function returns on failure.
const FAILURE: c_int = 1;

/// Which interface made a handle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Tpm,
    X509,
    Key,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Tpm => "TPM",
            Kind::X509 => "X.509",
            Kind::Key => "symmetric-key",
        }
    }
}

/// What an `HSM_CLIENT_HANDLE` points to.
struct Handle {
    kind: Kind,
    backend: Arc<Backend>,
    instance: Arc<PluginInstance>,
    /// The base64 key `set_symm_key_info` was given (the application's own copy), wiped on
    /// destroy.
    symmetric_key: Mutex<Option<Zeroizing<String>>>,
}

impl Handle {
    /// The plugin's TPM interface; errors name the plugin operation `op`.
    fn tpm(&self, op: &'static str) -> Result<TpmHandle<'_>, AdapterError> {
        self.instance.tpm().map_err(|e| AdapterError::plugin(op, e))
    }

    /// The plugin's X.509 interface; errors name the plugin operation `op`.
    fn x509(&self, op: &'static str) -> Result<X509Handle<'_>, AdapterError> {
        self.instance
            .x509()
            .map_err(|e| AdapterError::plugin(op, e))
    }

    /// The plugin's symmetric-key interface; errors name the plugin operation `op`.
    fn symmetric_key(&self, op: &'static str) -> Result<SymmetricKeyHandle<'_>, AdapterError> {
        self.instance
            .symmetric_key()
            .map_err(|e| AdapterError::plugin(op, e))
    }
}

/// The plugin operation the C function `name` performs, as its errors name it: `name` without
/// `hsm_client_` (`get_ek` for `hsm_client_get_ek`).
fn op(name: &'static str) -> &'static str {
    name.strip_prefix("hsm_client_").unwrap_or(name)
}

/// The C function `name` of `kind`'s interface that creates a handle: NULL on failure.
fn create(name: &'static str, kind: Kind) -> HSM_CLIENT_HANDLE {
    boundary(name, std::ptr::null_mut(), || {
        let (backend, instance) = setup::instance()?;
        // Refused here, with the interfaces the plugin has, rather than at the first call.
        let present = match kind {
            Kind::Tpm => instance.tpm().map(drop),
            Kind::X509 => instance.x509().map(drop),
            Kind::Key => instance.symmetric_key().map(drop),
        };
        present.map_err(|e| AdapterError::plugin("create", e))?;
        let handle = Box::new(Handle {
            kind,
            backend,
            instance,
            symmetric_key: Mutex::new(None),
        });
        Ok(Box::into_raw(handle).cast())
    })
}

/// The handle behind `h`, checked to come from `kind`'s `create`.
///
/// # Safety
/// `h` is NULL or a live handle from this library's `create`.
unsafe fn handle<'a>(h: HSM_CLIENT_HANDLE, kind: Kind) -> Result<&'a Handle, AdapterError> {
    // SAFETY: the caller's contract; NULL gives None.
    let handle = unsafe { h.cast::<Handle>().as_ref() }
        .ok_or(AdapterError::InvalidArgument("NULL handle"))?;
    if handle.kind != kind {
        return Err(AdapterError::WrongHandle {
            made_by: handle.kind.name(),
            used_as: kind.name(),
        });
    }
    Ok(handle)
}

/// The C function `name` that destroys a handle.
///
/// # Safety
/// `h` is NULL or a live handle from this library's `create`, not used afterwards.
unsafe fn destroy(name: &'static str, h: HSM_CLIENT_HANDLE) {
    boundary(name, (), || {
        if !h.is_null() {
            // SAFETY: the caller's contract: `h` came from Box::into_raw in `create`.
            drop(unsafe { Box::from_raw(h.cast::<Handle>()) });
        }
        Ok(())
    })
}

/// The C function `name` on a handle: `f` with the handle behind `h` (checked to come from
/// `kind`'s `create`) and the plugin operation's name, for its errors; `fail` when it fails or
/// panics.
///
/// # Safety
/// `h` is NULL or a live handle from this library's `create`.
unsafe fn on_handle<T>(
    name: &'static str,
    fail: T,
    h: HSM_CLIENT_HANDLE,
    kind: Kind,
    f: impl FnOnce(&Handle, &'static str) -> Result<T, AdapterError>,
) -> T {
    boundary(name, fail, || {
        // SAFETY: the caller's contract.
        let handle = unsafe { handle(h, kind) }?;
        f(handle, op(name))
    })
}

/// The C function `name` answering a `malloc`ed copy of the text `f` gets (as
/// [`on_handle`]); `what` names the text in errors. NULL when it fails or panics.
///
/// # Safety
/// `h` is NULL or a live handle from this library's `create`.
unsafe fn text_out<T: AsRef<str>>(
    name: &'static str,
    h: HSM_CLIENT_HANDLE,
    kind: Kind,
    what: &'static str,
    f: impl FnOnce(&Handle, &'static str) -> Result<T, AdapterError>,
) -> *mut c_char {
    let call = |h: &Handle, op| malloc_string(f(h, op)?.as_ref(), what);
    // SAFETY: the caller's contract.
    unsafe { on_handle(name, std::ptr::null_mut(), h, kind, call) }
}

/// The C function `name` answering bytes through `out`/`out_len`: both are cleared first (a
/// failed call leaves nothing for the SDK to free) and refused when NULL, before `f` runs
/// (given the plugin operation's name); its bytes are `malloc`ed into them. 0 on success,
/// [`FAILURE`] when it fails or panics.
///
/// # Safety
/// `out` and `out_len` are each NULL or valid for writes.
unsafe fn bytes_out(
    name: &'static str,
    out: *mut *mut c_uchar,
    out_len: *mut size_t,
    f: impl FnOnce(&'static str) -> Result<PluginBytes, AdapterError>,
) -> c_int {
    boundary(name, FAILURE, || {
        // SAFETY: the caller's contract (NULL handled).
        unsafe { clear_outputs(out, out_len) };
        if out.is_null() || out_len.is_null() {
            return Err(AdapterError::InvalidArgument("NULL output pointer"));
        }
        let bytes = f(op(name))?;
        let p = malloc_bytes(&bytes)?;
        // SAFETY: the caller's contract; both were checked for NULL above.
        unsafe {
            *out = p;
            *out_len = bytes.len();
        }
        Ok(0)
    })
}

/// Clears the outputs, so that a failed call leaves nothing for the SDK to free.
///
/// # Safety
/// Each pointer is NULL or valid for writes.
unsafe fn clear_outputs(out: *mut *mut c_uchar, out_len: *mut size_t) {
    // SAFETY: the caller's contract; NULL is skipped.
    unsafe {
        if !out.is_null() {
            *out = std::ptr::null_mut();
        }
        if !out_len.is_null() {
            *out_len = 0;
        }
    }
}

/// An interface's `$create` and `$destroy` members, for handles of `$kind`; the C names in
/// logs are `hsm_client_$create` and `hsm_client_$destroy`.
macro_rules! create_and_destroy {
    ($create:ident, $destroy:ident, $kind:expr) => {
        unsafe extern "C" fn $create() -> HSM_CLIENT_HANDLE {
            create(concat!("hsm_client_", stringify!($create)), $kind)
        }

        unsafe extern "C" fn $destroy(h: HSM_CLIENT_HANDLE) {
            // SAFETY: the SDK passes a handle from this interface's create, once.
            unsafe { destroy(concat!("hsm_client_", stringify!($destroy)), h) }
        }
    };
}

// ---- process-wide ----------------------------------------------------------------------

/// The C function `name` that reads the config and loads the plugin the first time (counting
/// every call): 0 on success.
fn init(name: &'static str) -> c_int {
    ffi::init_logging();
    boundary(name, FAILURE, || setup::init().map(|()| 0))
}

/// The C function `name` that undoes one init.
fn deinit(name: &'static str) {
    boundary(name, (), || {
        setup::deinit();
        Ok(())
    })
}

/// Reads the config and loads the plugin the first time; counts every call (the C SDK calls
/// it at least twice). 0 on success.
#[no_mangle]
pub extern "C" fn hsm_client_tpm_init() -> c_int {
    init("hsm_client_tpm_init")
}

/// Undoes one `hsm_client_tpm_init`; the last deinit releases the shared plugin instance.
#[no_mangle]
pub extern "C" fn hsm_client_tpm_deinit() {
    deinit("hsm_client_tpm_deinit")
}

/// As [`hsm_client_tpm_init`] (the C SDK calls both, whatever the attestation).
#[no_mangle]
pub extern "C" fn hsm_client_x509_init() -> c_int {
    init("hsm_client_x509_init")
}

/// As [`hsm_client_tpm_deinit`].
#[no_mangle]
pub extern "C" fn hsm_client_x509_deinit() {
    deinit("hsm_client_x509_deinit")
}

// ---- TPM -------------------------------------------------------------------------------

create_and_destroy!(tpm_create, tpm_destroy, Kind::Tpm);

/// The TPM function `name` answering the bytes `f` gets from the plugin's TPM interface
/// through `out`/`out_len` (see [`bytes_out`]).
///
/// # Safety
/// `h` is NULL or a live handle from this library's `create`; `out` and `out_len` are each
/// NULL or valid for writes.
unsafe fn tpm_bytes(
    name: &'static str,
    h: HSM_CLIENT_HANDLE,
    out: *mut *mut c_uchar,
    out_len: *mut size_t,
    f: impl FnOnce(&TpmHandle<'_>) -> Result<PluginBytes, PluginError>,
) -> c_int {
    let call = |op| {
        // SAFETY: the caller's contract.
        let tpm = unsafe { handle(h, Kind::Tpm) }?.tpm(op)?;
        f(&tpm).map_err(|e| AdapterError::plugin(op, e))
    };
    // SAFETY: the caller's contract.
    unsafe { bytes_out(name, out, out_len, call) }
}

unsafe extern "C" fn tpm_get_ek(
    h: HSM_CLIENT_HANDLE,
    key: *mut *mut c_uchar,
    key_len: *mut size_t,
) -> c_int {
    // SAFETY: the SDK passes a handle from tpm_create and its output pointers (NULL handled).
    unsafe {
        tpm_bytes("hsm_client_get_ek", h, key, key_len, |tpm| {
            tpm.endorsement_key()
        })
    }
}

unsafe extern "C" fn tpm_get_srk(
    h: HSM_CLIENT_HANDLE,
    key: *mut *mut c_uchar,
    key_len: *mut size_t,
) -> c_int {
    // SAFETY: the SDK passes a handle from tpm_create and its output pointers (NULL handled).
    unsafe {
        tpm_bytes("hsm_client_get_srk", h, key, key_len, |tpm| {
            tpm.storage_root_key()
        })
    }
}

unsafe extern "C" fn tpm_activate_identity_key(
    h: HSM_CLIENT_HANDLE,
    key: *const c_uchar,
    key_len: size_t,
) -> c_int {
    boundary("hsm_client_activate_identity_key", FAILURE, || {
        if key.is_null() || key_len == 0 {
            return Err(AdapterError::InvalidArgument("empty authenticationKey"));
        }
        let op = op("hsm_client_activate_identity_key");
        // SAFETY: a handle from tpm_create.
        let h = unsafe { handle(h, Kind::Tpm) }?;
        // SAFETY: the SDK passes `key_len` readable bytes at `key` (non-NULL, checked).
        let blob = unsafe { std::slice::from_raw_parts(key, key_len) };
        h.tpm(op)?
            .activate_identity_key(blob)
            .map_err(|e| AdapterError::plugin(op, e))?;
        Ok(0)
    })
}

unsafe extern "C" fn tpm_sign_with_identity(
    h: HSM_CLIENT_HANDLE,
    data: *const c_uchar,
    data_len: size_t,
    signed_value: *mut *mut c_uchar,
    signed_len: *mut size_t,
) -> c_int {
    let sign = |op| {
        if data.is_null() && data_len != 0 {
            return Err(AdapterError::InvalidArgument("NULL data"));
        }
        // SAFETY: a handle from tpm_create.
        let tpm = unsafe { handle(h, Kind::Tpm) }?.tpm(op)?;
        let data = if data_len == 0 {
            &[][..]
        } else {
            // SAFETY: the SDK passes `data_len` readable bytes at `data` (non-NULL, checked).
            unsafe { std::slice::from_raw_parts(data, data_len) }
        };
        tpm.sign_with_identity(data)
            .map_err(|e| AdapterError::plugin(op, e))
    };
    let name = "hsm_client_sign_with_identity";
    // SAFETY: the SDK's output pointers (NULL handled).
    unsafe { bytes_out(name, signed_value, signed_len, sign) }
}

static TPM_INTERFACE: HSM_CLIENT_TPM_INTERFACE = HSM_CLIENT_TPM_INTERFACE {
    hsm_client_tpm_create: Some(tpm_create),
    hsm_client_tpm_destroy: Some(tpm_destroy),
    hsm_client_activate_identity_key: Some(tpm_activate_identity_key),
    hsm_client_get_ek: Some(tpm_get_ek),
    hsm_client_get_srk: Some(tpm_get_srk),
    hsm_client_sign_with_identity: Some(tpm_sign_with_identity),
};

/// The TPM interface: every member set.
#[no_mangle]
pub extern "C" fn hsm_client_tpm_interface() -> *const HSM_CLIENT_TPM_INTERFACE {
    &TPM_INTERFACE
}

// ---- X.509 -----------------------------------------------------------------------------

create_and_destroy!(x509_create, x509_destroy, Kind::X509);

unsafe extern "C" fn x509_get_cert(h: HSM_CLIENT_HANDLE) -> *mut c_char {
    let get = |h: &Handle, op| {
        h.x509(op)?
            .certificate_chain_pem()
            .map_err(|e| AdapterError::plugin(op, e))
    };
    // SAFETY: a handle from x509_create.
    unsafe {
        text_out(
            "hsm_client_get_cert",
            h,
            Kind::X509,
            "certificate chain",
            get,
        )
    }
}

unsafe extern "C" fn x509_get_key(h: HSM_CLIENT_HANDLE) -> *mut c_char {
    // Zeroizing: this copy is wiped when dropped; the SDK owns (and frees) the other.
    let get = |h: &Handle, op| {
        h.x509(op)?
            .export_private_key_pem()
            .map_err(|error| AdapterError::KeyNotExported { error })
    };
    // SAFETY: a handle from x509_create.
    unsafe { text_out("hsm_client_get_key", h, Kind::X509, "private key", get) }
}

unsafe extern "C" fn x509_get_common_name(h: HSM_CLIENT_HANDLE) -> *mut c_char {
    let get = |h: &Handle, op| {
        h.x509(op)?
            .common_name()
            .map_err(|e| AdapterError::plugin(op, e))
    };
    let name = "hsm_client_get_common_name";
    // SAFETY: a handle from x509_create.
    unsafe { text_out(name, h, Kind::X509, "common name", get) }
}

static X509_INTERFACE: HSM_CLIENT_X509_INTERFACE = HSM_CLIENT_X509_INTERFACE {
    hsm_client_x509_create: Some(x509_create),
    hsm_client_x509_destroy: Some(x509_destroy),
    hsm_client_get_cert: Some(x509_get_cert),
    hsm_client_get_key: Some(x509_get_key),
    hsm_client_get_common_name: Some(x509_get_common_name),
};

/// The X.509 interface: every member set.
#[no_mangle]
pub extern "C" fn hsm_client_x509_interface() -> *const HSM_CLIENT_X509_INTERFACE {
    &X509_INTERFACE
}

// ---- symmetric key ---------------------------------------------------------------------

create_and_destroy!(key_create, key_destroy, Kind::Key);

unsafe extern "C" fn key_get_symm_key(h: HSM_CLIENT_HANDLE) -> *mut c_char {
    let get = |h: &Handle, _| {
        let held = h.symmetric_key.lock().unwrap_or_else(|e| e.into_inner());
        match held.as_ref() {
            Some(key) => malloc_string(key, "symmetric key"),
            None => Err(AdapterError::SymmetricKeyNotExported {
                plugin: h.backend.name().to_string(),
            }),
        }
    };
    // SAFETY: a handle from key_create.
    unsafe {
        on_handle(
            "hsm_client_get_symm_key",
            std::ptr::null_mut(),
            h,
            Kind::Key,
            get,
        )
    }
}

unsafe extern "C" fn key_get_registration_name(h: HSM_CLIENT_HANDLE) -> *mut c_char {
    let get = |h: &Handle, op| {
        h.symmetric_key(op)?
            .registration_id()
            .map_err(|e| AdapterError::plugin(op, e))
    };
    let name = "hsm_client_get_registration_name";
    // SAFETY: a handle from key_create.
    unsafe { text_out(name, h, Kind::Key, "registration id", get) }
}

/// What the SDK's probe signs to learn whether the plugin already holds a given key.
const KEY_PROBE: &[u8] = b"hsmkit_azure_hsm key probe";

unsafe extern "C" fn key_set_symm_key_info(
    h: HSM_CLIENT_HANDLE,
    reg_name: *const c_char,
    symm_key: *const c_char,
) -> c_int {
    let set = |h: &Handle, op| {
        // SAFETY: the SDK passes NULL or NUL-terminated strings valid for the call.
        let reg = unsafe { c_str(reg_name, "registration name is not UTF-8") }?;
        // SAFETY: as above.
        let key = unsafe { c_str(symm_key, "symmetric key is not UTF-8") }?;
        let (reg, key_b64) = match (reg, key) {
            // The SDK passes what the application set, NULL when it set nothing: then the
            // key the plugin already holds is the device's (enrolled with `hsmkit
            // enroll-info`), and only signing inside the plugin could use it.
            (None, None) => return Ok(0),
            (Some(reg), Some(key)) => (reg, key),
            _ => {
                return Err(AdapterError::InvalidArgument(
                    "a registration name without a key, or a key without a registration name",
                ))
            }
        };
        let raw = Zeroizing::new(
            B64.decode(key_b64.trim())
                .map_err(|_| AdapterError::InvalidArgument("the symmetric key is not base64"))?,
        );
        let sym = h.symmetric_key(op)?;
        if !holds(&sym, reg, &raw)? {
            sym.import_key(Some(reg), &raw)
                .map_err(|e| AdapterError::plugin(op, e))?;
            tracing::info!(
                plugin = h.backend.name(),
                "imported the application's symmetric key into the plugin"
            );
        }
        *h.symmetric_key.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(Zeroizing::new(key_b64.trim().to_string()));
        Ok(0)
    };
    // SAFETY: a handle from key_create.
    unsafe { on_handle("hsm_client_set_symm_key_info", FAILURE, h, Kind::Key, set) }
}

/// Whether the plugin already holds `key` for `reg` (so that every handle the SDK creates does
/// not rewrite the plugin's key store): compared by an HMAC of a fixed probe, the key itself
/// never leaving the plugin.
fn holds(sym: &SymmetricKeyHandle<'_>, reg: &str, key: &[u8]) -> Result<bool, AdapterError> {
    use hmac::{Hmac, Mac};
    match sym.registration_id() {
        Ok(id) if id == reg => {}
        Ok(_) => return Ok(false),
        Err(e) if e.code() == Some(PluginErrorCode::NotFound) => return Ok(false),
        Err(e) => return Err(AdapterError::plugin("set_symm_key_info", e)),
    }
    let theirs = match sym.sign(KEY_PROBE) {
        Ok(mac) => mac,
        Err(e) if e.code() == Some(PluginErrorCode::NotFound) => return Ok(false),
        Err(e) => return Err(AdapterError::plugin("set_symm_key_info", e)),
    };
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(key)
        .map_err(|_| AdapterError::InvalidArgument("the symmetric key is empty"))?;
    mac.update(KEY_PROBE);
    Ok(mac.verify_slice(&theirs).is_ok())
}

static KEY_INTERFACE: HSM_CLIENT_KEY_INTERFACE = HSM_CLIENT_KEY_INTERFACE {
    hsm_client_key_create: Some(key_create),
    hsm_client_key_destroy: Some(key_destroy),
    hsm_client_get_symm_key: Some(key_get_symm_key),
    hsm_client_get_registration_name: Some(key_get_registration_name),
    hsm_client_set_symm_key_info: Some(key_set_symm_key_info),
};

/// The symmetric-key interface: every member set, `set_symm_key_info` included.
#[no_mangle]
pub extern "C" fn hsm_client_key_interface() -> *const HSM_CLIENT_KEY_INTERFACE {
    &KEY_INTERFACE
}

#[cfg(test)]
mod tests {
    use super::*;
    use hsmkit_azure_custom_hsm_api::NullMembers;

    #[test]
    fn no_table_member_is_null() {
        // SAFETY: the functions return pointers to statics.
        let (t, x, k) = unsafe {
            (
                &*hsm_client_tpm_interface(),
                &*hsm_client_x509_interface(),
                &*hsm_client_key_interface(),
            )
        };
        assert!(t.null_members().is_empty());
        assert!(x.null_members().is_empty());
        assert!(k.null_members().is_empty());
    }

    #[test]
    fn create_before_init_fails_with_null() {
        // SAFETY: plain calls with no arguments.
        let h = unsafe { tpm_create() };
        assert!(h.is_null());
    }

    #[test]
    fn malloced_strings_are_terminated_and_nul_is_refused() {
        let p = malloc_string("abc", "t").unwrap();
        // SAFETY: `p` is a NUL-terminated malloc'ed string.
        let s = unsafe { std::ffi::CStr::from_ptr(p) }
            .to_str()
            .unwrap()
            .to_string();
        // SAFETY: malloc'ed above.
        unsafe { libc::free(p.cast()) };
        assert_eq!(s, "abc");
        assert!(matches!(
            malloc_string("a\0b", "t"),
            Err(AdapterError::InteriorNul("t"))
        ));
    }

    #[test]
    fn a_panic_becomes_the_failure_value() {
        let v = boundary("test", 7, || -> Result<i32, AdapterError> {
            panic!("boom")
        });
        assert_eq!(v, 7);
    }
}
