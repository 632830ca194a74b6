//! Threads: instances owned by separate threads, and one shared instance when the plugin
//! declares concurrent calls safe.

use super::{identity_ok, instance};
use crate::context::CheckContext;
use crate::raw::RawInstance;
use crate::register;
use crate::verdict::{CheckResult, Verdict};
use hsm_api::HSM_THREADING_CONCURRENT;

register!(
    "concurrency.instance-per-thread",
    Concurrency,
    Any,
    true,
    "four threads, each with its own instance, get the same answers as a serial run",
    instance_per_thread
);
register!(
    "concurrency.shared-instance",
    Concurrency,
    Any,
    true,
    "one instance called from four threads at once answers correctly (if declared thread-safe)",
    shared_instance
);

const THREADS: usize = 4;
const CALLS: usize = 10;

fn instance_per_thread(ctx: &mut CheckContext) -> CheckResult {
    let serial = identity_ok(&instance(ctx)?)?;
    let table = ctx.table()?;
    let config = ctx.config.clone();
    let results: Vec<Result<(), Verdict>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|_| {
                let (config, serial) = (&config, &serial);
                s.spawn(move || -> Result<(), Verdict> {
                    let inst = RawInstance::create(table, config).map_err(|e| {
                        Verdict::fail("create to succeed on another thread", e.to_string())
                    })?;
                    for _ in 0..CALLS {
                        if identity_ok(&inst)? != *serial {
                            return Err(Verdict::fail(
                                "the serial answer from every thread",
                                "different bytes",
                            ));
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(Verdict::fail("no panic", "a thread panicked")))
            })
            .collect()
    });
    for r in results {
        r?;
    }
    Ok(Verdict::pass(format!("{THREADS} threads x {CALLS} calls")))
}

/// Lets threads share an instance the plugin declared safe for concurrent calls.
struct Shared<'a>(&'a RawInstance);
// SAFETY: only built after the plugin declared HSM_THREADING_CONCURRENT, which is its promise
// that one instance may be called from several threads at once.
unsafe impl Sync for Shared<'_> {}

fn shared_instance(ctx: &mut CheckContext) -> CheckResult {
    let table = ctx.table()?;
    if table.threading != HSM_THREADING_CONCURRENT {
        return Err(Verdict::skip(
            "the plugin declares calls on one instance serialized",
        ));
    }
    let inst = instance(ctx)?;
    let serial = identity_ok(&inst)?;
    let shared = Shared(&inst);
    let results: Vec<Result<(), Verdict>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|_| {
                let (shared, serial) = (&shared, &serial);
                s.spawn(move || -> Result<(), Verdict> {
                    for _ in 0..CALLS {
                        if identity_ok(shared.0)? != *serial {
                            return Err(Verdict::fail(
                                "the serial answer from every thread",
                                "different bytes",
                            ));
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(Verdict::fail("no panic", "a thread panicked")))
            })
            .collect()
    });
    for r in results {
        r?;
    }
    Ok(Verdict::pass(format!(
        "{THREADS} threads x {CALLS} calls on one instance"
    )))
}
