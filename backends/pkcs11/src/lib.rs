//! hsmkit plugin for any PKCS#11 token (SoftHSM2, tpm2-pkcs11, vendor modules).
//!
//! - X.509: certificate chain from token objects or a PEM file, signatures made by the
//!   token's private key (ECDSA P-256, RSA PKCS#1 v1.5 and PSS), common name from the leaf.
//!   The private key is never exported.
//! - Symmetric key: HMAC-SHA256 with a generic-secret key held in the token; imported keys are
//!   stored sensitive and non-extractable.
//! - Operational key (ABI 1.2): P-256 key pairs generated inside the token under a label, and
//!   the certificate chain DPS issues for one kept beside it as a token data object
//!   ([`operational`]).
//!
//! Configuration keys are described in [`config`]. A PKCS#11 session runs one operation at a
//! time, so each instance keeps its session behind a lock (calls on one instance take turns);
//! separate instances have separate sessions and run in parallel, all sharing one initialized
//! module ([`session`]).

#![deny(missing_docs)]
// The entry function below is SDK code (macro-generated); this crate itself has no unsafe.
#![forbid(unsafe_code)]

pub mod config;
pub mod error;
#[cfg(any(feature = "softhsm-harness", feature = "tpm2-pkcs11-harness"))]
mod harness;
pub mod operational;
pub mod provision;
pub mod session;
#[cfg(feature = "softhsm-harness")]
pub mod softhsm;
pub mod symmetric;
#[cfg(feature = "tpm2-pkcs11-harness")]
pub mod tpm2_pkcs11;
pub mod uri;
pub mod x509;

use config::Pkcs11Config;
use cryptoki::object::ObjectHandle;
use error::{ErrorKind, Pkcs11Error, Result};
use hsm_plugin_sdk::{
    sync, HsmError, HsmPlugin, OperationalKeyHsm, PluginConfig, PluginInfo, SignAlgorithm,
    SymmetricKeyHsm, X509Hsm,
};
use session::TokenSession;
use std::sync::{Mutex, MutexGuard};
use uri::Pkcs11Uri;
use x509::TokenKey;

/// One plugin instance: a logged-in session on the configured token.
#[derive(Debug)]
pub struct Pkcs11Plugin {
    token: Mutex<Token>,
}

/// The session and what was looked up through it; only ever used under the instance's lock.
#[derive(Debug)]
struct Token {
    session: TokenSession,
    config: Pkcs11Config,
    key: Option<TokenKey>,
    hmac_key: Option<ObjectHandle>,
    /// Where the HMAC key is: the configured URI, or the label a key imported through us gets
    /// (the registration id, by default).
    hmac_uri: Option<Pkcs11Uri>,
    registration_id: Option<String>,
}

impl Pkcs11Plugin {
    /// Opens the token the configuration names and logs in.
    pub fn open(config: Pkcs11Config) -> Result<Self> {
        let pin = config.pin.read()?;
        let session = TokenSession::open(&config.module, &config.token, &pin)?;
        // Without `hmac_key_uri`, import_key labels the key with the registration id; a later
        // process (`hsmkit provision` after `hsmkit import-key`) must look for it there too.
        let hmac_uri = config.hmac_key.clone().or_else(|| {
            config.registration_id.clone().map(|id| Pkcs11Uri {
                object: Some(id),
                ..Pkcs11Uri::default()
            })
        });
        Ok(Self {
            token: Mutex::new(Token {
                session,
                hmac_uri,
                registration_id: config.registration_id.clone(),
                config,
                key: None,
                hmac_key: None,
            }),
        })
    }

