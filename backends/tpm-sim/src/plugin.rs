//! The simulated TPM instance and its TPM interface (everything but the C export, so the same
//! code can be compiled into programs that also link another plugin).

use std::path::PathBuf;
use std::sync::RwLock;

use hmac::{Hmac, Mac};
use hsm_plugin_sdk::{sync, HsmError, HsmPlugin, PluginConfig, PluginInfo, Setting, TpmHsm};
use hsm_tpm_common::dps::{open_dps_challenge, SoftwareTpmKeys};
use hsm_tpm_common::public::{
    ek_template_rsa2048, srk_template_rsa2048, with_rsa_modulus, PublicArea,
};
use hsm_tpm_common::TpmWireError;
use rsa::traits::PublicKeyParts;
use sha2::Sha256;

use crate::state::{self, IdentityKey, SimState};

/// One simulated TPM, bound to its state file. Activation replaces the identity key under
/// the write lock; signing and key reads share the read lock.
pub struct TpmSimPlugin {
    path: PathBuf,
    state: RwLock<SimState>,
    ek_public: PublicArea,
    srk_public: PublicArea,
}

impl std::fmt::Debug for TpmSimPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TpmSimPlugin")
            .field("path", &self.path)
            .field("activated", &sync::read(&self.state).identity.is_some())
            .finish_non_exhaustive()
    }
}

/// Maps a wire-library error to the plugin error codes: a blob that is not for this TPM is an
/// authentication failure, a malformed one an invalid argument.
fn wire_error(e: TpmWireError) -> HsmError {
    match e {
        TpmWireError::IntegrityCheckFailed { .. } | TpmWireError::Rsa { .. } => {
            HsmError::authentication(format!(
                "the authenticationKey was not made for this TPM's EK and SRK: {e}"
            ))
        }
        TpmWireError::Ecc { .. } => HsmError::internal(e.to_string()),
        _ => HsmError::invalid_argument(format!("malformed authenticationKey: {e}")),
    }
}

impl TpmSimPlugin {
    /// Opens (or creates) the simulated TPM whose state file is at `path`.
    pub fn open(path: PathBuf) -> Result<Self, HsmError> {
        let state = state::load_or_create(&path)?;
        let ek_public = with_rsa_modulus(ek_template_rsa2048(), state.ek.n().to_bytes_be());
        let srk_public = with_rsa_modulus(srk_template_rsa2048(), state.srk.n().to_bytes_be());
        Ok(Self {
            path,
            state: RwLock::new(state),
            ek_public,
            srk_public,
        })
    }

    /// The state file this instance uses.
    pub fn state_file(&self) -> &std::path::Path {
        &self.path
    }
}

impl HsmPlugin for TpmSimPlugin {
    const INFO: PluginInfo = PluginInfo {
        name: "tpm-sim",
        version: env!("CARGO_PKG_VERSION"),
        vendor: "hsmkit",
        description: "Software TPM 2.0 for DPS TPM attestation (state in a 0600 file)",
    };
    const SETTINGS: &'static [Setting] = &[Setting::optional(
        "instance",
        "name of a separate simulated TPM under the state folder (1-64 of A-Z a-z 0-9 - _ .); default: the one TPM",
    )];

    fn create(config: &PluginConfig) -> Result<Self, HsmError> {
        let dir = config.state_dir()?;
        // The state folder too must be ours: its owner could swap `tpm-sim/` between runs.
        hsm_plugin_sdk::secret_file::create_private_dir(&dir)?;
        Self::open(state::state_path(&dir, config.get("instance"))?)
    }
}

impl TpmHsm for TpmSimPlugin {
    fn endorsement_key(&self) -> Result<Vec<u8>, HsmError> {
        self.ek_public
            .to_tpm2b()
            .map_err(|e| HsmError::internal(e.to_string()))
    }

    fn storage_root_key(&self) -> Result<Vec<u8>, HsmError> {
        self.srk_public
            .to_tpm2b()
            .map_err(|e| HsmError::internal(e.to_string()))
    }

    fn activate_identity_key(&self, blob: &[u8]) -> Result<(), HsmError> {
        let mut state = sync::write(&self.state);
        let keys = SoftwareTpmKeys {
            ek_private: &state.ek,
            ek_public: &self.ek_public,
            srk_private: &state.srk,
            srk_public: &self.srk_public,
        };
        let imported = open_dps_challenge(&keys, blob).map_err(wire_error)?;
        let previous = state.identity.replace(IdentityKey {
            public: imported.public,
            key: imported.key,
        });
        if let Err(e) = state::save(&self.path, &state) {
            // Keep memory and disk in agreement: the new key counts only once persisted.
            state.identity = previous;
            return Err(e);
        }
        hsm_plugin_sdk::log::info("tpm-sim: identity key imported and persisted");
        Ok(())
    }

    fn sign_with_identity(&self, data: &[u8]) -> Result<Vec<u8>, HsmError> {
        let state = sync::read(&self.state);
        let identity = state.identity.as_ref().ok_or_else(|| {
            HsmError::invalid_state("no identity key yet: activate the DPS authenticationKey first")
        })?;
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&identity.key)
            .map_err(|_| HsmError::internal("identity key rejected by HMAC"))?;
        mac.update(data);
        Ok(mac.finalize().into_bytes().to_vec())
    }
}
