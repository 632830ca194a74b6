//! open-dice key derivation: CDIs, asymmetric key seeds, the HMAC-DRBG P-256 key, IDs.
//!
//! Follows google/open-dice `src/dice.c` (HKDF-SHA512 with its salts and labels) and
//! `src/boringssl_ecdsa_utils.c` (RFC 6979 §3.2 HMAC-DRBG over SHA-512 turning a seed into a
//! P-256 private key), so that another open-dice implementation given the same UDS and inputs
//! derives the same keys and IDs.

use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use p256::ecdsa::{SigningKey, VerifyingKey};
use sha2::{Digest, Sha512};
use zeroize::{Zeroize, Zeroizing};

use crate::error::DiceError;

/// Size of a UDS and of each CDI.
pub const CDI_SIZE: usize = 32;
/// Size of the hash (SHA-512) used by the KDF and for the input hashes.
pub const HASH_SIZE: usize = 64;
/// Size of a DICE ID.
pub const ID_SIZE: usize = 20;

/// `kAsymSalt` of open-dice `src/dice.c`: salt for deriving key pair seeds from a CDI.
const ASYM_SALT: [u8; 64] = [
    0x63, 0xB6, 0xA0, 0x4D, 0x2C, 0x07, 0x7F, 0xC1, 0x0F, 0x63, 0x9F, 0x21, 0xDA, 0x79, 0x38, 0x44,
    0x35, 0x6C, 0xC2, 0xB0, 0xB4, 0x41, 0xB3, 0xA7, 0x71, 0x24, 0x03, 0x5C, 0x03, 0xF8, 0xE1, 0xBE,
    0x60, 0x35, 0xD3, 0x1F, 0x28, 0x28, 0x21, 0xA7, 0x45, 0x0A, 0x02, 0x22, 0x2A, 0xB1, 0xB3, 0xCF,
    0xF1, 0x67, 0x9B, 0x05, 0xAB, 0x1C, 0xA5, 0xD1, 0xAF, 0xFB, 0x78, 0x9C, 0xCD, 0x2B, 0x0B, 0x3B,
];

/// `kIdSalt` of open-dice `src/dice.c`: salt for deriving IDs from public keys.
const ID_SALT: [u8; 64] = [
    0xDB, 0xDB, 0xAE, 0xBC, 0x80, 0x20, 0xDA, 0x9F, 0xF0, 0xDD, 0x5A, 0x24, 0xC8, 0x3A, 0xA5, 0xA5,
    0x42, 0x86, 0xDF, 0xC2, 0x63, 0x03, 0x1E, 0x32, 0x9B, 0x4D, 0xA1, 0x48, 0x43, 0x06, 0x59, 0xFE,
    0x62, 0xCD, 0xB5, 0xB7, 0xE1, 0xE0, 0x0F, 0xC6, 0x80, 0x30, 0x67, 0x11, 0xEB, 0x44, 0x4A, 0xF7,
    0x72, 0x09, 0x35, 0x94, 0x96, 0xFC, 0xFF, 0x1D, 0xB9, 0x52, 0x0B, 0xA5, 0x1C, 0x7B, 0x29, 0xEA,
];

/// HKDF info for the hsmkit TLS leaf key. Not an open-dice label: open-dice stops at the CDI
/// certificate, and DPS needs a non-CA client certificate below it. A distinct label keeps the
/// leaf key independent of the CDI key while still derived from CDI_Attest (so it changes
/// exactly when the measured firmware changes).
const LEAF_KEY_INFO: &[u8] = b"hsmkit TLS Client Key Pair";

/// HKDF info of the root of the operational keys (ABI 1.2), from CDI_Attest. hsmkit's own
/// label, like [`LEAF_KEY_INFO`]: the operational keys are independent of the leaf and CDI
/// keys, and change exactly when the measured firmware changes.
const OPERATIONAL_ROOT_INFO: &[u8] = b"hsmkit Operational Key Root";

/// HKDF info prefix of one operational key; the label follows it.
const OPERATIONAL_KEY_INFO: &[u8] = b"hsmkit Operational Key Pair/";

