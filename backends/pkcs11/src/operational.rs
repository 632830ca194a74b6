//! The operational key (ABI 1.2): a P-256 key pair generated inside the token under a label,
//! for the certificate DPS issues during provisioning, and that certificate chain kept beside
//! it in the token.
//!
//! Objects, all token objects (they outlive the session and the process):
//! - the key pair: `CKO_PRIVATE_KEY` and `CKO_PUBLIC_KEY` with `CKA_LABEL` = the label and
//!   `CKA_ID` = [`ID_PREFIX`] followed by the label. The id tells an operational key apart from
//!   a device key that happens to carry the same label (`init_device` gives random ids), so an
//!   operational-key call never uses, replaces or destroys anything else in the token. The
//!   private key is `CKA_PRIVATE`, `CKA_SENSITIVE`, not `CKA_EXTRACTABLE`, and signs only
//!   (`CKA_SIGN`; `CKA_DERIVE` false).
//! - the issued chain: a `CKO_DATA` object with `CKA_LABEL` = the label, `CKA_APPLICATION` =
//!   [`CHAIN_APPLICATION`] and `CKA_VALUE` = the PEM text exactly as given.
//!
//! Nothing is cached: every call looks its objects up again, so a key made or removed by
//! another process (or instance) is seen at once.

use crate::error::{ErrorKind, Pkcs11Error, Result};
use crate::session::TokenSession;
use crate::uri::Pkcs11Uri;
use crate::x509::TokenKey;
use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};
use hsm_plugin_sdk::hsm_api::{is_valid_operational_key_label, OPERATIONAL_KEY_LABEL_MAX};
use hsm_plugin_sdk::SignAlgorithm;
use p256::ecdsa::VerifyingKey;
use p256::pkcs8::EncodePublicKey;

/// The start of every operational key's `CKA_ID`; the label follows.
pub const ID_PREFIX: &[u8] = b"hsmkit-operational:";

/// `CKA_APPLICATION` of the data object that holds an operational key's issued chain.
pub const CHAIN_APPLICATION: &[u8] = b"hsmkit operational chain";

/// Refuses anything but a valid operational-key label. The SDK checks labels at the ABI
/// already; this guards the library's own callers (tools, tests) too.
fn check_label(label: &str) -> Result<()> {
    if is_valid_operational_key_label(label) {
        Ok(())
    } else {
        Err(Pkcs11Error::invalid_argument(format!(
            "the operational key label must be 1 to {OPERATIONAL_KEY_LABEL_MAX} ASCII letters, digits, '-', '_' or '.'"
        )))
    }
}

/// The `CKA_ID` of the operational key pair under `label`.
pub fn key_id(label: &str) -> Vec<u8> {
    let mut id = ID_PREFIX.to_vec();
    id.extend_from_slice(label.as_bytes());
    id
}

/// The URI of the operational key pair under `label` (label and id).
pub fn key_uri(label: &str) -> Pkcs11Uri {
    Pkcs11Uri {
        object: Some(label.to_string()),
        id: Some(key_id(label)),
        ..Pkcs11Uri::default()
    }
}

fn find(session: &TokenSession, template: &[Attribute], what: &str) -> Result<Vec<ObjectHandle>> {
    session
        .session()
        .find_objects(template)
        .map_err(|e| crate::error::from_cryptoki(&format!("searching the {what}"), e))
}

/// The key objects of class `class` under `label`.
fn key_objects(
    session: &TokenSession,
    class: ObjectClass,
    label: &str,
) -> Result<Vec<ObjectHandle>> {
    find(
        session,
        &[
            Attribute::Class(class),
            Attribute::Label(label.as_bytes().to_vec()),
            Attribute::Id(key_id(label)),
        ],
        "operational key",
    )
}

/// The chain data objects under `label`.
fn chain_objects(session: &TokenSession, label: &str) -> Result<Vec<ObjectHandle>> {
    find(
        session,
        &[
            Attribute::Class(ObjectClass::DATA),
            Attribute::Label(label.as_bytes().to_vec()),
            Attribute::Application(CHAIN_APPLICATION.to_vec()),
        ],
        "operational chain",
    )
}

fn spki_der(key: &VerifyingKey) -> Result<Vec<u8>> {
    key.to_public_key_der()
        .map(|d| d.as_bytes().to_vec())
        .map_err(|e| Pkcs11Error::internal(format!("encoding the public key: {e}")))
}

fn no_key(label: &str) -> Pkcs11Error {
    Pkcs11Error::not_found(format!(
        "no operational key `{label}` in the token (create it first)"
    ))
}

/// The public key under `label` as a DER SubjectPublicKeyInfo, or `None` when the token holds
/// no such key pair. Half a pair, or several, is an error naming the counts.
fn existing_public_key(session: &TokenSession, label: &str) -> Result<Option<Vec<u8>>> {
    let private = key_objects(session, ObjectClass::PRIVATE_KEY, label)?;
    let public = key_objects(session, ObjectClass::PUBLIC_KEY, label)?;
    match (private.as_slice(), public.as_slice()) {
        ([], []) => Ok(None),
        ([_], [public]) => {
            let point = session.attribute_bytes(*public, AttributeType::EcPoint)?;
            let key = crate::provision::verifying_key_from_ec_point(&point)?;
            spki_der(&key).map(Some)
        }
        (p, q) => Err(Pkcs11Error::new(
            ErrorKind::InvalidState,
            format!(
                "the token holds {} private and {} public key objects for operational key `{label}`, expected one pair; remove them with delete_key",
                p.len(),
                q.len()
            ),
        )),
    }
}

