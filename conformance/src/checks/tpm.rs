//! TPM attestation: key formats and stability, and the DPS challenge answered for real: blobs
//! built with the TPM wire library for the EK/SRK the plugin reports, HMACs compared with a
//! software computation.

use super::{expect_status, hmac_sha256, instance};
use crate::context::CheckContext;
use crate::ops::ok;
use crate::raw::RawInstance;
use crate::register;
use crate::verdict::{CheckResult, Verdict};
use hsm_api::*;
use hsm_tpm_common::alg::{self, attr};
use hsm_tpm_common::dps::{make_dps_challenge, make_dps_challenge_for_key, DpsChallenge};
use hsm_tpm_common::public::{PublicArea, PublicUnique};

register!("tpm.sign-before-activate", Tpm, Tpm, true,
    "sign_with_identity before any activation returns HSM_ERR_INVALID_STATE (skipped when a key persists)", sign_before_activate);
register!("tpm.ek-format", Tpm, Tpm, true,
    "the EK is a TPM2B_PUBLIC (exact size prefix, SHA-256 name, fixedTPM|fixedParent|restricted|decrypt)", ek_format);
register!(
    "tpm.srk-format",
    Tpm,
    Tpm,
    true,
    "the SRK is a TPM2B_PUBLIC storage key like the EK and differs from it",
    srk_format
);
register!(
    "tpm.ek-stable",
    Tpm,
    Tpm,
    true,
    "EK and SRK are the same bytes on every call and in every instance",
    ek_stable
);
register!("tpm.activate-and-sign", Tpm, Tpm, true,
    "a DPS challenge made for the reported EK/SRK activates, and sign_with_identity equals HMAC-SHA256 with its key", activate_and_sign);
register!(
    "tpm.reactivate-replaces",
    Tpm,
    Tpm,
    true,
    "activating a second challenge replaces the identity key",
    reactivate_replaces
);
register!(
    "tpm.other-ek-refused",
    Tpm,
    Tpm,
    true,
    "a challenge made for another EK is refused",
    other_ek_refused
);
register!(
    "tpm.truncated-blob-refused",
    Tpm,
    Tpm,
    true,
    "every truncation of a valid challenge, and an empty one, is refused without a crash",
    truncated_refused
);
register!(
    "tpm.corrupted-blob-refused",
    Tpm,
    Tpm,
    true,
    "a challenge with a flipped byte in the credential or the duplicate is refused",
    corrupted_refused
);
register!(
    "tpm.sign-sizes",
    Tpm,
    Tpm,
    true,
    "sign_with_identity handles empty and 64 KiB inputs (correct HMAC or a clean error)",
    sign_sizes
);

fn keys(inst: &RawInstance) -> Result<(Vec<u8>, Vec<u8>), Verdict> {
    let ek = ok(inst.ek()?, "get_endorsement_key")?;
    let srk = ok(inst.srk()?, "get_storage_root_key")?;
    Ok((ek, srk))
}

fn check_key(what: &str, bytes: &[u8]) -> Result<PublicArea, Verdict> {
    if bytes.len() < 2 {
        return Err(Verdict::fail(
            format!("{what} as TPM2B_PUBLIC"),
            format!("{} bytes", bytes.len()),
        ));
    }
    let declared = u16::from_be_bytes([bytes[0], bytes[1]]) as usize;
    if declared != bytes.len() - 2 {
        return Err(Verdict::fail(
            format!(
                "{what} size prefix equal to the rest ({} bytes)",
                bytes.len() - 2
            ),
            format!("size prefix {declared}"),
        ));
    }
    let area = PublicArea::from_tpm2b(bytes)
        .map_err(|e| Verdict::fail(format!("{what} to parse as TPM2B_PUBLIC"), e.to_string()))?;
    if area.name_alg != alg::TPM_ALG_SHA256 {
        return Err(Verdict::fail(
            format!("{what} nameAlg SHA-256 (0x000b)"),
            format!("nameAlg {:#06x}", area.name_alg),
        ));
    }
    let need = attr::FIXED_TPM | attr::FIXED_PARENT | attr::RESTRICTED | attr::DECRYPT;
    if area.object_attributes & need != need {
        return Err(Verdict::fail(
            format!(
                "{what} attributes to include fixedTPM|fixedParent|restricted|decrypt ({need:#x})"
            ),
            format!("attributes {:#x}", area.object_attributes),
        ));
    }
    if area.object_type() != alg::TPM_ALG_RSA && area.object_type() != alg::TPM_ALG_ECC {
        return Err(Verdict::fail(
            format!("{what} of type RSA or ECC"),
            format!("type {:#06x}", area.object_type()),
        ));
    }
    Ok(area)
}

