//! X.509 device authentication: the TLS layer only records the chain the client presented (and
//! proves possession of the leaf key); the checks against enrollments happen here, with OpenSSL's
//! chain verification (signatures, validity, CA constraints).
//!
//! DICE chains (open-dice, TCG DICE) mark their attestation extensions critical, which OpenSSL
//! refuses as unknown. A chain whose only unknown critical extensions are those DICE ones is
//! accepted; any other unknown critical extension is still refused (see
//! [`critical_extensions`]). How the real DPS service treats critical DICE extensions in a
//! group-enrolled chain is NOT verified here: this is the emulator's choice, and a device that
//! must work against the real service can set the DICE plugin's `cdi_extension_critical=false`.

pub mod critical_extensions;

use openssl::nid::Nid;
use openssl::stack::Stack;
use openssl::x509::store::X509StoreBuilder;
use openssl::x509::verify::X509VerifyFlags;
use openssl::x509::{X509StoreContext, X509VerifyResult, X509};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use crate::pki::parse_certificates;

use super::{AuthContext, AuthError, Authenticator, DeviceRequest, Section};
use crate::model::{EnrollmentGroup, IndividualEnrollment};
use dps_proto::AttestationKind;

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
    /// No certification path leads from the chain to the enrollment's certificates: the
    /// device belongs to another CA (the least telling failure when several groups are tried).
    #[error("certificate chain verification failed: {0} (the chain does not lead to this enrollment's certificates)")]
    Untrusted(String),
    /// The device certificate is a CA certificate (basicConstraints cA TRUE).
    #[error(
        "the device certificate is a CA certificate (basicConstraints cA is TRUE); a device \
         must present an end-entity certificate"
    )]
    LeafIsCa,
    /// The device certificate restricts its use (extendedKeyUsage) to purposes without TLS
    /// client authentication.
    #[error(
        "the device certificate's extendedKeyUsage does not include clientAuth \
         (1.3.6.1.5.5.7.3.2), so it may not authenticate a TLS client"
    )]
    NotForClientAuth,
    /// A certificate of the chain has a critical extension that is neither understood by the
    /// verifier nor one of the DICE extensions.
    #[error(
        "certificate chain verification failed: certificate \"{subject}\" has the critical \
         extension {oid}, which is not understood (only DICE extensions may be critical \
         beyond the standard ones)"
    )]
    UnhandledCriticalExtension {
        /// Subject of the certificate carrying the extension.
        subject: String,
        /// The extension's OID, dotted.
        oid: String,
    },
}

/// OpenSSL's `X509_V_ERR_UNHANDLED_CRITICAL_EXTENSION`.
const UNHANDLED_CRITICAL_EXTENSION: i32 = 34;

/// OpenSSL's errors for "no path to a trust anchor": `X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT`,
/// `_DEPTH_ZERO_SELF_SIGNED_CERT`, `_SELF_SIGNED_CERT_IN_CHAIN`,
/// `_UNABLE_TO_GET_ISSUER_CERT_LOCALLY`, `_UNABLE_TO_VERIFY_LEAF_SIGNATURE`. They say the
/// chain belongs to another CA, not what is wrong with it.
const NO_PATH_TO_ANCHOR: [i32; 5] = [2, 18, 19, 20, 21];

/// RFC 5280 4.2.1.9 basicConstraints.
const BASIC_CONSTRAINTS: spki::ObjectIdentifier = spki::ObjectIdentifier::new_unwrap("2.5.29.19");
/// RFC 5280 4.2.1.12 extKeyUsage.
const EXT_KEY_USAGE: spki::ObjectIdentifier = spki::ObjectIdentifier::new_unwrap("2.5.29.37");
/// RFC 5280 4.2.1.12 id-kp-clientAuth.
const CLIENT_AUTH: spki::ObjectIdentifier = spki::ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.2");

