//! The device API: register, operation status, registration status lookup. Credentials are
//! verified for real before anything is recorded. Unknown devices and every refused credential
//! get the same answer (401, errorCode 401002, "Unauthorized", as the service answers; the
//! reason is logged under the trackingId), so the API reveals neither which registration ids
//! are enrolled nor with which attestation. The one exception is the service's own: a TPM
//! challenge for an endorsement key that matches the enrollment.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, AUTHORIZATION, RETRY_AFTER};
use hyper::{Request, StatusCode};
use serde_json::{json, Value};
use std::sync::Arc;

use crate::alloc::allocate;
use crate::app::{blocking, check_api_version, AppState, PeerChain, DEVICE_API_VERSIONS};
use crate::http::{json_response, parse_json, read_body, ApiError, Resp};
use crate::model::{
    DeviceRegistration, EnrollmentGroup, IndividualEnrollment, ProvisioningStatus,
    RegistrationState,
};
use crate::sas::SasToken;
use crate::timeutil::{now_rfc3339, unix_now, unix_now_ms};
use crate::validate::is_valid_id;
use crate::x509auth;

/// Which enrollment let the device in, and the attestation-specific result section.
enum Authenticated {
    Individual(Box<IndividualEnrollment>, Section),
    Group(Box<EnrollmentGroup>, Section),
}

enum Section {
    Tpm {
        authentication_key_b64: String,
    },
    X509 {
        leaf_info: Value,
        signing_info: Option<Value>,
    },
    Symmetric,
}

struct Request_ {
    registration_id: String,
    body: DeviceRegistration,
    authorization: Option<String>,
    chain: PeerChain,
}

