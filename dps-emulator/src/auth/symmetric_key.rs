//! Symmetric-key attestation: a SAS signed with the enrollment's key, or for a group member
//! with the key derived from the group key (dps-proto's derivation, the client's too).

use dps_proto::group_key::derive_device_key_b64;
use dps_proto::AttestationKind;

use super::sas::checked_token;
use super::{AuthContext, AuthError, Authenticator, DeviceRequest, Section};
use crate::model::{EnrollmentGroup, IndividualEnrollment, SymmetricKeyAttestation};

/// Checks SAS tokens against symmetric keys.
pub(crate) struct SymmetricKeyAuthenticator;

/// The primary and secondary keys present.
fn keys(section: Option<&SymmetricKeyAttestation>) -> impl Iterator<Item = String> {
    let keys = section.cloned().unwrap_or_default();
    [keys.primary_key, keys.secondary_key].into_iter().flatten()
}

impl Authenticator for SymmetricKeyAuthenticator {
    fn kind(&self) -> AttestationKind {
        AttestationKind::SymmetricKey
    }

    fn individual(
        &self,
        ctx: &AuthContext<'_>,
        request: &DeviceRequest,
        enrollment: &IndividualEnrollment,
    ) -> Result<Section, AuthError> {
        let token = checked_token(ctx, request)?;
        if keys(enrollment.attestation.symmetric_key.as_ref())
            .any(|k| token.verify_signature_b64(&k).is_ok())
        {
            Ok(Section::Symmetric)
        } else {
            Err(AuthError::refused("the token's signature does not verify"))
        }
    }

    fn presents_group_credentials(&self, request: &DeviceRequest) -> bool {
        request.authorization.is_some()
    }

    fn group(
        &self,
        ctx: &AuthContext<'_>,
        request: &DeviceRequest,
        groups: &[EnrollmentGroup],
    ) -> Result<(usize, Section), AuthError> {
        let token = checked_token(ctx, request)?;
        let reg = request.registration_id.as_str();
        groups
            .iter()
            .position(|g| {
                keys(g.attestation.symmetric_key.as_ref())
                    .filter_map(|k| derive_device_key_b64(&k, reg).ok())
                    .any(|k| token.verify_signature_b64(&k).is_ok())
            })
            .map(|idx| (idx, Section::Symmetric))
            .ok_or_else(|| {
                AuthError::refused("no enrollment accepts this registration id and signature")
            })
    }
}
