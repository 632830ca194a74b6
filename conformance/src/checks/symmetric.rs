//! Symmetric-key attestation: HMACs compared against a known key where import is allowed.

use super::x509::registration_id_problem;
use super::{expect_status, hmac_sha256, identity_missing, instance};
use crate::context::CheckContext;
use crate::ops::ok;
use crate::raw::RawInstance;
use crate::register;
use crate::verdict::{CheckResult, Verdict};
use hsm_api::*;

register!("symmetric-key.sign-without-key", SymmetricKey, SymmetricKey, true,
    "sign before any key is held returns HSM_ERR_NOT_FOUND (skipped when the settings provide a key)", sign_without_key);
register!(
    "symmetric-key.registration-id",
    SymmetricKey,
    SymmetricKey,
    true,
    "get_registration_id returns a valid DPS registration id",
    registration_id
);
register!(
    "symmetric-key.import-and-sign",
    SymmetricKey,
    SymmetricKey,
    true,
    "after importing a known key, sign equals HMAC-SHA256 with that key",
    import_and_sign
);
register!(
    "symmetric-key.reimport-replaces",
    SymmetricKey,
    SymmetricKey,
    true,
    "importing a second key replaces the first",
    reimport_replaces
);
register!(
    "symmetric-key.empty-key-refused",
    SymmetricKey,
    SymmetricKey,
    true,
    "import_key with an empty key is refused with HSM_ERR_INVALID_ARGUMENT",
    empty_key_refused
);
register!(
    "symmetric-key.sign-deterministic",
    SymmetricKey,
    SymmetricKey,
    true,
    "sign gives the same 32 bytes for the same input and different ones for different input",
    sign_deterministic
);

/// Key bytes for the known-answer checks (test values, not secrets).
pub(crate) const KNOWN_KEY_A: [u8; 32] = [0x11; 32];
const KNOWN_KEY_B: [u8; 32] = [0x22; 32];

/// Imports `key`; a skip when the plugin does not allow importing.
pub(crate) fn import(inst: &RawInstance, key: &[u8]) -> Result<(), Verdict> {
    match inst.import_key("", key)? {
        Ok(()) => Ok(()),
        Err(e) if e.status == HSM_ERR_NOT_SUPPORTED => Err(Verdict::skip(format!(
            "the plugin does not allow importing keys: {e}"
        ))),
        // A valid 32-byte key without a registration id is refused as an argument only when
        // the plugin has nowhere configured to put it (pkcs11 without `hmac_key_uri`): the
        // command line is incomplete. Keys that really are invalid are bad-input's checks.
        Err(e) if e.status == HSM_ERR_INVALID_ARGUMENT => Err(Verdict::setup(format!(
            "import_key of a valid 32-byte key without a registration id was refused ({}): {}; pass the setting it names with --set KEY=VALUE",
            status_name(e.status),
            e.message
        ))),
        Err(e) => Err(Verdict::fail(
            "import_key of a 32-byte key to succeed",
            e.to_string(),
        )),
    }
}

fn expect_hmac(inst: &RawInstance, key: &[u8], data: &[u8]) -> Result<(), Verdict> {
    let got = ok(inst.sym_sign(data)?, "sign")?;
    if got != hmac_sha256(key, data) {
        return Err(Verdict::fail(
            "HMAC-SHA256 with the imported key",
            format!("{} other bytes", got.len()),
        ));
    }
    Ok(())
}

fn registration_id(ctx: &mut CheckContext) -> CheckResult {
    let inst = instance(ctx)?;
    let id = match inst.registration_id()? {
        Err(e) if e.status == HSM_ERR_NOT_FOUND => return Err(identity_missing(&e)),
        r => ok(r, "get_registration_id")?,
    };
    let id = String::from_utf8(id).map_err(|_| Verdict::fail("UTF-8", "invalid UTF-8"))?;
    if let Some(p) = registration_id_problem(&id) {
        return Err(Verdict::fail(
            "a valid DPS registration id",
            format!("`{id}`: {p}"),
        ));
    }
    Ok(Verdict::pass(id))
}

fn import_and_sign(ctx: &mut CheckContext) -> CheckResult {
    let inst = instance(ctx)?;
    import(&inst, &KNOWN_KEY_A)?;
    expect_hmac(
        &inst,
        &KNOWN_KEY_A,
        b"myscope/registrations/dev\n1700000000",
    )?;
    expect_hmac(&inst, &KNOWN_KEY_A, b"")?;
    Ok(Verdict::pass(""))
}

fn reimport_replaces(ctx: &mut CheckContext) -> CheckResult {
    let inst = instance(ctx)?;
    import(&inst, &KNOWN_KEY_A)?;
    import(&inst, &KNOWN_KEY_B)?;
    expect_hmac(&inst, &KNOWN_KEY_B, b"after re-import")?;
    Ok(Verdict::pass(""))
}

fn empty_key_refused(ctx: &mut CheckContext) -> CheckResult {
    let inst = instance(ctx)?;
    expect_status(
        "import_key with an empty key",
        inst.import_key("", &[])?,
        &[HSM_ERR_INVALID_ARGUMENT],
    )?;
    Ok(Verdict::pass(""))
}

fn sign_deterministic(ctx: &mut CheckContext) -> CheckResult {
    let inst = instance(ctx)?;
    // Use the held key when there is one; import a known key otherwise.
    if matches!(inst.sym_sign(b"probe")?, Err(e) if e.status == HSM_ERR_NOT_FOUND) {
        import(&inst, &KNOWN_KEY_A)?;
    }
    let a = ok(inst.sym_sign(b"one")?, "sign")?;
    let b = ok(inst.sym_sign(b"one")?, "sign")?;
    let c = ok(inst.sym_sign(b"two")?, "sign")?;
    if a.len() != 32 {
        return Err(Verdict::fail(
            "a 32-byte HMAC-SHA256",
            format!("{} bytes", a.len()),
        ));
    }
    if a != b || a == c {
        return Err(Verdict::fail(
            "equal output for equal input, different for different input",
            if a != b {
                "two answers for one input"
            } else {
                "one answer for two inputs"
            },
        ));
    }
    Ok(Verdict::pass(""))
}

fn sign_without_key(ctx: &mut CheckContext) -> CheckResult {
    let inst = instance(ctx)?;
    match inst.sym_sign(b"no key yet")? {
        Ok(_) => Err(Verdict::skip(
            "the plugin already holds a key (from its settings or state)",
        )),
        Err(e) if e.status == HSM_ERR_NOT_FOUND => Ok(Verdict::pass(e.message)),
        Err(e) => Err(Verdict::fail(
            "HSM_ERR_NOT_FOUND before any key is held",
            e.to_string(),
        )),
    }
}
