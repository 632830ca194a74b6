//! The function tables: host callbacks, the plugin table and one table per interface.

use crate::{HsmBuffer, HsmInstance, HsmKeyValue, HsmSlice, HsmStaticStr, HsmStatus};
use abi_stable::StableAbi;
use std::mem::{offset_of, size_of};

/// First member of every table: lets a reader of another version know what it holds.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub struct HsmTableHeader {
    /// ABI major version the table was built for.
    pub abi_major: u16,
    /// ABI minor version the table was built for.
    pub abi_minor: u16,
    /// `sizeof` the table as its author compiled it; entries beyond it do not exist.
    pub struct_size: u32,
}

impl HsmTableHeader {
    /// The header for a table of type `T` at this crate's ABI version.
    pub const fn current<T>() -> Self {
        HsmTableHeader {
            abi_major: crate::HSM_ABI_MAJOR,
            abi_minor: crate::HSM_ABI_MINOR,
            struct_size: std::mem::size_of::<T>() as u32,
        }
    }
}

/// Callbacks the host offers every plugin. Valid for the life of the process.
#[repr(C)]
#[derive(StableAbi)]
pub struct HsmHostApi {
    /// Version and size of this table.
    pub header: HsmTableHeader,
    /// Writes one log line through the host's logger. `level` is one of the `HSM_LOG_*`
    /// constants; `message` is UTF-8 and must never contain a secret. May be called from
    /// any thread.
    pub log: Option<extern "C" fn(level: u32, message: HsmSlice)>,
}

/// The entry symbol's signature. `host_major`/`host_minor` are the versions the host speaks,
/// `host` its callbacks. The plugin writes its table to `*out_table` (even on a major
/// mismatch, so that the host can name the plugin's version) and returns `HSM_OK`,
/// `HSM_ERR_ABI_MISMATCH`, or another error (then the host reads no message: the entry has
/// no instance).
pub type HsmPluginEntryFn = unsafe extern "C" fn(
    host_major: u16,
    host_minor: u16,
    host: *const HsmHostApi,
    out_table: *mut *const HsmPluginTable,
) -> HsmStatus;

/// Signature of [`crate::HSM_LAYOUT_SYMBOL`]: returns the abi_stable layout of the plugin's
/// [`HsmPluginTable`] and the ABI minor it was built with.
pub type HsmLayoutFn =
    unsafe extern "C" fn(out_minor: *mut u16) -> &'static abi_stable::type_layout::TypeLayout;

