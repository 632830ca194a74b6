//! The device API: register, operation status, registration status lookup. Credentials are
//! verified for real before anything is recorded. Unknown devices and every refused credential
//! get the same answer (401, errorCode 401002, "Unauthorized", as the service answers; the
//! reason is logged under the trackingId), so the API reveals neither which registration ids
//! are enrolled nor with which attestation. The one exception is the service's own: a TPM
//! challenge for an endorsement key that matches the enrollment.

use hyper::body::Incoming;
use hyper::header::AUTHORIZATION;
use hyper::{Request, StatusCode};
use serde_json::{json, Value};
use std::sync::Arc;

use super::http::{self, json_response, parse_json, read_body, ApiError, DeviceAnswer, Resp};
use super::{blocking, check_api_version};
use crate::alloc::{allocate, AllocationFailure};
use crate::app_state::{AppState, PeerChain};
use crate::auth::{
    authenticate, AuthContext, AuthError, Authenticated, DeviceRequest, Section, Transport,
};
use crate::custom_allocation::{self, Allocation};
use crate::model::{
    AllocationPolicy, CustomAllocationDefinition, DeviceRegistration, EnrollmentCommon,
    ProvisioningStatus, RegistrationState,
};
use crate::timeutil::{now_rfc3339, unix_now_ms};
use crate::validate::is_valid_id;
use dps_proto::wire::{status, substatus, RegistrationOperationStatus, TpmRegistrationResult};
use dps_proto::DEVICE_API_VERSIONS;

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Refused(reason) => ApiError::unauthorized(reason),
            AuthError::Challenge(challenge) => {
                let mut err = ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    401002,
                    "TPM challenge: activate the authenticationKey and sign",
                );
                err.tpm_challenge = Some(Box::new(challenge));
                err
            }
            AuthError::BadRequest(m) => ApiError::bad_request(m),
            AuthError::Internal(m) => ApiError::internal(m),
            AuthError::Store(e) => e.into(),
        }
    }
}

/// Authenticates `r` against the enrollments.
fn authenticate_request(app: &AppState, r: &DeviceRequest) -> Result<Authenticated, ApiError> {
    let ctx = AuthContext {
        id_scope: &app.config.id_scope,
        challenges: &app.tpm,
    };
    Ok(authenticate(&ctx, &app.store, r)?)
}

/// Checks the id scope and the registration id a request names (the HTTPS path, the MQTT
/// CONNECT username).
pub(crate) fn check_path(app: &AppState, scope: &str, reg: &str) -> Result<(), ApiError> {
    if scope != app.config.id_scope {
        return Err(ApiError::not_found(404001, "unknown id scope"));
    }
    if !is_valid_id(reg) {
        return Err(ApiError::bad_request(
            "registration id must be 1-128 characters of a-z A-Z 0-9 - . _ :",
        ));
    }
    Ok(())
}

/// A device request from what a transport received: the registration id it addressed (HTTPS
/// path, MQTT CONNECT), the body (HTTPS body, MQTT PUBLISH payload), the SAS (Authorization
/// header, MQTT password) and the TLS client chain. The body's registrationId, if any, must be
/// the addressed one.
pub(crate) fn device_request(
    reg: &str,
    bytes: &[u8],
    authorization: Option<String>,
    chain: PeerChain,
    transport: Transport,
    body_required: bool,
) -> Result<DeviceRequest, ApiError> {
    let body: DeviceRegistration = if bytes.iter().all(u8::is_ascii_whitespace) {
        if body_required {
            return Err(ApiError::bad_request(
                "a JSON body with registrationId is required",
            ));
        }
        DeviceRegistration::default()
    } else {
        parse_json(bytes)?
    };
    if let Some(id) = &body.registration_id {
        if id != reg {
            return Err(ApiError::bad_request(
                "registrationId in the body differs from the one in the path",
            ));
        }
    }
    Ok(DeviceRequest {
        registration_id: reg.to_string(),
        body,
        authorization,
        chain,
        transport,
    })
}

