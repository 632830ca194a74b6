//! The operational key (ABI 1.2): a P-256 key made inside the plugin under a label (one per
//! label), its public key as DER SubjectPublicKeyInfo, DER ECDSA signatures over SHA-256
//! digests, the issued chain stored beside it, all of it still there in another process, the
//! private key nowhere the host can read it, and `delete_key` removing key and chain.
//!
//! Stored and derived keys: the ABI lets a backend derive its keys from a device secret
//! (dice) instead of storing them; such a plugin has a key for every label, so
//! `get_public_key` on a label never created answers with a key instead of
//! `HSM_ERR_NOT_FOUND`, and `delete_key` removes only the chain. The checks learn which kind
//! a plugin is from that answer (see [`derives_keys`]) and hold each kind to its rules.

use super::instance;
use crate::context::CheckContext;
use crate::ops::ok;
use crate::raw::{RawFailure, RawInstance};
use crate::step::in_fresh_process;
use crate::verdict::{CheckResult, Verdict};
use crate::{register, register_step};
use base64::Engine;
use hsm_api::*;
use openssl::bn::{BigNum, BigNumContext};
use openssl::ec::{EcGroup, EcPoint};
use openssl::ecdsa::EcdsaSig;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Public};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The label every check uses; checks run in their own state folders.
const LABEL: &str = "conformance-op";

register!(
    "operational-key.public-key-format",
    OperationalKey,
    OperationalKey,
    true,
    "create_key returns a DER SubjectPublicKeyInfo of a P-256 key, the same again and from get_public_key",
    public_key_format
);
register!(
    "operational-key.sign-verifies",
    OperationalKey,
    OperationalKey,
    true,
    "sign_digest returns a DER ECDSA signature that verifies with the public key",
    sign_verifies
);
register!(
    "operational-key.chain-stored",
    OperationalKey,
    OperationalKey,
    true,
    "a chain given to store_chain is read back byte for byte by get_chain",
    chain_stored
);
register!(
    "operational-key.survives-process",
    OperationalKey,
    OperationalKey,
    true,
    "the key and its chain made in one process are found by another on the same state_dir",
    survives_process
);
register!(
    "operational-key.generate",
    OperationalKey,
    OperationalKey,
    true,
    "create_key makes a P-256 key for a new label, another for a second label, and get_public_key of a label never created is HSM_ERR_NOT_FOUND (or, for derived keys, the key create_key then gives)",
    generate
);
register!(
    "operational-key.not-exportable",
    OperationalKey,
    OperationalKey,
    true,
    "no buffer the plugin returns and no file under state_dir holds the private key (PEM/DER PKCS#8 or SEC1, raw or embedded scalar); a plugin that describes itself as software WARNs for a 0600 file",
    not_exportable
);
register!(
    "operational-key.delete",
    OperationalKey,
    OperationalKey,
    true,
    "delete_key removes the key and its chain (HSM_ERR_NOT_FOUND after, in this process and another); derived keys: the chain only, or HSM_ERR_NOT_SUPPORTED",
    delete
);
register_step!("operational-key.read", read_step);
register_step!("operational-key.gone", gone_step);

