//! The Azure IoT C SDK's custom-HSM contract as Rust types: one copy, used by the plugin that
//! hosts an existing custom-HSM library (`backends/azure-custom-hsm`) and by the library that
//! is a custom HSM for the C SDK backed by an hsmkit plugin (`libhsmkit_azure_hsm`).
//!
//! Written from the public contract (the C SDK's `provisioning_client/adapters/hsm_client_data.h`
//! as documented in `using_custom_hsm.md`), not copied. `include/hsmkit_azure_custom_hsm.h` is
//! generated from these definitions (`cargo test -p hsmkit-azure-custom-hsm-api`) and is
//! source-compatible with the SDK's header: same type names, same member order.
//!
//! The rules both sides follow:
//! - Every interface has `create` (NULL = failure) and `destroy`; a handle is opaque.
//! - `int` results: 0 is success, anything else failure. Pointer getters return NULL on failure.
//! - Every buffer or string an HSM returns was allocated with `malloc`; the caller releases it
//!   with `free`. Strings handed to the HSM (`set_symm_key_info`) are copied by the HSM.
//! - EK and SRK are marshalled `TPM2B_PUBLIC` bytes (not base64); `sign_with_identity` returns
//!   the raw 32-byte HMAC-SHA256.
//! - The certificate is PEM, leaf first; the key is a PEM private key (the SDK's model: the
//!   key is in the library's memory) or an opaque token a custom TLS layer understands.
//! - The SDK calls the `*_init` functions more than once (provisioning and IoT Hub security
//!   both initialise): they must be idempotent; 0 is success.
//! - The SDK refuses an interface table with any NULL member.

#![allow(non_camel_case_types)]

use libc::{c_char, c_int, c_uchar, c_void, size_t};

/// An opaque handle made by an interface's `create`.
pub type HSM_CLIENT_HANDLE = *mut c_void;

/// Creates a handle; NULL on failure.
pub type HSM_CLIENT_CREATE = Option<unsafe extern "C" fn() -> HSM_CLIENT_HANDLE>;
/// Destroys a handle made by the same interface's `create`.
pub type HSM_CLIENT_DESTROY = Option<unsafe extern "C" fn(handle: HSM_CLIENT_HANDLE)>;

/// TPM: activates (imports) the identity key from a DPS `authenticationKey` blob.
pub type HSM_CLIENT_ACTIVATE_IDENTITY_KEY = Option<
    unsafe extern "C" fn(handle: HSM_CLIENT_HANDLE, key: *const c_uchar, key_len: size_t) -> c_int,
>;
/// TPM: the endorsement key as a marshalled `TPM2B_PUBLIC`, `malloc`ed into `*key`.
pub type HSM_CLIENT_GET_ENDORSEMENT_KEY = Option<
    unsafe extern "C" fn(
        handle: HSM_CLIENT_HANDLE,
        key: *mut *mut c_uchar,
        key_len: *mut size_t,
    ) -> c_int,
>;
/// TPM: the storage root key as a marshalled `TPM2B_PUBLIC`, `malloc`ed into `*key`.
pub type HSM_CLIENT_GET_STORAGE_ROOT_KEY = Option<
    unsafe extern "C" fn(
        handle: HSM_CLIENT_HANDLE,
        key: *mut *mut c_uchar,
        key_len: *mut size_t,
    ) -> c_int,
>;
/// TPM: HMAC-SHA256 of `data` with the identity key, `malloc`ed into `*signed_value`.
pub type HSM_CLIENT_SIGN_WITH_IDENTITY = Option<
    unsafe extern "C" fn(
        handle: HSM_CLIENT_HANDLE,
        data: *const c_uchar,
        data_len: size_t,
        signed_value: *mut *mut c_uchar,
        signed_len: *mut size_t,
    ) -> c_int,
>;

/// X.509: the certificate chain as a `malloc`ed PEM string, leaf first.
pub type HSM_CLIENT_GET_CERTIFICATE =
    Option<unsafe extern "C" fn(handle: HSM_CLIENT_HANDLE) -> *mut c_char>;
