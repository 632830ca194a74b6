//! The Rust view of the `HSM_CAP_*` bits: which interface tables a plugin declares.

use crate::status::*;
use std::ops::{BitOr, BitOrAssign};

/// A set of `HSM_CAP_*` bits. Bits this ABI version does not define are kept, so that a
/// checker can name them instead of losing them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CapabilitySet(u32);

impl CapabilitySet {
    /// No interface.
    pub const NONE: CapabilitySet = CapabilitySet(0);
    /// `HSM_CAP_TPM`: the plugin has a TPM table.
    pub const TPM: CapabilitySet = CapabilitySet(HSM_CAP_TPM);
    /// `HSM_CAP_X509`: the plugin has an X.509 table.
    pub const X509: CapabilitySet = CapabilitySet(HSM_CAP_X509);
    /// `HSM_CAP_SYMMETRIC_KEY`: the plugin has a symmetric-key table.
    pub const SYMMETRIC_KEY: CapabilitySet = CapabilitySet(HSM_CAP_SYMMETRIC_KEY);
    /// Every capability this ABI version defines.
    pub const KNOWN: CapabilitySet =
        CapabilitySet(HSM_CAP_TPM | HSM_CAP_X509 | HSM_CAP_SYMMETRIC_KEY);

    /// The set for raw `capabilities` bits, unknown bits included.
    pub const fn from_bits(bits: u32) -> Self {
        CapabilitySet(bits)
    }

    /// The raw bits, as `HsmPluginTable::capabilities` holds them.
    pub const fn bits(self) -> u32 {
        self.0
    }

    /// Whether every bit of `other` is in this set.
    pub const fn contains(self, other: CapabilitySet) -> bool {
        self.0 & other.0 == other.0
    }

    /// This set with the bits of `other` added.
    pub const fn with(self, other: CapabilitySet) -> Self {
        CapabilitySet(self.0 | other.0)
    }

    /// The bits no interface of this ABI version has (0 for a well-formed table).
    pub const fn unknown_bits(self) -> u32 {
        self.0 & !Self::KNOWN.0
    }
}

impl BitOr for CapabilitySet {
    type Output = CapabilitySet;

    fn bitor(self, other: CapabilitySet) -> CapabilitySet {
        self.with(other)
    }
}

impl BitOrAssign for CapabilitySet {
    fn bitor_assign(&mut self, other: CapabilitySet) {
        *self = self.with(other);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_keep_known_and_unknown_bits() {
        let set = CapabilitySet::TPM | CapabilitySet::SYMMETRIC_KEY;
        assert_eq!(set.bits(), HSM_CAP_TPM | HSM_CAP_SYMMETRIC_KEY);
        assert!(set.contains(CapabilitySet::TPM) && !set.contains(CapabilitySet::X509));
        assert_eq!(set.unknown_bits(), 0);
        assert_eq!(CapabilitySet::from_bits(0x18).unknown_bits(), 0x18);
        assert_eq!(CapabilitySet::default(), CapabilitySet::NONE);
    }
}
