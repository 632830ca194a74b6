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

use hsm_plugin_sdk::{sync, HsmError, HsmPlugin, PluginConfig, PluginInfo, TpmHsm};
use hsm_tpm_common::dps::parse_authentication_key;

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

hsm_plugin_sdk::plugin_entry!(
    /// The tpm2 plugin table (TPM interface), exported by no symbol: `plugin/` exports it as
    /// `hsm_plugin_entry`, and a host that links this crate in calls it directly.
    pub fn plugin_entry for Tpm2Plugin, tpm
);
