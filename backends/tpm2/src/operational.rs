//! Operational keys (ABI 1.2) on the TPM: where they are kept and how their files read.
//!
//! A key is made by TPM2_Create under the SRK (see [`crate::device::TpmDevice::create_operational_key`]):
//! its private part leaves the TPM only wrapped by the SRK, so the blob is useless to any other
//! TPM. By default the blob is kept, one file per label, in
//! `<state_dir>/tpm2/operational/<label>.key` and loaded for each signature. With the setting
//! `operational_key_persistent_handle` the key is instead persisted at that owner handle (one
//! key per TPM), and the file records the handle and the public area, so that another object
//! found there later is never taken for the key. The issued chain is `<label>.chain.pem`
//! beside it, byte for byte. Files are 0600, written through hsm-secure-fs (random `O_EXCL`
//! temp file and rename).
//!
//! Key file format (big-endian, TPM marshalling): the magic `HKTPM2OK`, a version byte (1), a
//! kind byte, then for kind 0 (blob) a TPM2B_PUBLIC and a TPM2B_PRIVATE, for kind 1
//! (persistent) the handle (UINT32) and a TPM2B_PUBLIC; nothing after.

use std::path::{Path, PathBuf};

use hsm_plugin_sdk::hsm_api::is_valid_operational_key_label;
use hsm_plugin_sdk::{secret_file, ErrorCode, HsmError};
use hsm_tpm_common::marshal::{put_tpm2b, put_u32, Reader};
use p256::elliptic_curve::sec1::FromEncodedPoint;
use p256::pkcs8::EncodePublicKey;
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::structures::{Private, Public};
use tss_esapi::traits::{Marshall, UnMarshall};

/// First bytes of every key file.
const MAGIC: &[u8; 8] = b"HKTPM2OK";
/// The key file format this code writes and reads.
const VERSION: u8 = 1;
const KIND_BLOB: u8 = 0;
const KIND_PERSISTENT: u8 = 1;
/// A key file is a few hundred bytes; anything much larger is not one.
const MAX_KEY_FILE: usize = 4096;

/// Where one operational key lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyRecord {
    /// A TPM-wrapped blob, loaded under the SRK for each use.
    Blob {
        /// Its public area.
        public: Public,
        /// Its private part, encrypted and integrity-protected by the SRK.
        private: Private,
    },
    /// Persisted at an owner handle.
    Persistent {
        /// The persistent handle.
        handle: u32,
        /// Its public area, compared with what the handle holds before each use.
        public: Public,
    },
}

impl KeyRecord {
    /// The key's public area.
    pub fn public(&self) -> &Public {
        match self {
            KeyRecord::Blob { public, .. } | KeyRecord::Persistent { public, .. } => public,
        }
    }

    /// The key file's bytes.
    pub fn encode(&self) -> Result<Vec<u8>, HsmError> {
        let mut out = MAGIC.to_vec();
        out.push(VERSION);
        let public = self
            .public()
            .marshall()
            .map_err(|e| HsmError::internal(format!("marshalling the public area: {e}")))?;
        let wire = |e: hsm_tpm_common::TpmWireError| HsmError::internal(e.to_string());
        match self {
            KeyRecord::Blob { private, .. } => {
                out.push(KIND_BLOB);
                put_tpm2b(&mut out, &public, "TPM2B_PUBLIC").map_err(wire)?;
                put_tpm2b(&mut out, private.value(), "TPM2B_PRIVATE").map_err(wire)?;
            }
            KeyRecord::Persistent { handle, .. } => {
                out.push(KIND_PERSISTENT);
                put_u32(&mut out, *handle);
                put_tpm2b(&mut out, &public, "TPM2B_PUBLIC").map_err(wire)?;
            }
        }
        Ok(out)
    }

    /// Reads a key file's bytes; `path` only names the file in errors. Anything but a whole
    /// record of a P-256 signing key is an error saying the file is damaged.
    pub fn decode(bytes: &[u8], path: &Path) -> Result<Self, HsmError> {
        let corrupt = |why: String| {
            HsmError::device(format!(
                "{} is not a valid tpm2 operational key file ({why}); delete the key (or the \
                 file) and create it again",
                path.display()
            ))
        };
        let wire = |e: hsm_tpm_common::TpmWireError| corrupt(e.to_string());
        if bytes.len() > MAX_KEY_FILE {
            return Err(corrupt(format!("{} bytes", bytes.len())));
        }
        let mut r = Reader::new(bytes);
        if r.take(MAGIC.len(), "magic").map_err(wire)? != MAGIC {
            return Err(corrupt("wrong magic".into()));
        }
        let version = r.take(1, "version").map_err(wire)?[0];
        if version != VERSION {
            return Err(corrupt(format!(
                "format version {version}, expected {VERSION}"
            )));
        }
        let kind = r.take(1, "kind").map_err(wire)?[0];
        let public_of = |bytes: &[u8]| {
            let public =
                Public::unmarshall(bytes).map_err(|e| corrupt(format!("public area: {e}")))?;
            spki(&public).map_err(|e| corrupt(format!("public area: {}", e.message())))?;
            Ok::<_, HsmError>(public)
        };
        let record = match kind {
            KIND_BLOB => {
                let public = public_of(r.tpm2b("TPM2B_PUBLIC").map_err(wire)?)?;
                let private = r.tpm2b("TPM2B_PRIVATE").map_err(wire)?;
                let private = Private::try_from(private.to_vec())
                    .map_err(|e| corrupt(format!("private part: {e}")))?;
                KeyRecord::Blob { public, private }
            }
            KIND_PERSISTENT => {
                let handle = r.u32("handle").map_err(wire)?;
                if !(0x8100_0000..=0x817f_ffff).contains(&handle) {
                    return Err(corrupt(format!(
                        "handle {handle:#010x} is not an owner persistent handle"
                    )));
                }
                let public = public_of(r.tpm2b("TPM2B_PUBLIC").map_err(wire)?)?;
                KeyRecord::Persistent { handle, public }
            }
            other => return Err(corrupt(format!("unknown kind {other}"))),
        };
        r.finish("key file").map_err(wire)?;
        Ok(record)
    }
}

