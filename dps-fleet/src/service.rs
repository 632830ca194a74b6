//! The DPS service API as the fleet uses it: enrollments (individual and group) created with
//! PUT, registration states read back for the cross-check, authenticated with a SAS token made
//! from the service connection string
//! (<https://learn.microsoft.com/azure/iot-dps/how-to-control-access>, "Security tokens").

use base64::Engine;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use zeroize::Zeroizing;

/// The service API version sent (one the service and the emulator accept).
pub const SERVICE_API_VERSION: &str = "2021-10-01";

/// How long each service SAS token is valid.
const TOKEN_TTL: Duration = Duration::from_secs(3600);

/// A service API failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// The connection string lacks a field or has a bad one.
    #[error("bad service connection string: {0} (expected HostName=...;SharedAccessKeyName=...;SharedAccessKey=...)")]
    ConnectionString(&'static str),
    /// The CA certificate to trust cannot be used.
    #[error("cannot set up TLS for the service API: {0}")]
    Tls(String),
    /// No answer.
    #[error("service API {what}: {detail}")]
    Http {
        /// The request.
        what: String,
        /// The transport error.
        detail: String,
    },
    /// An answer other than success.
    #[error("service API {what} answered HTTP {status}: {body}")]
    Status {
        /// The request.
        what: String,
        /// The HTTP status.
        status: u16,
        /// The answer body (the service's error JSON).
        body: String,
    },
    /// A success answer that is not the expected JSON.
    #[error("service API {what} answered something that is not {expected}")]
    Body {
        /// The request.
        what: String,
        /// What was expected.
        expected: &'static str,
    },
}

/// A parsed service connection string. The key is secret: never printed.
#[derive(Clone)]
pub struct ConnectionString {
    /// `HostName`: the service's host (with `:port` for an emulator).
    pub host: String,
    /// `SharedAccessKeyName`: the shared access policy.
    pub key_name: String,
    key_b64: Arc<Zeroizing<String>>,
}

impl std::fmt::Debug for ConnectionString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionString")
            .field("host", &self.host)
            .field("key_name", &self.key_name)
            .finish_non_exhaustive()
    }
}

impl ConnectionString {
    /// Parses `HostName=...;SharedAccessKeyName=...;SharedAccessKey=...` (any order; the key is
    /// base64 and may itself contain `=`).
    pub fn parse(s: &str) -> Result<ConnectionString, ServiceError> {
        let (mut host, mut name, mut key) = (None, None, None);
        for part in s.trim().split(';').filter(|p| !p.trim().is_empty()) {
            let (k, v) = part
                .split_once('=')
                .ok_or(ServiceError::ConnectionString("a field is not Name=value"))?;
            match k.trim() {
                "HostName" => host = Some(v.trim().to_string()),
                "SharedAccessKeyName" => name = Some(v.trim().to_string()),
                "SharedAccessKey" => key = Some(Zeroizing::new(v.trim().to_string())),
                _ => {}
            }
        }
        let host = host.filter(|h| !h.is_empty() && !h.contains('/')).ok_or(
            ServiceError::ConnectionString("HostName is missing or not a host"),
        )?;
        let key_name = name
            .filter(|n| !n.is_empty())
            .ok_or(ServiceError::ConnectionString(
                "SharedAccessKeyName is missing",
            ))?;
        let key = key.ok_or(ServiceError::ConnectionString("SharedAccessKey is missing"))?;
        if base64::engine::general_purpose::STANDARD
            .decode(key.as_bytes())
            .map_or(true, |k| k.is_empty())
        {
            return Err(ServiceError::ConnectionString(
                "SharedAccessKey is not base64",
            ));
        }
        Ok(ConnectionString {
            host,
            key_name,
            key_b64: Arc::new(key),
        })
    }
}

/// A client of one DPS instance's service API.
#[derive(Clone)]
pub struct ServiceClient {
    conn: ConnectionString,
    http: reqwest::Client,
}

impl ServiceClient {
    /// A client for `conn`, trusting `ca_pem` (an emulator's CA) or, when `None`, the public
    /// web roots.
    pub fn new(
        conn: ConnectionString,
        ca_pem: Option<&[u8]>,
    ) -> Result<ServiceClient, ServiceError> {
        let roots = provisioning_core::dps::root_store(ca_pem, ca_pem.is_none())
            .map_err(|e| ServiceError::Tls(e.to_string()))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| ServiceError::Tls(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| ServiceError::Tls(e.to_string()))?;
        Ok(ServiceClient { conn, http })
    }

    /// The service host (`HostName`).
    pub fn host(&self) -> &str {
        &self.conn.host
    }

    fn token(&self) -> Result<Zeroizing<String>, ServiceError> {
        let expiry = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
            + TOKEN_TTL.as_secs();
        dps_proto::sas::create_token(
            &self.conn.host,
            &self.conn.key_b64,
            Some(&self.conn.key_name),
            expiry,
        )
        .map(Zeroizing::new)
        .map_err(|_| ServiceError::ConnectionString("SharedAccessKey is not base64"))
    }

