//! IoT Hub's device API over MQTT 3.1.1, the connection a device opens after DPS assigned it
//! (service documentation "Communicate with an IoT hub using the MQTT protocol"): the CONNECT
//! user name, the telemetry, cloud-to-device and twin topics and their property bags, built and
//! parsed here once for the hsmkit device client and the emulated hub.
//!
//! - CONNECT: client id = device id; user name `{hubHostName}/{deviceId}/?api-version={v}`
//!   (SDKs append `&DeviceClientType=...`); password = a SAS token whose `sr` is
//!   [`crate::sas::hub_resource`] (symmetric key or TPM identity key), none for X.509 (mutual
//!   TLS). MQTT over TLS on [`crate::mqtt::MQTT_TLS_PORT`], or over WebSocket.
//! - Telemetry: PUBLISH (QoS 0 or 1) to [`telemetry_topic`]: `devices/{deviceId}/messages/events/`
//!   followed by the URL-encoded property bag `k=v&k2=v2` (system properties are `$.`-keys:
//!   `$.ct` content type, `$.ce` content encoding, `$.mid` message id, ...).
//! - Cloud-to-device: SUBSCRIBE [`c2d_filter`]; messages arrive on [`c2d_topic`], the property
//!   bag after `devices/{deviceId}/messages/devicebound/`.
//! - Twin: SUBSCRIBE [`TWIN_RESPONSE_FILTER`]; GET on [`twin_get_topic`], reported-properties
//!   patch on [`twin_report_topic`]; answers on [`twin_response_topic`]
//!   `$iothub/twin/res/{status}/?$rid={rid}[&$version={v}]` (200 with the twin's `desired` and
//!   `reported` documents for GET, 204 with the new reported `$version` for a patch; 400, 429,
//!   5xx otherwise). Desired-property changes are pushed on [`desired_patch_topic`] to devices
//!   subscribed to [`TWIN_DESIRED_FILTER`].
//!
//! ```
//! use dps_proto::hub::{parse_telemetry_topic, telemetry_topic, username, parse_username};
//! let t = telemetry_topic("dev-1", &[("temp unit", "°C"), ("$.ct", "application/json")])?;
//! assert_eq!(t, "devices/dev-1/messages/events/temp%20unit=%c2%b0C&%24.ct=application%2fjson");
//! let props = parse_telemetry_topic("dev-1", &t)?;
//! assert_eq!(props[0], ("temp unit".to_string(), "°C".to_string()));
//! let u = username("hub.azure-devices.net", "dev-1", "2021-04-12", None)?;
//! assert_eq!(u, "hub.azure-devices.net/dev-1/?api-version=2021-04-12");
//! assert_eq!(parse_username(&u)?.device_id, "dev-1");
//! # Ok::<(), dps_proto::mqtt::MqttTopicError>(())
//! ```

use crate::mqtt::{checked, is_safe_value, param, query_pairs, MqttTopicError};
use crate::sas::url_encode;

/// The device API version hsmkit announces (the current GA version of IoT Hub's device API).
pub const API_VERSION: &str = "2021-04-12";

/// The filter a device subscribes to for twin answers.
pub const TWIN_RESPONSE_FILTER: &str = "$iothub/twin/res/#";

/// Every twin answer's topic starts with this.
pub const TWIN_RESPONSE_PREFIX: &str = "$iothub/twin/res/";

/// The filter a device subscribes to for desired-property changes.
pub const TWIN_DESIRED_FILTER: &str = "$iothub/twin/PATCH/properties/desired/#";

/// Desired-property change topics start with this.
pub const TWIN_DESIRED_PREFIX: &str = "$iothub/twin/PATCH/properties/desired/";

/// The twin GET request's topic, up to the query.
pub const TWIN_GET_PREFIX: &str = "$iothub/twin/GET/";

/// The reported-properties patch request's topic, up to the query.
pub const TWIN_REPORT_PREFIX: &str = "$iothub/twin/PATCH/properties/reported/";

/// Largest device-to-cloud message the service accepts (256 KiB).
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;

/// Largest twin section (desired or reported) the service keeps (32 KiB).
pub const MAX_TWIN_SECTION_BYTES: usize = 32 * 1024;

