//! The device's side of each attestation: its registration id, what goes in the register body,
//! and SAS tokens signed inside the plugin.

use super::error::DpsError;
use super::model::Attestation;
use super::sas::{build_token, SasSigner};
use crate::plugin::{PluginBytes, PluginError, PluginInstance};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use dps_proto::wire::TpmAttestation;

/// Which plugin key signs a SAS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SasKey {
    /// The TPM identity key (after activation).
    TpmIdentity,
    /// The symmetric key.
    Symmetric,
}

/// A [`SasSigner`] over a plugin instance.
#[derive(Debug)]
pub struct PluginSasSigner<'a> {
    /// The instance holding the key.
    pub instance: &'a PluginInstance,
    /// Which key.
    pub key: SasKey,
}

impl SasSigner for PluginSasSigner<'_> {
    type Error = PluginError;
    type Signature = PluginBytes;
    fn sign(&self, data: &[u8]) -> Result<PluginBytes, PluginError> {
        match self.key {
            SasKey::TpmIdentity => self.instance.tpm()?.sign_with_identity(data),
            SasKey::Symmetric => self.instance.symmetric_key()?.sign(data),
        }
    }
}

/// The TPM registration id: lowercase unpadded base32 of SHA-256 of the marshalled EK, the
/// C SDK's rule (52 characters); [`dps_proto`]'s, which the emulator uses too.
pub use dps_proto::tpm_registration_id;

/// The device key of a symmetric-key enrollment group member:
/// HMAC-SHA256(group key, registration id). The result goes into the plugin with `import_key`.
pub use dps_proto::group_key::derive_device_key as derive_group_device_key;

/// The registration id a registration with `attestation` will present: `override_id`, or the
/// one the plugin derives (what a CSR's CN must be).
pub fn device_registration_id(
    instance: &PluginInstance,
    attestation: Attestation,
    override_id: Option<&str>,
) -> Result<String, DpsError> {
    Ok(DeviceIdentity::read(instance, attestation, override_id)?.registration_id)
}

/// What the device presents, gathered from the plugin once per registration.
pub(crate) struct DeviceIdentity {
    pub attestation: Attestation,
    pub registration_id: String,
    pub tpm: Option<TpmAttestation>,
}

impl DeviceIdentity {
    /// Reads the identity from the plugin; `override_id` replaces the derived registration id.
    pub(super) fn read(
        instance: &PluginInstance,
        attestation: Attestation,
        override_id: Option<&str>,
    ) -> Result<Self, DpsError> {
        let (derived, tpm) = match attestation {
            Attestation::Tpm => {
                let tpm = instance.tpm()?;
                let ek = tpm.endorsement_key()?;
                let srk = tpm.storage_root_key()?;
                let id = match override_id {
                    Some(_) => None,
                    None => Some(tpm_registration_id(&ek)),
                };
                (
                    id,
                    Some(TpmAttestation {
                        endorsement_key: B64.encode(ek),
                        storage_root_key: Some(B64.encode(srk)),
                    }),
                )
            }
            Attestation::X509 => match override_id {
                Some(_) => (None, None),
                None => (Some(instance.x509()?.common_name()?), None),
            },
            Attestation::SymmetricKey => match override_id {
                // The plugin must still offer the interface that will sign.
                Some(_) => {
                    instance.symmetric_key()?;
                    (None, None)
                }
                None => (Some(instance.symmetric_key()?.registration_id()?), None),
            },
            other => {
                return Err(DpsError::Config {
                    reason: format!("{other} attestation is not supported by this client"),
                })
            }
        };
        let registration_id = match (override_id, derived) {
            (Some(o), _) => o.to_string(),
            (None, Some(d)) => d.trim_end_matches('\0').to_string(),
            (None, None) => String::new(),
        };
        Ok(Self {
            attestation,
            registration_id,
            tpm,
        })
    }
}

/// A DPS SAS for `scope/registrations/id`, or `None` when the attestation sends none.
pub(crate) fn dps_token(
    instance: &PluginInstance,
    key: SasKey,
    id_scope: &str,
    registration_id: &str,
    expiry: u64,
    key_name: &str,
) -> Result<String, PluginError> {
    build_token(
        &PluginSasSigner { instance, key },
        &super::sas::dps_resource(id_scope, registration_id),
        expiry,
        Some(key_name),
    )
}
