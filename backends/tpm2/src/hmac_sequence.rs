//! HMAC over input longer than one TPM command buffer, with TPM2_HMAC_Start /
//! TPM2_SequenceUpdate / TPM2_SequenceComplete.
//!
//! tss-esapi 7.7.0 does not wrap the sequence commands and does not expose its raw ESYS
//! context, so this module opens its own short-lived ESYS context through the FFI that
//! tss-esapi re-exports (`tss_esapi::tss2_esys`). The caller must have closed its tss-esapi
//! context first: a TPM without a resource manager (swtpm, mssim, /dev/tpm0) serves one
//! connection at a time. Requires tpm2-tss 3 or newer (hierarchy parameters are ESYS_TR).

use std::ffi::CString;
use std::ptr::null_mut;

use hsm_plugin_sdk::HsmError;
use tss_esapi::constants::tss::TPM2_ALG_SHA256;
use tss_esapi::structures::{Auth, Digest, MaxBuffer};
use tss_esapi::tss2_esys::{
    Esys_Finalize, Esys_FlushContext, Esys_Free, Esys_HMAC_Start, Esys_Initialize,
    Esys_SequenceComplete, Esys_SequenceUpdate, Esys_TR_FromTPMPublic, Tss2_TctiLdr_Finalize,
    Tss2_TctiLdr_Initialize, ESYS_CONTEXT, ESYS_TR, ESYS_TR_NONE, ESYS_TR_PASSWORD,
    ESYS_TR_RH_NULL, TPM2B_DIGEST, TPM2B_MAX_BUFFER, TPMT_TK_HASHCHECK, TSS2_RC, TSS2_TCTI_CONTEXT,
};

fn check(rc: TSS2_RC, action: &str) -> Result<(), HsmError> {
    if rc == 0 {
        Ok(())
    } else {
        let e = tss_esapi::Error::Tss2Error(
            tss_esapi::constants::response_code::Tss2ResponseCode::from(rc),
        );
        Err(HsmError::device(format!("TPM {action} failed: {e}")))
    }
}

/// An ESYS context on its own TCTI connection, finalized on drop.
struct RawEsys {
    tcti: *mut TSS2_TCTI_CONTEXT,
    esys: *mut ESYS_CONTEXT,
}

impl RawEsys {
    fn open(tcti_conf: &str) -> Result<Self, HsmError> {
        crate::tss_log::quiet_unless_asked();
        let conf = CString::new(tcti_conf)
            .map_err(|_| HsmError::invalid_argument("setting `tcti` contains a NUL byte"))?;
        let mut raw = RawEsys {
            tcti: null_mut(),
            esys: null_mut(),
        };
        check(
            // SAFETY: `conf` is a valid NUL-terminated string that outlives the call; `raw.tcti`
            // is a valid out-pointer, left null on failure (Drop checks for null).
            unsafe { Tss2_TctiLdr_Initialize(conf.as_ptr(), &mut raw.tcti) },
            "TCTI initialization",
        )?;
        check(
            // SAFETY: `raw.tcti` is the initialized TCTI from above; `raw.esys` is a valid
            // out-pointer; a null ABI-version pointer asks for the library's own version.
            unsafe { Esys_Initialize(&mut raw.esys, raw.tcti, null_mut()) },
            "ESYS initialization",
        )?;
        Ok(raw)
    }
}

impl Drop for RawEsys {
    fn drop(&mut self) {
        if !self.esys.is_null() {
            // SAFETY: `esys` came from Esys_Initialize and is finalized exactly once here;
            // Esys_Finalize sets it to null.
            unsafe { Esys_Finalize(&mut self.esys) };
        }
        if !self.tcti.is_null() {
            // SAFETY: `tcti` came from Tss2_TctiLdr_Initialize and nothing uses it any more:
            // the ESYS context above, its only user, is already finalized.
            unsafe { Tss2_TctiLdr_Finalize(&mut self.tcti) };
        }
    }
}