    fn url(&self, path: &str) -> String {
        format!(
            "https://{}/{path}?api-version={SERVICE_API_VERSION}",
            self.conn.host
        )
    }

    async fn send(
        &self,
        what: String,
        req: reqwest::RequestBuilder,
    ) -> Result<(reqwest::header::HeaderMap, Option<Value>), ServiceError> {
        let token = self.token()?;
        let resp = req
            .header("authorization", token.as_str())
            .send()
            .await
            .map_err(|e| ServiceError::Http {
                what: what.clone(),
                detail: e.to_string(),
            })?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.bytes().await.map_err(|e| ServiceError::Http {
            what: what.clone(),
            detail: e.to_string(),
        })?;
        if status == reqwest::StatusCode::NOT_FOUND {
            return Ok((headers, None));
        }
        if !status.is_success() {
            return Err(ServiceError::Status {
                what,
                status: status.as_u16(),
                body: String::from_utf8_lossy(&body).chars().take(500).collect(),
            });
        }
        let value = serde_json::from_slice(&body).map_err(|_| ServiceError::Body {
            what,
            expected: "JSON",
        })?;
        Ok((headers, Some(value)))
    }

    /// Creates or replaces the individual enrollment `enrollment` (its `registrationId`).
    pub async fn put_individual(
        &self,
        registration_id: &str,
        enrollment: &Value,
    ) -> Result<(), ServiceError> {
        self.put(&format!("enrollments/{registration_id}"), enrollment)
            .await
    }

    /// Creates or replaces the enrollment group `group` (its `enrollmentGroupId`).
    pub async fn put_group(&self, group_id: &str, group: &Value) -> Result<(), ServiceError> {
        self.put(&format!("enrollmentGroups/{group_id}"), group)
            .await
    }

    /// PUT `body` at `path`: a create or replace, whose answer must have a body.
    async fn put(&self, path: &str, body: &Value) -> Result<(), ServiceError> {
        let what = format!("PUT {path}");
        let req = self.http.put(self.url(path)).json(body);
        match self.send(what.clone(), req).await? {
            (_, Some(_)) => Ok(()),
            (_, None) => Err(ServiceError::Status {
                what,
                status: 404,
                body: String::new(),
            }),
        }
    }

    /// The registration state of `registration_id` ("Device Registration State - Get"), or
    /// `None` when the service has none (404).
    pub async fn registration(&self, registration_id: &str) -> Result<Option<Value>, ServiceError> {
        let req = self
            .http
            .get(self.url(&format!("registrations/{registration_id}")));
        Ok(self
            .send(format!("GET registrations/{registration_id}"), req)
            .await?
            .1)
    }

    /// Every registration state of the devices registered through enrollment group `group_id`
    /// ("Device Registration State - Query"), following `x-ms-continuation` pages when the
    /// service splits the answer.
    pub async fn group_registrations(&self, group_id: &str) -> Result<Vec<Value>, ServiceError> {
        let mut out = Vec::new();
        let mut continuation: Option<String> = None;
        loop {
            let what = format!("POST registrations/{group_id}/query");
            let mut req = self
                .http
                .post(self.url(&format!("registrations/{group_id}/query")))
                .header("content-type", "application/json")
                .body("{}");
            if let Some(c) = &continuation {
                req = req.header("x-ms-continuation", c);
            }
            let (headers, body) = self.send(what.clone(), req).await?;
            match body {
                Some(Value::Array(items)) => out.extend(items),
                None => return Ok(out),
                Some(_) => {
                    return Err(ServiceError::Body {
                        what,
                        expected: "a JSON array",
                    })
                }
            }
            continuation = headers
                .get("x-ms-continuation")
                .and_then(|v| v.to_str().ok())
                .filter(|v| !v.is_empty())
                .map(str::to_string);
            if continuation.is_none() {
                return Ok(out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_strings_parse_and_bad_ones_say_why() {
        let c = ConnectionString::parse(
            "HostName=localhost:4443;SharedAccessKeyName=owner;SharedAccessKey=c2VjcmV0a2V5MTIzNDU2Nzg=",
        )
        .unwrap();
        assert_eq!(c.host, "localhost:4443");
        assert_eq!(c.key_name, "owner");
        assert!(
            !format!("{c:?}").contains("c2VjcmV0"),
            "the key is never printed"
        );
        for (bad, why) in [
            ("SharedAccessKeyName=o;SharedAccessKey=c2VjcmV0", "HostName"),
            ("HostName=h;SharedAccessKey=c2VjcmV0", "SharedAccessKeyName"),
            (
                "HostName=h;SharedAccessKeyName=o",
                "SharedAccessKey is missing",
            ),
            (
                "HostName=h;SharedAccessKeyName=o;SharedAccessKey=***",
                "not base64",
            ),
            (
                "HostName=https://h/x;SharedAccessKeyName=o;SharedAccessKey=c2VjcmV0",
                "HostName",
            ),
            ("garbage", "Name=value"),
        ] {
            let e = ConnectionString::parse(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}
