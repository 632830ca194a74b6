//! DPS over MQTT 3.1.1: the CONNECT user name, the request topics a device publishes and the
//! response topics the service answers on, built and parsed here once for the device client
//! and the emulator (service documentation "Communicate with DPS using the MQTT protocol").
//!
//! - CONNECT: client id = registration id; user name
//!   `{idScope}/registrations/{registrationId}/api-version={v}` (SDKs append
//!   `&ClientVersion=...`); password = the SAS token (symmetric key; `sr` is
//!   [`crate::sas::dps_resource`], `skn=registration`), none for X.509 (mutual TLS).
//! - The device subscribes to [`RESPONSE_FILTER`], then publishes [`register_topic`] with a
//!   [`crate::wire::DeviceRegistration`] body and [`operation_status_topic`] to poll.
//! - The service answers on [`response_topic`] with the HTTPS JSON bodies; the status is the
//!   HTTP status the same request would get, `retry-after` the Retry-After seconds.
//!
//! TPM attestation is not offered over MQTT by the service (HTTPS or AMQP only).
//!
//! ```
//! use dps_proto::mqtt::{parse_request_topic, parse_response_topic, register_topic, response_topic, Request};
//! let t = register_topic("1")?;
//! assert_eq!(t, "$dps/registrations/PUT/iotdps-register/?$rid=1");
//! assert_eq!(parse_request_topic(&t)?, Request::Register { rid: "1".into() });
//! let r = response_topic(202, "1", Some(3))?;
//! let parsed = parse_response_topic(&r)?;
//! assert_eq!((parsed.status, parsed.rid.as_str(), parsed.retry_after_secs), (202, "1", Some(3)));
//! # Ok::<(), dps_proto::mqtt::MqttTopicError>(())
//! ```

/// The port of DPS's MQTT over TLS endpoint.
pub const MQTT_TLS_PORT: u16 = 8883;

/// The port of DPS's MQTT over WebSocket endpoint (`wss://{host}/$iothub/websocket`).
pub const MQTT_WS_PORT: u16 = 443;

/// The WebSocket path of the MQTT over WebSocket endpoint.
pub const MQTT_WS_PATH: &str = "/$iothub/websocket";

/// The WebSocket sub-protocol MQTT 3.1.1 uses.
pub const MQTT_WS_SUBPROTOCOL: &str = "mqtt";

/// The filter a device subscribes to before its first request.
pub const RESPONSE_FILTER: &str = "$dps/registrations/res/#";

/// Every response topic starts with this.
pub const RESPONSE_PREFIX: &str = "$dps/registrations/res/";

/// The register request's topic, up to the query.
pub const REGISTER_PREFIX: &str = "$dps/registrations/PUT/iotdps-register/";

/// The operation status request's topic, up to the query.
pub const OPERATION_STATUS_PREFIX: &str = "$dps/registrations/GET/iotdps-get-operationstatus/";

/// Longest request id accepted (the SDKs send a decimal counter or a GUID).
pub const MAX_RID_LEN: usize = 128;

/// A topic or user name that is not DPS's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MqttTopicError {
    /// The topic is none of the documented ones.
    #[error("`{0}` is not a topic of the DPS or IoT Hub MQTT API")]
    UnknownTopic(String),
    /// A query parameter the topic needs is missing.
    #[error("the topic `{topic}` has no `{name}` parameter")]
    MissingParameter {
        /// The topic.
        topic: String,
        /// The parameter.
        name: &'static str,
    },
    /// A value cannot go into a topic or user name (empty, too long, or a character that would
    /// change its meaning: `/ ? & = # +`, spaces, controls).
    #[error("`{value}` is not a valid {what} for an MQTT topic or user name")]
    BadValue {
        /// What the value is.
        what: &'static str,
        /// The value, escaped.
        value: String,
    },
    /// The status in a response topic is not a 3-digit HTTP status.
    #[error("the response topic `{0}` has no valid status")]
    BadStatus(String),
    /// The user name is not `{idScope}/registrations/{registrationId}/api-version={v}`.
    #[error("the MQTT user name `{0}` is not {{idScope}}/registrations/{{registrationId}}/api-version={{version}}[&ClientVersion=...]")]
    BadUsername(String),
    /// The user name is not IoT Hub's `{hub}/{deviceId}/?api-version={v}`.
    #[error("the MQTT user name `{0}` is not {{hubHostName}}/{{deviceId}}/?api-version={{version}}[&DeviceClientType=...]")]
    BadHubUsername(String),
}

/// Characters a topic part may hold: anything visible but the separators of the topic and of
/// its query, and the MQTT wildcards.
pub(crate) fn is_safe_value(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= MAX_RID_LEN
        && v.bytes()
            .all(|b| b.is_ascii_graphic() && !b"/?&=#+".contains(&b))
}

