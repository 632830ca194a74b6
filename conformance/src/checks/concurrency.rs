//! Threads: instances owned by separate threads, and one shared instance when the plugin
//! declares concurrent calls safe. The identity checks read from threads; the hot-path checks
//! run each interface's real work (import, activate, sign) from several threads with inputs
//! distinct per thread and per call and verify every answer, so a buffer shared between calls
//! shows up as a wrong result; the last_error check provokes distinct failures on several
//! threads at once and has each read back its own message.

use super::symmetric::import;
use super::x509::{
    algorithms_for, chain_from_bytes, digest_for, leaf_key, raw_ecdsa_diagnosis, verify,
};
use super::{hmac_sha256, identity_ok, instance};
use crate::context::CheckContext;
use crate::ops::ok;
use crate::raw::{RawFailure, RawInstance};
use crate::register;
use crate::verdict::{CheckResult, Verdict};
use hsm_api::*;
use hsm_tpm_common::dps::make_dps_challenge_for_key;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

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

register!("concurrency.symmetric-key-hot-path", Concurrency, SymmetricKey, true,
    "threads sign distinct data with an imported key on an instance each and (if declared concurrent) on one shared instance; every HMAC is verified", symmetric_hot_path);
register!("concurrency.x509-hot-path", Concurrency, X509, true,
    "threads sign distinct digests on an instance each and (if declared concurrent) on one shared instance; every signature verifies against the leaf key", x509_hot_path);
register!("concurrency.tpm-hot-path", Concurrency, Tpm, true,
    "threads sign distinct data with an activated identity on an instance each and (if declared concurrent) on one shared instance, where each also activates a challenge; every HMAC is verified", tpm_hot_path);
register!("concurrency.last-error-per-thread", Concurrency, Any, true,
    "distinct failures provoked on several threads at once: each thread reads back its own failure's message from last_error", last_error_per_thread);

/// Upper bound of calls per thread in one phase of a hot-path check.
const HOT_CALLS: usize = 64;
/// Upper bound of failures per thread in one phase of the last_error check.
const ERROR_CALLS: usize = 100;
/// Time after which a phase's threads stop (each makes at least one call): a slow device
/// (a TPM on swtpm, a secure element) keeps the check short instead of making every call.
const PHASE_BUDGET: Duration = Duration::from_secs(1);
/// How long a thread waits for the others to be ready, so that their calls overlap. Never
/// longer: a device that serves one connection at a time holds a thread back until the
/// instance of another is destroyed, and waiting for it would be a deadlock.
const READY_WAIT: Duration = Duration::from_millis(200);
/// The symmetric key and TPM identity key the hot paths use (test values, not secrets). One
/// key for every thread: instances in one state folder (or on one token, one TPM) are one
/// device, so an import or activation on one is seen by all.
const HOT_KEY: [u8; 32] = [0x5c; 32];

/// Where the threads of a phase make their calls.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Each thread creates its own instance.
    PerThread,
    /// All threads call one instance (the plugin declared HSM_THREADING_CONCURRENT).
    Shared,
}

impl Mode {
    fn what(self) -> String {
        match self {
            Mode::PerThread => format!("{THREADS} threads, an instance each"),
            Mode::Shared => format!("{THREADS} threads sharing one instance"),
        }
    }

    /// What results mixed between threads mean, and what to do.
    fn mixed_advice(self) -> &'static str {
        match self {
            Mode::PerThread => {
                "instances on different threads share state, so results are mixed between \
                 threads; keep per-call data in the call or its instance, or lock what \
                 instances share (HSM_THREADING_SERIALIZED covers calls on one instance, \
                 not several)"
            }
            Mode::Shared => {
                "declared concurrent but results are mixed between threads; lock shared \
                 buffers or declare HSM_THREADING_SERIALIZED"
            }
        }
    }
}

/// One phase: its mode, its deadline and the threads that are ready.
struct Phase {
    mode: Mode,
    started: Instant,
    ready: AtomicUsize,
    /// Held while a thread puts the key in its own instance (see [`Phase::own_key`]).
    setup: Mutex<()>,
}

impl Phase {
    fn new(mode: Mode) -> Self {
        Phase {
            mode,
            started: Instant::now(),
            ready: AtomicUsize::new(0),
            setup: Mutex::new(()),
        }
    }

