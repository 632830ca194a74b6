//! Persistence: the identity and its keys outlive the process. A device runs `hsmkit
//! enroll-info` or `hsmkit import-key` in one process and `hsmkit provision` in another, maybe
//! after a reboot, so what one process reads or stores the next must find under `state_dir`.
//! A plugin that keeps its identity in memory passes every single-process check and then
//! fails to provision.
//!
//! Each check does the first part in its own process (itself fresh: process A), where the
//! plugin is called as every other check calls it, then runs the later parts as steps in fresh
//! processes (B, C; see [`crate::step`]) on the same settings and state folder, and compares.
//! What goes wrong within process A is the business of the checks of that call (it is skipped
//! here, naming what failed), so a FAIL of these checks means one thing: something did not
//! survive the process. A step reports what the plugin answered and never judges.

use super::symmetric::import;
use super::tpm::challenge_for;
use super::x509::{algorithms_for, chain_from_bytes, digest_for, leaf_key, verify};
use super::{hmac_sha256, identity_missing, instance};
use crate::context::CheckContext;
use crate::ops::ok;
use crate::raw::{RawFailure, RawInstance};
use crate::step::in_fresh_process;
use crate::verdict::{CheckResult, Verdict};
use crate::{register, register_step};
use hsm_api::*;
use openssl::pkey::{PKey, Public};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

register!(
    "lifecycle.identity-survives-process",
    Lifecycle,
    Any,
    true,
    "the identity (EK and SRK, chain and common name, registration id) one process reads is what a fresh process reads",
    identity_survives
);
register!(
    "lifecycle.imported-key-survives-process",
    Lifecycle,
    SymmetricKey,
    true,
    "a key imported in one process signs in a fresh process (HMAC-SHA256 with that key)",
    imported_key_survives
);
register!(
    "lifecycle.activated-key-survives-process",
    Lifecycle,
    Tpm,
    true,
    "a DPS challenge for the EK/SRK one process read, activated in a fresh process, signs in a third",
    activated_key_survives
);
register!(
    "lifecycle.signing-key-survives-process",
    Lifecycle,
    X509,
    true,
    "sign_digest in a fresh process verifies against the leaf key another process read",
    signing_key_survives
);

register_step!("persistence.identity", identity_step);
register_step!("persistence.activate", activate_step);
register_step!("persistence.sign", sign_step);
register_step!("persistence.x509-sign", x509_sign_step);

/// The fix, in every diagnosis of something that did not survive the process.
const KEEP_IT: &str = "keep it under state_dir (files 0600, written atomically), not in memory";

/// The data signed across processes (shaped like a DPS SAS string to sign).
const DATA: &[u8] = b"myscope/registrations/conf-persistence\n1700000000";

/// One part of the identity as a process read it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Part {
    /// What it is ("EK", "certificate chain", ...).
    name: String,
    /// Its bytes, hex; `None` when the getter answered `HSM_ERR_NOT_FOUND`.
    value: Option<String>,
    /// The plugin's message for `HSM_ERR_NOT_FOUND`.
    not_found: Option<String>,
}

/// What one call answered in a step's process.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "answer", rename_all = "camelCase")]
enum Answer {
    /// HSM_OK with these bytes (hex; empty for a call without output).
    Ok { hex: String },
    /// A refusal: the status and its text (status name and the plugin's message).
    Refused { status: HsmStatus, text: String },
}

impl Answer {
    fn of(r: Result<Vec<u8>, RawFailure>) -> Self {
        match r {
            Ok(bytes) => Answer::Ok {
                hex: hex::encode(bytes),
            },
            Err(e) => Answer::Refused {
                status: e.status,
                text: e.to_string(),
            },
        }
    }

    /// The key the call needed is not there: the symptom of a key kept in memory.
    fn is_gone(&self) -> bool {
        matches!(self, Answer::Refused { status, .. }
            if *status == HSM_ERR_NOT_FOUND || *status == HSM_ERR_INVALID_STATE)
    }

    fn describe(&self) -> String {
        match self {
            Answer::Ok { hex } if hex.is_empty() => "HSM_OK".into(),
            Answer::Ok { hex } => format!("HSM_OK with {} bytes", hex.len() / 2),
            Answer::Refused { text, .. } => text.clone(),
        }
    }
}