/// The CONNECT user name: `{hub}/{deviceId}/?api-version={v}`, with
/// `&DeviceClientType={client_type}` when given (as the SDKs send it).
pub fn username(
    hub: &str,
    device_id: &str,
    api_version: &str,
    client_type: Option<&str>,
) -> Result<String, MqttTopicError> {
    let mut u = format!(
        "{}/{}/?api-version={}",
        checked("IoT hub host name", hub)?,
        checked("device id", device_id)?,
        checked("api-version", api_version)?
    );
    if let Some(c) = client_type {
        u.push_str("&DeviceClientType=");
        u.push_str(&url_encode(c));
    }
    Ok(u)
}

/// A parsed IoT Hub CONNECT user name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Username {
    /// The hub's host name, as the device addressed it.
    pub hub: String,
    /// The device id (the client id must be the same).
    pub device_id: String,
    /// The module id, for a module identity (`{hub}/{deviceId}/{moduleId}/?...`).
    pub module_id: Option<String>,
    /// The api-version.
    pub api_version: String,
    /// `DeviceClientType`, as sent (still URL-encoded).
    pub client_type: Option<String>,
}

/// Parses an IoT Hub CONNECT user name; other query parameters are ignored, as the service
/// does.
pub fn parse_username(name: &str) -> Result<Username, MqttTopicError> {
    let bad = || MqttTopicError::BadHubUsername(name.escape_debug().to_string());
    let (path, query) = name.split_once("/?").ok_or_else(bad)?;
    let parts: Vec<&str> = path.split('/').collect();
    let (hub, device_id, module_id) = match parts.as_slice() {
        [hub, device] => (*hub, *device, None),
        [hub, device, module] => (*hub, *device, Some(*module)),
        _ => return Err(bad()),
    };
    if !is_safe_value(hub)
        || !is_safe_value(device_id)
        || module_id.is_some_and(|m| !is_safe_value(m))
    {
        return Err(bad());
    }
    let pairs = query_pairs(query).ok_or_else(bad)?;
    let find = |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
    };
    let api_version = find("api-version")
        .filter(|v| is_safe_value(v))
        .ok_or_else(bad)?;
    Ok(Username {
        hub: hub.to_string(),
        device_id: device_id.to_string(),
        module_id: module_id.map(str::to_string),
        api_version,
        client_type: find("DeviceClientType"),
    })
}

/// Encodes a property bag: `k=v&k2=v2`, each name and value URL-encoded as
/// [`crate::sas::url_encode`] does (what `encodeURIComponent` produces, lowercase hex).
pub fn encode_properties<K: AsRef<str>, V: AsRef<str>>(properties: &[(K, V)]) -> String {
    properties
        .iter()
        .map(|(k, v)| format!("{}={}", url_encode(k.as_ref()), url_encode(v.as_ref())))
        .collect::<Vec<_>>()
        .join("&")
}

/// Decodes a property bag; a name without `=` has an empty value, as the SDKs send flags.
pub fn decode_properties(bag: &str) -> Result<Vec<(String, String)>, MqttTopicError> {
    let bad = || MqttTopicError::BadValue {
        what: "property bag",
        value: bag.escape_debug().to_string(),
    };
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8()
            .map(|c| c.into_owned())
            .map_err(|_| bad())
    };
    if bag.is_empty() {
        return Ok(Vec::new());
    }
    bag.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let k = decode(k)?;
            if k.is_empty() {
                return Err(bad());
            }
            Ok((k, decode(v)?))
        })
        .collect()
}

fn device_topic(device_id: &str, kind: &str) -> Result<String, MqttTopicError> {
    Ok(format!(
        "devices/{}/messages/{kind}/",
        checked("device id", device_id)?
    ))
}

/// The telemetry topic of `device_id` with `properties` in its property bag.
pub fn telemetry_topic<K: AsRef<str>, V: AsRef<str>>(
    device_id: &str,
    properties: &[(K, V)],
) -> Result<String, MqttTopicError> {
    Ok(device_topic(device_id, "events")? + &encode_properties(properties))
}