/// HMAC-SHA256 of `data` with the persistent key at `key_handle`, in chunks of `chunk` bytes.
pub(crate) fn hmac_with_sequence(
    tcti: &str,
    key_handle: u32,
    data: &[u8],
    chunk: usize,
) -> Result<Vec<u8>, HsmError> {
    if chunk == 0 {
        return Err(HsmError::internal("HMAC sequence chunk size is zero"));
    }
    let raw = RawEsys::open(tcti)?;
    let mut key: ESYS_TR = ESYS_TR_NONE;
    check(
        // SAFETY: `raw.esys` is an initialized context; `key` is a valid out-pointer.
        unsafe {
            Esys_TR_FromTPMPublic(
                raw.esys,
                key_handle,
                ESYS_TR_NONE,
                ESYS_TR_NONE,
                ESYS_TR_NONE,
                &mut key,
            )
        },
        "reading the identity key handle",
    )?;
    let empty_auth = Auth::default().into();
    let mut sequence: ESYS_TR = ESYS_TR_NONE;
    check(
        // SAFETY: context and key are valid; `empty_auth` lives across the call; `sequence` is a
        // valid out-pointer. The key's (empty) authValue goes through the password session.
        unsafe {
            Esys_HMAC_Start(
                raw.esys,
                key,
                ESYS_TR_PASSWORD,
                ESYS_TR_NONE,
                ESYS_TR_NONE,
                &empty_auth,
                TPM2_ALG_SHA256,
                &mut sequence,
            )
        },
        "HMAC_Start",
    )?;
    let result = run_sequence(&raw, sequence, data, chunk);
    if result.is_err() {
        // SequenceComplete flushes the sequence itself; after a failure it may still be
        // loaded, so free its slot. A failure here changes nothing for the caller.
        // SAFETY: context valid; `sequence` is the handle HMAC_Start returned.
        let _ = unsafe { Esys_FlushContext(raw.esys, sequence) };
    }
    result
}

fn max_buffer(bytes: &[u8]) -> Result<TPM2B_MAX_BUFFER, HsmError> {
    MaxBuffer::try_from(bytes.to_vec())
        .map(Into::into)
        .map_err(|e| HsmError::internal(format!("HMAC sequence chunk: {e}")))
}

fn run_sequence(
    raw: &RawEsys,
    sequence: ESYS_TR,
    data: &[u8],
    chunk: usize,
) -> Result<Vec<u8>, HsmError> {
    // Everything but the last chunk goes through SequenceUpdate; the last (possibly empty)
    // one rides on SequenceComplete.
    let last_len = match data.len() % chunk {
        0 if !data.is_empty() => chunk,
        n => n,
    };
    let (body, last) = data.split_at(data.len() - last_len);
    for piece in body.chunks(chunk) {
        let buffer = max_buffer(piece)?;
        check(
            // SAFETY: context and sequence handle valid; `buffer` lives across the call.
            unsafe {
                Esys_SequenceUpdate(
                    raw.esys,
                    sequence,
                    ESYS_TR_PASSWORD,
                    ESYS_TR_NONE,
                    ESYS_TR_NONE,
                    &buffer,
                )
            },
            "SequenceUpdate",
        )?;
    }
    let buffer = max_buffer(last)?;
    let mut digest: *mut TPM2B_DIGEST = null_mut();
    let mut ticket: *mut TPMT_TK_HASHCHECK = null_mut();
    // SAFETY: context and sequence valid; `buffer` lives across the call; the two
    // out-pointers receive ESYS-allocated results that are freed below.
    let rc = unsafe {
        Esys_SequenceComplete(
            raw.esys,
            sequence,
            ESYS_TR_PASSWORD,
            ESYS_TR_NONE,
            ESYS_TR_NONE,
            &buffer,
            ESYS_TR_RH_NULL,
            &mut digest,
            &mut ticket,
        )
    };
    let value = if rc == 0 && !digest.is_null() {
        // SAFETY: on success `digest` points to a valid TPM2B_DIGEST allocated by ESYS.
        Digest::try_from(unsafe { *digest })
            .map(|d| d.value().to_vec())
            .map_err(|e| HsmError::device(format!("TPM SequenceComplete answer: {e}")))
    } else {
        check(rc, "SequenceComplete").and(Err(HsmError::device(
            "TPM SequenceComplete returned no digest",
        )))
    };
    // SAFETY: both pointers are null or were allocated by ESYS for this call; Esys_Free
    // accepts null.
    unsafe {
        Esys_Free(digest.cast());
        Esys_Free(ticket.cast());
    }
    value
}
