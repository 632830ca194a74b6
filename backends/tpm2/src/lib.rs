//! hsmkit-backend-tpm2: DPS TPM attestation on a real TPM 2.0 through tss-esapi.
//!
//! The TPM is chosen by TCTI string (`tcti` setting, else `TPM2TOOLS_TCTI`, else
//! `device:/dev/tpmrm0`), so the same plugin drives the kernel resource manager, tabrmd,
//! swtpm or the Microsoft simulator. The EK (0x81010001) and SRK (0x81000001) are created from
//! the TCG templates when missing; the DPS `authenticationKey` goes through ActivateCredential
//! (with a PolicySecret(endorsement) session for the EK), Import and Load, and the identity
//! key is persisted at `identity_handle` (default 0x81000100), replacing an earlier one.
//! Hierarchy authValues come from `owner_auth` / `endorsement_auth`.
//!
//! Operational keys (ABI 1.2) are P-256 ECDSA keys made by TPM2_Create under the SRK and
//! kept as SRK-wrapped blobs in the state folder, or persisted at
//! `operational_key_persistent_handle` (see [`operational`]); the private key never leaves the
//! TPM unwrapped, and signing is TPM2_Sign.
//!
//! The TPM connection is opened on first use and kept; without a resource manager a TPM
//! serves one connection at a time, so use one instance per TPM.

#![deny(missing_docs)]
// Unsafe code only in the raw ESAPI calls tss-esapi lacks (`hmac_sequence`); the entry
// function below is SDK code (macro-generated).
#![deny(unsafe_code)]

pub mod config;
pub mod device;
#[allow(unsafe_code)]
mod hmac_sequence;
pub mod operational;
mod tss_log;

use hsm_plugin_sdk::{
    sync, HsmError, HsmPlugin, OperationalKeyHsm, PluginConfig, PluginInfo, TpmHsm,
};
use hsm_tpm_common::dps::parse_authentication_key;
use operational::{check_label, not_found, spki, KeyFiles, KeyRecord};

use config::Tpm2Config;
use device::TpmDevice;
use std::sync::{Mutex, MutexGuard};

/// One plugin instance: its settings and, once used, the open TPM.
///
/// A TPM runs one command at a time and the tss-esapi context is not shareable, so every
/// operation holds the connection lock for its whole command sequence.
pub struct Tpm2Plugin {
    config: Tpm2Config,
    connection: Mutex<Connection>,
}

/// The open TPM and the public keys read from it, cached for the life of the instance.
#[derive(Default)]
struct Connection {
    device: Option<TpmDevice>,
    ek: Option<Vec<u8>>,
    srk: Option<Vec<u8>>,
}

impl Connection {
    /// The open TPM, connecting on first use.
    fn device(&mut self, config: &Tpm2Config) -> Result<&mut TpmDevice, HsmError> {
        if self.device.is_none() {
            self.device = Some(TpmDevice::open(config)?);
        }
        self.device
            .as_mut()
            .ok_or_else(|| HsmError::internal("TPM connection vanished"))
    }
}

impl std::fmt::Debug for Tpm2Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tpm2Plugin")
            .field("config", &self.config)
            .field("connected", &self.connection().device.is_some())
            .finish()
    }
}

impl Tpm2Plugin {
    /// An instance for `config`; nothing touches the TPM until the first call.
    pub fn new(config: Tpm2Config) -> Self {
        Self {
            config,
            connection: Mutex::new(Connection::default()),
        }
    }

    fn connection(&self) -> MutexGuard<'_, Connection> {
        // A panic mid-command leaves at worst a connection the next command reuses; the TPM
        // itself keeps no half-state across commands.
        sync::lock(&self.connection)
    }

    /// Runs `f` on the open TPM (connecting on first use), with the connection to itself.
    pub fn with_device<R>(
        &self,
        f: impl FnOnce(&mut TpmDevice) -> Result<R, HsmError>,
    ) -> Result<R, HsmError> {
        f(self.connection().device(&self.config)?)
    }

    /// Closes the TPM connection (it is reopened on the next call).
    pub fn disconnect(&self) {
        self.connection().device = None;
    }
}

impl HsmPlugin for Tpm2Plugin {
    const INFO: PluginInfo = PluginInfo {
        name: "tpm2",
        version: env!("CARGO_PKG_VERSION"),
        vendor: "hsmkit",
        description: "TPM 2.0 through tss-esapi (device, tabrmd, swtpm, mssim by TCTI)",
    };
    const SETTINGS: &'static [hsm_plugin_sdk::Setting] = config::SETTINGS;