/// The plugin's root table, returned by the entry symbol. Static for the life of the process.
#[repr(C)]
#[derive(StableAbi)]
pub struct HsmPluginTable {
    /// Version and size of this table.
    pub header: HsmTableHeader,
    /// Short name used to select the plugin (`dice`, `tpm-sim`, `pkcs11`, ...).
    pub name: HsmStaticStr,
    /// Plugin version, free form (semver recommended).
    pub version: HsmStaticStr,
    /// Who made it.
    pub vendor: HsmStaticStr,
    /// One line saying what it is.
    pub description: HsmStaticStr,
    /// `HSM_CAP_*` bits of the interfaces this plugin implements.
    pub capabilities: u32,
    /// `HSM_THREADING_*`: whether one instance may be called concurrently.
    pub threading: u32,
    /// Creates an instance from `config_len` settings (`config` may be NULL when
    /// `config_len` is 0). On success writes the instance to `*out_instance` and leaves
    /// `*out_error` empty. On failure leaves `*out_instance` as the host set it (NULL) and may
    /// write a readable message to `*out_error` (the host releases it with `release_buffer`).
    ///
    /// `out_error` may be NULL: then no message is written. `out_instance` is never NULL
    /// from hsmkit; answer a NULL one with `HSM_ERR_INVALID_ARGUMENT`, never a crash (the
    /// conformance harness checks it).
    ///
    /// Settings: the keys the plugin declares in `settings` (ABI 1.1), plus `state_dir`.
    /// `state_dir` is always passed and always valid: hsmkit and hsm-conformance always pass
    /// it, the folder (private to the user running the host) where the plugin keeps what must
    /// survive the process, so every plugin accepts that key even if it stores nothing. A
    /// device identity (key, certificate, imported or activated key) must outlive the process:
    /// `hsmkit enroll-info` and `hsmkit provision` run in different processes, possibly across
    /// a reboot. Keep it under `state_dir` (files mode 0600, written atomically), not in memory.
    ///
    /// Unknown keys: a plugin refuses a key it does not know (one that is neither `state_dir`
    /// nor in `settings`) with `HSM_ERR_INVALID_ARGUMENT` and a message naming the key and the
    /// valid ones, for example "unknown setting `bogus`; valid settings: tcti, state_dir", so
    /// that a typo is an error instead of a silently different device. The Rust SDK does this
    /// from the settings a plugin declares, before the plugin's own `create` runs; a C plugin
    /// does it by hand (see plugin-sdk/examples/c-plugin). hsm-conformance checks it
    /// (`lifecycle.unknown-setting-refused`) for every plugin, ABI 1.0 ones included: the
    /// rule is about `create`, which 1.0 has, and only the plugin knows its keys.
    pub create: unsafe extern "C" fn(
        config: *const HsmKeyValue,
        config_len: usize,
        out_instance: *mut *mut HsmInstance,
        out_error: *mut HsmBuffer,
    ) -> HsmStatus,
    /// Destroys an instance. NULL is a no-op.
    pub destroy: unsafe extern "C" fn(instance: *mut HsmInstance),
    /// Copies the message of the last call on this instance that failed on the calling thread
    /// into `*out_message` (UTF-8, release it with `release_buffer`) and returns `HSM_OK`.
    /// Call it from the thread whose call failed, before that thread's next call on the
    /// instance: a concurrent plugin may keep messages per thread.
    ///
    /// When no call failed (on this thread, on this instance) it returns `HSM_OK` with
    /// `*out_message` empty (`data` NULL, `len` 0); hosts show an empty message as "the
    /// plugin gave no message". A NULL `instance` or `out_message` gets
    /// `HSM_ERR_INVALID_ARGUMENT`.
    pub last_error:
        unsafe extern "C" fn(instance: *mut HsmInstance, out_message: *mut HsmBuffer) -> HsmStatus,
    /// Releases a buffer this plugin produced, wiping it when it may hold a secret, and
    /// leaves it empty. An empty buffer (`data` NULL) and a NULL `buffer` are no-ops. May be
    /// called from any thread, concurrently with other calls, and after the instance that
    /// produced the buffer was destroyed.
    pub release_buffer: unsafe extern "C" fn(buffer: *mut HsmBuffer),
    /// TPM interface, or NULL.
    pub tpm: *const HsmTpmTable,
    /// X.509 interface, or NULL.
    pub x509: *const HsmX509Table,
    /// Symmetric-key interface, or NULL.
    pub symmetric_key: *const HsmSymmetricKeyTable,
    /// ABI 1.1: the settings `create` accepts besides `state_dir`, `settings_len` entries
    /// (NULL when `settings_len` is 0: a plugin without settings of its own). Every key the
    /// plugin reads is declared here, each once, and every other key is refused by `create`
    /// (see `create`). `state_dir` is always passed and always valid; it need not be declared.
    /// Hosts show the list (`hsmkit plugins info`, `hsm-conformance --list-settings`).
    ///
    /// Exists only when `header.abi_minor >= 1`; a host reading an ABI 1.0 table (whose
    /// `struct_size` ends before this entry) reports its settings as not declared.
    pub settings: *const HsmSetting,
    /// ABI 1.1: the number of entries at `settings`.
    pub settings_len: usize,
    /// ABI 1.2: operational-key interface, or NULL (the plugin cannot hold an operational
    /// key). No capability bit announces it: the non-NULL entry is the declaration, so a 1.0
    /// or 1.1 host never meets a capability bit it does not know.
    ///
    /// Exists only when `header.abi_minor >= 2`; a host reading an older table (whose
    /// `struct_size` ends before this entry) treats it as NULL.
    pub operational_key: *const HsmOperationalKeyTable,
}

impl HsmPluginTable {
    /// `struct_size` of an ABI 1.0 plugin table: the entries up to and including
    /// `symmetric_key`. Every 1.x table is at least this large.
    pub const SIZE_1_0: usize = offset_of!(HsmPluginTable, settings);
    /// `struct_size` of an ABI 1.1 plugin table: 1.0's entries, then `settings` and
    /// `settings_len`.
    pub const SIZE_1_1: usize = offset_of!(HsmPluginTable, settings_len) + size_of::<usize>();
    /// `struct_size` of an ABI 1.2 plugin table: 1.1's entries, then `operational_key`.
    pub const SIZE_1_2: usize =
        offset_of!(HsmPluginTable, operational_key) + size_of::<*const HsmOperationalKeyTable>();

