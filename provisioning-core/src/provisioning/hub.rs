//! IoT Hub credentials after provisioning: SAS tokens signed inside the plugin (TPM identity
//! key or symmetric key); for X.509 the chain and a TLS client configuration that signs through
//! the plugin (see [`crate::dps::tls_client_config_signing_through_plugin`]).

use crate::dps::sas::{build_token, expiry_from_now, hub_resource};
use crate::dps::{Attestation, PluginSasSigner, SasKey};
use crate::plugin::{PluginError, PluginInstance};
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
    if ttl.as_secs() == 0 {
        return Err(HubTokenError::ZeroTtl);
    }
    Ok(build_token(
        &PluginSasSigner { instance, key },
        &hub_resource(hub, device_id),
        expiry_from_now(ttl),
        None,
    )?)
}
