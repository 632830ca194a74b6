//! Device authentication: one `Authenticator` per attestation kind (as Parsec has one per
//! authentication method), chosen by the enrollment's kind for individual enrollments and by
//! the credentials the device presents for groups. Every refusal is an `AuthError::Refused`
//! with the reason, which the API answers with the service's uniform 401 and logs.
//!
//! Independent of HTTP: the API layer turns `AuthError` into answers.

pub mod sas;
pub mod symmetric_key;
pub mod tpm;
pub mod x509;

use dps_proto::wire::{DeviceRegistration, TpmChallenge};
use dps_proto::AttestationKind;
use serde_json::Value;

use crate::error::EmulatorError;
use crate::model::{EnrollmentGroup, IndividualEnrollment};
use crate::store::Store;

/// What a device presented with one request.
#[derive(Debug)]
pub(crate) struct DeviceRequest {
    /// From the path (the body's, if any, was checked to be the same).
    pub registration_id: String,
    /// The request body (empty for polls).
    pub body: DeviceRegistration,
    /// The Authorization header.
    pub authorization: Option<String>,
    /// The TLS client chain, leaf first.
    pub chain: crate::app_state::PeerChain,
    /// The transport that carried it.
    pub transport: Transport,
}

/// The transport a device request came over: some attestations are not offered on every one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transport {
    /// The REST API over HTTPS.
    Https,
    /// MQTT 3.1.1 over TLS, where DPS does not offer TPM attestation ("DPS does not currently
    /// support devices using TPM attestation mechanism over the MQTT protocol", service
    /// documentation "Communicate with DPS using the MQTT protocol").
    Mqtt,
}

/// What authenticators may consult besides the request.
pub(crate) struct AuthContext<'a> {
    /// This service's id scope (SAS scopes name it).
    pub id_scope: &'a str,
    /// Outstanding TPM challenges.
    pub challenges: &'a tpm::Challenges,
}

/// The attestation-specific part of a successful authentication, for the registration state.
#[derive(Debug)]
pub(crate) enum Section {
    /// TPM: the blob whose identity key the device proved it holds.
    Tpm {
        /// base64 authenticationKey.
        authentication_key_b64: String,
        /// The identity key it delivered (the device's hub key).
        identity_key: tpm::IdentityKey,
    },
    /// X.509: details of the leaf and of the group's signing certificate.
    X509 {
        /// certificateInfo of the leaf.
        leaf_info: Value,
        /// certificateInfo of the enrollment group's certificate.
        signing_info: Option<Value>,
    },
    /// Symmetric key: nothing beyond the group id.
    Symmetric,
}

/// Which enrollment let the device in.
#[derive(Debug)]
pub(crate) enum Authenticated {
    /// An individual enrollment.
    Individual(Box<IndividualEnrollment>, Section),
    /// An enrollment group.
    Group(Box<EnrollmentGroup>, Section),
}

/// Why a device was not let in.
#[derive(Debug)]
pub(crate) enum AuthError {
    /// Refused credentials, with the reason (logged, never answered).
    Refused(String),
    /// The service's TPM challenge (answered as a 401 carrying it).
    Challenge(TpmChallenge),
    /// A malformed request the service answers with 400.
    BadRequest(String),
    /// A stored enrollment the emulator cannot use.
    Internal(&'static str),
    /// The store failed.
    Store(EmulatorError),
}

impl AuthError {
    pub(crate) fn refused(reason: impl std::fmt::Display) -> Self {
        Self::Refused(reason.to_string())
    }
}

impl From<EmulatorError> for AuthError {
    fn from(e: EmulatorError) -> Self {
        Self::Store(e)
    }
}

/// One attestation mechanism's checks.
pub(crate) trait Authenticator: Send + Sync {
    /// The kind of enrollment it checks.
    fn kind(&self) -> AttestationKind;

    /// Checks the request against an individual enrollment of this kind.
    fn individual(
        &self,
        ctx: &AuthContext<'_>,
        request: &DeviceRequest,
        enrollment: &IndividualEnrollment,
    ) -> Result<Section, AuthError>;

    /// Whether the request carries this mechanism's group credentials (then group lookup is
    /// this authenticator's, and no other's).
    fn presents_group_credentials(&self, request: &DeviceRequest) -> bool;

    /// Finds the group of this kind (`groups` are all of this kind) that accepts the request:
    /// its index and the section.
    fn group(
        &self,
        ctx: &AuthContext<'_>,
        request: &DeviceRequest,
        groups: &[EnrollmentGroup],
    ) -> Result<(usize, Section), AuthError>;
}

/// Every authenticator, in the order groups are tried: a SAS in the Authorization header
/// before a TLS client certificate (TPM has no groups).
fn authenticators() -> [&'static dyn Authenticator; 3] {
    [
        &symmetric_key::SymmetricKeyAuthenticator,
        &x509::X509Authenticator,
        &tpm::TpmAuthenticator,
    ]
}

/// Authenticates a device request: by its individual enrollment if it has one, else by the
/// group its credentials lead to.
pub(crate) fn authenticate(
    ctx: &AuthContext<'_>,
    store: &Store,
    request: &DeviceRequest,
) -> Result<Authenticated, AuthError> {
    let reg = request.registration_id.as_str();
    if let Some(e) = store.individual(reg)? {
        let kind = e.attestation.attestation_kind().ok_or(AuthError::Internal(
            "the enrollment has an unknown attestation",
        ))?;
        if kind == AttestationKind::Tpm && request.transport == Transport::Mqtt {
            // Refused before the TPM authenticator runs, so no challenge is ever issued over
            // MQTT (nor a SAS from an HTTPS challenge accepted).
            return Err(AuthError::refused(
                "TPM attestation is not supported over MQTT",
            ));
        }
        let auth = authenticators()
            .into_iter()
            .find(|a| a.kind() == kind)
            .ok_or(AuthError::Internal(
                "the enrollment has an unknown attestation",
            ))?;
        let section = auth.individual(ctx, request, &e)?;
        return Ok(Authenticated::Individual(Box::new(e), section));
    }
    let Some(auth) = authenticators()
        .into_iter()
        .filter(|a| a.kind() != AttestationKind::Tpm || request.transport != Transport::Mqtt)
        .find(|a| a.presents_group_credentials(request))
    else {
        return Err(AuthError::refused(
            "no credentials: send a SharedAccessSignature, a TPM endorsement key or a client certificate",
        ));
    };
    let groups: Vec<EnrollmentGroup> = store
        .groups()?
        .into_iter()
        .filter(|g| g.attestation.attestation_kind() == Some(auth.kind()))
        .collect();
    let (idx, section) = auth.group(ctx, request, &groups)?;
    let Some(g) = groups.into_iter().nth(idx) else {
        return Err(AuthError::Internal("the accepting group vanished"));
    };
    Ok(Authenticated::Group(Box::new(g), section))
}
