//! TPMT_PUBLIC / TPM2B_PUBLIC: parsing, marshalling, object names, and the EK, SRK and
//! DPS identity-key templates.

use sha2::{Digest, Sha256};

use crate::alg::{self, attr};
use crate::error::{Result, TpmWireError};
use crate::marshal::{put_tpm2b, put_u16, put_u32, Reader};

/// Largest RSA modulus a TPM2B_PUBLIC_KEY_RSA may carry (4096-bit keys).
const MAX_RSA_KEY_BYTES: usize = 512;
/// Largest TPM2B_DIGEST (SHA-512).
const MAX_DIGEST_BYTES: usize = 64;
/// Largest ECC coordinate (P-521 rounded up).
const MAX_ECC_KEY_BYTES: usize = 128;
/// Largest TPMT_PUBLIC this library accepts inside a TPM2B_PUBLIC.
pub const MAX_PUBLIC_BYTES: usize = 1024;

/// The authPolicy of the TCG default EK templates: PolicySecret(TPM_RH_ENDORSEMENT).
pub const EK_AUTH_POLICY_SHA256: [u8; 32] = [
    0x83, 0x71, 0x97, 0x67, 0x44, 0x84, 0xb3, 0xf8, 0x1a, 0x90, 0xcc, 0x8d, 0x46, 0xa5, 0xd7, 0x24,
    0xfd, 0x52, 0xd7, 0x6e, 0x06, 0x52, 0x0b, 0x64, 0xf2, 0xa1, 0xda, 0x1b, 0x33, 0x14, 0x69, 0xaa,
];

/// TPMA_OBJECT of the TCG EK template (L-1): fixedTPM, fixedParent, sensitiveDataOrigin,
/// adminWithPolicy, restricted, decrypt.
pub const EK_ATTRIBUTES: u32 = attr::FIXED_TPM
    | attr::FIXED_PARENT
    | attr::SENSITIVE_DATA_ORIGIN
    | attr::ADMIN_WITH_POLICY
    | attr::RESTRICTED
    | attr::DECRYPT;

/// TPMA_OBJECT of the TCG SRK template: like the EK but usable with a password (userWithAuth)
/// and exempt from dictionary-attack lockout (noDA) instead of the policy.
pub const SRK_ATTRIBUTES: u32 = attr::FIXED_TPM
    | attr::FIXED_PARENT
    | attr::SENSITIVE_DATA_ORIGIN
    | attr::USER_WITH_AUTH
    | attr::NO_DA
    | attr::RESTRICTED
    | attr::DECRYPT;

/// TPMA_OBJECT of the DPS identity key: sign, noDA, userWithAuth (0x00040440).
pub const IDENTITY_KEY_ATTRIBUTES: u32 = attr::SIGN_ENCRYPT | attr::NO_DA | attr::USER_WITH_AUTH;

/// TPMT_SYM_DEF_OBJECT: the symmetric algorithm of a storage key (`algorithm` = TPM_ALG_NULL
/// for none, then `key_bits` and `mode` are not on the wire and must be 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SymDef {
    /// TPM_ALG_ID of the block cipher, or TPM_ALG_NULL.
    pub algorithm: u16,
    /// Key size in bits.
    pub key_bits: u16,
    /// TPM_ALG_ID of the mode (CFB for storage keys).
    pub mode: u16,
}

impl SymDef {
    /// AES-128-CFB, the storage-key cipher of every template here.
    pub const AES_128_CFB: SymDef = SymDef {
        algorithm: alg::TPM_ALG_AES,
        key_bits: 128,
        mode: alg::TPM_ALG_CFB,
    };
    /// No symmetric algorithm.
    pub const NULL: SymDef = SymDef {
        algorithm: alg::TPM_ALG_NULL,
        key_bits: 0,
        mode: 0,
    };

