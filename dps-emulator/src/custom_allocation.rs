//! Custom allocation: for an enrollment whose `allocationPolicy` is `custom`, the hub is chosen
//! by the enrollment's webhook, as the service does it ("Understand custom allocation policies
//! with Azure IoT Hub Device Provisioning Service",
//! <https://learn.microsoft.com/azure/iot-dps/concepts-custom-allocation>).
//!
//! The emulator POSTs the documented `AllocationRequest` to `customAllocationDefinition.
//! webhookUrl`: `individualEnrollment` or `enrollmentGroup` (the enrollment as the service API
//! shows it, without its symmetric keys and with the webhook URL's query, the function key,
//! masked as `****`, as in the service's request the tutorial logs), `deviceRuntimeContext`
//! (`registrationId`, `currentIotHubHostName` and `currentDeviceId` on a later registration,
//! the attestation section — `symmetricKey: {}`, `tpm {endorsementKey, storageRootKey}` or
//! `x509` with the certificate details the registration result carries — and the device's
//! `payload`) and `linkedHubs`. The `AllocationResponse` gives `iotHubHostName` (one of the
//! linked hubs), optionally `initialTwin` (the hub device's twin) and `payload` (returned to the
//! device in `registrationState.payload`, the only case where DPS returns a payload: "How to
//! transfer payloads between devices and DPS").
//!
//! Failures become a failed registration, as the service reports them: the webhook answering
//! non-2xx gives `errorCode` 400207 and "Custom allocation failed with status code: N" (the
//! tutorial's heat-pump device and a captured service answer), 401/403 give 400209 (a captured
//! answer to a webhook's 401); a hub that is missing or not linked gives 400208 (no hub). A
//! webhook that cannot be reached, times out or answers something that is not an
//! `AllocationResponse` is not documented; the emulator reports it as 400207 with the reason.

use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::sync::Arc;
use std::time::Duration;

use crate::alloc::{AllocationFailure, NO_HUB};
use crate::auth::{Authenticated, Section};
use crate::error::EmulatorError;
use crate::hub::twin;
use crate::model::{CustomAllocationDefinition, RegistrationState};
use dps_proto::wire::DeviceRegistration;

/// `errorCode` of a registration whose webhook failed (a non-2xx answer, and here also an
/// unreachable webhook or an answer that is not an `AllocationResponse`).
pub const CUSTOM_ALLOCATION_FAILED: u32 = 400207;
/// `errorCode` of a registration whose webhook refused DPS's call (401 or 403).
pub const CUSTOM_ALLOCATION_UNAUTHORIZED: u32 = 400209;

/// Largest webhook answer read, bytes (a twin and a payload fit many times over).
const MAX_RESPONSE_BYTES: usize = 256 * 1024;

/// What a webhook decided.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Allocation {
    /// The hub, one of the linked hubs.
    pub hub: String,
    /// The twin the hub device gets, overriding the enrollment's.
    pub initial_twin: Option<Value>,
    /// Data for the device, returned in `registrationState.payload`.
    pub payload: Option<Value>,
}

/// The documented `AllocationResponse`. The documentation's table spells the hub
/// `iotHubHostname` and its examples `iotHubHostName`; both are read.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AllocationResponse {
    #[serde(default, alias = "iotHubHostname")]
    iot_hub_host_name: Option<String>,
    #[serde(default)]
    initial_twin: Option<Value>,
    #[serde(default)]
    payload: Option<Value>,
}

/// The HTTP client webhooks are called with: one per emulator, https trusted by the public web
/// roots (Azure Functions' certificates), no redirects followed, every call bounded by the
/// configured timeout.
#[derive(Debug, Clone)]
pub(crate) struct WebhookClient {
    client: reqwest::Client,
}

