//! hsmkit-plugin-tpm2: DPS TPM attestation on a real TPM 2.0 through tss-esapi.
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

pub mod config;
pub mod device;
mod hmac_sequence;

use hsm_plugin_sdk::{export_plugin, HsmError, HsmPlugin, PluginConfig, PluginInfo, TpmHsm};
use hsm_tpm_common::dps::parse_authentication_key;

use config::Tpm2Config;
use device::TpmDevice;

/// One plugin instance: its settings and, once used, the open TPM.
pub struct Tpm2Plugin {
    config: Tpm2Config,
    device: Option<TpmDevice>,
    ek: Option<Vec<u8>>,
    srk: Option<Vec<u8>>,
}

impl std::fmt::Debug for Tpm2Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tpm2Plugin")
            .field("config", &self.config)
            .field("connected", &self.device.is_some())
            .finish()
    }
}

impl Tpm2Plugin {
    /// An instance for `config`; nothing touches the TPM until the first call.
    pub fn new(config: Tpm2Config) -> Self {
        Self {
            config,
            device: None,
            ek: None,
            srk: None,
        }
    }

    /// The open TPM, connecting on first use.
    pub fn device(&mut self) -> Result<&mut TpmDevice, HsmError> {
        if self.device.is_none() {
            self.device = Some(TpmDevice::open(&self.config)?);
        }
        self.device
            .as_mut()
            .ok_or_else(|| HsmError::internal("TPM connection vanished"))
    }

    /// Closes the TPM connection (it is reopened on the next call).
    pub fn disconnect(&mut self) {
        self.device = None;
    }
}

impl HsmPlugin for Tpm2Plugin {
    const INFO: PluginInfo = PluginInfo {
        name: "tpm2",
        version: env!("CARGO_PKG_VERSION"),
        vendor: "hsmkit",
        description: "TPM 2.0 through tss-esapi (device, tabrmd, swtpm, mssim by TCTI)",
    };

    fn create(config: &PluginConfig) -> Result<Self, HsmError> {
        Ok(Self::new(Tpm2Config::from_plugin_config(config)?))
    }
}

impl TpmHsm for Tpm2Plugin {
    fn endorsement_key(&mut self) -> Result<Vec<u8>, HsmError> {
        if let Some(ek) = &self.ek {
            return Ok(ek.clone());
        }
        let device = self.device()?;
        let handle = device.endorsement_key()?;
        let ek = device.public_tpm2b(handle)?;
        self.ek = Some(ek.clone());
        Ok(ek)
    }

    fn storage_root_key(&mut self) -> Result<Vec<u8>, HsmError> {
        if let Some(srk) = &self.srk {
            return Ok(srk.clone());
        }
        let device = self.device()?;
        let handle = device.storage_root_key()?;
        let srk = device.public_tpm2b(handle)?;
        self.srk = Some(srk.clone());
        Ok(srk)
    }

    fn activate_identity_key(&mut self, blob: &[u8]) -> Result<(), HsmError> {
        let parts = parse_authentication_key(blob)
            .map_err(|e| HsmError::invalid_argument(format!("malformed authenticationKey: {e}")))?;
        self.device()?.import_dps_blob(&parts)?;
        hsm_plugin_sdk::log::info(&format!(
            "tpm2: identity key imported and persisted at {:#010x}",
            self.config.identity_handle
        ));
        Ok(())
    }

    fn sign_with_identity(&mut self, data: &[u8]) -> Result<Vec<u8>, HsmError> {
        let device = self.device()?;
        // Fails with InvalidState before activation, whichever path the input takes.
        device.identity_key()?;
        let limit = device.input_buffer_limit()?;
        if data.len() <= limit {
            return device.hmac_identity(data);
        }
        // The sequence path needs the TPM connection to itself.
        self.disconnect();
        hmac_sequence::hmac_with_sequence(
            &self.config.tcti,
            self.config.identity_handle,
            data,
            limit,
        )
    }
}

export_plugin!(Tpm2Plugin, tpm);
