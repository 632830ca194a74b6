//! Safe handles over one instance's interface tables.

use super::{PluginBytes, PluginError, PluginInstance};
use hsm_api::*;
use zeroize::Zeroizing;

/// The output as text. The only copy is the returned `String`; the plugin wipes its own
/// buffer when `bytes` is dropped, also when the text is refused here.
fn utf8(
    instance: &PluginInstance,
    operation: &'static str,
    bytes: &PluginBytes,
) -> Result<String, PluginError> {
    bytes
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| PluginError::Contract {
            plugin: instance.plugin().name().to_string(),
            operation,
            reason: "returned text that is not UTF-8".into(),
        })
}

/// The TPM interface of one instance.
pub struct TpmHandle<'a> {
    instance: &'a PluginInstance,
    table: &'static HsmTpmTable,
}

impl std::fmt::Debug for TpmHandle<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TpmHandle")
            .field("plugin", &self.instance.plugin().name())
            .finish()
    }
}

impl<'a> TpmHandle<'a> {
    pub(crate) fn new(instance: &'a PluginInstance, table: &'static HsmTpmTable) -> Self {
        TpmHandle { instance, table }
    }

    /// The endorsement key as a marshalled `TPM2B_PUBLIC`.
    pub fn endorsement_key(&self) -> Result<PluginBytes, PluginError> {
        let f = self.table.get_endorsement_key;
        // SAFETY: live instance and valid out pointer, per the closure's caller.
        let out = self
            .instance
            .call_output("get_endorsement_key", |i, o| unsafe { f(i, o) })?;
        Ok(out)
    }

    /// The storage root key as a marshalled `TPM2B_PUBLIC`.
    pub fn storage_root_key(&self) -> Result<PluginBytes, PluginError> {
        let f = self.table.get_storage_root_key;
        // SAFETY: as above.
        let out = self
            .instance
            .call_output("get_storage_root_key", |i, o| unsafe { f(i, o) })?;
        Ok(out)
    }

    /// Activates the identity key from a decoded DPS `authenticationKey` blob.
    pub fn activate_identity_key(&self, blob: &[u8]) -> Result<(), PluginError> {
        let f = self.table.activate_identity_key;
        // SAFETY: the slice borrows `blob` for the duration of the call.
        self.instance.call("activate_identity_key", |i| unsafe {
            f(i, HsmSlice::from_bytes(blob))
        })
    }

    /// HMAC-SHA256 of `data` with the identity key.
    #[inline]
    pub fn sign_with_identity(&self, data: &[u8]) -> Result<PluginBytes, PluginError> {
        let f = self.table.sign_with_identity;
        // SAFETY: as above.
        let out = self
            .instance
            .call_output("sign_with_identity", |i, o| unsafe {
                f(i, HsmSlice::from_bytes(data), o)
            })?;
        Ok(out)
    }
}

/// The X.509 interface of one instance.
pub struct X509Handle<'a> {
    instance: &'a PluginInstance,
    table: &'static HsmX509Table,
}

impl std::fmt::Debug for X509Handle<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("X509Handle")
            .field("plugin", &self.instance.plugin().name())
            .finish()
    }
}

impl<'a> X509Handle<'a> {
    pub(crate) fn new(instance: &'a PluginInstance, table: &'static HsmX509Table) -> Self {
        X509Handle { instance, table }
    }

    /// The certificate chain as PEM, leaf first.
    pub fn certificate_chain_pem(&self) -> Result<String, PluginError> {
        let f = self.table.get_certificate_chain;
        // SAFETY: live instance and valid out pointer.
        let out = self
            .instance
            .call_output("get_certificate_chain", |i, o| unsafe { f(i, o) })?;
        utf8(self.instance, "get_certificate_chain", &out)
    }

    /// The leaf's common name: the registration id.
    pub fn common_name(&self) -> Result<String, PluginError> {
        let f = self.table.get_common_name;
        // SAFETY: as above.
        let out = self
            .instance
            .call_output("get_common_name", |i, o| unsafe { f(i, o) })?;
        utf8(self.instance, "get_common_name", &out)
    }

    /// Signs a digest with the device key, inside the plugin.
    #[inline]
    pub fn sign_digest(
        &self,
        algorithm: SignAlgorithm,
        digest: &[u8],
    ) -> Result<PluginBytes, PluginError> {
        let f = self.table.sign_digest;
        // SAFETY: the slice borrows `digest` for the call.
        let out = self.instance.call_output("sign_digest", |i, o| unsafe {
            f(i, algorithm.to_abi(), HsmSlice::from_bytes(digest), o)
        })?;
        Ok(out)
    }

    /// The private key as PKCS#8 PEM, where the plugin allows it (usually refused).
    pub fn export_private_key_pem(&self) -> Result<Zeroizing<String>, PluginError> {
        let f = self.table.export_private_key;
        // SAFETY: live instance and valid out pointer.
        let out = self
            .instance
            .call_output("export_private_key", |i, o| unsafe { f(i, o) })?;
        utf8(self.instance, "export_private_key", &out).map(Zeroizing::new)
    }
}

/// The symmetric-key interface of one instance.
pub struct SymmetricKeyHandle<'a> {
    instance: &'a PluginInstance,
    table: &'static HsmSymmetricKeyTable,
}

impl std::fmt::Debug for SymmetricKeyHandle<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SymmetricKeyHandle")
            .field("plugin", &self.instance.plugin().name())
            .finish()
    }
}

