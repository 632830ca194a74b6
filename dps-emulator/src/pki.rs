//! A small P-256 PKI: the emulator's dev CA and server certificate, and the device certificates
//! tests and demos need. RustCrypto only, so the emulator carries one crypto stack for issuing.

use der::asn1::{Ia5String, OctetString};
use der::{pem::LineEnding, Decode, DecodePem, Encode, EncodePem};
use p256::ecdsa::{DerSignature, SigningKey};
use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use spki::{EncodePublicKey, ObjectIdentifier, SubjectPublicKeyInfoOwned};
use std::net::IpAddr;
use std::str::FromStr;
use std::time::{Duration, SystemTime};
use x509_cert::builder::{Builder, CertificateBuilder, Profile};
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{ExtendedKeyUsage, SubjectAltName};
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::time::{Time, Validity};
use x509_cert::Certificate;
use zeroize::Zeroizing;

use crate::error::{EmulatorError, Result};

const ID_KP_SERVER_AUTH: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.1");
const ID_KP_CLIENT_AUTH: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.2");

/// What a leaf certificate is for; decides its extended key usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeafUsage {
    /// A TLS server (the emulator itself).
    Server,
    /// A TLS client (a device authenticating with X.509).
    Client,
}

/// A certificate together with its P-256 private key.
pub struct CertifiedKey {
    cert: Certificate,
    cert_der: Vec<u8>,
    key: SigningKey,
}

impl std::fmt::Debug for CertifiedKey {
    // The key stays out of debug output on purpose.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertifiedKey")
            .field("subject", &self.subject())
            .finish_non_exhaustive()
    }
}

fn cert_err(e: impl std::fmt::Display) -> EmulatorError {
    EmulatorError::Certificate(e.to_string())
}

fn name_from_cn(cn: &str) -> Result<Name> {
    // Name::from_str parses RFC 4514 syntax; refuse characters that would change its meaning.
    if cn.is_empty()
        || cn
            .chars()
            .any(|c| ",+=\"\\<>;#".contains(c) || c.is_control())
    {
        return Err(cert_err(format!("unsupported common name {cn:?}")));
    }
    Name::from_str(&format!("CN={cn}")).map_err(cert_err)
}

fn random_serial() -> Result<SerialNumber> {
    let mut bytes = [0u8; 16];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut bytes);
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    SerialNumber::new(&bytes).map_err(cert_err)
}

fn validity(not_before: SystemTime, not_after: SystemTime) -> Result<Validity> {
    Ok(Validity {
        not_before: Time::try_from(not_before).map_err(cert_err)?,
        not_after: Time::try_from(not_after).map_err(cert_err)?,
    })
}

impl CertifiedKey {
    /// Creates a self-signed root CA valid from an hour ago for `lifetime`.
    pub fn new_root_ca(common_name: &str, lifetime: Duration) -> Result<Self> {
        let key = SigningKey::random(&mut rand_core::OsRng);
        let now = SystemTime::now();
        let v = validity(now - Duration::from_secs(3600), now + lifetime)?;
        let subject = name_from_cn(common_name)?;
        let spki = SubjectPublicKeyInfoOwned::from_key(*key.verifying_key()).map_err(cert_err)?;
        let builder =
            CertificateBuilder::new(Profile::Root, random_serial()?, v, subject, spki, &key)
                .map_err(cert_err)?;
        let cert = builder.build::<DerSignature>().map_err(cert_err)?;
        Self::assemble(cert, key)
    }