/// Creates the P-256 key pair under `label` inside the token, or finds the existing one, and
/// returns its public key as a DER SubjectPublicKeyInfo.
///
/// Look-up and generation run under one process-wide lock, so that two instances of this
/// process creating the same label at once make one pair, not two (PKCS#11 has no lock a
/// second process would see: see the README's Limits).
pub fn create(session: &TokenSession, label: &str) -> Result<Vec<u8>> {
    static CREATE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    check_label(label)?;
    // Nothing behind the lock can be left half-done by a panic: poisoning is ignored.
    let _one_at_a_time = hsm_plugin_sdk::sync::lock(&CREATE);
    if let Some(spki) = existing_public_key(session, label)? {
        return Ok(spki);
    }
    // No ECDH (`CKA_DERIVE`) with it, whatever the module's default. `CKA_DECRYPT` is left to
    // the module: tpm2-pkcs11 refuses an EC key pair with an explicit `CKA_DECRYPT` false
    // (CKR_GENERAL_ERROR, "User specified and TPM specified attr mismatch"), and no EC
    // mechanism decrypts.
    let key = crate::provision::generate_p256(
        session,
        label,
        &key_id(label),
        &[Attribute::Derive(false)],
    )?;
    spki_der(&key)
}

/// The public key under `label` (DER SubjectPublicKeyInfo); `NotFound` when there is none.
pub fn public_key(session: &TokenSession, label: &str) -> Result<Vec<u8>> {
    check_label(label)?;
    existing_public_key(session, label)?.ok_or_else(|| no_key(label))
}

/// A DER ECDSA signature of the SHA-256 `digest` by the private key under `label`, made by
/// the token (`CKM_ECDSA`; its raw r||s is converted to DER like the X.509 key's).
pub fn sign_digest(session: &TokenSession, label: &str, digest: &[u8]) -> Result<Vec<u8>> {
    check_label(label)?;
    let key = match TokenKey::find(session, &key_uri(label)) {
        Err(e) if e.code() == ErrorKind::NotFound => return Err(no_key(label)),
        other => other?,
    };
    key.sign_digest(session, SignAlgorithm::EcdsaP256Sha256, digest)
}

/// Stores `pem` as the chain of the key under `label`, replacing any earlier one. The new
/// object exists before the old ones are destroyed, so a failure leaves the old chain.
pub fn store_chain(session: &TokenSession, label: &str, pem: &str) -> Result<()> {
    check_label(label)?;
    if pem.is_empty() {
        return Err(Pkcs11Error::invalid_argument(
            "the certificate chain to store is empty",
        ));
    }
    if key_objects(session, ObjectClass::PRIVATE_KEY, label)?.is_empty() {
        return Err(no_key(label));
    }
    let old = chain_objects(session, label)?;
    session
        .session()
        .create_object(&[
            Attribute::Class(ObjectClass::DATA),
            Attribute::Token(true),
            Attribute::Label(label.as_bytes().to_vec()),
            Attribute::Application(CHAIN_APPLICATION.to_vec()),
            Attribute::Value(pem.as_bytes().to_vec()),
        ])
        .map_err(|e| crate::error::from_cryptoki("storing the operational chain", e))?;
    for stale in old {
        session
            .session()
            .destroy_object(stale)
            .map_err(|e| crate::error::from_cryptoki("removing the replaced chain", e))?;
    }
    Ok(())
}

/// The chain stored under `label`, byte for byte as stored; `NotFound` without one.
pub fn chain(session: &TokenSession, label: &str) -> Result<String> {
    check_label(label)?;
    match chain_objects(session, label)?.as_slice() {
        [] => Err(Pkcs11Error::not_found(format!(
            "no chain stored for operational key `{label}`"
        ))),
        [one] => {
            let value = session.attribute_bytes(*one, AttributeType::Value)?;
            String::from_utf8(value).map_err(|_| {
                Pkcs11Error::device(format!(
                    "the chain object of operational key `{label}` is not UTF-8 text"
                ))
            })
        }
        many => Err(Pkcs11Error::new(
            ErrorKind::InvalidState,
            format!(
                "the token holds {} chain objects for operational key `{label}`; store the chain again to replace them",
                many.len()
            ),
        )),
    }
}

/// Destroys the key pair and the chain under `label`; `NotFound` when the token holds none
/// of them.
pub fn delete(session: &TokenSession, label: &str) -> Result<()> {
    check_label(label)?;
    let mut objects = chain_objects(session, label)?;
    objects.extend(key_objects(session, ObjectClass::PRIVATE_KEY, label)?);
    objects.extend(key_objects(session, ObjectClass::PUBLIC_KEY, label)?);
    if objects.is_empty() {
        return Err(no_key(label));
    }
    for object in objects {
        session
            .session()
            .destroy_object(object)
            .map_err(|e| crate::error::from_cryptoki("removing the operational key", e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_the_prefix_and_the_label() {
        assert_eq!(key_id("op-1"), b"hsmkit-operational:op-1".to_vec());
        let uri = key_uri("op-1");
        assert_eq!(uri.object.as_deref(), Some("op-1"));
        assert_eq!(uri.id, Some(key_id("op-1")));
    }

    #[test]
    fn bad_labels_are_refused_before_the_token() {
        for bad in ["", ".", "..", "a/b", "a b", &"a".repeat(65)] {
            let e = check_label(bad).unwrap_err();
            assert_eq!(e.code(), ErrorKind::InvalidArgument, "{bad:?}");
            assert!(e.message().contains("label"), "{}", e.message());
        }
        check_label("hsmkit-operational").unwrap();
    }
}
