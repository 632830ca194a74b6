//! The device's side of each attestation: its registration id, what goes in the register body,
//! and SAS tokens signed inside the plugin.

use super::model::{Attestation, TpmBody};
use super::sas::{build_token, SasSigner};
use crate::plugin::{PluginBytes, PluginError, PluginInstance};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;

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
/// C SDK's rule (52 characters). One definition, shared with the emulator's side.
pub use hsm_tpm_common::registration_id_from_ek as tpm_registration_id;

/// The device key of a symmetric-key enrollment group member:
/// HMAC-SHA256(group key, registration id). The result goes into the plugin with `import_key`.
pub fn derive_group_device_key(
    group_key: &[u8],
    registration_id: &str,
) -> zeroize::Zeroizing<Vec<u8>> {
    use hmac::Mac;
    // HMAC accepts keys of any length, so this cannot fail; an empty key still yields a MAC.
    let mut mac = match hmac::Hmac::<sha2::Sha256>::new_from_slice(group_key) {
        Ok(m) => m,
        Err(_) => return zeroize::Zeroizing::new(Vec::new()),
    };
    mac.update(registration_id.as_bytes());
    zeroize::Zeroizing::new(mac.finalize().into_bytes().to_vec())
}

/// What the device presents, gathered from the plugin once per registration.
pub(crate) struct DeviceIdentity {
    pub attestation: Attestation,
    pub registration_id: String,
    pub tpm: Option<TpmBody>,
}

impl DeviceIdentity {
    /// Reads the identity from the plugin; `override_id` replaces the derived registration id.
    pub fn read(
        instance: &PluginInstance,
        attestation: Attestation,
        override_id: Option<&str>,
    ) -> Result<Self, PluginError> {
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
                    Some(TpmBody {
                        endorsement_key: B64.encode(ek),
                        storage_root_key: B64.encode(srk),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tpm_registration_id_known_answer() {
        // SHA-256("") base32, computed independently (python base64.b32encode).
        assert_eq!(
            tpm_registration_id(b""),
            "4oymiquy7qobjgx36tejs35zeqt24qpemsnzgtfeswmrw6csxbkq"
        );
    }

    #[test]
    fn group_key_derivation_matches_the_documented_formula() {
        use hmac::Mac;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"group-key")
            .unwrap_or_else(|_| unreachable!());
        mac.update(b"device-7");
        assert_eq!(
            derive_group_device_key(b"group-key", "device-7").as_slice(),
            &mac.finalize().into_bytes()[..]
        );
    }
}