/// Checks that the device certificate is fit to authenticate a TLS client: an end-entity
/// certificate (basicConstraints absent or cA FALSE, RFC 5280 4.2.1.9; the service's
/// "end-entity (leaf) certificate installed on a device",
/// <https://learn.microsoft.com/azure/iot-dps/concepts-x509-attestation>), and, when it
/// restricts its purposes with extendedKeyUsage, one that lists clientAuth (RFC 5280
/// 4.2.1.12: "the certificate MUST only be used for one of the purposes indicated").
pub fn check_device_certificate(leaf_der: &[u8]) -> Result<(), X509AuthError> {
    use der::Decode;
    use x509_cert::ext::pkix::{BasicConstraints, ExtendedKeyUsage};
    let cert = x509_cert::Certificate::from_der(leaf_der).map_err(|_| X509AuthError::Unparsable)?;
    for ext in cert.tbs_certificate.extensions.iter().flatten() {
        let value = ext.extn_value.as_bytes();
        if ext.extn_id == BASIC_CONSTRAINTS {
            let bc = BasicConstraints::from_der(value).map_err(|_| X509AuthError::Unparsable)?;
            if bc.ca {
                return Err(X509AuthError::LeafIsCa);
            }
        } else if ext.extn_id == EXT_KEY_USAGE {
            let eku = ExtendedKeyUsage::from_der(value).map_err(|_| X509AuthError::Unparsable)?;
            if !eku.0.contains(&CLIENT_AUTH) {
                return Err(X509AuthError::NotForClientAuth);
            }
        }
    }
    Ok(())
}

fn load(der: &[u8]) -> Result<X509, X509AuthError> {
    X509::from_der(der).map_err(|_| X509AuthError::Unparsable)
}

/// An enrollment's certificate text (an individual enrollment's client certificate, a group's
/// signing certificate) parsed once. Under OpenSSL 3 each `X509::from_der` decodes the public
/// key through the provider decoders, which a profile of the fleet bench showed as a large
/// share of the emulator's CPU when every request parsed every anchor again.
#[derive(Debug)]
struct Anchors {
    /// DER of each certificate of the text, in its order.
    der: Vec<Vec<u8>>,
    /// Each as OpenSSL loaded it; `None` for one it cannot load (a verification against it
    /// is refused as [`X509AuthError::Unparsable`], as when it was parsed per request).
    parsed: Vec<Option<X509>>,
    /// certificateInfo of the first (`None` when the text holds none).
    first_info: Option<Value>,
}

/// Most certificate texts kept parsed; past it the cache starts again empty (a bound on
/// memory, about a kilobyte per text, not a policy: any text is parsed again when next used).
const ANCHOR_CACHE_MAX: usize = 4096;

/// Parsed certificate texts keyed by the text itself: an enrollment whose certificates change
/// (update, replacement, deletion and re-creation) presents another text, which is parsed
/// afresh, so nothing can answer from a stale parse and no invalidation is needed.
static ANCHOR_CACHE: LazyLock<Mutex<HashMap<String, Arc<Anchors>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// `text` parsed (from the cache when it was parsed before); `None` when it is not PEM/DER
/// certificates at all (ignored, as enrollment validation already refuses such text).
fn anchors_of(text: &str) -> Option<Arc<Anchors>> {
    {
        let cache = ANCHOR_CACHE.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(a) = cache.get(text) {
            return Some(a.clone());
        }
    }
    let der = parse_certificates(text).ok()?;
    let parsed = der.iter().map(|d| X509::from_der(d).ok()).collect();
    let first_info = der.first().map(|d| certificate_info(d));
    let anchors = Arc::new(Anchors {
        der,
        parsed,
        first_info,
    });
    let mut cache = ANCHOR_CACHE.lock().unwrap_or_else(|p| p.into_inner());
    if cache.len() >= ANCHOR_CACHE_MAX {
        cache.clear();
    }
    cache.insert(text.to_string(), anchors.clone());
    Some(anchors)
}

/// The leaf's subject common name.
pub fn common_name(leaf_der: &[u8]) -> Result<String, X509AuthError> {
    common_name_of(&load(leaf_der)?)
}

fn common_name_of(leaf: &X509) -> Result<String, X509AuthError> {
    let cn = leaf
        .subject_name()
        .entries_by_nid(Nid::COMMONNAME)
        .next()
        .ok_or(X509AuthError::CommonNameMismatch)?;
    // Byte-exact: a CN with an embedded NUL must not compare equal to a truncated id.
    String::from_utf8(cn.data().as_slice().to_vec()).map_err(|_| X509AuthError::Unparsable)
}

