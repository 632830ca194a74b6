//! After DPS: the provisioning record in the state folder (reused by later runs unless forced),
//! IoT Hub credentials from it, and the renewal of an issued operational certificate.

mod enrollment;
mod hub;
mod record;
mod renewal;

pub use crate::dps::tls_client_config_signing_through_plugin;
pub use enrollment::{enrollment_info, EnrollmentInfoError};
pub use hub::{hub_credentials, hub_sas_token, hub_sas_token_until, HubCredentials, HubTokenError};
pub use record::{
    load, record_path, save, ProvisioningRecord, RecordError, RECORD_FILE, RECORD_VERSION,
};
pub use renewal::{renew, RenewError, RenewOutcome, RenewWhen, Renewed, DUE_PERCENT};

use crate::dps::probe::normalized_endpoint;
use crate::dps::{
    register, Attestation, DpsClientConfig, DpsError, ProgressEvent, RegistrationResult,
};
use crate::plugin::PluginInstance;
use std::path::Path;
use std::sync::Arc;

/// Whether [`provision`] asked DPS or reused the saved record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The saved record matched and was used; DPS was not contacted.
    Reused,
    /// DPS was asked and the new record saved.
    Registered,
}

/// Provisioning failed.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    /// Registration failed.
    #[error(transparent)]
    Dps(#[from] DpsError),
    /// The record could not be read or written.
    #[error(transparent)]
    Record(#[from] RecordError),
    /// Registration with certificate issuance failed (the plugin cannot hold an operational
    /// key, the CSR, DPS, or the issued chain).
    #[error(transparent)]
    Issue(#[from] crate::issuance::IssueError),
}

impl ProvisionError {
    /// The failure's class, for exit codes and `--json` ([`crate::error_kind`]).
    pub fn error_kind(&self) -> crate::error_kind::ErrorKind {
        match self {
            ProvisionError::Dps(e) => e.error_kind(),
            ProvisionError::Record(e) => e.error_kind(),
            ProvisionError::Issue(e) => e.error_kind(),
        }
    }
}

/// Whether a record's saved endpoint is the configured one (older records kept the setting
/// as written, so both sides are normalised).
fn same_endpoint(saved: &str, config: &DpsClientConfig) -> bool {
    normalized_endpoint(saved, config.transport)
        == normalized_endpoint(&config.endpoint, config.transport)
}

/// Provisions the device: reuses `<state_dir>/provisioning.json` when it is for the same id
/// scope, endpoint, attestation and (when given) registration id, unless `force`; otherwise
/// registers with DPS and saves the result atomically.
pub async fn provision(
    config: &DpsClientConfig,
    instance: Arc<PluginInstance>,
    attestation: Attestation,
    state_dir: &Path,
    force: bool,
    progress: &(dyn Fn(&ProgressEvent) + Sync),
) -> Result<(ProvisioningRecord, Outcome), ProvisionError> {
    if let Some(saved) = reusable(state_dir, config, attestation, force, |_| true)? {
        return Ok((saved, Outcome::Reused));
    }
    let plugin = instance.plugin().name().to_string();
    let result = register(config, instance, attestation, progress).await?;
    let record = new_record(config, plugin, result, None);
    save(state_dir, &record)?;
    Ok((record, Outcome::Registered))
}

/// The saved record, when not `force` and it is for the same id scope, endpoint, attestation
/// and (when given) registration id, and `also` holds for it.
fn reusable(
    state_dir: &Path,
    config: &DpsClientConfig,
    attestation: Attestation,
    force: bool,
    also: impl Fn(&ProvisioningRecord) -> bool,
) -> Result<Option<ProvisioningRecord>, ProvisionError> {
    if force {
        return Ok(None);
    }
    Ok(load(state_dir)?.filter(|saved| {
        saved.id_scope == config.id_scope
            && same_endpoint(&saved.endpoint, config)
            && saved.result.attestation == attestation
            && config
                .registration_id
                .as_deref()
                .is_none_or(|id| id == saved.result.registration_id)
            && also(saved)
    }))
}

/// The record of a registration made now with `config`.
fn new_record(
    config: &DpsClientConfig,
    plugin: String,
    result: RegistrationResult,
    operational_key_label: Option<String>,
) -> ProvisioningRecord {
    ProvisioningRecord {
        version: RECORD_VERSION,
        endpoint: normalized_endpoint(&config.endpoint, config.transport),
        id_scope: config.id_scope.clone(),
        plugin,
        result,
        provisioned_at_unix: crate::dps::sas::expiry_from_now(std::time::Duration::ZERO),
        operational_key_label,
    }
}

/// [`provision`] with certificate issuance: registers through
/// [`crate::issuance::register_with_certificate`] (operational key under `label`, its chain
/// stored through the plugin), and records the issued chain (`issuedCertificateChain` in the
/// record). A saved record is reused only when it already holds an issued chain.
pub async fn provision_with_certificate(
    config: &DpsClientConfig,
    instance: Arc<PluginInstance>,
    attestation: Attestation,
    state_dir: &Path,
    force: bool,
    label: &str,
    progress: &(dyn Fn(&ProgressEvent) + Sync),
) -> Result<(ProvisioningRecord, Outcome), ProvisionError> {
    let has_chain = |saved: &ProvisioningRecord| saved.result.issued_certificate_chain.is_some();
    if let Some(saved) = reusable(state_dir, config, attestation, force, has_chain)? {
        return Ok((saved, Outcome::Reused));
    }
    let plugin = instance.plugin().name().to_string();
    let (result, _chain) =
        crate::issuance::register_with_certificate(config, instance, attestation, label, progress)
            .await?;
    let label = (label != crate::issuance::OPERATIONAL_KEY_LABEL).then(|| label.to_string());
    let record = new_record(config, plugin, result, label);
    save(state_dir, &record)?;
    Ok((record, Outcome::Registered))
}
