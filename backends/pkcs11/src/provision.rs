//! Device setup: a P-256 key pair generated inside the token and a certificate for it (self-signed
//! through the token, or signed by a CA key in software), stored back into the token; and HMAC
//! key import. The `hsmkit-pkcs11` tool and `hsmkit pkcs11 init` both call these functions.

use crate::config::PinSource;
use crate::error::{Pkcs11Error, Result};
use crate::session::TokenSession;
use crate::symmetric;
use crate::uri::Pkcs11Uri;
use crate::x509::{certificate_der, TokenKey, P256_EC_PARAMS};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, CertificateType, ObjectClass};
use der::asn1::{OctetString, Utf8StringRef};
use der::{Any, Decode, Encode, EncodePem};
use p256::ecdsa::signature::{Keypair, Signer};
use p256::ecdsa::{DerSignature, SigningKey, VerifyingKey};
use p256::pkcs8::{DecodePrivateKey, EncodePublicKey};
use rand::RngCore;
use sha2::{Digest, Sha256};
use spki::{AlgorithmIdentifier, SignatureAlgorithmIdentifier, SubjectPublicKeyInfoOwned};
use std::cell::RefCell;
use std::path::PathBuf;
use std::time::Duration;
use x509_cert::attr::AttributeTypeAndValue;
use x509_cert::builder::{Builder, CertificateBuilder, Profile};
use x509_cert::ext::pkix::ExtendedKeyUsage;
use x509_cert::name::{Name, RdnSequence, RelativeDistinguishedName};
use x509_cert::serial_number::SerialNumber;
use x509_cert::time::Validity;
use x509_cert::Certificate;
use zeroize::Zeroizing;

/// A CA that signs the device certificate in software.
#[derive(Clone, Debug)]
pub struct CaFiles {
    /// PEM certificate of the CA.
    pub cert_pem: PathBuf,
    /// PEM private key of the CA (PKCS#8 or SEC1, P-256).
    pub key_pem: PathBuf,
}

/// What `init` should create.
#[derive(Clone, Debug)]
pub struct InitOptions {
    /// PKCS#11 module path.
    pub module: PathBuf,
    /// Token to use.
    pub token: Pkcs11Uri,
    /// Where the user PIN comes from.
    pub pin: PinSource,
    /// Label of the key pair and certificate objects.
    pub label: String,
    /// `CKA_ID` of the objects; random 8 bytes when not given.
    pub id: Option<Vec<u8>>,
    /// Common name of the certificate (the DPS registration id).
    pub common_name: String,
    /// Sign with this CA instead of self-signing.
    pub ca: Option<CaFiles>,
    /// Validity of the certificate in days.
    pub validity_days: u32,
}

/// What `init` created.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InitOutcome {
    /// The registration id (certificate common name).
    pub registration_id: String,
    /// Object label.
    pub label: String,
    /// Object id as lowercase hex.
    pub id_hex: String,
    /// `key_uri` to put in the plugin configuration.
    pub key_uri: String,
    /// `cert_uri` to put in the plugin configuration.
    pub cert_uri: String,
    /// The certificate chain in PEM, leaf first (leaf plus the CA when one signed it).
    pub certificate_pem: String,
}