/// Verifies `leaf` (parsed) with the rest of its chain (`rest`, DER) up to one of `anchors`.
/// Intermediate anchors are allowed (a group may enroll an intermediate CA), validity is
/// checked at the current time.
fn verify_chain(
    leaf: &X509,
    rest: &[Vec<u8>],
    anchors: &[Option<X509>],
) -> Result<(), X509AuthError> {
    let rest = rest
        .iter()
        .map(|c| load(c))
        .collect::<Result<Vec<_>, _>>()?;
    let anchors = anchors
        .iter()
        .map(|a| a.clone().ok_or(X509AuthError::Unparsable))
        .collect::<Result<Vec<_>, _>>()?;
    let refused = match openssl_verify(leaf, &rest, &anchors, false)? {
        Outcome::Verified(_) => return Ok(()),
        Outcome::Refused(result) => result,
    };
    if refused.as_raw() != UNHANDLED_CRITICAL_EXTENSION {
        return Err(verification(refused));
    }
    // OpenSSL stops at the first error, so the checks after the criticality one have not run:
    // verify again with only that check skipped, then judge criticality here for exactly the
    // certificates OpenSSL built the path from.
    let path = match openssl_verify(leaf, &rest, &anchors, true)? {
        Outcome::Verified(path) if !path.is_empty() => path,
        Outcome::Verified(_) => {
            return Err(X509AuthError::Verification(
                "the verifier returned no certification path".into(),
            ))
        }
        Outcome::Refused(result) => return Err(verification(result)),
    };
    for cert in &path {
        let verdict = critical_extensions::classify(cert).map_err(|_| X509AuthError::Unparsable)?;
        if let critical_extensions::CriticalExtensions::Unknown(oid) = verdict {
            let subject = load(cert)
                .map(|c| name_string(c.subject_name()))
                .unwrap_or_default();
            return Err(X509AuthError::UnhandledCriticalExtension {
                subject,
                oid: oid.to_string(),
            });
        }
    }
    Ok(())
}

fn verification(result: X509VerifyResult) -> X509AuthError {
    let reason = result.error_string().to_string();
    if NO_PATH_TO_ANCHOR.contains(&result.as_raw()) {
        X509AuthError::Untrusted(reason)
    } else {
        X509AuthError::Verification(reason)
    }
}

/// What one OpenSSL verification concluded.
enum Outcome {
    /// The path OpenSSL built (DER, leaf first, up to the anchor).
    Verified(Vec<Vec<u8>>),
    /// OpenSSL's first error.
    Refused(X509VerifyResult),
}

/// One OpenSSL verification. `ignore_critical` skips only the unknown-critical-extension check;
/// only [`verify_chain`] sets it, and it then checks criticality itself.
fn openssl_verify(
    leaf: &X509,
    rest: &[X509],
    anchors: &[X509],
    ignore_critical: bool,
) -> Result<Outcome, X509AuthError> {
    let err = |e: openssl::error::ErrorStack| X509AuthError::Verification(e.to_string());
    let mut store = X509StoreBuilder::new().map_err(err)?;
    for a in anchors {
        store.add_cert(a.clone()).map_err(err)?;
    }
    let mut flags = X509VerifyFlags::PARTIAL_CHAIN;
    if ignore_critical {
        flags |= X509VerifyFlags::IGNORE_CRITICAL;
    }
    store.set_flags(flags).map_err(err)?;
    let store = store.build();
    let mut untrusted = Stack::new().map_err(err)?;
    for c in rest {
        untrusted.push(c.clone()).map_err(err)?;
    }
    let mut ctx = X509StoreContext::new().map_err(err)?;
    ctx.init(&store, leaf, &untrusted, |c| {
        if !c.verify_cert()? {
            return Ok(Outcome::Refused(c.error()));
        }
        let mut path = Vec::new();
        for cert in c.chain().into_iter().flatten() {
            path.push(cert.to_der()?);
        }
        Ok(Outcome::Verified(path))
    })
    .map_err(err)
}

