//! Status codes, capability bits and the other small constants of the ABI.

/// Result of every plugin call. `HSM_OK` (0) is success; anything else is an error whose
/// message can be read with `last_error`. Unknown codes must be treated as `HSM_ERR_INTERNAL`.
pub type HsmStatus = i32;

/// The call succeeded.
pub const HSM_OK: HsmStatus = 0;
/// An argument was NULL, empty, malformed or out of range.
pub const HSM_ERR_INVALID_ARGUMENT: HsmStatus = 1;
/// The plugin does not implement this operation (or refuses it by policy, such as exporting
/// a private key).
pub const HSM_ERR_NOT_SUPPORTED: HsmStatus = 2;
/// A key, certificate, token or object the call needs does not exist.
pub const HSM_ERR_NOT_FOUND: HsmStatus = 3;
/// The hardware or its driver failed (TPM error, PKCS#11 error, I/O error).
pub const HSM_ERR_DEVICE: HsmStatus = 4;
/// Authentication to the device failed (wrong PIN, wrong hierarchy password, bad policy).
pub const HSM_ERR_AUTHENTICATION: HsmStatus = 5;
/// The operation is not valid in the instance's current state (for example signing with
/// the TPM identity key before one was activated).
pub const HSM_ERR_INVALID_STATE: HsmStatus = 6;
/// A bug or an unexpected condition inside the plugin.
pub const HSM_ERR_INTERNAL: HsmStatus = 7;
/// The plugin panicked (or threw); the panic was caught at the boundary.
pub const HSM_ERR_PANIC: HsmStatus = 8;
/// The host and the plugin speak incompatible ABI majors.
pub const HSM_ERR_ABI_MISMATCH: HsmStatus = 9;

/// Capability bit: the plugin has a TPM table.
pub const HSM_CAP_TPM: u32 = 1 << 0;
/// Capability bit: the plugin has an X.509 table.
pub const HSM_CAP_X509: u32 = 1 << 1;
/// Capability bit: the plugin has a symmetric-key table.
pub const HSM_CAP_SYMMETRIC_KEY: u32 = 1 << 2;

/// Threading: calls on one instance must be serialized by the host (different instances may
/// still be used from different threads at the same time).
pub const HSM_THREADING_SERIALIZED: u32 = 0;
/// Threading: one instance may be called from several threads at once.
pub const HSM_THREADING_CONCURRENT: u32 = 1;

/// Log level for [`crate::HsmHostApi::log`]: error.
pub const HSM_LOG_ERROR: u32 = 1;
/// Log level: warning.
pub const HSM_LOG_WARN: u32 = 2;
/// Log level: information.
pub const HSM_LOG_INFO: u32 = 3;
/// Log level: debug.
pub const HSM_LOG_DEBUG: u32 = 4;
/// Log level: trace.
pub const HSM_LOG_TRACE: u32 = 5;

/// X.509 signature: ECDSA P-256 over a SHA-256 digest (32-byte input). Output: the DER
/// `ECDSA-Sig-Value` (as used by TLS and X.509), not raw r||s.
pub const HSM_SIGN_ECDSA_P256_SHA256: u32 = 1;
/// X.509 signature: ECDSA P-384 over a SHA-384 digest (48-byte input). Output: DER.
pub const HSM_SIGN_ECDSA_P384_SHA384: u32 = 2;
/// X.509 signature: RSA PKCS#1 v1.5 over a SHA-256 digest (32-byte input).
pub const HSM_SIGN_RSA_PKCS1_SHA256: u32 = 3;
/// X.509 signature: RSA-PSS (MGF1-SHA256, salt length 32) over a SHA-256 digest.
pub const HSM_SIGN_RSA_PSS_SHA256: u32 = 4;
