//! TLS client settings: rustls with the ring provider, the roots to trust, and for X.509 a
//! client certificate whose handshake signature is made inside the plugin, so the device's
//! private key never has to be exported.

use crate::plugin::{PluginError, PluginInstance, SignAlgorithm};
use der::asn1::ObjectIdentifier;
use der::Decode;
use rustls::client::ResolvesClientCert;
use rustls::pki_types::CertificateDer;
use rustls::sign::{CertifiedKey, Signer, SigningKey};
use rustls::{ClientConfig, RootCertStore, SignatureAlgorithm, SignatureScheme};
use sha2::Digest;
use std::sync::{Arc, Mutex};

const OID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const OID_P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const OID_P384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
const OID_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");

/// Why TLS settings could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    /// A trust PEM holds no certificate or a malformed one.
    #[error("the trusted CA file is not usable: {0}; give a PEM file with one or more CERTIFICATE blocks")]
    BadTrustPem(String),
    /// Nothing would be trusted.
    #[error("no CA certificate to trust: enable the public roots or give a CA file (--trust-ca)")]
    NoRoots,
    /// The plugin's certificate chain cannot be used.
    #[error("the plugin's certificate chain is not usable for TLS: {0}")]
    BadChain(String),
    /// The plugin failed to hand out its chain.
    #[error(transparent)]
    Plugin(#[from] PluginError),
    /// rustls refused the protocol settings (its error is in the message, so not also the
    /// `source()`).
    #[error("TLS settings refused by rustls: {0}")]
    Rustls(rustls::Error),
}

impl TlsSetupError {
    /// The failure's class, for exit codes and `--json` ([`crate::error_kind`]).
    pub fn error_kind(&self) -> crate::error_kind::ErrorKind {
        use crate::error_kind::ErrorKind;
        match self {
            TlsSetupError::BadTrustPem(_) | TlsSetupError::NoRoots => ErrorKind::Config,
            TlsSetupError::BadChain(_) => ErrorKind::Hsm,
            TlsSetupError::Plugin(e) => e.error_kind(),
            TlsSetupError::Rustls(_) => ErrorKind::Other,
        }
    }
}

impl From<rustls::Error> for TlsSetupError {
    fn from(e: rustls::Error) -> Self {
        TlsSetupError::Rustls(e)
    }
}

/// The trust store: the public roots (the real service) and/or extra CA PEM (emulators,
/// private deployments). The public roots are the bundled Mozilla set (webpki-roots) and the
/// operating system's store (rustls-native-certs: on Linux the distribution's CA bundle, or
/// only `SSL_CERT_FILE` / `SSL_CERT_DIR` when either is set), so a CA the administrator
/// installed (`update-ca-certificates`) is trusted as it is by other programs.
pub fn root_store(
    extra_pem: Option<&[u8]>,
    public_roots: bool,
) -> Result<RootCertStore, TlsSetupError> {
    let mut roots = RootCertStore::empty();
    if public_roots {
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        add_system_roots(&mut roots);
    }
    if let Some(pem) = extra_pem {
        let certs = parse_pem_chain(pem).map_err(TlsSetupError::BadTrustPem)?;
        for c in certs {
            roots
                .add(c)
                .map_err(|e| TlsSetupError::BadTrustPem(e.to_string()))?;
        }
    }
    if roots.is_empty() {
        return Err(TlsSetupError::NoRoots);
    }
    Ok(roots)
}

/// Adds the operating system's CA certificates. What cannot be read is logged, not fatal: the
/// bundled roots and `--trust-ca` still apply, and a handshake that then fails says what to
/// trust.
fn add_system_roots(roots: &mut RootCertStore) {
    let found = rustls_native_certs::load_native_certs();
    for e in &found.errors {
        tracing::warn!("the system's CA certificates: {e}");
    }
    let (added, ignored) = roots.add_parsable_certificates(found.certs);
    tracing::debug!("{added} CA certificates from the system's store ({ignored} not usable)");
}

/// The CERTIFICATE blocks of a PEM text, in order; an error when there is none or one is bad.
pub(crate) fn parse_pem_chain(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let mut reader = pem;
    let certs = rustls_pemfile::certs(&mut reader)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("malformed PEM: {e}"))?;
    if certs.is_empty() {
        return Err("no CERTIFICATE block found".into());
    }
    Ok(certs)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Plain server-authenticated TLS (symmetric key and TPM attestation).
