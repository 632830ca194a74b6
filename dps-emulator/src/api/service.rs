//! The service API (what the official service SDKs call): individual enrollments, enrollment
//! groups and registration records, authenticated with the shared access policy's SAS.

use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, IF_MATCH};
use hyper::{Method, Request, StatusCode};
use serde_json::Value;
use std::sync::Arc;

use super::http::{empty_response, json_response, parse_json, read_body, ApiError, Resp};
use super::{blocking, check_api_version};
use crate::app_state::AppState;
use crate::model::{EnrollmentGroup, IndividualEnrollment};
use crate::store::PutOutcome;
use crate::timeutil::unix_now;
use dps_proto::sas::SasToken;
use dps_proto::SERVICE_API_VERSIONS;

fn authorize(app: &AppState, req: &Request<Incoming>) -> Result<(), ApiError> {
    let header = req
        .headers()
        .get(AUTHORIZATION)
        .ok_or_else(|| ApiError::unauthorized("the service API needs a SharedAccessSignature"))?
        .to_str()
        .map_err(|_| ApiError::unauthorized("the Authorization header is not ASCII"))?;
    let token = SasToken::parse(header).map_err(|e| ApiError::unauthorized(e.to_string()))?;
    token
        .check_claims(None, Some(&app.config.service_policy_name), unix_now())
        .map_err(|e| ApiError::unauthorized(e.to_string()))?;
    if !resource_is_this_service(app, &token.sr, req.uri().path()) {
        return Err(ApiError::unauthorized(
            "the token's sr names another service or resource",
        ));
    }
    token
        .verify_signature_b64(&app.service_key_b64)
        .map_err(|e| ApiError::unauthorized(e.to_string()))
}

/// Whether a service token's `sr` grants this request. The service documents `sr` as "URI
/// prefix (by segment) of the endpoints that can be accessed with this token, starting with
/// host name of the IoT Device Provisioning Service (no protocol)", for example
/// `myDPS.azure-devices-provisioning.net`
/// (https://learn.microsoft.com/azure/iot-dps/how-to-control-access, "Security tokens"). So
/// the first segment must be one of this service's names (with this port, if one is given)
/// and the rest a segment prefix of the request path; case does not matter (the documented
/// value is the lowercase URI). A token minted for another DPS is refused even when the same
/// key signed it.
fn resource_is_this_service(app: &AppState, sr: &str, path: &str) -> bool {
    let sr = sr.trim_end_matches('/').to_ascii_lowercase();
    let mut parts = sr.split('/');
    let host = parts.next().unwrap_or_default();
    let host_ok = app.host_names.iter().any(|name| {
        host == name
            || host == format!("{name}:{}", app.port)
            || host == format!("[{name}]:{}", app.port)
    });
    if !host_ok {
        return false;
    }
    let mut path_segments = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| s.to_ascii_lowercase());
    parts.all(|want| path_segments.next().is_some_and(|have| have == want))
}