/// What the activating process saw: its EK/SRK, the activation and a sign right after it.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Activated {
    ek: Answer,
    srk: Answer,
    activate: Answer,
    sign: Option<Answer>,
}

/// What an X.509 signing process saw: its own chain and the signature.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct X509Signed {
    chain: Answer,
    signature: Answer,
}

/// Every identity getter the plugin declares, in `identity()`'s order; `HSM_ERR_NOT_FOUND`
/// is kept as a part without a value, any other failure ends the check.
fn identity_parts(inst: &RawInstance) -> Result<Vec<Part>, Verdict> {
    let mut reads: Vec<(&str, Result<Vec<u8>, RawFailure>)> = Vec::new();
    if !inst.table.tpm.is_null() {
        reads.push(("EK", inst.ek()?));
        reads.push(("SRK", inst.srk()?));
    }
    if !inst.table.x509.is_null() {
        reads.push(("certificate chain", inst.chain()?));
        reads.push(("common name", inst.common_name()?));
    }
    if !inst.table.symmetric_key.is_null() {
        reads.push(("registration id", inst.registration_id()?));
    }
    if reads.is_empty() {
        return Err(Verdict::skip("the plugin offers no interface"));
    }
    let mut parts = Vec::new();
    for (name, r) in reads {
        parts.push(match r {
            Err(e) if e.status == HSM_ERR_NOT_FOUND => Part {
                name: name.into(),
                value: None,
                not_found: Some(e.message),
            },
            r => Part {
                name: name.into(),
                value: Some(hex::encode(ok(r, &format!("reading the {name}"))?)),
                not_found: None,
            },
        });
    }
    Ok(parts)
}

// ---- steps (each in a fresh process of its own) ----

fn to_value<T: Serialize>(v: &T) -> Result<Value, Verdict> {
    serde_json::to_value(v).map_err(|e| Verdict::skip(format!("step result not encodable: {e}")))
}

fn from_value<T: for<'de> Deserialize<'de>>(v: Value, step: &str) -> Result<T, Verdict> {
    serde_json::from_value(v).map_err(|e| {
        Verdict::skip(format!(
            "step `{step}` gave a result this check cannot read: {e}"
        ))
    })
}

/// Step argument `i`, hex-decoded.
fn hex_arg(args: &[String], i: usize) -> Result<Vec<u8>, Verdict> {
    args.get(i)
        .and_then(|a| hex::decode(a).ok())
        .ok_or_else(|| Verdict::skip(format!("step argument {i} missing or not hex: {args:?}")))
}

/// No args: the identity parts this process reads.
fn identity_step(ctx: &mut CheckContext, _args: &[String]) -> Result<Value, Verdict> {
    to_value(&identity_parts(&instance(ctx)?)?)
}

/// Args: challenge blob (hex), data (hex). Reads EK/SRK, activates, signs in this process.
fn activate_step(ctx: &mut CheckContext, args: &[String]) -> Result<Value, Verdict> {
    let blob = hex_arg(args, 0)?;
    let data = hex_arg(args, 1)?;
    let inst = instance(ctx)?;
    let ek = Answer::of(inst.ek()?);
    let srk = Answer::of(inst.srk()?);
    let activate = Answer::of(inst.activate(&blob)?.map(|()| Vec::new()));
    let sign = match activate {
        Answer::Ok { .. } => Some(Answer::of(inst.tpm_sign(&data)?)),
        Answer::Refused { .. } => None,
    };
    to_value(&Activated {
        ek,
        srk,
        activate,
        sign,
    })
}

/// Args: `tpm` or `symmetric`, data (hex). Signs with the key an earlier process left.
fn sign_step(ctx: &mut CheckContext, args: &[String]) -> Result<Value, Verdict> {
    let data = hex_arg(args, 1)?;
    let inst = instance(ctx)?;
    let r = match args.first().map(String::as_str) {
        Some("tpm") => inst.tpm_sign(&data)?,
        Some("symmetric") => inst.sym_sign(&data)?,
        other => return Err(Verdict::skip(format!("unknown sign kind {other:?}"))),
    };
    to_value(&Answer::of(r))
}