async fn parse_request(
    app: &AppState,
    chain: PeerChain,
    req: Request<Incoming>,
    reg: &str,
    body_required: bool,
) -> Result<DeviceRequest, ApiError> {
    let authorization = match req.headers().get(AUTHORIZATION) {
        Some(v) => Some(
            v.to_str()
                .map_err(|_| ApiError::unauthorized("the Authorization header is not ASCII"))?
                .to_string(),
        ),
        None => None,
    };
    let bytes = read_body(req, app.config.max_body_bytes).await?;
    device_request(
        reg,
        &bytes,
        authorization,
        chain,
        Transport::Https,
        body_required,
    )
}

/// The enrollment fields of whichever enrollment let the device in.
fn common_of(auth: &Authenticated) -> &EnrollmentCommon {
    match auth {
        Authenticated::Individual(e, _) => &e.common,
        Authenticated::Group(g, _) => &g.common,
    }
}

/// How a registration's hub will be decided, found before any webhook is called.
enum Plan {
    /// The enrollment is disabled: no hub.
    Disabled,
    /// Already decided (built-in policy, or the device keeps its current hub).
    Decided(Result<Allocation, AllocationFailure>),
    /// The enrollment's custom allocation webhook decides (called outside the blocking pool).
    Webhook {
        definition: CustomAllocationDefinition,
        request: Value,
    },
}

/// Decides how the device gets its hub: not at all when disabled; its current hub when the
/// reprovision policy keeps it there; the webhook for a custom enrollment; the built-in policy
/// otherwise.
fn plan(app: &AppState, r: &DeviceRequest, auth: &Authenticated) -> Result<Plan, ApiError> {
    let common = common_of(auth);
    if common.provisioning_status == ProvisioningStatus::Disabled {
        return Ok(Plan::Disabled);
    }
    let reg = &r.registration_id;
    let custom = common.allocation_policy == Some(AllocationPolicy::Custom);
    let policy = common.reprovision_policy.unwrap_or_default();
    let previous = if custom || !policy.update_hub_assignment {
        app.store
            .registration(reg)?
            .filter(|prev| prev.status == status::ASSIGNED)
    } else {
        None
    };
    // updateHubAssignment false: "the device will stay assigned to its current IoT hub"
    // (https://learn.microsoft.com/azure/iot-dps/concepts-device-reprovision), when it has
    // one this emulator still serves; no webhook is asked then.
    if !policy.update_hub_assignment {
        if let Some(hub) = previous
            .as_ref()
            .and_then(|prev| prev.assigned_hub.clone())
            .filter(|h| app.hubs.contains(h))
        {
            return Ok(Plan::Decided(Ok(Allocation {
                hub,
                initial_twin: None,
                payload: None,
            })));
        }
    }
    if custom {
        let Some(definition) = common.custom_allocation_definition.clone() else {
            // Validation requires the definition; only a record written before it can lack it.
            return Ok(Plan::Decided(Err(AllocationFailure {
                code: custom_allocation::CUSTOM_ALLOCATION_FAILED,
                message: "the enrollment's allocation policy is custom but it has no customAllocationDefinition".into(),
            })));
        };
        let request =
            custom_allocation::request_body(auth, reg, &r.body, &app.hubs, previous.as_ref());
        return Ok(Plan::Webhook {
            definition,
            request,
        });
    }
    Ok(Plan::Decided(allocate(common, reg, &app.hubs).map(|hub| {
        Allocation {
            hub,
            initial_twin: None,
            payload: None,
        }
    })))
}

