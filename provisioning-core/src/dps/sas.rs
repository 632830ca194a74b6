//! Shared access signatures, the one token format DPS (symmetric key and TPM) and IoT Hub both
//! accept. The format and its URL encoding are [`dps_proto::sas`]'s; here the HMAC is always
//! computed by a [`SasSigner`] (the plugin), so the key never has to reach this process.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use dps_proto::sas::{
    build_token, dps_resource, hub_resource, string_to_sign, url_encode, SasSigner,
};

/// Seconds since the Unix epoch, `ttl` from now. A clock before 1970 counts as 1970: the
/// token then expires early and the service says so, which is better than panicking.
pub fn expiry_from_now(ttl: Duration) -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
        .saturating_add(ttl.as_secs())
}
