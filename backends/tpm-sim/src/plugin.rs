//! The simulated TPM instance and its TPM interface (everything but the C export, so the same
//! code can be compiled into programs that also link another plugin).

use std::path::PathBuf;
use std::sync::RwLock;

use hmac::{Hmac, Mac};
use hsm_plugin_sdk::{
    sync, HsmError, HsmPlugin, OperationalKeyHsm, PluginConfig, PluginInfo, Setting, TpmHsm,
};
use hsm_tpm_common::dps::{open_dps_challenge, SoftwareTpmKeys};
use hsm_tpm_common::public::{
    ek_template_rsa2048, srk_template_rsa2048, with_rsa_modulus, PublicArea,
};
use hsm_tpm_common::TpmWireError;
use p256::ecdsa::signature::hazmat::PrehashSigner;
use p256::ecdsa::{DerSignature, SigningKey};
use p256::pkcs8::EncodePublicKey;
use rsa::traits::PublicKeyParts;
use sha2::Sha256;

use crate::state::{self, IdentityKey, OperationalKey, SimState};

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

/// Operational keys (ABI 1.2) live in the state file beside the EK and SRK, as a real TPM would
/// keep a key created under its SRK: made once per label, never handed out.
impl OperationalKeyHsm for TpmSimPlugin {
    fn create_operational_key(&self, label: &str) -> Result<Vec<u8>, HsmError> {
        if let Ok(spki) = self.operational_public_key(label) {
            return Ok(spki);
        }
        let mut state = sync::write(&self.state);
        // Looked up again under the write lock: another thread may have made it meanwhile.
        if let Some(key) = state.operational.iter().find(|k| k.label == label) {
            return public_key(&signing_key(key)?);
        }
        if state.operational.len() >= state::MAX_OPERATIONAL_KEYS {
            return Err(HsmError::device(format!(
                "the simulated TPM holds {} operational keys already",
                state::MAX_OPERATIONAL_KEYS
            )));
        }
        let key = SigningKey::random(&mut rand::rngs::OsRng);
        state.operational.push(OperationalKey {
            label: label.to_string(),
            scalar: zeroize::Zeroizing::new(key.to_bytes().to_vec()),
            chain: String::new(),
        });
        if let Err(e) = state::save(&self.path, &state) {
            // The key counts only once persisted.
            state.operational.pop();
            return Err(e);
        }
        public_key(&key)
    }

    fn operational_public_key(&self, label: &str) -> Result<Vec<u8>, HsmError> {
        let state = sync::read(&self.state);
        public_key(&signing_key(find(&state, label)?)?)
    }

    fn sign_operational_digest(&self, label: &str, digest: &[u8; 32]) -> Result<Vec<u8>, HsmError> {
        let state = sync::read(&self.state);
        let key = signing_key(find(&state, label)?)?;
        let signature: DerSignature = key
            .sign_prehash(digest)
            .map_err(|_| HsmError::internal("ECDSA signing failed"))?;
        Ok(signature.as_bytes().to_vec())
    }

    fn store_operational_chain(&self, label: &str, pem: &str) -> Result<(), HsmError> {
        if pem.len() > state::MAX_FIELD {
            return Err(HsmError::invalid_argument(format!(
                "the chain is {} bytes; the simulated TPM keeps at most {}",
                pem.len(),
                state::MAX_FIELD
            )));
        }
        let mut state = sync::write(&self.state);
        let index = position(&state, label)?;
        let previous = std::mem::replace(&mut state.operational[index].chain, pem.to_string());
        if let Err(e) = state::save(&self.path, &state) {
            state.operational[index].chain = previous;
            return Err(e);
        }
        Ok(())
    }

    fn operational_chain(&self, label: &str) -> Result<String, HsmError> {
        let state = sync::read(&self.state);
        let key = find(&state, label)?;
        if key.chain.is_empty() {
            return Err(HsmError::not_found(format!(
                "no chain stored for operational key `{label}`"
            )));
        }
        Ok(key.chain.clone())
    }