/// The presented leaf (DER, and parsed once), once it is fit to be a device's: present, CN
/// equal to the registration id, and an end-entity certificate for client authentication.
fn device_leaf<'c>(
    chain: &'c [Vec<u8>],
    registration_id: &str,
) -> Result<(&'c Vec<u8>, X509), X509AuthError> {
    let der = chain.first().ok_or(X509AuthError::NoCertificate)?;
    let leaf = load(der)?;
    if common_name_of(&leaf)? != registration_id {
        return Err(X509AuthError::CommonNameMismatch);
    }
    check_device_certificate(der)?;
    Ok((der, leaf))
}

/// Individual enrollment: the presented leaf must be one of the enrolled certificates, valid now,
/// with CN equal to the registration id.
pub fn verify_individual(
    chain: &[Vec<u8>],
    enrolled: &[&str],
    registration_id: &str,
) -> Result<(), X509AuthError> {
    let (leaf_der, leaf) = device_leaf(chain, registration_id)?;
    let mut anchors = Vec::new();
    let mut enrolled_here = false;
    for text in enrolled {
        if let Some(a) = anchors_of(text) {
            if let (Some(der), Some(parsed)) = (a.der.first(), a.parsed.first()) {
                enrolled_here |= der == leaf_der;
                anchors.push(parsed.clone());
            }
        }
    }
    if !enrolled_here {
        return Err(X509AuthError::NotEnrolled);
    }
    verify_chain(&leaf, &[], &anchors)
}

/// Group enrollment: the chain must verify up to one of the group's signing certificates, and the
/// leaf's CN must equal the registration id.
pub fn verify_group(
    chain: &[Vec<u8>],
    signing: &[&str],
    registration_id: &str,
) -> Result<(), X509AuthError> {
    let (_, leaf) = device_leaf(chain, registration_id)?;
    let mut anchors = Vec::new();
    for text in signing {
        if let Some(a) = anchors_of(text) {
            anchors.extend(a.parsed.iter().cloned());
        }
    }
    verify_chain(&leaf, &chain[1..], &anchors)
}

impl X509AuthError {
    /// How much a failure says about the device's own enrollment: a chain that simply leads
    /// to another CA says nothing, any other failure (expired, bad signature, not a client
    /// certificate...) concerns a group whose CA the chain does reach, or the leaf itself.
    fn relevance(&self) -> u8 {
        match self {
            X509AuthError::Untrusted(_) => 0,
            _ => 1,
        }
    }
}