/// The properties of a telemetry message `device_id` published on `topic`; an error when the
/// topic is not that device's telemetry topic (a device may publish only its own).
pub fn parse_telemetry_topic(
    device_id: &str,
    topic: &str,
) -> Result<Vec<(String, String)>, MqttTopicError> {
    let prefix = device_topic(device_id, "events")?;
    let bag = topic
        .strip_prefix(&prefix)
        .ok_or_else(|| MqttTopicError::UnknownTopic(topic.escape_debug().to_string()))?;
    decode_properties(bag)
}

/// The filter `device_id` subscribes to for cloud-to-device messages.
pub fn c2d_filter(device_id: &str) -> Result<String, MqttTopicError> {
    Ok(device_topic(device_id, "devicebound")? + "#")
}

/// The topic a cloud-to-device message for `device_id` arrives on.
pub fn c2d_topic<K: AsRef<str>, V: AsRef<str>>(
    device_id: &str,
    properties: &[(K, V)],
) -> Result<String, MqttTopicError> {
    Ok(device_topic(device_id, "devicebound")? + &encode_properties(properties))
}

/// The properties of a cloud-to-device message from its topic.
pub fn parse_c2d_topic(
    device_id: &str,
    topic: &str,
) -> Result<Vec<(String, String)>, MqttTopicError> {
    let prefix = device_topic(device_id, "devicebound")?;
    let bag = topic
        .strip_prefix(&prefix)
        .ok_or_else(|| MqttTopicError::UnknownTopic(topic.escape_debug().to_string()))?;
    decode_properties(bag)
}

/// The twin GET request's topic: `$iothub/twin/GET/?$rid={rid}`.
pub fn twin_get_topic(rid: &str) -> Result<String, MqttTopicError> {
    Ok(format!(
        "{TWIN_GET_PREFIX}?$rid={}",
        checked("request id", rid)?
    ))
}

/// The reported-properties patch's topic: `$iothub/twin/PATCH/properties/reported/?$rid={rid}`.
pub fn twin_report_topic(rid: &str) -> Result<String, MqttTopicError> {
    Ok(format!(
        "{TWIN_REPORT_PREFIX}?$rid={}",
        checked("request id", rid)?
    ))
}

/// A twin request, from its topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TwinRequest {
    /// Get the whole twin.
    Get {
        /// The request id to answer with.
        rid: String,
    },
    /// Patch the reported properties (the body is the JSON patch).
    PatchReported {
        /// The request id to answer with.
        rid: String,
    },
}

/// Parses a twin request topic; `None` when the topic is not a twin request at all.
pub fn parse_twin_request_topic(topic: &str) -> Option<Result<TwinRequest, MqttTopicError>> {
    let (get, query) = if let Some(q) = topic.strip_prefix(TWIN_GET_PREFIX) {
        (true, q)
    } else if let Some(q) = topic.strip_prefix(TWIN_REPORT_PREFIX) {
        (false, q)
    } else {
        return None;
    };
    let unknown = || MqttTopicError::UnknownTopic(topic.escape_debug().to_string());
    Some((|| {
        let query = query.strip_prefix('?').ok_or_else(unknown)?;
        let pairs = query_pairs(query).ok_or_else(unknown)?;
        let rid = param(topic, &pairs, "$rid", "request id")?;
        Ok(if get {
            TwinRequest::Get { rid }
        } else {
            TwinRequest::PatchReported { rid }
        })
    })())
}

/// A twin answer's topic: `$iothub/twin/res/{status}/?$rid={rid}`, with `&$version={v}` when
/// given (the new reported version after a patch).
pub fn twin_response_topic(
    status: u16,
    rid: &str,
    version: Option<u64>,
) -> Result<String, MqttTopicError> {
    if !(100..=999).contains(&status) {
        return Err(MqttTopicError::BadStatus(status.to_string()));
    }
    let mut t = format!(
        "{TWIN_RESPONSE_PREFIX}{status}/?$rid={}",
        checked("request id", rid)?
    );
    if let Some(v) = version {
        t.push_str(&format!("&$version={v}"));
    }
    Ok(t)
}

