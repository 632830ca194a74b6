//! The REST APIs: routing of every request to the device API ([`device`]) or the service API
//! ([`service`]), with the checks both share. Handlers run against [`AppState`].

pub(crate) mod device;
pub(crate) mod http;
pub(crate) mod service;

use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use std::sync::Arc;

use self::http::{ApiError, DeviceAnswer, Resp};
use crate::app_state::{AppState, PeerChain};
use crate::faults::Fault;

/// What the connection layer should do with a request's outcome.
#[derive(Debug)]
pub(crate) struct DropConnection;

impl std::fmt::Display for DropConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by fault injection")
    }
}
impl std::error::Error for DropConnection {}

/// What an armed fault does to a device request.
#[derive(Debug)]
pub(crate) enum FaultAction {
    /// Close the connection without an answer.
    Drop,
    /// Answer this instead of handling the request.
    Answer(DeviceAnswer),
}

/// Applies the armed faults to one device request, on either transport: waits the configured
/// delay, then takes the next fault (drop, 500, 429 with Retry-After), if any.
pub(crate) async fn device_fault(app: &AppState) -> Option<FaultAction> {
    let delay = app.faults.delay();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    match app.faults.take()? {
        Fault::Drop => Some(FaultAction::Drop),
        Fault::Fail => Some(FaultAction::Answer(
            ApiError::internal("injected failure").into_answer(),
        )),
        Fault::Throttle(secs) => {
            let mut e = ApiError::new(StatusCode::TOO_MANY_REQUESTS, 429001, "injected throttling");
            e.retry_after = Some(secs);
            Some(FaultAction::Answer(e.into_answer()))
        }
    }
}

/// Entry point for every request.
pub(crate) async fn handle(
    app: Arc<AppState>,
    chain: PeerChain,
    req: Request<Incoming>,
) -> Result<Resp, DropConnection> {
    let path = req.uri().path().to_string();
    let segments: Vec<String> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        })
        .collect();
    // The service API's collection names are case-insensitive (the Node SDK sends
    // `enrollmentgroups` on some calls): map them to one spelling.
    let seg: Vec<&str> = segments
        .iter()
        .enumerate()
        .map(|(i, s)| match (i, s.to_ascii_lowercase().as_str()) {
            (0, "enrollments") => "enrollments",
            (0, "enrollmentgroups") => "enrollmentGroups",
            (0, "registrations") => "registrations",
            _ => s.as_str(),
        })
        .collect();
    let is_device = seg.get(1) == Some(&"registrations") && seg.len() >= 3;
    if is_device {
        match device_fault(&app).await {
            Some(FaultAction::Drop) => return Err(DropConnection),
            Some(FaultAction::Answer(a)) => return Ok(a.into_response()),
            None => {}
        }
    }
    let result = route(app, chain, req, &seg).await;
    Ok(result.unwrap_or_else(ApiError::into_response))
}

async fn route(
    app: Arc<AppState>,
    chain: PeerChain,
    req: Request<Incoming>,
    seg: &[&str],
) -> Result<Resp, ApiError> {
    let method = req.method().clone();
    match seg {
        [scope, "registrations", reg, "register"] if method == Method::PUT => {
            device::register(app, chain, req, scope, reg).await
        }
        [scope, "registrations", reg, "operations", op] if method == Method::GET => {
            device::operation_status(app, chain, req, scope, reg, op).await
        }
        [scope, "registrations", reg] if method == Method::POST => {
            device::status_lookup(app, chain, req, scope, reg).await
        }
        [kind @ ("enrollments" | "enrollmentGroups"), "query"] if method == Method::POST => {
            service::query(app, req, kind).await
        }
        ["enrollments"] if method == Method::POST => service::bulk(app, req).await,
        [kind @ ("enrollments" | "enrollmentGroups"), id, m]
            if method == Method::POST && m.eq_ignore_ascii_case("attestationmechanism") =>
        {
            service::attestation_mechanism(app, req, kind, id).await
        }
        ["registrations", group, "query"] if method == Method::POST => {
            service::group_registrations(app, req, group).await
        }
        [kind @ ("enrollments" | "enrollmentGroups" | "registrations"), id] => {
            service::item(app, req, kind, id).await
        }
        [_, "registrations", ..] | ["enrollments" | "enrollmentGroups" | "registrations", ..] => {
            Err(ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                405000,
                format!("method {method} is not supported on this path"),
            ))
        }
        _ => Err(ApiError::not_found(404000, "unknown path")),
    }
}

/// Checks `api-version` against `allowed`.
pub(crate) fn check_api_version(req: &Request<Incoming>, allowed: &[&str]) -> Result<(), ApiError> {
    match http::query_param(req.uri().query(), "api-version") {
        None => Err(ApiError::bad_request(
            "the api-version query parameter is required",
        )),
        Some(v) if allowed.contains(&v.as_str()) => Ok(()),
        Some(v) => Err(ApiError::bad_request(format!(
            "api-version {v:?} is not supported; use one of {}",
            allowed.join(", ")
        ))),
    }
}

/// Runs blocking work (SQLite, OpenSSL, RSA) off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| ApiError::internal("a worker task failed"))?
}
