//! Enrolling the fleet through the service API, provisioning every device through
//! provisioning-core's client with its own plugin instance (bounded concurrency), and the
//! cross-check of the service's registration records.

use crate::error::FleetError;
use crate::manufacture::{Device, Factory, Plugins};
use crate::mix::DeviceKind;
use crate::service::ServiceClient;
use provisioning_core::dps::{register, DpsClientConfig, RetryPolicy};
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// The symmetric-key enrollment group's id.
pub const SYMMETRIC_GROUP_ID: &str = "fleet-symmetric-group";
/// The X.509 (DICE root CA) enrollment group's id.
pub const DICE_GROUP_ID: &str = "fleet-dice-group";

/// Where the devices provision.
#[derive(Debug, Clone)]
pub struct DeviceTarget {
    /// The device API endpoint (`https://host:port` or a host name).
    pub endpoint: String,
    /// The id scope.
    pub id_scope: String,
    /// A CA certificate (PEM) to trust instead of the public roots.
    pub ca_pem: Option<Vec<u8>>,
    /// Per-device overall deadline.
    pub overall_timeout: Duration,
}

impl DeviceTarget {
    fn client_config(&self) -> DpsClientConfig {
        let mut c = DpsClientConfig::new(self.id_scope.clone());
        c.endpoint = self.endpoint.clone();
        c.trust_public_roots = self.ca_pem.is_none();
        c.extra_trust_pem = self.ca_pem.clone();
        c.overall_timeout = self.overall_timeout;
        c.request_timeout = self.overall_timeout.min(Duration::from_secs(30));
        c.retry = RetryPolicy {
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(2),
            ..RetryPolicy::default()
        };
        c
    }
}

/// How one device's provisioning ended.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceOutcome {
    /// The device kind.
    pub kind: DeviceKind,
    /// Its registration id.
    pub registration_id: String,
    /// When it started, from the start of the run.
    pub started: Duration,
    /// How long it took (plugin instance, TLS, register, challenge, polls).
    pub latency: Duration,
    /// The assigned hub and device id, or why it failed.
    pub result: Result<Assigned, Failure>,
}

/// A successful registration.
#[derive(Debug, Clone, Serialize)]
pub struct Assigned {
    /// The hub.
    pub hub: String,
    /// The device id on it.
    pub device_id: String,
}

/// A failed registration.
#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    /// The error kind (`Unauthorized`, `Disabled`, `Plugin`...): what the report counts by.
    pub reason: String,
    /// The error's message.
    pub message: String,
}

/// The name of an error's variant, from its `Debug` form (`Unauthorized { .. }` ->
/// `Unauthorized`), which the report counts failures by.
fn reason_of(e: &impl std::fmt::Debug) -> String {
    format!("{e:?}")
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect()
}

