//! Software symmetric-key HSM: the key DPS symmetric-key attestation signs with, held in a
//! 0600 file in the state folder and never handed out through the ABI.
//!
//! Settings: `state_dir` (the host passes it), `registration_id` (overrides the stored one).
//! Files: `<state_dir>/symmetric/key` (raw key, 0600), `<state_dir>/symmetric/registration-id`.
//!
//! Operational key (ABI 1.2): SOFTWARE ONLY, a P-256 key in a 0600 file under
//! `<state_dir>/symmetric/operational/` (see `operational`), for the certificate DPS issues.

#![deny(missing_docs)]
// The entry function below is SDK code (macro-generated); this crate itself has no unsafe.
#![forbid(unsafe_code)]

mod operational;
mod store;

use hmac::{Hmac, Mac};
use hsm_plugin_sdk::{
    sync, HsmError, HsmPlugin, OperationalKeyHsm, PluginConfig, PluginInfo, Setting,
    SymmetricKeyHsm,
};
use operational::OperationalKeys;
use sha2::Sha256;
use std::sync::RwLock;
use store::KeyStore;
use zeroize::Zeroizing;

/// Longest registration id DPS accepts.
const MAX_REGISTRATION_ID_LEN: usize = 128;

/// One instance: the key store and the registration id in use.
pub struct SymmetricKeyPlugin {
    store: KeyStore,
    registration_id_override: RwLock<Option<String>>,
    operational: OperationalKeys,
}

impl HsmPlugin for SymmetricKeyPlugin {
    const INFO: PluginInfo = PluginInfo {
        name: "symmetric",
        version: env!("CARGO_PKG_VERSION"),
        vendor: "hsmkit",
        description:
            "Software symmetric key for DPS symmetric-key attestation (key in a 0600 file)",
    };
    const SETTINGS: &'static [Setting] = &[Setting::optional(
        "registration_id",
        "DPS registration id of the key; default: the one stored with the imported key",
    )];

    fn create(config: &PluginConfig) -> Result<Self, HsmError> {
        let registration_id_override = match config.get("registration_id") {
            Some(id) => Some(validate_registration_id(id)?.to_string()),
            None => None,
        };
        let state_dir = config.state_dir()?;
        // The state folder too must be ours: its owner could swap `symmetric/` between runs.
        hsm_plugin_sdk::secret_file::create_private_dir(&state_dir)?;
        let store = KeyStore::new(state_dir.join("symmetric"));
        Ok(SymmetricKeyPlugin {
            store,
            registration_id_override: RwLock::new(registration_id_override),
            operational: OperationalKeys::new(state_dir.join("symmetric").join("operational")),
        })
    }
}

impl SymmetricKeyHsm for SymmetricKeyPlugin {
    fn registration_id(&self) -> Result<String, HsmError> {
        if let Some(id) = sync::read(&self.registration_id_override).as_ref() {
            return Ok(id.clone());
        }
        self.store.registration_id()?.ok_or_else(|| {
            HsmError::not_found(
                "no registration id: set `registration_id` in the plugin configuration or import a key with one",
            )
        })
    }

    fn sign(&self, data: &[u8]) -> Result<Vec<u8>, HsmError> {
        hmac_sha256(&self.store.key()?, data)
    }

    fn import_key(&self, registration_id: Option<&str>, key: &[u8]) -> Result<(), HsmError> {
        if key.len() < 16 || key.len() > 64 {
            return Err(HsmError::invalid_argument(format!(
                "symmetric keys must be 16 to 64 bytes, got {}",
                key.len()
            )));
        }
        let id = registration_id.map(validate_registration_id).transpose()?;
        self.store.save(Zeroizing::new(key.to_vec()), id)?;
        if let Some(id) = id {
            *sync::write(&self.registration_id_override) = Some(id.to_string());
        }
        Ok(())
    }
}

/// Software only: see the `operational` module.
impl OperationalKeyHsm for SymmetricKeyPlugin {
    fn create_operational_key(&self, label: &str) -> Result<Vec<u8>, HsmError> {
        self.operational.create(label)
    }

    fn operational_public_key(&self, label: &str) -> Result<Vec<u8>, HsmError> {
        self.operational.public_key(label)
    }

    fn sign_operational_digest(&self, label: &str, digest: &[u8; 32]) -> Result<Vec<u8>, HsmError> {
        self.operational.sign(label, digest)
    }

    fn store_operational_chain(&self, label: &str, pem: &str) -> Result<(), HsmError> {
        self.operational.store_chain(label, pem)
    }

    fn operational_chain(&self, label: &str) -> Result<String, HsmError> {
        self.operational.chain(label)
    }

    fn delete_operational_key(&self, label: &str) -> Result<(), HsmError> {
        self.operational.delete(label)
    }
}

/// HMAC-SHA256 of `data` under `key`.
pub fn hmac_sha256(key: &[u8], data: &[u8]) -> Result<Vec<u8>, HsmError> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key)
        .map_err(|_| HsmError::internal("HMAC key of invalid length"))?;
    mac.update(data);
    Ok(mac.finalize().into_bytes().to_vec())
}

