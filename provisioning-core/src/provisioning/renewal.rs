//! Renewal of the operational certificate DPS issued: when the leaf nears its notAfter (or when
//! forced), a new operational key under the next generation's label
//! ([`crate::issuance::next_operational_key_label`]), a CSR for it in a new registration with
//! the same onboarding attestation, the issued chain verified and stored under the new label,
//! the provisioning record replaced atomically, and only then the old key removed.
//!
//! The order is what keeps the device working: until the new record is saved, the record,
//! the old key and its chain are untouched, so a failure at any step (DPS refusing, a chain
//! that does not verify, a full disk) leaves the device as it was.

use super::record::{load, record_path, save, ProvisioningRecord, RECORD_VERSION};
use crate::dps::{DpsClientConfig, ProgressEvent};
use crate::issuance::{leaf_validity, next_operational_key_label, ChainError, IssueError};
use crate::plugin::{PluginErrorCode, PluginInstance};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// When to renew.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RenewWhen {
    /// Now, whatever the certificate's expiry.
    Always,
    /// Only when the leaf expires within this long.
    Within(Duration),
    /// Once [`DUE_PERCENT`] of the leaf's validity period has passed: the service's
    /// suggestion ("sends a renewal request when the certificate reaches a set percentage of
    /// its validity period, such as 80 percent",
    /// <https://learn.microsoft.com/azure/iot-hub/concept-certificate-renewal>).
    Due,
}

/// How much of the validity period [`RenewWhen::Due`] lets pass, in percent.
pub const DUE_PERCENT: u64 = 80;

impl RenewWhen {
    /// Whether a leaf valid from `not_before` to `not_after` is to be renewed at `now` (Unix
    /// seconds).
    pub fn is_due(self, not_before: u64, not_after: u64, now: u64) -> bool {
        match self {
            RenewWhen::Always => true,
            RenewWhen::Within(before) => now.saturating_add(before.as_secs()) >= not_after,
            RenewWhen::Due => {
                let span = not_after.saturating_sub(not_before);
                now >= not_before
                    .saturating_add(span / 100 * DUE_PERCENT + span % 100 * DUE_PERCENT / 100)
            }
        }
    }
}