/// The enrollments the fleet needs, created or replaced through the service API: the two
/// groups (symmetric key, X.509 on the DICE root CA) and one individual enrollment per
/// symmetric-individual and TPM device, `concurrency` at a time. Returns how long it took.
pub async fn enroll(
    factory: &Factory,
    devices: &[Device],
    service: &ServiceClient,
    concurrency: usize,
) -> Result<Duration, FleetError> {
    let started = Instant::now();
    if devices.iter().any(|d| d.kind == DeviceKind::SymmetricGroup) {
        service
            .put_group(
                SYMMETRIC_GROUP_ID,
                &json!({
                    "enrollmentGroupId": SYMMETRIC_GROUP_ID,
                    "attestation": {"type": "symmetricKey", "symmetricKey": {
                        "primaryKey": factory.symmetric_group_key(),
                        "secondaryKey": factory.symmetric_group_key(),
                    }},
                    "provisioningStatus": "enabled",
                }),
            )
            .await?;
    }
    if devices.iter().any(|d| d.kind == DeviceKind::DiceGroup) {
        let root = factory
            .dice_root_ca_pem()
            .ok_or_else(|| FleetError::Config("no DICE root CA was manufactured".into()))?;
        service
            .put_group(
                DICE_GROUP_ID,
                &json!({
                    "enrollmentGroupId": DICE_GROUP_ID,
                    "attestation": {"type": "x509", "x509": {
                        "signingCertificates": {"primary": {"certificate": root}},
                    }},
                    "provisioningStatus": "enabled",
                }),
            )
            .await?;
    }
    let mut individual = Vec::new();
    for d in devices {
        let body = match d.kind {
            DeviceKind::SymmetricIndividual => {
                let key = factory.individual_key(&d.registration_id)?;
                json!({
                    "registrationId": d.registration_id,
                    "attestation": {"type": "symmetricKey", "symmetricKey": {
                        "primaryKey": key.as_str(), "secondaryKey": key.as_str(),
                    }},
                    "provisioningStatus": "enabled",
                })
            }
            DeviceKind::Tpm => {
                let ek = d.endorsement_key.as_deref().ok_or_else(|| {
                    FleetError::Config(format!("TPM device {} has no EK", d.registration_id))
                })?;
                json!({
                    "registrationId": d.registration_id,
                    "attestation": {"type": "tpm", "tpm": {"endorsementKey": ek}},
                    "provisioningStatus": "enabled",
                })
            }
            DeviceKind::SymmetricGroup | DeviceKind::DiceGroup => continue,
        };
        individual.push((d.registration_id.clone(), body));
    }
    let gate = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for (reg, body) in individual {
        let gate = gate.clone();
        let service = service.clone();
        tasks.spawn(async move {
            let _permit = gate.acquire_owned().await;
            service.put_individual(&reg, &body).await
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.map_err(|e| FleetError::Config(format!("an enrollment task failed: {e}")))??;
    }
    Ok(started.elapsed())
}

/// Provisions `devices` (state folders under `work`) against `target`, at most `concurrency`
/// at once, calling `on_done` as each ends. Returns every outcome and the wall time.
pub async fn provision(
    factory: &Factory,
    devices: &[Device],
    work: &Path,
    plugins: &Plugins,
    target: &DeviceTarget,
    concurrency: usize,
    on_done: Arc<dyn Fn(&DeviceOutcome) + Send + Sync>,
) -> (Vec<DeviceOutcome>, Duration) {
    let config = Arc::new(target.client_config());
    let gate = Arc::new(Semaphore::new(concurrency.max(1)));
    let run_start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for d in devices {
        let state: PathBuf = d.state_dir(work);
        let settings = factory.settings(d, &state);
        let (gate, config, plugins, on_done) = (
            gate.clone(),
            config.clone(),
            plugins.clone(),
            on_done.clone(),
        );
        let (kind, reg) = (d.kind, d.registration_id.clone());
        tasks.spawn(async move {
            let _permit = gate.acquire_owned().await;
            let started = run_start.elapsed();
            let t0 = Instant::now();
            let result = match plugins.instance(kind, &settings) {
                Ok(instance) => register(&config, Arc::new(instance), kind.attestation(), &|_| {})
                    .await
                    .map(|r| Assigned {
                        hub: r.assigned_hub,
                        device_id: r.device_id,
                    })
                    .map_err(|e| Failure {
                        reason: reason_of(&e),
                        message: e.to_string(),
                    }),
                Err(e) => Err(Failure {
                    reason: "Plugin".into(),
                    message: e.to_string(),
                }),
            };
            let outcome = DeviceOutcome {
                kind,
                registration_id: reg,
                started,
                latency: t0.elapsed(),
                result,
            };
            on_done(&outcome);
            outcome
        });
    }
    let mut out = Vec::with_capacity(devices.len());
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(o) => out.push(o),
            // A panicking device task is a bug; it is reported, not hidden.
            Err(e) => out.push(DeviceOutcome {
                kind: DeviceKind::SymmetricIndividual,
                registration_id: String::from("<panicked task>"),
                started: Duration::ZERO,
                latency: Duration::ZERO,
                result: Err(Failure {
                    reason: "Panic".into(),
                    message: e.to_string(),
                }),
            }),
        }
    }
    let wall = run_start.elapsed();
    out.sort_by_key(|o| o.started);
    (out, wall)
}

/// What the service's registration records say about the fleet.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CrossCheck {
    /// Devices whose registration succeeded.
    pub expected: usize,
    /// Of those, how many the service has a record of.
    pub found: usize,
    /// Succeeded devices the service has no record of.
    pub lost: Vec<String>,
    /// Registration ids (or hub device ids) the service holds more than one record for.
    pub duplicated: Vec<String>,
    /// Records whose hub, device id or status differ from what the device was told.
    pub mismatched: Vec<String>,
    /// Devices whose registration failed on the device side but which the service records
    /// as assigned.
    pub recorded_but_failed: Vec<String>,
    /// How long the cross-check took, seconds.
    pub seconds: f64,
}

impl CrossCheck {
    /// No record lost, duplicated or different from the device's answer.
    pub fn is_clean(&self) -> bool {
        self.lost.is_empty() && self.duplicated.is_empty() && self.mismatched.is_empty()
    }
}

/// Reads back through the service API the registration records of the fleet's groups (one
/// query each) and of every individually enrolled device (one read each, `concurrency` at a
/// time), and compares them with the devices' outcomes.
pub async fn cross_check(
    service: &ServiceClient,
    devices: &[Device],
    outcomes: &[DeviceOutcome],
    concurrency: usize,
) -> Result<CrossCheck, FleetError> {
    let started = Instant::now();
    let mut records: Vec<Value> = Vec::new();
    for (kind, group) in [
        (DeviceKind::SymmetricGroup, SYMMETRIC_GROUP_ID),
        (DeviceKind::DiceGroup, DICE_GROUP_ID),
    ] {
        if devices.iter().any(|d| d.kind == kind) {
            records.extend(service.group_registrations(group).await?);
        }
    }
    let gate = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for d in devices
        .iter()
        .filter(|d| matches!(d.kind, DeviceKind::SymmetricIndividual | DeviceKind::Tpm))
    {
        let (gate, service, reg) = (gate.clone(), service.clone(), d.registration_id.clone());
        tasks.spawn(async move {
            let _permit = gate.acquire_owned().await;
            service.registration(&reg).await
        });
    }
    while let Some(done) = tasks.join_next().await {
        let record =
            done.map_err(|e| FleetError::Config(format!("a cross-check task failed: {e}")))??;
        records.extend(record);
    }
    let mut check = compare(&records, outcomes);
    check.seconds = started.elapsed().as_secs_f64();
    Ok(check)
}