    fn delete_operational_key(&self, label: &str) -> Result<(), HsmError> {
        let mut state = sync::write(&self.state);
        let index = position(&state, label)?;
        let removed = state.operational.remove(index);
        if let Err(e) = state::save(&self.path, &state) {
            // Still there on disk: keep it in memory too.
            state.operational.insert(index, removed);
            return Err(e);
        }
        Ok(())
    }
}

fn not_found(label: &str) -> HsmError {
    HsmError::not_found(format!("no operational key `{label}` (create it first)"))
}

fn find<'a>(state: &'a SimState, label: &str) -> Result<&'a OperationalKey, HsmError> {
    Ok(&state.operational[position(state, label)?])
}

/// Where the key under `label` is in the state's list; NotFound without one.
fn position(state: &SimState, label: &str) -> Result<usize, HsmError> {
    state
        .operational
        .iter()
        .position(|k| k.label == label)
        .ok_or_else(|| not_found(label))
}

fn signing_key(key: &OperationalKey) -> Result<SigningKey, HsmError> {
    SigningKey::from_slice(&key.scalar)
        .map_err(|_| HsmError::device("the stored operational key is not a P-256 key"))
}

fn public_key(key: &SigningKey) -> Result<Vec<u8>, HsmError> {
    key.verifying_key()
        .to_public_key_der()
        .map(|d| d.as_bytes().to_vec())
        .map_err(|_| HsmError::internal("cannot encode the public key"))
}

#[cfg(test)]
mod operational_tests {
    use super::*;
    use hsm_plugin_sdk::ErrorCode;
    use p256::ecdsa::signature::hazmat::PrehashVerifier;
    use p256::ecdsa::VerifyingKey;
    use p256::pkcs8::DecodePublicKey;

    #[test]
    fn operational_keys_live_in_the_state_file_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state");
        let tpm = TpmSimPlugin::open(path.clone()).unwrap();
        assert_eq!(
            tpm.operational_public_key("op").unwrap_err().code(),
            ErrorCode::NotFound
        );
        let spki = tpm.create_operational_key("op").unwrap();
        assert_eq!(tpm.create_operational_key("op").unwrap(), spki);
        assert_ne!(tpm.create_operational_key("op2").unwrap(), spki);
        let digest = [4u8; 32];
        let sig = tpm.sign_operational_digest("op", &digest).unwrap();
        VerifyingKey::from_public_key_der(&spki)
            .unwrap()
            .verify_prehash(&digest, &DerSignature::try_from(sig.as_slice()).unwrap())
            .unwrap();
        assert_eq!(
            tpm.operational_chain("op").unwrap_err().code(),
            ErrorCode::NotFound
        );
        tpm.store_operational_chain("op", "PEM").unwrap();
        let ek = tpm.endorsement_key().unwrap();
        drop(tpm);
        let again = TpmSimPlugin::open(path).unwrap();
        assert_eq!(again.endorsement_key().unwrap(), ek, "the same TPM");
        assert_eq!(again.operational_public_key("op").unwrap(), spki);
        assert_eq!(again.operational_chain("op").unwrap(), "PEM");
    }

    #[test]
    fn a_version_1_state_file_still_loads_with_no_operational_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state");
        let tpm = TpmSimPlugin::open(path.clone()).unwrap();
        let ek = tpm.endorsement_key().unwrap();
        drop(tpm);
        // The same TPM as a version 1 file: the header's last byte is the version.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[13] = 1;
        let state = SimState::decode(&bytes, &path).unwrap();
        assert!(state.operational.is_empty());
        // A version 1 file with bytes after the identity key is still corrupt.
        bytes.extend_from_slice(&[0, 0, 0, 0]);
        assert!(SimState::decode(&bytes, &path).is_err());
        let again = TpmSimPlugin::open(path).unwrap();
        assert_eq!(again.endorsement_key().unwrap(), ek);
    }
}
