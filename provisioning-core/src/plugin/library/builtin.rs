//! Backends linked into this build instead of loaded from files (the `builtin-*` features).
//!
//! Each backend library defines its entry function with the SDK's `plugin_entry!` and exports
//! no symbol, so any number of them link into one binary; the host calls the function where
//! it would otherwise have called the `hsm_plugin_entry` it found with `dlsym`.

use hsm_api::{HsmPluginEntryFn, HsmPluginTable, HSM_ABI_MINOR};

/// Selection name and entry function of every backend linked into this build, in the order
/// `hsmkit plugins list` shows them.
pub(super) const BACKENDS: &[(&str, HsmPluginEntryFn)] = &[
    #[cfg(feature = "builtin-dice")]
    ("dice", hsmkit_backend_dice::plugin_entry),
    #[cfg(feature = "builtin-tpm-sim")]
    ("tpm-sim", hsmkit_backend_tpm_sim::plugin_entry),
    #[cfg(feature = "builtin-tpm2")]
    ("tpm2", hsmkit_backend_tpm2::plugin_entry),
    #[cfg(feature = "builtin-pkcs11")]
    ("pkcs11", hsmkit_backend_pkcs11::plugin_entry),
    #[cfg(feature = "builtin-symmetric")]
    ("symmetric", hsmkit_backend_symmetric::plugin_entry),
];

/// The layout export of a builtin backend: it was compiled against this very `hsm-api`, so
/// its tables have the host's layout, and the loader's layout check runs on that.
///
/// # Safety
/// `out_minor` is NULL or valid for one write.
pub(super) unsafe extern "C" fn layout(
    out_minor: *mut u16,
) -> &'static abi_stable::type_layout::TypeLayout {
    if !out_minor.is_null() {
        // SAFETY: checked non-NULL; the caller guarantees it is writable.
        unsafe { *out_minor = HSM_ABI_MINOR };
    }
    <HsmPluginTable as abi_stable::StableAbi>::LAYOUT
}
