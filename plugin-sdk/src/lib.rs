//! What an HSM vendor writes against to make an hsmkit plugin in Rust.
//!
//! Implement [`HsmPlugin`] for your instance type, plus one trait per interface you offer
//! ([`TpmHsm`], [`X509Hsm`], [`SymmetricKeyHsm`]), then export it once:
//!
//! ```
//! use hmac::{Hmac, Mac};
//! use hsm_plugin_sdk::{
//!     export_plugin, secret_file, HsmError, HsmPlugin, PluginConfig, PluginInfo, Setting,
//!     SymmetricKeyHsm,
//! };
//! use sha2::Sha256;
//! use std::path::PathBuf;
//!
//! /// A software symmetric key kept 0600 under the state folder, so it outlives the process.
//! pub struct MyHsm {
//!     registration_id: String,
//!     key_file: PathBuf,
//! }
//!
//! impl HsmPlugin for MyHsm {
//!     const INFO: PluginInfo = PluginInfo {
//!         name: "my-hsm",
//!         version: "1.0.0",
//!         vendor: "Example Corp",
//!         description: "Example symmetric-key HSM",
//!     };
//!     // Every key create reads; any other (but state_dir) is refused before create runs.
//!     const SETTINGS: &'static [Setting] = &[Setting::required(
//!         "registration_id",
//!         "DPS registration id of this device",
//!     )];
//!     fn create(config: &PluginConfig) -> Result<Self, HsmError> {
//!         Ok(MyHsm {
//!             registration_id: config.require("registration_id")?.to_string(),
//!             key_file: config.state_dir()?.join("my-hsm").join("key"),
//!         })
//!     }
//! }
//!
//! impl SymmetricKeyHsm for MyHsm {
//!     fn registration_id(&self) -> Result<String, HsmError> {
//!         Ok(self.registration_id.clone())
//!     }
//!     fn sign(&self, data: &[u8]) -> Result<Vec<u8>, HsmError> {
//!         let key = secret_file::read(&self.key_file)?;
//!         let mut mac = Hmac::<Sha256>::new_from_slice(&key)
//!             .map_err(|e| HsmError::internal(e.to_string()))?;
//!         mac.update(data);
//!         Ok(mac.finalize().into_bytes().to_vec())
//!     }
//!     fn import_key(&self, _registration_id: Option<&str>, key: &[u8]) -> Result<(), HsmError> {
//!         secret_file::write(&self.key_file, key)
//!     }
//! }
//!
//! export_plugin!(MyHsm, symmetric_key);
//! ```
//!
//! The macro generates the `hsm_plugin_entry` symbol, the function tables, the abi_stable
//! layout export, the settings declaration, the refusal of unknown settings, panic catching,
//! buffer ownership and error mapping: a panic in your code becomes `HSM_ERR_PANIC` with the
//! panic message, never an unwind across the C boundary.

#![deny(missing_docs)]

mod config;
mod error;
#[doc(hidden)]
pub mod ffi;
pub mod log;
pub mod secret_file;
mod settings;
pub mod sync;
mod traits;

pub use config::PluginConfig;
pub use error::{ErrorCode, HsmError};
pub use settings::{Setting, STATE_DIR};
pub use traits::{HsmPlugin, OperationalKeyHsm, PluginInfo, SymmetricKeyHsm, TpmHsm, X509Hsm};

/// Signature algorithms of [`X509Hsm::sign_digest`]: the ABI's own view of the `HSM_SIGN_*`
/// values, shared with the host.
pub use hsm_api::SignAlgorithm;

/// The raw ABI, re-exported so that macro expansions and C-level tests need only this crate.
pub use hsm_api;

/// Exports `$ty` (which implements [`HsmPlugin`]) as this library's plugin, with the listed
/// interfaces: any of `tpm`, `x509`, `symmetric_key`, and `operational_key` (ABI 1.2, beside
/// any of the others). Use it exactly once per cdylib.
///
/// `export_plugin!(entry = path::to::entry)` exports an entry function made elsewhere with
/// [`plugin_entry!`] instead: the form of a plugin crate that is only a shim over a backend
/// library, so that the library itself exports no symbol and several backends can be linked
/// into one host.
#[macro_export]
macro_rules! export_plugin {
    (entry = $entry:path $(,)?) => {
        /// The plugin entry point (see `hsm_api::HsmPluginEntryFn`).
        ///
        /// # Safety
        /// Called by an hsmkit host with valid pointers, as the ABI describes.
        #[no_mangle]
        pub unsafe extern "C" fn hsm_plugin_entry(
            host_major: u16,
            host_minor: u16,
            host: *const $crate::hsm_api::HsmHostApi,
            out_table: *mut *const $crate::hsm_api::HsmPluginTable,
        ) -> $crate::hsm_api::HsmStatus {
            let entry: $crate::hsm_api::HsmPluginEntryFn = $entry;
            // SAFETY: the host guarantees the pointers per the ABI contract.
            unsafe { entry(host_major, host_minor, host, out_table) }
        }

        /// The abi_stable layout of this plugin's `HsmPluginTable`, for the host's check.
        ///
        /// # Safety
        /// `out_minor` is NULL or valid for one write.
        #[no_mangle]
        pub unsafe extern "C" fn hsm_plugin_abi_layout(
            out_minor: *mut u16,
        ) -> &'static $crate::ffi::TypeLayout {
            // SAFETY: forwarded contract.
            unsafe { $crate::ffi::abi_layout(out_minor) }
        }
    };
    ($ty:ty $(, $iface:ident)* $(,)?) => {
        $crate::plugin_entry!(fn __hsm_plugin_entry_of_this_library for $ty $(, $iface)*);
        $crate::export_plugin!(entry = __hsm_plugin_entry_of_this_library);
    };
}

