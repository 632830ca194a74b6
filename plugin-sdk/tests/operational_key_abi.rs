//! The operational-key interface (ABI 1.2) through the SDK's tables: a plugin built with it
//! still loads in a host that knows only the 1.1 table, and the SDK refuses bad labels and
//! digests before the plugin's code runs.

use hsm_plugin_sdk::hsm_api::*;
use hsm_plugin_sdk::{
    HsmError, HsmPlugin, OperationalKeyHsm, PluginConfig, PluginInfo, SymmetricKeyHsm,
};
use std::mem::size_of;
use std::sync::Mutex;

/// What reached the plugin, so a test can tell the SDK refused a call before it. Only one
/// test makes calls that record.
static CALLS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// A plugin that records the operational-key calls that reach it.
struct Recorder;

impl HsmPlugin for Recorder {
    const INFO: PluginInfo = PluginInfo {
        name: "recorder",
        version: "0.0.0",
        vendor: "tests",
        description: "records operational-key calls",
    };

    fn create(_config: &PluginConfig) -> Result<Self, HsmError> {
        Ok(Recorder)
    }
}

impl Recorder {
    fn record(&self, call: String) {
        let _ = self;
        CALLS.lock().unwrap_or_else(|e| e.into_inner()).push(call);
    }
}

impl SymmetricKeyHsm for Recorder {
    fn registration_id(&self) -> Result<String, HsmError> {
        Ok("recorder-device".into())
    }
    fn sign(&self, data: &[u8]) -> Result<Vec<u8>, HsmError> {
        Ok(data.to_vec())
    }
    fn import_key(&self, _: Option<&str>, _: &[u8]) -> Result<(), HsmError> {
        Err(HsmError::not_supported("fixed"))
    }
}

impl OperationalKeyHsm for Recorder {
    fn create_operational_key(&self, label: &str) -> Result<Vec<u8>, HsmError> {
        self.record(format!("create {label}"));
        Ok(b"spki".to_vec())
    }
    fn operational_public_key(&self, label: &str) -> Result<Vec<u8>, HsmError> {
        self.record(format!("public {label}"));
        Err(HsmError::not_found("no key"))
    }
    fn sign_operational_digest(&self, label: &str, digest: &[u8; 32]) -> Result<Vec<u8>, HsmError> {
        self.record(format!("sign {label}"));
        Ok(digest.to_vec())
    }
    fn store_operational_chain(&self, label: &str, pem: &str) -> Result<(), HsmError> {
        self.record(format!("store {label} {}", pem.len()));
        Ok(())
    }
    fn operational_chain(&self, label: &str) -> Result<String, HsmError> {
        self.record(format!("chain {label}"));
        Ok("PEM".into())
    }
}

hsm_plugin_sdk::plugin_entry!(
    /// The recorder's table.
    fn recorder_entry for Recorder, symmetric_key, operational_key
);

hsm_plugin_sdk::plugin_entry!(
    /// A plugin without the interface.
    fn plain_entry for Recorder, symmetric_key
);

/// `HsmPluginTable` exactly as ABI 1.1 defined it, frozen here: what a host built against
/// hsm-api 1.1 reads.
#[repr(C)]
struct PluginTableV1_1 {
    header: HsmTableHeader,
    name: HsmStaticStr,
    version: HsmStaticStr,
    vendor: HsmStaticStr,
    description: HsmStaticStr,
    capabilities: u32,
    threading: u32,
    create: unsafe extern "C" fn(
        *const HsmKeyValue,
        usize,
        *mut *mut HsmInstance,
        *mut HsmBuffer,
    ) -> HsmStatus,
    destroy: unsafe extern "C" fn(*mut HsmInstance),
    last_error: unsafe extern "C" fn(*mut HsmInstance, *mut HsmBuffer) -> HsmStatus,
    release_buffer: unsafe extern "C" fn(*mut HsmBuffer),
    tpm: *const HsmTpmTable,
    x509: *const HsmX509Table,
    symmetric_key: *const HsmSymmetricKeyTable,
    settings: *const HsmSetting,
    settings_len: usize,
}

fn table_of(entry: HsmPluginEntryFn, host_minor: u16) -> *const HsmPluginTable {
    let mut table: *const HsmPluginTable = std::ptr::null();
    // SAFETY: no host callbacks (NULL is allowed) and a writable out slot.
    let status = unsafe { entry(HSM_ABI_MAJOR, host_minor, std::ptr::null(), &mut table) };
    assert_eq!(status, HSM_OK);
    assert!(!table.is_null());
    table
}

