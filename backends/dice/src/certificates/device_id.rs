//! The DeviceID certificate: the UDS-derived authority key, certified by the development
//! root CA so that DPS group enrollment by CA can trust every device under one root.
//!
//! Its subject (`serialNumber=<UDS ID>`) is exactly the issuer name open-dice puts in the CDI
//! certificate, so the chain links by name as well as by AKI/SKI.

use p256::ecdsa::{SigningKey, VerifyingKey};

use super::{ca_extensions, id_name, Template};
use crate::error::DiceError;
use x509_cert::name::Name;

/// Builds the DeviceID certificate of `device_key` (ID `device_id`), issued by the root CA
/// named `root_name` with key `root_key` (ID `root_id`).
pub fn device_id_certificate(
    device_key: &VerifyingKey,
    device_id: &[u8],
    root_name: &Name,
    root_key: &SigningKey,
    root_id: &[u8],
) -> Result<Vec<u8>, DiceError> {
    const WHICH: &str = "DeviceID";
    let fail = |e: der::Error| DiceError::certificate(WHICH, e);
    let subject = id_name(device_id).map_err(fail)?;
    let extensions = ca_extensions(&subject, root_id, device_id).map_err(fail)?;
    Template {
        which: WHICH,
        serial: device_id,
        issuer: root_name.clone(),
        subject,
        subject_key: device_key,
        extensions,
    }
    .sign(root_key)
}