    /// Whether a plugin table with this header has the 1.1 `settings` entries: built for
    /// minor 1 or later and large enough to hold them.
    pub const fn has_settings(header: &HsmTableHeader) -> bool {
        header.abi_minor >= 1 && header.struct_size as usize >= Self::SIZE_1_1
    }

    /// Whether a plugin table with this header has the 1.2 `operational_key` entry: built for
    /// minor 2 or later and large enough to hold it.
    pub const fn has_operational_key(header: &HsmTableHeader) -> bool {
        header.abi_minor >= 2 && header.struct_size as usize >= Self::SIZE_1_2
    }

    /// The number of bytes of a table with this header that hold entries this reader knows:
    /// the size of the newest layout, among those this crate defines, that the table has.
    pub const fn known_size(header: &HsmTableHeader) -> usize {
        if Self::has_operational_key(header) {
            Self::SIZE_1_2
        } else if Self::has_settings(header) {
            Self::SIZE_1_1
        } else {
            Self::SIZE_1_0
        }
    }

    /// The plugin table as the reader's `HsmPluginTable`: the plugin's own static table when it
    /// has every entry the reader knows (minor 2 or later), else a copy of the entries its minor
    /// has, the later ones zero (`settings` NULL and `settings_len` 0 for 1.0,
    /// `operational_key` NULL for 1.0 and 1.1), kept for the process like the plugin. An older
    /// table is smaller than ours, and reading it as ours would read past its end.
    ///
    /// # Safety
    /// `table` is a plugin table of this major whose function entries are non-NULL and whose
    /// `struct_size` covers its minor's entries (hsmkit's loader checks both before calling this).
    pub unsafe fn in_current_layout(table: *const HsmPluginTable) -> &'static HsmPluginTable {
        // SAFETY: the header is part of every table.
        let header = unsafe { std::ptr::read(table.cast::<HsmTableHeader>()) };
        let known = HsmPluginTable::known_size(&header);
        if known == size_of::<HsmPluginTable>() {
            // SAFETY: per the caller, with every entry of the reader's table present; the table is
            // static for the process.
            return unsafe { &*table };
        }
        let mut copy = Box::new(std::mem::MaybeUninit::<HsmPluginTable>::zeroed());
        // SAFETY: the plugin's table holds at least `known` bytes (its header says so and the
        // caller's contract covers its minor's entries); the copy is a distinct allocation of
        // size_of::<HsmPluginTable>() > known.
        unsafe {
            std::ptr::copy_nonoverlapping(table.cast::<u8>(), copy.as_mut_ptr().cast::<u8>(), known)
        };
        // SAFETY: the entries of the plugin's minor were copied, their function pointers are
        // non-NULL (caller's contract), and the rest is zero: NULL `settings` with `settings_len`
        // 0 and a NULL `operational_key` are valid.
        let copy = unsafe { copy.assume_init() };
        Box::leak(copy)
    }
}

/// ABI 1.1: one setting a plugin's `create` accepts, as the plugin declares it in
/// [`HsmPluginTable::settings`]. Static for the life of the process.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy)]
pub struct HsmSetting {
    /// The key, as passed to `create` (`tcti`, `registration_id`...): non-empty ASCII letters,
    /// digits and `_`, `-` or `.`.
    pub name: HsmStaticStr,
    /// What it is, on one line (no line breaks), with its default when it has one.
    pub description: HsmStaticStr,
    /// 1 when `create` refuses to start without it, 0 when it is optional.
    pub required: u32,
}

// SAFETY: a declaration is immutable static data (pointers to string literals), so sharing
// or moving it between threads cannot race.
unsafe impl Sync for HsmSetting {}
// SAFETY: as above.
unsafe impl Send for HsmSetting {}

// SAFETY: the table is immutable static data (string literals and function pointers); the
// raw pointers it holds point to other immutable statics, so sharing or moving it between
// threads cannot race.
unsafe impl Sync for HsmPluginTable {}
// SAFETY: as above.
unsafe impl Send for HsmPluginTable {}

