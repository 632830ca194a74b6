//! IoT Hub credentials after provisioning: SAS tokens signed inside the plugin (TPM identity
//! key or symmetric key); for X.509 the chain and a TLS client configuration that signs through
//! the plugin (see [`crate::dps::tls_client_config_signing_through_plugin`]).

use super::ProvisioningRecord;
use crate::dps::sas::{build_token, expiry_from_now, hub_resource};
use crate::dps::{Attestation, PluginSasSigner, SasKey};
use crate::plugin::{PluginError, PluginInstance};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Why no hub token could be made.
#[derive(Debug, thiserror::Error)]
pub enum HubTokenError {
    /// X.509 devices authenticate with their certificate, not a token.
    #[error("X.509 devices connect to IoT Hub with their certificate (mutual TLS), not a SAS token; use the certificate chain and a TLS client that signs through the plugin")]
    X509HasNoToken,
    /// An attestation kind this version cannot make hub tokens for.
    #[error("{0} devices have no IoT Hub SAS token in this version of hsmkit")]
    Unsupported(Attestation),
    /// The hub or device id is empty or has characters a token scope cannot hold.
    #[error("invalid hub `{hub}` or device id `{device_id}`; provision the device first")]
    BadScope {
        /// The hub given.
        hub: String,
        /// The device id given.
        device_id: String,
    },
    /// A zero TTL would make an already expired token.
    #[error("the token lifetime must be at least one second")]
    ZeroTtl,
    /// The plugin could not sign (its error is in the message, so not also the `source()`).
    #[error("the HSM plugin could not sign the token: {0}")]
    Plugin(PluginError),
}

impl HubTokenError {
    /// The failure's class, for exit codes and `--json` ([`crate::error_kind`]).
    pub fn error_kind(&self) -> crate::error_kind::ErrorKind {
        use crate::error_kind::ErrorKind;
        match self {
            HubTokenError::X509HasNoToken | HubTokenError::Unsupported(_) => ErrorKind::Usage,
            HubTokenError::BadScope { .. } => ErrorKind::Config,
            HubTokenError::ZeroTtl => ErrorKind::Usage,
            HubTokenError::Plugin(e) => e.error_kind(),
        }
    }
}

impl From<PluginError> for HubTokenError {
    fn from(e: PluginError) -> Self {
        HubTokenError::Plugin(e)
    }
}

/// A SAS token for `{hub}/devices/{device_id}` valid for `ttl`, signed by the plugin (TPM:
/// identity key; symmetric key: the device key). No `skn`: device tokens name no policy.
pub fn hub_sas_token(
    instance: &PluginInstance,
    attestation: Attestation,
    hub: &str,
    device_id: &str,
    ttl: Duration,
) -> Result<String, HubTokenError> {
    if ttl.as_secs() == 0 {
        return Err(HubTokenError::ZeroTtl);
    }
    hub_sas_token_until(instance, attestation, hub, device_id, expiry_from_now(ttl))
}

/// A SAS token for `{hub}/devices/{device_id}` that expires at `expiry` (Unix seconds, the
/// token's `se`), signed by the plugin: what [`hub_sas_token`] and the IoT Hub client, which
/// needs the expiry to know when to renew, both make.
pub fn hub_sas_token_until(
    instance: &PluginInstance,
    attestation: Attestation,
    hub: &str,
    device_id: &str,
    expiry: u64,
) -> Result<String, HubTokenError> {
    let key = match attestation {
        Attestation::Tpm => SasKey::TpmIdentity,
        Attestation::SymmetricKey => SasKey::Symmetric,
        Attestation::X509 => return Err(HubTokenError::X509HasNoToken),
        other => return Err(HubTokenError::Unsupported(other)),
    };
    let ok = |s: &str| !s.is_empty() && !s.bytes().any(|b| b.is_ascii_control() || b == b' ');
    if !ok(hub) || !ok(device_id) {
        return Err(HubTokenError::BadScope {
            hub: hub.escape_debug().to_string(),
            device_id: device_id.escape_debug().to_string(),
        });
    }
    Ok(build_token(
        &PluginSasSigner { instance, key },
        &hub_resource(hub, device_id),
        expiry,
        None,
    )?)
}

/// A provisioned device's IoT Hub credentials, as `hsmkit hub-token --json` prints them: a
/// SAS token signed inside the plugin (TPM, symmetric key) or the certificate chain to present
/// with mutual TLS (X.509; the key stays in the plugin).
#[derive(Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HubCredentials {
    /// The IoT hub host name.
    pub assigned_hub: String,
    /// The device id on the hub.
    pub device_id: String,
    /// The attestation the device was provisioned with.
    pub attestation: String,
    /// The SAS token (TPM, symmetric key). Secret for its lifetime.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sas_token: Option<String>,
    /// The token's lifetime in seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_in_secs: Option<u64>,
    /// The certificate chain, PEM, leaf first (X.509).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificate_chain_pem: Option<String>,
}

impl std::fmt::Debug for HubCredentials {
    // The token stays out of debug output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubCredentials")
            .field("assigned_hub", &self.assigned_hub)
            .field("device_id", &self.device_id)
            .field("attestation", &self.attestation)
            .finish_non_exhaustive()
    }
}

/// The hub credentials of the device `record` describes, made through `instance`: a SAS token
/// valid for `ttl` ([`hub_sas_token`]) or, for X.509, the plugin's certificate chain.
pub fn hub_credentials(
    instance: &PluginInstance,
    record: &ProvisioningRecord,
    ttl: Duration,
) -> Result<HubCredentials, HubTokenError> {
    let attestation = record.attestation();
    let mut out = HubCredentials {
        assigned_hub: record.assigned_hub().to_string(),
        device_id: record.device_id().to_string(),
        attestation: attestation.as_str().to_string(),
        sas_token: None,
        expires_in_secs: None,
        certificate_chain_pem: None,
    };
    if attestation == Attestation::X509 {
        // X.509 devices authenticate to the hub with mutual TLS; the key stays in the plugin
        // (crate::dps::tls_client_config_signing_through_plugin).
        out.certificate_chain_pem = Some(instance.x509()?.certificate_chain_pem()?);
    } else {
        out.sas_token = Some(hub_sas_token(
            instance,
            attestation,
            record.assigned_hub(),
            record.device_id(),
            ttl,
        )?);
        out.expires_in_secs = Some(ttl.as_secs());
    }
    Ok(out)
}
