//! A live plugin instance and the calling convention shared by every interface handle.

use super::interfaces::{OperationalKeyHandle, SymmetricKeyHandle, TpmHandle, X509Handle};
use super::PluginBytes;
use super::{LoadedPlugin, PluginError, PluginErrorCode};
use hsm_api::*;
use std::ptr::NonNull;
use std::sync::{Arc, Mutex, MutexGuard};

/// One instance of a loaded plugin, destroyed when dropped. Instances of the same plugin are
/// independent; calls on one instance are serialized here unless the plugin declares itself
/// safe for concurrent calls.
pub struct PluginInstance {
    plugin: Arc<LoadedPlugin>,
    raw: NonNull<HsmInstance>,
    serial: Option<Mutex<()>>,
    /// The plugin's `release_buffer`, kept here so that each call's output needs no lookup.
    release: unsafe extern "C" fn(*mut HsmBuffer),
}

// SAFETY: the ABI allows an instance to be used from any thread; concurrent use is either
// declared safe by the plugin or serialized by `serial`.
unsafe impl Send for PluginInstance {}
// SAFETY: as above.
unsafe impl Sync for PluginInstance {}

impl std::fmt::Debug for PluginInstance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginInstance")
            .field("plugin", &self.plugin.name())
            .finish()
    }
}

impl PluginInstance {
    /// Creates an instance with `config` settings (keys and values as the plugin documents).
    pub fn create<K: AsRef<str>, V: AsRef<str>>(
        plugin: &Arc<LoadedPlugin>,
        config: &[(K, V)],
    ) -> Result<PluginInstance, PluginError> {
        let entries: Vec<HsmKeyValue> = config
            .iter()
            .map(|(k, v)| HsmKeyValue {
                key: HsmSlice::from_bytes(k.as_ref().as_bytes()),
                value: HsmSlice::from_bytes(v.as_ref().as_bytes()),
            })
            .collect();
        let table = plugin.table();
        let mut raw: *mut HsmInstance = std::ptr::null_mut();
        let mut err = HsmBuffer::EMPTY;
        // SAFETY: entries and out pointers are valid for the call; `config` outlives it.
        let status = unsafe { (table.create)(entries.as_ptr(), entries.len(), &mut raw, &mut err) };
        let message = PluginBytes::take(&err, table.release_buffer);
        if status != HSM_OK {
            return Err(PluginError::Call {
                plugin: plugin.name().to_string(),
                operation: "create",
                code: PluginErrorCode::from_status(status),
                message: message_or_note(message),
            });
        }
        let raw = NonNull::new(raw).ok_or_else(|| PluginError::Contract {
            plugin: plugin.name().to_string(),
            operation: "create",
            reason: "returned HSM_OK without an instance".into(),
        })?;
        Ok(PluginInstance {
            plugin: plugin.clone(),
            raw,
            serial: (!plugin.metadata().thread_safe).then(|| Mutex::new(())),
            release: table.release_buffer,
        })
    }

    /// The plugin this instance belongs to.
    pub fn plugin(&self) -> &Arc<LoadedPlugin> {
        &self.plugin
    }