/// A parsed twin answer topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TwinResponse {
    /// The status (200 GET, 204 patch, 4xx/5xx refusals).
    pub status: u16,
    /// The request id the answer is for.
    pub rid: String,
    /// `$version`, when sent.
    pub version: Option<u64>,
}

/// Parses a twin answer topic.
pub fn parse_twin_response_topic(topic: &str) -> Result<TwinResponse, MqttTopicError> {
    let unknown = || MqttTopicError::UnknownTopic(topic.escape_debug().to_string());
    let rest = topic
        .strip_prefix(TWIN_RESPONSE_PREFIX)
        .ok_or_else(unknown)?;
    let (status, query) = rest.split_once("/?").ok_or_else(unknown)?;
    let status = crate::mqtt::parse_status(topic, status)?;
    let pairs = query_pairs(query).ok_or_else(unknown)?;
    let rid = param(topic, &pairs, "$rid", "request id")?;
    let version = pairs
        .iter()
        .find(|(k, _)| *k == "$version")
        .and_then(|(_, v)| v.parse().ok());
    Ok(TwinResponse {
        status,
        rid,
        version,
    })
}

/// The topic a desired-properties change is pushed on: `...desired/?$version={version}`.
pub fn desired_patch_topic(version: u64) -> String {
    format!("{TWIN_DESIRED_PREFIX}?$version={version}")
}

/// The version of a desired-properties change, from its topic.
pub fn parse_desired_patch_topic(topic: &str) -> Result<u64, MqttTopicError> {
    let unknown = || MqttTopicError::UnknownTopic(topic.escape_debug().to_string());
    let query = topic
        .strip_prefix(TWIN_DESIRED_PREFIX)
        .and_then(|q| q.strip_prefix('?'))
        .ok_or_else(unknown)?;
    let pairs = query_pairs(query).ok_or_else(unknown)?;
    param(topic, &pairs, "$version", "twin version")?
        .parse()
        .map_err(|_| unknown())
}

/// The twin a device reads with GET: its desired and reported property documents, each with
/// its `$version` (and `$metadata` on the real service, which the device rarely needs).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Twin {
    /// What the solution wants the device to be.
    pub desired: serde_json::Map<String, serde_json::Value>,
    /// What the device last reported.
    pub reported: serde_json::Map<String, serde_json::Value>,
}

impl Twin {
    /// The `$version` of the desired document.
    pub fn desired_version(&self) -> Option<u64> {
        self.desired.get("$version").and_then(|v| v.as_u64())
    }