/// Creates the device key pair and certificate in the token.
pub fn init_device(opts: &InitOptions) -> Result<InitOutcome> {
    if opts.label.is_empty() || opts.common_name.is_empty() {
        return Err(Pkcs11Error::invalid_argument(
            "the label and the common name must not be empty",
        ));
    }
    if opts.validity_days == 0 {
        return Err(Pkcs11Error::invalid_argument(
            "the validity must be at least one day",
        ));
    }
    // Load the CA first so a bad CA file costs no token objects.
    let ca = opts.ca.as_ref().map(load_ca).transpose()?;
    let pin = opts.pin.read()?;
    let session = TokenSession::open(&opts.module, &opts.token, &pin)?;
    let existing = session
        .session()
        .find_objects(&[Attribute::Label(opts.label.as_bytes().to_vec())])
        .map_err(|e| crate::error::from_cryptoki("searching existing objects", e))?;
    if !existing.is_empty() {
        return Err(Pkcs11Error::new(
            crate::error::ErrorKind::InvalidState,
            format!("the token already holds objects labelled `{}`", opts.label),
        ));
    }
    let id = match &opts.id {
        Some(id) => id.clone(),
        None => {
            let mut id = vec![0u8; 8];
            rand::rngs::OsRng.fill_bytes(&mut id);
            id
        }
    };
    let public = generate_p256(&session, &opts.label, &id, &[])?;
    let key_uri = Pkcs11Uri {
        object: Some(opts.label.clone()),
        id: Some(id.clone()),
        ..Pkcs11Uri::default()
    };
    let key = TokenKey::find(&session, &key_uri)?;

    let subject = cn_name(&opts.common_name)?;
    let spki = SubjectPublicKeyInfoOwned::from_key(public)
        .map_err(|e| Pkcs11Error::internal(format!("encoding the public key: {e}")))?;
    let serial = random_serial()?;
    let validity = Validity::from_now(Duration::from_secs(u64::from(opts.validity_days) * 86_400))
        .map_err(|e| Pkcs11Error::internal(format!("validity: {e}")))?;
    let eku = ExtendedKeyUsage(vec![const_oid::db::rfc5280::ID_KP_CLIENT_AUTH]);

    let (leaf, ca_cert) = match ca {
        None => {
            let signer = TokenSigner {
                session: &session,
                key,
                public,
                error: RefCell::new(None),
            };
            let profile = Profile::Leaf {
                issuer: subject.clone(),
                enable_key_agreement: false,
                enable_key_encipherment: false,
            };
            let mut builder =
                CertificateBuilder::new(profile, serial, validity, subject, spki, &signer)
                    .map_err(|e| Pkcs11Error::internal(format!("certificate builder: {e}")))?;
            builder
                .add_extension(&eku)
                .map_err(|e| Pkcs11Error::internal(format!("certificate extension: {e}")))?;
            let built = builder.build::<DerSignature>();
            let cert = match built {
                Ok(c) => c,
                Err(e) => {
                    return Err(signer.error.take().unwrap_or_else(|| {
                        Pkcs11Error::internal(format!("building the certificate: {e}"))
                    }))
                }
            };
            (cert, None)
        }
        Some((ca_cert, ca_key)) => {
            let profile = Profile::Leaf {
                issuer: ca_cert.tbs_certificate.subject.clone(),
                enable_key_agreement: false,
                enable_key_encipherment: false,
            };
            let mut builder =
                CertificateBuilder::new(profile, serial, validity, subject, spki, &*ca_key)
                    .map_err(|e| Pkcs11Error::internal(format!("certificate builder: {e}")))?;
            builder
                .add_extension(&eku)
                .map_err(|e| Pkcs11Error::internal(format!("certificate extension: {e}")))?;
            let cert = builder
                .build::<DerSignature>()
                .map_err(|e| Pkcs11Error::internal(format!("signing with the CA key: {e}")))?;
            (cert, Some(ca_cert))
        }
    };
    store_certificate(&session, &opts.label, &id, &leaf)?;

    let mut certificate_pem = String::new();
    for cert in std::iter::once(&leaf).chain(ca_cert.as_ref()) {
        certificate_pem.push_str(
            &cert
                .to_pem(der::pem::LineEnding::LF)
                .map_err(|e| Pkcs11Error::internal(format!("PEM encoding: {e}")))?,
        );
    }
    let id_hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
    let id_pct: String = id.iter().map(|b| format!("%{b:02x}")).collect();
    let label_pct = percent_encoding::utf8_percent_encode(&opts.label, URI_SET).to_string();
    Ok(InitOutcome {
        registration_id: opts.common_name.clone(),
        label: opts.label.clone(),
        key_uri: format!("pkcs11:object={label_pct};id={id_pct};type=private"),
        cert_uri: format!("pkcs11:object={label_pct};id={id_pct};type=cert"),
        id_hex,
        certificate_pem,
    })
}

/// Characters escaped in URI values we print (RFC 7512 reserves `;`, `?`, `&`, `%`, `/`).
const URI_SET: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
    .add(b' ')
    .add(b';')
    .add(b'?')
    .add(b'&')
    .add(b'%')
    .add(b'/')
    .add(b'=')
    .add(b'#');

