//! The device API's JSON bodies, with the service's camelCase names
//! (<https://learn.microsoft.com/rest/api/iot-dps/device/runtime-registration>). Every field a
//! server may leave out is optional or defaulted on input, so a client parses leniently;
//! optional fields are omitted on output.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The `status` values of an operation and of a registration state.
pub mod status {
    /// Not assigned yet.
    pub const UNASSIGNED: &str = "unassigned";
    /// The operation is running; poll it.
    pub const ASSIGNING: &str = "assigning";
    /// Assigned to a hub.
    pub const ASSIGNED: &str = "assigned";
    /// Assignment failed; `errorCode` and `errorMessage` say why.
    pub const FAILED: &str = "failed";
    /// The enrollment is disabled (older services say `blacklisted`).
    pub const DISABLED: &str = "disabled";
    /// The old name of `disabled`.
    pub const BLACKLISTED: &str = "blacklisted";
}

/// `substatus` values of an assigned registration.
pub mod substatus {
    /// The first assignment (or again to the same hub).
    pub const INITIAL_ASSIGNMENT: &str = "initialAssignment";
    /// Assigned to another hub than before; the device's data moved there.
    pub const DEVICE_DATA_MIGRATED: &str = "deviceDataMigrated";
    /// Assigned to another hub than before; its data there is the enrollment's initial state.
    pub const DEVICE_DATA_RESET: &str = "deviceDataReset";
    /// Assigned again to a hub it was assigned to before.
    pub const REPROVISIONED_TO_INITIAL_ASSIGNMENT: &str = "reprovisionedToInitialAssignment";
}

/// The TPM part of a register request (and of a TPM enrollment): base64 of the marshalled
/// `TPM2B_PUBLIC` of the endorsement key and of the storage root key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct TpmAttestation {
    /// base64 of the EK's `TPM2B_PUBLIC`.
    pub endorsement_key: String,
    /// base64 of the SRK's `TPM2B_PUBLIC` (required on register; informational on enrollments).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_root_key: Option<String>,
}

/// The body of a register request (`PUT {idScope}/registrations/{id}/register`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct DeviceRegistration {
    /// Must match the path's registration id when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registration_id: Option<String>,
    /// TPM devices send their EK and SRK.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm: Option<TpmAttestation>,
    /// Custom data for custom allocation, echoed in `registrationState.payload`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<Value>,
    /// A certificate signing request for a DPS-issued operational certificate: base64 of the
    /// DER PKCS#10, no PEM headers, sent with [`crate::api_version::ApiVersion::V2025_07_01Preview`].
    /// The service documentation ("Device certificate issuance in Azure Device Registry")
    /// describes the flow but not the field name; `csr` is what public client code sends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csr: Option<String>,
}

/// `registrationState.tpm`: the authenticationKey blob again, whose identity key the hub trusts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct TpmRegistrationResult {
    /// base64 of the blob the TPM activates and imports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authentication_key: Option<String>,
}

/// A registration state (`registrationState`, and the service API's registration record).
/// The service always sends the required fields of an assigned, failed or disabled state;
/// they default to empty on input so that a partial answer still parses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct RegistrationState {
    /// The registration id.
    #[serde(default)]
    pub registration_id: String,
    /// First registration time (RFC 3339 UTC).
    #[serde(default)]
    pub created_date_time_utc: String,
    /// The hub the device was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assigned_hub: Option<String>,
    /// The device id on that hub.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    /// See [`status`].
    #[serde(default)]
    pub status: String,
    /// See [`substatus`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub substatus: Option<String>,
    /// Set when status is failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<u64>,
    /// Set when status is failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
    /// Last change (RFC 3339 UTC).
    #[serde(default)]
    pub last_updated_date_time_utc: String,
    /// Changes on every update.
    #[serde(default)]
    pub etag: String,
    /// The device's payload, passed through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<Value>,
    /// TPM result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm: Option<TpmRegistrationResult>,
    /// X.509 result: `{"certificateInfo", "enrollmentGroupId", "signingCertificateInfo"}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x509: Option<Value>,
    /// Symmetric key result: `{"enrollmentGroupId"}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub symmetric_key: Option<Value>,
    /// The enrollment's initial twin (what the hub device starts with).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_twin: Option<Value>,
    /// The certificate issued for the request's `csr`: base64 DER certificates, leaf first,
    /// then its issuer(s). The field name is the one public client code reads; the service
    /// documentation does not name it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issued_certificate_chain: Option<Vec<String>>,
}

/// The answer to register and operation-status calls (`RegistrationOperationStatus`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct RegistrationOperationStatus {
    /// The operation to poll.
    pub operation_id: String,
    /// See [`status`].
    pub status: String,
    /// Present once the operation is done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registration_state: Option<RegistrationState>,
}

/// The TPM challenge, which rides on a 401 error body: the device activates
/// `authenticationKey` in its TPM and signs its next token with the identity key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TpmChallenge {
    /// base64 of the credential and duplication blob.
    pub authentication_key: String,
    /// Always null from the service; present in its answers.
    #[serde(default)]
    pub unencrypted_authentication_key: Option<String>,
    /// The `skn` the device's tokens must carry (`registration`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_name: Option<String>,
}

/// An error body (`ProvisioningServiceErrorDetails`), with the TPM challenge when there is one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    /// The DPS error code (also in the `x-ms-error-code` header), e.g. 401002.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<u64>,
    /// For support requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracking_id: Option<String>,
    /// What went wrong; never secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When (RFC 3339 UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp_utc: Option<String>,
    /// The TPM challenge of a 401 to a TPM device.
    #[serde(flatten, default, skip_serializing_if = "Option::is_none")]
    pub tpm_challenge: Option<TpmChallenge>,
}

/// The header that repeats an error body's `errorCode`.
pub const ERROR_CODE_HEADER: &str = "x-ms-error-code";

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_tpm_challenge_parses_and_prints_as_the_service_sends_it() {
        let wire = json!({
            "errorCode": 401002, "trackingId": "t", "message": "m",
            "timestampUtc": "2020-01-01T00:00:00Z",
            "authenticationKey": "AAA=", "unencryptedAuthenticationKey": null,
            "keyName": "registration"
        });
        let body: ErrorBody = serde_json::from_value(wire.clone()).unwrap_or_default();
        assert_eq!(
            body.tpm_challenge
                .as_ref()
                .map(|c| c.authentication_key.as_str()),
            Some("AAA=")
        );
        assert_eq!(serde_json::to_value(&body).ok(), Some(wire));
        let plain: ErrorBody = serde_json::from_value(json!({"errorCode": 404001, "message": "x"}))
            .unwrap_or_default();
        assert_eq!(plain.tpm_challenge, None);
        assert_eq!(plain.error_code, Some(404001));
    }

    #[test]
    fn the_register_body_omits_what_is_absent() {
        let body = DeviceRegistration {
            registration_id: Some("r".into()),
            tpm: None,
            payload: None,
            csr: None,
        };
        assert_eq!(
            serde_json::to_value(&body).ok(),
            Some(json!({"registrationId": "r"}))
        );
        let partial: RegistrationOperationStatus =
            serde_json::from_value(json!({"operationId": "o", "status": "assigned",
                "registrationState": {"assignedHub": "h", "deviceId": "d"}}))
            .unwrap_or_default();
        let state = partial.registration_state.unwrap_or_default();
        assert_eq!(state.assigned_hub.as_deref(), Some("h"));
        assert!(state.registration_id.is_empty());
    }
}
