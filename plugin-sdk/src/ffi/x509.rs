//! X.509 table functions.

use super::{call_with_output, input};
use crate::{HsmError, HsmPlugin, SignAlgorithm, X509Hsm};
use hsm_api::*;

/// The X.509 table for plugin type `T`.
pub const fn table<T: HsmPlugin + X509Hsm>() -> HsmX509Table {
    HsmX509Table {
        header: HsmTableHeader::current::<HsmX509Table>(),
        get_certificate_chain: get_certificate_chain::<T>,
        get_common_name: get_common_name::<T>,
        sign_digest: sign_digest::<T>,
        export_private_key: export_private_key::<T>,
    }
}

unsafe extern "C" fn get_certificate_chain<T: HsmPlugin + X509Hsm>(
    instance: *mut HsmInstance,
    out: *mut HsmBuffer,
) -> HsmStatus {
    // SAFETY: ABI contract forwarded.
    unsafe {
        call_with_output::<T>(instance, out, |t| {
            t.certificate_chain_pem().map(String::into_bytes)
        })
    }
}

unsafe extern "C" fn get_common_name<T: HsmPlugin + X509Hsm>(
    instance: *mut HsmInstance,
    out: *mut HsmBuffer,
) -> HsmStatus {
    // SAFETY: ABI contract forwarded.
    unsafe { call_with_output::<T>(instance, out, |t| t.common_name().map(String::into_bytes)) }
}

unsafe extern "C" fn sign_digest<T: HsmPlugin + X509Hsm>(
    instance: *mut HsmInstance,
    algorithm: u32,
    digest: HsmSlice,
    out: *mut HsmBuffer,
) -> HsmStatus {
    // SAFETY: ABI contract forwarded.
    unsafe {
        call_with_output::<T>(instance, out, |t| {
            let digest = input(digest, "sign_digest digest")?;
            let alg = SignAlgorithm::from_abi(algorithm).ok_or_else(|| {
                HsmError::not_supported(format!("unknown signature algorithm {algorithm}"))
            })?;
            if digest.len() != alg.digest_len() {
                return Err(HsmError::invalid_argument(format!(
                    "{alg:?} signs a {}-byte digest, got {} bytes",
                    alg.digest_len(),
                    digest.len()
                )));
            }
            t.sign_digest(alg, digest)
        })
    }
}

unsafe extern "C" fn export_private_key<T: HsmPlugin + X509Hsm>(
    instance: *mut HsmInstance,
    out: *mut HsmBuffer,
) -> HsmStatus {
    // SAFETY: ABI contract forwarded.
    unsafe {
        call_with_output::<T>(instance, out, |t| {
            // The Zeroizing wrapper wipes this copy; release_buffer wipes the handed-out one.
            t.export_private_key_pem()
                .map(|pem| pem.as_bytes().to_vec())
        })
    }
}