/// A 32-byte secret (UDS or CDI), wiped from memory when dropped.
#[derive(Clone, zeroize::ZeroizeOnDrop)]
pub struct Secret32([u8; CDI_SIZE]);

impl Secret32 {
    /// Wraps raw secret bytes (the caller's copy should be zeroized by the caller).
    pub fn new(bytes: [u8; CDI_SIZE]) -> Self {
        Secret32(bytes)
    }

    /// The secret bytes.
    pub fn expose(&self) -> &[u8; CDI_SIZE] {
        &self.0
    }
}

impl std::fmt::Debug for Secret32 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret32(<redacted>)")
    }
}

/// The DICE mode input, one byte in the derivation and an ENUMERATED in the certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `kDiceModeNotInitialized` (0).
    NotConfigured = 0,
    /// `kDiceModeNormal` (1).
    Normal = 1,
    /// `kDiceModeDebug` (2).
    Debug = 2,
    /// `kDiceModeMaintenance` (3).
    Maintenance = 3,
}

impl Mode {
    /// The byte fed to the derivation and encoded in the certificate.
    pub fn as_byte(self) -> u8 {
        self as u8
    }
}

impl std::str::FromStr for Mode {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "not-configured" => Ok(Mode::NotConfigured),
            "normal" => Ok(Mode::Normal),
            "debug" => Ok(Mode::Debug),
            "maintenance" => Ok(Mode::Maintenance),
            other => Err(format!(
                "unknown mode {other:?}: expected not-configured, normal, debug or maintenance"
            )),
        }
    }
}

/// The measured inputs of one DICE layer (open-dice `DiceInputValues` with an inline config).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiceInputs {
    /// Hash of the code of the next layer (FWID).
    pub code_hash: [u8; HASH_SIZE],
    /// Inline configuration value.
    pub config: [u8; HASH_SIZE],
    /// Hash of the authority (for example the code signing key).
    pub authority_hash: [u8; HASH_SIZE],
    /// Operating mode.
    pub mode: Mode,
    /// Hidden input: mixed into the CDIs but never put into a certificate.
    pub hidden: [u8; HASH_SIZE],
}

impl DiceInputs {
    /// All-zero inputs in the given mode (open-dice's ZeroInput uses `NotConfigured`).
    pub fn zero(mode: Mode) -> Self {
        DiceInputs {
            code_hash: [0; HASH_SIZE],
            config: [0; HASH_SIZE],
            authority_hash: [0; HASH_SIZE],
            mode,
            hidden: [0; HASH_SIZE],
        }
    }
}

/// The next layer's CDIs.
#[derive(Debug)]
pub struct Cdis {
    /// CDI_Attest: the source of the next layer's attestation key.
    pub attest: Secret32,
    /// CDI_Seal: for sealing data to the authority rather than the exact code.
    pub seal: Secret32,
}

/// HKDF-SHA512 of open-dice's `kdf` op.
fn kdf(ikm: &[u8], salt: &[u8], info: &[u8], out: &mut [u8]) -> Result<(), DiceError> {
    Hkdf::<Sha512>::new(Some(salt), ikm)
        .expand(info, out)
        .map_err(|_| DiceError::Derivation("HKDF-SHA512 output length"))
}

