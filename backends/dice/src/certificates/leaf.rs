//! The TLS client leaf certificate DPS authenticates: CN = registration id, clientAuth,
//! digitalSignature, issued by the CDI key (open-dice CDI certificates are CA-only).

use der::asn1::OctetString;
use p256::ecdsa::{SigningKey, VerifyingKey};
use x509_cert::ext::pkix::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, KeyUsages,
    SubjectKeyIdentifier,
};

use super::{extension, id_name, named, Template};
use crate::error::DiceError;

/// id-kp-clientAuth (RFC 5280 §4.2.1.12).
const CLIENT_AUTH: spki::ObjectIdentifier = spki::ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.2");

/// Builds the leaf certificate of `leaf_key` (ID `leaf_id`) for `registration_id`, signed by
/// the CDI key `cdi_key` (ID `cdi_id`).
pub fn leaf_certificate(
    leaf_key: &VerifyingKey,
    leaf_id: &[u8],
    registration_id: &str,
    cdi_key: &SigningKey,
    cdi_id: &[u8],
) -> Result<Vec<u8>, DiceError> {
    const WHICH: &str = "TLS leaf";
    let fail = |e: der::Error| DiceError::certificate(WHICH, e);
    let subject = named(None, registration_id, None).map_err(fail)?;
    let extensions = vec![
        extension(
            &AuthorityKeyIdentifier {
                key_identifier: Some(OctetString::new(cdi_id).map_err(fail)?),
                authority_cert_issuer: None,
                authority_cert_serial_number: None,
            },
            &subject,
            false,
        )
        .map_err(fail)?,
        extension(
            &SubjectKeyIdentifier(OctetString::new(leaf_id).map_err(fail)?),
            &subject,
            false,
        )
        .map_err(fail)?,
        extension(
            &KeyUsage(KeyUsages::DigitalSignature.into()),
            &subject,
            true,
        )
        .map_err(fail)?,
        extension(
            &BasicConstraints {
                ca: false,
                path_len_constraint: None,
            },
            &subject,
            true,
        )
        .map_err(fail)?,
        extension(&ExtendedKeyUsage(vec![CLIENT_AUTH]), &subject, false).map_err(fail)?,
    ];
    Template {
        which: WHICH,
        serial: leaf_id,
        issuer: id_name(cdi_id).map_err(fail)?,
        subject,
        subject_key: leaf_key,
        extensions,
    }
    .sign(cdi_key)
}