/// The public key of a TPM P-256 signing key as a DER SubjectPublicKeyInfo; any other key
/// is an error.
pub fn spki(public: &Public) -> Result<Vec<u8>, HsmError> {
    let Public::Ecc {
        object_attributes,
        parameters,
        unique,
        ..
    } = public
    else {
        return Err(HsmError::device("not an ECC key"));
    };
    if parameters.ecc_curve() != EccCurve::NistP256 {
        return Err(HsmError::device("not a P-256 key"));
    }
    if !object_attributes.sign_encrypt() || object_attributes.restricted() {
        return Err(HsmError::device("not an unrestricted signing key"));
    }
    let coordinate = |v: &[u8]| -> Result<p256::FieldBytes, HsmError> {
        let mut out = p256::FieldBytes::default();
        let start = out
            .len()
            .checked_sub(v.len())
            .ok_or_else(|| HsmError::device("an ECC coordinate longer than P-256's"))?;
        out[start..].copy_from_slice(v);
        Ok(out)
    };
    let point = p256::EncodedPoint::from_affine_coordinates(
        &coordinate(unique.x().value())?,
        &coordinate(unique.y().value())?,
        false,
    );
    let key = Option::<p256::PublicKey>::from(p256::PublicKey::from_encoded_point(&point))
        .ok_or_else(|| HsmError::device("the public point is not on P-256"))?;
    key.to_public_key_der()
        .map(|d| d.as_bytes().to_vec())
        .map_err(|_| HsmError::internal("cannot encode the public key"))
}

/// Refuses a label that is not a plain file name. The SDK checks labels before they reach the
/// plugin; this repeats it because the label becomes a path here, and the library is also
/// called directly.
pub fn check_label(label: &str) -> Result<(), HsmError> {
    if is_valid_operational_key_label(label) {
        Ok(())
    } else {
        Err(HsmError::invalid_argument(format!(
            "invalid operational key label `{}` (1-64 of A-Z a-z 0-9 - _ ., not . or ..)",
            label.escape_debug()
        )))
    }
}

/// The folder holding one TPM's operational key files.
#[derive(Debug, Clone)]
pub struct KeyFiles {
    dir: PathBuf,
}

/// A missing key, as the ABI wants it.
pub fn not_found(label: &str) -> HsmError {
    HsmError::not_found(format!("no operational key `{label}` (create it first)"))
}

impl KeyFiles {
    /// The key files under `<state_dir>/tpm2/operational/`.
    pub fn new(state_dir: &Path) -> Self {
        KeyFiles {
            dir: state_dir.join("tpm2").join("operational"),
        }
    }

    /// The key file of `label` (checked).
    pub fn key_path(&self, label: &str) -> PathBuf {
        self.dir.join(format!("{label}.key"))
    }

    /// The chain file of `label` (checked).
    pub fn chain_path(&self, label: &str) -> PathBuf {
        self.dir.join(format!("{label}.chain.pem"))
    }