/// Defines `$name`, an entry function of type `hsm_api::HsmPluginEntryFn` that hands out
/// `$ty`'s plugin table (interfaces as for [`export_plugin!`]), without exporting any symbol.
///
/// A backend library defines its entry with it; its plugin crate exports that entry with
/// `export_plugin!(entry = ...)`, and a host that links the library in calls the same function
/// instead of `dlsym`, so a builtin backend goes through the very table validation a loaded
/// one does:
///
/// ```
/// # use hsm_plugin_sdk::{HsmError, HsmPlugin, PluginConfig, PluginInfo, SymmetricKeyHsm};
/// # pub struct MyHsm;
/// # impl HsmPlugin for MyHsm {
/// #     const INFO: PluginInfo =
/// #         PluginInfo { name: "my-hsm", version: "1", vendor: "x", description: "x" };
/// #     fn create(_: &PluginConfig) -> Result<Self, HsmError> { Ok(MyHsm) }
/// # }
/// # impl SymmetricKeyHsm for MyHsm {
/// #     fn registration_id(&self) -> Result<String, HsmError> { Ok("d".into()) }
/// #     fn sign(&self, _: &[u8]) -> Result<Vec<u8>, HsmError> { Ok(vec![0; 32]) }
/// #     fn import_key(&self, _: Option<&str>, _: &[u8]) -> Result<(), HsmError> { Ok(()) }
/// # }
/// hsm_plugin_sdk::plugin_entry!(
///     /// The plugin table of `MyHsm`, for a host that links this library in.
///     pub fn plugin_entry for MyHsm, symmetric_key
/// );
/// // The plugin crate (cdylib) beside the library is then only:
/// // hsm_plugin_sdk::export_plugin!(entry = my_hsm::plugin_entry);
/// ```
#[macro_export]
macro_rules! plugin_entry {
    ($(#[$meta:meta])* $vis:vis fn $name:ident for $ty:ty $(, $iface:ident)* $(,)?) => {
        $(#[$meta])*
        ///
        /// # Safety
        /// Called with valid pointers, as the hsmkit ABI describes for `hsm_plugin_entry`.
        $vis unsafe extern "C" fn $name(
            host_major: u16,
            host_minor: u16,
            host: *const $crate::hsm_api::HsmHostApi,
            out_table: *mut *const $crate::hsm_api::HsmPluginTable,
        ) -> $crate::hsm_api::HsmStatus {
            // One table per plugin type, built on the first call and handed out ever after.
            static TABLE: ::std::sync::OnceLock<$crate::hsm_api::HsmPluginTable> =
                ::std::sync::OnceLock::new();
            #[allow(unused_mut)]
            let mut interfaces = $crate::ffi::Interfaces::NONE;
            $( $crate::__hsm_register_interface!($iface, $ty, interfaces); )*
            // SAFETY: the caller guarantees the pointers per the ABI contract.
            unsafe {
                $crate::ffi::entry::<$ty>(host_major, host_minor, host, out_table, &TABLE, interfaces)
            }
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __hsm_register_interface {
    (tpm, $ty:ty, $ifaces:ident) => {{
        static TPM_TABLE: $crate::hsm_api::HsmTpmTable = $crate::ffi::tpm::table::<$ty>();
        $ifaces.tpm = &TPM_TABLE;
    }};
    (x509, $ty:ty, $ifaces:ident) => {{
        static X509_TABLE: $crate::hsm_api::HsmX509Table = $crate::ffi::x509::table::<$ty>();
        $ifaces.x509 = &X509_TABLE;
    }};
    (symmetric_key, $ty:ty, $ifaces:ident) => {{
        static SYMMETRIC_KEY_TABLE: $crate::hsm_api::HsmSymmetricKeyTable =
            $crate::ffi::symmetric_key::table::<$ty>();
        $ifaces.symmetric_key = &SYMMETRIC_KEY_TABLE;
    }};
    (operational_key, $ty:ty, $ifaces:ident) => {{
        static OPERATIONAL_KEY_TABLE: $crate::hsm_api::HsmOperationalKeyTable =
            $crate::ffi::operational_key::table::<$ty>();
        $ifaces.operational_key = &OPERATIONAL_KEY_TABLE;
    }};
    ($other:ident, $ty:ty, $ifaces:ident) => {
        compile_error!(concat!(
            "unknown hsmkit interface `",
            stringify!($other),
            "`: expected tpm, x509, symmetric_key or operational_key"
        ));
    };
}