/// Stores `key` as a non-extractable HMAC key labelled `label` in the token.
pub fn import_hmac_key(
    module: &std::path::Path,
    token: &Pkcs11Uri,
    pin: &PinSource,
    label: &str,
    key: &[u8],
) -> Result<()> {
    let pin = pin.read()?;
    let session = TokenSession::open(module, token, &pin)?;
    symmetric::import_hmac_key(&session, label, None, key).map(|_| ())
}

/// Generates a P-256 key pair in the token (token objects, the private key sensitive,
/// non-extractable, able to sign) labelled `label` with id `id`, `extra_private` added to the
/// private key's template; returns the public key.
pub(crate) fn generate_p256(
    session: &TokenSession,
    label: &str,
    id: &[u8],
    extra_private: &[Attribute],
) -> Result<VerifyingKey> {
    let common = [
        Attribute::Token(true),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Id(id.to_vec()),
    ];
    let mut public_template = common.to_vec();
    public_template.extend([
        Attribute::EcParams(P256_EC_PARAMS.to_vec()),
        Attribute::Verify(true),
    ]);
    let mut private_template = common.to_vec();
    private_template.extend([
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Sign(true),
    ]);
    private_template.extend_from_slice(extra_private);
    let (public, _private) = session
        .session()
        .generate_key_pair(
            &Mechanism::EccKeyPairGen,
            &public_template,
            &private_template,
        )
        .map_err(|e| crate::error::from_cryptoki("generating the P-256 key pair", e))?;
    let point = session.attribute_bytes(public, AttributeType::EcPoint)?;
    verifying_key_from_ec_point(&point)
}

/// `CKA_EC_POINT` is specified as a DER OCTET STRING around the SEC1 point, but some modules
/// return the bare point; both are accepted.
pub fn verifying_key_from_ec_point(point: &[u8]) -> Result<VerifyingKey> {
    let sec1 = match OctetString::from_der(point) {
        Ok(os) => os.as_bytes().to_vec(),
        Err(_) => point.to_vec(),
    };
    VerifyingKey::from_sec1_bytes(&sec1)
        .map_err(|_| Pkcs11Error::device("the token returned an invalid P-256 public point"))
}

fn store_certificate(
    session: &TokenSession,
    label: &str,
    id: &[u8],
    cert: &Certificate,
) -> Result<()> {
    let der = certificate_der(cert)?;
    let template = [
        Attribute::Class(ObjectClass::CERTIFICATE),
        Attribute::CertificateType(CertificateType::X_509),
        Attribute::Token(true),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Id(id.to_vec()),
        Attribute::Subject(enc(&cert.tbs_certificate.subject)?),
        Attribute::Issuer(enc(&cert.tbs_certificate.issuer)?),
        Attribute::SerialNumber(enc(&cert.tbs_certificate.serial_number)?),
        Attribute::Value(der),
    ];
    session
        .session()
        .create_object(&template)
        .map_err(|e| crate::error::from_cryptoki("storing the certificate", e))?;
    Ok(())
}

fn enc<T: Encode>(v: &T) -> Result<Vec<u8>> {
    v.to_der()
        .map_err(|e| Pkcs11Error::internal(format!("DER encoding: {e}")))
}

fn cn_name(cn: &str) -> Result<Name> {
    let value = Utf8StringRef::new(cn)
        .map_err(|e| Pkcs11Error::invalid_argument(format!("common name: {e}")))?;
    let atv = AttributeTypeAndValue {
        oid: const_oid::db::rfc4519::CN,
        value: Any::from(value),
    };
    let rdn = RelativeDistinguishedName::try_from(vec![atv])
        .map_err(|e| Pkcs11Error::internal(format!("name: {e}")))?;
    Ok(RdnSequence(vec![rdn]))
}

fn random_serial() -> Result<SerialNumber> {
    let mut bytes = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    // Positive and without a leading zero byte, as RFC 5280 asks.
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    SerialNumber::new(&bytes).map_err(|e| Pkcs11Error::internal(format!("serial: {e}")))
}

type LoadedCa = (Certificate, Box<SigningKey>);