/// The registration state for a device `auth` let in, given how its hub was decided (`None`:
/// the enrollment is disabled).
fn outcome(
    r: &DeviceRequest,
    auth: &Authenticated,
    allocated: Option<Result<Allocation, AllocationFailure>>,
) -> RegistrationState {
    let reg = r.registration_id.clone();
    let (common, device_id, group_id, real_section) = match auth {
        Authenticated::Individual(e, s) => (
            &e.common,
            e.device_id.clone().unwrap_or_else(|| reg.clone()),
            None,
            s,
        ),
        Authenticated::Group(g, s) => (
            &g.common,
            reg.clone(),
            Some(g.enrollment_group_id.clone()),
            s,
        ),
    };
    let now = now_rfc3339();
    let mut state = RegistrationState {
        registration_id: reg.clone(),
        created_date_time_utc: now.clone(),
        assigned_hub: None,
        device_id: None,
        status: String::new(),
        substatus: None,
        error_code: None,
        error_message: None,
        last_updated_date_time_utc: now,
        etag: crate::timeutil::random_hex(8),
        // The request's payload is for a custom allocation webhook; the service answers with
        // a payload only when such a webhook returned one ("Use device payloads in custom
        // allocation", https://learn.microsoft.com/azure/iot-dps/concepts-custom-allocation),
        // never with the device's own echoed back. Set below from the webhook's answer.
        payload: None,
        tpm: None,
        x509: None,
        symmetric_key: None,
        initial_twin: common.initial_twin.clone(),
        issued_certificate_chain: None,
    };
    match real_section {
        Section::Tpm {
            authentication_key_b64,
            ..
        } => {
            state.tpm = Some(TpmRegistrationResult {
                authentication_key: Some(authentication_key_b64.clone()),
            })
        }
        Section::X509 {
            leaf_info,
            signing_info,
        } => {
            let mut x = json!({ "certificateInfo": leaf_info });
            if let Some(g) = &group_id {
                x["enrollmentGroupId"] = json!(g);
            }
            if let Some(s) = signing_info {
                x["signingCertificateInfo"] = s.clone();
            }
            state.x509 = Some(x);
        }
        Section::Symmetric => {
            let mut s = json!({});
            if let Some(g) = &group_id {
                s["enrollmentGroupId"] = json!(g);
            }
            state.symmetric_key = Some(s);
        }
    }
    match allocated {
        None => state.status = status::DISABLED.into(),
        Some(Ok(a)) => {
            state.status = status::ASSIGNED.into();
            state.substatus = Some(substatus::INITIAL_ASSIGNMENT.into());
            state.assigned_hub = Some(a.hub);
            state.device_id = Some(device_id);
            // A webhook's initialTwin "will override any twin migration settings in the
            // enrollment" (concepts-custom-allocation): it replaces the enrollment's.
            if a.initial_twin.is_some() {
                state.initial_twin = a.initial_twin;
            }
            state.payload = a.payload;
        }
        Some(Err(f)) => {
            state.status = status::FAILED.into();
            state.error_code = Some(u64::from(f.code));
            state.error_message = Some(f.message);
        }
    }
    state
}

/// PUT /{idScope}/registrations/{registrationId}/register
pub(crate) async fn register(
    app: Arc<AppState>,
    chain: PeerChain,
    req: Request<Incoming>,
    scope: &str,
    reg: &str,
) -> Result<Resp, ApiError> {
    check_api_version(&req, DEVICE_API_VERSIONS)?;
    check_path(&app, scope, reg)?;
    let api_version = http::query_param(req.uri().query(), "api-version");
    let r = parse_request(&app, chain, req, reg, true).await?;
    let answer = register_request(app, r).await?;
    Ok(with_location(answer, scope, reg, api_version.as_deref()).into_response())
}

/// Adds the `Location` header a `202 Accepted` carries on HTTPS: the documented "Register
/// Device" and "Operation Status Lookup" 202 answers list the headers `Location: string` and
/// `retry-after: integer`
/// (https://learn.microsoft.com/rest/api/iot-dps/device/runtime-registration/register-device).
/// The documentation does not spell out its value; here it is the operation's status URL
/// ("Operation Status Lookup": `/{idScope}/registrations/{registrationId}/operations/
/// {operationId}?api-version=...`, the request's api-version), as a path on this host.
fn with_location(
    mut answer: DeviceAnswer,
    scope: &str,
    reg: &str,
    api_version: Option<&str>,
) -> DeviceAnswer {
    if answer.status != StatusCode::ACCEPTED {
        return answer;
    }
    if let (Some(op), Some(v)) = (answer.body["operationId"].as_str(), api_version) {
        // RFC 3986 unreserved characters stay as they are (ids are made of them).
        const PATH: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
            .remove(b'-')
            .remove(b'.')
            .remove(b'_')
            .remove(b'~');
        let enc = |s: &str| percent_encoding::utf8_percent_encode(s, PATH).to_string();
        answer.location = Some(format!(
            "/{}/registrations/{}/operations/{}?api-version={}",
            enc(scope),
            enc(reg),
            enc(op),
            enc(v)
        ));
    }
    answer
}

