//! The registration flow: register, answer a TPM challenge, poll the operation, retry what is
//! transient, all inside one overall deadline. Written once over the [`DpsTransport`] seam, so
//! HTTPS and MQTT share every rule.

use super::config::{base_url, is_valid_id, survives_url_normalisation, DpsClientConfig};
use super::credentials::{dps_token, DeviceIdentity, SasKey};
use super::error::DpsError;
use super::model::{Attestation, ProgressEvent, RegistrationResult};
use super::retry::backoff;
use super::sas::expiry_from_now;
use super::tls::{self, SignFailure};
use super::transport::https::{HttpsTarget, HttpsTransport};
use super::transport::mqtt::{self, Carrier, MqttTarget, MqttTransport};
use super::transport::{Answer, DpsTransport, Transport, TransportFailure};
use crate::plugin::PluginInstance;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use dps_proto::wire::{status, DeviceRegistration, ErrorBody, RegistrationOperationStatus};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How many TPM challenges one registration answers before giving up (a second one comes when
/// the service restarted between the challenge and the answer, or when the client asks for a
/// fresh one after its answer was refused).
const MAX_TPM_CHALLENGES: u32 = 3;

/// Registers the device with DPS through `instance` and returns the assignment.
///
/// `progress` is called for each step (for progress output; never given a secret). The whole
/// call, retries and polls included, ends within `config.overall_timeout`.
pub async fn register(
    config: &DpsClientConfig,
    instance: Arc<PluginInstance>,
    attestation: Attestation,
    progress: &(dyn Fn(&ProgressEvent) + Sync),
) -> Result<RegistrationResult, DpsError> {
    let last = Mutex::new(String::from("no failure, DPS did not finish in time"));
    let prepared = Prepared::new(config, &instance, attestation)?;
    match config.transport {
        Transport::Https => {
            let transport = HttpsTransport::new(
                prepared.tls.clone(),
                HttpsTarget {
                    base: prepared.base.clone(),
                    id_scope: &config.id_scope,
                    registration_id: &prepared.identity.registration_id,
                    api_version: config.api_version,
                    request_timeout: config.request_timeout,
                    max_retry_after: config.retry.max_retry_after,
                },
                prepared.sign_failure.clone(),
            );
            run_within_deadline(config, instance, prepared, transport, progress, &last).await
        }
        Transport::Mqtt | Transport::MqttWs => {
            let carrier = mqtt_carrier(config.transport);
            let (host, port) = mqtt::host_port(&config.endpoint, carrier)
                .map_err(|reason| DpsError::Config { reason })?;
            let transport = MqttTransport::new(
                prepared.tls.clone(),
                MqttTarget {
                    carrier,
                    host,
                    port,
                    id_scope: &config.id_scope,
                    registration_id: &prepared.identity.registration_id,
                    api_version: config.api_version.as_str(),
                    request_timeout: config.request_timeout,
                    max_retry_after: config.retry.max_retry_after,
                },
                prepared.sign_failure.clone(),
            );
            run_within_deadline(config, instance, prepared, transport, progress, &last).await
        }
    }
}

/// What carries an MQTT transport: a WebSocket for `mqtt-ws`, TLS otherwise.
fn mqtt_carrier(transport: Transport) -> Carrier {
    match transport {
        Transport::MqttWs => Carrier::WebSocket,
        Transport::Https | Transport::Mqtt => Carrier::Tls,
    }
}

/// Runs the flow over `transport` (refused as a configuration error when it could not be
/// made) inside the overall deadline.
async fn run_within_deadline<T: DpsTransport>(
    config: &DpsClientConfig,
    instance: Arc<PluginInstance>,
    prepared: Prepared,
    transport: Result<T, String>,
    progress: &(dyn Fn(&ProgressEvent) + Sync),
    last: &Mutex<String>,
) -> Result<RegistrationResult, DpsError> {
    let transport = transport.map_err(|reason| DpsError::Config { reason })?;
    let flow = Flow::new(config, instance, prepared, transport, progress, last);
    within_deadline(config, last, flow.run()).await
}

/// Runs the flow inside the overall deadline; a timeout names the last failure.
async fn within_deadline(
    config: &DpsClientConfig,
    last: &Mutex<String>,
    run: impl std::future::Future<Output = Result<RegistrationResult, DpsError>>,
) -> Result<RegistrationResult, DpsError> {
    match tokio::time::timeout(config.overall_timeout, run).await {
        Ok(result) => result,
        Err(_) => Err(DpsError::Timeout {
            after: config.overall_timeout,
            last: last.lock().map(|s| s.clone()).unwrap_or_default(),
        }),
    }
}

/// Where the flow is.
enum Step {
    /// Send (or resend) the register request.
    Register,
    /// Poll this operation now.
    Poll(String),
    /// Poll this operation after a pause.
    PollAfter(String, Duration),
    /// Finished.
    Done(Box<RegistrationResult>),
}

/// What every transport needs, checked before anything is sent: the device's identity and the
/// TLS settings (trust roots; for X.509 the client certificate signed through the plugin).
struct Prepared {
    identity: DeviceIdentity,
    base: String,
    tls: rustls::ClientConfig,
    sign_failure: Option<SignFailure>,
}

impl Prepared {
    fn new(
        config: &DpsClientConfig,
        instance: &Arc<PluginInstance>,
        attestation: Attestation,
    ) -> Result<Self, DpsError> {
        let config_err = |reason: String| DpsError::Config { reason };
        if attestation == Attestation::Tpm && config.transport != Transport::Https {
            return Err(config_err(format!(
                "TPM attestation is not available over {}: DPS accepts TPM devices over HTTPS (and AMQP) only; use --transport https",
                config.transport
            )));
        }
        let base = match config.transport {
            Transport::Https => base_url(&config.endpoint).map_err(config_err)?,
            Transport::Mqtt | Transport::MqttWs => {
                let carrier = mqtt_carrier(config.transport);
                let (host, port) =
                    mqtt::host_port(&config.endpoint, carrier).map_err(config_err)?;
                carrier.url(&host, port)
            }
        };
        if !is_valid_id(&config.id_scope) {
            return Err(config_err(format!(
                "the id scope `{}` is malformed; copy it from the DPS overview page (like 0ne00000001)",
                config.id_scope
            )));
        }
        let identity =
            DeviceIdentity::read(instance, attestation, config.registration_id.as_deref())?;
        if !is_valid_id(&identity.registration_id) {
            return Err(config_err(format!(
                "the registration id `{}` is not valid for DPS (1-128 of a-z A-Z 0-9 - . _ :); set a valid one",
                identity.registration_id.escape_debug()
            )));
        }
        // Refused before anything is sent: the request would reach another path than the one
        // its SAS scope and body name.
        for (what, value) in [
            ("id scope", &config.id_scope),
            ("registration id", &identity.registration_id),
        ] {
            if !survives_url_normalisation(&base, value) {
                return Err(config_err(format!(
                    "the {what} `{value}` would be changed by URL normalisation (`.` and `..` path segments are removed or resolved), so the request would go to another path than the one DPS checks; use a {what} that is not `.` or `..`"
                )));
            }
        }
        let roots = tls::root_store(config.extra_trust_pem.as_deref(), config.trust_public_roots)
            .map_err(|e| config_err(e.to_string()))?;
        let (tls_config, sign_failure) = match attestation {
            Attestation::X509 => {
                let (c, f) = tls::client_config_with_plugin_identity(instance.clone(), roots)
                    .map_err(|e| match e {
                        tls::TlsSetupError::Plugin(p) => DpsError::Plugin(p),
                        other => config_err(other.to_string()),
                    })?;
                (c, Some(f))
            }
            _ => (
                tls::client_config_without_identity(roots)
                    .map_err(|e| config_err(e.to_string()))?,
                None,
            ),
        };
        Ok(Self {
            identity,
            base,
            tls: tls_config,
            sign_failure,
        })
    }
}

struct Flow<'a, T> {
    config: &'a DpsClientConfig,
    instance: Arc<PluginInstance>,
    identity: DeviceIdentity,
    transport: T,
    base: String,
    progress: &'a (dyn Fn(&ProgressEvent) + Sync),
    last: &'a Mutex<String>,
    /// TPM: the identity key is activated and SAS tokens can be signed.
    tpm_activated: bool,
    /// keyName from the TPM challenge.
    key_name: String,
    /// TPM: a token signed with the activated key was refused once and a fresh challenge
    /// was asked for; a second refusal is final.
    tpm_rechallenged: bool,
    tpm_challenges: u32,
    connect_failures: u32,
    failures: u32,
    register_attempts: u32,
}

