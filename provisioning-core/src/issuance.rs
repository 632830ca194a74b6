//! Certificate issuance during provisioning (DPS with Azure Device Registry): the PKCS#10
//! certificate signing request a device sends in its register call, made for the plugin's
//! operational key (ABI 1.2) and signed inside the plugin, so the private key never leaves it.
//!
//! The request's subject is `CN=<registration id>`, its key the operational key's P-256
//! SubjectPublicKeyInfo as the plugin returns it, its signature ecdsa-with-SHA256 (the plugin
//! signs the SHA-256 digest of the DER `CertificationRequestInfo`, DER `Ecdsa-Sig-Value` out).

use crate::plugin::{OperationalKeyHandle, PluginError};
use der::asn1::{BitString, ObjectIdentifier};
use der::{Decode, Encode};
use sha2::{Digest, Sha256};
use std::str::FromStr;
use x509_cert::name::Name;
use x509_cert::request::{CertReq, CertReqInfo, Version};
use x509_cert::spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};

/// ecdsa-with-SHA256 (RFC 5758), without parameters.
const ECDSA_WITH_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");

/// Why a CSR could not be made.
#[derive(Debug, thiserror::Error)]
pub enum IssuanceError {
    /// The plugin refused or failed a call.
    #[error(transparent)]
    Plugin(#[from] PluginError),
    /// The plugin's public key is not a DER SubjectPublicKeyInfo.
    #[error("the plugin's operational public key is not a DER SubjectPublicKeyInfo: {reason}")]
    PublicKey {
        /// The decoder's complaint.
        reason: String,
    },
    /// The registration id does not make a subject name.
    #[error("registration id `{registration_id}` cannot be a certificate subject: {reason}")]
    Subject {
        /// The id.
        registration_id: String,
        /// The parser's complaint.
        reason: String,
    },
    /// DER encoding failed.
    #[error("cannot encode the certificate signing request: {reason}")]
    Encode {
        /// The encoder's complaint.
        reason: String,
    },
}

fn encode_error(e: der::Error) -> IssuanceError {
    IssuanceError::Encode {
        reason: e.to_string(),
    }
}

/// A DER PKCS#10 request for the operational key under `label` (created when absent), with
/// subject `CN=<registration_id>`, signed by the plugin.
pub fn build_csr(
    ops: &OperationalKeyHandle<'_>,
    label: &str,
    registration_id: &str,
) -> Result<Vec<u8>, IssuanceError> {
    let spki = ops.create_key(label)?;
    let public_key =
        SubjectPublicKeyInfoOwned::from_der(&spki).map_err(|e| IssuanceError::PublicKey {
            reason: e.to_string(),
        })?;
    // DPS registration ids are a-z, 0-9 and `-._:`, none of which RFC 4514 escapes.
    let subject =
        Name::from_str(&format!("CN={registration_id}")).map_err(|e| IssuanceError::Subject {
            registration_id: registration_id.to_string(),
            reason: e.to_string(),
        })?;
    let info = CertReqInfo {
        version: Version::V1,
        subject,
        public_key,
        attributes: Default::default(),
    };
    let tbs = info.to_der().map_err(encode_error)?;
    let digest: [u8; 32] = Sha256::digest(&tbs).into();
    let signature = ops.sign_digest(label, &digest)?;
    let request = CertReq {
        info,
        algorithm: AlgorithmIdentifierOwned {
            oid: ECDSA_WITH_SHA256,
            parameters: None,
        },
        signature: BitString::from_bytes(&signature).map_err(encode_error)?,
    };
    request.to_der().map_err(encode_error)
}