/// Args: algorithm (decimal), digest (hex). Reads this process's chain and signs the digest.
fn x509_sign_step(ctx: &mut CheckContext, args: &[String]) -> Result<Value, Verdict> {
    let algorithm: u32 = args
        .first()
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| Verdict::skip(format!("step argument 0 is not an algorithm: {args:?}")))?;
    let digest = hex_arg(args, 1)?;
    let inst = instance(ctx)?;
    to_value(&X509Signed {
        chain: Answer::of(inst.chain()?),
        signature: Answer::of(inst.sign_digest(algorithm, &digest)?),
    })
}

// ---- checks ----

/// Process A's part: a failure there is not about persistence, and the checks of that call
/// report it, so it becomes a skip that says what failed. Setup and skips pass through.
fn in_process_a<T>(r: Result<T, Verdict>) -> Result<T, Verdict> {
    r.map_err(|v| match v {
        Verdict::Fail { expected, actual } => Verdict::skip(format!(
            "nothing to carry across processes: within one process already, expected {expected}; {actual} (the checks of that call report it)"
        )),
        other => other,
    })
}

/// The FAIL of something that did not survive the process; `what` says what happened.
fn did_not_survive(expected: &str, thing: &str, what: String) -> Verdict {
    Verdict::fail(
        expected,
        format!("the {thing} does not survive the process: {what} — {KEEP_IT}"),
    )
}

/// A value for messages: text as it is, bytes by size and fingerprint.
fn show(value: Option<&str>) -> String {
    let Some(hex) = value else {
        return "nothing (HSM_ERR_NOT_FOUND)".into();
    };
    let bytes = hex::decode(hex).unwrap_or_default();
    match std::str::from_utf8(&bytes) {
        Ok(text) if text.len() <= 128 && !text.contains('\n') => format!("`{text}`"),
        _ => format!(
            "{} bytes with SHA-256 {}…",
            bytes.len(),
            &hex::encode(Sha256::digest(&bytes))[..16]
        ),
    }
}

fn identity_survives(ctx: &mut CheckContext) -> CheckResult {
    let a = in_process_a(identity_parts(&instance(ctx)?))?;
    if let Some(missing) = a.first().filter(|p| p.value.is_none()) {
        // No identity with these settings at all: the command line's business.
        return Err(identity_missing(&RawFailure {
            status: HSM_ERR_NOT_FOUND,
            message: missing.not_found.clone().unwrap_or_default(),
        }));
    }
    // Two instances of one process disagreeing is lifecycle.two-instances' finding.
    if in_process_a(identity_parts(&instance(ctx)?))? != a {
        return Err(Verdict::skip(
            "the identity differs between two instances of one process already (lifecycle.two-instances reports it)",
        ));
    }
    let b = in_fresh_process(
        ctx,
        "persistence.identity",
        &[],
        "reading the identity (process B)",
    )?;
    let b: Vec<Part> = from_value(b, "persistence.identity")?;
    let differences: Vec<String> = a
        .iter()
        .filter_map(|pa| match b.iter().find(|p| p.name == pa.name) {
            Some(pb) if pb.value == pa.value => None,
            Some(pb) => Some(format!(
                "process A read the {} as {}, process B read {}",
                pa.name,
                show(pa.value.as_deref()),
                show(pb.value.as_deref())
            )),
            None => Some(format!("process B did not read the {}", pa.name)),
        })
        .collect();
    if !differences.is_empty() {
        return Err(did_not_survive(
            "the same identity in every process on one state_dir (what `hsmkit enroll-info` reads is what `hsmkit provision` later uses)",
            "identity",
            differences.join("; "),
        ));
    }
    let names: Vec<&str> = a.iter().map(|p| p.name.as_str()).collect();
    Ok(Verdict::pass(format!(
        "{}: the same in a fresh process",
        names.join(", ")
    )))
}