fn check_path(app: &AppState, scope: &str, reg: &str) -> Result<(), ApiError> {
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

async fn parse_request(
    app: &AppState,
    chain: PeerChain,
    req: Request<Incoming>,
    reg: &str,
    body_required: bool,
) -> Result<Request_, ApiError> {
    let authorization = match req.headers().get(AUTHORIZATION) {
        Some(v) => Some(
            v.to_str()
                .map_err(|_| ApiError::unauthorized("the Authorization header is not ASCII"))?
                .to_string(),
        ),
        None => None,
    };
    let bytes = read_body(req, app.config.max_body_bytes).await?;
    let body: DeviceRegistration = if bytes.iter().all(u8::is_ascii_whitespace) {
        if body_required {
            return Err(ApiError::bad_request(
                "a JSON body with registrationId is required",
            ));
        }
        DeviceRegistration::default()
    } else {
        parse_json(&bytes)?
    };
    if let Some(id) = &body.registration_id {
        if id != reg {
            return Err(ApiError::bad_request(
                "registrationId in the body differs from the one in the path",
            ));
        }
    }
    Ok(Request_ {
        registration_id: reg.to_string(),
        body,
        authorization,
        chain,
    })
}

fn sas_check(app: &AppState, token: &SasToken, registration_id: &str) -> Result<(), ApiError> {
    let scope = format!("{}/registrations/{}", app.config.id_scope, registration_id);
    token
        .check_claims(Some(&scope), None, unix_now())
        .map_err(|e| ApiError::unauthorized(e.to_string()))
}

fn parse_sas(header: &str) -> Result<SasToken, ApiError> {
    SasToken::parse(header).map_err(|e| ApiError::unauthorized(e.to_string()))
}

fn tpm_challenge(
    app: &AppState,
    r: &Request_,
    enrolled_ek: &str,
) -> Result<Authenticated, ApiError> {
    let tpm = r.body.tpm.as_ref().ok_or_else(|| {
        ApiError::unauthorized("TPM registration needs tpm.endorsementKey and tpm.storageRootKey")
    })?;
    // Refused like any other credential (not a 400): for an id that is not TPM-enrolled the
    // EK is never looked at, so a different answer here would reveal the enrollment.
    let ek = B64
        .decode(tpm.endorsement_key.trim())
        .map_err(|_| ApiError::unauthorized("tpm.endorsementKey is not valid base64"))?;
    let enrolled = B64
        .decode(enrolled_ek.trim())
        .map_err(|_| ApiError::internal("the enrolled endorsement key is corrupt"))?;
    if ek != enrolled {
        return Err(ApiError::unauthorized(
            "the endorsement key does not match the enrollment",
        ));
    }
    let srk = tpm
        .storage_root_key
        .as_deref()
        .ok_or_else(|| ApiError::bad_request("tpm.storageRootKey is required"))
        .and_then(|s| {
            B64.decode(s.trim())
                .map_err(|_| ApiError::bad_request("tpm.storageRootKey is not valid base64"))
        })?;
    let blob = app
        .tpm
        .issue(&r.registration_id, &ek, &srk)
        .map_err(|e| ApiError::bad_request(format!("cannot make a TPM challenge: {e}")))?;
    let mut err = ApiError::new(
        StatusCode::UNAUTHORIZED,
        401002,
        "TPM challenge: activate the authenticationKey and sign",
    );
    let mut extra = serde_json::Map::new();
    extra.insert("authenticationKey".into(), Value::String(blob));
    extra.insert("unencryptedAuthenticationKey".into(), Value::Null);
    extra.insert("keyName".into(), Value::String("registration".into()));
    err.extra = Some(extra);
    Err(err)
}

fn authenticate(app: &AppState, r: &Request_) -> Result<Authenticated, ApiError> {
    let reg = r.registration_id.as_str();
    if let Some(e) = app.store.individual(reg)? {
        let section = match e.attestation.kind.as_str() {
            "symmetricKey" => {
                let auth = r
                    .authorization
                    .as_deref()
                    .ok_or_else(|| ApiError::unauthorized("a SharedAccessSignature is required"))?;
                let token = parse_sas(auth)?;
                sas_check(app, &token, reg)?;
                let keys = e.attestation.symmetric_key.clone().unwrap_or_default();
                let ok = [keys.primary_key, keys.secondary_key]
                    .into_iter()
                    .flatten()
                    .any(|k| token.verify_signature_b64(&k).is_ok());
                if !ok {
                    return Err(ApiError::unauthorized(
                        "the token's signature does not verify",
                    ));
                }
                Section::Symmetric
            }
            "x509" => {
                let enrolled = e
                    .attestation
                    .x509
                    .as_ref()
                    .and_then(|x| x.client_certificates.as_ref())
                    .map(|c| c.texts())
                    .unwrap_or_default();
                x509auth::verify_individual(&r.chain, &enrolled, reg)
                    .map_err(|e| ApiError::unauthorized(e.to_string()))?;
                Section::X509 {
                    leaf_info: x509auth::certificate_info(&r.chain[0]),
                    signing_info: None,
                }
            }
            "tpm" => {
                let ek = e
                    .attestation
                    .tpm
                    .as_ref()
                    .map(|t| t.endorsement_key.clone())
                    .unwrap_or_default();
                match r.authorization.as_deref() {
                    None => return tpm_challenge(app, r, &ek),
                    Some(auth) => {
                        let token = parse_sas(auth)?;
                        sas_check(app, &token, reg)?;
                        match app.tpm.verify_with(reg, |k| token.verify_signature_raw(k)) {
                            Some(Ok(blob)) => Section::Tpm {
                                authentication_key_b64: blob,
                            },
                            Some(Err(e)) => return Err(ApiError::unauthorized(e.to_string())),
                            // No challenge outstanding (e.g. after a restart): issue one.
                            None => return tpm_challenge(app, r, &ek),
                        }
                    }
                }
            }
            _ => {
                return Err(ApiError::internal(
                    "the enrollment has an unknown attestation",
                ))
            }
        };
        return Ok(Authenticated::Individual(Box::new(e), section));
    }
    let groups = app.store.groups()?;
    if let Some(auth) = r.authorization.as_deref() {
        let token = parse_sas(auth)?;
        sas_check(app, &token, reg)?;
        for g in groups
            .into_iter()
            .filter(|g| g.attestation.kind == "symmetricKey")
        {
            let keys = g.attestation.symmetric_key.clone().unwrap_or_default();
            let ok = [keys.primary_key, keys.secondary_key]
                .into_iter()
                .flatten()
                .filter_map(|k| crate::sas::derive_device_key(&k, reg).ok())
                .any(|k| token.verify_signature_b64(&k).is_ok());
            if ok {
                return Ok(Authenticated::Group(Box::new(g), Section::Symmetric));
            }
        }
        return Err(ApiError::unauthorized(
            "no enrollment accepts this registration id and signature",
        ));
    }
    if !r.chain.is_empty() {
        let groups: Vec<EnrollmentGroup> = groups
            .into_iter()
            .filter(|g| g.attestation.kind == "x509")
            .collect();
        let signing: Vec<Vec<&str>> = groups
            .iter()
            .map(|g| {
                g.attestation
                    .x509
                    .as_ref()
                    .and_then(|x| x.signing_certificates.as_ref())
                    .map(|c| c.texts())
                    .unwrap_or_default()
            })
            .collect();
        let idx =
            x509auth::verify_against_groups(&r.chain, &signing, reg).map_err(|e| match e {
                Some(e) => ApiError::unauthorized(e),
                None => ApiError::unauthorized("no enrollment group accepts this certificate"),
            })?;
        let signing_info = signing
            .get(idx)
            .and_then(|s| s.first())
            .and_then(|t| crate::pki::parse_certificates(t).ok())
            .and_then(|c| c.into_iter().next())
            .map(|d| x509auth::certificate_info(&d));
        let leaf_info = x509auth::certificate_info(&r.chain[0]);
        let Some(g) = groups.into_iter().nth(idx) else {
            return Err(ApiError::internal("the accepting group vanished"));
        };
        return Ok(Authenticated::Group(
            Box::new(g),
            Section::X509 {
                leaf_info,
                signing_info,
            },
        ));
    }
    Err(ApiError::unauthorized(
        "no credentials: send a SharedAccessSignature, a TPM endorsement key or a client certificate",
    ))
}

fn outcome(app: &AppState, r: &Request_, auth: Authenticated) -> RegistrationState {
    let reg = r.registration_id.clone();
    let (common, device_id, group_id, real_section) = match &auth {
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
        payload: r.body.payload.clone(),
        tpm: None,
        x509: None,
        symmetric_key: None,
        initial_twin: common.initial_twin.clone(),
    };
    match real_section {
        Section::Tpm {
            authentication_key_b64,
        } => state.tpm = Some(json!({ "authenticationKey": authentication_key_b64 })),
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
    if common.provisioning_status == ProvisioningStatus::Disabled {
        state.status = "disabled".into();
        return state;
    }
    match allocate(common, &reg, &app.hubs) {
        Ok(hub) => {
            state.status = "assigned".into();
            state.substatus = Some("initialAssignment".into());
            state.assigned_hub = Some(hub);
            state.device_id = Some(device_id);
        }
        Err(f) => {
            state.status = "failed".into();
            state.error_code = Some(f.code);
            state.error_message = Some(f.message);
        }
    }
    state
}

fn retry_after(resp: &mut Resp, secs: u64) {
    resp.headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from(secs));
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
    let r = parse_request(&app, chain, req, reg, true).await?;
    let app2 = app.clone();
    let op = blocking(move || {
        let auth = authenticate(&app2, &r)?;
        let state = outcome(&app2, &r, auth);
        let ready = unix_now_ms() + app2.config.assignment_delay.as_millis() as i64;
        Ok(app2.store.record_registration(state, ready)?)
    })
    .await?;
    if app.config.complete_registrations_immediately && app.config.assignment_delay.is_zero() {
        return Ok(completed_operation(&op));
    }
    let mut resp = json_response(
        StatusCode::ACCEPTED,
        &json!({ "operationId": op.operation_id, "status": "assigning" }),
    );
    retry_after(&mut resp, app.config.retry_after_secs);
    Ok(resp)
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
    let r = parse_request(&app, chain, req, reg, false).await?;
    let app2 = app.clone();
    let op_id = op_id.to_string();
    let op = blocking(move || {
        authenticate(&app2, &r)?;
        let op = app2.store.operation(&op_id)?;
        match op {
            Some(op) if op.registration_id == r.registration_id => Ok(op),
            _ => Err(ApiError::not_found(404202, "operation not found")),
        }
    })
    .await?;
    if unix_now_ms() < op.ready_at_ms {
        let mut resp = json_response(
            StatusCode::ACCEPTED,
            &json!({ "operationId": op.operation_id, "status": "assigning" }),
        );
        retry_after(&mut resp, app.config.retry_after_secs);
        return Ok(resp);
    }
    Ok(completed_operation(&op))
}

/// The `200` answer for an operation whose assignment is done.
fn completed_operation(op: &crate::store::Operation) -> Resp {
    json_response(
        StatusCode::OK,
        &json!({
            "operationId": op.operation_id,
            "status": op.state.status,
            "registrationState": op.state,
        }),
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
        authenticate(&app, &r)?;
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
