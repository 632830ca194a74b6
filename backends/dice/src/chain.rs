//! Assembles the device's chain: TLS leaf, CDI, DeviceID, development root CA.

use p256::ecdsa::SigningKey;

use crate::certificates::{
    cdi_certificate, device_id_certificate, leaf_certificate, root_ca_certificate, root_ca_name,
    to_pem, DEFAULT_PROFILE_NAME,
};
use crate::derive::{derive_identity, id_from_public_key, DiceInputs, Secret32, ID_SIZE};
use crate::error::DiceError;
use crate::settings::validate_registration_id;

/// How many bytes of the DeviceID ID name a device by default (80 bits: collisions need
/// about 2^40 devices).
const DEFAULT_ID_BYTES: usize = 10;

/// A device's identity as DPS sees it, plus the key that proves it.
#[derive(Debug)]
pub struct DeviceChain {
    /// DPS registration id, the leaf certificate's CN.
    pub registration_id: String,
    /// DER certificates in chain order: TLS leaf, CDI, DeviceID, root CA.
    pub certificates: Vec<Vec<u8>>,
    /// The same chain as concatenated PEM blocks.
    pub chain_pem: String,
    /// The TLS leaf private key (zeroized on drop by p256).
    pub leaf_key: SigningKey,
    /// ID of the UDS-derived DeviceID key.
    pub device_id: [u8; ID_SIZE],
    /// ID of the CDI key.
    pub cdi_id: [u8; ID_SIZE],
}

/// The registration id used when none is configured: `dice-` + hex of the first bytes of
/// the DeviceID ID. The DeviceID comes from the UDS alone, so the id survives firmware
/// updates, and two UDSes give two ids.
pub fn default_registration_id(device_id: &[u8; ID_SIZE]) -> String {
    format!("dice-{}", hex::encode(&device_id[..DEFAULT_ID_BYTES]))
}

/// Derives the identity from `uds` and `inputs` and builds the four certificates.
pub fn build_chain(
    uds: &Secret32,
    inputs: &DiceInputs,
    root_key: &SigningKey,
    registration_id: Option<&str>,
) -> Result<DeviceChain, DiceError> {
    let identity = derive_identity(uds, inputs)?;
    let registration_id = match registration_id {
        Some(id) => {
            validate_registration_id(id)?;
            id.to_owned()
        }
        None => default_registration_id(&identity.device_id.id),
    };

    let root_id = id_from_public_key(root_key.verifying_key())?;
    let root_name = root_ca_name(&root_id)?;
    let root = root_ca_certificate(root_key, &root_id)?;
    let device = device_id_certificate(
        identity.device_id.key.verifying_key(),
        &identity.device_id.id,
        &root_name,
        root_key,
        &root_id,
    )?;
    let cdi = cdi_certificate(
        identity.cdi.key.verifying_key(),
        &identity.cdi.id,
        &identity.device_id.key,
        &identity.device_id.id,
        inputs,
        DEFAULT_PROFILE_NAME,
    )?;
    let leaf = leaf_certificate(
        identity.leaf.key.verifying_key(),
        &identity.leaf.id,
        &registration_id,
        &identity.cdi.key,
        &identity.cdi.id,
    )?;

    let certificates = vec![leaf, cdi, device, root];
    let mut chain_pem = String::new();
    for der in &certificates {
        chain_pem.push_str(&to_pem(der)?);
    }
    Ok(DeviceChain {
        registration_id,
        certificates,
        chain_pem,
        leaf_key: identity.leaf.key.clone(),
        device_id: identity.device_id.id,
        cdi_id: identity.cdi.id,
    })
}