fn ek_format(ctx: &mut CheckContext) -> CheckResult {
    let inst = instance(ctx)?;
    let ek = ok(inst.ek()?, "get_endorsement_key")?;
    check_key("EK", &ek)?;
    Ok(Verdict::pass(format!("{} bytes", ek.len())))
}

fn srk_format(ctx: &mut CheckContext) -> CheckResult {
    let inst = instance(ctx)?;
    let (ek, srk) = keys(&inst)?;
    check_key("SRK", &srk)?;
    if ek == srk {
        return Err(Verdict::fail(
            "an SRK different from the EK",
            "the same bytes",
        ));
    }
    Ok(Verdict::pass(format!("{} bytes", srk.len())))
}

fn ek_stable(ctx: &mut CheckContext) -> CheckResult {
    let a = instance(ctx)?;
    let first = keys(&a)?;
    for _ in 0..3 {
        if keys(&a)? != first {
            return Err(Verdict::fail(
                "the same EK and SRK on every call",
                "different bytes on a later call",
            ));
        }
    }
    drop(a);
    let b = instance(ctx)?;
    if keys(&b)? != first {
        return Err(Verdict::fail(
            "the same EK and SRK in a new instance",
            "different bytes",
        ));
    }
    Ok(Verdict::pass(""))
}

/// A DPS challenge (a fresh random identity key) for the reported EK and SRK, built as the
/// service builds it; the one rule for every check that activates.
pub(crate) fn challenge_for(ek: &[u8], srk: &[u8]) -> Result<DpsChallenge, Verdict> {
    make_dps_challenge(ek, srk)
        .map_err(|e| Verdict::fail("EK and SRK usable to build a DPS challenge", e.to_string()))
}

/// Activates a fresh challenge for `inst`'s keys; the identity key it carries.
fn activate_fresh(inst: &RawInstance) -> Result<Vec<u8>, Verdict> {
    let (ek, srk) = keys(inst)?;
    let ch = challenge_for(&ek, &srk)?;
    ok(
        inst.activate(&ch.blob)?,
        "activate_identity_key with a valid challenge",
    )?;
    Ok(ch.identity_key.to_vec())
}

fn expect_hmac(inst: &RawInstance, key: &[u8], data: &[u8]) -> Result<(), Verdict> {
    let got = ok(inst.tpm_sign(data)?, "sign_with_identity")?;
    let want = hmac_sha256(key, data);
    if got != want {
        return Err(Verdict::fail(
            format!(
                "HMAC-SHA256 with the challenge's key ({})",
                hex::encode(&want)
            ),
            format!("{} ({} bytes)", hex::encode(&got), got.len()),
        ));
    }
    Ok(())
}

fn activate_and_sign(ctx: &mut CheckContext) -> CheckResult {
    let inst = instance(ctx)?;
    let key = activate_fresh(&inst)?;
    let data = b"example.azure-devices-provisioning.net/registrations/dev\n1700000000";
    expect_hmac(&inst, &key, data)?;
    // Signing twice must give the same answer (HMAC is deterministic).
    expect_hmac(&inst, &key, data)?;
    Ok(Verdict::pass(""))
}

fn reactivate_replaces(ctx: &mut CheckContext) -> CheckResult {
    let inst = instance(ctx)?;
    activate_fresh(&inst)?;
    let second = activate_fresh(&inst)?;
    expect_hmac(&inst, &second, b"after re-activation")?;
    Ok(Verdict::pass(""))
}

fn other_ek_refused(ctx: &mut CheckContext) -> CheckResult {
    let inst = instance(ctx)?;
    let (ek, srk) = keys(&inst)?;
    let mut area = PublicArea::from_tpm2b(&ek)
        .map_err(|e| Verdict::fail("an EK that parses", e.to_string()))?;
    match &mut area.unique {
        PublicUnique::Rsa(n) if n.len() > 8 => {
            // Another odd modulus of the same size: a key the device does not hold.
            let i = n.len() / 2;
            n[i] ^= 0x5a;
        }
        _ => return Err(Verdict::skip("only RSA EKs are challenged by this check")),
    }
    let other = area
        .to_tpm2b()
        .map_err(|e| Verdict::fail("a re-marshalled EK", e.to_string()))?;
    let ch = make_dps_challenge_for_key(&other, &srk, &[7u8; 32])
        .map_err(|e| Verdict::fail("a challenge for another EK", e.to_string()))?;
    let r = inst.activate(&ch.blob)?;
    if r.is_ok() {
        // Activation "succeeding" must at least not yield the other key's HMAC.
        let sig = ok(inst.tpm_sign(b"x")?, "sign_with_identity")?;
        if sig == hmac_sha256(&[7u8; 32], b"x") {
            return Err(Verdict::fail(
                "a challenge for another EK to be refused",
                "it was accepted and its key is in use",
            ));
        }
        return Err(Verdict::fail(
            "a challenge for another EK to be refused",
            "HSM_OK",
        ));
    }
    Ok(Verdict::pass(""))
}

