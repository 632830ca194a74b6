//! TPM attestation, server side: challenges made with `hsm-tpm-common` (MakeCredential to the EK,
//! Duplicate of a fresh HMAC identity key to the SRK), and the identity keys remembered until the
//! device answers with a SAS signed by that key.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use std::collections::HashMap;
use std::sync::Mutex;
use zeroize::Zeroizing;

/// An issued challenge: the identity key (secret) and the blob the device received.
struct Issued {
    identity_key: Zeroizing<Vec<u8>>,
    authentication_key_b64: String,
}

/// Identity keys of outstanding and answered TPM challenges, by registration id. In memory only:
/// after a restart a TPM device simply gets a fresh challenge.
#[derive(Default)]
pub(crate) struct Challenges {
    by_registration: Mutex<HashMap<String, Issued>>,
}

impl std::fmt::Debug for Challenges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Challenges { .. }")
    }
}

impl Challenges {
    /// Makes a challenge for `ek`/`srk` (marshalled TPM2B_PUBLIC) and remembers its key. Returns
    /// the base64 authenticationKey.
    pub fn issue(
        &self,
        registration_id: &str,
        ek: &[u8],
        srk: &[u8],
    ) -> Result<String, hsm_tpm_common::TpmWireError> {
        let ch = hsm_tpm_common::dps::make_dps_challenge(ek, srk)?;
        let b64 = B64.encode(&ch.blob);
        let mut map = self
            .by_registration
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        map.insert(
            registration_id.to_string(),
            Issued {
                identity_key: ch.identity_key,
                authentication_key_b64: b64.clone(),
            },
        );
        Ok(b64)
    }

    /// Runs `verify` with the identity key issued to `registration_id`; returns the blob's base64
    /// when a key exists and `verify` accepts it.
    pub fn verify_with<E>(
        &self,
        registration_id: &str,
        verify: impl FnOnce(&[u8]) -> Result<(), E>,
    ) -> Option<Result<String, E>> {
        let map = self
            .by_registration
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let issued = map.get(registration_id)?;
        Some(verify(&issued.identity_key).map(|()| issued.authentication_key_b64.clone()))
    }
}