pub(crate) fn checked<'a>(what: &'static str, value: &'a str) -> Result<&'a str, MqttTopicError> {
    if is_safe_value(value) {
        Ok(value)
    } else {
        Err(MqttTopicError::BadValue {
            what,
            value: value.escape_debug().to_string(),
        })
    }
}

/// The CONNECT user name: `{idScope}/registrations/{registrationId}/api-version={v}`, with
/// `&ClientVersion={client_version}` when given (as the SDKs send it).
pub fn username(
    id_scope: &str,
    registration_id: &str,
    api_version: &str,
    client_version: Option<&str>,
) -> Result<String, MqttTopicError> {
    let mut u = format!(
        "{}/registrations/{}/api-version={}",
        checked("id scope", id_scope)?,
        checked("registration id", registration_id)?,
        checked("api-version", api_version)?
    );
    if let Some(c) = client_version {
        u.push_str("&ClientVersion=");
        u.push_str(&crate::sas::url_encode(c));
    }
    Ok(u)
}

/// A parsed CONNECT user name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Username {
    /// The id scope.
    pub id_scope: String,
    /// The registration id (the client id must be the same).
    pub registration_id: String,
    /// The api-version.
    pub api_version: String,
    /// `ClientVersion`, as sent (still URL-encoded).
    pub client_version: Option<String>,
}

/// Parses a CONNECT user name; other query parameters after the api-version are ignored, as
/// the service does.
pub fn parse_username(name: &str) -> Result<Username, MqttTopicError> {
    let bad = || MqttTopicError::BadUsername(name.escape_debug().to_string());
    let mut parts = name.splitn(4, '/');
    let (Some(scope), Some("registrations"), Some(id), Some(rest)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    let params = query_pairs(rest).ok_or_else(bad)?;
    let api_version = params
        .iter()
        .find(|(k, _)| *k == "api-version")
        .map(|(_, v)| v.to_string())
        .ok_or_else(bad)?;
    if !rest.starts_with("api-version=") || !is_safe_value(scope) || !is_safe_value(id) {
        return Err(bad());
    }
    let client_version = params
        .iter()
        .find(|(k, _)| *k == "ClientVersion")
        .map(|(_, v)| v.to_string());
    Ok(Username {
        id_scope: scope.to_string(),
        registration_id: id.to_string(),
        api_version,
        client_version,
    })
}

/// `k=v&k=v` into pairs; `None` when a pair has no `=`.
pub(crate) fn query_pairs(query: &str) -> Option<Vec<(&str, &str)>> {
    if query.is_empty() {
        return Some(Vec::new());
    }
    query.split('&').map(|p| p.split_once('=')).collect()
}

/// The register request's topic: `$dps/registrations/PUT/iotdps-register/?$rid={rid}`.
pub fn register_topic(rid: &str) -> Result<String, MqttTopicError> {
    Ok(format!(
        "{REGISTER_PREFIX}?$rid={}",
        checked("request id", rid)?
    ))
}

/// The operation status request's topic:
/// `$dps/registrations/GET/iotdps-get-operationstatus/?$rid={rid}&operationId={operation_id}`.
pub fn operation_status_topic(rid: &str, operation_id: &str) -> Result<String, MqttTopicError> {
    Ok(format!(
        "{OPERATION_STATUS_PREFIX}?$rid={}&operationId={}",
        checked("request id", rid)?,
        checked("operation id", operation_id)?
    ))
}

/// A device's request, from its topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Register (the body is a [`crate::wire::DeviceRegistration`]).
    Register {
        /// The request id to answer with.
        rid: String,
    },
    /// The status of an operation.
    OperationStatus {
        /// The request id to answer with.
        rid: String,
        /// The operation asked about.
        operation_id: String,
    },
}

impl Request {
    /// The request id to answer with.
    pub fn rid(&self) -> &str {
        match self {
            Request::Register { rid } | Request::OperationStatus { rid, .. } => rid,
        }
    }
}

/// One query parameter of `topic`'s query, checked.
pub(crate) fn param(
    topic: &str,
    pairs: &[(&str, &str)],
    name: &'static str,
    what: &'static str,
) -> Result<String, MqttTopicError> {
    let v = pairs
        .iter()
        .find(|(k, _)| *k == name)
        .map(|(_, v)| *v)
        .ok_or_else(|| MqttTopicError::MissingParameter {
            topic: topic.escape_debug().to_string(),
            name,
        })?;
    checked(what, v).map(str::to_string)
}

