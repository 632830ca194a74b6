//! DPS's device API over MQTT 3.1.1, as the service offers it (service documentation
//! "Communicate with DPS using the MQTT protocol"), on the shared connection machinery of
//! [`super`].
//!
//! - CONNECT: client id = registration id; username
//!   `{idScope}/registrations/{registrationId}/api-version={v}` (more `&name=value` pairs, such
//!   as the SDKs' `ClientVersion`, are allowed); password = the SAS for symmetric keys, none for
//!   X.509 (the chain comes from the TLS session). The device is authenticated by the same
//!   code as an HTTPS request before the CONNACK; a refusal is CONNACK 5 "not authorized".
//!   TPM attestation is refused (the service does not offer it over MQTT). Sessions are never
//!   persistent (`session present` is always 0), as documented.
//! - SUBSCRIBE: only `$dps/registrations/res/#`, granted at most QoS 1.
//! - PUBLISH (QoS 0 or 1): `$dps/registrations/PUT/iotdps-register/?$rid={rid}` with the
//!   register body, `$dps/registrations/GET/iotdps-get-operationstatus/?$rid={rid}&operationId={id}`.
//!   Each is handled by the device API's own functions (`api::device`), so the rules and the
//!   records are the HTTPS ones; the answer is published on
//!   `$dps/registrations/res/{status}/?$rid={rid}[&retry-after={s}]` with the HTTPS body.
//!
//! The user name and topic rules are dps-proto's (`dps_proto::mqtt`), shared with the client.
//!
//! Bounds besides the shared ones: a payload of at most `max_body_bytes`; [`MAX_IN_FLIGHT`]
//! requests handled at once per connection. A subscription to another filter or with
//! wildcards elsewhere, a publish to another topic, QoS 2 and an oversized payload close the
//! connection; requests already being handled still complete and are recorded.

use rumqttc::mqttbytes::v4::{
    ConnectReturnCode, Packet, PubAck, Publish, SubAck, SubscribeReasonCode, UnsubAck,
};
use rumqttc::mqttbytes::QoS;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, watch, Notify, Semaphore};

use super::{Close, Connected, Service, MAX_IN_FLIGHT};
use crate::api::device::{
    authenticate_only, check_path, device_request, operation_status_request, register_request,
};
use crate::api::http::{ApiError, DeviceAnswer};
use crate::api::{device_fault, FaultAction};
use crate::app_state::{AppState, PeerChain};
use crate::auth::Transport;
use dps_proto::mqtt::{self as mqtt_rules, Request, RESPONSE_FILTER};
use dps_proto::DEVICE_API_VERSIONS;

/// The device a CONNECT names (dps-proto's user name rule), when its api-version is one the
/// device API accepts: (id scope, registration id).
fn parse_username(username: &str) -> Option<(String, String)> {
    let u = mqtt_rules::parse_username(username).ok()?;
    DEVICE_API_VERSIONS
        .contains(&u.api_version.as_str())
        .then_some((u.id_scope, u.registration_id))
}

/// The CONNACK code for a refused CONNECT's device-API error.
fn refusal_code(e: &ApiError) -> ConnectReturnCode {
    if e.status.is_server_error() {
        ConnectReturnCode::ServiceUnavailable
    } else {
        ConnectReturnCode::NotAuthorized
    }
}

/// A DPS connection, from its CONNECT to its close.
pub(crate) async fn serve<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    conn: Connected<S>,
    app: Arc<AppState>,
) -> Close {
    let (username, password) = match &conn.connect.login {
        Some(l) => (l.username.clone(), l.password.clone()),
        None => (String::new(), String::new()),
    };
    let Some((scope, reg)) = parse_username(&username) else {
        return conn.refuse(ConnectReturnCode::BadUserNamePassword).await;
    };
    if conn.connect.client_id != reg {
        return conn.refuse(ConnectReturnCode::BadClientId).await;
    }
    if let Err(e) = check_path(&app, &scope, &reg) {
        tracing::info!(registration_id = reg, reason = %e.message, "MQTT CONNECT refused");
        return conn.refuse(ConnectReturnCode::BadUserNamePassword).await;
    }
    let authorization = (!password.is_empty()).then_some(password);
    let chain = conn.chain.clone();
    let auth = match device_request(
        &reg,
        b"",
        authorization.clone(),
        chain.clone(),
        Transport::Mqtt,
        false,
    ) {
        Ok(r) => authenticate_only(app.clone(), r).await,
        Err(e) => Err(e),
    };
    if let Err(e) = auth {
        // The reason was logged under a trackingId by the device API; the client only learns
        // "not authorized", as from the service.
        return conn.refuse(refusal_code(&e)).await;
    }
    let open = match conn.accept().await {
        Ok(o) => o,
        Err(e) => return e,
    };
    let (sub_tx, subscribed) = watch::channel(None);
    let mut session = Dps {
        ctx: Ctx {
            app: app.clone(),
            registration_id: reg,
            authorization,
            chain,
            subscribed,
            next_pkid: Arc::new(AtomicU16::new(0)),
        },
        sub_tx,
        tx: open.tx.clone(),
        kill: open.kill.clone(),
        in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
    };
    open.run(&app, &mut session).await
}

/// One DPS connection's state.
struct Dps {
    ctx: Ctx,
    /// The QoS granted to the response subscription, `None` while not subscribed.
    sub_tx: watch::Sender<Option<QoS>>,
    tx: mpsc::Sender<Packet>,
    kill: Arc<Notify>,
    in_flight: Arc<Semaphore>,
}