/// TPM attestation as DPS uses it.
#[repr(C)]
#[derive(StableAbi)]
pub struct HsmTpmTable {
    /// Version and size of this table.
    pub header: HsmTableHeader,
    /// Endorsement key as a marshalled `TPM2B_PUBLIC` (2-byte big-endian size + TPMT_PUBLIC).
    /// Stable for the life of the device.
    pub get_endorsement_key:
        unsafe extern "C" fn(instance: *mut HsmInstance, out_key: *mut HsmBuffer) -> HsmStatus,
    /// Storage root key as a marshalled `TPM2B_PUBLIC`.
    pub get_storage_root_key:
        unsafe extern "C" fn(instance: *mut HsmInstance, out_key: *mut HsmBuffer) -> HsmStatus,
    /// Activates and stores the identity key from a DPS `authenticationKey` blob
    /// (credential blob, EK-encrypted secret, duplicate, SRK-encrypted seed, public).
    /// A later call replaces the key.
    pub activate_identity_key:
        unsafe extern "C" fn(instance: *mut HsmInstance, blob: HsmSlice) -> HsmStatus,
    /// HMAC-SHA256 of `data` with the identity key (32 bytes out). `HSM_ERR_INVALID_STATE`
    /// before any identity key was activated.
    pub sign_with_identity: unsafe extern "C" fn(
        instance: *mut HsmInstance,
        data: HsmSlice,
        out_signature: *mut HsmBuffer,
    ) -> HsmStatus,
}

// SAFETY: immutable static data, see HsmPluginTable.
unsafe impl Sync for HsmTpmTable {}

/// X.509 attestation: a certificate chain and a device key that signs in place.
#[repr(C)]
#[derive(StableAbi)]
pub struct HsmX509Table {
    /// Version and size of this table.
    pub header: HsmTableHeader,
    /// Certificate chain as PEM, leaf first (UTF-8, no terminating NUL counted in `len`).
    pub get_certificate_chain:
        unsafe extern "C" fn(instance: *mut HsmInstance, out_pem: *mut HsmBuffer) -> HsmStatus,
    /// Common name of the leaf: the DPS registration id.
    pub get_common_name:
        unsafe extern "C" fn(instance: *mut HsmInstance, out_name: *mut HsmBuffer) -> HsmStatus,
    /// Signs `digest` with the leaf's private key using `algorithm` (`HSM_SIGN_*`); the
    /// signature is DER for ECDSA and the raw modulus-sized block for RSA.
    pub sign_digest: unsafe extern "C" fn(
        instance: *mut HsmInstance,
        algorithm: u32,
        digest: HsmSlice,
        out_signature: *mut HsmBuffer,
    ) -> HsmStatus,
    /// Exports the leaf private key as PKCS#8 PEM where the backend and its configuration
    /// allow it; `HSM_ERR_NOT_SUPPORTED` otherwise (the default everywhere).
    pub export_private_key:
        unsafe extern "C" fn(instance: *mut HsmInstance, out_pem: *mut HsmBuffer) -> HsmStatus,
}

// SAFETY: immutable static data, see HsmPluginTable.
unsafe impl Sync for HsmX509Table {}

/// Symmetric-key attestation: an HMAC key held inside the plugin.
#[repr(C)]
#[derive(StableAbi)]
pub struct HsmSymmetricKeyTable {
    /// Version and size of this table.
    pub header: HsmTableHeader,
    /// The DPS registration id this key belongs to (UTF-8).
    pub get_registration_id:
        unsafe extern "C" fn(instance: *mut HsmInstance, out_id: *mut HsmBuffer) -> HsmStatus,
    /// HMAC-SHA256 of `data` with the held key (32 bytes out). `HSM_ERR_NOT_FOUND` when no
    /// key is held yet.
    pub sign: unsafe extern "C" fn(
        instance: *mut HsmInstance,
        data: HsmSlice,
        out_signature: *mut HsmBuffer,
    ) -> HsmStatus,
    /// Stores `key` (raw bytes, not base64) as the held key, replacing any previous one, for
    /// `registration_id` (empty = keep the current one). The plugin copies both.
    pub import_key: unsafe extern "C" fn(
        instance: *mut HsmInstance,
        registration_id: HsmSlice,
        key: HsmSlice,
    ) -> HsmStatus,
}

