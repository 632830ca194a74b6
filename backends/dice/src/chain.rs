//! Assembles the device's chain: TLS leaf, CDI, DeviceID, development root CA.

use p256::ecdsa::SigningKey;

use crate::certificates::{
    cdi_certificate_with_criticality, device_id_certificate, leaf_certificate, root_ca_certificate,
    root_ca_name, to_pem, DEFAULT_PROFILE_NAME,
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
    /// The root of the operational keys (ABI 1.2), derived from CDI_Attest (wiped on drop).
    pub operational_root: Secret32,
}

/// The registration id used when none is configured: `dice-` + hex of the first bytes of
/// the DeviceID ID. The DeviceID comes from the UDS alone, so the id survives firmware
/// updates, and two UDSes give two ids.
pub fn default_registration_id(device_id: &[u8; ID_SIZE]) -> String {
    format!("dice-{}", hex::encode(&device_id[..DEFAULT_ID_BYTES]))
}

/// Choices about the chain's form that do not change the derived identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainOptions {
    /// Mark the CDI certificate's OpenDiceInput extension critical, as open-dice's profile
    /// does. `false` is for verifiers that refuse unknown critical extensions.
    pub cdi_extension_critical: bool,
}

impl Default for ChainOptions {
    fn default() -> Self {
        ChainOptions {
            cdi_extension_critical: true,
        }
    }
}

/// Derives the identity from `uds` and `inputs` and builds the four certificates in the
/// open-dice profile ([`ChainOptions::default`]).
pub fn build_chain(
    uds: &Secret32,
    inputs: &DiceInputs,
    root_key: &SigningKey,
    registration_id: Option<&str>,
) -> Result<DeviceChain, DiceError> {
    build_chain_with(
        uds,
        inputs,
        root_key,
        registration_id,
        &ChainOptions::default(),
    )
}

/// [`build_chain`] with explicit [`ChainOptions`].
pub fn build_chain_with(
    uds: &Secret32,
    inputs: &DiceInputs,
    root_key: &SigningKey,
    registration_id: Option<&str>,
    options: &ChainOptions,
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
    let cdi = cdi_certificate_with_criticality(
        identity.cdi.key.verifying_key(),
        &identity.cdi.id,
        &identity.device_id.key,
        &identity.device_id.id,
        inputs,
        DEFAULT_PROFILE_NAME,
        options.cdi_extension_critical,
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
        operational_root: crate::derive::operational_root(&identity.cdis.attest)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certificates::OPEN_DICE_INPUT;
    use crate::derive::Mode;
    use der::Decode;
    use openssl::stack::Stack;
    use openssl::x509::store::X509StoreBuilder;
    use openssl::x509::{X509StoreContext, X509VerifyResult, X509};

    /// open-dice's `kExpectedX509P256Cert_ZeroInput` (also pinned by tests/known_test_values.rs).
    const OPEN_DICE_ZERO_INPUT_CERT: &[u8] =
        include_bytes!("../tests/data/open_dice_x509_p256_zero_input.der");

    fn zero_input_chain(options: &ChainOptions) -> DeviceChain {
        let root_key = SigningKey::from_slice(&[7u8; 32]).unwrap();
        build_chain_with(
            &Secret32::new([0; 32]),
            &DiceInputs::zero(Mode::NotConfigured),
            &root_key,
            Some("dice-kat"),
            options,
        )
        .unwrap()
    }

    /// OpenSSL's verdict on the chain, anchored at its own root, with default flags (no
    /// `-ignore_critical`).
    fn openssl_verdict(chain: &DeviceChain) -> X509VerifyResult {
        let certs: Vec<X509> = chain
            .certificates
            .iter()
            .map(|der| X509::from_der(der).unwrap())
            .collect();
        let mut store = X509StoreBuilder::new().unwrap();
        store.add_cert(certs[3].clone()).unwrap();
        let store = store.build();
        let mut untrusted = Stack::new().unwrap();
        for c in &certs[1..3] {
            untrusted.push(c.clone()).unwrap();
        }
        let mut ctx = X509StoreContext::new().unwrap();
        ctx.init(&store, &certs[0], &untrusted, |c| {
            c.verify_cert()?;
            Ok(c.error())
        })
        .unwrap()
    }

    fn open_dice_input_criticality(cdi_der: &[u8]) -> Option<bool> {
        let cert = x509_cert::Certificate::from_der(cdi_der).unwrap();
        cert.tbs_certificate
            .extensions
            .unwrap_or_default()
            .iter()
            .find(|e| e.extn_id == OPEN_DICE_INPUT)
            .map(|e| e.critical)
    }

    #[test]
    fn default_chain_carries_open_dice_known_test_certificate() {
        let chain = zero_input_chain(&ChainOptions::default());
        assert_eq!(chain.certificates[1], OPEN_DICE_ZERO_INPUT_CERT);
        let same = build_chain(
            &Secret32::new([0; 32]),
            &DiceInputs::zero(Mode::NotConfigured),
            &SigningKey::from_slice(&[7u8; 32]).unwrap(),
            Some("dice-kat"),
        )
        .unwrap();
        assert_eq!(same.certificates, chain.certificates);
    }

    #[test]
    fn critical_extension_is_refused_by_openssl_non_critical_is_verified() {
        let critical = zero_input_chain(&ChainOptions::default());
        assert_eq!(
            open_dice_input_criticality(&critical.certificates[1]),
            Some(true)
        );
        // X509_V_ERR_UNHANDLED_CRITICAL_EXTENSION: why the option exists.
        assert_eq!(openssl_verdict(&critical).as_raw(), 34);

        let relaxed = zero_input_chain(&ChainOptions {
            cdi_extension_critical: false,
        });
        assert_eq!(
            open_dice_input_criticality(&relaxed.certificates[1]),
            Some(false)
        );
        assert_eq!(openssl_verdict(&relaxed), X509VerifyResult::OK);
        // Only the CDI certificate (and the leaf it signs, whose issuer is unchanged) differ in
        // form; the identity stays the same.
        assert_ne!(relaxed.certificates[1], critical.certificates[1]);
        assert_eq!(relaxed.certificates[0], critical.certificates[0]);
        assert_eq!(relaxed.certificates[2..], critical.certificates[2..]);
        assert_eq!(relaxed.cdi_id, critical.cdi_id);
        assert_eq!(relaxed.registration_id, critical.registration_id);
    }
}
