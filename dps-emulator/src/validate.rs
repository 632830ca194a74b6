//! Validation of enrollments before they are stored: every problem becomes a typed error naming
//! the field, so the service API can answer 400 with a useful message.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;

use crate::config::check_hub_host_name;
use crate::error::{EmulatorError, Result};
use crate::model::{
    AllocationPolicy, AttestationMechanism, CustomAllocationDefinition, EnrollmentCommon,
    EnrollmentGroup, IndividualEnrollment,
};
use crate::pki::parse_certificates;
use dps_proto::AttestationKind;

fn invalid(msg: impl Into<String>) -> EmulatorError {
    EmulatorError::InvalidEnrollment(msg.into())
}

/// DPS ids: 1..=128 characters of alphanumerics and `-._:` (dps-proto's rule, the client's too).
pub use dps_proto::is_valid_id;

fn check_key(name: &str, key: Option<&str>) -> Result<()> {
    if let Some(k) = key {
        let raw = B64
            .decode(k.trim())
            .map_err(|_| invalid(format!("{name} is not valid base64")))?;
        if !(16..=64).contains(&raw.len()) {
            return Err(invalid(format!("{name} must be 16 to 64 bytes")));
        }
    }
    Ok(())
}

fn check_attestation(a: &AttestationMechanism, group: bool) -> Result<()> {
    match a.attestation_kind() {
        Some(AttestationKind::Tpm) => {
            if group {
                return Err(invalid("enrollment groups do not support TPM attestation"));
            }
            let tpm = a
                .tpm
                .as_ref()
                .ok_or_else(|| invalid("attestation.tpm is required for type tpm"))?;
            let ek = B64
                .decode(tpm.endorsement_key.trim())
                .map_err(|_| invalid("attestation.tpm.endorsementKey is not valid base64"))?;
            if ek.len() < 4 {
                return Err(invalid("attestation.tpm.endorsementKey is too short"));
            }
        }
        Some(AttestationKind::X509) => {
            let x = a
                .x509
                .as_ref()
                .ok_or_else(|| invalid("attestation.x509 is required for type x509"))?;
            if x.ca_references.is_some() {
                return Err(invalid(
                    "caReferences are not supported by the emulator: put the CA in signingCertificates",
                ));
            }
            let (field, certs) = if group {
                ("signingCertificates", x.signing_certificates.as_ref())
            } else {
                ("clientCertificates", x.client_certificates.as_ref())
            };
            let texts = certs.map(|c| c.texts()).unwrap_or_default();
            if texts.is_empty() {
                return Err(invalid(format!(
                    "attestation.x509.{field}.primary.certificate is required"
                )));
            }
            for t in texts {
                parse_certificates(t)
                    .map_err(|e| invalid(format!("attestation.x509.{field}: {e}")))?;
            }
        }
        Some(AttestationKind::SymmetricKey) => {
            if let Some(sk) = &a.symmetric_key {
                check_key(
                    "attestation.symmetricKey.primaryKey",
                    sk.primary_key.as_deref(),
                )?;
                check_key(
                    "attestation.symmetricKey.secondaryKey",
                    sk.secondary_key.as_deref(),
                )?;
            }
        }
        _ => {
            return Err(invalid(format!(
                "attestation.type {:?} is not one of tpm, x509, symmetricKey",
                a.kind
            )))
        }
    }
    Ok(())
}

/// Every hub an enrollment names must be a host name (see [`check_hub_host_name`]).
fn check_hubs(c: &EnrollmentCommon) -> Result<()> {
    for h in c.iot_hubs.iter().chain(&c.iot_hub_host_name) {
        check_hub_host_name(h).map_err(invalid)?;
    }
    if let Some(p) = &c.certificate_issuance_policy {
        // A bound keeps the issued notAfter representable and the dev certificates short-lived.
        if !(1..=crate::issuance::MAX_VALIDITY_DAYS).contains(&p.validity_days) {
            return Err(invalid(format!(
                "certificateIssuancePolicy.validityDays must be 1 to {}",
                crate::issuance::MAX_VALIDITY_DAYS
            )));
        }
    }
    Ok(())
}

/// A `custom` enrollment needs its webhook (`customAllocationDefinition {webhookUrl,
/// apiVersion}`, both required in the service model), and a definition given is checked
/// whatever the policy. The webhook is `https` as the service calls it ("DPS sends a POST
/// request to your Azure Function on the following endpoint: `https://...`", "Understand
/// custom allocation policies"); a local emulator also allows `http` to a loopback host
/// (`127.0.0.0/8`, `::1`, `localhost`), where a test or development webhook runs without a
/// certificate. Nothing leaves the machine in clear that way.
fn check_custom_allocation(c: &EnrollmentCommon) -> Result<()> {
    let def = match (&c.custom_allocation_definition, c.allocation_policy) {
        (Some(d), _) => d,
        (None, Some(AllocationPolicy::Custom)) => {
            return Err(invalid(
                "customAllocationDefinition (webhookUrl, apiVersion) is required when allocationPolicy is custom",
            ))
        }
        (None, _) => return Ok(()),
    };
    check_webhook_url(def)?;
    let v = &def.api_version;
    if v.is_empty()
        || v.len() > 32
        || !v
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    {
        return Err(invalid(
            "customAllocationDefinition.apiVersion must be an API version such as 2021-10-01",
        ));
    }
    Ok(())
}

fn check_webhook_url(def: &CustomAllocationDefinition) -> Result<()> {
    const FIELD: &str = "customAllocationDefinition.webhookUrl";
    let url = reqwest::Url::parse(&def.webhook_url)
        .map_err(|e| invalid(format!("{FIELD} is not an absolute URL: {e}")))?;
    let loopback = match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => return Err(invalid(format!("{FIELD} has no host"))),
    };
    match url.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        "http" => Err(invalid(format!(
            "{FIELD} must be https (http is accepted only to a loopback host such as 127.0.0.1)"
        ))),
        other => Err(invalid(format!(
            "{FIELD} must be an https URL, not {}",
            other.escape_debug()
        ))),
    }
}

/// Checks an individual enrollment.
pub fn individual(e: &IndividualEnrollment) -> Result<()> {
    if !is_valid_id(&e.registration_id) {
        return Err(invalid(
            "registrationId must be 1-128 characters of a-z A-Z 0-9 - . _ :",
        ));
    }
    if let Some(d) = &e.device_id {
        if !is_valid_id(d) {
            return Err(invalid(
                "deviceId must be 1-128 characters of a-z A-Z 0-9 - . _ :",
            ));
        }
    }
    check_hubs(&e.common)?;
    check_custom_allocation(&e.common)?;
    check_attestation(&e.attestation, false)
}

/// Checks an enrollment group.
pub fn group(g: &EnrollmentGroup) -> Result<()> {
    if !is_valid_id(&g.enrollment_group_id) {
        return Err(invalid(
            "enrollmentGroupId must be 1-128 characters of a-z A-Z 0-9 - . _ :",
        ));
    }
    check_hubs(&g.common)?;
    check_custom_allocation(&g.common)?;
    check_attestation(&g.attestation, true)
}
