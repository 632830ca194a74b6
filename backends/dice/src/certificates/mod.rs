//! The four certificates of the chain and what they share (names, validity, signing).
//!
//! Every certificate is built as a `TbsCertificate` directly (not through a builder) so that
//! the bytes are fully determined by the keys and inputs, and signed with RFC 6979
//! deterministic ECDSA P-256/SHA-256: the same UDS and inputs give the same chain byte for
//! byte.

mod cdi;
mod device_id;
mod leaf;
mod root_ca;

pub use cdi::{
    cdi_certificate, cdi_certificate_with_criticality, DEFAULT_PROFILE_NAME, OPEN_DICE_INPUT,
};
pub use device_id::device_id_certificate;
pub use leaf::leaf_certificate;
pub use root_ca::{root_ca_certificate, root_ca_name};

use der::asn1::{
    BitString, GeneralizedTime, OctetString, PrintableStringRef, SetOfVec, UtcTime, Utf8StringRef,
};
use der::{asn1::Any, DateTime, Encode};
use p256::ecdsa::{signature::Signer, DerSignature, SigningKey, VerifyingKey};
use p256::pkcs8::EncodePublicKey;
use spki::{AlgorithmIdentifierOwned, ObjectIdentifier};
use x509_cert::attr::AttributeTypeAndValue;
use x509_cert::ext::{AsExtension, Extension};
use x509_cert::name::{Name, RdnSequence, RelativeDistinguishedName};
use x509_cert::serial_number::SerialNumber;
use x509_cert::time::{Time, Validity};
use x509_cert::{Certificate, TbsCertificate, Version};

use crate::error::DiceError;

/// ecdsa-with-SHA256 (RFC 5758), without parameters.
const ECDSA_WITH_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
/// X.520 serialNumber, the attribute open-dice names subjects with.
const SERIAL_NUMBER_ATTR: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.5");
/// X.520 commonName.
const COMMON_NAME_ATTR: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.3");
/// X.520 organizationName.
const ORGANIZATION_ATTR: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.10");

/// One certificate before signing.
pub(crate) struct Template<'a> {
    /// Which certificate this is, for error messages.
    pub which: &'static str,
    /// Serial number bytes (a positive big-endian integer).
    pub serial: &'a [u8],
    pub issuer: Name,
    pub subject: Name,
    pub subject_key: &'a VerifyingKey,
    pub extensions: Vec<Extension>,
}

impl Template<'_> {
    /// Signs the template with `issuer_key` and returns the DER certificate.
    pub(crate) fn sign(self, issuer_key: &SigningKey) -> Result<Vec<u8>, DiceError> {
        let which = self.which;
        let fail = |e: der::Error| DiceError::certificate(which, e);
        let algorithm = AlgorithmIdentifierOwned {
            oid: ECDSA_WITH_SHA256,
            parameters: None,
        };
        let spki_der = self
            .subject_key
            .to_public_key_der()
            .map_err(|e| DiceError::certificate(which, e))?;
        let tbs = TbsCertificate {
            version: Version::V3,
            serial_number: SerialNumber::new(self.serial).map_err(fail)?,
            signature: algorithm.clone(),
            issuer: self.issuer,
            validity: dice_validity().map_err(fail)?,
            subject: self.subject,
            subject_public_key_info: der::Decode::from_der(spki_der.as_bytes()).map_err(fail)?,
            issuer_unique_id: None,
            subject_unique_id: None,
            extensions: Some(self.extensions),
        };
        let tbs_der = tbs.to_der().map_err(fail)?;
        // RFC 6979: the nonce comes from the key and the message, so signing is repeatable.
        let signature: DerSignature = issuer_key.sign(&tbs_der);
        let certificate = Certificate {
            tbs_certificate: tbs,
            signature_algorithm: algorithm,
            signature: BitString::from_bytes(signature.as_bytes()).map_err(fail)?,
        };
        certificate.to_der().map_err(fail)
    }
}