    fn create(config: &PluginConfig) -> Result<Self, HsmError> {
        Ok(Self::new(Tpm2Config::from_plugin_config(config)?))
    }
}

impl TpmHsm for Tpm2Plugin {
    fn endorsement_key(&self) -> Result<Vec<u8>, HsmError> {
        let mut connection = self.connection();
        if let Some(ek) = &connection.ek {
            return Ok(ek.clone());
        }
        let device = connection.device(&self.config)?;
        let handle = device.endorsement_key()?;
        let ek = device.public_tpm2b(handle)?;
        connection.ek = Some(ek.clone());
        Ok(ek)
    }

    fn storage_root_key(&self) -> Result<Vec<u8>, HsmError> {
        let mut connection = self.connection();
        if let Some(srk) = &connection.srk {
            return Ok(srk.clone());
        }
        let device = connection.device(&self.config)?;
        let handle = device.storage_root_key()?;
        let srk = device.public_tpm2b(handle)?;
        connection.srk = Some(srk.clone());
        Ok(srk)
    }

    fn activate_identity_key(&self, blob: &[u8]) -> Result<(), HsmError> {
        let parts = parse_authentication_key(blob)
            .map_err(|e| HsmError::invalid_argument(format!("malformed authenticationKey: {e}")))?;
        self.with_device(|device| device.import_dps_blob(&parts))?;
        hsm_plugin_sdk::log::info(&format!(
            "tpm2: identity key imported and persisted at {:#010x}",
            self.config.identity_handle
        ));
        Ok(())
    }

    fn sign_with_identity(&self, data: &[u8]) -> Result<Vec<u8>, HsmError> {
        let mut connection = self.connection();
        let device = connection.device(&self.config)?;
        // Fails with InvalidState before activation, whichever path the input takes.
        device.identity_key()?;
        let limit = device.input_buffer_limit()?;
        if data.len() <= limit {
            return device.hmac_identity(data);
        }
        // The sequence path needs the TPM connection to itself; the lock stays held so that
        // no other call reconnects meanwhile.
        connection.device = None;
        hmac_sequence::hmac_with_sequence(
            &self.config.tcti,
            self.config.identity_handle,
            data,
            limit,
        )
    }
}

impl Tpm2Plugin {
    /// The operational key files, their folder created (0700) on first use.
    fn key_files(&self) -> Result<KeyFiles, HsmError> {
        let dir = self.config.state_dir.as_deref().ok_or_else(|| {
            HsmError::invalid_argument(
                "no state folder for operational keys: set `state_dir`, HSMKIT_STATE_DIR or HOME",
            )
        })?;
        // The state folder too must be ours: its owner could swap `tpm2/` between runs.
        hsm_plugin_sdk::secret_file::create_private_dir(dir)?;
        Ok(KeyFiles::new(dir))
    }

    /// Makes the key for `label` in the TPM and records it where the configuration says;
    /// the returned record is what the file must hold.
    fn make_operational_key(
        &self,
        device: &mut TpmDevice,
        files: &KeyFiles,
        label: &str,
    ) -> Result<KeyRecord, HsmError> {
        let Some(handle) = self.config.operational_key_persistent_handle else {
            let (public, private) = device.create_operational_key()?;
            let record = KeyRecord::Blob { public, private };
            if files.create(label, &record)? {
                return Ok(record);
            }
            // Another process made one first: theirs is the key (ours was never persisted,
            // so nothing stays behind in the TPM).
            return files.existing(label);
        };
        if let Some((object, _)) = device.read_persistent(handle)? {
            device.close(object);
            return Err(HsmError::invalid_state(format!(
                "cannot persist operational key `{label}` at {handle:#010x} \
                 (`operational_key_persistent_handle`): the handle holds another object, such \
                 as the operational key of another label (delete it first; a persistent handle \
                 keeps one key)"
            )));
        }
        let (public, private) = device.create_operational_key()?;
        let loaded = device
            .load_under_srk(public.clone(), private)?
            .map_err(|e| device::tpm_error("Load (new operational key)", e))?;
        let persisted = device.persist_at(loaded, handle);
        device.flush_transient(loaded);
        persisted?;
        let record = KeyRecord::Persistent { handle, public };
        match files.create(label, &record) {
            Ok(true) => Ok(record),
            failed => {
                // Not recorded (or another process recorded a key first): undo the persist so
                // the TPM holds no key that no file names.
                if let Some((object, _)) = device.read_persistent(handle)? {
                    device.evict(object, handle)?;
                }
                failed?;
                files.existing(label)
            }
        }
    }
}

