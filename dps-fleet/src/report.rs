//! The run's figures: per attestation counts, failures by reason and latency percentiles,
//! throughput over time, the cross-check; as a text table and as JSON.

use crate::mix::DeviceKind;
use crate::provision::{CrossCheck, DeviceOutcome};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

/// Latency percentiles, milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Slowest.
    pub max: f64,
}

impl Latency {
    /// Nearest-rank percentiles of `samples` (any order); zeros when empty.
    pub fn of(samples: &[Duration]) -> Latency {
        let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        ms.sort_by(f64::total_cmp);
        let pick = |p: f64| -> f64 {
            if ms.is_empty() {
                return 0.0;
            }
            let rank = (p * ms.len() as f64).ceil() as usize;
            ms[rank.clamp(1, ms.len()) - 1]
        };
        Latency {
            p50: pick(0.50),
            p90: pick(0.90),
            p99: pick(0.99),
            max: ms.last().copied().unwrap_or(0.0),
        }
    }
}

/// The figures of one device kind.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KindReport {
    /// The device kind.
    pub kind: DeviceKind,
    /// Its DPS attestation (`symmetricKey`, `x509`, `tpm`).
    pub attestation: String,
    /// Devices of this kind.
    pub count: usize,
    /// Registrations that ended assigned.
    pub succeeded: usize,
    /// Failures, by reason.
    pub failures_by_reason: BTreeMap<String, usize>,
    /// Latency of the successful registrations.
    pub latency_ms: Latency,
}

/// Completions within one second of the run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ThroughputPoint {
    /// The second since the start of provisioning.
    pub second: u64,
    /// Registrations that succeeded within it.
    pub succeeded: usize,
    /// Registrations that failed within it.
    pub failed: usize,
}

/// The whole report, as written to `report.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// Fleet size.
    pub devices: usize,
    /// Devices provisioning at once, at most.
    pub concurrency: usize,
    /// Where the devices provisioned (`in-process emulator` or the endpoint).
    pub target: String,
    /// Manufacturing: devices made now, devices from the cache, seconds.
    pub manufacture: Manufacture,
    /// Creating the enrollments through the service API, seconds.
    pub enrollment_seconds: f64,
    /// Provisioning wall time, seconds (the clock of the figures below).
    pub wall_seconds: f64,
    /// Successful registrations per second of wall time.
    pub registrations_per_second: f64,
    /// Registrations that succeeded.
    pub succeeded: usize,
    /// Registrations that failed.
    pub failed: usize,
    /// Per device kind.
    pub per_attestation: Vec<KindReport>,
    /// Latency of every successful registration.
    pub latency_ms: Latency,
    /// Completions per second.
    pub throughput: Vec<ThroughputPoint>,
    /// The service's records compared with the devices' answers.
    pub cross_check: CrossCheckReport,
    /// Peak resident memory of this process (`VmHWM`), KiB, when known.
    pub peak_rss_kib: Option<u64>,
    /// One message per failure reason (the first seen), to say what went wrong.
    pub failure_examples: BTreeMap<String, String>,
}

/// Manufacturing figures.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manufacture {
    /// Devices made by this run.
    pub made: usize,
    /// Devices taken from the manufacture cache.
    pub reused: usize,
    /// Seconds spent (making, or reading the cache, and staging the state folders).
    pub seconds: f64,
}

/// The cross-check's figures.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CrossCheckReport {
    /// Successful devices.
    pub expected: usize,
    /// Of those, found in the service's records.
    pub found: usize,
    /// How many records are missing.
    pub lost: usize,
    /// How many registration ids (or hub device ids) have more than one record.
    pub duplicated: usize,
    /// Records that differ from the device's answer.
    pub mismatched: usize,
    /// Devices that failed but which the service records as assigned.
    pub recorded_but_failed: usize,
    /// Up to 20 of the ids in each list, for the investigation.
    pub examples: BTreeMap<String, Vec<String>>,
    /// Seconds the cross-check took.
    pub seconds: f64,
}