impl<'a> SymmetricKeyHandle<'a> {
    pub(crate) fn new(instance: &'a PluginInstance, table: &'static HsmSymmetricKeyTable) -> Self {
        SymmetricKeyHandle { instance, table }
    }

    /// The registration id the key belongs to.
    pub fn registration_id(&self) -> Result<String, PluginError> {
        let f = self.table.get_registration_id;
        // SAFETY: live instance and valid out pointer.
        let out = self
            .instance
            .call_output("get_registration_id", |i, o| unsafe { f(i, o) })?;
        utf8(self.instance, "get_registration_id", &out)
    }

    /// HMAC-SHA256 of `data` with the held key.
    #[inline]
    pub fn sign(&self, data: &[u8]) -> Result<PluginBytes, PluginError> {
        let f = self.table.sign;
        // SAFETY: the slice borrows `data` for the call.
        let out = self.instance.call_output("sign", |i, o| unsafe {
            f(i, HsmSlice::from_bytes(data), o)
        })?;
        Ok(out)
    }

    /// Stores `key` (raw bytes) in the plugin, for `registration_id` when given.
    pub fn import_key(&self, registration_id: Option<&str>, key: &[u8]) -> Result<(), PluginError> {
        let f = self.table.import_key;
        let id = registration_id.unwrap_or("");
        // SAFETY: both slices borrow caller data for the call.
        self.instance.call("import_key", |i| unsafe {
            f(
                i,
                HsmSlice::from_bytes(id.as_bytes()),
                HsmSlice::from_bytes(key),
            )
        })
    }
}

/// The operational-key interface (ABI 1.2) of one instance: a P-256 key the plugin makes and
/// keeps under a label, and the chain issued for it.
pub struct OperationalKeyHandle<'a> {
    instance: &'a PluginInstance,
    table: &'static HsmOperationalKeyTable,
}

impl std::fmt::Debug for OperationalKeyHandle<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OperationalKeyHandle")
            .field("plugin", &self.instance.plugin().name())
            .finish()
    }
}

impl<'a> OperationalKeyHandle<'a> {
    pub(crate) fn new(
        instance: &'a PluginInstance,
        table: &'static HsmOperationalKeyTable,
    ) -> Self {
        OperationalKeyHandle { instance, table }
    }

    /// Refuses a label the ABI does not allow here, before the plugin sees it.
    fn check_label(&self, operation: &'static str, label: &str) -> Result<(), PluginError> {
        if is_valid_operational_key_label(label) {
            Ok(())
        } else {
            Err(PluginError::InvalidOperationalKeyLabel {
                plugin: self.instance.plugin().name().to_string(),
                operation,
            })
        }
    }

    /// Creates the key under `label` or finds the existing one; its public key as a DER
    /// SubjectPublicKeyInfo.
    pub fn create_key(&self, label: &str) -> Result<PluginBytes, PluginError> {
        self.check_label("create_key", label)?;
        let f = self.table.create_key;
        // SAFETY: the slice borrows `label` for the call; live instance, valid out pointer.
        self.instance.call_output("create_key", |i, o| unsafe {
            f(i, HsmSlice::from_bytes(label.as_bytes()), o)
        })
    }

    /// The public key under `label` (DER SubjectPublicKeyInfo); a `NotFound` call error when
    /// there is none.
    pub fn public_key(&self, label: &str) -> Result<PluginBytes, PluginError> {
        self.check_label("get_public_key", label)?;
        let f = self.table.get_public_key;
        // SAFETY: as above.
        self.instance.call_output("get_public_key", |i, o| unsafe {
            f(i, HsmSlice::from_bytes(label.as_bytes()), o)
        })
    }

    /// DER ECDSA P-256 signature of a SHA-256 digest with the key under `label`.
    pub fn sign_digest(&self, label: &str, digest: &[u8; 32]) -> Result<PluginBytes, PluginError> {
        self.check_label("sign_digest", label)?;
        let f = self.table.sign_digest;
        // SAFETY: both slices borrow caller data for the call.
        self.instance.call_output("sign_digest", |i, o| unsafe {
            f(
                i,
                HsmSlice::from_bytes(label.as_bytes()),
                HsmSlice::from_bytes(digest),
                o,
            )
        })
    }

    /// Stores the issued chain (PEM, leaf first) beside the key under `label`.
    pub fn store_chain(&self, label: &str, pem: &str) -> Result<(), PluginError> {
        self.check_label("store_chain", label)?;
        let f = self.table.store_chain;
        // SAFETY: both slices borrow caller data for the call.
        self.instance.call("store_chain", |i| unsafe {
            f(
                i,
                HsmSlice::from_bytes(label.as_bytes()),
                HsmSlice::from_bytes(pem.as_bytes()),
            )
        })
    }

    /// The chain stored under `label` (PEM); a `NotFound` call error when there is none.
    pub fn chain(&self, label: &str) -> Result<String, PluginError> {
        self.check_label("get_chain", label)?;
        let f = self.table.get_chain;
        // SAFETY: as in `create_key`.
        let out = self.instance.call_output("get_chain", |i, o| unsafe {
            f(i, HsmSlice::from_bytes(label.as_bytes()), o)
        })?;
        utf8(self.instance, "get_chain", &out)
    }

    /// Removes the key under `label` and its chain.
    pub fn delete_key(&self, label: &str) -> Result<(), PluginError> {
        self.check_label("delete_key", label)?;
        let f = self.table.delete_key;
        // SAFETY: the slice borrows `label` for the call.
        self.instance.call("delete_key", |i| unsafe {
            f(i, HsmSlice::from_bytes(label.as_bytes()))
        })
    }
}