    fn token(&self) -> MutexGuard<'_, Token> {
        // The cached handles are re-looked-up when stale, so a panic mid-call leaves nothing
        // that later calls could trip on.
        sync::lock(&self.token)
    }

    /// Runs `f` on the session (for tools and tests that talk to the same token).
    pub fn with_session<R>(&self, f: impl FnOnce(&TokenSession) -> R) -> R {
        f(&self.token().session)
    }

    /// Signs a digest with the token key (the X.509 interface without the SDK error type).
    pub fn sign_digest_raw(&self, algorithm: SignAlgorithm, digest: &[u8]) -> Result<Vec<u8>> {
        self.token().sign_digest(algorithm, digest)
    }

    /// HMAC-SHA256 with the token's secret key.
    pub fn hmac(&self, data: &[u8]) -> Result<Vec<u8>> {
        self.token().hmac(data)
    }

    /// Imports an HMAC key, labelled by the configured URI's label or else the registration id.
    pub fn import_hmac(&self, registration_id: Option<&str>, key: &[u8]) -> Result<()> {
        self.token().import_hmac(registration_id, key)
    }
}

impl Token {
    fn token_key(&mut self) -> Result<TokenKey> {
        if let Some(k) = self.key {
            return Ok(k);
        }
        let uri =
            self.config.key.as_ref().ok_or_else(|| {
                Pkcs11Error::not_found("no private key configured: set `key_uri`")
            })?;
        let key = TokenKey::find(&self.session, uri)?;
        self.key = Some(key);
        Ok(key)
    }

    fn chain(&self) -> Result<Vec<x509_cert::Certificate>> {
        let source = self.config.cert.as_ref().ok_or_else(|| {
            Pkcs11Error::not_found("no certificate configured: set `cert_uri` or `cert_file`")
        })?;
        x509::load_chain(&self.session, source)
    }

    fn hmac_handle(&mut self) -> Result<ObjectHandle> {
        if let Some(h) = self.hmac_key {
            return Ok(h);
        }
        let uri = self.hmac_uri.as_ref().ok_or_else(|| {
            Pkcs11Error::not_found("no HMAC key: set `hmac_key_uri` or import a key first")
        })?;
        let handle = symmetric::find_hmac_key(&self.session, uri)?;
        self.hmac_key = Some(handle);
        Ok(handle)
    }

    fn sign_digest(&mut self, algorithm: SignAlgorithm, digest: &[u8]) -> Result<Vec<u8>> {
        let key = self.token_key()?;
        match key.sign_digest(&self.session, algorithm, digest) {
            // The cached handle went stale (the key was replaced, by another process perhaps):
            // look the key up again once.
            Err(e) if e.code() == ErrorKind::NotFound => {
                self.key = None;
                let key = self.token_key()?;
                key.sign_digest(&self.session, algorithm, digest)
            }
            other => other,
        }
    }

    fn hmac(&mut self, data: &[u8]) -> Result<Vec<u8>> {
        let key = self.hmac_handle()?;
        match symmetric::hmac_sha256(&self.session, key, data) {
            // A re-import elsewhere replaces the object: look it up again once.
            Err(e) if e.code() == ErrorKind::NotFound => {
                self.hmac_key = None;
                let key = self.hmac_handle()?;
                symmetric::hmac_sha256(&self.session, key, data)
            }
            other => other,
        }
    }

    fn import_hmac(&mut self, registration_id: Option<&str>, key: &[u8]) -> Result<()> {
        if let Some(id) = registration_id {
            if id.is_empty() {
                return Err(Pkcs11Error::invalid_argument(
                    "the registration id is empty",
                ));
            }
        }
        let wanted_id = registration_id
            .map(str::to_string)
            .or_else(|| self.registration_id.clone());
        let configured = self.config.hmac_key.clone();
        let label = configured
            .as_ref()
            .and_then(|u| u.object.clone())
            .or_else(|| wanted_id.clone())
            .ok_or_else(|| {
                Pkcs11Error::invalid_argument(
                    "no label for the key: set `hmac_key_uri` with `object=` or pass a registration id",
                )
            })?;
        let id = configured.as_ref().and_then(|u| u.id.clone());
        let handle = symmetric::import_hmac_key(&self.session, &label, id.as_deref(), key)?;
        self.hmac_key = Some(handle);
        if configured.is_none() {
            self.hmac_uri = Some(Pkcs11Uri {
                object: Some(label),
                ..Pkcs11Uri::default()
            });
        }
        if wanted_id.is_some() {
            self.registration_id = wanted_id;
        }
        Ok(())
    }
}