/// Tries each group's signing certificates (`groups[i]`) in order and returns the index of the
/// first that accepts the chain. When none does, the most relevant failure (see
/// [`X509AuthError`]'s ranking: the group whose CA actually issued the chain rather than the
/// last one tried), or `None` when there is no group.
pub fn verify_against_groups(
    chain: &[Vec<u8>],
    groups: &[Vec<&str>],
    registration_id: &str,
) -> Result<usize, Option<X509AuthError>> {
    let mut best: Option<X509AuthError> = None;
    for (i, signing) in groups.iter().enumerate() {
        match verify_group(chain, signing, registration_id) {
            Ok(()) => return Ok(i),
            Err(e) => {
                if best.as_ref().is_none_or(|b| e.relevance() > b.relevance()) {
                    best = Some(e);
                }
            }
        }
    }
    Err(best)
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
        "sha1Thumbprint": sha1.map(hex::encode_upper),
        "sha256Thumbprint": sha256.map(hex::encode_upper),
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

/// Checks the TLS client chain against enrolled certificates.
pub(crate) struct X509Authenticator;

/// certificateInfo of the verified leaf.
fn leaf_info(request: &DeviceRequest) -> Value {
    request
        .chain
        .first()
        .map(|d| certificate_info(d))
        .unwrap_or(Value::Null)
}

impl Authenticator for X509Authenticator {
    fn kind(&self) -> AttestationKind {
        AttestationKind::X509
    }

    fn individual(
        &self,
        _ctx: &AuthContext<'_>,
        request: &DeviceRequest,
        enrollment: &IndividualEnrollment,
    ) -> Result<Section, AuthError> {
        let enrolled = enrollment
            .attestation
            .x509
            .as_ref()
            .and_then(|x| x.client_certificates.as_ref())
            .map(|c| c.texts())
            .unwrap_or_default();
        verify_individual(&request.chain, &enrolled, &request.registration_id)
            .map_err(AuthError::refused)?;
        Ok(Section::X509 {
            leaf_info: leaf_info(request),
            signing_info: None,
        })
    }

    fn presents_group_credentials(&self, request: &DeviceRequest) -> bool {
        !request.chain.is_empty()
    }

    fn group(
        &self,
        _ctx: &AuthContext<'_>,
        request: &DeviceRequest,
        groups: &[EnrollmentGroup],
    ) -> Result<(usize, Section), AuthError> {
        let signing: Vec<Vec<&str>> = groups
            .iter()
            .map(|g| {
                g.attestation
                    .x509
                    .as_ref()
                    .and_then(|x| x.signing_certificates.as_ref())
                    .map(|c| c.texts())
                    .unwrap_or_default()
            })
            .collect();
        let idx = verify_against_groups(&request.chain, &signing, &request.registration_id)
            .map_err(|e| match e {
                Some(e) => AuthError::refused(e),
                None => AuthError::refused("no enrollment group accepts this certificate"),
            })?;
        let signing_info = signing
            .get(idx)
            .and_then(|s| s.first())
            .and_then(|t| anchors_of(t))
            .and_then(|a| a.first_info.clone());
        Ok((
            idx,
            Section::X509 {
                leaf_info: leaf_info(request),
                signing_info,
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::asn1::{Asn1Object, Asn1OctetString, Asn1Time};
    use openssl::bn::BigNum;
    use openssl::ec::{EcGroup, EcKey};
    use openssl::hash::MessageDigest;
    use openssl::pkey::{PKey, Private};
    use openssl::x509::extension::{BasicConstraints, KeyUsage};
    use openssl::x509::{X509Builder, X509Extension, X509NameBuilder};

    const OPEN_DICE_INPUT: &str = "1.3.6.1.4.1.11129.2.1.24";
    const UNKNOWN: &str = "1.2.3.4.5.6";

    struct Issued {
        cert: X509,
        key: PKey<Private>,
    }

    fn key() -> PKey<Private> {
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
        PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap()
    }

    /// A certificate for `cn` signed by `issuer` (self-signed when `None`), CA or leaf, with
    /// extra extensions given as (OID, critical).
    fn issue(cn: &str, issuer: Option<&Issued>, ca: bool, extra: &[(&str, bool)]) -> Issued {
        let key = key();
        let mut name = X509NameBuilder::new().unwrap();
        name.append_entry_by_nid(Nid::COMMONNAME, cn).unwrap();
        let name = name.build();
        let mut b = X509Builder::new().unwrap();
        b.set_version(2).unwrap();
        let serial = BigNum::from_u32(rand::random::<u32>() >> 1)
            .unwrap()
            .to_asn1_integer()
            .unwrap();
        b.set_serial_number(&serial).unwrap();
        b.set_subject_name(&name).unwrap();
        b.set_issuer_name(issuer.map_or(&name, |i| i.cert.subject_name()))
            .unwrap();
        b.set_pubkey(&key).unwrap();
        b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
            .unwrap();
        b.set_not_after(&Asn1Time::days_from_now(30).unwrap())
            .unwrap();
        if ca {
            b.append_extension(BasicConstraints::new().critical().ca().build().unwrap())
                .unwrap();
            b.append_extension(KeyUsage::new().critical().key_cert_sign().build().unwrap())
                .unwrap();
        }
        for (oid, critical) in extra {
            let oid = Asn1Object::from_str(oid).unwrap();
            // An empty SEQUENCE: the content is irrelevant to path validation.
            let value = Asn1OctetString::new_from_bytes(&[0x30, 0x00]).unwrap();
            b.append_extension(X509Extension::new_from_der(&oid, *critical, &value).unwrap())
                .unwrap();
        }
        let signer = issuer.map_or(&key, |i| &i.key);
        b.sign(signer, MessageDigest::sha256()).unwrap();
        Issued {
            cert: b.build(),
            key,
        }
    }

    /// root <- intermediate (with `extra`) <- leaf "device-1"; returns (chain DER, root PEM).
    fn dice_like_chain(extra: &[(&str, bool)]) -> (Vec<Vec<u8>>, String) {
        let root = issue("Test Root", None, true, &[]);
        let intermediate = issue("Test CDI", Some(&root), true, extra);
        let leaf = issue("device-1", Some(&intermediate), false, &[]);
        let chain = [&leaf, &intermediate, &root]
            .iter()
            .map(|c| c.cert.to_der().unwrap())
            .collect();
        let pem = String::from_utf8(root.cert.to_pem().unwrap()).unwrap();
        (chain, pem)
    }

    #[test]
    fn each_dice_extension_may_be_critical() {
        for oid in [
            OPEN_DICE_INPUT,
            "2.23.133.5.4.1",
            "2.23.133.5.4.5",
            "2.23.133.5.4.4",
        ] {
            let (chain, root) = dice_like_chain(&[(oid, true)]);
            assert_eq!(
                verify_group(&chain, &[root.as_str()], "device-1"),
                Ok(()),
                "{oid}"
            );
        }
        // All of them at once, as a certificate following both profiles could carry.
        let oids: Vec<String> = critical_extensions::DICE_EXTENSIONS
            .iter()
            .map(|o| o.to_string())
            .collect();
        let all: Vec<(&str, bool)> = oids.iter().map(|o| (o.as_str(), true)).collect();
        let (chain, root) = dice_like_chain(&all);
        assert_eq!(verify_group(&chain, &[root.as_str()], "device-1"), Ok(()));
    }

    #[test]
    fn plain_openssl_refuses_the_dice_chain_which_is_why_the_check_exists() {
        let (chain, root) = dice_like_chain(&[(OPEN_DICE_INPUT, true)]);
        let anchors: Vec<X509> = parse_certificates(&root)
            .unwrap()
            .iter()
            .map(|d| load(d).unwrap())
            .collect();
        let rest: Vec<X509> = chain[1..].iter().map(|d| load(d).unwrap()).collect();
        match openssl_verify(&load(&chain[0]).unwrap(), &rest, &anchors, false).unwrap() {
            Outcome::Refused(r) => assert_eq!(r.as_raw(), UNHANDLED_CRITICAL_EXTENSION),
            Outcome::Verified(_) => panic!("OpenSSL accepted an unknown critical extension"),
        }
    }

    /// The parsed-anchor cache is keyed by the certificate text, so a group whose signing
    /// certificate changes verifies against the new one at once, and the old text, still
    /// cached, keeps answering for itself only.
    #[test]
    fn a_changed_signing_certificate_takes_effect_at_once() {
        let (chain_a, root_a) = dice_like_chain(&[]);
        let (chain_b, root_b) = dice_like_chain(&[]);
        assert_eq!(
            verify_group(&chain_a, &[root_a.as_str()], "device-1"),
            Ok(())
        );
        // "Updated" to root_b: chain_a no longer verifies, chain_b does.
        assert!(verify_group(&chain_a, &[root_b.as_str()], "device-1").is_err());
        assert_eq!(
            verify_group(&chain_b, &[root_b.as_str()], "device-1"),
            Ok(())
        );
        // Back to root_a (cached): the same answers as the first time.
        assert_eq!(
            verify_group(&chain_a, &[root_a.as_str()], "device-1"),
            Ok(())
        );
        assert!(verify_group(&chain_b, &[root_a.as_str()], "device-1").is_err());
        let cached = anchors_of(&root_a).unwrap();
        assert!(
            Arc::ptr_eq(&cached, &anchors_of(&root_a).unwrap()),
            "parsed once"
        );
        assert_eq!(cached.der, parse_certificates(&root_a).unwrap());
    }

    #[test]
    fn other_unknown_critical_extensions_are_still_refused() {
        for extra in [
            vec![(UNKNOWN, true)],
            // A DICE extension next to the unknown one does not excuse it.
            vec![(OPEN_DICE_INPUT, true), (UNKNOWN, true)],
        ] {
            let (chain, root) = dice_like_chain(&extra);
            let e = verify_group(&chain, &[root.as_str()], "device-1").unwrap_err();
            assert_eq!(
                e,
                X509AuthError::UnhandledCriticalExtension {
                    subject: "CN=Test CDI".into(),
                    oid: UNKNOWN.into(),
                },
                "{extra:?}"
            );
            assert!(e.to_string().contains(UNKNOWN), "{e}");
        }
        // On the leaf too (the leaf is part of the path that is checked).
        let root = issue("Test Root", None, true, &[]);
        let leaf = issue("device-1", Some(&root), false, &[(UNKNOWN, true)]);
        let root_pem = String::from_utf8(root.cert.to_pem().unwrap()).unwrap();
        let e = verify_group(
            &[leaf.cert.to_der().unwrap(), root.cert.to_der().unwrap()],
            &[root_pem.as_str()],
            "device-1",
        )
        .unwrap_err();
        assert!(
            matches!(e, X509AuthError::UnhandledCriticalExtension { ref subject, .. } if subject == "CN=device-1"),
            "{e:?}"
        );
        // Non-critical, an unknown extension is fine.
        let (chain, root) = dice_like_chain(&[(UNKNOWN, false)]);
        assert_eq!(verify_group(&chain, &[root.as_str()], "device-1"), Ok(()));
    }

    #[test]
    fn dice_chains_still_get_every_other_check() {
        let (chain, _) = dice_like_chain(&[(OPEN_DICE_INPUT, true)]);
        // Another root: not trusted.
        let (_, other_root) = dice_like_chain(&[]);
        let e = verify_group(&chain, &[other_root.as_str()], "device-1").unwrap_err();
        // Same name as the real root: OpenSSL finds it by name and the signature fails.
        assert!(matches!(e, X509AuthError::Verification(_)), "{e:?}");
        // A forged intermediate: the right issuer name, another key.
        let root = issue("Test Root", None, true, &[]);
        let impostor = issue("Test Root", None, true, &[]);
        let cdi = issue(
            "Test CDI",
            Some(&impostor),
            true,
            &[(OPEN_DICE_INPUT, true)],
        );
        let leaf = issue("device-1", Some(&cdi), false, &[]);
        let root_pem = String::from_utf8(root.cert.to_pem().unwrap()).unwrap();
        let forged = vec![leaf.cert.to_der().unwrap(), cdi.cert.to_der().unwrap()];
        let e = verify_group(&forged, &[root_pem.as_str()], "device-1").unwrap_err();
        assert!(matches!(e, X509AuthError::Verification(_)), "{e:?}");
        // A non-CA certificate carrying the DICE extension cannot issue.
        let root = issue("Test Root", None, true, &[]);
        let not_ca = issue("Test CDI", Some(&root), false, &[(OPEN_DICE_INPUT, true)]);
        let leaf = issue("device-1", Some(&not_ca), false, &[]);
        let root_pem = String::from_utf8(root.cert.to_pem().unwrap()).unwrap();
        let chain = vec![leaf.cert.to_der().unwrap(), not_ca.cert.to_der().unwrap()];
        let e = verify_group(&chain, &[root_pem.as_str()], "device-1").unwrap_err();
        assert!(matches!(e, X509AuthError::Verification(_)), "{e:?}");
        // And the registration id must still match the leaf.
        let (chain, root) = dice_like_chain(&[(OPEN_DICE_INPUT, true)]);
        assert_eq!(
            verify_group(&chain, &[root.as_str()], "device-2"),
            Err(X509AuthError::CommonNameMismatch)
        );
    }

    fn pem(c: &Issued) -> String {
        String::from_utf8(c.cert.to_pem().unwrap()).unwrap()
    }

    fn der(c: &Issued) -> Vec<u8> {
        c.cert.to_der().unwrap()
    }

    /// A leaf for `cn` under `issuer` with the given extendedKeyUsage (None: no extension).
    fn leaf_with_eku(cn: &str, issuer: &Issued, eku: Option<&str>) -> Issued {
        use openssl::x509::extension::ExtendedKeyUsage;
        let mut leaf = issue(cn, Some(issuer), false, &[]);
        if let Some(eku) = eku {
            // Rebuild with the extension: the helper signs once, so issue a fresh one here.
            let key = key();
            let mut name = X509NameBuilder::new().unwrap();
            name.append_entry_by_nid(Nid::COMMONNAME, cn).unwrap();
            let name = name.build();
            let mut b = X509Builder::new().unwrap();
            b.set_version(2).unwrap();
            let serial = BigNum::from_u32(7).unwrap().to_asn1_integer().unwrap();
            b.set_serial_number(&serial).unwrap();
            b.set_subject_name(&name).unwrap();
            b.set_issuer_name(issuer.cert.subject_name()).unwrap();
            b.set_pubkey(&key).unwrap();
            b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
                .unwrap();
            b.set_not_after(&Asn1Time::days_from_now(30).unwrap())
                .unwrap();
            let mut e = ExtendedKeyUsage::new();
            match eku {
                "serverAuth" => e.server_auth(),
                "clientAuth" => e.client_auth(),
                "both" => e.server_auth().client_auth(),
                other => e.other(other),
            };
            b.append_extension(e.build().unwrap()).unwrap();
            b.sign(&issuer.key, MessageDigest::sha256()).unwrap();
            leaf = Issued {
                cert: b.build(),
                key,
            };
        }
        leaf
    }

    #[test]
    fn a_device_certificate_must_be_an_end_entity_for_client_authentication() {
        let root = issue("Test Root", None, true, &[]);
        let root_pem = pem(&root);
        let verify = |leaf: &Issued| {
            verify_group(&[der(leaf), der(&root)], &[root_pem.as_str()], "device-1")
        };
        // Accepted: no EKU, clientAuth, clientAuth among others.
        for eku in [None, Some("clientAuth"), Some("both")] {
            assert_eq!(
                verify(&leaf_with_eku("device-1", &root, eku)),
                Ok(()),
                "{eku:?}"
            );
        }
        // A server-only certificate and one for another purpose are refused.
        for eku in ["serverAuth", "1.3.6.1.5.5.7.3.4"] {
            assert_eq!(
                verify(&leaf_with_eku("device-1", &root, Some(eku))),
                Err(X509AuthError::NotForClientAuth),
                "{eku}"
            );
        }
        // A CA certificate presented as the device's own is refused, individually too.
        let ca_leaf = issue("device-1", Some(&root), true, &[]);
        assert_eq!(verify(&ca_leaf), Err(X509AuthError::LeafIsCa));
        let self_signed_ca = issue("device-1", None, true, &[]);
        assert_eq!(
            verify_individual(
                &[der(&self_signed_ca)],
                &[pem(&self_signed_ca).as_str()],
                "device-1"
            ),
            Err(X509AuthError::LeafIsCa)
        );
        assert!(X509AuthError::NotForClientAuth
            .to_string()
            .contains("clientAuth"));
    }

    #[test]
    fn with_several_groups_the_failure_of_the_issuing_ca_is_reported() {
        // root <- not-a-CA "intermediate" <- leaf: the chain reaches `root` but is invalid.
        let root = issue("Test Root", None, true, &[]);
        let not_ca = issue("Test CDI", Some(&root), false, &[]);
        let leaf = issue("device-1", Some(&not_ca), false, &[]);
        let chain = vec![der(&leaf), der(&not_ca)];
        let other = issue("Other Root", None, true, &[]);
        let (root_pem, other_pem) = (pem(&root), pem(&other));
        for groups in [
            vec![vec![root_pem.as_str()], vec![other_pem.as_str()]],
            vec![vec![other_pem.as_str()], vec![root_pem.as_str()]],
        ] {
            let e = verify_against_groups(&chain, &groups, "device-1").unwrap_err();
            assert!(matches!(e, Some(X509AuthError::Verification(_))), "{e:?}");
        }
        // Only unrelated groups: the chain is simply not theirs.
        let e = verify_against_groups(&chain, &[vec![other_pem.as_str()]], "device-1");
        assert!(matches!(e, Err(Some(X509AuthError::Untrusted(_)))), "{e:?}");
        assert_eq!(verify_against_groups(&chain, &[], "device-1"), Err(None));
        // The accepting group's index.
        let good = issue("device-1", Some(&root), false, &[]);
        let groups = vec![vec![other_pem.as_str()], vec![root_pem.as_str()]];
        assert_eq!(
            verify_against_groups(&[der(&good)], &groups, "device-1"),
            Ok(1)
        );
    }
}
