//! The registration's inputs and outputs as types, with DPS's own camelCase names.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// How the device proves its identity: DPS's attestation kinds, one definition for the client,
/// the emulator and the harness.
pub use dps_proto::AttestationKind as Attestation;

/// The outcome of a successful registration (`status` is `assigned`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegistrationResult {
    /// The registration id used.
    pub registration_id: String,
    /// The IoT hub host name the device was assigned to.
    pub assigned_hub: String,
    /// The device id on that hub.
    pub device_id: String,
    /// Always `assigned` here (other outcomes are errors).
    pub status: String,
    /// `initialAssignment`, `deviceDataMigrated`, `deviceDataReset`...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub substatus: Option<String>,
    /// The attestation that succeeded.
    pub attestation: Attestation,
    /// The payload DPS returned (custom allocation), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<serde_json::Value>,
    /// First registration time as DPS reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_date_time_utc: Option<String>,
    /// Last update time as DPS reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_updated_date_time_utc: Option<String>,
    /// The registration record's etag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// The operation that produced this result.
    pub operation_id: String,
    /// The certificate DPS issued for the request's CSR: base64 DER certificates, leaf first
    /// (`registrationState.issuedCertificateChain`). Unchecked here; see
    /// [`crate::issuance::verify_issued_chain`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issued_certificate_chain: Option<Vec<String>>,
}

/// What the client is doing, for progress output. Never carries a secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProgressEvent {
    /// A register request is being sent (`attempt` counts from 1).
    Registering {
        /// The registration id.
        registration_id: String,
        /// Attempt number.
        attempt: u32,
    },
    /// DPS sent a TPM challenge; the plugin is activating the identity key.
    TpmChallenge,
    /// DPS accepted the request; its operation is being polled.
    Assigning {
        /// The operation id.
        operation_id: String,
    },
    /// Waiting before the next request.
    Waiting {
        /// Why (poll, throttled, server error, connection problem).
        reason: String,
        /// How long.
        wait: Duration,
    },
    /// The device is assigned.
    Assigned {
        /// The hub.
        assigned_hub: String,
        /// The device id.
        device_id: String,
    },
}