    /// The record under `label`, `None` when there is none.
    pub fn read(&self, label: &str) -> Result<Option<KeyRecord>, HsmError> {
        let path = self.key_path(label);
        match secret_file::read(&path) {
            Ok(bytes) => KeyRecord::decode(&bytes, &path).map(Some),
            Err(e) if e.code() == ErrorCode::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The record under `label`; NotFound when there is none.
    pub fn existing(&self, label: &str) -> Result<KeyRecord, HsmError> {
        self.read(label)?.ok_or_else(|| not_found(label))
    }

    /// Writes the record under `label` unless one exists: true when this call wrote it.
    pub fn create(&self, label: &str, record: &KeyRecord) -> Result<bool, HsmError> {
        secret_file::create_if_absent(&self.key_path(label), &record.encode()?)
    }

    /// Stores the chain of an existing key, replacing any earlier one.
    pub fn store_chain(&self, label: &str, pem: &str) -> Result<(), HsmError> {
        self.existing(label)?;
        secret_file::write(&self.chain_path(label), pem.as_bytes())
    }

    /// The chain of an existing key, as stored.
    pub fn chain(&self, label: &str) -> Result<String, HsmError> {
        // A chain left beside no key (a removal cut short) is not answered for.
        self.existing(label)?;
        let path = self.chain_path(label);
        let bytes = match secret_file::read_private(&path) {
            Err(e) if e.code() == ErrorCode::NotFound => {
                return Err(HsmError::not_found(format!(
                    "no chain stored for operational key `{label}`"
                )))
            }
            other => other?,
        };
        String::from_utf8(bytes)
            .map_err(|_| HsmError::device(format!("{} is not UTF-8 text", path.display())))
    }

    /// Removes the chain, then the key file; false when there was no key file.
    pub fn remove(&self, label: &str) -> Result<bool, HsmError> {
        secret_file::remove(&self.chain_path(label))?;
        secret_file::remove(&self.key_path(label))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tss_esapi::interface_types::algorithm::HashingAlgorithm;
    use tss_esapi::structures::{EccParameter, EccPoint, EccScheme, HashScheme};

    /// The operational template with a software key's point in it, as the TPM would return.
    fn public_with_point() -> (Public, p256::PublicKey) {
        let key = p256::SecretKey::random(&mut rand::rngs::OsRng).public_key();
        let point = p256::elliptic_curve::sec1::ToEncodedPoint::to_encoded_point(&key, false);
        let template = tss_esapi::utils::create_unrestricted_signing_ecc_public(
            EccScheme::EcDsa(HashScheme::new(HashingAlgorithm::Sha256)),
            EccCurve::NistP256,
        )
        .unwrap();
        let Public::Ecc {
            object_attributes,
            name_hashing_algorithm,
            auth_policy,
            parameters,
            ..
        } = template
        else {
            unreachable!()
        };
        let public = Public::Ecc {
            object_attributes,
            name_hashing_algorithm,
            auth_policy,
            parameters,
            unique: EccPoint::new(
                EccParameter::try_from(point.x().unwrap().to_vec()).unwrap(),
                EccParameter::try_from(point.y().unwrap().to_vec()).unwrap(),
            ),
        };
        (public, key)
    }

    #[test]
    fn records_round_trip_and_give_the_spki() {
        let (public, key) = public_with_point();
        let der = spki(&public).unwrap();
        assert_eq!(der, key.to_public_key_der().unwrap().as_bytes());
        let path = Path::new("/x/op.key");
        for record in [
            KeyRecord::Blob {
                public: public.clone(),
                private: Private::try_from(vec![7u8; 120]).unwrap(),
            },
            KeyRecord::Persistent {
                handle: 0x8100_0200,
                public: public.clone(),
            },
        ] {
            let bytes = record.encode().unwrap();
            assert_eq!(&bytes[..8], MAGIC);
            assert_eq!(KeyRecord::decode(&bytes, path).unwrap(), record);
        }
    }

    #[test]
    fn damaged_files_are_clear_errors() {
        let (public, _) = public_with_point();
        let good = KeyRecord::Blob {
            public,
            private: Private::try_from(vec![7u8; 120]).unwrap(),
        }
        .encode()
        .unwrap();
        let path = Path::new("/state/tpm2/operational/op.key");
        let mut cases: Vec<(Vec<u8>, &str)> = vec![
            (Vec::new(), "magic"),
            (b"garbage that is not a key".to_vec(), "wrong magic"),
            (good[..good.len() - 1].to_vec(), "TPM2B_PRIVATE"),
            ([&good[..], &[0]].concat(), "trailing"),
            (vec![0; MAX_KEY_FILE + 1], "bytes"),
        ];
        let mut version = good.clone();
        version[8] = 9;
        cases.push((version, "format version 9"));
        let mut kind = good.clone();
        kind[9] = 5;
        cases.push((kind, "unknown kind 5"));
        // A public area that is not the ECC one (its type changed to RSA).
        let mut rsa = good.clone();
        rsa[12..14].copy_from_slice(&0x0001u16.to_be_bytes());
        cases.push((rsa, "public area"));
        for (bytes, why) in cases {
            let e = KeyRecord::decode(&bytes, path).unwrap_err();
            assert_eq!(e.code(), ErrorCode::Device, "{why}");
            let m = e.message();
            assert!(m.contains(&path.display().to_string()), "{m}");
            assert!(m.contains("not a valid tpm2 operational key file"), "{m}");
            assert!(m.to_lowercase().contains(&why.to_lowercase()), "{why}: {m}");
        }
    }

    #[test]
    fn labels_that_are_not_file_names_are_refused() {
        for bad in ["", ".", "..", "a/b", "../x", "a b", &"x".repeat(65)] {
            assert_eq!(
                check_label(bad).unwrap_err().code(),
                ErrorCode::InvalidArgument,
                "{bad:?}"
            );
        }
        check_label("hsmkit-operational").unwrap();
    }
}
