//! The simulated TPM's persistent state: EK and SRK private keys and the imported identity
//! key, in one 0600 file with a small versioned binary layout.

use std::path::{Path, PathBuf};

use hsm_plugin_sdk::{secret_file, ErrorCode, HsmError};
use rsa::pkcs1::{DecodeRsaPrivateKey, EncodeRsaPrivateKey};
use rsa::RsaPrivateKey;
use zeroize::Zeroizing;

/// First bytes of a state file; the last byte is the format version. Version 2 appends the
/// operational keys (ABI 1.2); version 1 files are read as having none and written as 2.
const MAGIC: &[u8; 14] = b"HSMKIT-TPMSIM\x02";
/// The version 1 header.
const MAGIC_V1: &[u8; 14] = b"HSMKIT-TPMSIM\x01";
/// Most operational keys one simulated TPM keeps, so that a corrupt file cannot make it
/// allocate without bound and the file stays small.
pub(crate) const MAX_OPERATIONAL_KEYS: usize = 16;
/// Largest field the decoder accepts, so a corrupt length cannot allocate without bound.
pub(crate) const MAX_FIELD: usize = 16 * 1024;

/// The identity key DPS gave the device.
pub(crate) struct IdentityKey {
    /// TPMT_PUBLIC of the key as DPS sent it.
    pub public: Vec<u8>,
    /// The HMAC key.
    pub key: Zeroizing<Vec<u8>>,
}

/// An operational key (ABI 1.2): a P-256 key the simulated TPM made, and its issued chain.
pub(crate) struct OperationalKey {
    /// The label it was created under.
    pub label: String,
    /// The private scalar (32 bytes).
    pub scalar: Zeroizing<Vec<u8>>,
    /// The issued chain (PEM), empty until one is stored.
    pub chain: String,
}

/// Everything the simulated TPM keeps across restarts.
pub(crate) struct SimState {
    /// Endorsement key (RSA-2048).
    pub ek: RsaPrivateKey,
    /// Storage root key (RSA-2048).
    pub srk: RsaPrivateKey,
    /// The activated identity key, if any.
    pub identity: Option<IdentityKey>,
    /// Operational keys, at most [`MAX_OPERATIONAL_KEYS`].
    pub operational: Vec<OperationalKey>,
}

fn corrupt(path: &Path, why: &str) -> HsmError {
    HsmError::device(format!(
        "simulated TPM state {} is corrupt ({why}); move it away to start with a new TPM",
        path.display()
    ))
}

fn put_field(out: &mut Vec<u8>, bytes: &[u8]) {
    // Fields are bounded by MAX_FIELD, far below u32::MAX.
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
}

fn take_field<'a>(rest: &mut &'a [u8], path: &Path) -> Result<&'a [u8], HsmError> {
    let (len, tail) = rest
        .split_first_chunk::<4>()
        .ok_or_else(|| corrupt(path, "truncated length"))?;
    let len = u32::from_be_bytes(*len) as usize;
    if len > MAX_FIELD || len > tail.len() {
        return Err(corrupt(path, "field length out of range"));
    }
    let (field, tail) = tail.split_at(len);
    *rest = tail;
    Ok(field)
}

impl SimState {
    /// A new TPM: fresh random EK and SRK, no identity key.
    pub(crate) fn generate() -> Result<Self, HsmError> {
        let mut rng = rand::rngs::OsRng;
        let gen = |rng: &mut rand::rngs::OsRng| {
            RsaPrivateKey::new(rng, 2048)
                .map_err(|e| HsmError::internal(format!("RSA key generation failed: {e}")))
        };
        Ok(Self {
            ek: gen(&mut rng)?,
            srk: gen(&mut rng)?,
            identity: None,
            operational: Vec::new(),
        })
    }

    /// Serializes the state.
    pub(crate) fn encode(&self) -> Result<Zeroizing<Vec<u8>>, HsmError> {
        let der = |k: &RsaPrivateKey| {
            k.to_pkcs1_der()
                .map_err(|e| HsmError::internal(format!("cannot encode RSA key: {e}")))
        };
        let ek = der(&self.ek)?;
        let srk = der(&self.srk)?;
        let mut out = Zeroizing::new(Vec::with_capacity(3000));
        out.extend_from_slice(MAGIC);
        put_field(&mut out, ek.as_bytes());
        put_field(&mut out, srk.as_bytes());
        match &self.identity {
            Some(id) => {
                put_field(&mut out, &id.public);
                put_field(&mut out, &id.key);
            }
            None => {
                put_field(&mut out, &[]);
                put_field(&mut out, &[]);
            }
        }
        for key in &self.operational {
            put_field(&mut out, key.label.as_bytes());
            put_field(&mut out, &key.scalar);
            put_field(&mut out, key.chain.as_bytes());
        }
        Ok(out)
    }