    /// Marks this thread ready and waits (at most [`READY_WAIT`]) for the others.
    fn wait_ready(&self) {
        self.ready.fetch_add(1, Ordering::SeqCst);
        let since = Instant::now();
        while self.ready.load(Ordering::SeqCst) < THREADS && since.elapsed() < READY_WAIT {
            std::thread::sleep(Duration::from_micros(100));
        }
    }

    /// In an instance per thread, makes sure `inst` holds the hot-path key: `holds` tells
    /// whether it already does (a plugin that keeps its key in the device or under
    /// `state_dir` shows the key the serial run put there), else `put` imports or activates
    /// it. One thread at a time: the instances are one device, and replacing its key from
    /// several of them at once is not what a host does. `Ok(true)` when this instance had to
    /// get the key itself.
    fn own_key(
        &self,
        t: usize,
        what: &str,
        holds: impl FnOnce() -> Result<bool, Verdict>,
        put: impl FnOnce() -> Result<Result<(), RawFailure>, Verdict>,
    ) -> Result<bool, Verdict> {
        let _one_at_a_time = self.setup.lock().unwrap_or_else(|p| p.into_inner());
        if holds()? {
            return Ok(false);
        }
        match put()? {
            Ok(()) => Ok(true),
            Err(e) => Err(self.fail(
                t,
                0,
                &format!("{what} to succeed as it does without threads"),
                format!("{what} failed with {e}"),
            )),
        }
    }

    /// Whether call `i` (of at most `max`) runs: the first always does, later ones until the
    /// phase's budget is spent.
    fn go_on(&self, i: usize, max: usize) -> bool {
        i == 0 || (i < max && self.started.elapsed() < PHASE_BUDGET)
    }

    /// A failure of thread `t`'s call `i` in this phase.
    fn fail(&self, t: usize, i: usize, expected: &str, actual: String) -> Verdict {
        Verdict::fail(
            format!("{expected} ({})", self.mode.what()),
            format!("thread {t} call {i}: {actual}"),
        )
    }

    /// Thread `t`'s call `i` got someone else's answer.
    fn mixed(&self, t: usize, i: usize, actual: String) -> Verdict {
        self.fail(
            t,
            i,
            "every call's own answer while several threads call at once",
            format!("{actual} — {}", self.mode.mixed_advice()),
        )
    }
}

/// What one thread does in a phase: (thread index, its instance, the phase) to calls made.
type Work<'a> = dyn Fn(usize, &RawInstance, &Phase) -> Result<usize, Verdict> + Sync + 'a;

/// Runs `work` on [`THREADS`] threads, each with an instance of its own; the calls made.
fn on_instance_each(
    table: &'static HsmPluginTable,
    config: &[(String, String)],
    work: &Work<'_>,
) -> Result<usize, Verdict> {
    let phase = Phase::new(Mode::PerThread);
    join_all(|t| {
        let inst = RawInstance::create(table, config).map_err(|e| {
            Verdict::fail(format!("create to succeed on thread {t}"), e.to_string())
        })?;
        work(t, &inst, &phase)
    })
}

/// Runs `work` on [`THREADS`] threads sharing `inst`; only for a plugin that declared
/// HSM_THREADING_CONCURRENT.
fn on_one_instance(inst: &RawInstance, work: &Work<'_>) -> Result<usize, Verdict> {
    let phase = Phase::new(Mode::Shared);
    let shared = Shared(inst);
    join_all(|t| work(t, shared.get(), &phase))
}

/// Runs `f(t)` for every thread index at once; the sum of what they return, or the failure
/// of the lowest-numbered thread that failed.
fn join_all(f: impl Fn(usize) -> Result<usize, Verdict> + Sync) -> Result<usize, Verdict> {
    let results: Vec<Result<usize, Verdict>> = std::thread::scope(|s| {
        let f = &f;
        let handles: Vec<_> = (0..THREADS).map(|t| s.spawn(move || f(t))).collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(Verdict::fail("no panic", "a thread panicked")))
            })
            .collect()
    });
    let mut calls = 0;
    for r in results {
        calls += r?;
    }
    Ok(calls)
}

/// A step of the serial baseline: a failure there is not about threads (the interface's own
/// checks report it), so it becomes a skip naming it; skips and setup pass through.
fn serial<T>(r: Result<T, Verdict>) -> Result<T, Verdict> {
    r.map_err(|v| match v {
        Verdict::Fail { expected, actual } => Verdict::skip(format!(
            "the operation already fails without threads (expected {expected}; {actual}); \
             the interface's own checks report it"
        )),
        other => other,
    })
}

