//! Operational-key table functions (ABI 1.2).

use super::{call_with_output, call_without_output, input};
use crate::{HsmError, HsmPlugin, OperationalKeyHsm};
use hsm_api::*;

/// The operational-key table for plugin type `T`.
pub const fn table<T: HsmPlugin + OperationalKeyHsm>() -> HsmOperationalKeyTable {
    HsmOperationalKeyTable {
        header: HsmTableHeader::current::<HsmOperationalKeyTable>(),
        create_key: create_key::<T>,
        get_public_key: get_public_key::<T>,
        sign_digest: sign_digest::<T>,
        store_chain: store_chain::<T>,
        get_chain: get_chain::<T>,
        delete_key: delete_key::<T>,
    }
}

/// The label as text, refused unless it is a valid label, so no backend sees a path or an
/// empty name.
///
/// # Safety
/// `label` is a valid slice per the ABI.
unsafe fn label<'a>(label: HsmSlice, operation: &str) -> Result<&'a str, HsmError> {
    // SAFETY: forwarded contract.
    let bytes = unsafe { input(label, operation) }?;
    std::str::from_utf8(bytes)
        .ok()
        .filter(|l| is_valid_operational_key_label(l))
        .ok_or_else(|| {
            HsmError::invalid_argument(format!(
                "{operation}: the label must be 1 to {OPERATIONAL_KEY_LABEL_MAX} ASCII letters, digits, '-', '_' or '.'"
            ))
        })
}

unsafe extern "C" fn create_key<T: HsmPlugin + OperationalKeyHsm>(
    instance: *mut HsmInstance,
    l: HsmSlice,
    out: *mut HsmBuffer,
) -> HsmStatus {
    // SAFETY: ABI contract forwarded.
    unsafe {
        call_with_output::<T>(instance, out, |t| {
            t.create_operational_key(label(l, "create_key")?)
        })
    }
}

unsafe extern "C" fn get_public_key<T: HsmPlugin + OperationalKeyHsm>(
    instance: *mut HsmInstance,
    l: HsmSlice,
    out: *mut HsmBuffer,
) -> HsmStatus {
    // SAFETY: ABI contract forwarded.
    unsafe {
        call_with_output::<T>(instance, out, |t| {
            t.operational_public_key(label(l, "get_public_key")?)
        })
    }
}

unsafe extern "C" fn sign_digest<T: HsmPlugin + OperationalKeyHsm>(
    instance: *mut HsmInstance,
    l: HsmSlice,
    digest: HsmSlice,
    out: *mut HsmBuffer,
) -> HsmStatus {
    // SAFETY: ABI contract forwarded.
    unsafe {
        call_with_output::<T>(instance, out, |t| {
            let l = label(l, "sign_digest")?;
            let digest = input(digest, "sign_digest digest")?;
            let digest: &[u8; 32] = digest.try_into().map_err(|_| {
                HsmError::invalid_argument(format!(
                    "sign_digest signs a 32-byte SHA-256 digest, got {} bytes",
                    digest.len()
                ))
            })?;
            t.sign_operational_digest(l, digest)
        })
    }
}

unsafe extern "C" fn store_chain<T: HsmPlugin + OperationalKeyHsm>(
    instance: *mut HsmInstance,
    l: HsmSlice,
    pem: HsmSlice,
) -> HsmStatus {
    // SAFETY: ABI contract forwarded.
    unsafe {
        call_without_output::<T>(instance, |t| {
            let l = label(l, "store_chain")?;
            let pem = input(pem, "store_chain chain")?;
            let pem = std::str::from_utf8(pem)
                .map_err(|_| HsmError::invalid_argument("store_chain: the chain is not UTF-8"))?;
            if pem.is_empty() {
                return Err(HsmError::invalid_argument(
                    "store_chain: the chain is empty",
                ));
            }
            t.store_operational_chain(l, pem)
        })
    }
}

unsafe extern "C" fn get_chain<T: HsmPlugin + OperationalKeyHsm>(
    instance: *mut HsmInstance,
    l: HsmSlice,
    out: *mut HsmBuffer,
) -> HsmStatus {
    // SAFETY: ABI contract forwarded.
    unsafe {
        call_with_output::<T>(instance, out, |t| {
            t.operational_chain(label(l, "get_chain")?)
                .map(String::into_bytes)
        })
    }
}

unsafe extern "C" fn delete_key<T: HsmPlugin + OperationalKeyHsm>(
    instance: *mut HsmInstance,
    l: HsmSlice,
) -> HsmStatus {
    // SAFETY: ABI contract forwarded.
    unsafe {
        call_without_output::<T>(instance, |t| {
            t.delete_operational_key(label(l, "delete_key")?)
        })
    }
}