/// Parses a request topic (what the device published).
pub fn parse_request_topic(topic: &str) -> Result<Request, MqttTopicError> {
    let unknown = || MqttTopicError::UnknownTopic(topic.escape_debug().to_string());
    let (kind, query) = if let Some(q) = topic.strip_prefix(REGISTER_PREFIX) {
        (true, q)
    } else if let Some(q) = topic.strip_prefix(OPERATION_STATUS_PREFIX) {
        (false, q)
    } else {
        return Err(unknown());
    };
    let query = query.strip_prefix('?').ok_or_else(unknown)?;
    let pairs = query_pairs(query).ok_or_else(unknown)?;
    let rid = param(topic, &pairs, "$rid", "request id")?;
    if kind {
        Ok(Request::Register { rid })
    } else {
        let operation_id = param(topic, &pairs, "operationId", "operation id")?;
        Ok(Request::OperationStatus { rid, operation_id })
    }
}

/// The response topic: `$dps/registrations/res/{status}/?$rid={rid}`, with
/// `&retry-after={secs}` when given.
pub fn response_topic(
    status: u16,
    rid: &str,
    retry_after_secs: Option<u64>,
) -> Result<String, MqttTopicError> {
    if !(100..=999).contains(&status) {
        return Err(MqttTopicError::BadStatus(status.to_string()));
    }
    let mut t = format!(
        "{RESPONSE_PREFIX}{status}/?$rid={}",
        checked("request id", rid)?
    );
    if let Some(s) = retry_after_secs {
        t.push_str(&format!("&retry-after={s}"));
    }
    Ok(t)
}

/// A parsed response topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The HTTP status the same request over HTTPS would have had.
    pub status: u16,
    /// The request id the answer is for.
    pub rid: String,
    /// `retry-after` when it is a whole number of seconds; what to do with it (bounds, zero) is
    /// the caller's rule, as for the HTTPS header.
    pub retry_after_secs: Option<u64>,
    /// `retry-after` as sent, when present (also when it is not a number).
    pub retry_after_raw: Option<String>,
}

/// The 3-digit status segment of a response `topic`.
pub(crate) fn parse_status(topic: &str, status: &str) -> Result<u16, MqttTopicError> {
    let bad_status = || MqttTopicError::BadStatus(topic.escape_debug().to_string());
    if status.len() != 3 || !status.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad_status());
    }
    let status: u16 = status.parse().map_err(|_| bad_status())?;
    if status < 100 {
        return Err(bad_status());
    }
    Ok(status)
}

