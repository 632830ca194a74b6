//! Symmetric-key table functions.

use super::{call_with_output, call_without_output, input};
use crate::{HsmError, HsmPlugin, SymmetricKeyHsm};
use hsm_api::*;

/// The symmetric-key table for plugin type `T`.
pub const fn table<T: HsmPlugin + SymmetricKeyHsm>() -> HsmSymmetricKeyTable {
    HsmSymmetricKeyTable {
        header: HsmTableHeader::current::<HsmSymmetricKeyTable>(),
        get_registration_id: get_registration_id::<T>,
        sign: sign::<T>,
        import_key: import_key::<T>,
    }
}

unsafe extern "C" fn get_registration_id<T: HsmPlugin + SymmetricKeyHsm>(
    instance: *mut HsmInstance,
    out: *mut HsmBuffer,
) -> HsmStatus {
    // SAFETY: ABI contract forwarded.
    unsafe {
        call_with_output::<T>(instance, out, |t| {
            t.registration_id().map(String::into_bytes)
        })
    }
}

unsafe extern "C" fn sign<T: HsmPlugin + SymmetricKeyHsm>(
    instance: *mut HsmInstance,
    data: HsmSlice,
    out: *mut HsmBuffer,
) -> HsmStatus {
    // SAFETY: ABI contract forwarded.
    unsafe {
        call_with_output::<T>(instance, out, |t| {
            let data = input(data, "sign data")?;
            t.sign(data)
        })
    }
}

unsafe extern "C" fn import_key<T: HsmPlugin + SymmetricKeyHsm>(
    instance: *mut HsmInstance,
    registration_id: HsmSlice,
    key: HsmSlice,
) -> HsmStatus {
    // SAFETY: ABI contract forwarded.
    unsafe {
        call_without_output::<T>(instance, |t| {
            let id = input(registration_id, "import_key registration id")?;
            let key = input(key, "import_key key")?;
            if key.is_empty() {
                return Err(HsmError::invalid_argument("import_key: the key is empty"));
            }
            let id = std::str::from_utf8(id).map_err(|_| {
                HsmError::invalid_argument("import_key: registration id is not UTF-8")
            })?;
            t.import_key(if id.is_empty() { None } else { Some(id) }, key)
        })
    }
}