/// `DiceMainFlow`'s CDI step: CDI_Attest from all inputs, CDI_Seal from authority, mode and
/// hidden only. For the first layer both current CDIs are the UDS.
pub fn derive_cdis(
    current_attest: &Secret32,
    current_seal: &Secret32,
    inputs: &DiceInputs,
) -> Result<Cdis, DiceError> {
    // code || config || authority || mode || hidden, as open-dice lays out its input buffer.
    let mut buffer = Zeroizing::new([0u8; 4 * HASH_SIZE + 1]);
    buffer[..64].copy_from_slice(&inputs.code_hash);
    buffer[64..128].copy_from_slice(&inputs.config);
    buffer[128..192].copy_from_slice(&inputs.authority_hash);
    buffer[192] = inputs.mode.as_byte();
    buffer[193..].copy_from_slice(&inputs.hidden);

    let attest_hash = Zeroizing::new(Sha512::digest(&buffer[..]));
    let seal_hash = Zeroizing::new(Sha512::digest(&buffer[128..]));

    let mut attest = [0u8; CDI_SIZE];
    let mut seal = [0u8; CDI_SIZE];
    let result = kdf(
        current_attest.expose(),
        &attest_hash,
        b"CDI_Attest",
        &mut attest,
    )
    .and_then(|()| kdf(current_seal.expose(), &seal_hash, b"CDI_Seal", &mut seal));
    let cdis = Cdis {
        attest: Secret32::new(attest),
        seal: Secret32::new(seal),
    };
    attest.zeroize();
    seal.zeroize();
    result.map(|()| cdis)
}

/// `DiceDeriveCdiPrivateKey`: the key pair seed of a UDS or CDI_Attest.
pub fn key_pair_seed(secret: &Secret32) -> Result<Secret32, DiceError> {
    let mut seed = [0u8; CDI_SIZE];
    let result = kdf(secret.expose(), &ASYM_SALT, b"Key Pair", &mut seed);
    let wrapped = Secret32::new(seed);
    seed.zeroize();
    result.map(|()| wrapped)
}

/// The seed of the hsmkit TLS leaf key, from CDI_Attest (HKDF info "hsmkit TLS Client Key Pair").
pub fn leaf_key_seed(cdi_attest: &Secret32) -> Result<Secret32, DiceError> {
    let mut seed = [0u8; CDI_SIZE];
    let result = kdf(cdi_attest.expose(), &ASYM_SALT, LEAF_KEY_INFO, &mut seed);
    let wrapped = Secret32::new(seed);
    seed.zeroize();
    result.map(|()| wrapped)
}

/// The root the operational keys derive from: HKDF of CDI_Attest with hsmkit's label.
pub fn operational_root(cdi_attest: &Secret32) -> Result<Secret32, DiceError> {
    let mut seed = [0u8; CDI_SIZE];
    let result = kdf(
        cdi_attest.expose(),
        &ASYM_SALT,
        OPERATIONAL_ROOT_INFO,
        &mut seed,
    );
    let wrapped = Secret32::new(seed);
    seed.zeroize();
    result.map(|()| wrapped)
}

/// The P-256 operational key under `label`: HKDF of the operational root with the label in
/// its info, then open-dice's key-from-seed. The same root and label give the same key, so it
/// is never stored.
pub fn operational_key(root: &Secret32, label: &str) -> Result<SigningKey, DiceError> {
    let mut info = OPERATIONAL_KEY_INFO.to_vec();
    info.extend_from_slice(label.as_bytes());
    let mut seed = [0u8; CDI_SIZE];
    let result = kdf(root.expose(), &ASYM_SALT, &info, &mut seed);
    let wrapped = Secret32::new(seed);
    seed.zeroize();
    result?;
    p256_key_from_seed(&wrapped)
}

type HmacSha512 = Hmac<Sha512>;

/// HMAC-SHA512(key, parts...) into `out`.
fn hmac_into(key: &[u8; 64], parts: &[&[u8]], out: &mut [u8; 64]) -> Result<(), DiceError> {
    let mut mac = <HmacSha512 as Mac>::new_from_slice(key)
        .map_err(|_| DiceError::Derivation("HMAC-SHA512 key length"))?;
    for part in parts {
        mac.update(part);
    }
    out.copy_from_slice(&mac.finalize().into_bytes());
    Ok(())
}

