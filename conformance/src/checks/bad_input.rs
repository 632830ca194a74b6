//! Malformed arguments: NULL pointers, slices that lie about their length, huge and random
//! inputs. Each must be refused with an error code, never a crash.

use super::{hmac_sha256, instance};
use crate::context::CheckContext;
use crate::raw::RawInstance;
use crate::register;
use crate::verdict::{CheckResult, Verdict};
use hsm_api::*;
use rand::{Rng, RngCore};

register!(
    "bad-input.null-instance",
    BadInput,
    Any,
    true,
    "every interface call with a NULL instance returns HSM_ERR_INVALID_ARGUMENT",
    null_instance
);
register!(
    "bad-input.null-output",
    BadInput,
    Any,
    true,
    "every getter with a NULL output pointer returns an error",
    null_output
);
register!("bad-input.null-slice", BadInput, Any, true,
    "an input slice with a NULL pointer and a non-zero length is refused with HSM_ERR_INVALID_ARGUMENT", null_slice);
register!(
    "bad-input.large-input",
    BadInput,
    Any,
    true,
    "a 4 MiB input is answered correctly or refused cleanly",
    large_input
);
register!(
    "bad-input.random-challenges",
    BadInput,
    Tpm,
    true,
    "random bytes of random lengths as a DPS challenge are always refused",
    random_challenges
);

type Getter = unsafe extern "C" fn(*mut HsmInstance, *mut HsmBuffer) -> HsmStatus;

