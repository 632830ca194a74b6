//! The stable C ABI spoken between an hsmkit host and an HSM plugin.
//!
//! A plugin is a shared library exporting one entry symbol, [`HSM_ENTRY_SYMBOL`], of type
//! [`HsmPluginEntryFn`]. The host passes the ABI version it speaks and a table of host
//! callbacks; the plugin answers with its [`HsmPluginTable`], which points at one table per
//! interface it implements (TPM, X.509, symmetric key; since 1.2 the operational key).
//!
//! Rules every side keeps (the generated C header `include/hsm_api.h` repeats them):
//! - Every table starts with an [`HsmTableHeader`]. Tables are append-only within a major
//!   version: a reader checks `struct_size` before touching an entry that a smaller (older)
//!   table may not have, and NULL-checks optional entries.
//! - Output buffers are allocated by the plugin and handed back to it through
//!   [`HsmPluginTable::release_buffer`]; neither side frees the other's memory.
//! - Every call returns an [`HsmStatus`]; on failure a readable message is available from
//!   [`HsmPluginTable::last_error`] for that instance.
//! - Panics and C++ exceptions never cross the boundary.
//! - `create` takes the settings the plugin declares ([`HsmPluginTable::settings`], ABI 1.1)
//!   plus `state_dir`, which is always passed and always valid; it refuses any other key with
//!   `HSM_ERR_INVALID_ARGUMENT` naming the key and the valid ones.
//!
//! The types derive [`abi_stable::StableAbi`], so a Rust plugin built with `hsm-plugin-sdk`
//! also exports the layout of [`HsmPluginTable`] under [`HSM_LAYOUT_SYMBOL`] and the host can
//! verify it field by field.
//!
//! Beside the C types, the crate holds their Rust view, so that the SDK, the host and the
//! conformance harness read one definition: [`ErrorCode`] for the statuses (with their C and
//! readable names), [`SignAlgorithm`] for the `HSM_SIGN_*` values and [`CapabilitySet`] for
//! the `HSM_CAP_*` bits.

#![deny(missing_docs)]

use abi_stable::StableAbi;
use std::ffi::{c_char, CStr};

// The Rust-only view stays out of the generated C header (C reads the HSM_* constants it is
// built on); cbindgen would otherwise emit opaque typedefs and blank lines for its constants.
/// cbindgen:ignore
mod capabilities;
/// cbindgen:ignore
mod error_code;
/// cbindgen:ignore
mod operational;
/// cbindgen:ignore
mod sign;
mod status;
mod tables;

pub use capabilities::CapabilitySet;
pub use error_code::{status_name, ErrorCode};
pub use operational::{is_valid_operational_key_label, OPERATIONAL_KEY_LABEL_MAX};
pub use sign::SignAlgorithm;
pub use status::*;
pub use tables::*;

/// ABI major version spoken by this crate. A plugin with another major is refused.
pub const HSM_ABI_MAJOR: u16 = 1;
/// ABI minor version spoken by this crate. Newer minors only append table entries.
///
/// - 1.0: the plugin, TPM, X.509 and symmetric-key tables.
/// - 1.1: `HsmPluginTable.settings` and `settings_len` appended (the settings `create`
///   accepts; unknown keys are refused).
/// - 1.2: `HsmPluginTable.operational_key` appended (an [`HsmOperationalKeyTable`] or NULL:
///   a P-256 key made inside the HSM by label, its public key, digest signing and the issued
///   chain beside it).
pub const HSM_ABI_MINOR: u16 = 2;

/// Name of the one symbol every plugin exports (type [`HsmPluginEntryFn`]), NUL-terminated
/// as `dlsym` wants it.
pub const HSM_ENTRY_SYMBOL_CSTR: &CStr = c"hsm_plugin_entry";
/// [`HSM_ENTRY_SYMBOL_CSTR`] as text, for messages.
pub const HSM_ENTRY_SYMBOL: &str = cstr_text(HSM_ENTRY_SYMBOL_CSTR);
/// Name of the optional symbol a Rust plugin exports (type [`HsmLayoutFn`]): the abi_stable
/// layout of its [`HsmPluginTable`], checked field by field by the host. NUL-terminated.
pub const HSM_LAYOUT_SYMBOL_CSTR: &CStr = c"hsm_plugin_abi_layout";
/// [`HSM_LAYOUT_SYMBOL_CSTR`] as text, for messages.
pub const HSM_LAYOUT_SYMBOL: &str = cstr_text(HSM_LAYOUT_SYMBOL_CSTR);

/// A symbol name as text; the names above are ASCII, so this is checked at compile time and
/// each name is spelled once.
const fn cstr_text(name: &'static CStr) -> &'static str {
    match name.to_str() {
        Ok(text) => text,
        Err(_) => panic!("symbol names are ASCII"),
    }
}

/// A borrowed run of bytes passed into a plugin. `ptr` may be NULL only when `len` is 0.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy)]
pub struct HsmSlice {
    /// First byte, or NULL for an empty slice.
    pub ptr: *const u8,
    /// Number of bytes.
    pub len: usize,
}

impl HsmSlice {
    /// An empty slice (NULL pointer, zero length).
    pub const EMPTY: HsmSlice = HsmSlice {
        ptr: std::ptr::null(),
        len: 0,
    };

    /// Borrows `bytes` for the duration of one call.
    pub fn from_bytes(bytes: &[u8]) -> Self {
        HsmSlice {
            ptr: bytes.as_ptr(),
            len: bytes.len(),
        }
    }
}

/// A buffer allocated by a plugin and owned by the caller until it hands it back through
/// [`HsmPluginTable::release_buffer`]. An empty buffer has a NULL `data` (and `len` 0).
///
/// Output rules for every `out_*` buffer of every table:
/// - The host passes a pointer to an empty buffer (all fields 0); the plugin never reads
///   what it points at, only writes it.
/// - On `HSM_OK` the plugin writes the output.
/// - On any error the plugin leaves the buffer empty, so that a host never sees half an
///   output. (hsmkit still releases a non-empty buffer a failed call left behind.)
/// - Interface calls are never given a NULL output pointer by hsmkit; a plugin answers one
///   with an error (`HSM_ERR_INVALID_ARGUMENT`), never a crash. Only `create`'s `out_error`
///   may legitimately be NULL.
#[repr(C)]
#[derive(StableAbi, Debug)]
pub struct HsmBuffer {
    /// Plugin-allocated bytes, or NULL.
    pub data: *mut u8,
    /// Number of valid bytes.
    pub len: usize,
    /// Plugin-private word (for example an allocation capacity); the host never reads it.
    pub reserved: usize,
}

impl HsmBuffer {
    /// A buffer that owns nothing; what the host passes in before a call.
    pub const EMPTY: HsmBuffer = HsmBuffer {
        data: std::ptr::null_mut(),
        len: 0,
        reserved: 0,
    };
}

/// One configuration setting: UTF-8 key and value, both borrowed for the call.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy)]
pub struct HsmKeyValue {
    /// Setting name, for example `state_dir` or `registration_id`.
    pub key: HsmSlice,
    /// Setting value.
    pub value: HsmSlice,
}

/// Opaque plugin instance. Only the plugin knows what is behind it.
#[repr(C)]
#[derive(StableAbi)]
pub struct HsmInstance {
    _opaque: [u8; 0],
}

/// Pointer to a NUL-terminated static UTF-8 string owned by the plugin.
pub type HsmStaticStr = *const c_char;
