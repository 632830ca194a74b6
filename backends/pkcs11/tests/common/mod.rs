//! A minimal host for tests and the benchmark: drives the plugin through its C ABI entry point
//! and function tables, as a host does after `dlsym("hsm_plugin_entry")`, plus token helpers.

#![allow(dead_code)]

use hsm_plugin_sdk::hsm_api::{
    HsmBuffer, HsmInstance, HsmKeyValue, HsmPluginTable, HsmSlice, HsmStatus, HsmSymmetricKeyTable,
    HsmX509Table, HSM_ABI_MAJOR, HSM_ABI_MINOR, HSM_OK,
};
use hsmkit_plugin_pkcs11::config::PinSource;
use hsmkit_plugin_pkcs11::provision::{init_device, InitOptions, InitOutcome};
use hsmkit_plugin_pkcs11::softhsm::{create_token, TestToken};
use hsmkit_plugin_pkcs11::uri::Pkcs11Uri;

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
    symmetric: &'static HsmSymmetricKeyTable,
    instance: *mut HsmInstance,
}

// SAFETY: the instance pointer is owned by this value alone and the SDK serializes calls on
// one instance, so moving it to another thread is sound; the tables are immutable statics.
unsafe impl Send for AbiInstance {}

fn plugin_table() -> &'static HsmPluginTable {
    let mut table: *const HsmPluginTable = std::ptr::null();
    // SAFETY: valid out pointer; a NULL host table is allowed (no host logger).
    let status = unsafe {
        hsmkit_plugin_pkcs11::hsm_plugin_entry(
            HSM_ABI_MAJOR,
            HSM_ABI_MINOR,
            std::ptr::null(),
            &mut table,
        )
    };
    assert_eq!(status, HSM_OK, "hsm_plugin_entry failed");
    assert!(!table.is_null());
    // SAFETY: the plugin returns a pointer to its static table.
    unsafe { &*table }
}

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
        let table = plugin_table();
        // SAFETY: the tables of a plugin exporting `x509, symmetric_key` are statics.
        let x509 = unsafe { table.x509.as_ref() }.expect("no X.509 table");
        // SAFETY: as above.
        let symmetric = unsafe { table.symmetric_key.as_ref() }.expect("no symmetric-key table");
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
            symmetric,
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
            return Err(self.error(status));
        }
        Ok(bytes)
    }

    fn error(&self, status: HsmStatus) -> AbiError {
        let mut message = HsmBuffer::EMPTY;
        // SAFETY: live instance, valid out pointer.
        unsafe { (self.table.last_error)(self.instance, &mut message) };
        AbiError {
            status,
            message: text(take(self.table, message)),
        }
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

    pub fn registration_id(&self) -> Result<String, AbiError> {
        // SAFETY: live instance, valid out pointer.
        self.call(|i, o| unsafe { (self.symmetric.get_registration_id)(i, o) })
            .map(text)
    }

    pub fn hmac(&self, data: &[u8]) -> Result<Vec<u8>, AbiError> {
        let slice = HsmSlice::from_bytes(data);
        // SAFETY: live instance, data borrowed for the call.
        self.call(|i, o| unsafe { (self.symmetric.sign)(i, slice, o) })
    }

    pub fn import_key(&self, registration_id: &str, key: &[u8]) -> Result<(), AbiError> {
        // SAFETY: live instance, slices borrowed for the call.
        let status = unsafe {
            (self.symmetric.import_key)(
                self.instance,
                HsmSlice::from_bytes(registration_id.as_bytes()),
                HsmSlice::from_bytes(key),
            )
        };
        if status != HSM_OK {
            return Err(self.error(status));
        }
        Ok(())
    }
}

impl Drop for AbiInstance {
    fn drop(&mut self) {
        // SAFETY: created by this table, destroyed once.
        unsafe { (self.table.destroy)(self.instance) };
    }
}

/// A new SoftHSM token; panics with the harness's install hint when SoftHSM2 is missing.
pub fn token(prefix: &str) -> TestToken {
    create_token(prefix).unwrap_or_else(|e| panic!("{e}"))
}

/// Runs the device setup (self-signed) on `tok`.
pub fn init_self_signed(tok: &TestToken, label: &str, cn: &str) -> InitOutcome {
    init_device(&InitOptions {
        module: tok.module.clone(),
        token: Pkcs11Uri::parse(&tok.uri()).unwrap(),
        pin: PinSource::File(tok.pin_file.clone()),
        label: label.into(),
        id: None,
        common_name: cn.into(),
        ca: None,
        validity_days: 30,
    })
    .unwrap_or_else(|e| panic!("init failed: {e}"))
}

/// The settings of an X.509 instance for a device made by [`init_self_signed`].
pub fn x509_settings(tok: &TestToken, out: &InitOutcome) -> Vec<(String, String)> {
    vec![
        ("module".into(), tok.module.display().to_string()),
        ("token_uri".into(), tok.uri()),
        ("pin_file".into(), tok.pin_file.display().to_string()),
        ("key_uri".into(), out.key_uri.clone()),
        ("cert_uri".into(), out.cert_uri.clone()),
    ]
}

/// Borrowed view of owned settings for [`AbiInstance::create`].
pub fn borrowed(settings: &[(String, String)]) -> Vec<(&str, &str)> {
    settings
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}