// SAFETY: immutable static data, see HsmPluginTable.
unsafe impl Sync for HsmSymmetricKeyTable {}

/// ABI 1.2: an operational key, a P-256 key pair made and kept inside the HSM under a label,
/// that signs the CSR for a certificate DPS issues during provisioning and then authenticates
/// the device to IoT Hub; and the issued chain, kept beside it. The private key never leaves
/// the plugin.
///
/// Labels: 1 to 64 ASCII letters, digits, `-`, `_` or `.` (see
/// `hsm_api::is_valid_operational_key_label`); anything else gets `HSM_ERR_INVALID_ARGUMENT`.
/// A key and its chain outlive the process (kept under `state_dir` or in the HSM).
#[repr(C)]
#[derive(StableAbi)]
pub struct HsmOperationalKeyTable {
    /// Version and size of this table.
    pub header: HsmTableHeader,
    /// Creates a P-256 key pair under `label`, or finds the one already there (the same key on
    /// every call and run until `delete_key`), and writes its public key as a DER
    /// SubjectPublicKeyInfo (id-ecPublicKey, prime256v1) to `*out_public_key`.
    pub create_key: unsafe extern "C" fn(
        instance: *mut HsmInstance,
        label: HsmSlice,
        out_public_key: *mut HsmBuffer,
    ) -> HsmStatus,
    /// The public key under `label`, as `create_key` writes it, without creating one:
    /// `HSM_ERR_NOT_FOUND` when there is none. (A backend that derives its keys rather than
    /// storing them, such as dice, has one for every label.)
    pub get_public_key: unsafe extern "C" fn(
        instance: *mut HsmInstance,
        label: HsmSlice,
        out_public_key: *mut HsmBuffer,
    ) -> HsmStatus,
    /// ECDSA P-256 signature of `digest` (a 32-byte SHA-256 digest, anything else is
    /// `HSM_ERR_INVALID_ARGUMENT`) with the key under `label`, DER-encoded (`Ecdsa-Sig-Value`),
    /// as `HsmX509Table.sign_digest` returns ECDSA signatures. `HSM_ERR_NOT_FOUND` without a key.
    pub sign_digest: unsafe extern "C" fn(
        instance: *mut HsmInstance,
        label: HsmSlice,
        digest: HsmSlice,
        out_signature: *mut HsmBuffer,
    ) -> HsmStatus,
    /// Stores `pem` (the issued chain as PEM, leaf first, UTF-8) beside the key under `label`,
    /// replacing any earlier chain. `HSM_ERR_NOT_FOUND` without a key. The plugin copies it.
    pub store_chain: unsafe extern "C" fn(
        instance: *mut HsmInstance,
        label: HsmSlice,
        pem: HsmSlice,
    ) -> HsmStatus,
    /// The chain stored under `label`, byte for byte as `store_chain` got it.
    /// `HSM_ERR_NOT_FOUND` when no key or no chain is there.
    pub get_chain: unsafe extern "C" fn(
        instance: *mut HsmInstance,
        label: HsmSlice,
        out_pem: *mut HsmBuffer,
    ) -> HsmStatus,
    /// Removes the key under `label` and its chain (renewal removes the old key only after
    /// the new chain is stored). `HSM_ERR_NOT_FOUND` when there is none. Where the key is
    /// derived rather than stored (dice), only the chain is removed and `create_key` gives the
    /// same key again; a new key needs a new label.
    pub delete_key: unsafe extern "C" fn(instance: *mut HsmInstance, label: HsmSlice) -> HsmStatus,
}

// SAFETY: immutable static data, see HsmPluginTable.
unsafe impl Sync for HsmOperationalKeyTable {}

// The layouts are append-only: each minor's size is the offset of the next minor's first entry,
// and the newest is the whole table, so that `known_size` returning the full size means "ours".
const _: () = {
    assert!(HsmPluginTable::SIZE_1_0 == offset_of!(HsmPluginTable, settings));
    assert!(HsmPluginTable::SIZE_1_1 == offset_of!(HsmPluginTable, operational_key));
    assert!(HsmPluginTable::SIZE_1_2 == size_of::<HsmPluginTable>());
};
