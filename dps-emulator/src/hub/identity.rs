//! Hub device identities: the credential a DPS assignment gives the device in its hub, and
//! the check of a CONNECT against it.
//!
//! What the service gives a device (service documentation "How DPS works" / the attestation
//! concept pages): a symmetric-key device authenticates to its hub with the key it registered
//! with (an individual enrollment's keys, or the keys derived from the group keys); a TPM device
//! with the identity key DPS delivered in its challenge (the hub verifies SAS tokens signed in
//! the TPM); an X.509 device with its certificate chain, trusted as the enrollment trusted it.

use dps_proto::group_key::derive_device_key_b64;
use dps_proto::sas::{hub_resource, SasToken};
use serde_json::{Map, Value};

use super::{DeviceAuthentication, HubDevice};
use crate::auth::x509::{verify_group, verify_individual};
use crate::auth::{Authenticated, Section};
use crate::model::SymmetricKeyAttestation;
use crate::timeutil::unix_now;

/// The credential the device registered as `registration_id` gets in its hub, from the
/// enrollment that let it in.
pub(crate) fn authentication_for(
    auth: &Authenticated,
    registration_id: &str,
) -> Option<DeviceAuthentication> {
    let keys = |s: Option<&SymmetricKeyAttestation>| s.cloned().unwrap_or_default();
    match auth {
        Authenticated::Individual(e, section) => match section {
            Section::Symmetric => {
                let k = keys(e.attestation.symmetric_key.as_ref());
                Some(DeviceAuthentication::Sas {
                    primary_key: k.primary_key?,
                    secondary_key: k.secondary_key,
                })
            }
            Section::Tpm { identity_key, .. } => Some(DeviceAuthentication::Sas {
                primary_key: identity_key.to_b64(),
                secondary_key: None,
            }),
            Section::X509 { .. } => Some(DeviceAuthentication::SelfSigned {
                certificates: e
                    .attestation
                    .x509
                    .as_ref()
                    .and_then(|x| x.client_certificates.as_ref())
                    .map(|c| c.texts().into_iter().map(str::to_string).collect())
                    .unwrap_or_default(),
            }),
        },
        Authenticated::Group(g, section) => match section {
            Section::Symmetric => {
                let k = keys(g.attestation.symmetric_key.as_ref());
                let derive = |k: Option<String>| {
                    k.and_then(|k| derive_device_key_b64(&k, registration_id).ok())
                        .map(|k| k.as_str().to_string())
                };
                Some(DeviceAuthentication::Sas {
                    primary_key: derive(k.primary_key)?,
                    secondary_key: derive(k.secondary_key),
                })
            }
            Section::X509 { .. } => Some(DeviceAuthentication::CertificateAuthority {
                certificates: g
                    .attestation
                    .x509
                    .as_ref()
                    .and_then(|x| x.signing_certificates.as_ref())
                    .map(|c| c.texts().into_iter().map(str::to_string).collect())
                    .unwrap_or_default(),
            }),
            // DPS has no TPM groups.
            Section::Tpm { .. } => None,
        },
    }
}

/// The desired properties (`properties.desired`) of an `initialTwin` (the enrollment's, or a
/// custom allocation webhook's), which become the new device twin's desired document; none
/// without one.
pub(crate) fn desired_of(initial_twin: Option<&Value>) -> Map<String, Value> {
    initial_twin
        .and_then(|t| t.get("properties"))
        .and_then(|p| p.get("desired"))
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default()
}

/// Checks a CONNECT's credential against the device's: a SAS password for `sas` devices
/// (`sr` = `{hub}/devices/{deviceId}`, not expired, signed with one of the keys), the TLS
/// client chain for X.509 devices (leaf CN = device id, trusted as the enrollment was). The
/// reason of a refusal is for the log only.
pub(crate) fn verify_connect(
    device: &HubDevice,
    password: &str,
    chain: &[Vec<u8>],
) -> Result<(), String> {
    match &device.authentication {
        DeviceAuthentication::Sas {
            primary_key,
            secondary_key,
        } => {
            if password.is_empty() {
                return Err("a SharedAccessSignature password is required".into());
            }
            let token = SasToken::parse(password).map_err(|e| e.to_string())?;
            token
                .check_claims(
                    Some(&hub_resource(&device.hub, &device.device_id)),
                    None,
                    unix_now(),
                )
                .map_err(|e| e.to_string())?;
            std::iter::once(primary_key)
                .chain(secondary_key)
                .any(|k| token.verify_signature_b64(k).is_ok())
                .then_some(())
                .ok_or_else(|| "the token's signature does not verify".to_string())
        }
        DeviceAuthentication::SelfSigned { certificates } => {
            let certs: Vec<&str> = certificates.iter().map(String::as_str).collect();
            verify_individual(chain, &certs, &device.device_id).map_err(|e| e.to_string())
        }
        DeviceAuthentication::CertificateAuthority { certificates } => {
            let certs: Vec<&str> = certificates.iter().map(String::as_str).collect();
            verify_group(chain, &certs, &device.device_id).map_err(|e| e.to_string())
        }
    }
}