impl HsmPlugin for Pkcs11Plugin {
    const INFO: PluginInfo = PluginInfo {
        name: "pkcs11",
        version: env!("CARGO_PKG_VERSION"),
        vendor: "hsmkit",
        description: "Any PKCS#11 token: X.509 with non-extractable keys, HMAC symmetric keys, operational keys",
    };

    const SETTINGS: &'static [hsm_plugin_sdk::Setting] = config::SETTINGS;

    fn create(config: &PluginConfig) -> std::result::Result<Self, HsmError> {
        let config = Pkcs11Config::from_lookup(|k| config.get(k))?;
        Self::open(config)
    }
}

impl X509Hsm for Pkcs11Plugin {
    fn certificate_chain_pem(&self) -> std::result::Result<String, HsmError> {
        x509::chain_to_pem(&self.token().chain()?)
    }

    fn common_name(&self) -> std::result::Result<String, HsmError> {
        let chain = self.token().chain()?;
        let leaf = chain
            .first()
            .ok_or_else(|| Pkcs11Error::not_found("the certificate chain is empty"))?;
        x509::common_name(leaf)
    }

    fn sign_digest(
        &self,
        algorithm: SignAlgorithm,
        digest: &[u8],
    ) -> std::result::Result<Vec<u8>, HsmError> {
        self.sign_digest_raw(algorithm, digest)
    }
    // export_private_key_pem keeps the SDK default: never supported.
}

impl SymmetricKeyHsm for Pkcs11Plugin {
    fn registration_id(&self) -> std::result::Result<String, HsmError> {
        let mut token = self.token();
        if let Some(id) = &token.registration_id {
            return Ok(id.clone());
        }
        let key = token.hmac_handle()?;
        symmetric::key_label(&token.session, key)
    }

    fn sign(&self, data: &[u8]) -> std::result::Result<Vec<u8>, HsmError> {
        self.hmac(data)
    }

    fn import_key(
        &self,
        registration_id: Option<&str>,
        key: &[u8],
    ) -> std::result::Result<(), HsmError> {
        self.import_hmac(registration_id, key)
    }
}

/// Keys and chains are token objects ([`operational`]): they stay in the token, outlive the
/// process, and are found by any instance logged in to the same token.
impl OperationalKeyHsm for Pkcs11Plugin {
    fn create_operational_key(&self, label: &str) -> std::result::Result<Vec<u8>, HsmError> {
        operational::create(&self.token().session, label)
    }

    fn operational_public_key(&self, label: &str) -> std::result::Result<Vec<u8>, HsmError> {
        operational::public_key(&self.token().session, label)
    }

    fn sign_operational_digest(
        &self,
        label: &str,
        digest: &[u8; 32],
    ) -> std::result::Result<Vec<u8>, HsmError> {
        operational::sign_digest(&self.token().session, label, digest)
    }

    fn store_operational_chain(&self, label: &str, pem: &str) -> std::result::Result<(), HsmError> {
        operational::store_chain(&self.token().session, label, pem)
    }

    fn operational_chain(&self, label: &str) -> std::result::Result<String, HsmError> {
        operational::chain(&self.token().session, label)
    }

    fn delete_operational_key(&self, label: &str) -> std::result::Result<(), HsmError> {
        operational::delete(&self.token().session, label)
    }
}

hsm_plugin_sdk::plugin_entry!(
    /// The pkcs11 plugin table (X.509, symmetric-key and operational-key interfaces), exported
    /// by no symbol: `plugin/` exports it as `hsm_plugin_entry`, and a host that links this
    /// crate in calls it directly.
    pub fn plugin_entry for Pkcs11Plugin, x509, symmetric_key, operational_key
);
