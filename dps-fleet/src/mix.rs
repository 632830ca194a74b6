//! Device kinds and the fleet mix (`symmetric-group=40,dice-group=30,tpm=30`).

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// One kind of simulated device: its attestation and how it is enrolled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeviceKind {
    /// Symmetric key, an individual enrollment per device (symmetric plugin).
    SymmetricIndividual,
    /// Symmetric key derived from one enrollment group's key (symmetric plugin).
    SymmetricGroup,
    /// X.509 DICE chain under one development root CA, one X.509 enrollment group (dice plugin).
    DiceGroup,
    /// TPM attestation, an individual enrollment per EK (tpm-sim plugin).
    Tpm,
}

impl DeviceKind {
    /// Every kind, in report order.
    pub const ALL: [DeviceKind; 4] = [
        DeviceKind::SymmetricIndividual,
        DeviceKind::SymmetricGroup,
        DeviceKind::DiceGroup,
        DeviceKind::Tpm,
    ];

    /// The name used in `--mix`, reports and folder names.
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceKind::SymmetricIndividual => "symmetric",
            DeviceKind::SymmetricGroup => "symmetric-group",
            DeviceKind::DiceGroup => "dice-group",
            DeviceKind::Tpm => "tpm",
        }
    }

    /// The plugin file suffix (`libhsmkit_plugin_<suffix>.so`).
    pub fn plugin(self) -> &'static str {
        match self {
            DeviceKind::SymmetricIndividual | DeviceKind::SymmetricGroup => "symmetric",
            DeviceKind::DiceGroup => "dice",
            DeviceKind::Tpm => "tpm_sim",
        }
    }

    /// The DPS attestation the device registers with.
    pub fn attestation(self) -> provisioning_core::dps::Attestation {
        use provisioning_core::dps::Attestation;
        match self {
            DeviceKind::SymmetricIndividual | DeviceKind::SymmetricGroup => {
                Attestation::SymmetricKey
            }
            DeviceKind::DiceGroup => Attestation::X509,
            DeviceKind::Tpm => Attestation::Tpm,
        }
    }
}

impl fmt::Display for DeviceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DeviceKind {
    type Err = MixError;
    fn from_str(s: &str) -> Result<Self, MixError> {
        DeviceKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s.trim())
            .ok_or_else(|| MixError::UnknownKind(s.trim().to_string()))
    }
}

/// A bad `--mix`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum MixError {
    /// A kind name that is not one of [`DeviceKind::ALL`].
    #[error(
        "unknown device kind `{0}` in the mix: use symmetric, symmetric-group, dice-group or tpm"
    )]
    UnknownKind(String),
    /// An entry that is not `kind=weight`.
    #[error("mix entry `{0}` is not kind=weight (for example tpm=30)")]
    Entry(String),
    /// A weight that is not a whole number.
    #[error("the weight of `{kind}` is not a whole number: `{weight}`")]
    Weight {
        /// The kind.
        kind: String,
        /// What was given.
        weight: String,
    },
    /// The same kind twice.
    #[error("device kind `{0}` is given twice in the mix")]
    Duplicate(DeviceKind),
    /// All weights zero (or nothing given).
    #[error("the mix has no device kind with a weight above 0")]
    Empty,
}

/// Relative weights per kind (percentages or any whole numbers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mix {
    weights: Vec<(DeviceKind, u64)>,
}

impl Mix {
    /// The benchmark's mix: 40% symmetric group, 30% X.509 DICE group, 30% TPM.
    pub fn bench() -> Mix {
        Mix {
            weights: vec![
                (DeviceKind::SymmetricGroup, 40),
                (DeviceKind::DiceGroup, 30),
                (DeviceKind::Tpm, 30),
            ],
        }
    }

    /// Every kind with the same weight.
    pub fn even() -> Mix {
        Mix {
            weights: DeviceKind::ALL.iter().map(|k| (*k, 1)).collect(),
        }
    }