/// Registers a device, whichever transport carried the request: authenticates it, decides the
/// outcome, records the registration and its operation, and answers 202 assigning (or 200 with
/// the final state when configured to complete at once).
pub(crate) async fn register_request(
    app: Arc<AppState>,
    r: DeviceRequest,
) -> Result<DeviceAnswer, ApiError> {
    let app2 = app.clone();
    let (r, auth, plan) = blocking(move || {
        let auth = authenticate_request(&app2, &r)?;
        let plan = plan(&app2, &r, &auth)?;
        Ok((r, auth, plan))
    })
    .await?;
    let allocated = match plan {
        Plan::Disabled => None,
        Plan::Decided(d) => Some(d),
        Plan::Webhook {
            definition,
            request,
        } => Some(
            app.webhooks
                .allocate(&definition, &request, &app.hubs)
                .await,
        ),
    };
    let app2 = app.clone();
    let op = blocking(move || {
        let mut state = outcome(&r, &auth, allocated);
        issue_certificate(&app2, &r, &auth, &mut state)?;
        let ready = unix_now_ms() + app2.config.assignment_delay.as_millis() as i64;
        let migrate = common_of(&auth)
            .reprovision_policy
            .unwrap_or_default()
            .migrate_device_data;
        // The hub device and the registration in one transaction (one commit): a device told
        // "assigned" can connect to its hub at once.
        let hub_device = hub_assignment(&state, &auth)?;
        app2.store
            .record_assignment(state.clone(), ready, migrate, hub_device)
            .map_err(|e| match e {
                crate::hub::HubError::Store(e) => ApiError::from(e),
                e => ApiError::internal(format!("creating the hub device failed: {e}")),
            })
    })
    .await?;
    if app.config.complete_registrations_immediately && app.config.assignment_delay.is_zero() {
        return Ok(completed_operation(&op));
    }
    Ok(assigning(&app, op.operation_id))
}

/// Answers a request's `csr`: checks it and, once the device is assigned, issues its
/// operational certificate under the enrollment's issuance policy. A bad CSR is refused with a
/// 400 before anything is recorded, whatever the outcome would have been.
fn issue_certificate(
    app: &AppState,
    r: &DeviceRequest,
    auth: &Authenticated,
    state: &mut RegistrationState,
) -> Result<(), ApiError> {
    let Some(csr) = &r.body.csr else {
        return Ok(());
    };
    let Some(policy) = &common_of(auth).certificate_issuance_policy else {
        // The service's answer to a CSR when issuance is not configured is not documented;
        // the emulator refuses it rather than registering without the certificate the
        // device asked for.
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            400004,
            "a csr was sent, but the enrollment has no certificateIssuancePolicy (certificate issuance is not configured for it)",
        ));
    };
    // A device that is not assigned (disabled, failed allocation) gets no certificate, but
    // its CSR is still checked so that a bad one is reported the same way.
    let issued = if state.status == status::ASSIGNED {
        crate::issuance::issue(
            &app.issuing_ca,
            &app.config.state_dir,
            policy,
            csr,
            &r.registration_id,
        )
        .map(Some)
    } else {
        crate::issuance::check_csr(csr, &r.registration_id).map(|_| None)
    };
    match issued {
        Ok(chain) => {
            state.issued_certificate_chain = chain;
            Ok(())
        }
        Err(crate::issuance::IssuanceError::BadCsr(m)) => {
            Err(ApiError::new(StatusCode::BAD_REQUEST, 400004, m))
        }
        Err(e) => Err(ApiError::internal(e.to_string())),
    }
}

/// The hub device an assigned registration creates (none for any other outcome).
fn hub_assignment<'a>(
    state: &'a RegistrationState,
    auth: &Authenticated,
) -> Result<Option<crate::hub::store::HubAssignment<'a>>, ApiError> {
    let (Some(hub), Some(device_id)) = (&state.assigned_hub, &state.device_id) else {
        return Ok(None);
    };
    if state.status != status::ASSIGNED {
        return Ok(None);
    }
    let Some(authentication) =
        crate::hub::identity::authentication_for(auth, &state.registration_id)
    else {
        return Err(ApiError::internal(
            "the enrollment has no credential for the hub device",
        ));
    };
    // The state carries the enrollment's initialTwin, or the webhook's that replaced it.
    Ok(Some(crate::hub::store::HubAssignment {
        hub,
        device_id,
        registration_id: &state.registration_id,
        authentication,
        initial_desired: crate::hub::identity::desired_of(state.initial_twin.as_ref()),
        issued_certificate: state.issued_certificate_chain.is_some(),
    }))
}