impl RawInstance {
    /// The operational-key table.
    fn ops_table(&self) -> Result<&'static HsmOperationalKeyTable, Verdict> {
        // SAFETY: a non-NULL table entry is a static, validated by the probe.
        unsafe { self.table.operational_key.as_ref() }
            .ok_or_else(|| Verdict::skip("the plugin has no operational-key table"))
    }

    fn op_create(&self, label: &str) -> Result<Result<Vec<u8>, RawFailure>, Verdict> {
        let f = self.ops_table()?.create_key;
        // SAFETY: the slice borrows `label` for the call; live instance, valid out pointer.
        Ok(self.output(|i, o| unsafe { f(i, HsmSlice::from_bytes(label.as_bytes()), o) }))
    }

    fn op_public(&self, label: &str) -> Result<Result<Vec<u8>, RawFailure>, Verdict> {
        let f = self.ops_table()?.get_public_key;
        // SAFETY: as above.
        Ok(self.output(|i, o| unsafe { f(i, HsmSlice::from_bytes(label.as_bytes()), o) }))
    }

    fn op_sign(&self, label: &str, digest: &[u8]) -> Result<Result<Vec<u8>, RawFailure>, Verdict> {
        let f = self.ops_table()?.sign_digest;
        // SAFETY: both slices borrow caller data for the call.
        Ok(self.output(|i, o| unsafe {
            f(
                i,
                HsmSlice::from_bytes(label.as_bytes()),
                HsmSlice::from_bytes(digest),
                o,
            )
        }))
    }

    fn op_store_chain(&self, label: &str, pem: &str) -> Result<Result<(), RawFailure>, Verdict> {
        let f = self.ops_table()?.store_chain;
        // SAFETY: both slices borrow caller data for the call.
        Ok(self.status(|i| unsafe {
            f(
                i,
                HsmSlice::from_bytes(label.as_bytes()),
                HsmSlice::from_bytes(pem.as_bytes()),
            )
        }))
    }

    fn op_chain(&self, label: &str) -> Result<Result<Vec<u8>, RawFailure>, Verdict> {
        let f = self.ops_table()?.get_chain;
        // SAFETY: as in `op_create`.
        Ok(self.output(|i, o| unsafe { f(i, HsmSlice::from_bytes(label.as_bytes()), o) }))
    }

    fn op_delete(&self, label: &str) -> Result<Result<(), RawFailure>, Verdict> {
        let f = self.ops_table()?.delete_key;
        // SAFETY: the slice borrows `label` for the call; live instance.
        Ok(self.status(|i| unsafe { f(i, HsmSlice::from_bytes(label.as_bytes())) }))
    }
}

/// Whether the plugin derives its keys rather than storing them: `get_public_key` on a label
/// never created answers with a key (the ABI's rule for dice) instead of `HSM_ERR_NOT_FOUND`.
/// Any other answer is a failure. `label` must be one no check creates.
fn derives_keys(inst: &RawInstance, label: &str) -> Result<bool, Verdict> {
    match inst.op_public(label)? {
        Ok(_) => Ok(true),
        Err(e) if e.status == HSM_ERR_NOT_FOUND => Ok(false),
        Err(e) => Err(Verdict::fail(
            "get_public_key on a label never created to return HSM_ERR_NOT_FOUND (or a key, where keys are derived)",
            format!("it returned {e}"),
        )),
    }
}

/// Requires `got` to be `HSM_ERR_NOT_FOUND`; `what` names the call, `left` what an `HSM_OK`
/// means.
fn expect_not_found<T>(got: Result<T, RawFailure>, what: &str, left: &str) -> Result<(), Verdict> {
    match got {
        Err(e) if e.status == HSM_ERR_NOT_FOUND => Ok(()),
        Ok(_) => Err(Verdict::fail(
            format!("{what} to return HSM_ERR_NOT_FOUND"),
            format!("it returned HSM_OK: {left}"),
        )),
        Err(e) => Err(Verdict::fail(
            format!("{what} to return HSM_ERR_NOT_FOUND"),
            format!("it returned {e}"),
        )),
    }
}

/// The public key as a P-256 key, or why it is not one.
fn p256_key(spki: &[u8]) -> Result<PKey<Public>, Verdict> {
    let key = PKey::public_key_from_der(spki).map_err(|e| {
        Verdict::fail(
            "a DER SubjectPublicKeyInfo",
            format!("{} bytes that do not parse: {e}", spki.len()),
        )
    })?;
    let curve = key.ec_key().ok().and_then(|k| k.group().curve_name());
    if curve != Some(Nid::X9_62_PRIME256V1) {
        return Err(Verdict::fail(
            "a P-256 (prime256v1) public key",
            format!("a {:?} key, curve {curve:?}", key.id()),
        ));
    }
    Ok(key)
}

fn public_key_format(ctx: &mut CheckContext) -> CheckResult {
    let inst = instance(ctx)?;
    let spki = ok(inst.op_create(LABEL)?, "create_key")?;
    p256_key(&spki)?;
    let again = ok(inst.op_create(LABEL)?, "create_key a second time")?;
    if again != spki {
        return Err(Verdict::fail(
            "create_key to find the key it made (the same public key)",
            "another public key",
        ));
    }
    let read = ok(inst.op_public(LABEL)?, "get_public_key")?;
    if read != spki {
        return Err(Verdict::fail(
            "get_public_key to return what create_key did",
            "another public key",
        ));
    }
    Ok(Verdict::pass(""))
}