/// Every output-only getter of the declared interfaces, by name.
fn getters(inst: &RawInstance) -> Result<Vec<(&'static str, Getter)>, Verdict> {
    let mut v: Vec<(&'static str, Getter)> = Vec::new();
    if !inst.table.tpm.is_null() {
        let t = inst.tpm_table()?;
        v.push(("get_endorsement_key", t.get_endorsement_key));
        v.push(("get_storage_root_key", t.get_storage_root_key));
    }
    if !inst.table.x509.is_null() {
        let t = inst.x509_table()?;
        v.push(("get_certificate_chain", t.get_certificate_chain));
        v.push(("get_common_name", t.get_common_name));
    }
    if !inst.table.symmetric_key.is_null() {
        v.push(("get_registration_id", inst.sym_table()?.get_registration_id));
    }
    Ok(v)
}

/// Calls with a slice argument, for the NULL-slice and large-input checks.
fn slice_calls(inst: &RawInstance, data: HsmSlice) -> Vec<(&'static str, HsmStatus)> {
    let mut v = Vec::new();
    let mut out = HsmBuffer::EMPTY;
    let release = |out: &mut HsmBuffer| {
        if !out.data.is_null() {
            // SAFETY: the buffer came from this plugin; released once.
            unsafe { (inst.table.release_buffer)(out) };
            *out = HsmBuffer::EMPTY;
        }
    };
    if let Ok(t) = inst.tpm_table() {
        // SAFETY: (this call and those below) live instance; the slice is what the check
        // means to pass; the out buffer is valid.
        let status = unsafe { (t.activate_identity_key)(inst.ptr, data) };
        v.push(("activate_identity_key", status));
    }
    if let Ok(t) = inst.x509_table() {
        // SAFETY: as above.
        v.push(("sign_digest", unsafe {
            (t.sign_digest)(inst.ptr, HSM_SIGN_ECDSA_P256_SHA256, data, &mut out)
        }));
        release(&mut out);
    }
    if let Ok(t) = inst.sym_table() {
        // SAFETY: as above.
        v.push(("sign", unsafe { (t.sign)(inst.ptr, data, &mut out) }));
        release(&mut out);
        // SAFETY: as above.
        v.push(("import_key", unsafe {
            (t.import_key)(inst.ptr, HsmSlice::EMPTY, data)
        }));
    }
    v
}

fn null_instance(ctx: &mut CheckContext) -> CheckResult {
    let inst = instance(ctx)?;
    for (name, f) in getters(&inst)? {
        let mut out = HsmBuffer::EMPTY;
        // SAFETY: NULL instance on purpose; valid out pointer.
        let s = unsafe { f(std::ptr::null_mut(), &mut out) };
        if !out.data.is_null() {
            // SAFETY: hand back anything it allocated.
            unsafe { (inst.table.release_buffer)(&mut out) };
        }
        if s != HSM_ERR_INVALID_ARGUMENT {
            return Err(Verdict::fail(
                format!("{name}(NULL instance) to return HSM_ERR_INVALID_ARGUMENT"),
                status_name(s),
            ));
        }
    }
    let mut msg = HsmBuffer::EMPTY;
    // SAFETY: NULL instance on purpose; valid out pointer.
    let s = unsafe { (inst.table.last_error)(std::ptr::null_mut(), &mut msg) };
    if !msg.data.is_null() {
        // SAFETY: as above.
        unsafe { (inst.table.release_buffer)(&mut msg) };
    }
    if s == HSM_OK {
        return Err(Verdict::fail(
            "last_error(NULL instance) to return an error",
            "HSM_OK",
        ));
    }
    Ok(Verdict::pass(""))
}

fn null_output(ctx: &mut CheckContext) -> CheckResult {
    let inst = instance(ctx)?;
    for (name, f) in getters(&inst)? {
        // SAFETY: NULL out pointer on purpose; the plugin must check it.
        let s = unsafe { f(inst.ptr, std::ptr::null_mut()) };
        if s == HSM_OK {
            return Err(Verdict::fail(
                format!("{name}(out = NULL) to return an error"),
                "HSM_OK",
            ));
        }
    }
    Ok(Verdict::pass(""))
}

fn null_slice(ctx: &mut CheckContext) -> CheckResult {
    let inst = instance(ctx)?;
    let lying = HsmSlice {
        ptr: std::ptr::null(),
        len: 32,
    };
    for (name, s) in slice_calls(&inst, lying) {
        if s != HSM_ERR_INVALID_ARGUMENT {
            return Err(Verdict::fail(
                format!("{name} with a NULL 32-byte slice to return HSM_ERR_INVALID_ARGUMENT"),
                status_name(s),
            ));
        }
    }
    Ok(Verdict::pass(""))
}

fn large_input(ctx: &mut CheckContext) -> CheckResult {
    let inst = instance(ctx)?;
    let big = vec![0x5au8; 4 << 20];
    let slice = HsmSlice::from_bytes(&big);
    let mut notes = Vec::new();
    for (name, s) in slice_calls(&inst, slice) {
        let acceptable = match name {
            // A 4 MiB challenge or digest is never valid.
            "activate_identity_key" | "sign_digest" => {
                s != HSM_OK && s != HSM_ERR_PANIC && s != HSM_ERR_INTERNAL
            }
            // HMAC over 4 MiB may work; a 4 MiB key may be accepted or refused.
            _ => s != HSM_ERR_PANIC && s != HSM_ERR_INTERNAL,
        };
        if !acceptable {
            return Err(Verdict::fail(
                format!("{name} with 4 MiB to be answered or refused cleanly"),
                status_name(s),
            ));
        }
        notes.push(format!("{name}: {}", status_name(s)));
    }
    // When the plugin took the 4 MiB key, its HMAC must be that key's.
    if !inst.table.symmetric_key.is_null() {
        if let Ok(Ok(sig)) = inst.sym_sign(b"after a big key") {
            let with_big = hmac_sha256(&big, b"after a big key");
            notes.push(format!("big key in use: {}", sig == with_big));
        }
    }
    Ok(Verdict::pass(notes.join(", ")))
}

fn random_challenges(ctx: &mut CheckContext) -> CheckResult {
    let inst = instance(ctx)?;
    let mut rng = rand::thread_rng();
    for i in 0..48 {
        let len = rng.gen_range(0..2048usize);
        let mut blob = vec![0u8; len];
        rng.fill_bytes(&mut blob);
        if i % 2 == 0 && len >= 2 {
            // Half the time, a plausible first size field so parsing goes deeper.
            let first = u16::try_from(len.min(100)).unwrap_or(0).saturating_sub(2);
            blob[..2].copy_from_slice(&first.to_be_bytes());
        }
        if let Ok(()) = inst.activate(&blob)? {
            return Err(Verdict::fail(
                "random bytes to be refused as a challenge",
                format!("HSM_OK for {len} random bytes"),
            ));
        }
    }
    Ok(Verdict::pass("48 random challenges refused"))
}