impl From<&CrossCheck> for CrossCheckReport {
    fn from(c: &CrossCheck) -> Self {
        let mut examples = BTreeMap::new();
        for (name, list) in [
            ("lost", &c.lost),
            ("duplicated", &c.duplicated),
            ("mismatched", &c.mismatched),
            ("recorded_but_failed", &c.recorded_but_failed),
        ] {
            if !list.is_empty() {
                examples.insert(name.to_string(), list.iter().take(20).cloned().collect());
            }
        }
        CrossCheckReport {
            expected: c.expected,
            found: c.found,
            lost: c.lost.len(),
            duplicated: c.duplicated.len(),
            mismatched: c.mismatched.len(),
            recorded_but_failed: c.recorded_but_failed.len(),
            examples,
            seconds: c.seconds,
        }
    }
}

/// What [`Report::build`] needs besides the outcomes.
#[derive(Debug, Clone)]
pub struct RunFacts {
    /// Devices provisioning at once, at most.
    pub concurrency: usize,
    /// The target's description.
    pub target: String,
    /// Manufacturing figures.
    pub manufacture: Manufacture,
    /// Enrollment time.
    pub enrollment: Duration,
    /// Provisioning wall time.
    pub wall: Duration,
}

impl Report {
    /// Builds the report from every device's outcome.
    pub fn build(facts: RunFacts, outcomes: &[DeviceOutcome], check: &CrossCheck) -> Report {
        let mut per_attestation = Vec::new();
        let mut failure_examples = BTreeMap::new();
        for kind in DeviceKind::ALL {
            let of_kind: Vec<&DeviceOutcome> = outcomes.iter().filter(|o| o.kind == kind).collect();
            if of_kind.is_empty() {
                continue;
            }
            let mut failures_by_reason = BTreeMap::new();
            let mut ok = Vec::new();
            for o in &of_kind {
                match &o.result {
                    Ok(_) => ok.push(o.latency),
                    Err(f) => {
                        *failures_by_reason.entry(f.reason.clone()).or_insert(0) += 1;
                        failure_examples
                            .entry(f.reason.clone())
                            .or_insert_with(|| f.message.clone());
                    }
                }
            }
            per_attestation.push(KindReport {
                kind,
                attestation: kind.attestation().as_str().to_string(),
                count: of_kind.len(),
                succeeded: ok.len(),
                failures_by_reason,
                latency_ms: Latency::of(&ok),
            });
        }
        let ok: Vec<Duration> = outcomes
            .iter()
            .filter(|o| o.result.is_ok())
            .map(|o| o.latency)
            .collect();
        let succeeded = ok.len();
        let wall = facts.wall.as_secs_f64();
        Report {
            devices: outcomes.len(),
            concurrency: facts.concurrency,
            target: facts.target,
            manufacture: facts.manufacture,
            enrollment_seconds: facts.enrollment.as_secs_f64(),
            wall_seconds: wall,
            registrations_per_second: if wall > 0.0 {
                succeeded as f64 / wall
            } else {
                0.0
            },
            succeeded,
            failed: outcomes.len() - succeeded,
            per_attestation,
            latency_ms: Latency::of(&ok),
            throughput: throughput(outcomes),
            cross_check: check.into(),
            peak_rss_kib: peak_rss_kib(),
            failure_examples,
        }
    }

    /// Every device provisioned and the records agree: the run is a success.
    pub fn is_clean(&self) -> bool {
        self.failed == 0
            && self.cross_check.lost == 0
            && self.cross_check.duplicated == 0
            && self.cross_check.mismatched == 0
    }

