//! Typed calls on a raw instance, one per ABI operation, with NULL-checked interface tables.

use crate::raw::{RawFailure, RawInstance};
use crate::verdict::Verdict;
use hsm_api::*;

/// A raw-call failure as a check failure: "expected `what` to succeed".
pub(crate) fn ok<T>(r: Result<T, RawFailure>, what: &str) -> Result<T, Verdict> {
    r.map_err(|e| Verdict::fail(format!("{what} succeeds"), format!("it failed with {e}")))
}

impl RawInstance {
    /// The TPM table (the caller checked the capability).
    pub fn tpm_table(&self) -> Result<&'static HsmTpmTable, Verdict> {
        // SAFETY: non-NULL interface tables are statics, validated by the probe.
        unsafe { self.table.tpm.as_ref() }.ok_or_else(|| {
            crate::context::refused("tpm").map_or_else(
                || Verdict::fail("a TPM table", "NULL TPM table"),
                Verdict::skip,
            )
        })
    }

    /// The X.509 table.
    pub fn x509_table(&self) -> Result<&'static HsmX509Table, Verdict> {
        // SAFETY: as above.
        unsafe { self.table.x509.as_ref() }.ok_or_else(|| {
            crate::context::refused("x509").map_or_else(
                || Verdict::fail("an X.509 table", "NULL X.509 table"),
                Verdict::skip,
            )
        })
    }

    /// The symmetric-key table.
    pub fn sym_table(&self) -> Result<&'static HsmSymmetricKeyTable, Verdict> {
        // SAFETY: as above.
        unsafe { self.table.symmetric_key.as_ref() }.ok_or_else(|| {
            crate::context::refused("symmetric-key").map_or_else(
                || Verdict::fail("a symmetric-key table", "NULL symmetric-key table"),
                Verdict::skip,
            )
        })
    }

    /// `get_endorsement_key`.
    pub fn ek(&self) -> Result<Result<Vec<u8>, RawFailure>, Verdict> {
        let f = self.tpm_table()?.get_endorsement_key;
        // SAFETY: live instance, valid out pointer.
        Ok(self.output(|i, o| unsafe { f(i, o) }))
    }

    /// `get_storage_root_key`.
    pub fn srk(&self) -> Result<Result<Vec<u8>, RawFailure>, Verdict> {
        let f = self.tpm_table()?.get_storage_root_key;
        // SAFETY: live instance, valid out pointer.
        Ok(self.output(|i, o| unsafe { f(i, o) }))
    }

    /// `activate_identity_key`.
    pub fn activate(&self, blob: &[u8]) -> Result<Result<(), RawFailure>, Verdict> {
        let f = self.tpm_table()?.activate_identity_key;
        // SAFETY: the slice borrows `blob` for the call.
        Ok(self.status(|i| unsafe { f(i, HsmSlice::from_bytes(blob)) }))
    }

    /// `sign_with_identity`.
    pub fn tpm_sign(&self, data: &[u8]) -> Result<Result<Vec<u8>, RawFailure>, Verdict> {
        let f = self.tpm_table()?.sign_with_identity;
        // SAFETY: the slice borrows `data` for the call.
        Ok(self.output(|i, o| unsafe { f(i, HsmSlice::from_bytes(data), o) }))
    }

    /// `get_certificate_chain` as bytes.
    pub fn chain(&self) -> Result<Result<Vec<u8>, RawFailure>, Verdict> {
        let f = self.x509_table()?.get_certificate_chain;
        // SAFETY: live instance, valid out pointer.
        Ok(self.output(|i, o| unsafe { f(i, o) }))
    }

    /// `get_common_name` as bytes.
    pub fn common_name(&self) -> Result<Result<Vec<u8>, RawFailure>, Verdict> {
        let f = self.x509_table()?.get_common_name;
        // SAFETY: live instance, valid out pointer.
        Ok(self.output(|i, o| unsafe { f(i, o) }))
    }

    /// `sign_digest`.
    pub fn sign_digest(
        &self,
        algorithm: u32,
        digest: &[u8],
    ) -> Result<Result<Vec<u8>, RawFailure>, Verdict> {
        let f = self.x509_table()?.sign_digest;
        // SAFETY: the slice borrows `digest` for the call.
        Ok(self.output(|i, o| unsafe { f(i, algorithm, HsmSlice::from_bytes(digest), o) }))
    }

    /// `export_private_key`.
    pub fn export_key(&self) -> Result<Result<Vec<u8>, RawFailure>, Verdict> {
        let f = self.x509_table()?.export_private_key;
        // SAFETY: live instance, valid out pointer.
        Ok(self.output(|i, o| unsafe { f(i, o) }))
    }

    /// `get_registration_id`.
    pub fn registration_id(&self) -> Result<Result<Vec<u8>, RawFailure>, Verdict> {
        let f = self.sym_table()?.get_registration_id;
        // SAFETY: live instance, valid out pointer.
        Ok(self.output(|i, o| unsafe { f(i, o) }))
    }

    /// Symmetric `sign`.
    pub fn sym_sign(&self, data: &[u8]) -> Result<Result<Vec<u8>, RawFailure>, Verdict> {
        let f = self.sym_table()?.sign;
        // SAFETY: the slice borrows `data` for the call.
        Ok(self.output(|i, o| unsafe { f(i, HsmSlice::from_bytes(data), o) }))
    }

    /// Symmetric `import_key`.
    pub fn import_key(&self, id: &str, key: &[u8]) -> Result<Result<(), RawFailure>, Verdict> {
        let f = self.sym_table()?.import_key;
        // SAFETY: both slices borrow caller data for the call.
        Ok(self.status(|i| unsafe {
            f(
                i,
                HsmSlice::from_bytes(id.as_bytes()),
                HsmSlice::from_bytes(key),
            )
        }))
    }
}