impl WebhookClient {
    /// A client whose calls give up after `timeout`.
    pub(crate) fn new(timeout: Duration) -> Result<Self, EmulatorError> {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("dps-emulator/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| EmulatorError::Config(format!("the webhook HTTP client: {e}")))?;
        Ok(Self { client })
    }

    /// Calls `def`'s webhook with `request` and checks its answer against `linked_hubs`.
    pub(crate) async fn allocate(
        &self,
        def: &CustomAllocationDefinition,
        request: &Value,
        linked_hubs: &[String],
    ) -> Result<Allocation, AllocationFailure> {
        let failed = |message: String| AllocationFailure {
            code: CUSTOM_ALLOCATION_FAILED,
            message,
        };
        let mut answer = self
            .client
            .post(&def.webhook_url)
            .json(request)
            .send()
            .await
            .map_err(|e| failed(format!("Custom allocation failed: {}", describe(&e))))?;
        let status = answer.status();
        if !status.is_success() {
            let code = if matches!(status.as_u16(), 401 | 403) {
                CUSTOM_ALLOCATION_UNAUTHORIZED
            } else {
                CUSTOM_ALLOCATION_FAILED
            };
            return Err(AllocationFailure {
                code,
                message: format!(
                    "Custom allocation failed with status code: {}",
                    status.as_u16()
                ),
            });
        }
        let mut body = Vec::new();
        loop {
            match answer.chunk().await {
                Ok(Some(chunk)) => {
                    if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                        return Err(failed(format!(
                            "Custom allocation failed: the webhook's answer is larger than {MAX_RESPONSE_BYTES} bytes"
                        )));
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(e) => {
                    return Err(failed(format!(
                        "Custom allocation failed: reading the webhook's answer: {}",
                        describe(&e)
                    )))
                }
            }
        }
        parse_answer(&body, linked_hubs)
    }
}

/// The cause of a reqwest failure in words (timeouts and refused connections named as such).
fn describe(e: &reqwest::Error) -> String {
    let mut text = if e.is_timeout() {
        "the webhook did not answer in time".to_string()
    } else if e.is_connect() {
        "cannot connect to the webhook".to_string()
    } else {
        "the webhook call failed".to_string()
    };
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Checks a 2xx answer: a JSON `AllocationResponse` whose hub is one of `linked_hubs`, whose
/// `initialTwin` and `payload` (when present) are objects.
fn parse_answer(body: &[u8], linked_hubs: &[String]) -> Result<Allocation, AllocationFailure> {
    let failed = |message: String| AllocationFailure {
        code: CUSTOM_ALLOCATION_FAILED,
        message,
    };
    let answer: AllocationResponse = serde_json::from_slice(body).map_err(|e| {
        failed(format!(
            "Custom allocation failed: the webhook's answer is not an AllocationResponse: {e}"
        ))
    })?;
    let hub = answer.iot_hub_host_name.ok_or_else(|| AllocationFailure {
        code: NO_HUB,
        message: "the custom allocation webhook gave no iotHubHostName".into(),
    })?;
    if !linked_hubs.iter().any(|h| h.eq_ignore_ascii_case(&hub)) {
        return Err(AllocationFailure {
            code: NO_HUB,
            message: format!(
                "the custom allocation webhook chose IoT hub {}, which is not linked to this provisioning service",
                hub.escape_debug()
            ),
        });
    }
    for (name, v) in [
        ("initialTwin", &answer.initial_twin),
        ("payload", &answer.payload),
    ] {
        if v.as_ref().is_some_and(|v| !v.is_object() && !v.is_null()) {
            return Err(failed(format!(
                "Custom allocation failed: the webhook's {name} is not a JSON object"
            )));
        }
    }
    // The desired properties become the hub device's twin: they must pass the hub's twin rules.
    if let Some(desired) = answer
        .initial_twin
        .as_ref()
        .and_then(|t| t.get("properties"))
        .and_then(|p| p.get("desired"))
    {
        twin::check_patch(desired.clone())
            .and_then(|patch| twin::apply(&mut twin::new_section(Map::new()), &patch))
            .map_err(|e| {
                failed(format!(
                    "Custom allocation failed: the webhook's initialTwin.properties.desired: {e}"
                ))
            })?;
    }
    Ok(Allocation {
        hub: linked_hubs
            .iter()
            .find(|h| h.eq_ignore_ascii_case(&hub))
            .cloned()
            .unwrap_or(hub),
        initial_twin: answer.initial_twin.filter(|v| !v.is_null()),
        payload: answer.payload.filter(|v| !v.is_null()),
    })
}

/// The `AllocationRequest` for a device `auth` let in, which sent `body`; `previous` is its
/// last assigned registration, if any (its hub and device id are the "current" ones).
pub(crate) fn request_body(
    auth: &Authenticated,
    registration_id: &str,
    body: &DeviceRegistration,
    linked_hubs: &[String],
    previous: Option<&RegistrationState>,
) -> Value {
    let (key, enrollment, section) = match auth {
        Authenticated::Individual(e, s) => ("individualEnrollment", serde_json::to_value(e), s),
        Authenticated::Group(g, s) => ("enrollmentGroup", serde_json::to_value(g), s),
    };
    let mut enrollment = enrollment.unwrap_or(Value::Null);
    strip_secrets(&mut enrollment);
    let mut context = Map::new();
    context.insert("registrationId".into(), json!(registration_id));
    if let Some(prev) = previous {
        if let Some(h) = &prev.assigned_hub {
            context.insert("currentIotHubHostName".into(), json!(h));
        }
        if let Some(d) = &prev.device_id {
            context.insert("currentDeviceId".into(), json!(d));
        }
    }
    match section {
        Section::Symmetric => {
            context.insert("symmetricKey".into(), json!({}));
        }
        Section::Tpm { .. } => {
            let tpm = body
                .tpm
                .as_ref()
                .and_then(|t| serde_json::to_value(t).ok())
                .unwrap_or_else(|| json!({}));
            context.insert("tpm".into(), tpm);
        }
        Section::X509 {
            leaf_info,
            signing_info,
        } => {
            let mut x = json!({ "certificateInfo": leaf_info });
            if let Some(s) = signing_info {
                x["signingCertificateInfo"] = s.clone();
            }
            context.insert("x509".into(), x);
        }
    }
    if let Some(p) = &body.payload {
        context.insert("payload".into(), p.clone());
    }
    json!({
        key: enrollment,
        "deviceRuntimeContext": context,
        "linkedHubs": linked_hubs,
    })
}

/// Removes what the webhook must not see: the symmetric keys (the service sends
/// `"attestation": {"type": "symmetricKey"}`) and the webhook URL's query (its function key;
/// the service's request shows `...?****`).
fn strip_secrets(enrollment: &mut Value) {
    if let Some(a) = enrollment
        .get_mut("attestation")
        .and_then(Value::as_object_mut)
    {
        a.remove("symmetricKey");
    }
    if let Some(url) = enrollment
        .get_mut("customAllocationDefinition")
        .and_then(|d| d.get_mut("webhookUrl"))
    {
        if let Some(text) = url.as_str() {
            if let Some((base, _query)) = text.split_once('?') {
                *url = json!(format!("{base}?****"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hubs() -> Vec<String> {
        vec!["a.azure-devices.net".into(), "b.azure-devices.net".into()]
    }

    #[test]
    fn answers_are_checked() {
        let ok = parse_answer(
            br#"{"iotHubHostName":"B.azure-devices.net","payload":{"k":1}}"#,
            &hubs(),
        )
        .unwrap();
        assert_eq!(ok.hub, "b.azure-devices.net");
        assert_eq!(ok.payload, Some(json!({"k": 1})));
        assert_eq!(ok.initial_twin, None);
        let alias = parse_answer(br#"{"iotHubHostname":"a.azure-devices.net"}"#, &hubs()).unwrap();
        assert_eq!(alias.hub, "a.azure-devices.net");
        for (body, code) in [
            (&br#"{"iotHubHostName":"z.azure-devices.net"}"#[..], NO_HUB),
            (br#"{}"#, NO_HUB),
            (br#"not json"#, CUSTOM_ALLOCATION_FAILED),
            (br#"[1]"#, CUSTOM_ALLOCATION_FAILED),
            (
                br#"{"iotHubHostName":"a.azure-devices.net","payload":5}"#,
                CUSTOM_ALLOCATION_FAILED,
            ),
            (
                br#"{"iotHubHostName":"a.azure-devices.net","initialTwin":"x"}"#,
                CUSTOM_ALLOCATION_FAILED,
            ),
            (
                br#"{"iotHubHostName":"a.azure-devices.net","initialTwin":{"properties":{"desired":{"a.b":1}}}}"#,
                CUSTOM_ALLOCATION_FAILED,
            ),
        ] {
            let e = parse_answer(body, &hubs()).unwrap_err();
            assert_eq!(e.code, code, "{}: {}", String::from_utf8_lossy(body), e.message);
        }
    }

    #[test]
    fn secrets_are_stripped() {
        let mut e = json!({
            "attestation": {"type": "symmetricKey", "symmetricKey": {"primaryKey": "k"}},
            "customAllocationDefinition": {"webhookUrl": "https://f.example/api/x?code=secret", "apiVersion": "2021-10-01"}
        });
        strip_secrets(&mut e);
        assert_eq!(e["attestation"], json!({"type": "symmetricKey"}));
        assert_eq!(
            e["customAllocationDefinition"]["webhookUrl"],
            "https://f.example/api/x?****"
        );
    }
}