    /// The summary table.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{:<16} {:<13} {:>6} {:>6} {:>6} {:>9} {:>9} {:>9} {:>9}  failures by reason",
            "kind", "attestation", "count", "ok", "failed", "p50 ms", "p90 ms", "p99 ms", "max ms"
        );
        let mut row = |name: &str, att: &str, count: usize, ok: usize, l: &Latency, f: String| {
            let _ = writeln!(
                s,
                "{:<16} {:<13} {:>6} {:>6} {:>6} {:>9.1} {:>9.1} {:>9.1} {:>9.1}  {}",
                name,
                att,
                count,
                ok,
                count - ok,
                l.p50,
                l.p90,
                l.p99,
                l.max,
                f
            );
        };
        for k in &self.per_attestation {
            let f = k
                .failures_by_reason
                .iter()
                .map(|(r, n)| format!("{r}={n}"))
                .collect::<Vec<_>>()
                .join(", ");
            row(
                k.kind.as_str(),
                &k.attestation,
                k.count,
                k.succeeded,
                &k.latency_ms,
                f,
            );
        }
        row(
            "all",
            "",
            self.devices,
            self.succeeded,
            &self.latency_ms,
            String::new(),
        );
        let _ = writeln!(
            s,
            "manufacturing {:.2} s ({} made, {} from cache), enrollment {:.2} s, provisioning wall {:.2} s, {:.1} registrations/s{}",
            self.manufacture.seconds,
            self.manufacture.made,
            self.manufacture.reused,
            self.enrollment_seconds,
            self.wall_seconds,
            self.registrations_per_second,
            self.peak_rss_kib
                .map(|k| format!(", peak RSS {:.1} MiB", k as f64 / 1024.0))
                .unwrap_or_default()
        );
        let c = &self.cross_check;
        let _ = writeln!(
            s,
            "cross-check: {} of {} records found, {} lost, {} duplicated, {} mismatched, {} assigned by the service but failed on the device",
            c.found, c.expected, c.lost, c.duplicated, c.mismatched, c.recorded_but_failed
        );
        for (reason, message) in &self.failure_examples {
            let _ = writeln!(s, "  {reason}: {message}");
        }
        s
    }
}

/// Completions per whole second since the start of provisioning.
fn throughput(outcomes: &[DeviceOutcome]) -> Vec<ThroughputPoint> {
    let end = |o: &DeviceOutcome| (o.started + o.latency).as_secs();
    let last = outcomes.iter().map(end).max().unwrap_or(0);
    let mut points: Vec<ThroughputPoint> = (0..=last)
        .map(|second| ThroughputPoint {
            second,
            succeeded: 0,
            failed: 0,
        })
        .collect();
    if outcomes.is_empty() {
        return Vec::new();
    }
    for o in outcomes {
        let p = &mut points[end(o) as usize];
        if o.result.is_ok() {
            p.succeeded += 1;
        } else {
            p.failed += 1;
        }
    }
    points
}

/// This process's peak resident set (`VmHWM` in `/proc/self/status`), KiB.
pub fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provision::{Assigned, Failure};

    fn outcome(kind: DeviceKind, ms: u64, ok: bool) -> DeviceOutcome {
        DeviceOutcome {
            kind,
            registration_id: format!("r{ms}"),
            started: Duration::from_millis(ms),
            latency: Duration::from_millis(ms),
            result: if ok {
                Ok(Assigned {
                    hub: "h".into(),
                    device_id: "d".into(),
                })
            } else {
                Err(Failure {
                    reason: "Unauthorized".into(),
                    message: "no".into(),
                })
            },
        }
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let s: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let l = Latency::of(&s);
        assert_eq!((l.p50, l.p90, l.p99, l.max), (50.0, 90.0, 99.0, 100.0));
        assert_eq!(Latency::of(&[]), Latency::default());
        assert_eq!(Latency::of(&[Duration::from_millis(7)]).p99, 7.0);
    }

    #[test]
    fn report_counts_failures_by_reason_and_per_second() {
        let outcomes = vec![
            outcome(DeviceKind::Tpm, 100, true),
            outcome(DeviceKind::Tpm, 700, false),
            outcome(DeviceKind::DiceGroup, 900, true),
        ];
        let facts = RunFacts {
            concurrency: 2,
            target: "t".into(),
            manufacture: Manufacture {
                made: 3,
                reused: 0,
                seconds: 0.1,
            },
            enrollment: Duration::ZERO,
            wall: Duration::from_secs(2),
        };
        let r = Report::build(facts, &outcomes, &CrossCheck::default());
        assert_eq!((r.succeeded, r.failed), (2, 1));
        assert!(!r.is_clean());
        let tpm = &r.per_attestation[1];
        assert_eq!(tpm.kind, DeviceKind::Tpm);
        assert_eq!(tpm.failures_by_reason.get("Unauthorized"), Some(&1));
        assert_eq!(r.registrations_per_second, 1.0);
        // ends at 0.2 s, 1.4 s and 1.8 s
        assert_eq!(r.throughput.len(), 2);
        assert_eq!(
            (
                r.throughput[0].succeeded,
                r.throughput[1].succeeded,
                r.throughput[1].failed
            ),
            (1, 1, 1)
        );
        assert!(r.table().contains("Unauthorized=1"), "{}", r.table());
    }
}