impl<'a, T: DpsTransport> Flow<'a, T> {
    fn new(
        config: &'a DpsClientConfig,
        instance: Arc<PluginInstance>,
        prepared: Prepared,
        transport: T,
        progress: &'a (dyn Fn(&ProgressEvent) + Sync),
        last: &'a Mutex<String>,
    ) -> Self {
        Self {
            config,
            instance,
            identity: prepared.identity,
            base: transport.endpoint().to_string(),
            transport,
            progress,
            last,
            tpm_activated: false,
            key_name: "registration".into(),
            tpm_rechallenged: false,
            tpm_challenges: 0,
            connect_failures: 0,
            failures: 0,
            register_attempts: 0,
        }
    }

    /// Logs a step; `last` keeps the latest failure, which is what a timeout message needs.
    fn note(&self, what: String) {
        tracing::debug!(registration_id = %self.identity.registration_id, "{what}");
    }

    fn note_failure(&self, what: String) {
        tracing::debug!(registration_id = %self.identity.registration_id, "{what}");
        if let Ok(mut l) = self.last.lock() {
            *l = what;
        }
    }

    /// The Authorization header for the next request, if the attestation uses one.
    fn authorization(&self) -> Result<Option<String>, DpsError> {
        let key = match self.identity.attestation {
            Attestation::SymmetricKey => SasKey::Symmetric,
            Attestation::Tpm if self.tpm_activated => SasKey::TpmIdentity,
            _ => return Ok(None),
        };
        Ok(Some(dps_token(
            &self.instance,
            key,
            &self.config.id_scope,
            &self.identity.registration_id,
            expiry_from_now(self.config.sas_ttl),
            &self.key_name,
        )?))
    }

