//! The X.509 interface over a [`DeviceChain`]: chain, registration id, signing in place.

use hsm_plugin_sdk::{
    secret_file, ErrorCode, HsmError, HsmPlugin, OperationalKeyHsm, PluginConfig, PluginInfo,
    SignAlgorithm, X509Hsm,
};
use p256::ecdsa::{signature::hazmat::PrehashSigner, Signature};
use p256::pkcs8::EncodePublicKey;
use p256::pkcs8::{EncodePrivateKey, LineEnding};
use std::path::PathBuf;
use zeroize::Zeroizing;

use crate::chain::{build_chain_with, ChainOptions, DeviceChain};
use crate::error::DiceError;
use crate::settings::{DiceSettings, UdsSource};
use crate::state::{load_or_create_root_key, load_or_create_uds};

/// One DICE device: its chain and leaf key, derived once at `create`.
#[derive(Debug)]
pub struct DicePlugin {
    chain: DeviceChain,
    allow_key_export: bool,
    /// Where the issued operational chains are kept (the keys are derived, never stored).
    operational_dir: PathBuf,
}

impl DicePlugin {
    /// Builds an instance from parsed settings (what `create` does after parsing).
    pub fn from_settings(settings: DiceSettings) -> Result<Self, DiceError> {
        let uds = match settings.uds {
            UdsSource::Configured(uds) => uds,
            UdsSource::StateFile => load_or_create_uds(&settings.state_dir)?,
        };
        let root_key =
            load_or_create_root_key(&settings.state_dir, settings.root_ca_key_path.as_deref())?;
        let chain = build_chain_with(
            &uds,
            &settings.inputs,
            &root_key,
            settings.registration_id.as_deref(),
            &ChainOptions {
                cdi_extension_critical: settings.cdi_extension_critical,
            },
        )?;
        Ok(DicePlugin {
            chain,
            allow_key_export: settings.allow_key_export,
            operational_dir: crate::state::dice_dir(&settings.state_dir).join("operational"),
        })
    }

    /// The derived chain (DER certificates, IDs).
    pub fn chain(&self) -> &DeviceChain {
        &self.chain
    }
}

/// ECDSA P-256 over a 32-byte digest with `key`, DER `Ecdsa-Sig-Value` out. RFC 6979: the
/// same digest gives the same signature. Shared by the plugin and the benchmark baseline.
pub fn sign_p256_digest(key: &p256::ecdsa::SigningKey, digest: &[u8]) -> Result<Vec<u8>, HsmError> {
    if digest.len() != 32 {
        return Err(HsmError::invalid_argument(format!(
            "ECDSA P-256/SHA-256 signs a 32-byte digest, got {} bytes",
            digest.len()
        )));
    }
    let signature: Signature = key
        .sign_prehash(digest)
        .map_err(|_| HsmError::internal("ECDSA signing failed"))?;
    Ok(signature.to_der().as_bytes().to_vec())
}

impl HsmPlugin for DicePlugin {
    const INFO: PluginInfo = PluginInfo {
        name: "dice",
        version: env!("CARGO_PKG_VERSION"),
        vendor: "hsmkit",
        description: "Software DICE engine: open-dice X.509 chain derived from a per-device UDS",
    };
    const SETTINGS: &'static [hsm_plugin_sdk::Setting] = crate::settings::SETTINGS;

    fn create(config: &PluginConfig) -> Result<Self, HsmError> {
        let settings = DiceSettings::from_config(config)?;
        Ok(DicePlugin::from_settings(settings)?)
    }
}

impl X509Hsm for DicePlugin {
    fn certificate_chain_pem(&self) -> Result<String, HsmError> {
        Ok(self.chain.chain_pem.clone())
    }

    fn common_name(&self) -> Result<String, HsmError> {
        Ok(self.chain.registration_id.clone())
    }

    fn sign_digest(&self, algorithm: SignAlgorithm, digest: &[u8]) -> Result<Vec<u8>, HsmError> {
        match algorithm {
            SignAlgorithm::EcdsaP256Sha256 => sign_p256_digest(&self.chain.leaf_key, digest),
            other => Err(HsmError::not_supported(format!(
                "the DICE leaf key is ECDSA P-256; {other:?} is not supported"
            ))),
        }
    }

    fn export_private_key_pem(&self) -> Result<Zeroizing<String>, HsmError> {
        if !self.allow_key_export {
            return Err(HsmError::not_supported(
                "private key export is disabled (set allow_key_export=true to allow it)",
            ));
        }
        self.chain
            .leaf_key
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|_| HsmError::internal("encoding the leaf key as PKCS#8 failed"))
    }
}

impl DicePlugin {
    /// The operational key under `label`, derived from CDI_Attest each time (never stored).
    fn operational_key(&self, label: &str) -> Result<p256::ecdsa::SigningKey, HsmError> {
        Ok(crate::derive::operational_key(
            &self.chain.operational_root,
            label,
        )?)
    }

    fn chain_path(&self, label: &str) -> PathBuf {
        // Labels reach here checked by the SDK: plain file names.
        self.operational_dir.join(format!("{label}.chain.pem"))
    }
}

/// Operational keys derived from the CDI chain: every label has its key (reproducible, the
/// same after a restart, different after a firmware change), so creating only derives it.
/// The issued chain is kept in `<state_dir>/dice/operational/<label>.chain.pem` (0600).
impl OperationalKeyHsm for DicePlugin {
    fn create_operational_key(&self, label: &str) -> Result<Vec<u8>, HsmError> {
        self.operational_public_key(label)
    }

