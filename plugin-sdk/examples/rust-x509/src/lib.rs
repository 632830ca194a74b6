//! Template for a vendor's X.509 plugin in Rust: copy this crate, rename it, and replace the
//! software key with calls into your secure element.
//!
//! The device identity must outlive the process: `hsmkit enroll-info` reads the certificate in
//! one process and `hsmkit provision` signs with the key in another, possibly after a reboot.
//! So the key (P-256, generated on first use) and its self-signed certificate are kept under
//! the `state_dir` setting, which every host passes, with mode 0600 through the SDK's
//! [`secret_file`] (atomic writes, refused when another user could read them). An identity
//! kept in memory passes a single-process test and then fails provisioning.

use der::pem::LineEnding;
use der::{DecodePem, EncodePem};
use hsm_plugin_sdk::{
    export_plugin, secret_file, ErrorCode, HsmError, HsmPlugin, PluginConfig, PluginInfo, Setting,
    SignAlgorithm, X509Hsm,
};
use p256::ecdsa::signature::hazmat::PrehashSigner;
use p256::ecdsa::{DerSignature, Signature, SigningKey};
use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use rand_core::{OsRng, RngCore};
use spki::SubjectPublicKeyInfoOwned;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;
use x509_cert::builder::{Builder, CertificateBuilder, Profile};
use x509_cert::ext::pkix::ExtendedKeyUsage;
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::time::Validity;
use x509_cert::Certificate;

/// The registration id used when the host gives none.
const DEFAULT_REGISTRATION_ID: &str = "rust-x509-device";

/// How long the self-signed certificate is valid (about ten years: the device's life).
const VALIDITY: Duration = Duration::from_secs(3650 * 86_400);

/// One instance: the device key and certificate, loaded from the state folder at `create`.
///
/// Nothing here changes after `create`, so concurrent calls need no lock (the SDK declares
/// every instance safe for concurrent calls and adds none).
pub struct RustX509 {
    key: SigningKey,
    certificate_pem: String,
    common_name: String,
}

impl HsmPlugin for RustX509 {
    const INFO: PluginInfo = PluginInfo {
        name: "rust-x509",
        version: env!("CARGO_PKG_VERSION"),
        vendor: "Example Corp",
        description: "Template X.509 plugin: software P-256 key kept 0600 under state_dir",
    };

    /// Every setting `create` reads besides `state_dir`, one line each (`hsmkit plugins info`
    /// shows them). The SDK refuses any other key before `create` runs, so that a typo
    /// (`registraton_id=...`) is an error instead of a silently different device.
    const SETTINGS: &'static [Setting] = &[Setting::optional(
        "registration_id",
        "DPS registration id, the certificate's CN, fixed once the identity exists; default: rust-x509-device",
    )];

    fn create(config: &PluginConfig) -> Result<Self, HsmError> {
        let dir = config.state_dir()?.join("rust-x509");
        secret_file::create_private_dir(&dir)?;
        let key = load_or_create_key(&dir.join("device-key.pem"))?;
        let wanted_cn = config
            .get("registration_id")
            .unwrap_or(DEFAULT_REGISTRATION_ID);
        let certificate =
            load_or_create_certificate(&dir.join("device-cert.pem"), &key, wanted_cn)?;
        let common_name = common_name_of(&certificate)?;
        if config
            .get("registration_id")
            .is_some_and(|id| id != common_name)
        {
            // The identity is fixed once made: a second id would be a second device.
            return Err(HsmError::invalid_argument(format!(
                "this state folder already holds the identity `{common_name}`, not `{wanted_cn}`; use another state_dir for another device"
            )));
        }
        let certificate_pem = certificate
            .to_pem(LineEnding::LF)
            .map_err(|e| HsmError::internal(format!("PEM encoding the certificate: {e}")))?;
        Ok(RustX509 {
            key,
            certificate_pem,
            common_name,
        })
    }
}

impl X509Hsm for RustX509 {
    fn certificate_chain_pem(&self) -> Result<String, HsmError> {
        Ok(self.certificate_pem.clone())
    }

    fn common_name(&self) -> Result<String, HsmError> {
        Ok(self.common_name.clone())
    }

    fn sign_digest(&self, algorithm: SignAlgorithm, digest: &[u8]) -> Result<Vec<u8>, HsmError> {
        if algorithm != SignAlgorithm::EcdsaP256Sha256 {
            return Err(HsmError::not_supported(format!(
                "this device key is P-256: {algorithm:?} is not offered"
            )));
        }
        if digest.len() != 32 {
            return Err(HsmError::invalid_argument(format!(
                "ECDSA P-256/SHA-256 signs a 32-byte digest, got {} bytes",
                digest.len()
            )));
        }
        let signature: Signature = self
            .key
            .sign_prehash(digest)
            .map_err(|_| HsmError::internal("ECDSA signing failed"))?;
        // DER, as the ABI asks: TLS takes an ECDSA-Sig-Value, not raw r||s.
        Ok(signature.to_der().as_bytes().to_vec())
    }
    // export_private_key_pem keeps the SDK's default: refused with HSM_ERR_NOT_SUPPORTED.
}