/// The input of thread `t`'s call `i`: distinct per thread, call and phase.
fn input(phase: &Phase, t: usize, i: usize) -> Vec<u8> {
    let tag = match phase.mode {
        Mode::PerThread => "own",
        Mode::Shared => "shared",
    };
    format!("hsm-conformance {tag} thread {t} call {i}").into_bytes()
}
/// Runs `work` on an instance per thread, then, when the plugin declares concurrent calls,
/// on one shared instance after `prepare` ran on it; the note saying what `what` were done.
fn both_phases(
    ctx: &mut CheckContext,
    what: &str,
    prepare: impl Fn(&RawInstance) -> Result<(), Verdict>,
    work: &Work<'_>,
) -> Result<String, Verdict> {
    let table = ctx.table()?;
    let per_thread = on_instance_each(table, &ctx.config, work)?;
    let shared = if table.threading == HSM_THREADING_CONCURRENT {
        let inst = instance(ctx)?;
        prepare(&inst)?;
        Some(on_one_instance(&inst, work)?)
    } else {
        None
    };
    Ok(hot_note(what, per_thread, shared))
}

/// The pass note of a hot-path check.
fn hot_note(what: &str, per_thread: usize, shared: Option<usize>) -> String {
    let mut note = format!("{per_thread} {what} from {}", Mode::PerThread.what());
    match shared {
        Some(n) => note.push_str(&format!("; {n} from {}", Mode::Shared.what())),
        None => note
            .push_str("; no shared instance: the plugin declares calls on one instance serialized"),
    }
    note
}

/// What a failed call adds when its instance had to get the key itself.
const OWN_KEY_HINT: &str = "; this instance had to import or activate the key itself, because a \
     new instance did not hold the key an earlier one was given (see \
     lifecycle.*-survives-process), and the other threads' instances did the same on one device";

/// Thread `t`'s signing loop: `sign` each distinct input, `check` each answer. `own_key`: the
/// instance had to get the key itself.
fn sign_loop(
    phase: &Phase,
    t: usize,
    what: &str,
    own_key: bool,
    sign: impl Fn(&[u8]) -> Result<Result<Vec<u8>, RawFailure>, Verdict>,
    check: impl Fn(&[u8], &[u8]) -> Result<(), String>,
) -> Result<usize, Verdict> {
    phase.wait_ready();
    let mut i = 0;
    while phase.go_on(i, HOT_CALLS) {
        let data = input(phase, t, i);
        match sign(&data)? {
            Ok(answer) => {
                if let Err(actual) = check(&data, &answer) {
                    // Whose answer it is, when it is another thread's.
                    let whose = (0..THREADS)
                        .filter(|other| *other != t)
                        .flat_map(|other| (0..HOT_CALLS).map(move |j| (other, j)))
                        .find(|(other, j)| check(&input(phase, *other, *j), &answer).is_ok())
                        .map(|(other, j)| {
                            format!(", which is the answer to thread {other} call {j}")
                        })
                        .unwrap_or_default();
                    return Err(phase.mixed(t, i, format!("{actual}{whose}")));
                }
            }
            Err(e) => {
                return Err(phase.fail(
                    t,
                    i,
                    &format!("{what} to succeed as it does without threads"),
                    format!(
                        "{what} failed with {e}{}",
                        if own_key { OWN_KEY_HINT } else { "" }
                    ),
                ))
            }
        }
        i += 1;
    }
    Ok(i)
}

/// Compares an HMAC with the one computed in software.
fn hmac_check(key: &[u8], data: &[u8], got: &[u8]) -> Result<(), String> {
    let want = hmac_sha256(key, data);
    if got == want {
        return Ok(());
    }
    Err(format!(
        "{} instead of the HMAC-SHA256 of `{}` ({})",
        hex::encode(got),
        String::from_utf8_lossy(data),
        hex::encode(&want)
    ))
}

