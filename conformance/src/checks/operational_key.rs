//! The operational key (ABI 1.2): a P-256 key made inside the plugin under a label, its public
//! key as DER SubjectPublicKeyInfo, DER ECDSA signatures over SHA-256 digests, and the issued
//! chain stored beside it; all of it still there in another process.

use super::instance;
use crate::context::CheckContext;
use crate::ops::ok;
use crate::raw::{RawFailure, RawInstance};
use crate::step::in_fresh_process;
use crate::verdict::{CheckResult, Verdict};
use crate::{register, register_step};
use hsm_api::*;
use openssl::ecdsa::EcdsaSig;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Public};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

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
register_step!("operational-key.read", read_step);

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
    let spki = ok(inst.op_public(LABEL)?, "get_public_key in a new process")?;
    let chain = ok(inst.op_chain(LABEL)?, "get_chain in a new process")?;
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
