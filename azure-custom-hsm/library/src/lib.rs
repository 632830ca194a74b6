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
use provisioning_core::plugin::{PluginErrorCode, PluginInstance};
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

fn create(kind: Kind) -> Result<HSM_CLIENT_HANDLE, AdapterError> {
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

/// # Safety
/// `h` is NULL or a live handle from this library's `create`, not used afterwards.
unsafe fn destroy(h: HSM_CLIENT_HANDLE) {
    if !h.is_null() {
        // SAFETY: the caller's contract: `h` came from Box::into_raw in `create`.
        drop(unsafe { Box::from_raw(h.cast::<Handle>()) });
    }
}

// ---- process-wide ----------------------------------------------------------------------

/// Reads the config and loads the plugin the first time; counts every call (the C SDK calls
/// it at least twice). 0 on success.
#[no_mangle]
pub extern "C" fn hsm_client_tpm_init() -> c_int {
    ffi::init_logging();
    boundary("hsm_client_tpm_init", FAILURE, || setup::init().map(|()| 0))
}

/// Undoes one `hsm_client_tpm_init`; the last deinit releases the shared plugin instance.
#[no_mangle]
pub extern "C" fn hsm_client_tpm_deinit() {
    boundary("hsm_client_tpm_deinit", (), || {
        setup::deinit();
        Ok(())
    })
}

/// As [`hsm_client_tpm_init`] (the C SDK calls both, whatever the attestation).
#[no_mangle]
pub extern "C" fn hsm_client_x509_init() -> c_int {
    ffi::init_logging();
    boundary("hsm_client_x509_init", FAILURE, || {
        setup::init().map(|()| 0)
    })
}

/// As [`hsm_client_tpm_deinit`].
#[no_mangle]
pub extern "C" fn hsm_client_x509_deinit() {
    boundary("hsm_client_x509_deinit", (), || {
        setup::deinit();
        Ok(())
    })
}

// ---- TPM -------------------------------------------------------------------------------

unsafe extern "C" fn tpm_create() -> HSM_CLIENT_HANDLE {
    boundary("hsm_client_tpm_create", std::ptr::null_mut(), || {
        create(Kind::Tpm)
    })
}

unsafe extern "C" fn tpm_destroy(h: HSM_CLIENT_HANDLE) {
    boundary("hsm_client_tpm_destroy", (), || {
        // SAFETY: the SDK passes a handle from tpm_create, once.
        unsafe { destroy(h) };
        Ok(())
    })
}

/// Writes a `malloc`ed copy of `bytes` to `*out`/`*out_len`.
///
/// # Safety
/// `out` and `out_len` are valid for writes (checked for NULL).
unsafe fn give_bytes(
    bytes: &[u8],
    out: *mut *mut c_uchar,
    out_len: *mut size_t,
) -> Result<c_int, AdapterError> {
    let p = malloc_bytes(bytes)?;
    // SAFETY: the caller's contract; both were checked for NULL before the plugin call.
    unsafe {
        *out = p;
        *out_len = bytes.len();
    }
    Ok(0)
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

unsafe extern "C" fn tpm_get_ek(
    h: HSM_CLIENT_HANDLE,
    key: *mut *mut c_uchar,
    key_len: *mut size_t,
) -> c_int {
    boundary("hsm_client_get_ek", FAILURE, || {
        // SAFETY: the SDK's pointers (NULL handled).
        unsafe { clear_outputs(key, key_len) };
        if key.is_null() || key_len.is_null() {
            return Err(AdapterError::InvalidArgument("NULL output pointer"));
        }
        // SAFETY: a handle from tpm_create.
        let h = unsafe { handle(h, Kind::Tpm) }?;
        let tpm = h
            .instance
            .tpm()
            .map_err(|e| AdapterError::plugin("get_ek", e))?;
        let ek = tpm
            .endorsement_key()
            .map_err(|e| AdapterError::plugin("get_ek", e))?;
        // SAFETY: checked non-NULL above.
        unsafe { give_bytes(&ek, key, key_len) }
    })
}

unsafe extern "C" fn tpm_get_srk(
    h: HSM_CLIENT_HANDLE,
    key: *mut *mut c_uchar,
    key_len: *mut size_t,
) -> c_int {
    boundary("hsm_client_get_srk", FAILURE, || {
        // SAFETY: the SDK's pointers (NULL handled).
        unsafe { clear_outputs(key, key_len) };
        if key.is_null() || key_len.is_null() {
            return Err(AdapterError::InvalidArgument("NULL output pointer"));
        }
        // SAFETY: a handle from tpm_create.
        let h = unsafe { handle(h, Kind::Tpm) }?;
        let tpm = h
            .instance
            .tpm()
            .map_err(|e| AdapterError::plugin("get_srk", e))?;
        let srk = tpm
            .storage_root_key()
            .map_err(|e| AdapterError::plugin("get_srk", e))?;
        // SAFETY: checked non-NULL above.
        unsafe { give_bytes(&srk, key, key_len) }
    })
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
        // SAFETY: a handle from tpm_create.
        let h = unsafe { handle(h, Kind::Tpm) }?;
        // SAFETY: the SDK passes `key_len` readable bytes at `key` (non-NULL, checked).
        let blob = unsafe { std::slice::from_raw_parts(key, key_len) };
        let tpm = h
            .instance
            .tpm()
            .map_err(|e| AdapterError::plugin("activate_identity_key", e))?;
        tpm.activate_identity_key(blob)
            .map_err(|e| AdapterError::plugin("activate_identity_key", e))?;
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
    boundary("hsm_client_sign_with_identity", FAILURE, || {
        // SAFETY: the SDK's pointers (NULL handled).
        unsafe { clear_outputs(signed_value, signed_len) };
        if signed_value.is_null() || signed_len.is_null() {
            return Err(AdapterError::InvalidArgument("NULL output pointer"));
        }
        if data.is_null() && data_len != 0 {
            return Err(AdapterError::InvalidArgument("NULL data"));
        }
        // SAFETY: a handle from tpm_create.
        let h = unsafe { handle(h, Kind::Tpm) }?;
        let data = if data_len == 0 {
            &[][..]
        } else {
            // SAFETY: the SDK passes `data_len` readable bytes at `data` (non-NULL, checked).
            unsafe { std::slice::from_raw_parts(data, data_len) }
        };
        let tpm = h
            .instance
            .tpm()
            .map_err(|e| AdapterError::plugin("sign_with_identity", e))?;
        let mac = tpm
            .sign_with_identity(data)
            .map_err(|e| AdapterError::plugin("sign_with_identity", e))?;
        // SAFETY: checked non-NULL above.
        unsafe { give_bytes(&mac, signed_value, signed_len) }
    })
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

unsafe extern "C" fn x509_create() -> HSM_CLIENT_HANDLE {
    boundary("hsm_client_x509_create", std::ptr::null_mut(), || {
        create(Kind::X509)
    })
}

unsafe extern "C" fn x509_destroy(h: HSM_CLIENT_HANDLE) {
    boundary("hsm_client_x509_destroy", (), || {
        // SAFETY: the SDK passes a handle from x509_create, once.
        unsafe { destroy(h) };
        Ok(())
    })
}

unsafe extern "C" fn x509_get_cert(h: HSM_CLIENT_HANDLE) -> *mut c_char {
    boundary("hsm_client_get_cert", std::ptr::null_mut(), || {
        // SAFETY: a handle from x509_create.
        let h = unsafe { handle(h, Kind::X509) }?;
        let x509 = h
            .instance
            .x509()
            .map_err(|e| AdapterError::plugin("get_cert", e))?;
        let chain = x509
            .certificate_chain_pem()
            .map_err(|e| AdapterError::plugin("get_cert", e))?;
        malloc_string(&chain, "certificate chain")
    })
}

unsafe extern "C" fn x509_get_key(h: HSM_CLIENT_HANDLE) -> *mut c_char {
    boundary("hsm_client_get_key", std::ptr::null_mut(), || {
        // SAFETY: a handle from x509_create.
        let h = unsafe { handle(h, Kind::X509) }?;
        let x509 = h
            .instance
            .x509()
            .map_err(|e| AdapterError::plugin("get_key", e))?;
        // Zeroizing: this copy is wiped when dropped; the SDK owns (and frees) the other.
        let pem = x509
            .export_private_key_pem()
            .map_err(|error| AdapterError::KeyNotExported { error })?;
        malloc_string(&pem, "private key")
    })
}

unsafe extern "C" fn x509_get_common_name(h: HSM_CLIENT_HANDLE) -> *mut c_char {
    boundary("hsm_client_get_common_name", std::ptr::null_mut(), || {
        // SAFETY: a handle from x509_create.
        let h = unsafe { handle(h, Kind::X509) }?;
        let x509 = h
            .instance
            .x509()
            .map_err(|e| AdapterError::plugin("get_common_name", e))?;
        let cn = x509
            .common_name()
            .map_err(|e| AdapterError::plugin("get_common_name", e))?;
        malloc_string(&cn, "common name")
    })
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

unsafe extern "C" fn key_create() -> HSM_CLIENT_HANDLE {
    boundary("hsm_client_key_create", std::ptr::null_mut(), || {
        create(Kind::Key)
    })
}

unsafe extern "C" fn key_destroy(h: HSM_CLIENT_HANDLE) {
    boundary("hsm_client_key_destroy", (), || {
        // SAFETY: the SDK passes a handle from key_create, once.
        unsafe { destroy(h) };
        Ok(())
    })
}

unsafe extern "C" fn key_get_symm_key(h: HSM_CLIENT_HANDLE) -> *mut c_char {
    boundary("hsm_client_get_symm_key", std::ptr::null_mut(), || {
        // SAFETY: a handle from key_create.
        let h = unsafe { handle(h, Kind::Key) }?;
        let held = h.symmetric_key.lock().unwrap_or_else(|e| e.into_inner());
        match held.as_ref() {
            Some(key) => malloc_string(key, "symmetric key"),
            None => Err(AdapterError::SymmetricKeyNotExported {
                plugin: h.backend.name().to_string(),
            }),
        }
    })
}

unsafe extern "C" fn key_get_registration_name(h: HSM_CLIENT_HANDLE) -> *mut c_char {
    boundary(
        "hsm_client_get_registration_name",
        std::ptr::null_mut(),
        || {
            // SAFETY: a handle from key_create.
            let h = unsafe { handle(h, Kind::Key) }?;
            let sym = h
                .instance
                .symmetric_key()
                .map_err(|e| AdapterError::plugin("get_registration_name", e))?;
            let id = sym
                .registration_id()
                .map_err(|e| AdapterError::plugin("get_registration_name", e))?;
            malloc_string(&id, "registration id")
        },
    )
}

/// What the SDK's probe signs to learn whether the plugin already holds a given key.
const KEY_PROBE: &[u8] = b"hsmkit_azure_hsm key probe";

unsafe extern "C" fn key_set_symm_key_info(
    h: HSM_CLIENT_HANDLE,
    reg_name: *const c_char,
    symm_key: *const c_char,
) -> c_int {
    boundary("hsm_client_set_symm_key_info", FAILURE, || {
        // SAFETY: a handle from key_create.
        let h = unsafe { handle(h, Kind::Key) }?;
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
        let sym = h
            .instance
            .symmetric_key()
            .map_err(|e| AdapterError::plugin("set_symm_key_info", e))?;
        if !holds(&sym, reg, &raw)? {
            sym.import_key(Some(reg), &raw)
                .map_err(|e| AdapterError::plugin("set_symm_key_info", e))?;
            tracing::info!(
                plugin = h.backend.name(),
                "imported the application's symmetric key into the plugin"
            );
        }
        *h.symmetric_key.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(Zeroizing::new(key_b64.trim().to_string()));
        Ok(0)
    })
}

/// Whether the plugin already holds `key` for `reg` (so that every handle the SDK creates does
/// not rewrite the plugin's key store): compared by an HMAC of a fixed probe, the key itself
/// never leaving the plugin.
fn holds(
    sym: &provisioning_core::plugin::SymmetricKeyHandle<'_>,
    reg: &str,
    key: &[u8],
) -> Result<bool, AdapterError> {
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