/// X.509: the private key as a `malloc`ed PEM string (or an opaque token).
pub type HSM_CLIENT_GET_ALIAS_KEY =
    Option<unsafe extern "C" fn(handle: HSM_CLIENT_HANDLE) -> *mut c_char>;
/// X.509: the leaf's common name (the registration id) as a `malloc`ed string.
pub type HSM_CLIENT_GET_COMMON_NAME =
    Option<unsafe extern "C" fn(handle: HSM_CLIENT_HANDLE) -> *mut c_char>;

/// Symmetric key: the key, base64, as a `malloc`ed string.
pub type HSM_CLIENT_GET_SYMMETRICAL_KEY =
    Option<unsafe extern "C" fn(handle: HSM_CLIENT_HANDLE) -> *mut c_char>;
/// Symmetric key: the registration id as a `malloc`ed string.
pub type HSM_CLIENT_GET_REGISTRATION_NAME =
    Option<unsafe extern "C" fn(handle: HSM_CLIENT_HANDLE) -> *mut c_char>;
/// Symmetric key: stores a registration id and a base64 key (the HSM copies both).
pub type HSM_CLIENT_SET_SYMMETRICAL_KEY_INFO = Option<
    unsafe extern "C" fn(
        handle: HSM_CLIENT_HANDLE,
        reg_name: *const c_char,
        symm_key: *const c_char,
    ) -> c_int,
>;

/// The TPM interface (`hsm_client_tpm_interface()`).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct HSM_CLIENT_TPM_INTERFACE {
    /// Creates a handle.
    pub hsm_client_tpm_create: HSM_CLIENT_CREATE,
    /// Destroys a handle.
    pub hsm_client_tpm_destroy: HSM_CLIENT_DESTROY,
    /// Activates the identity key from a DPS blob.
    pub hsm_client_activate_identity_key: HSM_CLIENT_ACTIVATE_IDENTITY_KEY,
    /// Reads the endorsement key.
    pub hsm_client_get_ek: HSM_CLIENT_GET_ENDORSEMENT_KEY,
    /// Reads the storage root key.
    pub hsm_client_get_srk: HSM_CLIENT_GET_STORAGE_ROOT_KEY,
    /// Signs with the identity key.
    pub hsm_client_sign_with_identity: HSM_CLIENT_SIGN_WITH_IDENTITY,
}

/// The X.509 interface (`hsm_client_x509_interface()`).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct HSM_CLIENT_X509_INTERFACE {
    /// Creates a handle.
    pub hsm_client_x509_create: HSM_CLIENT_CREATE,
    /// Destroys a handle.
    pub hsm_client_x509_destroy: HSM_CLIENT_DESTROY,
    /// Reads the certificate chain (PEM, leaf first).
    pub hsm_client_get_cert: HSM_CLIENT_GET_CERTIFICATE,
    /// Reads the private key.
    pub hsm_client_get_key: HSM_CLIENT_GET_ALIAS_KEY,
    /// Reads the leaf's common name.
    pub hsm_client_get_common_name: HSM_CLIENT_GET_COMMON_NAME,
}

/// The symmetric-key interface (`hsm_client_key_interface()`).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct HSM_CLIENT_KEY_INTERFACE {
    /// Creates a handle.
    pub hsm_client_key_create: HSM_CLIENT_CREATE,
    /// Destroys a handle.
    pub hsm_client_key_destroy: HSM_CLIENT_DESTROY,
    /// Reads the key (base64).
    pub hsm_client_get_symm_key: HSM_CLIENT_GET_SYMMETRICAL_KEY,
    /// Reads the registration id.
    pub hsm_client_get_registration_name: HSM_CLIENT_GET_REGISTRATION_NAME,
    /// Stores a registration id and key.
    pub hsm_client_set_symm_key_info: HSM_CLIENT_SET_SYMMETRICAL_KEY_INFO,
}