fn if_match(req: &Request<Incoming>) -> Option<String> {
    req.headers()
        .get(IF_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

fn precondition_failed() -> ApiError {
    ApiError::new(
        StatusCode::PRECONDITION_FAILED,
        412001,
        "the etag in If-Match does not match the stored record",
    )
}

fn registration_not_found(id: &str) -> ApiError {
    ApiError::not_found(404202, format!("registration {id} not found"))
}

/// The fields of the service API's `DeviceRegistrationState`, as "Device Registration State -
/// Get" documents them (https://learn.microsoft.com/rest/api/iot-dps/service/device-registration-state/get):
/// assignedHub, createdDateTimeUtc, deviceId, errorCode, errorMessage, etag,
/// lastUpdatedDateTimeUtc, payload, registrationId, status, substatus. The stored record also
/// holds what the device API returns (the TPM authenticationKey, the attestation sections),
/// which the service API does not give out.
pub(crate) fn registration_state(r: &crate::model::RegistrationState) -> Value {
    const DOCUMENTED: [&str; 11] = [
        "assignedHub",
        "createdDateTimeUtc",
        "deviceId",
        "errorCode",
        "errorMessage",
        "etag",
        "lastUpdatedDateTimeUtc",
        "payload",
        "registrationId",
        "status",
        "substatus",
    ];
    match to_json(r) {
        Value::Object(mut m) => {
            m.retain(|k, _| DOCUMENTED.contains(&k.as_str()));
            Value::Object(m)
        }
        other => other,
    }
}

fn to_json<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// PUT/GET/DELETE on `enrollments/{id}`, `enrollmentGroups/{id}`, GET/DELETE `registrations/{id}`
/// ("Device Registration State - Delete": If-Match optional).
pub(crate) async fn item(
    app: Arc<AppState>,
    req: Request<Incoming>,
    kind: &str,
    id: &str,
) -> Result<Resp, ApiError> {
    check_api_version(&req, SERVICE_API_VERSIONS)?;
    authorize(&app, &req)?;
    let method = req.method().clone();
    let etag = if_match(&req);
    let id = id.to_string();
    let kind = kind.to_string();
    let body = if method == Method::PUT {
        Some(read_body(req, app.config.max_body_bytes).await?)
    } else {
        None
    };
    blocking(move || {
        let store = &app.store;
        let etag = etag.as_deref();
        match (kind.as_str(), method) {
            ("enrollments", Method::PUT) => {
                let e: IndividualEnrollment = parse_json(body.as_deref().unwrap_or_default())?;
                if e.registration_id != id {
                    return Err(ApiError::bad_request(
                        "registrationId in the body differs from the one in the path",
                    ));
                }
                match store.put_individual(e, etag)? {
                    PutOutcome::Written(e) => Ok(json_response(StatusCode::OK, &to_json(&e))),
                    PutOutcome::EtagMismatch => Err(precondition_failed()),
                }
            }
            ("enrollmentGroups", Method::PUT) => {
                let g: EnrollmentGroup = parse_json(body.as_deref().unwrap_or_default())?;
                if g.enrollment_group_id != id {
                    return Err(ApiError::bad_request(
                        "enrollmentGroupId in the body differs from the one in the path",
                    ));
                }
                match store.put_group(g, etag)? {
                    PutOutcome::Written(g) => Ok(json_response(StatusCode::OK, &to_json(&g))),
                    PutOutcome::EtagMismatch => Err(precondition_failed()),
                }
            }
            ("enrollments", Method::GET) => match store.individual(&id)? {
                Some(e) => Ok(json_response(StatusCode::OK, &to_json(&e))),
                None => Err(ApiError::not_found(
                    404201,
                    format!("enrollment {id} not found"),
                )),
            },
            ("enrollmentGroups", Method::GET) => match store.group(&id)? {
                Some(g) => Ok(json_response(StatusCode::OK, &to_json(&g))),
                None => Err(ApiError::not_found(
                    404201,
                    format!("enrollment group {id} not found"),
                )),
            },
            ("registrations", Method::GET) => match store.registration(&id)? {
                Some(r) => Ok(json_response(StatusCode::OK, &registration_state(&r))),
                None => Err(registration_not_found(&id)),
            },
            ("registrations", Method::DELETE) => match store.delete_registration(&id, etag)? {
                Some(PutOutcome::Written(())) => Ok(empty_response(StatusCode::NO_CONTENT)),
                Some(PutOutcome::EtagMismatch) => Err(precondition_failed()),
                None => Err(registration_not_found(&id)),
            },
            ("enrollments", Method::DELETE) => match store.delete_individual(&id, etag)? {
                PutOutcome::Written(()) => Ok(empty_response(StatusCode::NO_CONTENT)),
                PutOutcome::EtagMismatch => Err(precondition_failed()),
            },
            ("enrollmentGroups", Method::DELETE) => match store.delete_group(&id, etag)? {
                PutOutcome::Written(()) => Ok(empty_response(StatusCode::NO_CONTENT)),
                PutOutcome::EtagMismatch => Err(precondition_failed()),
            },
            (_, m) => Err(ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                405000,
                format!("method {m} is not supported on {kind}/{{id}}"),
            )),
        }
    })
    .await
}

/// POST `enrollments/query` and `enrollmentGroups/query`: every record (the query text is
/// accepted but, as SELECT * is all the SDKs send by default, not interpreted).
pub(crate) async fn query(
    app: Arc<AppState>,
    req: Request<Incoming>,
    kind: &str,
) -> Result<Resp, ApiError> {
    check_api_version(&req, SERVICE_API_VERSIONS)?;
    authorize(&app, &req)?;
    let body = read_body(req, app.config.max_body_bytes).await?;
    if !body.iter().all(u8::is_ascii_whitespace) {
        let _: Value = parse_json(&body)?;
    }
    let kind = kind.to_string();
    blocking(move || {
        let items = if kind == "enrollments" {
            to_json(&app.store.individuals()?)
        } else {
            to_json(&app.store.groups()?)
        };
        Ok(json_response(StatusCode::OK, &items))
    })
    .await
}

/// POST `enrollments/{id}/attestationmechanism` and `enrollmentGroups/{id}/attestationmechanism`
/// ("Individual Enrollment - Get Attestation Mechanism", "Enrollment Group - Get Attestation
/// Mechanism", https://learn.microsoft.com/rest/api/iot-dps/service/individual-enrollment):
/// the enrollment's `AttestationMechanism`, keys included.
pub(crate) async fn attestation_mechanism(
    app: Arc<AppState>,
    req: Request<Incoming>,
    kind: &str,
    id: &str,
) -> Result<Resp, ApiError> {
    check_api_version(&req, SERVICE_API_VERSIONS)?;
    authorize(&app, &req)?;
    let (kind, id) = (kind.to_string(), id.to_string());
    blocking(move || {
        let mechanism = if kind == "enrollments" {
            app.store.individual(&id)?.map(|e| e.attestation)
        } else {
            app.store.group(&id)?.map(|g| g.attestation)
        };
        match mechanism {
            Some(m) => Ok(json_response(StatusCode::OK, &to_json(&m))),
            None => Err(ApiError::not_found(
                404201,
                format!("enrollment {id} not found"),
            )),
        }
    })
    .await
}

/// Most enrollments in one bulk operation: "Bulk device enrollment operation with maximum of
/// 10 enrollments" ("Individual Enrollment - Run Bulk Operation",
/// https://learn.microsoft.com/rest/api/iot-dps/service/individual-enrollment/run-bulk-operation).
pub(crate) const BULK_MAX_ENROLLMENTS: usize = 10;

/// The documented `BulkEnrollmentOperation` body.
#[derive(serde::Deserialize)]
struct BulkOperation {
    enrollments: Vec<IndividualEnrollment>,
    mode: String,
}

/// POST `enrollments`: the bulk enrollment operation (`mode` create, update,
/// updateIfMatchETag or delete over at most [`BULK_MAX_ENROLLMENTS`] enrollments), answered
/// 200 with the documented `BulkEnrollmentOperationResult`: `isSuccessful` and one
/// `{registrationId, errorCode, errorStatus}` per enrollment that failed.
pub(crate) async fn bulk(app: Arc<AppState>, req: Request<Incoming>) -> Result<Resp, ApiError> {
    check_api_version(&req, SERVICE_API_VERSIONS)?;
    authorize(&app, &req)?;
    let body = read_body(req, app.config.max_body_bytes).await?;
    let op: BulkOperation = parse_json(&body)?;
    if !matches!(
        op.mode.as_str(),
        "create" | "update" | "updateIfMatchETag" | "delete"
    ) {
        return Err(ApiError::bad_request(format!(
            "mode {:?} is not one of create, update, updateIfMatchETag, delete",
            op.mode
        )));
    }
    if op.enrollments.len() > BULK_MAX_ENROLLMENTS {
        return Err(ApiError::bad_request(format!(
            "a bulk operation takes at most {BULK_MAX_ENROLLMENTS} enrollments"
        )));
    }
    blocking(move || {
        let store = &app.store;
        let mut errors = Vec::new();
        for e in op.enrollments {
            let id = e.registration_id.clone();
            let etag = e.common.etag.clone();
            let outcome: Result<(), ApiError> = match op.mode.as_str() {
                // Create refuses an existing id (the check and the write are not one
                // transaction: two concurrent creates of one id may both succeed).
                "create" => match store.individual(&id)? {
                    Some(_) => Err(ApiError::new(
                        StatusCode::CONFLICT,
                        409201,
                        format!("enrollment {id} already exists"),
                    )),
                    None => store
                        .put_individual(e, None)
                        .map(|_| ())
                        .map_err(Into::into),
                },
                "update" => store
                    .put_individual(e, None)
                    .map(|_| ())
                    .map_err(Into::into),
                "updateIfMatchETag" => match store.put_individual(e, etag.as_deref()) {
                    Ok(PutOutcome::Written(_)) => Ok(()),
                    Ok(PutOutcome::EtagMismatch) => Err(precondition_failed()),
                    Err(err) => Err(err.into()),
                },
                _ => match store.delete_individual(&id, None) {
                    Ok(_) => Ok(()),
                    Err(err) => Err(err.into()),
                },
            };
            if let Err(err) = outcome {
                errors.push(serde_json::json!({
                    "registrationId": id,
                    "errorCode": err.code,
                    "errorStatus": err.message,
                }));
            }
        }
        Ok(json_response(
            StatusCode::OK,
            &serde_json::json!({ "isSuccessful": errors.is_empty(), "errors": errors }),
        ))
    })
    .await
}

/// POST `registrations/{enrollmentGroupId}/query` ("Device Registration State - Query": "Gets
/// the registration state of devices in this enrollmentGroup"): the documented
/// `DeviceRegistrationState` of every device registered through that group, by id; empty
/// when none did.
pub(crate) async fn group_registrations(
    app: Arc<AppState>,
    req: Request<Incoming>,
    group: &str,
) -> Result<Resp, ApiError> {
    check_api_version(&req, SERVICE_API_VERSIONS)?;
    authorize(&app, &req)?;
    let body = read_body(req, app.config.max_body_bytes).await?;
    if !body.iter().all(u8::is_ascii_whitespace) {
        let _: Value = parse_json(&body)?;
    }
    let group = group.to_string();
    blocking(move || {
        let of_group = |r: &crate::model::RegistrationState| {
            [r.x509.as_ref(), r.symmetric_key.as_ref()]
                .into_iter()
                .flatten()
                .any(|s| s.get("enrollmentGroupId").and_then(Value::as_str) == Some(&group))
        };
        let states: Vec<Value> = app
            .store
            .registrations()?
            .iter()
            .filter(|r| of_group(r))
            .map(registration_state)
            .collect();
        Ok(json_response(StatusCode::OK, &Value::Array(states)))
    })
    .await
}