fn symmetric_hot_path(ctx: &mut CheckContext) -> CheckResult {
    {
        // Without threads first; the instance is gone before the threads start.
        let inst = instance(ctx)?;
        serial(import(&inst, &HOT_KEY))?;
        let data = b"hsm-conformance serial";
        let got = serial(ok(inst.sym_sign(data)?, "sign"))?;
        serial(hmac_check(&HOT_KEY, data, &got).map_err(|e| Verdict::fail("the HMAC", e)))?;
    }
    let work = |t: usize, inst: &RawInstance, phase: &Phase| -> Result<usize, Verdict> {
        // The shared instance got the key before the threads started.
        let own_key = phase.mode == Mode::PerThread
            && phase.own_key(
                t,
                "import_key",
                || {
                    let probe = b"hsm-conformance probe";
                    Ok(matches!(inst.sym_sign(probe)?,
                        Ok(s) if hmac_check(&HOT_KEY, probe, &s).is_ok()))
                },
                || inst.import_key("", &HOT_KEY),
            )?;
        sign_loop(
            phase,
            t,
            "sign",
            own_key,
            |data| inst.sym_sign(data),
            |data, got| hmac_check(&HOT_KEY, data, got),
        )
    };
    let note = both_phases(ctx, "calls verified", |inst| import(inst, &HOT_KEY), &work)?;
    Ok(Verdict::pass(note))
}

fn x509_hot_path(ctx: &mut CheckContext) -> CheckResult {
    let (key, alg) = {
        let inst = instance(ctx)?;
        let pem = serial(ok(inst.chain()?, "get_certificate_chain"))?;
        let key = serial(chain_from_bytes(&pem).and_then(|c| leaf_key(&c)))?;
        let Some(alg) = algorithms_for(&key).first().copied() else {
            return Err(Verdict::skip(
                "the leaf key is neither P-256, P-384 nor RSA",
            ));
        };
        let digest = digest_for(alg, b"hsm-conformance serial")?;
        let sig = serial(ok(inst.sign_digest(alg, &digest)?, "sign_digest"))?;
        serial(if verify(&key, alg, &digest, &sig).unwrap_or(false) {
            Ok(())
        } else {
            Err(Verdict::fail(
                "a signature that verifies with the leaf key",
                "one that does not",
            ))
        })?;
        (key, alg)
    };
    let check = |data: &[u8], sig: &[u8]| -> Result<(), String> {
        let digest = digest_for(alg, data).map_err(|_| "no digest".to_string())?;
        match verify(&key, alg, &digest, sig) {
            Ok(true) => Ok(()),
            Ok(false) => Err(raw_ecdsa_diagnosis(&key, alg, &digest, sig).unwrap_or_else(|| {
                format!(
                    "a {}-byte signature that does not verify with the leaf key over the digest of `{}`",
                    sig.len(),
                    String::from_utf8_lossy(data)
                )
            })),
            Err(e) => Err(format!("a signature openssl cannot check: {e}")),
        }
    };
    let work = |t: usize, inst: &RawInstance, phase: &Phase| -> Result<usize, Verdict> {
        sign_loop(
            phase,
            t,
            "sign_digest",
            false,
            |data| inst.sign_digest(alg, &digest_for(alg, data)?),
            check,
        )
    };
    let note = both_phases(ctx, "calls verified", |_| Ok(()), &work)?;
    Ok(Verdict::pass(note))
}

/// A DPS challenge carrying [`HOT_KEY`] for the device's EK and SRK (each call a different
/// blob: fresh seeds and secrets), built with the same library as the TPM checks' challenges.
fn hot_challenge(ek: &[u8], srk: &[u8]) -> Result<Vec<u8>, Verdict> {
    make_dps_challenge_for_key(ek, srk, &HOT_KEY)
        .map(|c| c.blob)
        .map_err(|e| Verdict::fail("EK and SRK usable to build a DPS challenge", e.to_string()))
}