    fn operational_public_key(&self, label: &str) -> Result<Vec<u8>, HsmError> {
        self.operational_key(label)?
            .verifying_key()
            .to_public_key_der()
            .map(|d| d.as_bytes().to_vec())
            .map_err(|_| HsmError::internal("cannot encode the public key"))
    }

    fn sign_operational_digest(&self, label: &str, digest: &[u8; 32]) -> Result<Vec<u8>, HsmError> {
        sign_p256_digest(&self.operational_key(label)?, digest)
    }

    fn store_operational_chain(&self, label: &str, pem: &str) -> Result<(), HsmError> {
        secret_file::write(&self.chain_path(label), pem.as_bytes())
    }

    fn operational_chain(&self, label: &str) -> Result<String, HsmError> {
        let bytes = match secret_file::read_private(&self.chain_path(label)) {
            Err(e) if e.code() == ErrorCode::NotFound => {
                return Err(HsmError::not_found(format!(
                    "no chain stored for operational key `{label}`"
                )))
            }
            other => other?,
        };
        String::from_utf8(bytes).map_err(|_| {
            HsmError::device(format!("{} is not UTF-8", self.chain_path(label).display()))
        })
    }

    /// The key is derived, so only the chain goes (the ABI's rule for derived keys): the
    /// same label gives the same key again, a new key needs a new label.
    fn delete_operational_key(&self, label: &str) -> Result<(), HsmError> {
        let path = self.chain_path(label);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(HsmError::device(format!(
                "cannot remove {}: {e}",
                path.display()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certificates::OPEN_DICE_INPUT;
    use der::Decode;

    fn cdi_extension_critical(setting: Option<&str>) -> bool {
        let dir = tempfile::tempdir().unwrap();
        let uds = "11".repeat(32);
        let mut pairs = vec![
            ("state_dir", dir.path().to_str().unwrap()),
            ("uds_hex", uds.as_str()),
        ];
        if let Some(value) = setting {
            pairs.push(("cdi_extension_critical", value));
        }
        let plugin = DicePlugin::create(&PluginConfig::from_pairs(pairs)).unwrap();
        let cdi = x509_cert::Certificate::from_der(&plugin.chain().certificates[1]).unwrap();
        cdi.tbs_certificate
            .extensions
            .unwrap_or_default()
            .iter()
            .find(|e| e.extn_id == OPEN_DICE_INPUT)
            .map(|e| e.critical)
            .unwrap()
    }

    fn device(dir: &std::path::Path, uds: &str, code_hash: &str) -> DicePlugin {
        DicePlugin::create(&PluginConfig::from_pairs([
            ("state_dir", dir.to_str().unwrap()),
            ("uds_hex", uds),
            ("code_hash_hex", code_hash),
        ]))
        .unwrap()
    }

    #[test]
    fn operational_keys_are_derived_per_label_and_firmware_and_their_chain_is_kept() {
        use p256::ecdsa::signature::hazmat::PrehashVerifier;
        use p256::ecdsa::{DerSignature, VerifyingKey};
        use p256::pkcs8::DecodePublicKey;
        let dir = tempfile::tempdir().unwrap();
        let (uds, fw1, fw2) = ("11".repeat(32), "aa".repeat(64), "bb".repeat(64));
        let a = device(dir.path(), &uds, &fw1);
        let spki = a.create_operational_key("op").unwrap();
        // Reproducible: another instance (a restart) derives the same key; nothing is stored.
        let again = device(dir.path(), &uds, &fw1);
        assert_eq!(again.operational_public_key("op").unwrap(), spki);
        assert!(!dir.path().join("dice/operational").exists());
        // Its own label: not the TLS leaf key, not another label's key.
        let leaf = a
            .chain()
            .leaf_key
            .verifying_key()
            .to_public_key_der()
            .unwrap();
        assert_ne!(leaf.as_bytes(), &spki[..]);
        assert_ne!(a.create_operational_key("op2").unwrap(), spki);
        // New measured firmware, new key; another device, another key.
        assert_ne!(
            device(dir.path(), &uds, &fw2)
                .create_operational_key("op")
                .unwrap(),
            spki
        );
        let other = device(dir.path(), &"22".repeat(32), &fw1);
        assert_ne!(other.create_operational_key("op").unwrap(), spki);
        // It signs what its public key verifies.
        let digest = [5u8; 32];
        let sig = a.sign_operational_digest("op", &digest).unwrap();
        let vk = VerifyingKey::from_public_key_der(&spki).unwrap();
        vk.verify_prehash(&digest, &DerSignature::try_from(sig.as_slice()).unwrap())
            .unwrap();
        // The chain is stored beside it and read back by the next instance.
        assert_eq!(
            a.operational_chain("op").unwrap_err().code(),
            ErrorCode::NotFound
        );
        a.store_operational_chain("op", "PEM chain").unwrap();
        assert_eq!(again.operational_chain("op").unwrap(), "PEM chain");
    }

    #[test]
    fn cdi_extension_critical_setting_reaches_the_certificate() {
        assert!(cdi_extension_critical(None));
        assert!(cdi_extension_critical(Some("true")));
        assert!(!cdi_extension_critical(Some("false")));
    }
}
