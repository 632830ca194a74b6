//! The SAS checks the device API makes before any key is tried.

use dps_proto::sas::{dps_resource, SasToken};

use super::{AuthContext, AuthError, DeviceRequest};
use crate::timeutil::unix_now;

/// The request's token, parsed, with its scope (this id scope and the path's registration id)
/// and expiry checked. The key name is not checked: DPS accepts any `skn` on device tokens.
pub(crate) fn checked_token(
    ctx: &AuthContext<'_>,
    request: &DeviceRequest,
) -> Result<SasToken, AuthError> {
    let header = request
        .authorization
        .as_deref()
        .ok_or_else(|| AuthError::refused("a SharedAccessSignature is required"))?;
    let token = SasToken::parse(header).map_err(AuthError::refused)?;
    let scope = dps_resource(ctx.id_scope, &request.registration_id);
    token
        .check_claims(Some(&scope), None, unix_now())
        .map_err(AuthError::refused)?;
    Ok(token)
}