    /// The TPM interface, or an error naming the interfaces the plugin does offer.
    pub fn tpm(&self) -> Result<TpmHandle<'_>, PluginError> {
        // SAFETY: a non-NULL table pointer was validated at load and lives forever.
        match unsafe { self.plugin.table().tpm.as_ref() } {
            Some(t) => Ok(TpmHandle::new(self, t)),
            None => Err(self.missing("TPM")),
        }
    }

    /// The X.509 interface.
    pub fn x509(&self) -> Result<X509Handle<'_>, PluginError> {
        // SAFETY: as in `tpm`.
        match unsafe { self.plugin.table().x509.as_ref() } {
            Some(t) => Ok(X509Handle::new(self, t)),
            None => Err(self.missing("X.509")),
        }
    }

    /// The symmetric-key interface.
    pub fn symmetric_key(&self) -> Result<SymmetricKeyHandle<'_>, PluginError> {
        // SAFETY: as in `tpm`.
        match unsafe { self.plugin.table().symmetric_key.as_ref() } {
            Some(t) => Ok(SymmetricKeyHandle::new(self, t)),
            None => Err(self.missing("symmetric-key")),
        }
    }

    /// The operational-key interface (ABI 1.2), or an error saying plainly that this plugin
    /// cannot hold an operational key (a 1.0 or 1.1 plugin, or one without the interface).
    pub fn operational_key(&self) -> Result<OperationalKeyHandle<'_>, PluginError> {
        // SAFETY: as in `tpm`; a table older than 1.2 reads as NULL here (`in_current_layout`).
        match unsafe { self.plugin.table().operational_key.as_ref() } {
            Some(t) => Ok(OperationalKeyHandle::new(self, t)),
            None => Err(PluginError::NoOperationalKey {
                plugin: self.plugin.name().to_string(),
                abi_version: self.plugin.metadata().abi_version.clone(),
            }),
        }
    }

    fn missing(&self, interface: &'static str) -> PluginError {
        let offered = self.plugin.metadata().capabilities.names();
        PluginError::InterfaceMissing {
            plugin: self.plugin.name().to_string(),
            interface,
            offered: if offered.is_empty() {
                "none".into()
            } else {
                offered.join(", ")
            },
        }
    }

    #[inline]
    fn serialize(&self) -> Option<MutexGuard<'_, ()>> {
        self.serial
            .as_ref()
            .map(|m| m.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Runs one ABI call that fills an output buffer and returns the bytes, in place.
    // Inlined into each handle method (and through them into the caller) so that the large
    // `Result` is built where it is used instead of being copied out of a call frame.
    #[inline(always)]
    pub(crate) fn call_output(
        &self,
        operation: &'static str,
        f: impl FnOnce(*mut HsmInstance, *mut HsmBuffer) -> HsmStatus,
    ) -> Result<PluginBytes, PluginError> {
        let mut out = HsmBuffer::EMPTY;
        {
            let _guard = self.serialize();
            let status = f(self.raw.as_ptr(), &mut out);
            if status != HSM_OK {
                // A failed call may still have left a buffer behind: release it.
                drop(PluginBytes::take(&out, self.release));
                return Err(self.call_error(operation, status));
            }
        }
        // Taken after the guard is gone, so the bytes go straight to the caller.
        Ok(PluginBytes::take(&out, self.release))
    }

    /// Runs one ABI call without output.
    pub(crate) fn call(
        &self,
        operation: &'static str,
        f: impl FnOnce(*mut HsmInstance) -> HsmStatus,
    ) -> Result<(), PluginError> {
        let _guard = self.serialize();
        let status = f(self.raw.as_ptr());
        if status != HSM_OK {
            return Err(self.call_error(operation, status));
        }
        Ok(())
    }

    /// Builds the error for a failed call, with the plugin's own message.
    #[cold]
    #[inline(never)]
    fn call_error(&self, operation: &'static str, status: HsmStatus) -> PluginError {
        let mut out = HsmBuffer::EMPTY;
        // SAFETY: live instance, valid out pointer.
        let s = unsafe { (self.plugin.table().last_error)(self.raw.as_ptr(), &mut out) };
        let message = PluginBytes::take(&out, self.release);
        PluginError::Call {
            plugin: self.plugin.name().to_string(),
            operation,
            code: PluginErrorCode::from_status(status),
            message: if s == HSM_OK {
                message_or_note(message)
            } else {
                "(the plugin gave no message)".into()
            },
        }
    }
}

impl Drop for PluginInstance {
    fn drop(&mut self) {
        // SAFETY: the instance is live and never used after this.
        unsafe { (self.plugin.table().destroy)(self.raw.as_ptr()) };
    }
}

fn message_or_note(message: PluginBytes) -> String {
    if message.is_empty() {
        "(the plugin gave no message)".into()
    } else {
        String::from_utf8_lossy(&message).into_owned()
    }
}