/// Reads the device key, or generates and stores it when this is the first run.
fn load_or_create_key(path: &Path) -> Result<SigningKey, HsmError> {
    match secret_file::read(path) {
        Ok(pem) => parse_key(&pem),
        Err(e) if e.code() == ErrorCode::NotFound => {
            let key = SigningKey::random(&mut OsRng);
            let pem = key
                .to_pkcs8_pem(LineEnding::LF)
                .map_err(|e| HsmError::internal(format!("encoding the device key: {e}")))?;
            // Two processes starting at once must end up with one identity: the loser of the
            // race reads the winner's key.
            if secret_file::create_if_absent(path, pem.as_bytes())? {
                Ok(key)
            } else {
                parse_key(&secret_file::read(path)?)
            }
        }
        Err(e) => Err(e),
    }
}

fn parse_key(pem: &[u8]) -> Result<SigningKey, HsmError> {
    std::str::from_utf8(pem)
        .ok()
        .and_then(|pem| SigningKey::from_pkcs8_pem(pem).ok())
        .ok_or_else(|| HsmError::device("the stored device key is not a P-256 PKCS#8 PEM key"))
}

/// Reads the certificate of `key`, or issues a self-signed one for `cn` and stores it.
fn load_or_create_certificate(
    path: &Path,
    key: &SigningKey,
    cn: &str,
) -> Result<Certificate, HsmError> {
    match secret_file::read_private(path) {
        Ok(pem) => parse_certificate(&pem),
        Err(e) if e.code() == ErrorCode::NotFound => {
            let certificate = self_signed(key, cn)?;
            let pem = certificate
                .to_pem(LineEnding::LF)
                .map_err(|e| HsmError::internal(format!("PEM encoding the certificate: {e}")))?;
            if secret_file::create_if_absent(path, pem.as_bytes())? {
                Ok(certificate)
            } else {
                parse_certificate(&secret_file::read_private(path)?)
            }
        }
        Err(e) => Err(e),
    }
}

fn parse_certificate(pem: &[u8]) -> Result<Certificate, HsmError> {
    Certificate::from_pem(pem)
        .map_err(|e| HsmError::device(format!("the stored certificate does not parse: {e}")))
}

/// A self-signed leaf for `cn` with clientAuth, the shape DPS accepts for an individual
/// X.509 enrollment.
fn self_signed(key: &SigningKey, cn: &str) -> Result<Certificate, HsmError> {
    let subject = Name::from_str(&format!("CN={cn}"))
        .map_err(|e| HsmError::invalid_argument(format!("registration id `{cn}`: {e}")))?;
    let spki = SubjectPublicKeyInfoOwned::from_key(*key.verifying_key())
        .map_err(|e| HsmError::internal(format!("encoding the public key: {e}")))?;
    let mut serial = [0u8; 16];
    OsRng.fill_bytes(&mut serial);
    // Positive and without a leading zero byte, as RFC 5280 asks.
    serial[0] = (serial[0] & 0x7f) | 0x40;
    let serial = SerialNumber::new(&serial)
        .map_err(|e| HsmError::internal(format!("serial number: {e}")))?;
    let validity =
        Validity::from_now(VALIDITY).map_err(|e| HsmError::internal(format!("validity: {e}")))?;
    let profile = Profile::Leaf {
        issuer: subject.clone(),
        enable_key_agreement: false,
        enable_key_encipherment: false,
    };
    let mut builder = CertificateBuilder::new(profile, serial, validity, subject, spki, key)
        .map_err(|e| HsmError::internal(format!("certificate builder: {e}")))?;
    builder
        .add_extension(&ExtendedKeyUsage(vec![
            const_oid::db::rfc5280::ID_KP_CLIENT_AUTH,
        ]))
        .map_err(|e| HsmError::internal(format!("certificate extension: {e}")))?;
    builder
        .build::<DerSignature>()
        .map_err(|e| HsmError::internal(format!("signing the certificate: {e}")))
}

fn common_name_of(certificate: &Certificate) -> Result<String, HsmError> {
    for rdn in certificate.tbs_certificate.subject.0.iter() {
        for atv in rdn.0.iter() {
            if atv.oid == const_oid::db::rfc4519::CN {
                if let Ok(s) = der::asn1::Utf8StringRef::try_from(&atv.value) {
                    return Ok(s.to_string());
                }
            }
        }
    }
    Err(HsmError::device(
        "the stored certificate has no UTF-8 common name",
    ))
}

export_plugin!(RustX509, x509);
