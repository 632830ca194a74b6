//! The CDI certificate in open-dice's X.509 profile (`src/boringssl_cert_op.c` layout).
//!
//! Subject is the CDI (Alias) key, issuer the authority (DeviceID) key; both are named by
//! `serialNumber=<hex ID>`, the serial number is the CDI ID, AKI/SKI are the two IDs, and the
//! extension 1.3.6.1.4.1.11129.2.1.24 carries the measured inputs. open-dice marks it critical;
//! [`cdi_certificate_with_criticality`] can mark it non-critical for verifiers that refuse
//! critical extensions they do not know (OpenSSL, and possibly a DPS enrollment group).

use der::asn1::{Any, OctetStringRef, Utf8StringRef};
use der::{Encode, Tag, TagNumber};
use p256::ecdsa::{SigningKey, VerifyingKey};
use spki::ObjectIdentifier;

use super::{ca_extensions, id_name, raw_extension, Template};
use crate::derive::DiceInputs;
use crate::error::DiceError;

/// Profile name of open-dice's example P-256 configuration. The chain built here follows that
/// profile exactly (the known-answer test proves it), so it claims the same name.
pub const DEFAULT_PROFILE_NAME: &str = "opendice.example";

/// Google's OpenDiceInput extension.
pub const OPEN_DICE_INPUT: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.3.6.1.4.1.11129.2.1.24");

/// `[n] EXPLICIT value`, appended to `out`.
fn explicit<T: Encode>(number: u8, value: T, out: &mut Vec<u8>) -> der::Result<()> {
    // EXPLICIT tagging wraps the complete inner TLV in a constructed context tag.
    let tag = Tag::ContextSpecific {
        constructed: true,
        number: TagNumber::new(number),
    };
    Any::new(tag, value.to_der()?)?
        .encode_to_vec(out)
        .map(|_| ())
}

/// The OpenDiceInput SEQUENCE for an inline configuration and no descriptors:
/// `[0] codeHash, [3] configurationDescriptor (the inline config), [4] authorityHash,
/// [6] mode ENUMERATED, [7] profileName UTF8String`. Absent fields ([1] codeDescriptor,
/// [2] configurationHash, [5] authorityDescriptor) are omitted, as open-dice does.
fn open_dice_input(inputs: &DiceInputs, profile_name: &str) -> der::Result<Vec<u8>> {
    let mut fields = Vec::new();
    explicit(0, OctetStringRef::new(&inputs.code_hash)?, &mut fields)?;
    explicit(3, OctetStringRef::new(&inputs.config)?, &mut fields)?;
    explicit(4, OctetStringRef::new(&inputs.authority_hash)?, &mut fields)?;
    // open-dice encodes the mode as ENUMERATED, not INTEGER.
    let mode = Any::new(Tag::Enumerated, [inputs.mode.as_byte()].as_slice())?;
    explicit(6, mode, &mut fields)?;
    if !profile_name.is_empty() {
        explicit(7, Utf8StringRef::new(profile_name)?, &mut fields)?;
    }
    Any::new(Tag::Sequence, fields)?.to_der()
}

/// Builds the CDI certificate of `subject_key` (ID `subject_id`) signed by `authority_key`
/// (ID `authority_id`), recording `inputs`, exactly as open-dice does (OpenDiceInput critical).
pub fn cdi_certificate(
    subject_key: &VerifyingKey,
    subject_id: &[u8],
    authority_key: &SigningKey,
    authority_id: &[u8],
    inputs: &DiceInputs,
    profile_name: &str,
) -> Result<Vec<u8>, DiceError> {
    cdi_certificate_with_criticality(
        subject_key,
        subject_id,
        authority_key,
        authority_id,
        inputs,
        profile_name,
        true,
    )
}

/// [`cdi_certificate`] with the OpenDiceInput extension's criticality chosen by the caller.
/// `false` leaves the open-dice profile (the bytes no longer match open-dice's) but gives a
/// chain that generic X.509 verifiers accept without special handling of DICE extensions.
pub fn cdi_certificate_with_criticality(
    subject_key: &VerifyingKey,
    subject_id: &[u8],
    authority_key: &SigningKey,
    authority_id: &[u8],
    inputs: &DiceInputs,
    profile_name: &str,
    open_dice_input_critical: bool,
) -> Result<Vec<u8>, DiceError> {
    const WHICH: &str = "CDI";
    let fail = |e: der::Error| DiceError::certificate(WHICH, e);
    let subject = id_name(subject_id).map_err(fail)?;
    let mut extensions = ca_extensions(&subject, authority_id, subject_id).map_err(fail)?;
    extensions.push(
        raw_extension(
            OPEN_DICE_INPUT,
            open_dice_input_critical,
            open_dice_input(inputs, profile_name).map_err(fail)?,
        )
        .map_err(fail)?,
    );
    Template {
        which: WHICH,
        serial: subject_id,
        issuer: id_name(authority_id).map_err(fail)?,
        subject,
        subject_key,
        extensions,
    }
    .sign(authority_key)
}