impl Service for Dps {
    async fn packet(&mut self, packet: Packet) -> Result<(), Close> {
        match packet {
            Packet::Subscribe(s) => {
                if s.filters.iter().any(|f| f.path != RESPONSE_FILTER) {
                    return Err(Close::UnsupportedFilter);
                }
                // "DPS grants at most QoS 1 in the SUBACK" (service documentation).
                let granted: Vec<QoS> = s
                    .filters
                    .iter()
                    .map(|f| {
                        if f.qos == QoS::AtMostOnce {
                            QoS::AtMostOnce
                        } else {
                            QoS::AtLeastOnce
                        }
                    })
                    .collect();
                let codes = granted
                    .iter()
                    .map(|q| SubscribeReasonCode::Success(*q))
                    .collect();
                if let Some(q) = granted.last() {
                    self.sub_tx.send_replace(Some(*q));
                }
                self.send(Packet::SubAck(SubAck::new(s.pkid, codes))).await
            }
            Packet::Unsubscribe(u) => {
                if u.topics.iter().any(|t| t != RESPONSE_FILTER) {
                    return Err(Close::UnsupportedFilter);
                }
                self.sub_tx.send_replace(None);
                self.send(Packet::UnsubAck(UnsubAck::new(u.pkid))).await
            }
            Packet::Publish(p) => {
                if p.qos == QoS::ExactlyOnce {
                    return Err(Close::QoS2);
                }
                let max = self.ctx.app.config.max_body_bytes;
                if p.payload.len() > max {
                    return Err(Close::Oversized(max));
                }
                let Ok(request) = mqtt_rules::parse_request_topic(&p.topic) else {
                    return Err(Close::UnsupportedTopic);
                };
                if p.qos == QoS::AtLeastOnce {
                    self.send(Packet::PubAck(PubAck::new(p.pkid))).await?;
                }
                // Backpressure: with MAX_IN_FLIGHT requests in progress, stop reading.
                let Ok(permit) = self.in_flight.clone().acquire_owned().await else {
                    return Err(Close::Shutdown);
                };
                let ctx = self.ctx.clone();
                let tx = self.tx.clone();
                let kill = self.kill.clone();
                tokio::spawn(async move {
                    let _permit = permit;
                    handle_request(ctx, request, p.payload, tx, kill).await;
                });
                Ok(())
            }
            // The client acknowledges a QoS 1 answer: nothing is kept to resend (no sessions).
            _ => Ok(()),
        }
    }
}

impl Dps {
    async fn send(&self, p: Packet) -> Result<(), Close> {
        self.tx.send(p).await.map_err(|_| Close::Eof)
    }
}

/// What a request handler needs from its connection.
#[derive(Clone)]
struct Ctx {
    app: Arc<AppState>,
    registration_id: String,
    authorization: Option<String>,
    chain: PeerChain,
    subscribed: watch::Receiver<Option<QoS>>,
    next_pkid: Arc<AtomicU16>,
}

/// Handles one register or poll request through the device API and queues its answer.
async fn handle_request(
    ctx: Ctx,
    request: Request,
    payload: bytes::Bytes,
    tx: mpsc::Sender<Packet>,
    kill: Arc<Notify>,
) {
    let rid = request.rid().to_string();
    let answer = match device_fault(&ctx.app).await {
        Some(FaultAction::Drop) => {
            kill.notify_one();
            return;
        }
        Some(FaultAction::Answer(a)) => a,
        None => {
            let body_required = matches!(request, Request::Register { .. });
            let result = match device_request(
                &ctx.registration_id,
                &payload,
                ctx.authorization.clone(),
                ctx.chain.clone(),
                Transport::Mqtt,
                body_required,
            ) {
                Err(e) => Err(e),
                Ok(r) => match request {
                    Request::Register { .. } => register_request(ctx.app.clone(), r).await,
                    Request::OperationStatus { operation_id, .. } => {
                        operation_status_request(ctx.app.clone(), r, operation_id).await
                    }
                },
            };
            result.unwrap_or_else(ApiError::into_answer)
        }
    };
    if let Some(p) = answer_packet(&ctx, &rid, answer) {
        let _ = tx.send(p).await;
    }
}

/// The answer to request `rid`, published with the granted QoS; `None` while the client is
/// not subscribed to the response filter (the service answers subscribers only).
fn answer_packet(ctx: &Ctx, rid: &str, answer: DeviceAnswer) -> Option<Packet> {
    let Some(qos) = *ctx.subscribed.borrow() else {
        tracing::debug!(%rid, "answer not delivered: the client is not subscribed");
        return None;
    };
    let topic = mqtt_rules::response_topic(answer.status.as_u16(), rid, answer.retry_after).ok()?;
    let payload = serde_json::to_vec(&answer.body).unwrap_or_default();
    let mut p = Publish::new(topic, qos, payload);
    if qos == QoS::AtLeastOnce {
        // Packet ids 1..=65535, wrapping past 0 (which MQTT forbids).
        let mut id = ctx
            .next_pkid
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_add(1);
        if id == 0 {
            id = ctx
                .next_pkid
                .fetch_add(1, Ordering::Relaxed)
                .wrapping_add(1);
        }
        p.pkid = id;
    }
    Some(Packet::Publish(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_need_an_api_version_of_the_device_api() {
        assert_eq!(
            parse_username("0ne1/registrations/dev-1/api-version=2019-03-31&ClientVersion=x"),
            Some(("0ne1".into(), "dev-1".into()))
        );
        assert_eq!(
            parse_username("0ne1/registrations/dev-1/api-version=2021-06-01"),
            Some(("0ne1".into(), "dev-1".into()))
        );
        for bad in [
            "",
            "0ne1/registrations/dev-1",
            "0ne1/registrations/dev-1/api-version=1999-01-01",
            "0ne1/devices/dev-1/api-version=2019-03-31",
        ] {
            assert_eq!(parse_username(bad), None, "{bad}");
        }
    }
}