/// Checks DPS's registration id rules: 1..=128 of lowercase a-z, 0-9, `-`, `.`, `_`, `:`.
pub fn validate_registration_id(id: &str) -> Result<&str, HsmError> {
    let ok = !id.is_empty()
        && id.len() <= MAX_REGISTRATION_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._:".contains(&b));
    if ok {
        Ok(id)
    } else {
        Err(HsmError::invalid_argument(format!(
            "invalid registration id `{id}`: DPS accepts 1 to 128 characters of a-z, 0-9, '-', '.', '_', ':'"
        )))
    }
}

hsm_plugin_sdk::plugin_entry!(
    /// The symmetric plugin table (symmetric-key interface and the software operational key),
    /// exported by no symbol: `plugin/` exports it as `hsm_plugin_entry`, and a host that links
    /// this crate in calls it directly.
    pub fn plugin_entry for SymmetricKeyPlugin, symmetric_key, operational_key
);

#[cfg(test)]
mod tests {
    use super::*;
    use hsm_plugin_sdk::ErrorCode;

    fn plugin(dir: &std::path::Path, id: Option<&str>) -> SymmetricKeyPlugin {
        let mut pairs = vec![("state_dir".to_string(), dir.display().to_string())];
        if let Some(id) = id {
            pairs.push(("registration_id".into(), id.into()));
        }
        SymmetricKeyPlugin::create(&PluginConfig::from_pairs(pairs)).unwrap()
    }

    #[test]
    fn sign_matches_rfc4231_case_2_shape_and_persists() {
        let dir = tempfile::tempdir().unwrap();
        let p = plugin(dir.path(), None);
        assert_eq!(p.sign(b"x").unwrap_err().code(), ErrorCode::NotFound);
        assert_eq!(p.registration_id().unwrap_err().code(), ErrorCode::NotFound);
        let key = [0x0bu8; 20];
        p.import_key(Some("device-1"), &key).unwrap();
        // RFC 4231 test case 1.
        let expected = "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7";
        let sig = p.sign(b"Hi There").unwrap();
        assert_eq!(hex::encode(&sig), expected);
        // A new instance on the same state folder sees the same key and id.
        let q = plugin(dir.path(), None);
        assert_eq!(q.registration_id().unwrap(), "device-1");
        assert_eq!(hex::encode(q.sign(b"Hi There").unwrap()), expected);
    }

    #[test]
    fn the_operational_key_persists_signs_and_keeps_its_chain_in_0600_files() {
        use p256::ecdsa::signature::hazmat::PrehashVerifier;
        use p256::ecdsa::{DerSignature, VerifyingKey};
        use p256::pkcs8::DecodePublicKey;
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = plugin(dir.path(), None);
        assert_eq!(
            p.operational_public_key("op").unwrap_err().code(),
            ErrorCode::NotFound
        );
        assert_eq!(
            p.sign_operational_digest("op", &[1; 32])
                .unwrap_err()
                .code(),
            ErrorCode::NotFound
        );
        let spki = p.create_operational_key("op").unwrap();
        assert_eq!(
            p.create_operational_key("op").unwrap(),
            spki,
            "found, not remade"
        );
        let other = p.create_operational_key("op2").unwrap();
        assert_ne!(other, spki, "each label has its own key");
        let key_file = dir.path().join("symmetric/operational/op.key");
        let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let digest = [9u8; 32];
        let sig = p.sign_operational_digest("op", &digest).unwrap();
        let vk = VerifyingKey::from_public_key_der(&spki).unwrap();
        let sig = DerSignature::try_from(sig.as_slice()).unwrap();
        vk.verify_prehash(&digest, &sig).unwrap();
        assert_eq!(
            p.operational_chain("op").unwrap_err().code(),
            ErrorCode::NotFound
        );
        assert_eq!(
            p.store_operational_chain("none", "PEM").unwrap_err().code(),
            ErrorCode::NotFound
        );
        p.store_operational_chain("op", "-----BEGIN CERTIFICATE-----\n")
            .unwrap();
        // Another instance (another process in real use) finds the same key and chain.
        let q = plugin(dir.path(), None);
        assert_eq!(q.operational_public_key("op").unwrap(), spki);
        assert_eq!(
            q.operational_chain("op").unwrap(),
            "-----BEGIN CERTIFICATE-----\n"
        );
        let chain_file = dir.path().join("symmetric/operational/op.chain.pem");
        let mode = std::fs::metadata(&chain_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // Deleting removes both files; a second delete has nothing to remove.
        q.delete_operational_key("op").unwrap();
        assert!(!chain_file.exists() && !key_file.exists());
        assert_eq!(
            q.operational_public_key("op").unwrap_err().code(),
            ErrorCode::NotFound
        );
        assert_eq!(
            q.delete_operational_key("op").unwrap_err().code(),
            ErrorCode::NotFound
        );
        assert_ne!(q.create_operational_key("op").unwrap(), spki);
    }

    #[test]
    fn bad_inputs_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = plugin(dir.path(), Some("dev"));
        assert_eq!(
            p.import_key(None, &[1; 4]).unwrap_err().code(),
            ErrorCode::InvalidArgument
        );
        assert_eq!(
            p.import_key(Some("Bad Id"), &[1; 32]).unwrap_err().code(),
            ErrorCode::InvalidArgument
        );
        let cfg = PluginConfig::from_pairs([
            ("state_dir", dir.path().display().to_string()),
            ("registration_id", "UPPER".to_string()),
        ]);
        assert!(SymmetricKeyPlugin::create(&cfg).is_err());
    }
}
