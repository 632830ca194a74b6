//! X.509 device authentication: the TLS layer only records the chain the client presented (and
//! proves possession of the leaf key); the checks against enrollments happen here, with OpenSSL's
//! chain verification (signatures, validity, CA constraints).

use openssl::nid::Nid;
use openssl::stack::Stack;
use openssl::x509::store::X509StoreBuilder;
use openssl::x509::verify::X509VerifyFlags;
use openssl::x509::{X509StoreContext, X509};
use serde_json::{json, Value};

use crate::pki::parse_certificates;

/// Why an X.509 device was refused. Messages describe the failure, never key material.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum X509AuthError {
    /// The TLS client sent no certificate.
    #[error("no client certificate was presented")]
    NoCertificate,
    /// The certificate cannot be parsed.
    #[error("the client certificate cannot be parsed")]
    Unparsable,
    /// CN of the leaf differs from the registration id.
    #[error("the certificate's common name does not equal the registration id")]
    CommonNameMismatch,
    /// The leaf is not the enrolled certificate.
    #[error("the client certificate is not the enrolled certificate")]
    NotEnrolled,
    /// Chain verification failed (signature, validity, CA constraints).
    #[error("certificate chain verification failed: {0}")]
    Verification(String),
}

fn load(der: &[u8]) -> Result<X509, X509AuthError> {
    X509::from_der(der).map_err(|_| X509AuthError::Unparsable)
}

/// The leaf's subject common name.
pub fn common_name(leaf_der: &[u8]) -> Result<String, X509AuthError> {
    let leaf = load(leaf_der)?;
    let cn = leaf
        .subject_name()
        .entries_by_nid(Nid::COMMONNAME)
        .next()
        .ok_or(X509AuthError::CommonNameMismatch)?;
    // Byte-exact: a CN with an embedded NUL must not compare equal to a truncated id.
    String::from_utf8(cn.data().as_slice().to_vec()).map_err(|_| X509AuthError::Unparsable)
}

/// Verifies `chain` (leaf first) up to one of `anchors` (DER). Intermediate anchors are allowed
/// (a group may enroll an intermediate CA), validity is checked at the current time.
fn verify_chain(chain: &[Vec<u8>], anchors: &[Vec<u8>]) -> Result<(), X509AuthError> {
    let (leaf, rest) = chain.split_first().ok_or(X509AuthError::NoCertificate)?;
    let leaf = load(leaf)?;
    let err = |e: openssl::error::ErrorStack| X509AuthError::Verification(e.to_string());
    let mut store = X509StoreBuilder::new().map_err(err)?;
    for a in anchors {
        store.add_cert(load(a)?).map_err(err)?;
    }
    store
        .set_flags(X509VerifyFlags::PARTIAL_CHAIN)
        .map_err(err)?;
    let store = store.build();
    let mut untrusted = Stack::new().map_err(err)?;
    for c in rest {
        untrusted.push(load(c)?).map_err(err)?;
    }
    let mut ctx = X509StoreContext::new().map_err(err)?;
    let outcome = ctx
        .init(&store, &leaf, &untrusted, |c| {
            let ok = c.verify_cert()?;
            Ok((ok, c.error()))
        })
        .map_err(err)?;
    match outcome {
        (true, _) => Ok(()),
        (false, e) => Err(X509AuthError::Verification(e.error_string().to_string())),
    }
}

/// Individual enrollment: the presented leaf must be one of the enrolled certificates, valid now,
/// with CN equal to the registration id.
pub fn verify_individual(
    chain: &[Vec<u8>],
    enrolled: &[&str],
    registration_id: &str,
) -> Result<(), X509AuthError> {
    let leaf = chain.first().ok_or(X509AuthError::NoCertificate)?;
    if common_name(leaf)? != registration_id {
        return Err(X509AuthError::CommonNameMismatch);
    }
    let mut anchors = Vec::new();
    for text in enrolled {
        if let Ok(certs) = parse_certificates(text) {
            anchors.extend(certs.into_iter().take(1));
        }
    }
    if !anchors.iter().any(|a| a == leaf) {
        return Err(X509AuthError::NotEnrolled);
    }
    verify_chain(&chain[..1], &anchors)
}

/// Group enrollment: the chain must verify up to one of the group's signing certificates, and the
/// leaf's CN must equal the registration id.
pub fn verify_group(
    chain: &[Vec<u8>],
    signing: &[&str],
    registration_id: &str,
) -> Result<(), X509AuthError> {
    let leaf = chain.first().ok_or(X509AuthError::NoCertificate)?;
    if common_name(leaf)? != registration_id {
        return Err(X509AuthError::CommonNameMismatch);
    }
    let mut anchors = Vec::new();
    for text in signing {
        if let Ok(certs) = parse_certificates(text) {
            anchors.extend(certs);
        }
    }
    verify_chain(chain, &anchors)
}

fn hex_upper(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02X}")).collect()
}

fn name_string(name: &openssl::x509::X509NameRef) -> String {
    name.entries()
        .filter_map(|e| {
            let key = e.object().nid().short_name().ok()?;
            let val = String::from_utf8_lossy(e.data().as_slice()).into_owned();
            Some(format!("{key}={val}"))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The service's X509CertificateInfo for a DER certificate (Null when it cannot be read).
pub fn certificate_info(der: &[u8]) -> Value {
    let Ok(c) = X509::from_der(der) else {
        return Value::Null;
    };
    let sha1 = c.digest(openssl::hash::MessageDigest::sha1()).ok();
    let sha256 = c.digest(openssl::hash::MessageDigest::sha256()).ok();
    let serial = c
        .serial_number()
        .to_bn()
        .ok()
        .and_then(|b| b.to_hex_str().ok().map(|s| s.to_string()));
    json!({
        "subjectName": name_string(c.subject_name()),
        "sha1Thumbprint": sha1.map(|d| hex_upper(&d)),
        "sha256Thumbprint": sha256.map(|d| hex_upper(&d)),
        "issuerName": name_string(c.issuer_name()),
        "notBeforeUtc": rfc3339(c.not_before()),
        "notAfterUtc": rfc3339(c.not_after()),
        "serialNumber": serial,
        "version": c.version() + 1,
    })
}

/// An ASN.1 time as RFC 3339 UTC (what the service returns), via its distance from the epoch.
fn rfc3339(t: &openssl::asn1::Asn1TimeRef) -> Option<String> {
    let epoch = openssl::asn1::Asn1Time::from_unix(0).ok()?;
    let d = epoch.diff(t).ok()?;
    let secs = i64::from(d.days) * 86400 + i64::from(d.secs);
    let dt = time::OffsetDateTime::from_unix_timestamp(secs).ok()?;
    dt.format(&time::format_description::well_known::Rfc3339)
        .ok()
}