fn imported_key_survives(ctx: &mut CheckContext) -> CheckResult {
    let key = zeroize::Zeroizing::new(rand::random::<[u8; 32]>());
    let want = hex::encode(hmac_sha256(&*key, DATA));
    {
        let inst = instance(ctx)?;
        in_process_a(import(&inst, &*key))?;
        let got = in_process_a(ok(inst.sym_sign(DATA)?, "sign right after import_key"))?;
        if hex::encode(&got) != want {
            return Err(Verdict::skip(
                "nothing to carry across processes: sign right after import_key is not HMAC-SHA256 with the imported key within one process already (symmetric-key.import-and-sign reports it)",
            ));
        }
    }
    let b = in_fresh_process(
        ctx,
        "persistence.sign",
        &["symmetric", &hex::encode(DATA)],
        "signing with the imported key (process B)",
    )?;
    let expected = "sign in a fresh process to be HMAC-SHA256 with the key an earlier process imported (`hsmkit import-key`, then `hsmkit provision`)";
    match from_value::<Answer>(b, "persistence.sign")? {
        Answer::Ok { hex } if hex == want => Ok(Verdict::pass(
            "imported and signed in process A, the same HMAC from process B",
        )),
        gone if gone.is_gone() => Err(did_not_survive(
            expected,
            "imported key",
            format!(
                "process A imported it and signed with it, process B's sign answered {}",
                gone.describe()
            ),
        )),
        Answer::Ok { hex } => Err(did_not_survive(
            expected,
            "imported key",
            format!(
                "process A imported it and signed with it, process B signed with another key ({} bytes that are not the HMAC)",
                hex.len() / 2
            ),
        )),
        other => Err(Verdict::fail(expected, other.describe())),
    }
}

fn activated_key_survives(ctx: &mut CheckContext) -> CheckResult {
    let (ek, srk) = {
        let inst = instance(ctx)?;
        (
            in_process_a(ok(inst.ek()?, "get_endorsement_key"))?,
            in_process_a(ok(inst.srk()?, "get_storage_root_key"))?,
        )
    };
    let ch = in_process_a(challenge_for(&ek, &srk))?;
    let want = hex::encode(hmac_sha256(&ch.identity_key, DATA));
    let b = in_fresh_process(
        ctx,
        "persistence.activate",
        &[&hex::encode(&ch.blob), &hex::encode(DATA)],
        "activating the challenge (process B)",
    )?;
    let b: Activated = from_value(b, "persistence.activate")?;
    let same =
        |x: &Answer, want: &[u8]| matches!(x, Answer::Ok { hex } if *hex == hex::encode(want));
    if !same(&b.ek, &ek) || !same(&b.srk, &srk) {
        return Err(did_not_survive(
            "the EK and SRK process A read, in process B that activates the challenge made for them",
            "identity",
            format!(
                "process A read the EK as {} and the SRK as {}, process B read {} and {}",
                show(Some(&hex::encode(&ek))),
                show(Some(&hex::encode(&srk))),
                answer_bytes(&b.ek),
                answer_bytes(&b.srk)
            ),
        ));
    }
    if let Answer::Refused { .. } = b.activate {
        return Err(Verdict::skip(format!(
            "nothing to carry across processes: a challenge for this EK/SRK is refused within one process already ({}; tpm.activate-and-sign reports it)",
            b.activate.describe()
        )));
    }
    if !matches!(&b.sign, Some(Answer::Ok { hex }) if *hex == want) {
        return Err(Verdict::skip(
            "nothing to carry across processes: sign_with_identity right after activation is not HMAC-SHA256 with the challenge's key within one process already (tpm.activate-and-sign reports it)",
        ));
    }
    let c = in_fresh_process(
        ctx,
        "persistence.sign",
        &["tpm", &hex::encode(DATA)],
        "signing with the activated key (process C)",
    )?;
    let expected = "sign_with_identity in a fresh process to be HMAC-SHA256 with the key an earlier process activated (hub tokens after `hsmkit provision`, and after a reboot)";
    match from_value::<Answer>(c, "persistence.sign")? {
        Answer::Ok { hex } if hex == want => Ok(Verdict::pass(
            "EK/SRK read in A, activated and signed in B, the same HMAC from C",
        )),
        gone if gone.is_gone() => Err(did_not_survive(
            expected,
            "activated identity key",
            format!(
                "process B activated it and signed with it, process C's sign_with_identity answered {}",
                gone.describe()
            ),
        )),
        Answer::Ok { hex } => Err(did_not_survive(
            expected,
            "activated identity key",
            format!(
                "process B activated it and signed with it, process C signed with another key ({} bytes that are not the HMAC)",
                hex.len() / 2
            ),
        )),
        other => Err(Verdict::fail(expected, other.describe())),
    }
}