    fn read(r: &mut Reader<'_>) -> Result<Self> {
        let algorithm = r.u16("TPMT_SYM_DEF_OBJECT.algorithm")?;
        if algorithm == alg::TPM_ALG_NULL {
            return Ok(Self::NULL);
        }
        Ok(Self {
            algorithm,
            key_bits: r.u16("TPMT_SYM_DEF_OBJECT.keyBits")?,
            mode: r.u16("TPMT_SYM_DEF_OBJECT.mode")?,
        })
    }

    fn write(&self, out: &mut Vec<u8>) {
        put_u16(out, self.algorithm);
        if self.algorithm != alg::TPM_ALG_NULL {
            put_u16(out, self.key_bits);
            put_u16(out, self.mode);
        }
    }
}

/// A signing/encryption/KDF scheme selector: the scheme id and, where the scheme has one, its
/// hash (TPM_ALG_NULL otherwise) and ECDAA count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scheme {
    /// TPM_ALG_ID of the scheme, TPM_ALG_NULL for none.
    pub scheme: u16,
    /// Hash algorithm of the scheme, TPM_ALG_NULL when it has none.
    pub hash_alg: u16,
    /// ECDAA commit count (only for TPM_ALG_ECDAA).
    pub count: u16,
}

/// TPM_ALG_RSAES: the one asymmetric scheme whose details are empty.
const TPM_ALG_RSAES: u16 = 0x0015;
/// TPM_ALG_ECDAA: details carry a count after the hash.
const TPM_ALG_ECDAA: u16 = 0x001A;

impl Scheme {
    /// No scheme.
    pub const NULL: Scheme = Scheme {
        scheme: alg::TPM_ALG_NULL,
        hash_alg: alg::TPM_ALG_NULL,
        count: 0,
    };

    fn read_asym(r: &mut Reader<'_>, what: &'static str) -> Result<Self> {
        let scheme = r.u16(what)?;
        match scheme {
            alg::TPM_ALG_NULL => Ok(Self::NULL),
            TPM_ALG_RSAES => Ok(Self {
                scheme,
                ..Self::NULL
            }),
            TPM_ALG_ECDAA => Ok(Self {
                scheme,
                hash_alg: r.u16(what)?,
                count: r.u16(what)?,
            }),
            _ => Ok(Self {
                scheme,
                hash_alg: r.u16(what)?,
                count: 0,
            }),
        }
    }

    fn write_asym(&self, out: &mut Vec<u8>) {
        put_u16(out, self.scheme);
        match self.scheme {
            alg::TPM_ALG_NULL | TPM_ALG_RSAES => {}
            TPM_ALG_ECDAA => {
                put_u16(out, self.hash_alg);
                put_u16(out, self.count);
            }
            _ => put_u16(out, self.hash_alg),
        }
    }

    /// Reads a scheme that is either NULL or carries exactly a hash (TPMT_KDF_SCHEME).
    fn read_hash_only(r: &mut Reader<'_>, what: &'static str) -> Result<Self> {
        let scheme = r.u16(what)?;
        if scheme == alg::TPM_ALG_NULL {
            return Ok(Self::NULL);
        }
        Ok(Self {
            scheme,
            hash_alg: r.u16(what)?,
            count: 0,
        })
    }

    fn write_hash_only(&self, out: &mut Vec<u8>) {
        put_u16(out, self.scheme);
        if self.scheme != alg::TPM_ALG_NULL {
            put_u16(out, self.hash_alg);
        }
    }
}

/// TPMU_PUBLIC_PARMS for the object types this library handles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicParameters {
    /// TPMS_RSA_PARMS.
    Rsa {
        /// Symmetric algorithm for a storage key.
        symmetric: SymDef,
        /// Asymmetric scheme.
        scheme: Scheme,
        /// Modulus size in bits.
        key_bits: u16,
        /// Public exponent, 0 meaning 65537.
        exponent: u32,
    },
    /// TPMS_KEYEDHASH_PARMS. For XOR the `count` field of [`Scheme`] holds the KDF id.
    KeyedHash {
        /// HMAC, XOR or NULL.
        scheme: Scheme,
    },
    /// TPMS_ECC_PARMS.
    Ecc {
        /// Symmetric algorithm for a storage key.
        symmetric: SymDef,
        /// Asymmetric scheme.
        scheme: Scheme,
        /// TPM_ECC_CURVE.
        curve_id: u16,
        /// TPMT_KDF_SCHEME.
        kdf: Scheme,
    },
    /// TPMS_SYMCIPHER_PARMS.
    SymCipher {
        /// The cipher of the key.
        symmetric: SymDef,
    },
}