fn tpm_hot_path(ctx: &mut CheckContext) -> CheckResult {
    let (ek, srk) = {
        // Dropped before the threads start: a TPM that serves one connection at a time is
        // free for them.
        let inst = instance(ctx)?;
        let ek = serial(ok(inst.ek()?, "get_endorsement_key"))?;
        let srk = serial(ok(inst.srk()?, "get_storage_root_key"))?;
        let blob = serial(hot_challenge(&ek, &srk))?;
        serial(ok(
            inst.activate(&blob)?,
            "activate_identity_key with a valid challenge",
        ))?;
        let data = b"hsm-conformance serial";
        let got = serial(ok(inst.tpm_sign(data)?, "sign_with_identity"))?;
        serial(hmac_check(&HOT_KEY, data, &got).map_err(|e| Verdict::fail("the HMAC", e)))?;
        (ek, srk)
    };
    let work = |t: usize, inst: &RawInstance, phase: &Phase| -> Result<usize, Verdict> {
        // On the shared instance every thread activates its own challenge (the same key)
        // while the others sign; in an instance per thread, as for the symmetric key.
        let own_key = match phase.mode {
            Mode::Shared => {
                if let Err(e) = inst.activate(&hot_challenge(&ek, &srk)?)? {
                    return Err(phase.fail(
                        t,
                        0,
                        "activate_identity_key to succeed as it does without threads",
                        format!("activate_identity_key failed with {e}"),
                    ));
                }
                false
            }
            Mode::PerThread => phase.own_key(
                t,
                "activate_identity_key",
                || {
                    let probe = b"hsm-conformance probe";
                    Ok(matches!(inst.tpm_sign(probe)?,
                        Ok(s) if hmac_check(&HOT_KEY, probe, &s).is_ok()))
                },
                || inst.activate(&hot_challenge(&ek, &srk)?),
            )?,
        };
        sign_loop(
            phase,
            t,
            "sign_with_identity",
            own_key,
            |data| inst.tpm_sign(data),
            |data, got| hmac_check(&HOT_KEY, data, got),
        )
    };
    let note = both_phases(ctx, "calls verified", |_| Ok(()), &work)?;
    Ok(Verdict::pass(note))
}

/// One way to make a call fail without changing the device.
struct Provocation {
    /// What it does, for messages.
    what: &'static str,
    /// The call; `Ok(Err(..))` is the refusal wanted.
    call: fn(&RawInstance) -> Result<Result<(), RawFailure>, Verdict>,
}

/// A slice with a NULL pointer and a length: every plugin must refuse it.
const NULL_16: HsmSlice = HsmSlice {
    ptr: std::ptr::null(),
    len: 16,
};

fn sym_sign_null(inst: &RawInstance) -> Result<Result<(), RawFailure>, Verdict> {
    let f = inst.sym_table()?.sign;
    // SAFETY: a NULL data pointer on purpose (the plugin must refuse it); valid out pointer.
    Ok(inst.output(|i, o| unsafe { f(i, NULL_16, o) }).map(drop))
}

fn sym_import_empty(inst: &RawInstance) -> Result<Result<(), RawFailure>, Verdict> {
    inst.import_key("", &[])
}

fn sym_import_null(inst: &RawInstance) -> Result<Result<(), RawFailure>, Verdict> {
    let f = inst.sym_table()?.import_key;
    // SAFETY: an empty id and a NULL key pointer on purpose (the plugin must refuse it).
    Ok(inst.status(|i| unsafe { f(i, HsmSlice::from_bytes(&[]), NULL_16) }))
}

fn x509_unknown_algorithm(inst: &RawInstance) -> Result<Result<(), RawFailure>, Verdict> {
    Ok(inst.sign_digest(0xdead, &[0u8; 32])?.map(drop))
}

fn x509_digest_1(inst: &RawInstance) -> Result<Result<(), RawFailure>, Verdict> {
    Ok(inst
        .sign_digest(HSM_SIGN_ECDSA_P256_SHA256, &[1])?
        .map(drop))
}

fn x509_digest_5(inst: &RawInstance) -> Result<Result<(), RawFailure>, Verdict> {
    Ok(inst
        .sign_digest(HSM_SIGN_ECDSA_P256_SHA256, &[5; 5])?
        .map(drop))
}

fn x509_digest_null(inst: &RawInstance) -> Result<Result<(), RawFailure>, Verdict> {
    let f = inst.x509_table()?.sign_digest;
    // SAFETY: a NULL digest pointer on purpose (the plugin must refuse it); valid out pointer.
    Ok(inst
        .output(|i, o| unsafe { f(i, HSM_SIGN_ECDSA_P256_SHA256, NULL_16, o) })
        .map(drop))
}

fn tpm_sign_null(inst: &RawInstance) -> Result<Result<(), RawFailure>, Verdict> {
    let f = inst.tpm_table()?.sign_with_identity;
    // SAFETY: a NULL data pointer on purpose (the plugin must refuse it); valid out pointer.
    Ok(inst.output(|i, o| unsafe { f(i, NULL_16, o) }).map(drop))
}

fn tpm_activate_empty(inst: &RawInstance) -> Result<Result<(), RawFailure>, Verdict> {
    inst.activate(&[])
}