/// Parses a response topic (what the service published).
pub fn parse_response_topic(topic: &str) -> Result<Response, MqttTopicError> {
    let unknown = || MqttTopicError::UnknownTopic(topic.escape_debug().to_string());
    let rest = topic.strip_prefix(RESPONSE_PREFIX).ok_or_else(unknown)?;
    let (status, query) = rest.split_once("/?").ok_or_else(unknown)?;
    let status = parse_status(topic, status)?;
    let pairs = query_pairs(query).ok_or_else(unknown)?;
    let rid = param(topic, &pairs, "$rid", "request id")?;
    let retry_after_raw = pairs
        .iter()
        .find(|(k, _)| *k == "retry-after")
        .map(|(_, v)| v.to_string());
    let retry_after_secs = retry_after_raw
        .as_deref()
        .and_then(|v| v.trim().parse::<u64>().ok());
    Ok(Response {
        status,
        rid,
        retry_after_secs,
        retry_after_raw,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn username_round_trips() {
        let u = username("0ne00000001", "dev-1", "2021-06-01", None).unwrap();
        assert_eq!(u, "0ne00000001/registrations/dev-1/api-version=2021-06-01");
        let p = parse_username(&u).unwrap();
        assert_eq!(p.id_scope, "0ne00000001");
        assert_eq!(p.registration_id, "dev-1");
        assert_eq!(p.api_version, "2021-06-01");
        assert_eq!(p.client_version, None);

        let u = username("0ne1", "a.b:c", "2019-03-31", Some("hsmkit/0.1 (x)")).unwrap();
        assert_eq!(
            u,
            "0ne1/registrations/a.b:c/api-version=2019-03-31&ClientVersion=hsmkit%2f0.1%20(x)"
        );
        let p = parse_username(&u).unwrap();
        assert_eq!(p.registration_id, "a.b:c");
        assert_eq!(p.client_version.as_deref(), Some("hsmkit%2f0.1%20(x)"));
    }

    #[test]
    fn usernames_that_are_not_dps_are_refused() {
        for bad in [
            "",
            "0ne1",
            "0ne1/registrations/dev",
            "0ne1/devices/dev/api-version=2021-06-01",
            "0ne1/registrations/dev/ClientVersion=x&api-version=2021-06-01",
            "0ne1/registrations/dev/api-version",
            "/registrations/dev/api-version=2021-06-01",
            "0ne1/registrations//api-version=2021-06-01",
            "0ne1/registrations/a/b/api-version=2021-06-01",
        ] {
            assert!(parse_username(bad).is_err(), "{bad}");
        }
        assert!(username("0ne1", "a/b", "2021-06-01", None).is_err());
        assert!(username("0ne1", "", "2021-06-01", None).is_err());
        assert!(username("0ne#", "a", "2021-06-01", None).is_err());
    }

    #[test]
    fn request_topics_round_trip() {
        let t = register_topic("42").unwrap();
        assert_eq!(t, "$dps/registrations/PUT/iotdps-register/?$rid=42");
        assert_eq!(
            parse_request_topic(&t).unwrap(),
            Request::Register { rid: "42".into() }
        );
        let t = operation_status_topic("43", "4.abc.def").unwrap();
        assert_eq!(
            t,
            "$dps/registrations/GET/iotdps-get-operationstatus/?$rid=43&operationId=4.abc.def"
        );
        let r = parse_request_topic(&t).unwrap();
        assert_eq!(
            r,
            Request::OperationStatus {
                rid: "43".into(),
                operation_id: "4.abc.def".into()
            }
        );
        assert_eq!(r.rid(), "43");
        // Parameter order does not matter.
        assert_eq!(
            parse_request_topic(
                "$dps/registrations/GET/iotdps-get-operationstatus/?operationId=op&$rid=7"
            )
            .unwrap(),
            Request::OperationStatus {
                rid: "7".into(),
                operation_id: "op".into()
            }
        );
    }

    #[test]
    fn bad_request_topics_are_refused() {
        assert!(matches!(
            parse_request_topic("$dps/registrations/PUT/iotdps-register/?x=1"),
            Err(MqttTopicError::MissingParameter { name: "$rid", .. })
        ));
        assert!(matches!(
            parse_request_topic("$dps/registrations/GET/iotdps-get-operationstatus/?$rid=1"),
            Err(MqttTopicError::MissingParameter {
                name: "operationId",
                ..
            })
        ));
        for bad in [
            "$dps/registrations/PUT/iotdps-register/",
            "$dps/registrations/PUT/iotdps-register/$rid=1",
            "$dps/registrations/PUT/iotdps-registerX/?$rid=1",
            "devices/x/messages/events/",
            "$dps/registrations/res/200/?$rid=1",
            "$dps/registrations/PUT/iotdps-register/?$rid",
        ] {
            assert!(parse_request_topic(bad).is_err(), "{bad}");
        }
        assert!(parse_request_topic("$dps/registrations/PUT/iotdps-register/?$rid=").is_err());
        assert!(register_topic("a+b").is_err());
        assert!(operation_status_topic("1", "a#").is_err());
        assert!(register_topic(&"1".repeat(MAX_RID_LEN + 1)).is_err());
    }

    #[test]
    fn response_topics_round_trip() {
        let t = response_topic(200, "9", None).unwrap();
        assert_eq!(t, "$dps/registrations/res/200/?$rid=9");
        let r = parse_response_topic(&t).unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.rid, "9");
        assert_eq!(r.retry_after_secs, None);
        let t = response_topic(429, "10", Some(5)).unwrap();
        assert_eq!(t, "$dps/registrations/res/429/?$rid=10&retry-after=5");
        let r = parse_response_topic(&t).unwrap();
        assert_eq!((r.status, r.retry_after_secs), (429, Some(5)));
        assert_eq!(r.retry_after_raw.as_deref(), Some("5"));
        // A retry-after that is not a number is kept raw, not read as a wait.
        let r =
            parse_response_topic("$dps/registrations/res/202/?$rid=1&retry-after=soon").unwrap();
        assert_eq!(r.retry_after_secs, None);
        assert_eq!(r.retry_after_raw.as_deref(), Some("soon"));
        assert!(response_topic(99, "1", None).is_err());
        assert!(response_topic(1000, "1", None).is_err());
    }

    #[test]
    fn bad_response_topics_are_refused() {
        for bad in [
            "$dps/registrations/res/20/?$rid=1",
            "$dps/registrations/res/2000/?$rid=1",
            "$dps/registrations/res/abc/?$rid=1",
            "$dps/registrations/res/200?$rid=1",
            "$dps/registrations/res/200/",
            "$dps/registrations/res/200/?rid=1",
            "$dps/registrations/res/099/?$rid=1",
            "$dps/registrations/PUT/iotdps-register/?$rid=1",
        ] {
            assert!(parse_response_topic(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_filter_matches_every_response_topic() {
        let prefix = RESPONSE_FILTER.trim_end_matches('#');
        assert_eq!(prefix, RESPONSE_PREFIX);
        assert!(response_topic(202, "1", Some(1))
            .unwrap()
            .starts_with(prefix));
    }
}
