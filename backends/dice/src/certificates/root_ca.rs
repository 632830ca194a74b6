//! The self-signed development root CA: one key per state folder (or one given key shared by
//! a fleet), so that DPS group enrollment by CA can trust it once for all devices under it.

use p256::ecdsa::SigningKey;
use x509_cert::name::Name;

use super::{ca_extensions, named, Template};
use crate::error::DiceError;

const ORGANIZATION: &str = "hsmkit development (not for production)";
const COMMON_NAME: &str = "hsmkit DICE development root CA";

/// The root CA's name: fixed O and CN plus `serialNumber=<root key ID>`, so that two
/// different development roots never share a name.
pub fn root_ca_name(root_id: &[u8]) -> Result<Name, DiceError> {
    named(Some(ORGANIZATION), COMMON_NAME, Some(root_id))
        .map_err(|e| DiceError::certificate("root CA", e))
}

/// Builds the self-signed root CA certificate of `root_key` (ID `root_id`).
pub fn root_ca_certificate(root_key: &SigningKey, root_id: &[u8]) -> Result<Vec<u8>, DiceError> {
    const WHICH: &str = "root CA";
    let fail = |e: der::Error| DiceError::certificate(WHICH, e);
    let name = root_ca_name(root_id)?;
    let extensions = ca_extensions(&name, root_id, root_id).map_err(fail)?;
    Template {
        which: WHICH,
        serial: root_id,
        issuer: name.clone(),
        subject: name,
        subject_key: root_key.verifying_key(),
        extensions,
    }
    .sign(root_key)
}