    /// Issues an intermediate CA certificate signed by this CA.
    pub fn issue_intermediate_ca(&self, common_name: &str, lifetime: Duration) -> Result<Self> {
        let key = SigningKey::random(&mut rand_core::OsRng);
        let now = SystemTime::now();
        let v = validity(now - Duration::from_secs(3600), now + lifetime)?;
        let profile = Profile::SubCA {
            issuer: self.cert.tbs_certificate.subject.clone(),
            path_len_constraint: Some(0),
        };
        let spki = SubjectPublicKeyInfoOwned::from_key(*key.verifying_key()).map_err(cert_err)?;
        let builder = CertificateBuilder::new(
            profile,
            random_serial()?,
            v,
            name_from_cn(common_name)?,
            spki,
            &self.key,
        )
        .map_err(cert_err)?;
        let cert = builder.build::<DerSignature>().map_err(cert_err)?;
        Self::assemble(cert, key)
    }

    /// Issues a leaf certificate valid from an hour ago for `lifetime`.
    pub fn issue_leaf(
        &self,
        common_name: &str,
        usage: LeafUsage,
        alt_names: &[String],
        lifetime: Duration,
    ) -> Result<Self> {
        let now = SystemTime::now();
        self.issue_leaf_valid(
            common_name,
            usage,
            alt_names,
            now - Duration::from_secs(3600),
            now + lifetime,
        )
    }

    /// Issues a leaf certificate with an explicit validity window (tests use it for expired
    /// certificates). `alt_names` are DNS names or IP addresses.
    pub fn issue_leaf_valid(
        &self,
        common_name: &str,
        usage: LeafUsage,
        alt_names: &[String],
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<Self> {
        let key = SigningKey::random(&mut rand_core::OsRng);
        let profile = Profile::Leaf {
            issuer: self.cert.tbs_certificate.subject.clone(),
            enable_key_agreement: false,
            enable_key_encipherment: false,
        };
        let spki = SubjectPublicKeyInfoOwned::from_key(*key.verifying_key()).map_err(cert_err)?;
        let mut builder = CertificateBuilder::new(
            profile,
            random_serial()?,
            validity(not_before, not_after)?,
            name_from_cn(common_name)?,
            spki,
            &self.key,
        )
        .map_err(cert_err)?;
        let eku = match usage {
            LeafUsage::Server => ID_KP_SERVER_AUTH,
            LeafUsage::Client => ID_KP_CLIENT_AUTH,
        };
        builder
            .add_extension(&ExtendedKeyUsage(vec![eku]))
            .map_err(cert_err)?;
        if !alt_names.is_empty() {
            let mut names = Vec::with_capacity(alt_names.len());
            for n in alt_names {
                names.push(match n.parse::<IpAddr>() {
                    Ok(IpAddr::V4(ip)) => GeneralName::IpAddress(
                        OctetString::new(ip.octets().to_vec()).map_err(cert_err)?,
                    ),
                    Ok(IpAddr::V6(ip)) => GeneralName::IpAddress(
                        OctetString::new(ip.octets().to_vec()).map_err(cert_err)?,
                    ),
                    Err(_) => GeneralName::DnsName(Ia5String::new(n).map_err(cert_err)?),
                });
            }
            builder
                .add_extension(&SubjectAltName(names))
                .map_err(cert_err)?;
        }
        let cert = builder.build::<DerSignature>().map_err(cert_err)?;
        Self::assemble(cert, key)
    }

    /// Issues a client-authentication leaf for a public key held elsewhere (a device's
    /// operational key, from its CSR), valid from an hour ago for `lifetime`; returns its DER.
    pub fn issue_client_cert_for(
        &self,
        common_name: &str,
        public_key: SubjectPublicKeyInfoOwned,
        lifetime: Duration,
    ) -> Result<Vec<u8>> {
        let now = SystemTime::now();
        let profile = Profile::Leaf {
            issuer: self.cert.tbs_certificate.subject.clone(),
            enable_key_agreement: false,
            enable_key_encipherment: false,
        };
        let mut builder = CertificateBuilder::new(
            profile,
            random_serial()?,
            validity(now - Duration::from_secs(3600), now + lifetime)?,
            name_from_cn(common_name)?,
            public_key,
            &self.key,
        )
        .map_err(cert_err)?;
        builder
            .add_extension(&ExtendedKeyUsage(vec![ID_KP_CLIENT_AUTH]))
            .map_err(cert_err)?;
        let cert = builder.build::<DerSignature>().map_err(cert_err)?;
        cert.to_der().map_err(cert_err)
    }

    fn assemble(cert: Certificate, key: SigningKey) -> Result<Self> {
        let cert_der = cert.to_der().map_err(cert_err)?;
        Ok(Self {
            cert,
            cert_der,
            key,
        })
    }

    /// Loads a certificate and its PKCS#8 private key from PEM text.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self> {
        let cert = Certificate::from_pem(cert_pem.as_bytes()).map_err(cert_err)?;
        // The key parse error is not echoed: it could quote key material.
        let key = SigningKey::from_pkcs8_pem(key_pem)
            .map_err(|_| cert_err("the private key is not a P-256 PKCS#8 PEM key"))?;
        let spki = key
            .verifying_key()
            .to_public_key_der()
            .map_err(|_| cert_err("cannot encode the public key"))?;
        let cert_spki = cert
            .tbs_certificate
            .subject_public_key_info
            .to_der()
            .map_err(cert_err)?;
        if spki.as_bytes() != cert_spki.as_slice() {
            return Err(cert_err("the private key does not match the certificate"));
        }
        Self::assemble(cert, key)
    }

