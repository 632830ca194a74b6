//! The X.509 interface: certificate chain from token objects or a PEM file, signatures with the
//! token's private key, common name from the leaf. The private key never leaves the token.

use crate::config::CertSource;
use crate::error::{Pkcs11Error, Result};
use crate::session::TokenSession;
use crate::uri::Pkcs11Uri;
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsPssParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use der::{DecodePem, EncodePem, Tag, Tagged};
use hsm_plugin_sdk::SignAlgorithm;
use x509_cert::der::{Decode, Encode};
use x509_cert::Certificate;

/// DER of the named-curve OID of P-256 (prime256v1), as held in `CKA_EC_PARAMS`.
pub const P256_EC_PARAMS: [u8; 10] = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

/// DigestInfo prefix for SHA-256 (RFC 8017 §9.2 note 1): `CKM_RSA_PKCS` signs raw bytes, so
/// PKCS#1 v1.5 over a precomputed digest needs it prepended.
const SHA256_DIGEST_INFO: [u8; 19] = [
    0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05,
    0x00, 0x04, 0x20,
];

/// What kind of private key the token holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyKind {
    /// ECDSA on NIST P-256.
    EcP256,
    /// ECDSA on another curve (not supported for signing here).
    EcOther,
    /// RSA.
    Rsa,
}

/// A private key in the token, looked up once.
#[derive(Clone, Copy, Debug)]
pub struct TokenKey {
    handle: ObjectHandle,
    kind: KeyKind,
}

impl TokenKey {
    /// Finds the private key named by `uri` and learns its type.
    pub fn find(session: &TokenSession, uri: &Pkcs11Uri) -> Result<Self> {
        let handle = session.find_one(ObjectClass::PRIVATE_KEY, uri, "private key")?;
        let attrs = session
            .session()
            .get_attributes(handle, &[AttributeType::KeyType])
            .map_err(|e| crate::error::from_cryptoki("reading the key type", e))?;
        let key_type = attrs.into_iter().find_map(|a| match a {
            Attribute::KeyType(t) => Some(t),
            _ => None,
        });
        let kind = match key_type {
            Some(t) if t == KeyType::RSA => KeyKind::Rsa,
            Some(t) if t == KeyType::EC => {
                let params = session.attribute_bytes(handle, AttributeType::EcParams)?;
                if params == P256_EC_PARAMS {
                    KeyKind::EcP256
                } else {
                    KeyKind::EcOther
                }
            }
            Some(t) => {
                return Err(Pkcs11Error::not_supported(format!(
                    "the private key {} has key type {t}, expected EC or RSA",
                    uri.object_description()
                )))
            }
            None => return Err(Pkcs11Error::device("the token did not report the key type")),
        };
        Ok(Self { handle, kind })
    }

    /// The key's type.
    pub fn kind(&self) -> KeyKind {
        self.kind
    }

    /// The object handle.
    pub fn handle(&self) -> ObjectHandle {
        self.handle
    }

    /// Signs a precomputed digest. ECDSA comes back as a DER `ECDSA-Sig-Value`.
    pub fn sign_digest(
        &self,
        session: &TokenSession,
        algorithm: SignAlgorithm,
        digest: &[u8],
    ) -> Result<Vec<u8>> {
        let want = |kind: KeyKind, name: &str| -> Result<()> {
            if self.kind == kind {
                Ok(())
            } else {
                Err(Pkcs11Error::invalid_argument(format!(
                    "{name} was asked but the token key is {:?}",
                    self.kind
                )))
            }
        };
        let check_len = |n: usize| -> Result<()> {
            if digest.len() == n {
                Ok(())
            } else {
                Err(Pkcs11Error::invalid_argument(format!(
                    "the digest must be {n} bytes, got {}",
                    digest.len()
                )))
            }
        };
        let sign = |mechanism: &Mechanism, data: &[u8]| {
            session
                .session()
                .sign(mechanism, self.handle, data)
                .map_err(|e| crate::error::from_cryptoki("signing with the token key", e))
        };
        match algorithm {
            SignAlgorithm::EcdsaP256Sha256 => {
                want(KeyKind::EcP256, "ECDSA P-256")?;
                check_len(32)?;
                let raw = sign(&Mechanism::Ecdsa, digest)?;
                raw_ecdsa_to_der(&raw)
            }
            SignAlgorithm::EcdsaP384Sha384 => Err(Pkcs11Error::not_supported(
                "ECDSA P-384 is not supported by the PKCS#11 plugin",
            )),
            SignAlgorithm::RsaPkcs1Sha256 => {
                want(KeyKind::Rsa, "RSA PKCS#1 v1.5")?;
                check_len(32)?;
                let mut data = SHA256_DIGEST_INFO.to_vec();
                data.extend_from_slice(digest);
                sign(&Mechanism::RsaPkcs, &data)
            }
            SignAlgorithm::RsaPssSha256 => {
                want(KeyKind::Rsa, "RSA-PSS")?;
                check_len(32)?;
                let params = PkcsPssParams {
                    hash_alg: MechanismType::SHA256,
                    mgf: PkcsMgfType::MGF1_SHA256,
                    s_len: 32u64.into(),
                };
                sign(&Mechanism::RsaPkcsPss(params), digest)
            }
            // An algorithm a later ABI minor adds: this plugin does not know its mechanism.
            other => Err(Pkcs11Error::not_supported(format!(
                "{other:?} is not supported by the PKCS#11 plugin"
            ))),
        }
    }
}

