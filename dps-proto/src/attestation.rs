//! How a device proves its identity, with the names DPS uses for it.

use serde::{Deserialize, Serialize};

/// An attestation mechanism. Serialized as DPS spells it in `attestation.type` and in the
/// registration state: `tpm`, `x509`, `symmetricKey`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub enum AttestationKind {
    /// TPM: EK and SRK, a challenge the TPM must open, SAS signed by the identity key.
    Tpm,
    /// X.509: mutual TLS with the device's certificate chain.
    X509,
    /// Symmetric key: SAS signed with the device key.
    SymmetricKey,
}

/// A name that is not one of DPS's attestation kinds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown attestation `{0}`; use tpm, x509 or symmetricKey")]
pub struct UnknownAttestationKind(pub String);

impl AttestationKind {
    /// Every kind, in DPS's documentation order.
    pub const ALL: [AttestationKind; 3] = [Self::Tpm, Self::X509, Self::SymmetricKey];

    /// DPS's name: `tpm`, `x509` or `symmetricKey`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Tpm => "tpm",
            Self::X509 => "x509",
            Self::SymmetricKey => "symmetricKey",
        }
    }

    /// Parses exactly DPS's spelling (what the service API and `enrollment.json` carry).
    pub fn from_dps_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

impl std::fmt::Display for AttestationKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for AttestationKind {
    type Err = UnknownAttestationKind;

    /// DPS's names, plus `symmetric-key` and `symmetric`, which people type on command lines.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "symmetric-key" | "symmetric" => Ok(Self::SymmetricKey),
            other => Self::from_dps_name(other).ok_or_else(|| UnknownAttestationKind(s.into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_serde_and_from_str() {
        for k in AttestationKind::ALL {
            let json = serde_json::to_string(&k).unwrap_or_default();
            assert_eq!(json, format!("\"{}\"", k.as_str()));
            assert_eq!(serde_json::from_str::<AttestationKind>(&json).ok(), Some(k));
            assert_eq!(k.as_str().parse::<AttestationKind>(), Ok(k));
        }
        assert_eq!("symmetric".parse(), Ok(AttestationKind::SymmetricKey));
        assert!("Tpm".parse::<AttestationKind>().is_err());
        assert_eq!(AttestationKind::from_dps_name("symmetric"), None);
    }
}