/// TPMU_PUBLIC_ID: the unique field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicUnique {
    /// RSA modulus (big-endian).
    Rsa(Vec<u8>),
    /// Keyed-hash or symmetric binding digest.
    Digest(Vec<u8>),
    /// ECC point.
    Ecc {
        /// X coordinate.
        x: Vec<u8>,
        /// Y coordinate.
        y: Vec<u8>,
    },
}

/// A TPMT_PUBLIC: the public area of a TPM object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicArea {
    /// Name algorithm.
    pub name_alg: u16,
    /// TPMA_OBJECT bits.
    pub object_attributes: u32,
    /// authPolicy digest (may be empty).
    pub auth_policy: Vec<u8>,
    /// Type-specific parameters; also decides the object type.
    pub parameters: PublicParameters,
    /// The unique field; its variant must fit the type.
    pub unique: PublicUnique,
}

impl PublicArea {
    /// The TPMI_ALG_PUBLIC type of the object.
    pub fn object_type(&self) -> u16 {
        match self.parameters {
            PublicParameters::Rsa { .. } => alg::TPM_ALG_RSA,
            PublicParameters::KeyedHash { .. } => alg::TPM_ALG_KEYEDHASH,
            PublicParameters::Ecc { .. } => alg::TPM_ALG_ECC,
            PublicParameters::SymCipher { .. } => alg::TPM_ALG_SYMCIPHER,
        }
    }

    /// Parses a TPMT_PUBLIC that must fill `bytes` exactly.
    pub fn from_tpmt(bytes: &[u8]) -> Result<Self> {
        let mut r = Reader::new(bytes);
        let area = Self::read(&mut r)?;
        r.finish("TPMT_PUBLIC")?;
        Ok(area)
    }

    /// Parses a TPM2B_PUBLIC (2-byte big-endian size + TPMT_PUBLIC) that must fill `bytes`.
    pub fn from_tpm2b(bytes: &[u8]) -> Result<Self> {
        Self::from_tpmt(tpmt_of_tpm2b(bytes)?)
    }