    async fn run(mut self) -> Result<RegistrationResult, DpsError> {
        let mut step = Step::Register;
        loop {
            step = match step {
                Step::Register => self.register_once().await?,
                Step::Poll(op) => self.poll_once(op).await?,
                Step::PollAfter(op, wait) => {
                    (self.progress)(&ProgressEvent::Waiting {
                        reason: "polling the operation".into(),
                        wait,
                    });
                    tokio::time::sleep(wait).await;
                    Step::Poll(op)
                }
                Step::Done(result) => return Ok(*result),
            };
        }
    }

    /// Waits before retrying after a failure; `retry_after` from the service wins over back-off.
    async fn wait_after_failure(&mut self, reason: String, retry_after: Option<Duration>) {
        self.failures += 1;
        let wait = retry_after.unwrap_or_else(|| backoff(&self.config.retry, self.failures));
        self.note_failure(format!("{reason}; retried in {wait:?}"));
        (self.progress)(&ProgressEvent::Waiting { reason, wait });
        tokio::time::sleep(wait).await;
    }

    /// Sorts a transport failure: fatal ones become errors, others wait and return `Ok`.
    async fn on_transport_failure(
        &mut self,
        what: &str,
        f: TransportFailure,
    ) -> Result<(), DpsError> {
        match f {
            // An alert from the server once the device has shown a client certificate is
            // the server refusing it (or its handshake signature), not a trust problem here.
            TransportFailure::Tls(detail)
                if self.identity.attestation == Attestation::X509
                    && detail.contains("received fatal alert") =>
            {
                Err(DpsError::ClientCertificateRefused {
                    endpoint: self.base.clone(),
                    alert: detail,
                })
            }
            TransportFailure::Tls(detail) => Err(DpsError::TlsTrust {
                endpoint: self.base.clone(),
                detail,
            }),
            TransportFailure::Plugin(p) => Err(DpsError::Plugin(p)),
            TransportFailure::Connect(detail) => {
                self.connect_failures += 1;
                if self.connect_failures >= self.config.retry.max_connect_failures {
                    return Err(DpsError::Unreachable {
                        endpoint: self.base.clone(),
                        detail,
                    });
                }
                self.wait_after_failure(format!("{what}: cannot connect ({detail})"), None)
                    .await;
                Ok(())
            }
            TransportFailure::Transient(detail) => {
                self.connect_failures = 0;
                self.wait_after_failure(format!("{what}: {detail}"), None)
                    .await;
                Ok(())
            }
        }
    }

    async fn register_once(&mut self) -> Result<Step, DpsError> {
        self.register_attempts += 1;
        (self.progress)(&ProgressEvent::Registering {
            registration_id: self.identity.registration_id.clone(),
            attempt: self.register_attempts,
        });
        let body = DeviceRegistration {
            registration_id: Some(self.identity.registration_id.clone()),
            tpm: self.identity.tpm.clone(),
            payload: self.config.payload.clone(),
            // Base64 of the DER, no PEM armour: what public client code sends as `csr`.
            csr: self.config.csr.as_ref().map(|der| B64.encode(der)),
        };
        let body = serde_json::to_vec(&body).map_err(|e| DpsError::Config {
            reason: format!("the payload cannot be serialized: {e}"),
        })?;
        let auth = self.authorization()?;
        self.note("sending the register request".into());
        let answer = match self.transport.register(body, auth.as_deref()).await {
            Ok(a) => a,
            Err(f) => {
                self.on_transport_failure("register", f).await?;
                return Ok(Step::Register);
            }
        };
        self.connect_failures = 0;
        match answer.status {
            200..=299 => self.on_operation_answer(&answer, "register"),
            401 => self.on_unauthorized(&answer).await,
            _ => {
                self.on_error_status(answer, "register", Step::Register)
                    .await
            }
        }
    }