/// open-dice's fixed validity: notBefore 2018-03-22 23:59:59 UTC (UTCTime), notAfter
/// 9999-12-31 23:59:59 UTC (GeneralizedTime, RFC 5280's "no well-defined expiration").
/// Devices often have no trustworthy clock, so a dated window would only break them.
fn dice_validity() -> der::Result<Validity> {
    Ok(Validity {
        not_before: Time::UtcTime(UtcTime::from_date_time(DateTime::new(
            2018, 3, 22, 23, 59, 59,
        )?)?),
        not_after: Time::GeneralTime(GeneralizedTime::from_date_time(DateTime::new(
            9999, 12, 31, 23, 59, 59,
        )?)),
    })
}

/// One single-attribute RDN.
fn rdn(oid: ObjectIdentifier, value: Any) -> der::Result<RelativeDistinguishedName> {
    let mut set = SetOfVec::new();
    set.insert(AttributeTypeAndValue { oid, value })?;
    Ok(RelativeDistinguishedName(set))
}

/// `serialNumber=<lowercase hex id>` as a PrintableString: open-dice's subject/issuer form.
pub(crate) fn id_name(id: &[u8]) -> der::Result<Name> {
    let hex = hex::encode(id);
    let value = Any::encode_from(&PrintableStringRef::new(&hex)?)?;
    Ok(RdnSequence(vec![rdn(SERIAL_NUMBER_ATTR, value)?]))
}

/// A name of `O=<organization>` (if any), then `CN=<common_name>`, then optionally
/// `serialNumber=<hex id>`, all UTF8String except the serial number.
pub(crate) fn named(
    organization: Option<&str>,
    common_name: &str,
    id: Option<&[u8]>,
) -> der::Result<Name> {
    let mut rdns = Vec::new();
    if let Some(organization) = organization {
        let value = Any::encode_from(&Utf8StringRef::new(organization)?)?;
        rdns.push(rdn(ORGANIZATION_ATTR, value)?);
    }
    let value = Any::encode_from(&Utf8StringRef::new(common_name)?)?;
    rdns.push(rdn(COMMON_NAME_ATTR, value)?);
    if let Some(id) = id {
        let hex = hex::encode(id);
        let value = Any::encode_from(&PrintableStringRef::new(&hex)?)?;
        rdns.push(rdn(SERIAL_NUMBER_ATTR, value)?);
    }
    Ok(RdnSequence(rdns))
}

/// Encodes a standard extension with the given criticality.
pub(crate) fn extension<T: AsExtension>(
    value: &T,
    subject: &Name,
    critical: bool,
) -> der::Result<Extension> {
    let mut extension = value.to_extension(subject, &[])?;
    extension.critical = critical;
    Ok(extension)
}

/// An extension from an already-encoded value.
pub(crate) fn raw_extension(
    oid: ObjectIdentifier,
    critical: bool,
    value: Vec<u8>,
) -> der::Result<Extension> {
    Ok(Extension {
        extn_id: oid,
        critical,
        extn_value: OctetString::new(value)?,
    })
}

/// Extensions every issuing certificate here carries, in open-dice's order: AKI, SKI,
/// keyUsage keyCertSign (critical), basicConstraints CA:TRUE (critical).
pub(crate) fn ca_extensions(
    subject: &Name,
    authority_key_id: &[u8],
    subject_key_id: &[u8],
) -> der::Result<Vec<Extension>> {
    use x509_cert::ext::pkix::{
        AuthorityKeyIdentifier, BasicConstraints, KeyUsage, KeyUsages, SubjectKeyIdentifier,
    };
    Ok(vec![
        extension(
            &AuthorityKeyIdentifier {
                key_identifier: Some(OctetString::new(authority_key_id)?),
                authority_cert_issuer: None,
                authority_cert_serial_number: None,
            },
            subject,
            false,
        )?,
        extension(
            &SubjectKeyIdentifier(OctetString::new(subject_key_id)?),
            subject,
            false,
        )?,
        extension(&KeyUsage(KeyUsages::KeyCertSign.into()), subject, true)?,
        extension(
            &BasicConstraints {
                ca: true,
                path_len_constraint: None,
            },
            subject,
            true,
        )?,
    ])
}

/// PEM of one DER certificate.
pub fn to_pem(der: &[u8]) -> Result<String, DiceError> {
    use der::pem::{encode_string, LineEnding};
    encode_string("CERTIFICATE", LineEnding::LF, der).map_err(|e| DiceError::certificate("PEM", e))
}