/// open-dice `P256KeypairFromSeed`: RFC 6979 §3.2 HMAC-DRBG (SHA-512, no nonce or
/// personalization) seeded with `seed`; the first 32 bytes of each output block are a
/// candidate, rejected while zero or not below the group order.
pub fn p256_key_from_seed(seed: &Secret32) -> Result<SigningKey, DiceError> {
    let mut v = Zeroizing::new([1u8; 64]);
    let mut k = Zeroizing::new([0u8; 64]);
    let mut scratch = Zeroizing::new([0u8; 64]);

    hmac_into(&k, &[&v[..], &[0x00], seed.expose()], &mut scratch)?;
    k.copy_from_slice(&scratch[..]);
    hmac_into(&k, &[&v[..]], &mut scratch)?;
    v.copy_from_slice(&scratch[..]);
    hmac_into(&k, &[&v[..], &[0x01], seed.expose()], &mut scratch)?;
    k.copy_from_slice(&scratch[..]);

    // The chance of a rejection is about 2^-32 per round; the bound only guards against a
    // broken HMAC looping forever.
    for _ in 0..64 {
        hmac_into(&k, &[&v[..]], &mut scratch)?;
        v.copy_from_slice(&scratch[..]);
        hmac_into(&k, &[&v[..]], &mut scratch)?;
        v.copy_from_slice(&scratch[..]);
        // from_slice rejects exactly 0 and values >= n, open-dice's rejection rule.
        let candidate = SigningKey::from_slice(&v[..32]);
        hmac_into(&k, &[&v[..], &[0x00]], &mut scratch)?;
        k.copy_from_slice(&scratch[..]);
        if let Ok(key) = candidate {
            return Ok(key);
        }
    }
    Err(DiceError::Derivation(
        "HMAC-DRBG found no valid P-256 scalar",
    ))
}

/// `DiceDeriveCdiCertificateId`: 20 bytes from the raw public key X||Y, top bit cleared so the
/// ID is a positive INTEGER when used as a certificate serial number.
pub fn id_from_public_key(key: &VerifyingKey) -> Result<[u8; ID_SIZE], DiceError> {
    let point = key.to_encoded_point(false);
    // Uncompressed SEC1: 0x04 || X || Y; open-dice hashes X || Y.
    let raw = point
        .as_bytes()
        .get(1..)
        .ok_or(DiceError::Derivation("public key encoding"))?;
    let mut id = [0u8; ID_SIZE];
    kdf(raw, &ID_SALT, b"ID", &mut id)?;
    id[0] &= 0x7f;
    Ok(id)
}

/// A P-256 key with its DICE ID.
#[derive(Debug)]
pub struct IdentifiedKey {
    /// The private key (p256 zeroizes it on drop).
    pub key: SigningKey,
    /// ID of the public key.
    pub id: [u8; ID_SIZE],
}

impl IdentifiedKey {
    fn from_seed(seed: &Secret32) -> Result<Self, DiceError> {
        let key = p256_key_from_seed(seed)?;
        let id = id_from_public_key(key.verifying_key())?;
        Ok(IdentifiedKey { key, id })
    }
}

/// Everything one DICE layer derives from the UDS and its inputs.
#[derive(Debug)]
pub struct DiceIdentity {
    /// Authority (DeviceID) key, from the UDS: stable across firmware updates.
    pub device_id: IdentifiedKey,
    /// Subject (CDI / Alias) key, from CDI_Attest: changes with the measured inputs.
    pub cdi: IdentifiedKey,
    /// TLS client key below the CDI key, also from CDI_Attest.
    pub leaf: IdentifiedKey,
    /// The derived CDIs (kept for sealing; zeroized on drop).
    pub cdis: Cdis,
}

/// Runs the first DICE layer: UDS → CDIs → DeviceID, CDI and leaf keys with their IDs.
pub fn derive_identity(uds: &Secret32, inputs: &DiceInputs) -> Result<DiceIdentity, DiceError> {
    let cdis = derive_cdis(uds, uds, inputs)?;
    let device_id = IdentifiedKey::from_seed(&key_pair_seed(uds)?)?;
    let cdi = IdentifiedKey::from_seed(&key_pair_seed(&cdis.attest)?)?;
    let leaf = IdentifiedKey::from_seed(&leaf_key_seed(&cdis.attest)?)?;
    Ok(DiceIdentity {
        device_id,
        cdi,
        leaf,
        cdis,
    })
}