fn sign_verifies(ctx: &mut CheckContext) -> CheckResult {
    let inst = instance(ctx)?;
    let key = p256_key(&ok(inst.op_create(LABEL)?, "create_key")?)?;
    let ec = key
        .ec_key()
        .map_err(|e| Verdict::fail("an EC public key", e.to_string()))?;
    for msg in [
        &b"certificate signing request"[..],
        b"tls 1.3 certificate verify",
    ] {
        let digest = Sha256::digest(msg);
        let sig = ok(inst.op_sign(LABEL, &digest)?, "sign_digest")?;
        let parsed = EcdsaSig::from_der(&sig).map_err(|_| {
            Verdict::fail(
                "a DER Ecdsa-Sig-Value",
                format!("{} bytes that are not DER (raw r||s?)", sig.len()),
            )
        })?;
        if !parsed.verify(&digest, &ec).unwrap_or(false) {
            return Err(Verdict::fail(
                "a signature that verifies with the public key",
                "one that does not",
            ));
        }
    }
    Ok(Verdict::pass(""))
}

/// A chain-shaped text, unique to this run so a stale file cannot pass for it.
fn sample_chain() -> String {
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("-----BEGIN CERTIFICATE-----\nY29uZm9ybWFuY2U{nonce}\n-----END CERTIFICATE-----\n")
}

fn chain_stored(ctx: &mut CheckContext) -> CheckResult {
    let inst = instance(ctx)?;
    ok(inst.op_create(LABEL)?, "create_key")?;
    let chain = sample_chain();
    ok(inst.op_store_chain(LABEL, &chain)?, "store_chain")?;
    let read = ok(inst.op_chain(LABEL)?, "get_chain")?;
    if read != chain.as_bytes() {
        return Err(Verdict::fail(
            "get_chain to return the stored chain byte for byte",
            format!("{} other bytes", read.len()),
        ));
    }
    Ok(Verdict::pass(""))
}

/// In a fresh process: the public key and chain under the label, as hex and text.
fn read_step(ctx: &mut CheckContext, _args: &[String]) -> Result<Value, Verdict> {
    let inst = instance(ctx)?;
    let found = |r: Result<Vec<u8>, RawFailure>, what: &str| match r {
        Err(e) if e.status == HSM_ERR_NOT_FOUND => Err(Verdict::fail(
            format!("{what} in a new process to find what the first process made"),
            format!("it returned {e}: kept in memory only?"),
        )),
        other => ok(other, &format!("{what} in a new process")),
    };
    let spki = found(inst.op_public(LABEL)?, "get_public_key")?;
    let chain = found(inst.op_chain(LABEL)?, "get_chain")?;
    Ok(json!({
        "spki": hex::encode(spki),
        "chain": String::from_utf8_lossy(&chain),
    }))
}

fn survives_process(ctx: &mut CheckContext) -> CheckResult {
    let spki = {
        let inst = instance(ctx)?;
        let spki = ok(inst.op_create(LABEL)?, "create_key")?;
        ok(inst.op_store_chain(LABEL, &sample_chain())?, "store_chain")?;
        spki
    };
    let chain = {
        let inst = instance(ctx)?;
        String::from_utf8_lossy(&ok(inst.op_chain(LABEL)?, "get_chain")?).into_owned()
    };
    let other = in_fresh_process(ctx, "operational-key.read", &[], "reading the key back")?;
    if other["spki"] != hex::encode(&spki) {
        return Err(Verdict::fail(
            "the same public key in another process",
            "another key (kept in memory only?)",
        ));
    }
    if other["chain"] != chain.as_str() {
        return Err(Verdict::fail(
            "the same chain in another process",
            "another chain (kept in memory only?)",
        ));
    }
    Ok(Verdict::pass(""))
}