    async fn poll_once(&mut self, operation_id: String) -> Result<Step, DpsError> {
        let auth = self.authorization()?;
        self.note(format!("polling operation {operation_id}"));
        let answer = match self
            .transport
            .operation_status(&operation_id, auth.as_deref())
            .await
        {
            Ok(a) => a,
            Err(f) => {
                self.on_transport_failure("operation status", f).await?;
                return Ok(Step::Poll(operation_id));
            }
        };
        self.connect_failures = 0;
        match answer.status {
            200..=299 => self.on_operation_answer(&answer, "operation status"),
            401 => self.on_unauthorized(&answer).await,
            // The operation is gone (the service forgot it): registering again is idempotent
            // for one registration id, so it cannot create a second device.
            404 if !self.is_scope_404(&answer) => {
                self.note(format!(
                    "operation {operation_id} is unknown; registering again"
                ));
                Ok(Step::Register)
            }
            _ => {
                self.on_error_status(answer, "operation status", Step::Poll(operation_id))
                    .await
            }
        }
    }

    fn is_scope_404(&self, answer: &Answer) -> bool {
        let body: ErrorBody = serde_json::from_slice(&answer.body).unwrap_or_default();
        body.message.is_some_and(|m| m.contains("scope"))
    }

    /// 202 or 200 with an operation: keep polling, or finish.
    fn on_operation_answer(&mut self, answer: &Answer, what: &str) -> Result<Step, DpsError> {
        let op: RegistrationOperationStatus =
            serde_json::from_slice(&answer.body).map_err(|e| DpsError::Protocol {
                detail: format!("{what} answer {} is not an operation: {e}", answer.status),
            })?;
        if op.operation_id.is_empty()
            || !is_valid_id(&op.operation_id)
            || !survives_url_normalisation(&self.base, &op.operation_id)
        {
            return Err(DpsError::Protocol {
                detail: format!("{what} answer carries a malformed operationId"),
            });
        }
        match op.status.as_str() {
            status::ASSIGNING | status::UNASSIGNED => {
                (self.progress)(&ProgressEvent::Assigning {
                    operation_id: op.operation_id.clone(),
                });
                self.failures = 0;
                let wait = answer
                    .retry_after
                    .unwrap_or(self.config.retry.default_poll_interval);
                self.note(format!("operation {} is {}", op.operation_id, op.status));
                Ok(Step::PollAfter(op.operation_id, wait))
            }
            _ => self.finish(op).map(|r| Step::Done(Box::new(r))),
        }
    }

    /// The final registration state.
    fn finish(&mut self, op: RegistrationOperationStatus) -> Result<RegistrationResult, DpsError> {
        let state = op.registration_state.unwrap_or_default();
        // Fields the service always sends parse as empty when missing: empty means absent.
        let present = |s: String| (!s.is_empty()).then_some(s);
        let status = present(state.status.clone()).unwrap_or_else(|| op.status.clone());
        let registration_id = self.identity.registration_id.clone();
        match status.as_str() {
            status::ASSIGNED => {}
            status::DISABLED | status::BLACKLISTED => {
                return Err(DpsError::Disabled { registration_id })
            }
            status::FAILED => {
                return Err(DpsError::AssignmentFailed {
                    registration_id,
                    error_code: state.error_code.unwrap_or(0),
                    message: state.error_message.unwrap_or_else(|| "(no message)".into()),
                })
            }
            other => {
                return Err(DpsError::Protocol {
                    detail: format!("the operation ended with unknown status `{other}`"),
                })
            }
        }
        if !state.registration_id.is_empty() && state.registration_id != registration_id {
            return Err(DpsError::Protocol {
                detail: "the answer is for another registration id".into(),
            });
        }
        let (Some(hub), Some(device_id)) = (state.assigned_hub, state.device_id) else {
            return Err(DpsError::Protocol {
                detail: "status is assigned but assignedHub or deviceId is missing".into(),
            });
        };
        if self.identity.attestation == Attestation::Tpm {
            // Like the C SDK: the assigned state carries the authenticationKey again, and the
            // identity key the hub will trust is the one it holds.
            if let Some(key) = state.tpm.and_then(|t| t.authentication_key) {
                let blob = B64.decode(key.trim()).map_err(|_| DpsError::Protocol {
                    detail: "registrationState.tpm.authenticationKey is not base64".into(),
                })?;
                self.instance.tpm()?.activate_identity_key(&blob)?;
            }
        }
        (self.progress)(&ProgressEvent::Assigned {
            assigned_hub: hub.clone(),
            device_id: device_id.clone(),
        });
        Ok(RegistrationResult {
            registration_id,
            assigned_hub: hub,
            device_id,
            status,
            substatus: state.substatus,
            attestation: self.identity.attestation,
            payload: state.payload,
            created_date_time_utc: present(state.created_date_time_utc),
            last_updated_date_time_utc: present(state.last_updated_date_time_utc),
            etag: present(state.etag),
            operation_id: op.operation_id,
            issued_certificate_chain: state.issued_certificate_chain,
        })
    }

