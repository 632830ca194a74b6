//! Operational certificate issuance: a register call that carries a `csr` (base64 of a DER
//! PKCS#10) on an enrollment with a [`CertificateIssuancePolicy`] gets a client certificate
//! from the emulator's dev issuing CA, returned as `registrationState.issuedCertificateChain`
//! (leaf, issuing CA). The service documentation ("Device certificate issuance in Azure Device
//! Registry") describes this flow; the field names are those public client code uses.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use der::Decode;
use openssl::nid::Nid;
use openssl::pkey::Id;
use openssl::x509::X509Req;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use x509_cert::request::CertReq;

use crate::model::CertificateIssuancePolicy;
use crate::pki::CertifiedKey;

/// The longest validity an issuance policy may ask for, in days.
pub const MAX_VALIDITY_DAYS: u32 = 3650;

/// The smallest RSA modulus a CSR may carry, in bits.
pub const MIN_RSA_BITS: u32 = 2048;

/// Why a CSR was refused, or the certificate could not be issued.
#[derive(Debug, thiserror::Error)]
pub enum IssuanceError {
    /// The request is unusable; the message says why (a 400 to the device).
    #[error("{0}")]
    BadCsr(String),
    /// The emulator could not load or create its issuing CA, or sign (a 500).
    #[error("certificate issuance failed: {0}")]
    Internal(String),
}

fn bad(msg: impl Into<String>) -> IssuanceError {
    IssuanceError::BadCsr(msg.into())
}

/// The dev issuing CA, loaded or created once per process under a lock so that two first
/// requests do not each create (and overwrite) one.
#[derive(Debug, Default)]
pub(crate) struct IssuingCa(Mutex<Option<Arc<CertifiedKey>>>);

impl IssuingCa {
    /// The issuing CA, loaded from `state_dir` or created there on first need.
    pub(crate) fn get(&self, state_dir: &Path) -> Result<Arc<CertifiedKey>, IssuanceError> {
        let mut slot = self
            .0
            .lock()
            .map_err(|_| IssuanceError::Internal("the issuing CA lock is poisoned".into()))?;
        if let Some(ca) = slot.as_ref() {
            return Ok(ca.clone());
        }
        let ca = Arc::new(
            crate::store::state_dir::load_or_create_issuing_ca(state_dir)
                .map_err(|e| IssuanceError::Internal(e.to_string()))?,
        );
        *slot = Some(ca.clone());
        Ok(ca)
    }
}

/// Checks a CSR (base64 DER PKCS#10): it parses, its self-signature verifies, its key is
/// P-256 or RSA of at least [`MIN_RSA_BITS`], and its subject CN is `registration_id`.
/// Returns the parsed request.
pub fn check_csr(csr_b64: &str, registration_id: &str) -> Result<CertReq, IssuanceError> {
    let der = B64.decode(csr_b64.trim()).map_err(|_| {
        bad("csr is not base64 (it must be base64 of a DER PKCS#10 request, without PEM headers)")
    })?;
    let req = CertReq::from_der(&der).map_err(|e| {
        bad(format!(
            "csr is not a DER PKCS#10 certification request: {e}"
        ))
    })?;
    // The signature and key checks through OpenSSL, which verifies both RSA and ECDSA.
    let ossl = X509Req::from_der(&der)
        .map_err(|_| bad("csr is not a DER PKCS#10 certification request"))?;
    let key = ossl
        .public_key()
        .map_err(|_| bad("the csr's public key cannot be read"))?;
    match key.id() {
        Id::EC => {
            let curve = key.ec_key().ok().and_then(|k| k.group().curve_name());
            if curve != Some(Nid::X9_62_PRIME256V1) {
                return Err(bad("the csr's EC key is not on P-256 (prime256v1)"));
            }
        }
        Id::RSA => {
            if key.bits() < MIN_RSA_BITS {
                return Err(bad(format!(
                    "the csr's RSA key has {} bits; at least {MIN_RSA_BITS} are required",
                    key.bits()
                )));
            }
        }
        _ => return Err(bad("the csr's key is neither P-256 nor RSA")),
    }
    if !ossl.verify(&key).unwrap_or(false) {
        return Err(bad(
            "the csr's signature does not verify with its public key",
        ));
    }
    let cn = common_name(&req)?;
    if cn != registration_id {
        return Err(bad(format!(
            "the csr's subject CN {cn:?} is not the registration id {registration_id:?}"
        )));
    }
    Ok(req)
}

/// The one CN of the request's subject.
fn common_name(req: &CertReq) -> Result<String, IssuanceError> {
    const CN: der::asn1::ObjectIdentifier = der::asn1::ObjectIdentifier::new_unwrap("2.5.4.3");
    let mut found = Vec::new();
    for rdn in req.info.subject.0.iter() {
        for atv in rdn.0.iter() {
            if atv.oid == CN {
                let s = der::asn1::Utf8StringRef::try_from(&atv.value)
                    .map(|s| s.as_str().to_string())
                    .or_else(|_| {
                        der::asn1::PrintableStringRef::try_from(&atv.value)
                            .map(|s| s.as_str().to_string())
                    })
                    .map_err(|_| bad("the csr's subject CN is not a UTF-8 or printable string"))?;
                found.push(s);
            }
        }
    }
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(bad("the csr's subject has no CN")),
        _ => Err(bad("the csr's subject has more than one CN")),
    }
}

/// Checks the CSR and issues its certificate: the chain as base64 DER, leaf then issuing CA.
pub(crate) fn issue(
    ca: &IssuingCa,
    state_dir: &Path,
    policy: &CertificateIssuancePolicy,
    csr_b64: &str,
    registration_id: &str,
) -> Result<Vec<String>, IssuanceError> {
    let req = check_csr(csr_b64, registration_id)?;
    let ca = ca.get(state_dir)?;
    let days = policy.validity_days.clamp(1, MAX_VALIDITY_DAYS);
    let leaf = ca
        .issue_client_cert_for(
            registration_id,
            req.info.public_key.clone(),
            Duration::from_secs(u64::from(days) * 86400),
        )
        .map_err(|e| IssuanceError::Internal(e.to_string()))?;
    Ok(vec![B64.encode(leaf), B64.encode(ca.cert_der())])
}

/// The emulated hub's check of a device that DPS issued an operational certificate to: the TLS
/// client chain verifies up to the emulator's issuing CA (signature, validity period, a
/// client-authentication end-entity leaf) and the leaf's CN is the device id.
///
/// The service: "The device authenticates with IoT Hub by presenting its full certificate
/// chain", and "Linked IoT hubs trust the issuing CA that ADR syncs from the policy"
/// (<https://learn.microsoft.com/azure/iot-hub/concept-certificate-issuance>,
/// <https://learn.microsoft.com/azure/iot-hub/concepts-certificate-policy-management>). The
/// emulator has one issuing CA for every enrollment with a policy, so it is that CA.
pub(crate) fn verify_issued_client(
    ca: &IssuingCa,
    state_dir: &Path,
    chain: &[Vec<u8>],
    device_id: &str,
) -> Result<(), String> {
    let ca = ca.get(state_dir).map_err(|e| e.to_string())?;
    let pem = ca.cert_pem();
    crate::auth::x509::verify_group(chain, &[pem.as_str()], device_id).map_err(|e| e.to_string())
}
