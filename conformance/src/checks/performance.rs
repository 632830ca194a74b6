//! Performance smoke: measured, reported, and at worst a warning.

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
    "signatures per second of the plugin's signing operation (warns below 20/s)",
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

fn create_latency(ctx: &mut CheckContext) -> CheckResult {
    let mut samples = Vec::new();
    let started = Instant::now();
    while samples.len() < 50 && (samples.len() < 3 || started.elapsed() < BUDGET) {
        let t = Instant::now();
        drop(instance(ctx)?);
        samples.push(t.elapsed());
    }
    judge("create+destroy", samples, Duration::from_millis(500))
}

fn identity_latency(ctx: &mut CheckContext) -> CheckResult {
    let inst = instance(ctx)?;
    let mut samples = Vec::new();
    let started = Instant::now();
    while samples.len() < 2000 && (samples.len() < 3 || started.elapsed() < BUDGET) {
        let t = Instant::now();
        identity_ok(&inst)?;
        samples.push(t.elapsed());
    }
    judge("identity", samples, Duration::from_millis(50))
}

/// One signing call of the plugin's first interface, set up so that it can succeed.
/// One signing call on an instance.
type SignFn = Box<dyn Fn(&RawInstance) -> Result<(), Verdict>>;

fn signer(inst: &RawInstance) -> Result<SignFn, Verdict> {
    if !inst.table.tpm.is_null() {
        let ek = ok(inst.ek()?, "get_endorsement_key")?;
        let srk = ok(inst.srk()?, "get_storage_root_key")?;
        let ch = hsm_tpm_common::dps::make_dps_challenge(&ek, &srk)
            .map_err(|e| Verdict::fail("a challenge for the reported keys", e.to_string()))?;
        ok(inst.activate(&ch.blob)?, "activate_identity_key")?;
        Ok(Box::new(|i| {
            ok(i.tpm_sign(b"sas token")?, "sign_with_identity").map(|_| ())
        }))
    } else if !inst.table.x509.is_null() {
        let digest = Sha256::digest(b"tls transcript").to_vec();
        // The algorithm that works for this key: try P-256, then RSA PKCS#1.
        for alg in [HSM_SIGN_ECDSA_P256_SHA256, HSM_SIGN_RSA_PKCS1_SHA256] {
            if let Ok(Ok(_)) = inst.sign_digest(alg, &digest) {
                let d = digest.clone();
                return Ok(Box::new(move |i| {
                    ok(i.sign_digest(alg, &d)?, "sign_digest").map(|_| ())
                }));
            }
        }
        Err(Verdict::skip(
            "sign_digest works with neither ECDSA P-256 nor RSA PKCS#1 (see x509.sign-verifies)",
        ))
    } else if !inst.table.symmetric_key.is_null() {
        if let Err(e) = inst.sym_sign(b"probe")? {
            if e.status == HSM_ERR_NOT_FOUND {
                ok(inst.import_key("", &[0x33; 32])?, "import_key")?;
            }
        }
        Ok(Box::new(|i| {
            ok(i.sym_sign(b"sas token")?, "sign").map(|_| ())
        }))
    } else {
        Err(Verdict::skip("the plugin offers no interface"))
    }
}

fn sign_throughput(ctx: &mut CheckContext) -> CheckResult {
    let inst = instance(ctx)?;
    let sign = signer(&inst)?;
    let started = Instant::now();
    let mut n = 0u32;
    while n < 3 || (started.elapsed() < BUDGET && n < 100_000) {
        sign(&inst)?;
        n += 1;
    }
    let rate = f64::from(n) / started.elapsed().as_secs_f64();
    let text = format!(
        "{rate:.0} signatures/s ({n} in {:.2} s)",
        started.elapsed().as_secs_f64()
    );
    if rate < 20.0 {
        Ok(Verdict::Warn { message: text })
    } else {
        Ok(Verdict::pass(text))
    }
}