fn truncated_refused(ctx: &mut CheckContext) -> CheckResult {
    let inst = instance(ctx)?;
    let (ek, srk) = keys(&inst)?;
    let ch = make_dps_challenge(&ek, &srk)
        .map_err(|e| Verdict::fail("a DPS challenge for the reported keys", e.to_string()))?;
    let n = ch.blob.len();
    let mut cuts: Vec<usize> = (0..16).map(|i| i * n / 16).collect();
    cuts.extend([1, 2, n - 1, n - 2]);
    for cut in cuts {
        expect_status(
            &format!("activate_identity_key with the challenge cut to {cut} of {n} bytes"),
            inst.activate(&ch.blob[..cut])?,
            &[
                HSM_ERR_INVALID_ARGUMENT,
                HSM_ERR_DEVICE,
                HSM_ERR_AUTHENTICATION,
            ],
        )?;
    }
    // An inflated outer length: a TPM2B size pointing past the end.
    let mut inflated = ch.blob.clone();
    inflated[0] = 0xff;
    expect_status(
        "activate_identity_key with an inflated first size",
        inst.activate(&inflated)?,
        &[
            HSM_ERR_INVALID_ARGUMENT,
            HSM_ERR_DEVICE,
            HSM_ERR_AUTHENTICATION,
        ],
    )?;
    Ok(Verdict::pass(""))
}

fn corrupted_refused(ctx: &mut CheckContext) -> CheckResult {
    let inst = instance(ctx)?;
    let (ek, srk) = keys(&inst)?;
    let ch = make_dps_challenge(&ek, &srk)
        .map_err(|e| Verdict::fail("a DPS challenge for the reported keys", e.to_string()))?;
    // Byte 10 is inside the ID object's integrity HMAC; n/2 inside the duplicate or secrets.
    for at in [10, ch.blob.len() / 2] {
        let mut bad = ch.blob.clone();
        bad[at] ^= 0x01;
        if let Ok(()) = inst.activate(&bad)? {
            let sig = ok(inst.tpm_sign(b"y")?, "sign_with_identity")?;
            if sig == hmac_sha256(&ch.identity_key, b"y") {
                // A flip in an unauthenticated field can still yield the right key; only a
                // wrong key in use is a failure.
                continue;
            }
            return Err(Verdict::fail(
                format!("a challenge with byte {at} flipped to be refused"),
                "it was accepted and a wrong key is now in use",
            ));
        }
    }
    Ok(Verdict::pass(""))
}

fn sign_sizes(ctx: &mut CheckContext) -> CheckResult {
    let inst = instance(ctx)?;
    let key = activate_fresh(&inst)?;
    let mut notes = Vec::new();
    for data in [Vec::new(), vec![0xa5u8; 64 * 1024]] {
        match inst.tpm_sign(&data)? {
            Ok(sig) if sig == hmac_sha256(&key, &data) => {
                notes.push(format!("{} B ok", data.len()))
            }
            Ok(sig) => {
                return Err(Verdict::fail(
                    format!("the HMAC of {} bytes or a clean error", data.len()),
                    format!("a wrong {}-byte answer", sig.len()),
                ))
            }
            Err(e) if e.status == HSM_ERR_INVALID_ARGUMENT || e.status == HSM_ERR_NOT_SUPPORTED => {
                notes.push(format!("{} B refused: {e}", data.len()))
            }
            Err(e) => {
                return Err(Verdict::fail(
                    format!("the HMAC of {} bytes or a clean refusal", data.len()),
                    e.to_string(),
                ))
            }
        }
    }
    Ok(Verdict::pass(notes.join(", ")))
}

fn sign_before_activate(ctx: &mut CheckContext) -> CheckResult {
    let inst = instance(ctx)?;
    match inst.tpm_sign(b"no identity yet")? {
        Ok(_) => Err(Verdict::skip(
            "an identity key is already active (persisted by an earlier activation)",
        )),
        Err(e) if e.status == HSM_ERR_INVALID_STATE => Ok(Verdict::pass(e.message)),
        Err(e) => Err(Verdict::fail(
            "HSM_ERR_INVALID_STATE before any activation",
            e.to_string(),
        )),
    }
}
