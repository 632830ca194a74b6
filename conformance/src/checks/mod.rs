//! The checks, one file per contract area, and the helpers they share.

mod bad_input;
mod concurrency;
mod lifecycle;
mod loading;
mod memory;
mod operational_key;
mod performance;
mod persistence;
mod provision;
mod settings;
mod symmetric;
mod tpm;
mod x509;

use crate::context::CheckContext;
use crate::ops::ok;
use crate::raw::{RawFailure, RawInstance};
use crate::verdict::Verdict;
use hmac::{Hmac, Mac};
use hsm_api::*;
use sha2::Sha256;

/// HMAC-SHA256 computed in software, the reference the plugin's answers are compared with.
pub(crate) fn hmac_sha256(key: &[u8], data: &[u8]) -> Vec<u8> {
    // HMAC accepts keys of any length, so this cannot fail.
    match Hmac::<Sha256>::new_from_slice(key) {
        Ok(mut m) => {
            m.update(data);
            m.finalize().into_bytes().to_vec()
        }
        Err(_) => Vec::new(),
    }
}

/// Resident set size of this process in bytes (Linux `/proc/self/statm`).
pub(crate) fn rss_bytes() -> Result<u64, Verdict> {
    let statm = std::fs::read_to_string("/proc/self/statm")
        .map_err(|e| Verdict::skip(format!("cannot read /proc/self/statm: {e}")))?;
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| Verdict::skip("unexpected /proc/self/statm format"))?;
    // SAFETY: sysconf has no memory preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Ok(pages * u64::try_from(page).unwrap_or(4096))
}

/// The identity getter of the first interface the plugin offers: EK, certificate chain or
/// registration id. Every interface has one that needs no prior setup, once configured: an
/// identity that is `HSM_ERR_NOT_FOUND` is a setting the command line did not give (the
/// symmetric plugin's `registration_id`), reported as SETUP with the plugin's message.
pub(crate) fn identity(inst: &RawInstance) -> Result<Result<Vec<u8>, RawFailure>, Verdict> {
    let got = if !inst.table.tpm.is_null() {
        inst.ek()?
    } else if !inst.table.x509.is_null() {
        inst.chain()?
    } else if !inst.table.symmetric_key.is_null() {
        inst.registration_id()?
    } else {
        return Err(Verdict::skip("the plugin offers no interface"));
    };
    match got {
        Err(e) if e.status == HSM_ERR_NOT_FOUND => Err(identity_missing(&e)),
        other => Ok(other),
    }
}

/// The SETUP verdict for an identity getter that answered `HSM_ERR_NOT_FOUND`.
pub(crate) fn identity_missing(e: &RawFailure) -> Verdict {
    Verdict::setup(format!(
        "the plugin has no identity with the settings given ({}): {}; pass the setting with --set KEY=VALUE",
        status_name(e.status),
        e.message
    ))
}

/// The identity as a check step that must succeed.
pub(crate) fn identity_ok(inst: &RawInstance) -> Result<Vec<u8>, Verdict> {
    ok(
        identity(inst)?,
        "reading the identity (EK, chain or registration id)",
    )
}

/// Makes one call fail on purpose with an input every plugin must refuse, for checks on
/// what failures look like: TPM activate with an empty blob, X.509 sign with a 1-byte
/// digest, symmetric import of an empty key.
pub(crate) fn provoke_failure(inst: &RawInstance) -> Result<(HsmStatus, &'static str), Verdict> {
    let (r, what) = if !inst.table.tpm.is_null() {
        (
            inst.activate(&[])?.map(|_| ()),
            "activate_identity_key with an empty blob",
        )
    } else if !inst.table.x509.is_null() {
        (
            inst.sign_digest(HSM_SIGN_ECDSA_P256_SHA256, &[1])?
                .map(|_| ()),
            "sign_digest with a 1-byte digest",
        )
    } else if !inst.table.symmetric_key.is_null() {
        (inst.import_key("", &[])?, "import_key with an empty key")
    } else {
        return Err(Verdict::skip("the plugin offers no interface"));
    };
    match r {
        Ok(()) => Err(Verdict::fail(
            format!("{what} to be refused"),
            "it returned HSM_OK",
        )),
        Err(e) => Ok((e.status, what)),
    }
}

/// Requires `status` to be one of `allowed`.
pub(crate) fn expect_status(
    what: &str,
    got: Result<(), RawFailure>,
    allowed: &[HsmStatus],
) -> Result<(), Verdict> {
    let names: Vec<String> = allowed.iter().map(|s| status_name(*s)).collect();
    match got {
        Ok(()) if allowed.contains(&HSM_OK) => Ok(()),
        Ok(()) => Err(Verdict::fail(
            format!("{what} to return {}", names.join(" or ")),
            "it returned HSM_OK",
        )),
        Err(e) if allowed.contains(&e.status) => Ok(()),
        Err(e) => Err(Verdict::fail(
            format!("{what} to return {}", names.join(" or ")),
            format!("it returned {e}"),
        )),
    }
}

/// An instance, for checks that need one.
pub(crate) fn instance(ctx: &mut CheckContext) -> Result<RawInstance, Verdict> {
    ctx.instance()
}