/// Authenticates a device without registering it (the MQTT CONNECT).
pub(crate) async fn authenticate_only(
    app: Arc<AppState>,
    r: DeviceRequest,
) -> Result<(), ApiError> {
    blocking(move || authenticate_request(&app, &r).map(|_| ())).await
}

/// GET /{idScope}/registrations/{registrationId}/operations/{operationId}
pub(crate) async fn operation_status(
    app: Arc<AppState>,
    chain: PeerChain,
    req: Request<Incoming>,
    scope: &str,
    reg: &str,
    op_id: &str,
) -> Result<Resp, ApiError> {
    check_api_version(&req, DEVICE_API_VERSIONS)?;
    check_path(&app, scope, reg)?;
    let api_version = http::query_param(req.uri().query(), "api-version");
    let r = parse_request(&app, chain, req, reg, false).await?;
    let answer = operation_status_request(app, r, op_id.to_string()).await?;
    Ok(with_location(answer, scope, reg, api_version.as_deref()).into_response())
}

/// An operation's status, whichever transport carried the request: 202 while assigning, then
/// 200 with the registration state; 404 for an operation of another device.
pub(crate) async fn operation_status_request(
    app: Arc<AppState>,
    r: DeviceRequest,
    op_id: String,
) -> Result<DeviceAnswer, ApiError> {
    let app2 = app.clone();
    let op = blocking(move || {
        authenticate_request(&app2, &r)?;
        let op = app2.store.operation(&op_id)?;
        match op {
            Some(op) if op.registration_id == r.registration_id => Ok(op),
            _ => Err(ApiError::not_found(404202, "operation not found")),
        }
    })
    .await?;
    if unix_now_ms() < op.ready_at_ms {
        return Ok(assigning(&app, op.operation_id));
    }
    Ok(completed_operation(&op))
}

/// An operation answer, through a JSON value (sorted keys, as every answer).
fn operation_answer(code: StatusCode, op: &RegistrationOperationStatus) -> DeviceAnswer {
    DeviceAnswer::json(code, serde_json::to_value(op).unwrap_or(Value::Null))
}

/// The `202` answer for an operation still assigning, with Retry-After.
fn assigning(app: &AppState, operation_id: String) -> DeviceAnswer {
    let mut a = operation_answer(
        StatusCode::ACCEPTED,
        &RegistrationOperationStatus {
            operation_id,
            status: status::ASSIGNING.into(),
            registration_state: None,
        },
    );
    a.retry_after = Some(app.config.retry_after_secs);
    a
}

/// The `200` answer for an operation whose assignment is done.
fn completed_operation(op: &crate::store::Operation) -> DeviceAnswer {
    operation_answer(
        StatusCode::OK,
        &RegistrationOperationStatus {
            operation_id: op.operation_id.clone(),
            status: op.state.status.clone(),
            registration_state: Some(op.state.clone()),
        },
    )
}

/// POST /{idScope}/registrations/{registrationId}
pub(crate) async fn status_lookup(
    app: Arc<AppState>,
    chain: PeerChain,
    req: Request<Incoming>,
    scope: &str,
    reg: &str,
) -> Result<Resp, ApiError> {
    check_api_version(&req, DEVICE_API_VERSIONS)?;
    check_path(&app, scope, reg)?;
    let r = parse_request(&app, chain, req, reg, false).await?;
    let state = blocking(move || {
        authenticate_request(&app, &r)?;
        app.store
            .registration(&r.registration_id)?
            .ok_or_else(|| ApiError::not_found(404202, "no registration record for this device"))
    })
    .await?;
    Ok(json_response(
        StatusCode::OK,
        &serde_json::to_value(state).unwrap_or(Value::Null),
    ))
}