    /// The certificate, DER.
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// The certificate, PEM.
    pub fn cert_pem(&self) -> String {
        der_to_pem(&self.cert_der)
    }

    /// The private key as PKCS#8 PEM, zeroized on drop.
    pub fn key_pem(&self) -> Result<Zeroizing<String>> {
        self.key
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|_| cert_err("cannot encode the private key"))
    }

    /// The private key as PKCS#8 DER, zeroized on drop.
    pub fn key_pkcs8_der(&self) -> Result<Zeroizing<Vec<u8>>> {
        let doc = self
            .key
            .to_pkcs8_der()
            .map_err(|_| cert_err("cannot encode the private key"))?;
        Ok(Zeroizing::new(doc.as_bytes().to_vec()))
    }

    /// The subject as an RFC 4514 string.
    pub fn subject(&self) -> String {
        self.cert.tbs_certificate.subject.to_string()
    }
}

/// Encodes one DER certificate as PEM.
pub fn der_to_pem(der: &[u8]) -> String {
    match Certificate::from_der(der).and_then(|c| c.to_pem(LineEnding::LF)) {
        Ok(p) => p,
        // Not a certificate we can re-encode: fall back to plain base64 armour.
        Err(_) => {
            use base64::Engine;
            let b64 = base64::engine::general_purpose::STANDARD.encode(der);
            let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
            for chunk in b64.as_bytes().chunks(64) {
                out.push_str(&String::from_utf8_lossy(chunk));
                out.push('\n');
            }
            out.push_str("-----END CERTIFICATE-----\n");
            out
        }
    }
}

/// Parses certificate text as the service API accepts it: PEM (one or more), or base64 of DER.
pub fn parse_certificates(text: &str) -> Result<Vec<Vec<u8>>> {
    let trimmed = text.trim();
    if trimmed.contains("-----BEGIN") {
        let mut out = Vec::new();
        let mut reader = std::io::BufReader::new(trimmed.as_bytes());
        for item in rustls_pemfile::certs(&mut reader) {
            out.push(item.map_err(cert_err)?.to_vec());
        }
        if out.is_empty() {
            return Err(cert_err("no CERTIFICATE block in the PEM text"));
        }
        for d in &out {
            Certificate::from_der(d).map_err(cert_err)?;
        }
        Ok(out)
    } else {
        use base64::Engine;
        let compact: String = trimmed.chars().filter(|c| !c.is_whitespace()).collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(compact)
            .map_err(|_| cert_err("certificate is neither PEM nor base64 DER"))?;
        Certificate::from_der(&der).map_err(cert_err)?;
        Ok(vec![der])
    }
}
