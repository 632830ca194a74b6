//! Performance smoke: measured, reported, and at worst a warning. Every loop stops once its
//! time budget is spent after the first call, so a slow plugin costs one call, not a timeout;
//! a call slower than the whole check timeout is still a warning (the runner reports a
//! performance check that times out as WARN), never a failure.

use super::{identity_ok, instance};
use crate::context::CheckContext;
use crate::ops::ok;
use crate::raw::RawInstance;
use crate::register;
use crate::verdict::{CheckResult, Verdict};
use hsm_api::*;
use sha2::{Digest, Sha256};
use std::time::{Duration, Instant};

register!(
    "performance.create-latency",
    Performance,
    Any,
    true,
    "create+destroy p50/p95 (warns above 500 ms p95)",
    create_latency
);
register!(
    "performance.identity-latency",
    Performance,
    Any,
    true,
    "identity getter p50/p95 (warns above 50 ms p95)",
    identity_latency
);
register!(
    "performance.sign-throughput",
    Performance,
    Any,
    true,
    "time per call of the plugin's signing operation, median over the calls made in 0.5 s (warns above 50 ms)",
    sign_throughput
);

const BUDGET: Duration = Duration::from_millis(500);

fn percentiles(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    let at = |q: usize| {
        v.get((v.len() * q / 100).min(v.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    (at(50), at(95))
}

fn judge(what: &str, samples: Vec<Duration>, warn_p95: Duration) -> CheckResult {
    let n = samples.len();
    let (p50, p95) = percentiles(samples);
    let text = format!(
        "{what}: {n} samples, p50 {:.2} ms, p95 {:.2} ms",
        p50.as_secs_f64() * 1e3,
        p95.as_secs_f64() * 1e3
    );
    if p95 > warn_p95 {
        Ok(Verdict::Warn { message: text })
    } else {
        Ok(Verdict::pass(text))
    }
}

/// A performance check never fails: when the operation it measures does not work, it skips
/// (the functional checks report that failure), so a broken sign is not counted twice and a
/// slow one is only ever a warning.
fn measure_only(r: CheckResult) -> CheckResult {
    match r {
        Err(Verdict::Fail { expected, actual }) => Err(Verdict::skip(format!(
            "nothing to measure: expected {expected}; {actual} (the functional checks report it)"
        ))),
        other => other,
    }
}

fn create_latency(ctx: &mut CheckContext) -> CheckResult {
    measure_only(measure_create(ctx))
}

fn identity_latency(ctx: &mut CheckContext) -> CheckResult {
    measure_only(measure_identity(ctx))
}

fn sign_throughput(ctx: &mut CheckContext) -> CheckResult {
    measure_only(measure_sign(ctx))
}

fn measure_create(ctx: &mut CheckContext) -> CheckResult {
    let mut samples = Vec::new();
    let started = Instant::now();
    while samples.len() < 50 && (samples.is_empty() || started.elapsed() < BUDGET) {
        let t = Instant::now();
        drop(instance(ctx)?);
        samples.push(t.elapsed());
    }
    judge("create+destroy", samples, Duration::from_millis(500))
}

fn measure_identity(ctx: &mut CheckContext) -> CheckResult {
    let inst = instance(ctx)?;
    let mut samples = Vec::new();
    let started = Instant::now();
    while samples.len() < 2000 && (samples.is_empty() || started.elapsed() < BUDGET) {
        let t = Instant::now();
        identity_ok(&inst)?;
        samples.push(t.elapsed());
    }
    judge("identity", samples, Duration::from_millis(50))
}

/// One signing call on an instance.
type SignFn = Box<dyn Fn(&RawInstance) -> Result<(), Verdict>>;

/// One signing call of the plugin's first interface, set up so that it can succeed, and the
/// time of the successful probing call when setting up made one (it counts as a sample, so a
/// slow signer is not called once more than needed).
fn signer(inst: &RawInstance) -> Result<(SignFn, Option<Duration>), Verdict> {
    if !inst.table.tpm.is_null() {
        let ek = ok(inst.ek()?, "get_endorsement_key")?;
        let srk = ok(inst.srk()?, "get_storage_root_key")?;
        let ch = hsm_tpm_common::dps::make_dps_challenge(&ek, &srk)
            .map_err(|e| Verdict::fail("a challenge for the reported keys", e.to_string()))?;
        ok(inst.activate(&ch.blob)?, "activate_identity_key")?;
        Ok((
            Box::new(|i| ok(i.tpm_sign(b"sas token")?, "sign_with_identity").map(|_| ())),
            None,
        ))
    } else if !inst.table.x509.is_null() {
        let digest = Sha256::digest(b"tls transcript").to_vec();
        // The algorithm that works for this key: try P-256, then RSA PKCS#1.
        for alg in [HSM_SIGN_ECDSA_P256_SHA256, HSM_SIGN_RSA_PKCS1_SHA256] {
            let t = Instant::now();
            if let Ok(Ok(_)) = inst.sign_digest(alg, &digest) {
                let took = t.elapsed();
                let d = digest.clone();
                return Ok((
                    Box::new(move |i| ok(i.sign_digest(alg, &d)?, "sign_digest").map(|_| ())),
                    Some(took),
                ));
            }
        }
        Err(Verdict::skip(
            "sign_digest works with neither ECDSA P-256 nor RSA PKCS#1 (see x509.sign-verifies)",
        ))
    } else if !inst.table.symmetric_key.is_null() {
        let t = Instant::now();
        let first = match inst.sym_sign(b"probe")? {
            Ok(_) => Some(t.elapsed()),
            Err(e) => {
                if e.status == HSM_ERR_NOT_FOUND {
                    ok(inst.import_key("", &[0x33; 32])?, "import_key")?;
                }
                None
            }
        };
        Ok((
            Box::new(|i| ok(i.sym_sign(b"sas token")?, "sign").map(|_| ())),
            first,
        ))
    } else {
        Err(Verdict::skip("the plugin offers no interface"))
    }
}

/// Median time per signing call above which the check warns (20 signatures/s).
const SIGN_WARN: Duration = Duration::from_millis(50);

fn measure_sign(ctx: &mut CheckContext) -> CheckResult {
    let inst = instance(ctx)?;
    let started = Instant::now();
    let (sign, first) = signer(&inst)?;
    let mut samples: Vec<Duration> = first.into_iter().collect();
    while samples.len() < 100_000 && (samples.is_empty() || started.elapsed() < BUDGET) {
        let t = Instant::now();
        sign(&inst)?;
        samples.push(t.elapsed());
    }
    let n = samples.len();
    let (median, p95) = percentiles(samples);
    let text = format!(
        "median {} per sign over {n} call{} (p95 {})",
        per_op(median),
        if n == 1 { "" } else { "s" },
        per_op(p95)
    );
    if median > SIGN_WARN {
        Ok(Verdict::Warn {
            message: format!("{text}; slower than {} per sign", per_op(SIGN_WARN)),
        })
    } else {
        Ok(Verdict::pass(text))
    }
}

/// A time per operation for people: microseconds below 1 ms, else milliseconds.
fn per_op(d: Duration) -> String {
    if d < Duration::from_millis(1) {
        format!("{:.1} µs", d.as_secs_f64() * 1e6)
    } else {
        format!("{:.1} ms", d.as_secs_f64() * 1e3)
    }
}