    /// Parses a state file's bytes (`path` only names it in errors).
    pub(crate) fn decode(bytes: &[u8], path: &Path) -> Result<Self, HsmError> {
        let (mut rest, v1) = match bytes.strip_prefix(MAGIC.as_slice()) {
            Some(rest) => (rest, false),
            None => (
                bytes
                    .strip_prefix(MAGIC_V1.as_slice())
                    .ok_or_else(|| corrupt(path, "not a tpm-sim state file or unknown version"))?,
                true,
            ),
        };
        let key = |der: &[u8]| {
            RsaPrivateKey::from_pkcs1_der(der).map_err(|_| corrupt(path, "bad RSA key"))
        };
        let ek = key(take_field(&mut rest, path)?)?;
        let srk = key(take_field(&mut rest, path)?)?;
        let public = take_field(&mut rest, path)?;
        let hmac_key = take_field(&mut rest, path)?;
        if v1 && !rest.is_empty() {
            return Err(corrupt(path, "trailing bytes"));
        }
        let mut operational = Vec::new();
        while !rest.is_empty() {
            if operational.len() == MAX_OPERATIONAL_KEYS {
                return Err(corrupt(path, "too many operational keys"));
            }
            let label = std::str::from_utf8(take_field(&mut rest, path)?)
                .map_err(|_| corrupt(path, "operational key label is not UTF-8"))?;
            let scalar = take_field(&mut rest, path)?;
            let chain = std::str::from_utf8(take_field(&mut rest, path)?)
                .map_err(|_| corrupt(path, "operational chain is not UTF-8"))?;
            if scalar.len() != 32 {
                return Err(corrupt(path, "operational key is not a P-256 scalar"));
            }
            operational.push(OperationalKey {
                label: label.to_string(),
                scalar: Zeroizing::new(scalar.to_vec()),
                chain: chain.to_string(),
            });
        }
        let identity = match (public.is_empty(), hmac_key.is_empty()) {
            (true, true) => None,
            (false, false) => Some(IdentityKey {
                public: public.to_vec(),
                key: Zeroizing::new(hmac_key.to_vec()),
            }),
            _ => return Err(corrupt(path, "half an identity key")),
        };
        Ok(Self {
            ek,
            srk,
            identity,
            operational,
        })
    }
}

/// Where the state lives: `<state_dir>/tpm-sim/state`, or `<state_dir>/tpm-sim/<instance>/state`
/// when an instance name is set (several simulated devices sharing one state folder).
pub(crate) fn state_path(state_dir: &Path, instance: Option<&str>) -> Result<PathBuf, HsmError> {
    let base = state_dir.join("tpm-sim");
    match instance {
        None => Ok(base.join("state")),
        Some(name) => {
            let valid = !name.is_empty()
                && name.len() <= 64
                && !name.starts_with('.')
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
            if !valid {
                return Err(HsmError::invalid_argument(
                    "setting `instance` must be 1-64 characters of A-Z a-z 0-9 - _ . and not start with a dot",
                ));
            }
            Ok(base.join(name).join("state"))
        }
    }
}

/// Loads the state at `path`, creating a new TPM there when none exists. Creation is
/// race-free: the new file is linked into place only if no other instance got there first,
/// in which case that instance's TPM is loaded instead.
pub(crate) fn load_or_create(path: &Path) -> Result<SimState, HsmError> {
    match secret_file::read(path) {
        Ok(bytes) => return SimState::decode(&bytes, path),
        Err(e) if e.code() == ErrorCode::NotFound => {}
        Err(e) => return Err(e),
    }
    let state = SimState::generate()?;
    if secret_file::create_if_absent(path, &state.encode()?)? {
        Ok(state)
    } else {
        SimState::decode(&secret_file::read(path)?, path)
    }
}

/// Writes the state back (atomically, 0600).
pub(crate) fn save(path: &Path, state: &SimState) -> Result<(), HsmError> {
    secret_file::write(path, &state.encode()?)
}