    /// 401: the TPM challenge, or refused credentials.
    async fn on_unauthorized(&mut self, answer: &Answer) -> Result<Step, DpsError> {
        let body: ErrorBody = serde_json::from_slice(&answer.body).unwrap_or_default();
        if self.identity.attestation == Attestation::Tpm {
            if let Some(challenge) = body.tpm_challenge.clone() {
                let key = challenge.authentication_key;
                self.tpm_challenges += 1;
                if self.tpm_challenges > MAX_TPM_CHALLENGES {
                    return Err(self.unauthorized(
                        body,
                        "the TPM challenge was answered but DPS keeps refusing the signature",
                    ));
                }
                (self.progress)(&ProgressEvent::TpmChallenge);
                self.note("activating the identity key from the TPM challenge".into());
                let blob = B64.decode(key.trim()).map_err(|_| DpsError::Protocol {
                    detail: "the TPM challenge's authenticationKey is not base64".into(),
                })?;
                self.instance.tpm()?.activate_identity_key(&blob)?;
                self.tpm_activated = true;
                if let Some(name) = challenge.key_name.filter(|n| !n.is_empty()) {
                    self.key_name = name;
                }
                return Ok(Step::Register);
            }
            if self.tpm_activated {
                // The answer to the challenge was refused: the service may have dropped that
                // challenge (restart, or newer challenges for the same EK pushed it out, which
                // anyone who knows the EK can cause). Ask once for a fresh one, then give up.
                if !self.tpm_rechallenged {
                    self.tpm_rechallenged = true;
                    self.tpm_activated = false;
                    self.note_failure(
                        "DPS refused the token signed with the activated identity key; asking for a fresh TPM challenge".into(),
                    );
                    return Ok(Step::Register);
                }
                let detail = format!(
                    "DPS refused the token signed with the TPM identity key twice, the second time right after a fresh challenge ({})",
                    body.message.as_deref().unwrap_or("no message")
                );
                return Err(self.unauthorized(
                    ErrorBody {
                        message: Some(detail),
                        ..body
                    },
                    "",
                ));
            }
        }
        Err(self.unauthorized(body, "unauthorized"))
    }

    fn unauthorized(&self, body: ErrorBody, fallback: &str) -> DpsError {
        DpsError::Unauthorized {
            registration_id: self.identity.registration_id.clone(),
            attestation: self.identity.attestation.as_str(),
            error_code: body.error_code.unwrap_or(0),
            message: body.message.unwrap_or_else(|| fallback.to_string()),
            tracking_id: body.tracking_id.unwrap_or_else(|| "none".into()),
        }
    }

    /// Any other status: 429 and 5xx are retried (Retry-After honoured), the rest are errors.
    async fn on_error_status(
        &mut self,
        answer: Answer,
        what: &str,
        again: Step,
    ) -> Result<Step, DpsError> {
        let body: ErrorBody = serde_json::from_slice(&answer.body).unwrap_or_default();
        let status = answer.status;
        if status == 429 || status >= 500 {
            let reason = if status == 429 {
                format!("{what}: throttled (HTTP 429)")
            } else {
                format!("{what}: server error (HTTP {status})")
            };
            self.wait_after_failure(reason, answer.retry_after).await;
            return Ok(again);
        }
        let message = body.message.unwrap_or_else(|| "(no message)".into());
        let tracking_id = body.tracking_id.unwrap_or_else(|| "none".into());
        if status == 404 {
            return Err(DpsError::NotFound {
                id_scope: self.config.id_scope.clone(),
                message,
                tracking_id,
            });
        }
        Err(DpsError::Service {
            status,
            error_code: body.error_code.unwrap_or(0),
            message,
            tracking_id,
        })
    }
}