/// The comparison [`cross_check`] makes, on records already read.
pub fn compare(records: &[Value], outcomes: &[DeviceOutcome]) -> CrossCheck {
    let field = |r: &Value, name: &str| {
        r.get(name)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let mut by_reg: HashMap<String, Vec<&Value>> = HashMap::new();
    let mut by_device: BTreeMap<(String, String), usize> = BTreeMap::new();
    for r in records {
        by_reg
            .entry(field(r, "registrationId"))
            .or_default()
            .push(r);
        let device = (field(r, "assignedHub"), field(r, "deviceId"));
        if !device.1.is_empty() {
            *by_device.entry(device).or_default() += 1;
        }
    }
    let mut check = CrossCheck::default();
    for (reg, rs) in &by_reg {
        if rs.len() > 1 {
            check.duplicated.push(reg.clone());
        }
    }
    for ((hub, device), n) in &by_device {
        if *n > 1 {
            check.duplicated.push(format!("{hub}/{device}"));
        }
    }
    for o in outcomes {
        match (&o.result, by_reg.get(&o.registration_id)) {
            (Ok(_), None) => {
                check.expected += 1;
                check.lost.push(o.registration_id.clone());
            }
            (Ok(a), Some(rs)) => {
                check.expected += 1;
                check.found += 1;
                let r = rs[0];
                if field(r, "assignedHub") != a.hub
                    || field(r, "deviceId") != a.device_id
                    || field(r, "status") != "assigned"
                {
                    check.mismatched.push(o.registration_id.clone());
                }
            }
            // A refused device may well have a record (DPS keeps `disabled` and `failed`
            // states); only one the service thinks assigned disagrees with the device.
            (Err(_), Some(rs)) if rs.iter().any(|r| field(r, "status") == "assigned") => {
                check.recorded_but_failed.push(o.registration_id.clone())
            }
            (Err(_), _) => {}
        }
    }
    check.duplicated.sort();
    check.lost.sort();
    check.mismatched.sort();
    check.recorded_but_failed.sort();
    check
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(reg: &str, hub: &str) -> DeviceOutcome {
        DeviceOutcome {
            kind: DeviceKind::Tpm,
            registration_id: reg.into(),
            started: Duration::ZERO,
            latency: Duration::ZERO,
            result: Ok(Assigned {
                hub: hub.into(),
                device_id: reg.into(),
            }),
        }
    }

    fn rec(reg: &str, hub: &str) -> Value {
        json!({"registrationId": reg, "assignedHub": hub, "deviceId": reg, "status": "assigned"})
    }

    #[test]
    fn compare_finds_lost_duplicated_and_mismatched_records() {
        let outcomes = vec![ok("a", "h1"), ok("b", "h1"), ok("c", "h2"), ok("d", "h1")];
        let records = vec![
            rec("a", "h1"),
            rec("b", "h1"),
            rec("b", "h1"),
            rec("c", "h1"),
        ];
        let c = compare(&records, &outcomes);
        assert_eq!(c.expected, 4);
        assert_eq!(c.found, 3);
        assert_eq!(c.lost, vec!["d"]);
        assert_eq!(c.duplicated, vec!["b", "h1/b"]);
        assert_eq!(c.mismatched, vec!["c"]);
        assert!(!c.is_clean());
        let mut refused = ok("e", "h1");
        refused.result = Err(Failure {
            reason: "Disabled".into(),
            message: String::new(),
        });
        let mut disabled = rec("e", "");
        disabled["status"] = json!("disabled");
        assert!(compare(&[disabled], std::slice::from_ref(&refused))
            .recorded_but_failed
            .is_empty());
        let c = compare(&[rec("e", "h1")], &[refused]);
        assert_eq!(c.recorded_but_failed, vec!["e"]);
        let clean = compare(&[rec("a", "h1")], &[ok("a", "h1")]);
        assert!(clean.is_clean(), "{clean:?}");
    }

    #[test]
    fn failure_reasons_are_variant_names() {
        #[derive(Debug)]
        #[allow(dead_code)]
        enum E {
            Unauthorized { code: u32 },
            Timeout(u8),
        }
        assert_eq!(reason_of(&E::Unauthorized { code: 1 }), "Unauthorized");
        assert_eq!(reason_of(&E::Timeout(3)), "Timeout");
    }
}
