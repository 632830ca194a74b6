//! A minimal host for tests and the benchmark: drives the plugin through its C ABI entry
//! point and function tables, exactly as a host does after `dlsym("hsm_plugin_entry")`.

#![allow(dead_code, unreachable_pub)] // shared by several test binaries, which see it through `pub`

use hsm_plugin_sdk::hsm_api::{
    HsmBuffer, HsmInstance, HsmKeyValue, HsmPluginEntryFn, HsmPluginTable, HsmSlice, HsmStatus,
    HsmX509Table, HSM_ABI_MAJOR, HSM_ABI_MINOR, HSM_OK,
};

/// A failed ABI call: status code and the plugin's message.
#[derive(Debug)]
pub struct AbiError {
    pub status: HsmStatus,
    pub message: String,
}

/// One plugin instance created through the ABI.
pub struct AbiInstance {
    table: &'static HsmPluginTable,
    x509: &'static HsmX509Table,
    instance: *mut HsmInstance,
}

/// The plugin table from an entry point (the linked one, or one found with dlsym).
pub fn plugin_table(entry: HsmPluginEntryFn) -> &'static HsmPluginTable {
    let mut table: *const HsmPluginTable = std::ptr::null();
    // SAFETY: valid out pointer; NULL host table is allowed (no host logger).
    let status = unsafe { entry(HSM_ABI_MAJOR, HSM_ABI_MINOR, std::ptr::null(), &mut table) };
    assert_eq!(status, HSM_OK, "hsm_plugin_entry failed");
    assert!(!table.is_null());
    // SAFETY: the plugin returns a pointer to its static table.
    unsafe { &*table }
}

/// Copies a plugin buffer out and hands it back to the plugin.
fn take(table: &HsmPluginTable, mut buffer: HsmBuffer) -> Vec<u8> {
    let bytes = if buffer.data.is_null() {
        Vec::new()
    } else {
        // SAFETY: the plugin filled `len` bytes at `data`.
        unsafe { std::slice::from_raw_parts(buffer.data, buffer.len) }.to_vec()
    };
    // SAFETY: the buffer came from this plugin and is released once.
    unsafe { (table.release_buffer)(&mut buffer) };
    bytes
}

fn text(bytes: Vec<u8>) -> String {
    let mut s = String::from_utf8(bytes).expect("plugin returned non-UTF-8 text");
    while s.ends_with('\0') {
        s.pop();
    }
    s
}

impl AbiInstance {
    /// `create` with the given settings.
    pub fn create(settings: &[(&str, &str)]) -> Result<Self, AbiError> {
        Self::create_from(plugin_table(hsmkit_backend_dice::plugin_entry), settings)
    }

    /// `create` through a given plugin table.
    pub fn create_from(
        table: &'static HsmPluginTable,
        settings: &[(&str, &str)],
    ) -> Result<Self, AbiError> {
        // SAFETY: the x509 table of a plugin exporting `x509` is a static.
        let x509 = unsafe { table.x509.as_ref() }.expect("no X.509 table");
        let pairs: Vec<HsmKeyValue> = settings
            .iter()
            .map(|(k, v)| HsmKeyValue {
                key: HsmSlice::from_bytes(k.as_bytes()),
                value: HsmSlice::from_bytes(v.as_bytes()),
            })
            .collect();
        let mut instance = std::ptr::null_mut();
        let mut error = HsmBuffer::EMPTY;
        // SAFETY: pointers valid for the call.
        let status =
            unsafe { (table.create)(pairs.as_ptr(), pairs.len(), &mut instance, &mut error) };
        let message = text(take(table, error));
        if status != HSM_OK {
            return Err(AbiError { status, message });
        }
        Ok(AbiInstance {
            table,
            x509,
            instance,
        })
    }

    fn call(
        &self,
        f: impl FnOnce(*mut HsmInstance, *mut HsmBuffer) -> HsmStatus,
    ) -> Result<Vec<u8>, AbiError> {
        let mut out = HsmBuffer::EMPTY;
        let status = f(self.instance, &mut out);
        let bytes = take(self.table, out);
        if status != HSM_OK {
            let mut message = HsmBuffer::EMPTY;
            // SAFETY: live instance, valid out pointer.
            unsafe { (self.table.last_error)(self.instance, &mut message) };
            return Err(AbiError {
                status,
                message: text(take(self.table, message)),
            });
        }
        Ok(bytes)
    }

    pub fn chain_pem(&self) -> Result<String, AbiError> {
        // SAFETY: live instance, valid out pointer.
        self.call(|i, o| unsafe { (self.x509.get_certificate_chain)(i, o) })
            .map(text)
    }

    pub fn common_name(&self) -> Result<String, AbiError> {
        // SAFETY: live instance, valid out pointer.
        self.call(|i, o| unsafe { (self.x509.get_common_name)(i, o) })
            .map(text)
    }

    pub fn sign_digest(&self, algorithm: u32, digest: &[u8]) -> Result<Vec<u8>, AbiError> {
        let slice = HsmSlice::from_bytes(digest);
        // SAFETY: live instance, digest borrowed for the call.
        self.call(|i, o| unsafe { (self.x509.sign_digest)(i, algorithm, slice, o) })
    }

    pub fn export_private_key(&self) -> Result<String, AbiError> {
        // SAFETY: live instance, valid out pointer.
        self.call(|i, o| unsafe { (self.x509.export_private_key)(i, o) })
            .map(text)
    }
}

impl Drop for AbiInstance {
    fn drop(&mut self) {
        // SAFETY: created by this table, destroyed once.
        unsafe { (self.table.destroy)(self.instance) };
    }
}

/// Splits concatenated PEM into (label, DER) blocks.
pub fn pem_blocks(pem: &str) -> Vec<(String, Vec<u8>)> {
    let mut blocks = Vec::new();
    let mut rest = pem;
    while let Some(start) = rest.find("-----BEGIN ") {
        let after = &rest[start..];
        let end_marker = after.find("-----END ").expect("unterminated PEM block");
        let end = after[end_marker..]
            .find("-----\n")
            .map(|i| end_marker + i + 6)
            .unwrap_or(after.len());
        let block = &after[..end];
        let (label, der) = der::pem::decode_vec(block.as_bytes()).expect("bad PEM block");
        blocks.push((label.to_owned(), der));
        rest = &after[end..];
    }
    blocks
}

/// 32 bytes of hex for a UDS, different per `seed`.
pub fn uds_hex(seed: u8) -> String {
    hex::encode([seed; 32])
}