fn load_ca(files: &CaFiles) -> Result<LoadedCa> {
    let cert_pem = std::fs::read(&files.cert_pem).map_err(|e| {
        Pkcs11Error::not_found(format!(
            "cannot read the CA certificate {}: {e}",
            files.cert_pem.display()
        ))
    })?;
    let cert = crate::x509::certificate_from_pem(&cert_pem)?;
    let key_pem = Zeroizing::new(std::fs::read_to_string(&files.key_pem).map_err(|e| {
        Pkcs11Error::not_found(format!(
            "cannot read the CA key {}: {e}",
            files.key_pem.display()
        ))
    })?);
    let key = SigningKey::from_pkcs8_pem(&key_pem)
        .or_else(|_| p256::SecretKey::from_sec1_pem(&key_pem).map(SigningKey::from))
        .map_err(|_| {
            Pkcs11Error::invalid_argument(format!(
                "the CA key {} is not a P-256 private key in PKCS#8 or SEC1 PEM",
                files.key_pem.display()
            ))
        })?;
    let key_spki = key
        .verifying_key()
        .to_public_key_der()
        .map_err(|e| Pkcs11Error::internal(format!("encoding the CA public key: {e}")))?;
    let cert_spki = cert
        .tbs_certificate
        .subject_public_key_info
        .to_der()
        .map_err(|e| Pkcs11Error::internal(format!("encoding the CA certificate key: {e}")))?;
    if key_spki.as_bytes() != cert_spki.as_slice() {
        return Err(Pkcs11Error::invalid_argument(
            "the CA key does not belong to the CA certificate",
        ));
    }
    Ok((cert, Box::new(key)))
}

/// A `signature::Signer` whose private half is the token key, so that the x509-cert builder can
/// self-sign without the key leaving the token. The builder's error type cannot carry ours, so
/// the real error is kept aside.
struct TokenSigner<'a> {
    session: &'a TokenSession,
    key: TokenKey,
    public: VerifyingKey,
    error: RefCell<Option<Pkcs11Error>>,
}

impl Keypair for TokenSigner<'_> {
    type VerifyingKey = VerifyingKey;
    fn verifying_key(&self) -> VerifyingKey {
        self.public
    }
}

impl SignatureAlgorithmIdentifier for TokenSigner<'_> {
    type Params = der::asn1::AnyRef<'static>;
    const SIGNATURE_ALGORITHM_IDENTIFIER: AlgorithmIdentifier<Self::Params> = AlgorithmIdentifier {
        oid: const_oid::db::rfc5912::ECDSA_WITH_SHA_256,
        parameters: None,
    };
}

impl Signer<DerSignature> for TokenSigner<'_> {
    fn try_sign(&self, msg: &[u8]) -> std::result::Result<DerSignature, p256::ecdsa::Error> {
        let digest = Sha256::digest(msg);
        let result = self
            .key
            .sign_digest(
                self.session,
                hsm_plugin_sdk::SignAlgorithm::EcdsaP256Sha256,
                &digest,
            )
            .and_then(|der| {
                DerSignature::from_bytes(&der)
                    .map_err(|_| Pkcs11Error::internal("re-reading the token signature"))
            });
        result.map_err(|e| {
            *self.error.borrow_mut() = Some(e);
            p256::ecdsa::Error::new()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ec_point_in_both_encodings() {
        let sk = SigningKey::from_slice(&[7u8; 32]).unwrap();
        let point = sk.verifying_key().to_encoded_point(false);
        let bare = point.as_bytes().to_vec();
        let wrapped = OctetString::new(bare.clone()).unwrap().to_der().unwrap();
        assert_eq!(
            verifying_key_from_ec_point(&bare).unwrap(),
            *sk.verifying_key()
        );
        assert_eq!(
            verifying_key_from_ec_point(&wrapped).unwrap(),
            *sk.verifying_key()
        );
        assert!(verifying_key_from_ec_point(&[4, 1, 2]).is_err());
    }

    #[test]
    fn common_name_round_trips_special_characters() {
        let name = cn_name("dev,1+x=\"y\"").unwrap();
        let cert_cn = name.0[0].0.get(0).unwrap();
        assert_eq!(cert_cn.value.value(), b"dev,1+x=\"y\"");
    }
}