/// An answer's bytes for messages, or its refusal.
fn answer_bytes(a: &Answer) -> String {
    match a {
        Answer::Ok { hex } => show(Some(hex)),
        Answer::Refused { text, .. } => format!("a refusal ({text})"),
    }
}

/// The leaf key of a chain a process answered with (hex).
fn leaf_of(chain_hex: &str) -> Result<PKey<Public>, Verdict> {
    let bytes = hex::decode(chain_hex).map_err(|e| Verdict::skip(e.to_string()))?;
    leaf_key(&chain_from_bytes(&bytes)?)
}

fn signing_key_survives(ctx: &mut CheckContext) -> CheckResult {
    let (chain_a, key_a, alg, digest) = {
        let inst = instance(ctx)?;
        let chain = in_process_a(ok(inst.chain()?, "get_certificate_chain"))?;
        let key = in_process_a(leaf_key(&in_process_a(chain_from_bytes(&chain))?))?;
        let Some(alg) = algorithms_for(&key).first().copied() else {
            return Err(Verdict::skip(
                "the leaf key is neither P-256, P-384 nor RSA",
            ));
        };
        let digest = digest_for(alg, b"tls 1.3 client certificate verify, after a reboot")?;
        let sig = in_process_a(ok(inst.sign_digest(alg, &digest)?, "sign_digest"))?;
        if !verify(&key, alg, &digest, &sig).unwrap_or(false) {
            return Err(Verdict::skip(
                "nothing to carry across processes: sign_digest does not verify with the leaf key within one process already (x509.sign-verifies reports it)",
            ));
        }
        (hex::encode(chain), key, alg, digest)
    };
    let b = in_fresh_process(
        ctx,
        "persistence.x509-sign",
        &[&alg.to_string(), &hex::encode(&digest)],
        "signing a digest (process B)",
    )?;
    let b: X509Signed = from_value(b, "persistence.x509-sign")?;
    let expected = format!(
        "sign_digest (algorithm {alg}) in a fresh process to verify with the leaf key another process read (the certificate `hsmkit enroll-info` showed is the one `hsmkit provision` signs for)"
    );
    let sig = match &b.signature {
        Answer::Ok { hex } => hex::decode(hex).map_err(|e| Verdict::skip(e.to_string()))?,
        gone if gone.is_gone() => {
            return Err(did_not_survive(
                &expected,
                "device key",
                format!(
                    "process A signed with it, process B's sign_digest answered {}",
                    gone.describe()
                ),
            ))
        }
        other => return Err(Verdict::fail(expected, other.describe())),
    };
    if verify(&key_a, alg, &digest, &sig).unwrap_or(false) {
        return Ok(Verdict::pass(
            "chain read and signed in A, B's signature verifies with A's leaf key",
        ));
    }
    // Process A's own signature verified, so B signs with another key than A's leaf.
    let chain_b = match &b.chain {
        Answer::Ok { hex } => Some(hex.as_str()),
        Answer::Refused { .. } => None,
    };
    let what = if chain_b == Some(chain_a.as_str()) {
        "process B read the same chain as process A but signs with another key than its leaf's"
            .to_string()
    } else {
        let own = chain_b
            .and_then(|c| leaf_of(c).ok())
            .is_some_and(|k| verify(&k, alg, &digest, &sig).unwrap_or(false));
        format!(
            "process A read the certificate chain as {}, process B read {}{}, and B's signature does not verify with the leaf key A read",
            show(Some(&chain_a)),
            answer_bytes(&b.chain),
            if own { " and signs for its own leaf" } else { "" }
        )
    };
    Err(did_not_survive(&expected, "device key", what))
}