    fn read(r: &mut Reader<'_>) -> Result<Self> {
        let object_type = r.u16("TPMT_PUBLIC.type")?;
        let name_alg = r.u16("TPMT_PUBLIC.nameAlg")?;
        let object_attributes = r.u32("TPMT_PUBLIC.objectAttributes")?;
        let auth_policy = r
            .tpm2b_max("TPMT_PUBLIC.authPolicy", MAX_DIGEST_BYTES)?
            .to_vec();
        let (parameters, unique) = match object_type {
            alg::TPM_ALG_RSA => {
                let symmetric = SymDef::read(r)?;
                let scheme = Scheme::read_asym(r, "TPMS_RSA_PARMS.scheme")?;
                let key_bits = r.u16("TPMS_RSA_PARMS.keyBits")?;
                let exponent = r.u32("TPMS_RSA_PARMS.exponent")?;
                let n = r.tpm2b_max("TPM2B_PUBLIC_KEY_RSA", MAX_RSA_KEY_BYTES)?;
                (
                    PublicParameters::Rsa {
                        symmetric,
                        scheme,
                        key_bits,
                        exponent,
                    },
                    PublicUnique::Rsa(n.to_vec()),
                )
            }
            alg::TPM_ALG_KEYEDHASH => {
                let id = r.u16("TPMT_KEYEDHASH_SCHEME.scheme")?;
                let scheme = match id {
                    alg::TPM_ALG_NULL => Scheme::NULL,
                    alg::TPM_ALG_HMAC => Scheme {
                        scheme: id,
                        hash_alg: r.u16("TPMS_SCHEME_HMAC.hashAlg")?,
                        count: 0,
                    },
                    alg::TPM_ALG_XOR => Scheme {
                        scheme: id,
                        hash_alg: r.u16("TPMS_SCHEME_XOR.hashAlg")?,
                        count: r.u16("TPMS_SCHEME_XOR.kdf")?,
                    },
                    other => {
                        return Err(TpmWireError::UnsupportedAlgorithm {
                            what: "keyed-hash scheme",
                            alg: other,
                        })
                    }
                };
                let digest = r.tpm2b_max("TPMU_PUBLIC_ID.keyedHash", MAX_DIGEST_BYTES)?;
                (
                    PublicParameters::KeyedHash { scheme },
                    PublicUnique::Digest(digest.to_vec()),
                )
            }
            alg::TPM_ALG_ECC => {
                let symmetric = SymDef::read(r)?;
                let scheme = Scheme::read_asym(r, "TPMS_ECC_PARMS.scheme")?;
                let curve_id = r.u16("TPMS_ECC_PARMS.curveID")?;
                let kdf = Scheme::read_hash_only(r, "TPMS_ECC_PARMS.kdf")?;
                let x = r.tpm2b_max("TPMS_ECC_POINT.x", MAX_ECC_KEY_BYTES)?.to_vec();
                let y = r.tpm2b_max("TPMS_ECC_POINT.y", MAX_ECC_KEY_BYTES)?.to_vec();
                (
                    PublicParameters::Ecc {
                        symmetric,
                        scheme,
                        curve_id,
                        kdf,
                    },
                    PublicUnique::Ecc { x, y },
                )
            }
            alg::TPM_ALG_SYMCIPHER => {
                let symmetric = SymDef::read(r)?;
                let digest = r.tpm2b_max("TPMU_PUBLIC_ID.sym", MAX_DIGEST_BYTES)?;
                (
                    PublicParameters::SymCipher { symmetric },
                    PublicUnique::Digest(digest.to_vec()),
                )
            }
            other => {
                return Err(TpmWireError::UnsupportedAlgorithm {
                    what: "public object type",
                    alg: other,
                })
            }
        };
        Ok(Self {
            name_alg,
            object_attributes,
            auth_policy,
            parameters,
            unique,
        })
    }