/// Converts a PKCS#11 ECDSA P-256 signature into DER. `CKM_ECDSA` specifies r||s (64 bytes),
/// but some modules hand back DER already (tpm2-pkcs11 issue #277); that is accepted as is
/// once it parses.
pub fn raw_ecdsa_to_der(raw: &[u8]) -> Result<Vec<u8>> {
    let sig = if raw.len() == 64 {
        p256::ecdsa::Signature::from_slice(raw)
    } else {
        p256::ecdsa::Signature::from_der(raw)
    }
    .map_err(|_| {
        Pkcs11Error::device(format!(
            "the token returned a malformed ECDSA signature of {} bytes",
            raw.len()
        ))
    })?;
    Ok(sig.to_der().as_bytes().to_vec())
}

/// Reads the certificate chain (leaf first) and returns the parsed certificates.
pub fn load_chain(session: &TokenSession, source: &CertSource) -> Result<Vec<Certificate>> {
    match source {
        CertSource::Token(uris) => uris
            .iter()
            .map(|uri| {
                let handle = session.find_one(ObjectClass::CERTIFICATE, uri, "certificate")?;
                let der = session.attribute_bytes(handle, AttributeType::Value)?;
                Certificate::from_der(&der).map_err(|e| {
                    Pkcs11Error::invalid_argument(format!(
                        "the certificate object {} is not a valid X.509 certificate: {e}",
                        uri.object_description()
                    ))
                })
            })
            .collect(),
        CertSource::File(path) => {
            let pem = std::fs::read(path).map_err(|e| {
                Pkcs11Error::not_found(format!(
                    "cannot read the certificate file {}: {e}",
                    path.display()
                ))
            })?;
            let chain = Certificate::load_pem_chain(&pem).map_err(|e| {
                Pkcs11Error::invalid_argument(format!(
                    "the certificate file {} is not a PEM certificate chain: {e}",
                    path.display()
                ))
            })?;
            if chain.is_empty() {
                return Err(Pkcs11Error::invalid_argument(format!(
                    "the certificate file {} holds no certificate",
                    path.display()
                )));
            }
            Ok(chain)
        }
    }
}

/// PEM text of a chain, leaf first.
pub fn chain_to_pem(chain: &[Certificate]) -> Result<String> {
    let mut out = String::new();
    for cert in chain {
        out.push_str(
            &cert
                .to_pem(der::pem::LineEnding::LF)
                .map_err(|e| Pkcs11Error::internal(format!("PEM encoding failed: {e}")))?,
        );
    }
    Ok(out)
}

/// The subject common name of a certificate (the DPS registration id).
pub fn common_name(cert: &Certificate) -> Result<String> {
    for rdn in cert.tbs_certificate.subject.0.iter() {
        for atv in rdn.0.iter() {
            if atv.oid != const_oid::db::rfc4519::CN {
                continue;
            }
            return match atv.value.tag() {
                Tag::Utf8String | Tag::PrintableString | Tag::Ia5String => {
                    std::str::from_utf8(atv.value.value())
                        .map(str::to_string)
                        .map_err(|_| {
                            Pkcs11Error::invalid_argument("the leaf's common name is not UTF-8")
                        })
                }
                other => Err(Pkcs11Error::not_supported(format!(
                    "the leaf's common name is encoded as {other}, expected a UTF-8 or printable string"
                ))),
            };
        }
    }
    Err(Pkcs11Error::not_found(
        "the leaf certificate has no common name",
    ))
}

/// Parses one PEM certificate (used by tools and tests).
pub fn certificate_from_pem(pem: &[u8]) -> Result<Certificate> {
    Certificate::from_pem(pem)
        .map_err(|e| Pkcs11Error::invalid_argument(format!("not a PEM certificate: {e}")))
}

/// DER bytes of a certificate.
pub fn certificate_der(cert: &Certificate) -> Result<Vec<u8>> {
    cert.to_der()
        .map_err(|e| Pkcs11Error::internal(format!("DER encoding failed: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_signature_becomes_der() {
        let mut raw = [0u8; 64];
        raw[31] = 1;
        raw[63] = 2;
        let der = raw_ecdsa_to_der(&raw).unwrap();
        assert_eq!(der, vec![0x30, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x02]);
        let e = raw_ecdsa_to_der(&raw[..10]).unwrap_err();
        assert_eq!(e.code(), crate::error::ErrorKind::Device);
        // r = 0 is not a valid signature scalar either.
        assert!(raw_ecdsa_to_der(&[0u8; 64]).is_err());
        // A module that already answers in DER is accepted unchanged.
        assert_eq!(raw_ecdsa_to_der(&der).unwrap(), der);
    }
}