/// A label never created by any check, to learn whether keys are derived.
const NEVER_CREATED: &str = "conformance-never-created";

fn generate(ctx: &mut CheckContext) -> CheckResult {
    let inst = instance(ctx)?;
    let first = ok(
        inst.op_create("conformance-gen-a")?,
        "create_key on a new label",
    )?;
    p256_key(&first)?;
    let second = ok(
        inst.op_create("conformance-gen-b")?,
        "create_key on a second label",
    )?;
    p256_key(&second)?;
    if first == second {
        return Err(Verdict::fail(
            "a different key under a second label",
            "the same public key under both labels (one key for every label)",
        ));
    }
    match inst.op_public(NEVER_CREATED)? {
        Err(e) if e.status == HSM_ERR_NOT_FOUND => Ok(Verdict::pass("")),
        Err(e) => Err(Verdict::fail(
            "get_public_key on a label never created to return HSM_ERR_NOT_FOUND",
            format!("it returned {e}"),
        )),
        // A derived key: it must be the key create_key then gives, not a made-up one.
        Ok(spki) => {
            p256_key(&spki)?;
            let made = ok(
                inst.op_create(NEVER_CREATED)?,
                "create_key on a label get_public_key answered for",
            )?;
            if made != spki {
                return Err(Verdict::fail(
                    "get_public_key on a label never created to return HSM_ERR_NOT_FOUND, or (keys derived) the key create_key then gives",
                    "a key create_key does not give",
                ));
            }
            Ok(Verdict::pass(
                "keys are derived: get_public_key answers for every label",
            ))
        }
    }
}

/// In a fresh process: what `get_public_key` and `get_chain` answer for the label, as status
/// names (`HSM_OK` when something is still there).
fn gone_step(ctx: &mut CheckContext, _args: &[String]) -> Result<Value, Verdict> {
    let inst = instance(ctx)?;
    let name = |r: Result<Vec<u8>, RawFailure>| match r {
        Ok(_) => "HSM_OK".to_string(),
        Err(e) => status_name(e.status),
    };
    Ok(json!({
        "publicKey": name(inst.op_public(LABEL)?),
        "chain": name(inst.op_chain(LABEL)?),
    }))
}

fn delete(ctx: &mut CheckContext) -> CheckResult {
    let spki = {
        let inst = instance(ctx)?;
        let derived = derives_keys(&inst, NEVER_CREATED)?;
        let spki = ok(inst.op_create(LABEL)?, "create_key")?;
        ok(inst.op_store_chain(LABEL, &sample_chain())?, "store_chain")?;
        match inst.op_delete(LABEL)? {
            Ok(()) => {}
            Err(e) if e.status == HSM_ERR_NOT_SUPPORTED && derived => {
                return Ok(Verdict::pass(
                    "keys are derived (get_public_key answers for every label) and delete_key is not supported",
                ))
            }
            Err(e) if e.status == HSM_ERR_NOT_SUPPORTED => {
                return Err(Verdict::fail(
                    "delete_key to remove the key and its chain (HSM_ERR_NOT_SUPPORTED only where keys are derived; here get_public_key of a label never created is HSM_ERR_NOT_FOUND, so they are stored)",
                    format!("it returned {e}"),
                ))
            }
            Err(e) => {
                return Err(Verdict::fail(
                    "delete_key succeeds",
                    format!("it failed with {e}"),
                ))
            }
        }
        expect_not_found(
            inst.op_chain(LABEL)?,
            "get_chain after delete_key",
            "the chain is still there (delete_key left it)",
        )?;
        if derived {
            let again = ok(inst.op_create(LABEL)?, "create_key after delete_key")?;
            if again != spki {
                return Err(Verdict::fail(
                    "create_key after delete_key to derive the same key again (keys are derived: delete_key removes only the chain)",
                    "another key",
                ));
            }
            return Ok(Verdict::pass(
                "keys are derived: delete_key removed the chain, the key is the same",
            ));
        }
        expect_not_found(
            inst.op_public(LABEL)?,
            "get_public_key after delete_key",
            "the key is still there",
        )?;
        expect_not_found(
            inst.op_sign(LABEL, &Sha256::digest(b"after delete"))?,
            "sign_digest after delete_key",
            "the deleted key still signs",
        )?;
        expect_not_found(
            inst.op_delete(LABEL)?,
            "delete_key of a key already deleted",
            "it found something to delete",
        )?;
        spki
    };
    // Removed where it is kept, not only in this instance's memory.
    let other = in_fresh_process(ctx, "operational-key.gone", &[], "reading after delete")?;
    for (field, what) in [("publicKey", "get_public_key"), ("chain", "get_chain")] {
        if other[field] != "HSM_ERR_NOT_FOUND" {
            return Err(Verdict::fail(
                format!("{what} after delete_key, in another process, to return HSM_ERR_NOT_FOUND"),
                format!(
                    "it returned {} (deleted in memory only?)",
                    other[field].as_str().unwrap_or("nothing")
                ),
            ));
        }
    }
    let inst = instance(ctx)?;
    let again = ok(inst.op_create(LABEL)?, "create_key after delete_key")?;
    if again == spki {
        return Err(Verdict::fail(
            "create_key after delete_key to make a new key",
            "the deleted key came back",
        ));
    }
    Ok(Verdict::pass(""))
}