    /// Marshals the TPMT_PUBLIC.
    pub fn to_tpmt(&self) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(320);
        put_u16(&mut out, self.object_type());
        put_u16(&mut out, self.name_alg);
        put_u32(&mut out, self.object_attributes);
        put_tpm2b(&mut out, &self.auth_policy, "TPMT_PUBLIC.authPolicy")?;
        match (&self.parameters, &self.unique) {
            (
                PublicParameters::Rsa {
                    symmetric,
                    scheme,
                    key_bits,
                    exponent,
                },
                PublicUnique::Rsa(n),
            ) => {
                symmetric.write(&mut out);
                scheme.write_asym(&mut out);
                put_u16(&mut out, *key_bits);
                put_u32(&mut out, *exponent);
                put_tpm2b(&mut out, n, "TPM2B_PUBLIC_KEY_RSA")?;
            }
            (PublicParameters::KeyedHash { scheme }, PublicUnique::Digest(d)) => {
                put_u16(&mut out, scheme.scheme);
                match scheme.scheme {
                    alg::TPM_ALG_NULL => {}
                    alg::TPM_ALG_XOR => {
                        put_u16(&mut out, scheme.hash_alg);
                        put_u16(&mut out, scheme.count);
                    }
                    _ => put_u16(&mut out, scheme.hash_alg),
                }
                put_tpm2b(&mut out, d, "TPMU_PUBLIC_ID.keyedHash")?;
            }
            (
                PublicParameters::Ecc {
                    symmetric,
                    scheme,
                    curve_id,
                    kdf,
                },
                PublicUnique::Ecc { x, y },
            ) => {
                symmetric.write(&mut out);
                scheme.write_asym(&mut out);
                put_u16(&mut out, *curve_id);
                kdf.write_hash_only(&mut out);
                put_tpm2b(&mut out, x, "TPMS_ECC_POINT.x")?;
                put_tpm2b(&mut out, y, "TPMS_ECC_POINT.y")?;
            }
            (PublicParameters::SymCipher { symmetric }, PublicUnique::Digest(d)) => {
                symmetric.write(&mut out);
                put_tpm2b(&mut out, d, "TPMU_PUBLIC_ID.sym")?;
            }
            _ => {
                return Err(TpmWireError::Invalid {
                    what: "TPMT_PUBLIC",
                    reason: "unique field does not match the object type",
                })
            }
        }
        Ok(out)
    }

    /// Marshals the TPM2B_PUBLIC (size + TPMT_PUBLIC), the form DPS and the HSM API use.
    pub fn to_tpm2b(&self) -> Result<Vec<u8>> {
        crate::marshal::tpm2b(&self.to_tpmt()?, "TPM2B_PUBLIC")
    }

    /// The object's TPM name: nameAlg followed by H_nameAlg(TPMT_PUBLIC).
    pub fn name(&self) -> Result<Vec<u8>> {
        name_of_tpmt(self.name_alg, &self.to_tpmt()?)
    }

    /// The symmetric algorithm of a storage (parent) key, refused for anything but AES-128-CFB,
    /// the only one this library's credential and duplication code implements.
    pub fn storage_symmetric(&self) -> Result<SymDef> {
        let symmetric = match &self.parameters {
            PublicParameters::Rsa { symmetric, .. } | PublicParameters::Ecc { symmetric, .. } => {
                *symmetric
            }
            _ => {
                return Err(TpmWireError::Invalid {
                    what: "storage key",
                    reason: "not an asymmetric key",
                })
            }
        };
        if symmetric != SymDef::AES_128_CFB {
            return Err(TpmWireError::UnsupportedAlgorithm {
                what: "storage key symmetric",
                alg: symmetric.algorithm,
            });
        }
        Ok(symmetric)
    }

    /// The RSA public key of an RSA object (exponent 0 meaning 65537).
    pub fn rsa_public_key(&self) -> Result<rsa::RsaPublicKey> {
        match (&self.parameters, &self.unique) {
            (PublicParameters::Rsa { exponent, .. }, PublicUnique::Rsa(n)) => {
                let e = if *exponent == 0 { 65_537 } else { *exponent };
                rsa::RsaPublicKey::new(rsa::BigUint::from_bytes_be(n), rsa::BigUint::from(e))
                    .map_err(|_| TpmWireError::Rsa {
                        operation: "public key from modulus",
                    })
            }
            _ => Err(TpmWireError::Invalid {
                what: "public area",
                reason: "not an RSA key",
            }),
        }
    }
}

/// The content (TPMT_PUBLIC bytes) of a whole TPM2B_PUBLIC buffer.
pub fn tpmt_of_tpm2b(bytes: &[u8]) -> Result<&[u8]> {
    let mut r = Reader::new(bytes);
    let body = r.tpm2b_max("TPM2B_PUBLIC", MAX_PUBLIC_BYTES)?;
    r.finish("TPM2B_PUBLIC")?;
    Ok(body)
}

/// The TPM name of an object given its nameAlg and marshalled TPMT_PUBLIC.
pub fn name_of_tpmt(name_alg: u16, tpmt_public: &[u8]) -> Result<Vec<u8>> {
    match name_alg {
        alg::TPM_ALG_SHA256 => {
            let mut name = name_alg.to_be_bytes().to_vec();
            name.extend_from_slice(&Sha256::digest(tpmt_public));
            Ok(name)
        }
        other => Err(TpmWireError::UnsupportedAlgorithm {
            what: "name",
            alg: other,
        }),
    }
}

