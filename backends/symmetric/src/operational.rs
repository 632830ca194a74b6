//! The operational key (ABI 1.2) of the symmetric backend: SOFTWARE ONLY. A P-256 key in a
//! 0600 file in the state folder, for devices without secure hardware and for tests; it is as
//! safe as the file system, not an HSM. Hardware backends (tpm2, pkcs11) keep theirs inside.
//!
//! Files: `<state_dir>/symmetric/operational/<label>.key` (the 32-byte private scalar, 0600)
//! and `<label>.chain.pem` (the issued chain, 0600), written atomically through
//! hsm-secure-fs.

use hsm_plugin_sdk::{secret_file, ErrorCode, HsmError};
use p256::ecdsa::signature::hazmat::PrehashSigner;
use p256::ecdsa::{DerSignature, SigningKey};
use p256::pkcs8::EncodePublicKey;
use std::path::PathBuf;
use zeroize::Zeroizing;

/// The folder of one instance's operational keys.
pub(crate) struct OperationalKeys {
    dir: PathBuf,
}

impl OperationalKeys {
    pub(crate) fn new(dir: PathBuf) -> Self {
        OperationalKeys { dir }
    }

    // Labels reach here checked by the SDK (ASCII letters, digits, `-_.`, not `.`/`..`), so
    // they are plain file names.
    fn key_path(&self, label: &str) -> PathBuf {
        self.dir.join(format!("{label}.key"))
    }

    fn chain_path(&self, label: &str) -> PathBuf {
        self.dir.join(format!("{label}.chain.pem"))
    }

    /// The key under `label`; `None` when there is none.
    fn load(&self, label: &str) -> Result<Option<SigningKey>, HsmError> {
        match secret_file::read(&self.key_path(label)) {
            Ok(bytes) => SigningKey::from_slice(&bytes).map(Some).map_err(|_| {
                HsmError::device(format!(
                    "{} does not hold a P-256 private key",
                    self.key_path(label).display()
                ))
            }),
            Err(e) if e.code() == ErrorCode::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn existing(&self, label: &str) -> Result<SigningKey, HsmError> {
        self.load(label)?.ok_or_else(|| {
            HsmError::not_found(format!("no operational key `{label}` (create it first)"))
        })
    }

    /// Creates the key under `label` unless it exists, and returns its public key.
    pub(crate) fn create(&self, label: &str) -> Result<Vec<u8>, HsmError> {
        if let Some(key) = self.load(label)? {
            return spki(&key);
        }
        let key = SigningKey::random(&mut rand_core::OsRng);
        let bytes = Zeroizing::new(key.to_bytes().to_vec());
        hsm_plugin_sdk::log::warn(&format!(
            "operational key `{label}` is a software key in a 0600 file (symmetric backend): not protected by hardware"
        ));
        if secret_file::create_if_absent(&self.key_path(label), &bytes)? {
            spki(&key)
        } else {
            // Another process created it first: theirs is the key.
            spki(&self.existing(label)?)
        }
    }

    pub(crate) fn public_key(&self, label: &str) -> Result<Vec<u8>, HsmError> {
        spki(&self.existing(label)?)
    }

    pub(crate) fn sign(&self, label: &str, digest: &[u8; 32]) -> Result<Vec<u8>, HsmError> {
        let key = self.existing(label)?;
        let signature: DerSignature = key
            .sign_prehash(digest)
            .map_err(|_| HsmError::internal("ECDSA signing failed"))?;
        Ok(signature.as_bytes().to_vec())
    }

    pub(crate) fn store_chain(&self, label: &str, pem: &str) -> Result<(), HsmError> {
        self.existing(label)?;
        secret_file::write(&self.chain_path(label), pem.as_bytes())
    }

    pub(crate) fn chain(&self, label: &str) -> Result<String, HsmError> {
        let bytes = match secret_file::read_private(&self.chain_path(label)) {
            Err(e) if e.code() == ErrorCode::NotFound => {
                return Err(HsmError::not_found(format!(
                    "no chain stored for operational key `{label}`"
                )))
            }
            other => other?,
        };
        String::from_utf8(bytes).map_err(|_| {
            HsmError::device(format!(
                "{} is not UTF-8 text",
                self.chain_path(label).display()
            ))
        })
    }

    /// Removes the key under `label` and its chain; the chain first, so that an interrupted
    /// delete never leaves a chain without its key.
    pub(crate) fn delete(&self, label: &str) -> Result<(), HsmError> {
        let chain = secret_file::remove(&self.chain_path(label))?;
        if secret_file::remove(&self.key_path(label))? || chain {
            Ok(())
        } else {
            Err(HsmError::not_found(format!(
                "no operational key `{label}` to delete"
            )))
        }
    }
}

/// The public key as a DER SubjectPublicKeyInfo.
fn spki(key: &SigningKey) -> Result<Vec<u8>, HsmError> {
    key.verifying_key()
        .to_public_key_der()
        .map(|d| d.as_bytes().to_vec())
        .map_err(|_| HsmError::internal("cannot encode the public key"))
}
