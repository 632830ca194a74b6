//! Instances: create, destroy, independence, error messages.

use super::{identity_ok, instance, provoke_failure, rss_bytes};
use crate::context::CheckContext;
use crate::raw::take;
use crate::register;
use crate::verdict::{CheckResult, Verdict};
use hsm_api::*;
use std::time::{Duration, Instant};

register!(
    "lifecycle.create-destroy",
    Lifecycle,
    Any,
    true,
    "create with the given settings succeeds, the instance answers, destroy returns",
    create_destroy
);
register!(
    "lifecycle.destroy-null",
    Lifecycle,
    Any,
    true,
    "destroy(NULL) is a no-op",
    destroy_null
);
register!(
    "lifecycle.create-null-out",
    Lifecycle,
    Any,
    true,
    "create with a NULL out_instance is refused with an error, not a crash",
    create_null_out
);
register!(
    "lifecycle.two-instances",
    Lifecycle,
    Any,
    true,
    "two live instances with the same settings report the same identity",
    two_instances
);
register!(
    "lifecycle.error-message",
    Lifecycle,
    Any,
    true,
    "after a refused call, last_error gives a non-empty UTF-8 message",
    error_message
);
register!(
    "lifecycle.cycles-no-leak",
    Lifecycle,
    Any,
    true,
    "repeated create/destroy cycles keep resident memory flat (< 16 MiB growth)",
    cycles_no_leak
);

fn create_destroy(ctx: &mut CheckContext) -> CheckResult {
    let inst = instance(ctx)?;
    let id = identity_ok(&inst)?;
    if id.is_empty() {
        return Err(Verdict::fail("a non-empty identity", "an empty buffer"));
    }
    drop(inst);
    Ok(Verdict::pass(""))
}

fn destroy_null(ctx: &mut CheckContext) -> CheckResult {
    let table = ctx.table()?;
    // SAFETY: NULL is explicitly allowed by the ABI ("NULL is a no-op").
    unsafe { (table.destroy)(std::ptr::null_mut()) };
    Ok(Verdict::pass(""))
}

fn create_null_out(ctx: &mut CheckContext) -> CheckResult {
    let table = ctx.table()?;
    let mut err = HsmBuffer::EMPTY;
    // SAFETY: an empty config with a NULL out pointer: a contract-violating host call the
    // plugin must refuse; the error buffer is valid.
    let status = unsafe { (table.create)(std::ptr::null(), 0, std::ptr::null_mut(), &mut err) };
    take(table, err);
    if status == HSM_OK {
        return Err(Verdict::fail("an error status", "HSM_OK"));
    }
    Ok(Verdict::pass(status_name(status)))
}

fn two_instances(ctx: &mut CheckContext) -> CheckResult {
    let a = instance(ctx)?;
    let b = instance(ctx)?;
    let ia = identity_ok(&a)?;
    let ib = identity_ok(&b)?;
    drop(a);
    // The second instance must survive the first one's destruction.
    let ib2 = identity_ok(&b)?;
    if ia != ib || ib != ib2 {
        return Err(Verdict::fail(
            "the same identity from both instances, before and after the other is destroyed",
            "different bytes",
        ));
    }
    Ok(Verdict::pass(""))
}

fn error_message(ctx: &mut CheckContext) -> CheckResult {
    let inst = instance(ctx)?;
    let (status, what) = provoke_failure(&inst)?;
    let msg = inst.failure(status).message;
    if msg.starts_with("(last_error") || msg == "(no message)" {
        return Err(Verdict::fail(
            format!("a message from last_error after {what}"),
            msg,
        ));
    }
    Ok(Verdict::pass(format!("{}: {msg}", status_name(status))))
}

fn cycles_no_leak(ctx: &mut CheckContext) -> CheckResult {
    // Warm up allocator pools and the plugin's one-time initialisation first.
    for _ in 0..5 {
        identity_ok(&instance(ctx)?)?;
    }
    let before = rss_bytes()?;
    let started = Instant::now();
    let mut n = 0u32;
    while n < 300 && started.elapsed() < Duration::from_secs(2) {
        identity_ok(&instance(ctx)?)?;
        n += 1;
    }
    let growth = rss_bytes()?.saturating_sub(before);
    if growth > 16 << 20 {
        return Err(Verdict::fail(
            "resident memory to stay within 16 MiB over the cycles",
            format!("it grew by {} KiB over {n} cycles", growth >> 10),
        ));
    }
    Ok(Verdict::pass(format!(
        "{n} cycles, {} KiB growth",
        growth >> 10
    )))
}