/// `const HSM_CLIENT_TPM_INTERFACE* hsm_client_tpm_interface(void)`.
pub type TpmInterfaceFn = unsafe extern "C" fn() -> *const HSM_CLIENT_TPM_INTERFACE;
/// `const HSM_CLIENT_X509_INTERFACE* hsm_client_x509_interface(void)`.
pub type X509InterfaceFn = unsafe extern "C" fn() -> *const HSM_CLIENT_X509_INTERFACE;
/// `const HSM_CLIENT_KEY_INTERFACE* hsm_client_key_interface(void)`.
pub type KeyInterfaceFn = unsafe extern "C" fn() -> *const HSM_CLIENT_KEY_INTERFACE;
/// `int hsm_client_*_init(void)`: 0 is success; called more than once.
pub type InitFn = unsafe extern "C" fn() -> c_int;
/// `void hsm_client_*_deinit(void)`.
pub type DeinitFn = unsafe extern "C" fn();

/// The exported symbol names, NUL-terminated for `dlsym`.
pub mod symbols {
    /// `hsm_client_tpm_interface`.
    pub const TPM_INTERFACE: &[u8] = b"hsm_client_tpm_interface\0";
    /// `hsm_client_x509_interface`.
    pub const X509_INTERFACE: &[u8] = b"hsm_client_x509_interface\0";
    /// `hsm_client_key_interface`.
    pub const KEY_INTERFACE: &[u8] = b"hsm_client_key_interface\0";
    /// `hsm_client_tpm_init`.
    pub const TPM_INIT: &[u8] = b"hsm_client_tpm_init\0";
    /// `hsm_client_tpm_deinit`.
    pub const TPM_DEINIT: &[u8] = b"hsm_client_tpm_deinit\0";
    /// `hsm_client_x509_init`.
    pub const X509_INIT: &[u8] = b"hsm_client_x509_init\0";
    /// `hsm_client_x509_deinit`.
    pub const X509_DEINIT: &[u8] = b"hsm_client_x509_deinit\0";
}

/// Names of the members a table holds as NULL, in member order: the C SDK refuses such a
/// table, so both adapters report them by name.
pub trait NullMembers {
    /// The NULL members' names.
    fn null_members(&self) -> Vec<&'static str>;
}

macro_rules! null_members {
    ($ty:ty { $($field:ident),* $(,)? }) => {
        impl NullMembers for $ty {
            fn null_members(&self) -> Vec<&'static str> {
                let mut v = Vec::new();
                $(if self.$field.is_none() { v.push(stringify!($field)); })*
                v
            }
        }
    };
}

null_members!(HSM_CLIENT_TPM_INTERFACE {
    hsm_client_tpm_create,
    hsm_client_tpm_destroy,
    hsm_client_activate_identity_key,
    hsm_client_get_ek,
    hsm_client_get_srk,
    hsm_client_sign_with_identity,
});
null_members!(HSM_CLIENT_X509_INTERFACE {
    hsm_client_x509_create,
    hsm_client_x509_destroy,
    hsm_client_get_cert,
    hsm_client_get_key,
    hsm_client_get_common_name,
});
null_members!(HSM_CLIENT_KEY_INTERFACE {
    hsm_client_key_create,
    hsm_client_key_destroy,
    hsm_client_get_symm_key,
    hsm_client_get_registration_name,
    hsm_client_set_symm_key_info,
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn null_members_are_named_in_order() {
        let t = HSM_CLIENT_KEY_INTERFACE {
            hsm_client_key_create: None,
            hsm_client_key_destroy: None,
            hsm_client_get_symm_key: None,
            hsm_client_get_registration_name: None,
            hsm_client_set_symm_key_info: None,
        };
        assert_eq!(
            t.null_members(),
            [
                "hsm_client_key_create",
                "hsm_client_key_destroy",
                "hsm_client_get_symm_key",
                "hsm_client_get_registration_name",
                "hsm_client_set_symm_key_info"
            ]
        );
    }

    #[test]
    fn tables_are_arrays_of_pointers() {
        let p = std::mem::size_of::<usize>();
        assert_eq!(std::mem::size_of::<HSM_CLIENT_TPM_INTERFACE>(), 6 * p);
        assert_eq!(std::mem::size_of::<HSM_CLIENT_X509_INTERFACE>(), 5 * p);
        assert_eq!(std::mem::size_of::<HSM_CLIENT_KEY_INTERFACE>(), 5 * p);
    }
}
