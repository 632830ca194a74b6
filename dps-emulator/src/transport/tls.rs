//! TLS for the emulator: rustls with the ring provider, server certificate from the dev CA, client
//! certificates optional. The client-certificate verifier accepts any well-formed chain and leaves
//! trust decisions to the request handler, which knows the enrollments; it still checks the
//! handshake signature, so a client proves it holds the leaf's private key.

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme};
use std::sync::Arc;

use crate::error::Result;
use crate::pki::CertifiedKey;

#[derive(Debug)]
struct RecordingClientCertVerifier {
    provider: Arc<CryptoProvider>,
}

impl ClientCertVerifier for RecordingClientCertVerifier {
    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> std::result::Result<ClientCertVerified, rustls::Error> {
        use der::Decode;
        for c in std::iter::once(end_entity).chain(intermediates) {
            x509_cert::Certificate::from_der(c.as_ref()).map_err(|_| {
                rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding)
            })?;
        }
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Builds the server configuration: `server` leaf plus `ca` in the chain, the given ALPN
/// protocols (http/1.1 for HTTPS; none for MQTT, whose clients may offer any or none).
pub(crate) fn server_config(
    server: &CertifiedKey,
    ca: &CertifiedKey,
    alpn: &[&[u8]],
) -> Result<Arc<ServerConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = RecordingClientCertVerifier {
        provider: provider.clone(),
    };
    let key_der = server.key_pkcs8_der()?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_der.to_vec()));
    let mut cfg = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(Arc::new(verifier))
        .with_single_cert(
            vec![
                CertificateDer::from(server.cert_der().to_vec()),
                CertificateDer::from(ca.cert_der().to_vec()),
            ],
            key,
        )?;
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(cfg))
}
