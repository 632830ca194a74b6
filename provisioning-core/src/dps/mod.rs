//! The DPS device client: what the Azure IoT C SDK's `prov_dev_client_ll` does, over HTTPS or
//! MQTT ([`Transport`]), for any plugin. TPM (EK/SRK, challenge, identity key), X.509 (mutual TLS signed inside the
//! plugin) and symmetric key (SAS signed by the plugin), with Retry-After, back-off with jitter
//! and one overall deadline.
//!
//! ```no_run
//! # async fn demo(instance: std::sync::Arc<provisioning_core::plugin::PluginInstance>) -> Result<(), provisioning_core::dps::DpsError> {
//! use provisioning_core::dps::{register, Attestation, DpsClientConfig};
//! let config = DpsClientConfig::new("0ne00000001");
//! let result = register(&config, instance, Attestation::SymmetricKey, &|_| {}).await?;
//! println!("{} on {}", result.device_id, result.assigned_hub);
//! # Ok(()) }
//! ```

mod client;
mod config;
mod credentials;
mod error;
mod model;
pub mod probe;
mod proxy;
mod retry;
pub mod sas;
pub(crate) mod tls;
pub(crate) mod transport;

pub use client::register;
pub use config::{ApiVersion, DpsClientConfig, RetryPolicy, GLOBAL_ENDPOINT};
pub use credentials::{
    derive_group_device_key, device_registration_id, tpm_registration_id, PluginSasSigner, SasKey,
};
pub use error::DpsError;
pub use model::{Attestation, ProgressEvent, RegistrationResult};
pub use tls::{
    root_store, tls_client_config_signing_through_plugin, tls_client_config_with_operational_key,
    TlsSetupError,
};
pub use transport::{Transport, UnknownTransport};
