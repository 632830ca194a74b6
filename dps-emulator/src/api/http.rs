//! HTTP plumbing shared by the device and service APIs: the error body every 4xx/5xx carries,
//! JSON answers, bounded body reading.

use bytes::Bytes;
use dps_proto::wire::{ErrorBody, TpmChallenge, ERROR_CODE_HEADER};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE, LOCATION, RETRY_AFTER};
use hyper::{Request, Response, StatusCode};
use serde_json::Value;

use crate::timeutil::{now_rfc3339, random_guid};

/// The response type of every handler.
pub(crate) type Resp = Response<Full<Bytes>>;

/// The message of every refused credential, as the real service words it: a 401 with
/// errorCode 401002 and "Unauthorized", whatever the reason, e.g.
/// `{"errorCode":401002,"trackingId":"...","message":"Unauthorized","timestampUtc":"..."}` for
/// a refused X.509 device (https://pastebin.com/Qtyxky3N) and for a refused group SAS
/// (Stack Overflow question 72150274, "Group enrollment in Azure DPS not working through REST
/// API: unauthorized 401002"). Giving the reason would tell an unauthenticated caller which
/// registration ids are enrolled and with which attestation.
pub(crate) const UNAUTHORIZED_MESSAGE: &str = "Unauthorized";

/// An error answer: status, DPS error code, message (never secret), optional Retry-After.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub status: StatusCode,
    pub code: u32,
    pub message: String,
    pub retry_after: Option<u64>,
    /// The TPM challenge, which rides on a 401 (boxed: errors travel in every `Result`).
    pub tpm_challenge: Option<Box<TpmChallenge>>,
    /// The trackingId to answer with when it was already logged (refusals); else a fresh one.
    pub tracking_id: Option<String>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: u32, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
            tpm_challenge: None,
            tracking_id: None,
        }
    }
    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, 400004, message)
    }
    /// A refused credential: the caller gets only the service's uniform 401002
    /// "Unauthorized"; the real reason goes to the log under the answer's trackingId, as the
    /// service keeps it for its diagnostic logs.
    pub(crate) fn unauthorized(reason: impl std::fmt::Display) -> Self {
        let tracking_id = random_guid();
        tracing::info!(%tracking_id, %reason, "request refused as Unauthorized");
        let mut e = Self::new(StatusCode::UNAUTHORIZED, 401002, UNAUTHORIZED_MESSAGE);
        e.tracking_id = Some(tracking_id);
        e
    }
    pub(crate) fn not_found(code: u32, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }
    pub(crate) fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, 500000, message)
    }

    /// The answer this error gives, on either transport.
    pub(crate) fn into_answer(self) -> DeviceAnswer {
        let body = ErrorBody {
            error_code: Some(u64::from(self.code)),
            tracking_id: Some(self.tracking_id.unwrap_or_else(random_guid)),
            message: Some(self.message),
            timestamp_utc: Some(now_rfc3339()),
            tpm_challenge: self.tpm_challenge.map(|c| *c),
        };
        // Through a JSON value, whose object keeps its keys sorted: the same bytes as before
        // the body had a type.
        DeviceAnswer {
            status: self.status,
            body: serde_json::to_value(&body).unwrap_or(Value::Null),
            retry_after: self.retry_after,
            error_code: Some(self.code),
            location: None,
        }
    }

    pub(crate) fn into_response(self) -> Resp {
        self.into_answer().into_response()
    }
}

/// An answer before it is put on a transport: the HTTP status (on MQTT, the `{status}` of the
/// answer topic), the JSON body, the Retry-After seconds, and for errors the DPS error code.
/// The device API builds these once; HTTPS and MQTT only carry them.
#[derive(Debug)]
pub(crate) struct DeviceAnswer {
    pub status: StatusCode,
    pub body: Value,
    pub retry_after: Option<u64>,
    pub error_code: Option<u32>,
    /// The `Location` header of an HTTPS 202 (the operation status URL); MQTT has none.
    pub location: Option<String>,
}

impl DeviceAnswer {
    /// A JSON answer without Retry-After.
    pub(crate) fn json(status: StatusCode, body: Value) -> Self {
        Self {
            status,
            body,
            retry_after: None,
            error_code: None,
            location: None,
        }
    }

    /// The HTTP response: JSON body, the error-code header on errors, Retry-After.
    pub(crate) fn into_response(self) -> Resp {
        let mut r = json_response(self.status, &self.body);
        if let Some(code) = self.error_code {
            if let Ok(v) = HeaderValue::from_str(&code.to_string()) {
                r.headers_mut().insert(ERROR_CODE_HEADER, v);
            }
        }
        if let Some(s) = self.retry_after {
            r.headers_mut().insert(RETRY_AFTER, HeaderValue::from(s));
        }
        if let Some(l) = self.location.and_then(|l| HeaderValue::from_str(&l).ok()) {
            r.headers_mut().insert(LOCATION, l);
        }
        r
    }
}

impl From<crate::error::EmulatorError> for ApiError {
    fn from(e: crate::error::EmulatorError) -> Self {
        use crate::error::EmulatorError as E;
        match e {
            E::InvalidEnrollment(m) => ApiError::bad_request(m),
            E::EnrollmentNotFound(id) => {
                ApiError::not_found(404201, format!("enrollment {id} not found"))
            }
            other => {
                tracing::error!(error = %other, "internal error");
                ApiError::internal("internal error in the emulator's store")
            }
        }
    }
}

/// A JSON answer.
pub(crate) fn json_response(status: StatusCode, body: &Value) -> Resp {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut r = Response::new(Full::new(Bytes::from(bytes)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    r
}

/// An empty answer (204 on delete).
pub(crate) fn empty_response(status: StatusCode) -> Resp {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = status;
    r
}

const BODY_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Reads the body, refusing more than `limit` bytes with 413.
pub(crate) async fn read_body(req: Request<Incoming>, limit: usize) -> Result<Bytes, ApiError> {
    let too_big = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            413001,
            format!("request body larger than {limit} bytes"),
        )
    };
    if let Some(len) = req
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        if len > limit as u64 {
            return Err(too_big());
        }
    }
    // A body trickled in slowly would hold a connection slot forever: bound the whole read.
    let read = Limited::new(req.into_body(), limit).collect();
    match tokio::time::timeout(BODY_READ_TIMEOUT, read).await {
        Err(_) => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            408001,
            "the request body was not received in time",
        )),
        Ok(Ok(c)) => Ok(c.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(too_big()),
        Ok(Err(_)) => Err(ApiError::bad_request("the request body could not be read")),
    }
}

/// Parses a JSON body into `T`, with a 400 naming the problem (serde's message names fields and
/// positions, not values).
pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        // serde's data errors can quote values (a key sent with the wrong type): only messages
        // known to name fields alone are passed on.
        let what = match e.classify() {
            serde_json::error::Category::Data if e.to_string().starts_with("missing field") => {
                e.to_string()
            }
            serde_json::error::Category::Data => "a field has the wrong type or value".to_string(),
            serde_json::error::Category::Eof => "unexpected end of input".to_string(),
            _ => "syntax error".to_string(),
        };
        ApiError::bad_request(format!(
            "malformed JSON: {what} (line {}, column {})",
            e.line(),
            e.column()
        ))
    })
}

/// The query parameter `name`, decoded.
pub(crate) fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    query?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == name).then(|| {
            percent_encoding::percent_decode_str(v)
                .decode_utf8_lossy()
                .into_owned()
        })
    })
}