fn rsa_storage_template(attributes: u32, auth_policy: Vec<u8>) -> PublicArea {
    PublicArea {
        name_alg: alg::TPM_ALG_SHA256,
        object_attributes: attributes,
        auth_policy,
        parameters: PublicParameters::Rsa {
            symmetric: SymDef::AES_128_CFB,
            scheme: Scheme::NULL,
            key_bits: 2048,
            exponent: 0,
        },
        // The TCG templates carry 256 zero bytes here; a created key carries its modulus.
        unique: PublicUnique::Rsa(vec![0; 256]),
    }
}

/// The TCG default RSA-2048 EK template (EK Credential Profile, template L-1).
pub fn ek_template_rsa2048() -> PublicArea {
    rsa_storage_template(EK_ATTRIBUTES, EK_AUTH_POLICY_SHA256.to_vec())
}

/// The TCG RSA-2048 SRK template (TPM v2.0 Provisioning Guidance).
pub fn srk_template_rsa2048() -> PublicArea {
    rsa_storage_template(SRK_ATTRIBUTES, Vec::new())
}

/// `template` with its unique field set to a created key's RSA modulus.
pub fn with_rsa_modulus(mut template: PublicArea, modulus: Vec<u8>) -> PublicArea {
    template.unique = PublicUnique::Rsa(modulus);
    template
}

/// The public area of a DPS identity key: KEYEDHASH, HMAC-SHA256, sign|noDA|userWithAuth,
/// `unique` = SHA-256(seedValue || key), the binding the TPM checks on import.
pub fn identity_key_public(unique: Vec<u8>) -> PublicArea {
    PublicArea {
        name_alg: alg::TPM_ALG_SHA256,
        object_attributes: IDENTITY_KEY_ATTRIBUTES,
        auth_policy: Vec::new(),
        parameters: PublicParameters::KeyedHash {
            scheme: Scheme {
                scheme: alg::TPM_ALG_HMAC,
                hash_alg: alg::TPM_ALG_SHA256,
                count: 0,
            },
        },
        unique: PublicUnique::Digest(unique),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ek_template_marshals_to_tcg_layout() {
        let tpmt = ek_template_rsa2048().to_tpmt().unwrap();
        // type RSA, nameAlg SHA256, attributes 0x000300b2, 32-byte policy.
        assert_eq!(&tpmt[..10], &[0, 1, 0, 0x0b, 0, 3, 0, 0xb2, 0, 32]);
        assert_eq!(&tpmt[10..42], &EK_AUTH_POLICY_SHA256);
        // AES 128 CFB, scheme NULL, 2048 bits, exponent 0, unique 256 bytes.
        assert_eq!(
            &tpmt[42..58],
            &[0, 6, 0, 0x80, 0, 0x43, 0, 0x10, 8, 0, 0, 0, 0, 0, 1, 0]
        );
        assert_eq!(tpmt.len(), 58 + 256);
        assert_eq!(PublicArea::from_tpmt(&tpmt).unwrap(), ek_template_rsa2048());
    }

    #[test]
    fn srk_attributes_are_tcg_value() {
        assert_eq!(SRK_ATTRIBUTES, 0x0003_0472);
        assert_eq!(IDENTITY_KEY_ATTRIBUTES, 0x0004_0440);
    }

    #[test]
    fn identity_public_round_trips_and_names() {
        let area = identity_key_public(vec![7; 32]);
        let b = area.to_tpm2b().unwrap();
        assert_eq!(b.len(), 50);
        assert_eq!(PublicArea::from_tpm2b(&b).unwrap(), area);
        let name = area.name().unwrap();
        assert_eq!(name.len(), 34);
        assert_eq!(&name[..2], &[0, 0x0b]);
    }

    #[test]
    fn malformed_public_is_typed_error() {
        let b = ek_template_rsa2048().to_tpm2b().unwrap();
        for cut in 0..b.len() {
            assert!(PublicArea::from_tpm2b(&b[..cut]).is_err(), "cut {cut}");
        }
        let mut bad_type = b.clone();
        bad_type[3] = 0x77;
        assert!(matches!(
            PublicArea::from_tpm2b(&bad_type),
            Err(TpmWireError::UnsupportedAlgorithm { .. })
        ));
    }
}
