//! Buffer ownership: the plugin allocates, the host hands every buffer back, and the plugin
//! really frees it.

use super::{identity, identity_ok, instance, rss_bytes};
use crate::context::CheckContext;
use crate::raw::RawInstance;
use crate::register;
use crate::verdict::{CheckResult, Verdict};
use hsm_api::*;
use std::time::{Duration, Instant};

register!("memory.release-frees", Memory, Any, true,
    "buffers handed back through release_buffer are freed (resident memory stays flat over many calls)", release_frees);
register!(
    "memory.fresh-buffers",
    Memory,
    Any,
    true,
    "every output is a fresh allocation the caller owns until it releases it",
    fresh_buffers
);
register!(
    "memory.release-empty",
    Memory,
    Any,
    true,
    "release_buffer of an empty buffer is a no-op",
    release_empty
);
register!(
    "memory.no-output-on-failure",
    Memory,
    Any,
    true,
    "a failed call leaves the output buffer empty (nothing to release, nothing leaked)",
    no_output_on_failure
);

/// The identity getter as a raw function, for checks that hold or inspect the buffer.
fn getter(
    inst: &RawInstance,
) -> Result<unsafe extern "C" fn(*mut HsmInstance, *mut HsmBuffer) -> HsmStatus, Verdict> {
    if !inst.table.tpm.is_null() {
        Ok(inst.tpm_table()?.get_endorsement_key)
    } else if !inst.table.x509.is_null() {
        Ok(inst.x509_table()?.get_certificate_chain)
    } else if !inst.table.symmetric_key.is_null() {
        Ok(inst.sym_table()?.get_registration_id)
    } else {
        Err(Verdict::skip("the plugin offers no interface"))
    }
}

fn release_frees(ctx: &mut CheckContext) -> CheckResult {
    let inst = instance(ctx)?;
    for _ in 0..50 {
        identity_ok(&inst)?;
    }
    let before = rss_bytes()?;
    let started = Instant::now();
    let (mut calls, mut bytes) = (0u64, 0u64);
    while calls < 200_000 && (calls < 20_000 || started.elapsed() < Duration::from_secs(2)) {
        bytes += identity_ok(&inst)?.len() as u64;
        calls += 1;
    }
    let growth = rss_bytes()?.saturating_sub(before);
    // A plugin that frees nothing grows by at least the bytes it handed out.
    let allowed = (1u64 << 20).max(bytes / 2);
    if growth > allowed {
        return Err(Verdict::fail(
            format!("resident memory growth under {} KiB", allowed >> 10),
            format!(
                "it grew by {} KiB over {calls} calls returning {} KiB in total",
                growth >> 10,
                bytes >> 10
            ),
        ));
    }
    Ok(Verdict::pass(format!(
        "{calls} calls, {} KiB out, {} KiB growth",
        bytes >> 10,
        growth >> 10
    )))
}

fn fresh_buffers(ctx: &mut CheckContext) -> CheckResult {
    let inst = instance(ctx)?;
    // An identity missing for want of a setting is SETUP, not a buffer failure; any other
    // failure of the getter is judged by the two calls below.
    let _ = identity(&inst)?;
    let f = getter(&inst)?;
    let mut a = HsmBuffer::EMPTY;
    let mut b = HsmBuffer::EMPTY;
    // SAFETY: live instance, valid out pointers.
    let (sa, sb) = unsafe { (f(inst.ptr, &mut a), f(inst.ptr, &mut b)) };
    let outcome = if sa != HSM_OK || sb != HSM_OK {
        Err(Verdict::fail(
            "two successful calls",
            format!("{} and {}", status_name(sa), status_name(sb)),
        ))
    } else if a.data.is_null() || b.data.is_null() || a.len == 0 {
        Err(Verdict::fail(
            "non-empty output buffers",
            "a NULL or empty buffer",
        ))
    } else if a.data == b.data {
        Err(Verdict::fail(
            "a separate allocation for each output (both are held at once)",
            "the same pointer twice",
        ))
    } else {
        // SAFETY: both buffers hold `len` readable bytes per the ABI.
        let same = unsafe {
            std::slice::from_raw_parts(a.data, a.len) == std::slice::from_raw_parts(b.data, b.len)
        };
        if same {
            Ok(Verdict::pass(""))
        } else {
            Err(Verdict::fail(
                "the first buffer unchanged by the second call",
                "different bytes",
            ))
        }
    };
    for buf in [&mut a, &mut b] {
        if !buf.data.is_null() {
            // SAFETY: each buffer came from this plugin and is released once.
            unsafe { (inst.table.release_buffer)(buf) };
        }
    }
    outcome
}

fn release_empty(ctx: &mut CheckContext) -> CheckResult {
    let table = ctx.table()?;
    let mut empty = HsmBuffer::EMPTY;
    // SAFETY: the ABI says releasing an empty buffer is a no-op.
    unsafe { (table.release_buffer)(&mut empty) };
    Ok(Verdict::pass(""))
}

fn no_output_on_failure(ctx: &mut CheckContext) -> CheckResult {
    let inst = instance(ctx)?;
    // Make sure the getter works at all before judging its failure path.
    identity(&inst)?.map_err(|e| Verdict::fail("the identity getter to work", e.to_string()))?;
    let f = getter(&inst)?;
    let mut out = HsmBuffer::EMPTY;
    // SAFETY: a NULL instance is a host error the plugin must refuse; `out` is valid.
    let status = unsafe { f(std::ptr::null_mut(), &mut out) };
    if status == HSM_OK {
        return Err(Verdict::fail("a NULL instance to be refused", "HSM_OK"));
    }
    if !out.data.is_null() || out.len != 0 {
        let len = out.len;
        // SAFETY: hand back whatever it allocated.
        unsafe { (inst.table.release_buffer)(&mut out) };
        return Err(Verdict::fail(
            "an empty output buffer after a failed call",
            format!("{len} bytes"),
        ));
    }
    Ok(Verdict::pass(""))
}