pub(crate) fn client_config_without_identity(
    roots: RootCertStore,
) -> Result<ClientConfig, TlsSetupError> {
    let mut cfg = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

/// Where a handshake signature failure inside the plugin is kept, so the caller can report the
/// plugin's own error instead of rustls's generic one.
pub(crate) type SignFailure = Arc<Mutex<Option<PluginError>>>;

/// A rustls client configuration presenting the plugin's certificate chain, each handshake
/// signature made by the plugin's `sign_digest` (the key stays inside the plugin). Use it for
/// DPS X.509 attestation and for IoT Hub X.509 connections.
pub fn tls_client_config_signing_through_plugin(
    instance: Arc<PluginInstance>,
    roots: RootCertStore,
) -> Result<ClientConfig, TlsSetupError> {
    client_config_with_plugin_identity(instance, roots).map(|(cfg, _)| cfg)
}

pub(crate) fn client_config_with_plugin_identity(
    instance: Arc<PluginInstance>,
    roots: RootCertStore,
) -> Result<(ClientConfig, SignFailure), TlsSetupError> {
    let pem = instance.x509()?.certificate_chain_pem()?;
    let chain = parse_pem_chain(pem.as_bytes()).map_err(TlsSetupError::BadChain)?;
    let kind = key_kind(&chain[0])?;
    client_config_presenting(instance, chain, kind, KeySource::X509, roots)
}

/// A client configuration presenting `chain`, each handshake signature made by the plugin's
/// key `source`; with where a signing failure inside the plugin is kept.
fn client_config_presenting(
    instance: Arc<PluginInstance>,
    chain: Vec<CertificateDer<'static>>,
    kind: KeyKind,
    source: KeySource,
    roots: RootCertStore,
) -> Result<(ClientConfig, SignFailure), TlsSetupError> {
    let failure = SignFailure::default();
    let key = PluginSigningKey {
        instance,
        kind,
        source,
        failure: failure.clone(),
    };
    let resolver = PluginCertResolver {
        key: Arc::new(CertifiedKey::new(chain, Arc::new(key))),
    };
    let mut cfg = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_client_cert_resolver(Arc::new(resolver));
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((cfg, failure))
}

/// A rustls client configuration presenting the operational certificate chain stored under
/// `label` (the one DPS issued, see [`crate::issuance::register_with_certificate`]), each
/// handshake signature made by the plugin's operational key under that label: the same
/// resolver and signer as [`tls_client_config_signing_through_plugin`], another key.
pub fn tls_client_config_with_operational_key(
    instance: Arc<PluginInstance>,
    label: &str,
    roots: RootCertStore,
) -> Result<ClientConfig, TlsSetupError> {
    client_config_with_operational_key(instance, label, roots).map(|(cfg, _)| cfg)
}

/// [`tls_client_config_with_operational_key`], with where a handshake-signature failure inside
/// the plugin is kept (the IoT Hub client reports the plugin's own error).
pub(crate) fn client_config_with_operational_key(
    instance: Arc<PluginInstance>,
    label: &str,
    roots: RootCertStore,
) -> Result<(ClientConfig, SignFailure), TlsSetupError> {
    let pem = instance.operational_key()?.chain(label)?;
    let chain = parse_pem_chain(pem.as_bytes()).map_err(TlsSetupError::BadChain)?;
    let kind = key_kind(&chain[0])?;
    if kind != KeyKind::P256 {
        // Operational keys are P-256 by the ABI; anything else is not this key's certificate.
        return Err(TlsSetupError::BadChain(
            "the stored operational certificate is not for a P-256 key".into(),
        ));
    }
    let source = KeySource::Operational(label.to_string());
    client_config_presenting(instance, chain, kind, source, roots)
}

/// Which plugin key signs the handshake.
#[derive(Clone, Debug)]
enum KeySource {
    /// The X.509 attestation key (`x509().sign_digest`).
    X509,
    /// The operational key under this label (`operational_key().sign_digest`, P-256 only).
    Operational(String),
}

/// The leaf key's type, read from its SubjectPublicKeyInfo.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum KeyKind {
    P256,
    P384,
    Rsa,
}

