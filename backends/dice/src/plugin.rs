//! The X.509 interface over a [`DeviceChain`]: chain, registration id, signing in place.

use hsm_plugin_sdk::{HsmError, HsmPlugin, PluginConfig, PluginInfo, SignAlgorithm, X509Hsm};
use p256::ecdsa::{signature::hazmat::PrehashSigner, Signature};
use p256::pkcs8::{EncodePrivateKey, LineEnding};
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

    #[test]
    fn cdi_extension_critical_setting_reaches_the_certificate() {
        assert!(cdi_extension_critical(None));
        assert!(cdi_extension_critical(Some("true")));
        assert!(!cdi_extension_critical(Some("false")));
    }
}