fn tpm_activate_short(inst: &RawInstance) -> Result<Result<(), RawFailure>, Verdict> {
    // A TPM2B size announcing 32 bytes, followed by 3.
    inst.activate(&[0, 32, 1, 2, 3])
}

/// The failures tried for the interfaces `inst`'s plugin offers. None of them reaches a
/// device: each is refused while its arguments are read.
fn provocations(inst: &RawInstance) -> Vec<Provocation> {
    let mut v = Vec::new();
    if !inst.table.symmetric_key.is_null() {
        v.extend([
            Provocation {
                what: "symmetric sign with a NULL data pointer and length 16",
                call: sym_sign_null,
            },
            Provocation {
                what: "import_key with an empty key",
                call: sym_import_empty,
            },
            Provocation {
                what: "import_key with a NULL key pointer and length 16",
                call: sym_import_null,
            },
        ]);
    }
    if !inst.table.x509.is_null() {
        v.extend([
            Provocation {
                what: "sign_digest with algorithm 0xdead",
                call: x509_unknown_algorithm,
            },
            Provocation {
                what: "sign_digest with a 1-byte digest",
                call: x509_digest_1,
            },
            Provocation {
                what: "sign_digest with a 5-byte digest",
                call: x509_digest_5,
            },
            Provocation {
                what: "sign_digest with a NULL digest pointer and length 16",
                call: x509_digest_null,
            },
        ]);
    }
    if !inst.table.tpm.is_null() {
        v.extend([
            Provocation {
                what: "sign_with_identity with a NULL data pointer and length 16",
                call: tpm_sign_null,
            },
            Provocation {
                what: "activate_identity_key with an empty blob",
                call: tpm_activate_empty,
            },
            Provocation {
                what: "activate_identity_key with a truncated blob",
                call: tpm_activate_short,
            },
        ]);
    }
    v
}

/// A message `last_error` gave that names something (not the harness's notes for none).
fn meaningful(message: &str) -> bool {
    !message.is_empty() && message != "(no message)" && !message.starts_with("(last_error")
}

/// Learns, without threads, which provocations fail with a stable message of their own.
fn learn(inst: &RawInstance) -> Result<Vec<(Provocation, String)>, Verdict> {
    let mut kinds: Vec<(Provocation, String)> = Vec::new();
    for p in provocations(inst) {
        let (Err(a), Err(b)) = ((p.call)(inst)?, (p.call)(inst)?) else {
            continue;
        };
        if tells_apart(
            kinds.iter().map(|(_, m)| m.as_str()),
            &a.message,
            &b.message,
        ) {
            kinds.push((p, a.message));
        }
    }
    Ok(kinds)
}

/// Whether a failure whose message was `first`, then `second`, can be told apart from those
/// already kept: the same message both times, a real one, and not one of theirs.
fn tells_apart<'a>(mut kept: impl Iterator<Item = &'a str>, first: &str, second: &str) -> bool {
    first == second && meaningful(first) && kept.all(|m| m != first)
}

/// The pass note when fewer than two failures have messages of their own, `None` otherwise.
fn not_checkable(messages: &[&str]) -> Option<String> {
    if messages.len() >= 2 {
        return None;
    }
    Some(format!(
        "not checkable: the failures tried do not give distinct messages (only {}), so \
         threads' messages cannot be told apart",
        if messages.is_empty() {
            "none".to_string()
        } else {
            messages
                .iter()
                .map(|m| format!("`{m}`"))
                .collect::<Vec<_>>()
                .join(", ")
        }
    ))
}