    /// How many devices of each kind a fleet of `n` has: each kind's share rounded down, the
    /// rest given one by one to the largest remainders (ties in [`DeviceKind::ALL`] order), so
    /// the counts always add up to `n`.
    pub fn counts(&self, n: usize) -> Vec<(DeviceKind, usize)> {
        let total: u64 = self.weights.iter().map(|(_, w)| *w).sum();
        let n64 = n as u64;
        let mut out: Vec<(DeviceKind, usize, u64)> = self
            .weights
            .iter()
            .map(|(k, w)| {
                let exact = u128::from(n64) * u128::from(*w);
                let base = (exact / u128::from(total)) as usize;
                let rem = (exact % u128::from(total)) as u64;
                (*k, base, rem)
            })
            .collect();
        let mut left = n - out.iter().map(|(_, c, _)| *c).sum::<usize>();
        let mut order: Vec<usize> = (0..out.len()).collect();
        order.sort_by(|a, b| out[*b].2.cmp(&out[*a].2).then(out[*a].0.cmp(&out[*b].0)));
        for i in order {
            if left == 0 {
                break;
            }
            out[i].1 += 1;
            left -= 1;
        }
        let mut counts: Vec<(DeviceKind, usize)> =
            out.into_iter().map(|(k, c, _)| (k, c)).collect();
        counts.sort_by_key(|(k, _)| *k);
        counts
    }
}

impl FromStr for Mix {
    type Err = MixError;
    fn from_str(s: &str) -> Result<Self, MixError> {
        let mut weights: Vec<(DeviceKind, u64)> = Vec::new();
        for entry in s.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (kind, weight) = entry
                .split_once('=')
                .ok_or_else(|| MixError::Entry(entry.to_string()))?;
            let kind: DeviceKind = kind.parse()?;
            let weight: u64 = weight.trim().parse().map_err(|_| MixError::Weight {
                kind: kind.to_string(),
                weight: weight.trim().to_string(),
            })?;
            if weights.iter().any(|(k, _)| *k == kind) {
                return Err(MixError::Duplicate(kind));
            }
            weights.push((kind, weight));
        }
        weights.retain(|(_, w)| *w > 0);
        if weights.is_empty() {
            return Err(MixError::Empty);
        }
        // Sums above u64 are refused by keeping each weight at most a million.
        if let Some((k, w)) = weights.iter().find(|(_, w)| *w > 1_000_000) {
            return Err(MixError::Weight {
                kind: k.to_string(),
                weight: format!("{w} (at most 1000000)"),
            });
        }
        Ok(Mix { weights })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bench_mix_splits_exactly() {
        let c = Mix::bench().counts(10_000);
        assert_eq!(
            c,
            vec![
                (DeviceKind::SymmetricGroup, 4000),
                (DeviceKind::DiceGroup, 3000),
                (DeviceKind::Tpm, 3000)
            ]
        );
    }

    #[test]
    fn remainders_go_to_the_largest_shares_and_add_up() {
        let m: Mix = "symmetric=1,symmetric-group=1,dice-group=1"
            .parse()
            .unwrap();
        let c = m.counts(200);
        assert_eq!(c.iter().map(|(_, n)| n).sum::<usize>(), 200);
        assert_eq!(c[0], (DeviceKind::SymmetricIndividual, 67));
        let even = Mix::even().counts(7);
        assert_eq!(even.iter().map(|(_, n)| n).sum::<usize>(), 7);
        assert!(even.iter().all(|(_, n)| *n == 1 || *n == 2));
        assert_eq!(
            Mix::even().counts(0).iter().map(|(_, n)| n).sum::<usize>(),
            0
        );
    }

    #[test]
    fn bad_mixes_are_refused_with_the_reason() {
        assert_eq!(
            "rsa=3".parse::<Mix>().unwrap_err(),
            MixError::UnknownKind("rsa".into())
        );
        assert_eq!(
            "tpm".parse::<Mix>().unwrap_err(),
            MixError::Entry("tpm".into())
        );
        assert!(matches!(
            "tpm=x".parse::<Mix>().unwrap_err(),
            MixError::Weight { .. }
        ));
        assert_eq!(
            "tpm=1,tpm=2".parse::<Mix>().unwrap_err(),
            MixError::Duplicate(DeviceKind::Tpm)
        );
        assert_eq!("tpm=0".parse::<Mix>().unwrap_err(), MixError::Empty);
        assert_eq!("".parse::<Mix>().unwrap_err(), MixError::Empty);
        assert!("tpm=99999999".parse::<Mix>().is_err());
        let m: Mix = " symmetric-group=40 , tpm=30,dice-group=30 "
            .parse()
            .unwrap();
        assert_eq!(m.counts(10), Mix::bench().counts(10));
    }
}
