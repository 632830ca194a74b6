//! The registration's inputs and outputs as types, with DPS's own camelCase names.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// How the device proves its identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Attestation {
    /// TPM: EK and SRK, a challenge the TPM must open, SAS signed by the identity key.
    Tpm,
    /// X.509: mutual TLS with the plugin's certificate chain, signing inside the plugin.
    X509,
    /// Symmetric key: SAS signed by the plugin's key.
    SymmetricKey,
}

impl Attestation {
    /// DPS's name: `tpm`, `x509` or `symmetricKey`.
    pub fn as_str(self) -> &'static str {
        match self {
            Attestation::Tpm => "tpm",
            Attestation::X509 => "x509",
            Attestation::SymmetricKey => "symmetricKey",
        }
    }
}

impl std::fmt::Display for Attestation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Attestation {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "tpm" => Ok(Attestation::Tpm),
            "x509" => Ok(Attestation::X509),
            "symmetricKey" | "symmetric-key" | "symmetric" => Ok(Attestation::SymmetricKey),
            other => Err(format!(
                "unknown attestation `{other}`; use tpm, x509 or symmetricKey"
            )),
        }
    }
}

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

/// The register request body.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RegisterBody<'a> {
    pub registration_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tpm: Option<TpmBody>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<&'a serde_json::Value>,
}

/// The TPM section of the register body.
#[derive(Serialize, Clone)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TpmBody {
    pub endorsement_key: String,
    pub storage_root_key: String,
}

/// An operation answer (202 or 200).
#[derive(Deserialize, Debug)]
#[serde(rename_all = "camelCase")]
pub(crate) struct OperationAnswer {
    pub operation_id: String,
    pub status: String,
    #[serde(default)]
    pub registration_state: Option<RegistrationStateWire>,
}

/// registrationState as DPS sends it.
#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RegistrationStateWire {
    #[serde(default)]
    pub registration_id: Option<String>,
    #[serde(default)]
    pub assigned_hub: Option<String>,
    #[serde(default)]
    pub device_id: Option<String>,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub substatus: Option<String>,
    #[serde(default)]
    pub error_code: Option<u64>,
    #[serde(default)]
    pub error_message: Option<String>,
    #[serde(default)]
    pub created_date_time_utc: Option<String>,
    #[serde(default)]
    pub last_updated_date_time_utc: Option<String>,
    #[serde(default)]
    pub etag: Option<String>,
    #[serde(default)]
    pub payload: Option<serde_json::Value>,
    #[serde(default)]
    pub tpm: Option<TpmStateWire>,
}

/// registrationState.tpm.
#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TpmStateWire {
    #[serde(default)]
    pub authentication_key: Option<String>,
}

/// An error body (and the TPM challenge, which rides on a 401).
#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ErrorBody {
    #[serde(default)]
    pub error_code: Option<u64>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub tracking_id: Option<String>,
    #[serde(default)]
    pub authentication_key: Option<String>,
    #[serde(default)]
    pub key_name: Option<String>,
}