fn last_error_per_thread(ctx: &mut CheckContext) -> CheckResult {
    let kinds = learn(&instance(ctx)?)?;
    let messages: Vec<&str> = kinds.iter().map(|(_, m)| m.as_str()).collect();
    if let Some(note) = not_checkable(&messages) {
        return Ok(Verdict::pass(note));
    }
    let kinds = &kinds;
    let work = |t: usize, inst: &RawInstance, phase: &Phase| -> Result<usize, Verdict> {
        let (own, want) = &kinds[t % kinds.len()];
        phase.wait_ready();
        let mut i = 0;
        while phase.go_on(i, ERROR_CALLS) {
            match (own.call)(inst)? {
                Ok(()) => {
                    return Err(phase.fail(
                        t,
                        i,
                        &format!("{} to be refused, as it is without threads", own.what),
                        "it returned HSM_OK".into(),
                    ))
                }
                Err(e) if e.message == *want => {}
                Err(e) => {
                    let whose = kinds
                        .iter()
                        .find(|(_, m)| *m == e.message)
                        .map(|(p, _)| {
                            format!("the message of {}, another thread's failure", p.what)
                        })
                        .unwrap_or_else(|| "not this failure's message".into());
                    let advice = match phase.mode {
                        Mode::PerThread => {
                            "last_error is shared between instances and threads; keep the \
                             message per instance and per thread"
                        }
                        Mode::Shared => {
                            "declared concurrent but last_error is shared between threads; \
                             keep the message per thread (thread-local, like errno) or declare \
                             HSM_THREADING_SERIALIZED"
                        }
                    };
                    return Err(phase.fail(
                        t,
                        i,
                        "each thread to read back its own failure's message from last_error",
                        format!(
                            "after {} last_error gave `{}` ({whose}) instead of `{want}` — {advice}",
                            own.what, e.message
                        ),
                    ));
                }
            }
            i += 1;
        }
        Ok(i)
    };
    let note = both_phases(ctx, "failures read back", |_| Ok(()), &work)?;
    Ok(Verdict::pass(format!(
        "{} distinct failures; {note}",
        kinds.len()
    )))
}

/// Reads the identity [`CALLS`] times on `inst`; each must be `serial`.
fn same_identity(inst: &RawInstance, serial: &[u8]) -> Result<usize, Verdict> {
    for _ in 0..CALLS {
        if identity_ok(inst)? != serial {
            return Err(Verdict::fail(
                "the serial answer from every thread",
                "different bytes",
            ));
        }
    }
    Ok(CALLS)
}

fn instance_per_thread(ctx: &mut CheckContext) -> CheckResult {
    let serial = identity_ok(&instance(ctx)?)?;
    let table = ctx.table()?;
    let config = &ctx.config;
    join_all(|_| {
        let inst = RawInstance::create(table, config)
            .map_err(|e| Verdict::fail("create to succeed on another thread", e.to_string()))?;
        same_identity(&inst, &serial)
    })?;
    Ok(Verdict::pass(format!("{THREADS} threads x {CALLS} calls")))
}

/// Lets threads share an instance the plugin declared safe for concurrent calls.
struct Shared<'a>(&'a RawInstance);
// SAFETY: only built after the plugin declared HSM_THREADING_CONCURRENT, which is its promise
// that one instance may be called from several threads at once.
unsafe impl Sync for Shared<'_> {}

impl Shared<'_> {
    /// The instance (a method, so that closures capture the `Sync` wrapper, not the field).
    fn get(&self) -> &RawInstance {
        self.0
    }
}

fn shared_instance(ctx: &mut CheckContext) -> CheckResult {
    let table = ctx.table()?;
    if table.threading != HSM_THREADING_CONCURRENT {
        return Err(Verdict::skip(
            "the plugin declares calls on one instance serialized",
        ));
    }
    let inst = instance(ctx)?;
    let serial = identity_ok(&inst)?;
    on_one_instance(&inst, &|_, inst, _| same_identity(inst, &serial))?;
    Ok(Verdict::pass(format!(
        "{THREADS} threads x {CALLS} calls on one instance"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_stable_real_and_new_messages_tell_failures_apart() {
        let kept = ["import_key: the key is empty"];
        assert!(tells_apart(kept.into_iter(), "bad digest", "bad digest"));
        // A message that changes between two tries (a counter, a time) cannot be compared.
        assert!(!tells_apart(kept.into_iter(), "error 1", "error 2"));
        // No message, or last_error itself failing, names nothing.
        assert!(!tells_apart(
            kept.into_iter(),
            "(no message)",
            "(no message)"
        ));
        assert!(!tells_apart(
            kept.into_iter(),
            "(last_error itself failed with HSM_ERR_INTERNAL)",
            "(last_error itself failed with HSM_ERR_INTERNAL)"
        ));
        // The same message as another failure's: threads could not be told apart.
        assert!(!tells_apart(kept.into_iter(), kept[0], kept[0]));
    }

    #[test]
    fn alike_messages_pass_with_a_note_instead_of_failing() {
        let note = not_checkable(&["invalid argument"]).unwrap_or_default();
        assert!(
            note.starts_with("not checkable") && note.contains("`invalid argument`"),
            "{note}"
        );
        assert!(not_checkable(&[]).is_some_and(|n| n.contains("only none")));
        assert_eq!(not_checkable(&["a", "b"]), None);
    }
}