#[test]
fn a_1_2_plugin_loads_in_a_host_that_reads_only_the_1_1_table() {
    let table = table_of(recorder_entry, 1);
    // SAFETY: the header starts every table.
    let header = unsafe { std::ptr::read(table.cast::<HsmTableHeader>()) };
    assert_eq!((header.abi_major, header.abi_minor), (1, 2));
    assert_eq!(header.struct_size as usize, HsmPluginTable::SIZE_1_2);
    // What a 1.1 host checks before reading its view: the table is at least its size.
    assert_eq!(size_of::<PluginTableV1_1>(), HsmPluginTable::SIZE_1_1);
    assert!(header.struct_size as usize >= size_of::<PluginTableV1_1>());
    // SAFETY: the table is at least as large as the 1.1 view (checked just above) and static.
    let old = unsafe { &*table.cast::<PluginTableV1_1>() };
    assert_eq!(
        old.capabilities, HSM_CAP_SYMMETRIC_KEY,
        "no new capability bit"
    );
    assert!(old.tpm.is_null() && old.x509.is_null() && old.settings_len == 0);
    assert!(!old.settings.is_null() || old.settings_len == 0);
    let mut instance: *mut HsmInstance = std::ptr::null_mut();
    // SAFETY: no settings, writable out slots, as `create` asks.
    let status = unsafe { (old.create)(std::ptr::null(), 0, &mut instance, std::ptr::null_mut()) };
    assert_eq!(status, HSM_OK);
    // SAFETY: a non-NULL symmetric-key table is static and valid.
    let sym = unsafe { &*old.symmetric_key };
    let mut out = HsmBuffer::EMPTY;
    // SAFETY: live instance, writable buffer.
    let status = unsafe { (sym.get_registration_id)(instance, &mut out) };
    assert_eq!(status, HSM_OK);
    // SAFETY: a buffer the plugin wrote with HSM_OK holds `len` bytes.
    let id = unsafe { std::slice::from_raw_parts(out.data, out.len) }.to_vec();
    // SAFETY: the plugin's buffer, released once.
    unsafe { (old.release_buffer)(&mut out) };
    assert_eq!(id, b"recorder-device");
    // SAFETY: made above, not used after.
    unsafe { (old.destroy)(instance) };
}

#[test]
fn the_table_announces_the_interface_by_its_entry_only() {
    // SAFETY: static tables from the entries, header-checked 1.2 (`has_operational_key`).
    let with = unsafe { &*table_of(recorder_entry, HSM_ABI_MINOR) };
    // SAFETY: as above.
    let without = unsafe { &*table_of(plain_entry, HSM_ABI_MINOR) };
    assert!(HsmPluginTable::has_operational_key(&with.header));
    assert!(!with.operational_key.is_null());
    assert!(without.operational_key.is_null());
    assert_eq!(with.capabilities, without.capabilities);
}

/// Calls `f` on a fresh instance of the recorder, then returns what reached the plugin.
fn with_instance(f: impl FnOnce(&HsmOperationalKeyTable, *mut HsmInstance)) -> Vec<String> {
    // SAFETY: a static table from the entry, 1.2 (checked in the test above).
    let table = unsafe { &*table_of(recorder_entry, HSM_ABI_MINOR) };
    // SAFETY: non-NULL for this plugin.
    let ops = unsafe { &*table.operational_key };
    let mut instance: *mut HsmInstance = std::ptr::null_mut();
    // SAFETY: as in the 1.1 test.
    let status =
        unsafe { (table.create)(std::ptr::null(), 0, &mut instance, std::ptr::null_mut()) };
    assert_eq!(status, HSM_OK);
    f(ops, instance);
    let calls = CALLS.lock().unwrap_or_else(|e| e.into_inner()).clone();
    // SAFETY: made above, not used after.
    unsafe { (table.destroy)(instance) };
    calls
}

#[test]
fn bad_labels_digests_and_chains_are_refused_before_the_plugin_runs() {
    let calls = with_instance(|ops, i| {
        let mut out = HsmBuffer::EMPTY;
        for label in ["", "../x", "a b", &"l".repeat(65)] {
            // SAFETY: live instance, borrowed label, writable buffer.
            let s =
                unsafe { (ops.create_key)(i, HsmSlice::from_bytes(label.as_bytes()), &mut out) };
            assert_eq!(s, HSM_ERR_INVALID_ARGUMENT, "{label:?}");
            assert!(out.data.is_null());
        }
        let label = HsmSlice::from_bytes(b"op");
        // SAFETY: as above.
        let s = unsafe { (ops.sign_digest)(i, label, HsmSlice::from_bytes(&[0; 31]), &mut out) };
        assert_eq!(s, HSM_ERR_INVALID_ARGUMENT);
        // SAFETY: as above.
        let s = unsafe { (ops.store_chain)(i, label, HsmSlice::from_bytes(&[0xff, 0xfe])) };
        assert_eq!(s, HSM_ERR_INVALID_ARGUMENT);
        // SAFETY: as above.
        let s = unsafe { (ops.store_chain)(i, label, HsmSlice::EMPTY) };
        assert_eq!(s, HSM_ERR_INVALID_ARGUMENT);
        // The default delete says the plugin cannot.
        // SAFETY: as above.
        let s = unsafe { (ops.delete_key)(i, label) };
        assert_eq!(s, HSM_ERR_NOT_SUPPORTED);
        // A good call reaches the plugin.
        // SAFETY: as above.
        let s = unsafe { (ops.sign_digest)(i, label, HsmSlice::from_bytes(&[7; 32]), &mut out) };
        assert_eq!(s, HSM_OK);
        assert_eq!(out.len, 32);
        // SAFETY: the SDK's own buffer.
        unsafe { hsm_plugin_sdk::ffi::release_buffer(&mut out) };
    });
    assert_eq!(calls, ["sign op"]);
}