    /// The `$version` of the reported document.
    pub fn reported_version(&self) -> Option<u64> {
        self.reported.get("$version").and_then(|v| v.as_u64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames() {
        let u = username(
            "h.azure-devices.net",
            "dev",
            API_VERSION,
            Some("hsmkit/0.1"),
        )
        .unwrap();
        assert_eq!(
            u,
            "h.azure-devices.net/dev/?api-version=2021-04-12&DeviceClientType=hsmkit%2f0.1"
        );
        let p = parse_username(&u).unwrap();
        assert_eq!(
            (
                p.hub.as_str(),
                p.device_id.as_str(),
                p.module_id,
                p.api_version.as_str()
            ),
            ("h.azure-devices.net", "dev", None, API_VERSION)
        );
        assert_eq!(p.client_type.as_deref(), Some("hsmkit%2f0.1"));
        // What the Python SDK sends, and a module identity.
        let p = parse_username(
            "h.azure-devices.net/d1/?api-version=2019-10-01&DeviceClientType=azure-iot-device-python%2F2.14.0",
        )
        .unwrap();
        assert_eq!(p.device_id, "d1");
        let p = parse_username("h/d/m/?api-version=2021-04-12").unwrap();
        assert_eq!(p.module_id.as_deref(), Some("m"));
        for bad in [
            "",
            "h/d",
            "h/d/?",
            "h/d/?DeviceClientType=x",
            "/d/?api-version=1",
            "h//?api-version=1",
            "h/d/m/x/?api-version=1",
            "0ne1/registrations/dev/api-version=2021-06-01",
        ] {
            assert!(parse_username(bad).is_err(), "{bad}");
        }
        assert!(username("h", "a/b", API_VERSION, None).is_err());
        assert!(username("h", "a#", API_VERSION, None).is_err());
    }

    #[test]
    fn property_bags() {
        let t = telemetry_topic("d", &[("a", "1"), ("b c", "x&y=z")]).unwrap();
        assert_eq!(t, "devices/d/messages/events/a=1&b%20c=x%26y%3dz");
        assert_eq!(
            parse_telemetry_topic("d", &t).unwrap(),
            vec![("a".into(), "1".into()), ("b c".into(), "x&y=z".into())]
        );
        let none: [(&str, &str); 0] = [];
        assert_eq!(
            telemetry_topic("d", &none).unwrap(),
            "devices/d/messages/events/"
        );
        assert!(parse_telemetry_topic("d", "devices/d/messages/events/")
            .unwrap()
            .is_empty());
        // Another device's topic, or another kind of topic, is not this device's telemetry.
        assert!(parse_telemetry_topic("d", "devices/e/messages/events/").is_err());
        assert!(parse_telemetry_topic("d", "devices/d/messages/devicebound/").is_err());
        // The C SDK's flag-style properties and upper-case escapes.
        assert_eq!(
            decode_properties("%24.ct=application%2Fjson&flag").unwrap(),
            vec![
                ("$.ct".into(), "application/json".into()),
                ("flag".into(), String::new())
            ]
        );
        assert!(decode_properties("=v").is_err());
        assert!(decode_properties("k=%ff").is_err());
        let t = c2d_topic("d", &[("$.mid", "m1")]).unwrap();
        assert_eq!(t, "devices/d/messages/devicebound/%24.mid=m1");
        assert_eq!(
            parse_c2d_topic("d", &t).unwrap(),
            vec![("$.mid".into(), "m1".into())]
        );
        assert_eq!(c2d_filter("d").unwrap(), "devices/d/messages/devicebound/#");
    }

    #[test]
    fn twin_topics() {
        let g = twin_get_topic("1").unwrap();
        assert_eq!(g, "$iothub/twin/GET/?$rid=1");
        assert_eq!(
            parse_twin_request_topic(&g).unwrap().unwrap(),
            TwinRequest::Get { rid: "1".into() }
        );
        let p = twin_report_topic("2").unwrap();
        assert_eq!(p, "$iothub/twin/PATCH/properties/reported/?$rid=2");
        assert_eq!(
            parse_twin_request_topic(&p).unwrap().unwrap(),
            TwinRequest::PatchReported { rid: "2".into() }
        );
        assert!(parse_twin_request_topic("devices/d/messages/events/").is_none());
        assert!(parse_twin_request_topic("$iothub/twin/GET/")
            .unwrap()
            .is_err());
        assert!(parse_twin_request_topic("$iothub/twin/GET/?x=1")
            .unwrap()
            .is_err());

        let r = twin_response_topic(204, "2", Some(7)).unwrap();
        assert_eq!(r, "$iothub/twin/res/204/?$rid=2&$version=7");
        assert_eq!(
            parse_twin_response_topic(&r).unwrap(),
            TwinResponse {
                status: 204,
                rid: "2".into(),
                version: Some(7)
            }
        );
        let r = twin_response_topic(200, "1", None).unwrap();
        assert_eq!(parse_twin_response_topic(&r).unwrap().version, None);
        assert!(parse_twin_response_topic("$iothub/twin/res/2x4/?$rid=1").is_err());
        assert!(twin_response_topic(42, "1", None).is_err());

        let d = desired_patch_topic(5);
        assert_eq!(d, "$iothub/twin/PATCH/properties/desired/?$version=5");
        assert_eq!(parse_desired_patch_topic(&d).unwrap(), 5);
        assert!(parse_desired_patch_topic("$iothub/twin/PATCH/properties/desired/").is_err());
    }

    #[test]
    fn twin_documents() {
        let t: Twin =
            serde_json::from_str(r#"{"desired":{"a":1,"$version":3},"reported":{"$version":1}}"#)
                .unwrap();
        assert_eq!(
            (t.desired_version(), t.reported_version()),
            (Some(3), Some(1))
        );
    }
}