/// Why renewal did not happen.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RenewError {
    /// There is no provisioning record.
    #[error("the device is not provisioned yet ({path} does not exist): run `hsmkit provision --issue-certificate` first")]
    NotProvisioned {
        /// The record's path.
        path: String,
    },
    /// The device was provisioned without certificate issuance: nothing to renew.
    #[error("the device has no issued certificate to renew (it was provisioned without certificate issuance): run `hsmkit provision --issue-certificate --force`")]
    NoCertificate,
    /// The recorded leaf cannot be read.
    #[error("the recorded issued certificate cannot be read")]
    RecordedChain(#[source] ChainError),
    /// The record could not be read or written; the old record, key and chain are unchanged.
    #[error(transparent)]
    Record(#[from] super::RecordError),
    /// The re-registration failed; the old record, key and chain are unchanged.
    #[error(transparent)]
    Issue(#[from] IssueError),
}

impl RenewError {
    /// The failure's class, for exit codes and `--json` ([`crate::error_kind`]).
    pub fn error_kind(&self) -> crate::error_kind::ErrorKind {
        use crate::error_kind::ErrorKind;
        match self {
            // What the state folder holds does not allow a renewal: provision first.
            RenewError::NotProvisioned { .. }
            | RenewError::NoCertificate
            | RenewError::RecordedChain(_) => ErrorKind::Config,
            RenewError::Record(e) => e.error_kind(),
            RenewError::Issue(e) => e.error_kind(),
        }
    }
}

/// What a renewal did.
#[derive(Clone, Debug)]
pub enum RenewOutcome {
    /// The certificate is not due; DPS was not contacted.
    NotDue {
        /// The leaf's notAfter (Unix seconds).
        not_after: u64,
        /// The record, unchanged.
        record: Box<ProvisioningRecord>,
    },
    /// A new certificate was issued and recorded.
    Renewed(Box<Renewed>),
}

/// A completed renewal.
#[derive(Clone, Debug)]
pub struct Renewed {
    /// The new record (saved).
    pub record: ProvisioningRecord,
    /// The label of the replaced key.
    pub old_label: String,
    /// The label of the new key.
    pub new_label: String,
    /// The replaced leaf's notAfter (Unix seconds).
    pub old_not_after: u64,
    /// The new leaf's notAfter (Unix seconds).
    pub new_not_after: u64,
    /// Whether the old key (and its chain) was removed from the plugin.
    pub old_key_removed: bool,
    /// Why it was not removed, for the user (the renewal itself succeeded).
    pub warning: Option<String>,
}

/// Renews the operational certificate of the device provisioned in `state_dir` when `when`
/// says so. The registration goes to the DPS instance and id scope the record names, as the
/// recorded registration id, with `config`'s other settings (trust, transport, timeouts);
/// the attestation is the recorded one. See the module documentation for the order of steps.
pub async fn renew(
    config: &DpsClientConfig,
    instance: Arc<PluginInstance>,
    state_dir: &Path,
    when: RenewWhen,
    progress: &(dyn Fn(&ProgressEvent) + Sync),
) -> Result<RenewOutcome, RenewError> {
    let record = load(state_dir)?.ok_or_else(|| RenewError::NotProvisioned {
        path: record_path(state_dir).display().to_string(),
    })?;
    let (Some(old_label), Some(chain)) = (
        record.operational_key_label().map(str::to_string),
        record.result.issued_certificate_chain.as_deref(),
    ) else {
        return Err(RenewError::NoCertificate);
    };
    let (old_not_before, old_not_after) =
        leaf_validity(chain).map_err(RenewError::RecordedChain)?;
    let now = crate::dps::sas::expiry_from_now(Duration::ZERO);
    if !when.is_due(old_not_before, old_not_after, now) {
        return Ok(RenewOutcome::NotDue {
            not_after: old_not_after,
            record: Box::new(record),
        });
    }
    let new_label = next_operational_key_label(&old_label);
    let mut config = config.clone();
    config.id_scope = record.id_scope.clone();
    config.endpoint = record.endpoint.clone();
    config.registration_id = Some(record.result.registration_id.clone());
    let registered = crate::issuance::register_with_certificate(
        &config,
        instance.clone(),
        record.attestation(),
        &new_label,
        progress,
    )
    .await;
    let (result, _) = match registered {
        Ok(r) => r,
        Err(e) => {
            discard(&instance, &new_label);
            return Err(e.into());
        }
    };
    let new_not_after = match result
        .issued_certificate_chain
        .as_deref()
        .map(leaf_validity)
    {
        Some(Ok((_, t))) => t,
        // register_with_certificate verified the chain; this only guards the record.
        Some(Err(e)) => {
            discard(&instance, &new_label);
            return Err(RenewError::Issue(IssueError::Chain(e)));
        }
        None => {
            discard(&instance, &new_label);
            return Err(RenewError::Issue(IssueError::NoChain));
        }
    };
    let renewed = ProvisioningRecord {
        version: RECORD_VERSION,
        endpoint: record.endpoint.clone(),
        id_scope: record.id_scope.clone(),
        plugin: instance.plugin().name().to_string(),
        result,
        provisioned_at_unix: crate::dps::sas::expiry_from_now(Duration::ZERO),
        operational_key_label: Some(new_label.clone()),
    };
    if let Err(e) = save(state_dir, &renewed) {
        // The old record still names the old key, which is still there.
        discard(&instance, &new_label);
        return Err(e.into());
    }
    // Only now: the new chain is stored and recorded.
    let (old_key_removed, warning) = match instance
        .operational_key()
        .and_then(|ops| ops.delete_key(&old_label))
    {
        Ok(()) => (true, None),
        Err(e) if e.code() == Some(PluginErrorCode::NotSupported) => (
            false,
            Some(format!(
                "plugin `{}` cannot remove operational keys: the old key stays under label `{old_label}` (unused from now on)",
                instance.plugin().name()
            )),
        ),
        Err(e) => (
            false,
            Some(format!(
                "the old key under label `{old_label}` could not be removed (unused from now on): {e}"
            )),
        ),
    };
    if let Some(w) = &warning {
        tracing::warn!("{w}");
    }
    Ok(RenewOutcome::Renewed(Box::new(Renewed {
        record: renewed,
        old_label,
        new_label,
        old_not_after,
        new_not_after,
        old_key_removed,
        warning,
    })))
}

/// Best effort: removes the half-made new key after a failed renewal, so a retry starts
/// clean. Nothing depends on it (a retry finds and reuses the key under the same label).
fn discard(instance: &PluginInstance, label: &str) {
    if let Ok(ops) = instance.operational_key() {
        let _ = ops.delete_key(label);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn when_a_certificate_is_due() {
        let day = 86_400;
        // Valid for 30 days from day 0.
        let (nb, na) = (1_000_000, 1_000_000 + 30 * day);
        assert!(RenewWhen::Always.is_due(nb, na, nb));
        let week = RenewWhen::Within(Duration::from_secs(7 * day));
        assert!(!week.is_due(nb, na, nb + 22 * day));
        assert!(week.is_due(nb, na, nb + 23 * day));
        assert!(week.is_due(nb, na, na + day), "expired is due");
        // 80% of 30 days is 24 days.
        assert!(!RenewWhen::Due.is_due(nb, na, nb + 24 * day - 1));
        assert!(RenewWhen::Due.is_due(nb, na, nb + 24 * day));
        // A leaf whose notAfter precedes its notBefore is due at once, not never.
        assert!(RenewWhen::Due.is_due(na, nb, na));
    }
}