/// Files larger than this are not read (a state folder holds keys and small records).
const MAX_SCANNED_FILE: u64 = 1 << 20;
/// Bytes of one file (or one decoded block) searched for the private scalar.
const MAX_SCANNED_BYTES: usize = 256 << 10;

/// Finds the private scalar of a P-256 public key in byte strings: every 32-byte window is
/// tried as the scalar (so a raw key file, the key inside PKCS#8 or SEC1 DER, and a key
/// embedded in a binary state file are all found).
struct ScalarFinder {
    group: EcGroup,
    public: EcPoint,
    order: BigNum,
    ctx: BigNumContext,
}

impl ScalarFinder {
    fn new(key: &PKey<Public>) -> Result<Self, Verdict> {
        let broken = |e: openssl::error::ErrorStack| {
            Verdict::fail("a usable P-256 public key", format!("openssl: {e}"))
        };
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).map_err(broken)?;
        let ec = key.ec_key().map_err(broken)?;
        let public = ec.public_key().to_owned(&group).map_err(broken)?;
        let mut ctx = BigNumContext::new().map_err(broken)?;
        let mut order = BigNum::new().map_err(broken)?;
        group.order(&mut order, &mut ctx).map_err(broken)?;
        Ok(ScalarFinder {
            group,
            public,
            order,
            ctx,
        })
    }

    /// Whether some 32-byte window of `bytes` is the private scalar.
    fn found_in(&mut self, bytes: &[u8]) -> bool {
        let bytes = &bytes[..bytes.len().min(MAX_SCANNED_BYTES)];
        bytes.windows(32).any(|w| self.is_scalar(w))
    }

    fn is_scalar(&mut self, candidate: &[u8]) -> bool {
        let Ok(k) = BigNum::from_slice(candidate) else {
            return false;
        };
        if k.num_bits() == 0 || k >= self.order {
            return false;
        }
        let Ok(mut point) = EcPoint::new(&self.group) else {
            return false;
        };
        if point
            .mul_generator2(&self.group, &k, &mut self.ctx)
            .is_err()
        {
            return false;
        }
        point
            .eq(&self.group, &self.public, &mut self.ctx)
            .unwrap_or(false)
    }
}

/// The byte strings a file's content may hide a key in: the bytes themselves, each PEM
/// block's DER, and the whole text hex- or base64-decoded.
fn decodings(content: &[u8]) -> Vec<Vec<u8>> {
    let mut out = vec![content.to_vec()];
    let Ok(text) = std::str::from_utf8(content) else {
        return out;
    };
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut block: Option<String> = None;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with("-----BEGIN ") {
            block = Some(String::new());
        } else if line.starts_with("-----END ") {
            if let Some(Ok(der)) = block.take().map(|b| b64.decode(b)) {
                out.push(der);
            }
        } else if let Some(b) = block.as_mut() {
            // Skips PEM headers such as `Proc-Type:`; only base64 lines are data.
            if !line.contains(':') {
                b.push_str(line);
            }
        }
    }
    let compact: String = text.split_whitespace().collect();
    if let Ok(raw) = hex::decode(&compact) {
        out.push(raw);
    }
    if let Ok(raw) = b64.decode(&compact) {
        out.push(raw);
    }
    out
}

