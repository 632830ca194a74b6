//! TPM table functions.

use super::{call_with_output, call_without_output, input};
use crate::{HsmError, HsmPlugin, TpmHsm};
use hsm_api::*;

/// The TPM table for plugin type `T`.
pub const fn table<T: HsmPlugin + TpmHsm>() -> HsmTpmTable {
    HsmTpmTable {
        header: HsmTableHeader::current::<HsmTpmTable>(),
        get_endorsement_key: get_endorsement_key::<T>,
        get_storage_root_key: get_storage_root_key::<T>,
        activate_identity_key: activate_identity_key::<T>,
        sign_with_identity: sign_with_identity::<T>,
    }
}

unsafe extern "C" fn get_endorsement_key<T: HsmPlugin + TpmHsm>(
    instance: *mut HsmInstance,
    out: *mut HsmBuffer,
) -> HsmStatus {
    // SAFETY: ABI contract forwarded.
    unsafe { call_with_output::<T>(instance, out, |t| t.endorsement_key()) }
}

unsafe extern "C" fn get_storage_root_key<T: HsmPlugin + TpmHsm>(
    instance: *mut HsmInstance,
    out: *mut HsmBuffer,
) -> HsmStatus {
    // SAFETY: ABI contract forwarded.
    unsafe { call_with_output::<T>(instance, out, |t| t.storage_root_key()) }
}

unsafe extern "C" fn activate_identity_key<T: HsmPlugin + TpmHsm>(
    instance: *mut HsmInstance,
    blob: HsmSlice,
) -> HsmStatus {
    // SAFETY: ABI contract forwarded.
    unsafe {
        call_without_output::<T>(instance, |t| {
            let blob = input(blob, "activate_identity_key blob")?;
            if blob.is_empty() {
                return Err(HsmError::invalid_argument(
                    "activate_identity_key: the blob is empty",
                ));
            }
            t.activate_identity_key(blob)
        })
    }
}

unsafe extern "C" fn sign_with_identity<T: HsmPlugin + TpmHsm>(
    instance: *mut HsmInstance,
    data: HsmSlice,
    out: *mut HsmBuffer,
) -> HsmStatus {
    // SAFETY: ABI contract forwarded.
    unsafe {
        call_with_output::<T>(instance, out, |t| {
            let data = input(data, "sign_with_identity data")?;
            t.sign_with_identity(data)
        })
    }
}