fn key_kind(leaf: &CertificateDer<'_>) -> Result<KeyKind, TlsSetupError> {
    let cert = x509_cert::Certificate::from_der(leaf.as_ref()).map_err(|e| {
        TlsSetupError::BadChain(format!("the leaf certificate cannot be parsed: {e}"))
    })?;
    let alg = &cert.tbs_certificate.subject_public_key_info.algorithm;
    if alg.oid == OID_RSA {
        return Ok(KeyKind::Rsa);
    }
    if alg.oid == OID_EC_PUBLIC_KEY {
        let curve = alg
            .parameters
            .as_ref()
            .and_then(|p| p.decode_as::<ObjectIdentifier>().ok());
        return match curve {
            Some(c) if c == OID_P256 => Ok(KeyKind::P256),
            Some(c) if c == OID_P384 => Ok(KeyKind::P384),
            _ => Err(TlsSetupError::BadChain(
                "the leaf's EC key is not on P-256 or P-384".into(),
            )),
        };
    }
    Err(TlsSetupError::BadChain(format!(
        "the leaf's key algorithm {} is not supported (ECDSA P-256/P-384 or RSA)",
        alg.oid
    )))
}

#[derive(Debug)]
struct PluginCertResolver {
    key: Arc<CertifiedKey>,
}

impl ResolvesClientCert for PluginCertResolver {
    fn resolve(
        &self,
        _hints: &[&[u8]],
        sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        // Offer the certificate only when a scheme the key can make is acceptable; otherwise
        // rustls sends no certificate and the server explains the refusal.
        self.key.key.choose_scheme(sigschemes)?;
        Some(self.key.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

struct PluginSigningKey {
    instance: Arc<PluginInstance>,
    kind: KeyKind,
    source: KeySource,
    failure: SignFailure,
}

impl std::fmt::Debug for PluginSigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginSigningKey")
            .field("plugin", &self.instance.plugin().name())
            .field("kind", &self.kind)
            .finish()
    }
}

impl SigningKey for PluginSigningKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
        let wanted: &[SignatureScheme] = match self.kind {
            KeyKind::P256 => &[SignatureScheme::ECDSA_NISTP256_SHA256],
            KeyKind::P384 => &[SignatureScheme::ECDSA_NISTP384_SHA384],
            // PSS first: TLS 1.3 allows nothing else for RSA.
            KeyKind::Rsa => &[
                SignatureScheme::RSA_PSS_SHA256,
                SignatureScheme::RSA_PKCS1_SHA256,
            ],
        };
        let scheme = wanted.iter().copied().find(|s| offered.contains(s))?;
        Some(Box::new(PluginSigner {
            instance: self.instance.clone(),
            scheme,
            source: self.source.clone(),
            failure: self.failure.clone(),
        }))
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        match self.kind {
            KeyKind::P256 | KeyKind::P384 => SignatureAlgorithm::ECDSA,
            KeyKind::Rsa => SignatureAlgorithm::RSA,
        }
    }
}

struct PluginSigner {
    instance: Arc<PluginInstance>,
    scheme: SignatureScheme,
    source: KeySource,
    failure: SignFailure,
}

impl std::fmt::Debug for PluginSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginSigner")
            .field("scheme", &self.scheme)
            .finish()
    }
}

impl Signer for PluginSigner {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        let (algorithm, digest) = match self.scheme {
            SignatureScheme::ECDSA_NISTP384_SHA384 => (
                SignAlgorithm::EcdsaP384Sha384,
                sha2::Sha384::digest(message).to_vec(),
            ),
            SignatureScheme::RSA_PSS_SHA256 => (
                SignAlgorithm::RsaPssSha256,
                sha2::Sha256::digest(message).to_vec(),
            ),
            SignatureScheme::RSA_PKCS1_SHA256 => (
                SignAlgorithm::RsaPkcs1Sha256,
                sha2::Sha256::digest(message).to_vec(),
            ),
            _ => (
                SignAlgorithm::EcdsaP256Sha256,
                sha2::Sha256::digest(message).to_vec(),
            ),
        };
        let result = match &self.source {
            KeySource::X509 => self
                .instance
                .x509()
                .and_then(|x| x.sign_digest(algorithm, &digest)),
            // choose_scheme offers only ECDSA P-256 SHA-256 for this key, so the digest is 32
            // bytes.
            KeySource::Operational(label) => {
                let d: [u8; 32] = digest.as_slice().try_into().map_err(|_| {
                    rustls::Error::General("the operational key signs SHA-256 digests only".into())
                })?;
                self.instance
                    .operational_key()
                    .and_then(|o| o.sign_digest(label, &d))
            }
        };
        result.map(|signature| signature.to_vec()).map_err(|e| {
            let text = e.to_string();
            if let Ok(mut slot) = self.failure.lock() {
                *slot = Some(e);
            }
            rustls::Error::General(format!(
                "the plugin could not sign the TLS handshake: {text}"
            ))
        })
    }

    fn scheme(&self) -> SignatureScheme {
        self.scheme
    }
}