/// Every regular file under `dir` (symlinks not followed), recursively.
fn files_under(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), Verdict> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Verdict::skip(format!("cannot list {}: {e}", dir.display()))),
    };
    for entry in entries.flatten() {
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            files_under(&entry.path(), out)?;
        } else if kind.is_file() {
            out.push(entry.path());
        }
    }
    Ok(())
}

fn not_exportable(ctx: &mut CheckContext) -> CheckResult {
    let state_dir = ctx
        .config
        .iter()
        .find(|(k, _)| k == "state_dir")
        .map(|(_, v)| PathBuf::from(v))
        .ok_or_else(|| Verdict::skip("no state_dir was passed to the plugin"))?;
    let inst = instance(ctx)?;
    // SAFETY: table strings are NULL or NUL-terminated statics per the ABI (loading.table-
    // strings checks them; a plugin breaking that crashes only this child).
    let description = unsafe { crate::raw::table_string(inst.table.description) }
        .and_then(Result::ok)
        .unwrap_or_default();
    let spki = ok(inst.op_create(LABEL)?, "create_key")?;
    let key = p256_key(&spki)?;
    let mut finder = ScalarFinder::new(&key)?;

    // Everything the interface hands out, failures' messages included.
    let mut returned: Vec<(&str, Vec<u8>)> = vec![("create_key", spki)];
    returned.push((
        "get_public_key",
        ok(inst.op_public(LABEL)?, "get_public_key")?,
    ));
    for msg in [&b"first"[..], b"second"] {
        returned.push((
            "sign_digest",
            ok(inst.op_sign(LABEL, &Sha256::digest(msg))?, "sign_digest")?,
        ));
    }
    let chain = sample_chain();
    ok(inst.op_store_chain(LABEL, &chain)?, "store_chain")?;
    returned.push(("get_chain", ok(inst.op_chain(LABEL)?, "get_chain")?));
    for failed in [
        inst.op_sign(LABEL, &[1; 31])?,
        inst.op_sign(NEVER_CREATED, &[1; 32])?,
    ] {
        if let Err(e) = failed {
            returned.push(("an error message", e.message.into_bytes()));
        }
    }
    for (what, bytes) in &returned {
        if finder.found_in(bytes) {
            return Err(Verdict::fail(
                "the private key never to leave the plugin",
                format!("{what} returned a buffer holding the private key"),
            ));
        }
    }

    let mut files = Vec::new();
    files_under(&state_dir, &mut files)?;
    files.sort();
    let mut software_files = Vec::new();
    for path in files {
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if meta.len() > MAX_SCANNED_FILE {
            continue;
        }
        let Ok(content) = std::fs::read(&path) else {
            continue;
        };
        let zeroized = zeroize::Zeroizing::new(content);
        if !decodings(&zeroized).iter().any(|d| finder.found_in(d)) {
            continue;
        }
        let mode = meta.mode() & 0o777;
        let shown = path.strip_prefix(&state_dir).unwrap_or(&path).display();
        if mode & 0o077 != 0 {
            return Err(Verdict::fail(
                "the private key never to leave the plugin",
                format!(
                    "state_dir/{shown} (mode {mode:04o}, readable by others) holds it in clear"
                ),
            ));
        }
        if !description.to_ascii_lowercase().contains("software") {
            return Err(Verdict::fail(
                "the private key never to leave the plugin",
                format!(
                    "state_dir/{shown} (mode {mode:04o}) holds it in clear, and the plugin does not describe itself as software (description: {description:?})"
                ),
            ));
        }
        software_files.push(format!("state_dir/{shown} ({mode:04o})"));
    }
    if software_files.is_empty() {
        return Ok(Verdict::pass(""));
    }
    Ok(Verdict::Warn {
        message: format!(
            "the private key is in clear in {}: acceptable only because the plugin describes itself as software ({description:?}); an HSM keeps it inside",
            software_files.join(", ")
        ),
    })
}