/// Operational keys in the TPM: see [`operational`]. Every call holds the connection lock, so
/// that creating, signing and deleting in one process never interleave on the TPM.
impl OperationalKeyHsm for Tpm2Plugin {
    fn create_operational_key(&self, label: &str) -> Result<Vec<u8>, HsmError> {
        check_label(label)?;
        let files = self.key_files()?;
        let mut connection = self.connection();
        if let Some(record) = files.read(label)? {
            return spki(record.public());
        }
        let device = connection.device(&self.config)?;
        let record = self.make_operational_key(device, &files, label)?;
        hsm_plugin_sdk::log::info(&format!(
            "tpm2: operational key `{label}` created under the SRK{}",
            match &record {
                KeyRecord::Persistent { handle, .. } => format!(" and persisted at {handle:#010x}"),
                KeyRecord::Blob { .. } => String::new(),
            }
        ));
        spki(record.public())
    }

    fn operational_public_key(&self, label: &str) -> Result<Vec<u8>, HsmError> {
        check_label(label)?;
        spki(self.key_files()?.existing(label)?.public())
    }

    fn sign_operational_digest(&self, label: &str, digest: &[u8; 32]) -> Result<Vec<u8>, HsmError> {
        check_label(label)?;
        let files = self.key_files()?;
        let record = files.existing(label)?;
        let mut connection = self.connection();
        let device = connection.device(&self.config)?;
        match record {
            KeyRecord::Blob { public, private } => {
                let key = device.load_under_srk(public, private)?.map_err(|e| {
                    HsmError::device(format!(
                        "operational key `{label}` ({}) does not load under this TPM's SRK: {e} \
                         (made by another TPM, damaged, or the owner hierarchy was cleared since)",
                        files.key_path(label).display()
                    ))
                })?;
                let signed = device.sign_ecdsa_p256(key, digest);
                device.flush_transient(key);
                signed
            }
            KeyRecord::Persistent { handle, public } => {
                let (object, found) = device.read_persistent(handle)?.ok_or_else(|| {
                    HsmError::device(format!(
                        "operational key `{label}` is no longer persisted at {handle:#010x} \
                         (evicted, or the owner hierarchy was cleared)"
                    ))
                })?;
                let signed = if found == public {
                    device.sign_ecdsa_p256(object.into(), digest)
                } else {
                    Err(HsmError::device(format!(
                        "{handle:#010x} holds another key than operational key `{label}`"
                    )))
                };
                device.close(object);
                signed
            }
        }
    }

    fn store_operational_chain(&self, label: &str, pem: &str) -> Result<(), HsmError> {
        check_label(label)?;
        let files = self.key_files()?;
        let _connection = self.connection();
        files.store_chain(label, pem)
    }

    fn operational_chain(&self, label: &str) -> Result<String, HsmError> {
        check_label(label)?;
        self.key_files()?.chain(label)
    }

    fn delete_operational_key(&self, label: &str) -> Result<(), HsmError> {
        check_label(label)?;
        let files = self.key_files()?;
        let mut connection = self.connection();
        let record = files.existing(label)?;
        if let KeyRecord::Persistent { handle, public } = &record {
            let device = connection.device(&self.config)?;
            if let Some((object, found)) = device.read_persistent(*handle)? {
                if &found == public {
                    device.evict(object, *handle)?;
                } else {
                    // Not ours any more: leave it, forget our record.
                    device.close(object);
                    hsm_plugin_sdk::log::warn(&format!(
                        "tpm2: {handle:#010x} holds another key than operational key `{label}`; \
                         left in place"
                    ));
                }
            }
        }
        if !files.remove(label)? {
            return Err(not_found(label));
        }
        Ok(())
    }
}

hsm_plugin_sdk::plugin_entry!(
    /// The tpm2 plugin table (TPM interface and operational keys), exported by no symbol:
    /// `plugin/` exports it as `hsm_plugin_entry`, and a host that links this crate in calls it
    /// directly.
    pub fn plugin_entry for Tpm2Plugin, tpm, operational_key
);
