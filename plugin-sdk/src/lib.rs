//! What an HSM vendor writes against to make an hsmkit plugin in Rust.
//!
//! Implement [`HsmPlugin`] for your instance type, plus one trait per interface you offer
//! ([`TpmHsm`], [`X509Hsm`], [`SymmetricKeyHsm`]), then export it once:
//!
//! ```ignore
//! use hsm_plugin_sdk::{export_plugin, HsmError, HsmPlugin, PluginConfig, PluginInfo, SymmetricKeyHsm};
//!
//! pub struct MyHsm { /* device handle */ }
//!
//! impl HsmPlugin for MyHsm {
//!     const INFO: PluginInfo = PluginInfo {
//!         name: "my-hsm", version: "1.0.0", vendor: "Example Corp", description: "Example HSM",
//!     };
//!     fn create(config: &PluginConfig) -> Result<Self, HsmError> { Ok(MyHsm {}) }
//! }
//! impl SymmetricKeyHsm for MyHsm { /* ... */ }
//!
//! export_plugin!(MyHsm, symmetric_key);
//! ```
//!
//! The macro generates the `hsm_plugin_entry` symbol, the function tables, the abi_stable
//! layout export, panic catching, buffer ownership and error mapping: a panic in your code
//! becomes `HSM_ERR_PANIC` with the panic message, never an unwind across the C boundary.

#![deny(missing_docs)]

mod config;
mod error;
#[doc(hidden)]
pub mod ffi;
pub mod log;
pub mod secret_file;
pub mod sync;
mod traits;

pub use config::PluginConfig;
pub use error::{ErrorCode, HsmError};
pub use traits::{HsmPlugin, PluginInfo, SignAlgorithm, SymmetricKeyHsm, TpmHsm, X509Hsm};

/// The raw ABI, re-exported so that macro expansions and C-level tests need only this crate.
pub use hsm_api;

/// Exports `$ty` (which implements [`HsmPlugin`]) as this library's plugin, with the listed
/// interfaces: any of `tpm`, `x509`, `symmetric_key`. Use it exactly once per cdylib.
#[macro_export]
macro_rules! export_plugin {
    ($ty:ty $(, $iface:ident)* $(,)?) => {
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
            static TABLE: ::std::sync::OnceLock<$crate::hsm_api::HsmPluginTable> =
                ::std::sync::OnceLock::new();
            #[allow(unused_mut)]
            let mut interfaces = $crate::ffi::Interfaces::NONE;
            $( $crate::__hsm_register_interface!($iface, $ty, interfaces); )*
            // SAFETY: the host guarantees the pointers per the ABI contract.
            unsafe {
                $crate::ffi::entry::<$ty>(host_major, host_minor, host, out_table, &TABLE, interfaces)
            }
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
    ($other:ident, $ty:ty, $ifaces:ident) => {
        compile_error!(concat!(
            "unknown hsmkit interface `",
            stringify!($other),
            "`: expected tpm, x509 or symmetric_key"
        ));
    };
}
