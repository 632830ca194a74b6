//! The symmetric-key interface: HMAC-SHA256 with a generic-secret key that stays in the token.

use crate::error::{Pkcs11Error, Result};
use crate::session::TokenSession;
use crate::uri::Pkcs11Uri;
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use zeroize::Zeroize;

/// Finds the generic-secret key named by `uri`.
pub fn find_hmac_key(session: &TokenSession, uri: &Pkcs11Uri) -> Result<ObjectHandle> {
    session.find_one(ObjectClass::SECRET_KEY, uri, "HMAC key")
}

/// HMAC-SHA256 of `data` with the token key.
pub fn hmac_sha256(session: &TokenSession, key: ObjectHandle, data: &[u8]) -> Result<Vec<u8>> {
    session
        .session()
        .sign(&Mechanism::Sha256Hmac, key, data)
        .map_err(|e| crate::error::from_cryptoki("HMAC-SHA256 with the token key", e))
}

/// The key's label as text (the default registration id).
pub fn key_label(session: &TokenSession, key: ObjectHandle) -> Result<String> {
    let label = session.attribute_bytes(key, AttributeType::Label)?;
    let label = String::from_utf8(label)
        .map_err(|_| Pkcs11Error::invalid_argument("the HMAC key's label is not UTF-8"))?;
    if label.is_empty() {
        return Err(Pkcs11Error::not_found(
            "the HMAC key has no label; set `registration_id`",
        ));
    }
    Ok(label)
}

/// Stores `key` in the token as a sensitive, non-extractable generic secret usable only for
/// HMAC, labelled `label` (and with `id`, if given). Earlier keys with the same label/id are
/// destroyed only after the new one exists, so a failed import leaves the old key in place.
pub fn import_hmac_key(
    session: &TokenSession,
    label: &str,
    id: Option<&[u8]>,
    key: &[u8],
) -> Result<ObjectHandle> {
    if key.is_empty() {
        return Err(Pkcs11Error::invalid_argument("the key to import is empty"));
    }
    if label.is_empty() {
        return Err(Pkcs11Error::invalid_argument("the key label is empty"));
    }
    let mut selector = vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::Label(label.as_bytes().to_vec()),
    ];
    if let Some(id) = id {
        selector.push(Attribute::Id(id.to_vec()));
    }
    let old = session
        .session()
        .find_objects(&selector)
        .map_err(|e| crate::error::from_cryptoki("searching earlier HMAC keys", e))?;

    let mut template = selector;
    template.extend([
        Attribute::KeyType(KeyType::GENERIC_SECRET),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Sign(true),
        Attribute::Verify(true),
        Attribute::Value(key.to_vec()),
    ]);
    let created = session.session().create_object(&template);
    // The template held a copy of the key.
    for attr in template.iter_mut() {
        if let Attribute::Value(v) = attr {
            v.zeroize();
        }
    }
    let handle = created.map_err(import_error)?;
    for stale in old {
        session
            .session()
            .destroy_object(stale)
            .map_err(|e| crate::error::from_cryptoki("removing the replaced HMAC key", e))?;
    }
    Ok(handle)
}

/// The error of a refused `C_CreateObject` of the HMAC key.
///
/// The template is valid PKCS#11 (a non-empty generic secret), so a module that refuses its
/// class, key type or value cannot hold HMAC keys at all: that is `HSM_ERR_NOT_SUPPORTED`, not a
/// bad argument of the caller. tpm2-pkcs11 1.9 answers `CKR_ATTRIBUTE_VALUE_INVALID` ("Can only
/// create RSA Public key objects or data objects"); other modules use the neighbouring values.
fn import_error(err: CkError) -> Pkcs11Error {
    match err {
        CkError::Pkcs11(
            rv @ (RvError::AttributeValueInvalid
            | RvError::AttributeTypeInvalid
            | RvError::TemplateInconsistent
            | RvError::TemplateIncomplete
            | RvError::KeyTypeInconsistent
            | RvError::MechanismInvalid
            | RvError::FunctionNotSupported),
            function,
        ) => Pkcs11Error::not_supported(format!(
            "importing the HMAC key: the PKCS#11 module cannot hold HMAC keys (it refuses a generic-secret key object: {} from C_{function:?}); use a module that supports CKK_GENERIC_SECRET with CKM_SHA256_HMAC, such as SoftHSM2",
            crate::error::ckr_name(rv)
        )),
        other => crate::error::from_cryptoki("importing the HMAC key", other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;
    use cryptoki::context::Function;

    #[test]
    fn a_refused_secret_key_object_is_not_supported() {
        let e = import_error(CkError::Pkcs11(
            RvError::AttributeValueInvalid,
            Function::CreateObject,
        ));
        assert_eq!(e.code(), ErrorKind::NotSupported);
        assert!(
            e.message().contains("cannot hold HMAC keys"),
            "{}",
            e.message()
        );
        assert!(
            e.message()
                .contains("CKR_ATTRIBUTE_VALUE_INVALID from C_CreateObject"),
            "{}",
            e.message()
        );
        // Anything else keeps its usual mapping.
        let e = import_error(CkError::Pkcs11(
            RvError::PinIncorrect,
            Function::CreateObject,
        ));
        assert_eq!(e.code(), ErrorKind::Authentication);
        let e = import_error(CkError::Pkcs11(
            RvError::DeviceError,
            Function::CreateObject,
        ));
        assert_eq!(e.code(), ErrorKind::Device);
    }
}
