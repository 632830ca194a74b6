//! Which critical certificate extensions a group-enrollment chain may carry beyond the ones
//! OpenSSL itself understands: the DICE extensions, whose content matters to an attestation
//! verifier but not to path validation.
//!
//! OpenSSL refuses any critical extension missing from its own list
//! (`X509_supported_extension`, `crypto/x509/v3_purp.c`) with
//! `X509_V_ERR_UNHANDLED_CRITICAL_EXTENSION`. The openssl crate offers no per-extension
//! verify callback on an `X509Store`, so the emulator checks every certificate of the built
//! chain here and only then lets OpenSSL skip the criticality check for that one verification.

use der::Decode;
use spki::ObjectIdentifier;
use x509_cert::Certificate;

/// OpenSSL's `X509_supported_extension` list (unchanged from 1.1.1 to 3.x): a critical
/// extension in this list is understood and enforced by OpenSSL's verifier.
const HANDLED_BY_OPENSSL: &[ObjectIdentifier] = &[
    ObjectIdentifier::new_unwrap("2.16.840.1.113730.1.1"), // Netscape cert type
    ObjectIdentifier::new_unwrap("2.5.29.15"),             // keyUsage
    ObjectIdentifier::new_unwrap("2.5.29.17"),             // subjectAltName
    ObjectIdentifier::new_unwrap("2.5.29.19"),             // basicConstraints
    ObjectIdentifier::new_unwrap("2.5.29.32"),             // certificatePolicies
    ObjectIdentifier::new_unwrap("2.5.29.31"),             // cRLDistributionPoints
    ObjectIdentifier::new_unwrap("2.5.29.37"),             // extKeyUsage
    ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.1.7"),     // RFC 3779 IP address blocks
    ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.1.8"),     // RFC 3779 AS identifiers
    ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.48.1.5"),  // OCSP noCheck
    ObjectIdentifier::new_unwrap("2.5.29.36"),             // policyConstraints
    ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.1.14"),    // proxyCertInfo
    ObjectIdentifier::new_unwrap("2.5.29.30"),             // nameConstraints
    ObjectIdentifier::new_unwrap("2.5.29.33"),             // policyMappings
    ObjectIdentifier::new_unwrap("2.5.29.54"),             // inhibitAnyPolicy
];

/// The DICE extensions a device chain may mark critical: they describe the measured firmware
/// and device, and constrain nothing that path validation decides.
pub const DICE_EXTENSIONS: &[ObjectIdentifier] = &[
    ObjectIdentifier::new_unwrap("1.3.6.1.4.1.11129.2.1.24"), // open-dice OpenDiceInput
    ObjectIdentifier::new_unwrap("2.23.133.5.4.1"),           // TCG DICE TcbInfo
    ObjectIdentifier::new_unwrap("2.23.133.5.4.5"),           // TCG DICE MultiTcbInfo
    ObjectIdentifier::new_unwrap("2.23.133.5.4.4"),           // TCG DICE UEID
];

/// Whether `oid` is one of [`DICE_EXTENSIONS`].
pub fn is_dice_extension(oid: &ObjectIdentifier) -> bool {
    DICE_EXTENSIONS.contains(oid)
}

/// What a certificate's critical extensions allow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CriticalExtensions {
    /// Every critical extension is understood by OpenSSL or is a DICE extension.
    Acceptable,
    /// This critical extension is neither: the certificate must be refused.
    Unknown(ObjectIdentifier),
}

/// Checks one DER certificate's critical extensions.
pub fn classify(cert_der: &[u8]) -> der::Result<CriticalExtensions> {
    let cert = Certificate::from_der(cert_der)?;
    let unknown = cert
        .tbs_certificate
        .extensions
        .iter()
        .flatten()
        .filter(|e| e.critical)
        .map(|e| e.extn_id)
        .find(|oid| !HANDLED_BY_OPENSSL.contains(oid) && !is_dice_extension(oid));
    Ok(match unknown {
        Some(oid) => CriticalExtensions::Unknown(oid),
        None => CriticalExtensions::Acceptable,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openssl_list_and_dice_list_do_not_overlap_and_garbage_is_an_error() {
        assert!(DICE_EXTENSIONS
            .iter()
            .all(|oid| !HANDLED_BY_OPENSSL.contains(oid)));
        assert!(is_dice_extension(&ObjectIdentifier::new_unwrap(
            "1.3.6.1.4.1.11129.2.1.24"
        )));
        assert!(!is_dice_extension(&ObjectIdentifier::new_unwrap(
            "2.23.133.5.4.2"
        )));
        assert!(classify(b"not a certificate").is_err());
        assert!(classify(&[]).is_err());
    }
}
