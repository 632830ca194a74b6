//! Hub allocation: which of the emulator's hubs a device lands on.

use sha2::{Digest, Sha256};

use crate::model::{AllocationPolicy, EnrollmentCommon};

/// `errorCode` of a registration no hub could be chosen for (the enrollment's or the webhook's
/// hub is not linked, or there is none).
pub const NO_HUB: u32 = 400208;

/// Why a device could not be given a hub (registrationState.errorCode / errorMessage).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllocationFailure {
    /// DPS error code (400208: no hub could be chosen).
    pub code: u32,
    /// What went wrong.
    pub message: String,
}

/// Picks a hub for `registration_id` under `enrollment`'s policy among `served` hubs.
/// The hash is SHA-256 of the registration id, so a device keeps its hub across restarts.
pub fn allocate(
    enrollment: &EnrollmentCommon,
    registration_id: &str,
    served: &[String],
) -> Result<String, AllocationFailure> {
    let candidates: Vec<String> = if !enrollment.iot_hubs.is_empty() {
        enrollment.iot_hubs.clone()
    } else if let Some(h) = &enrollment.iot_hub_host_name {
        vec![h.clone()]
    } else {
        served.to_vec()
    };
    if candidates.is_empty() {
        return Err(AllocationFailure {
            code: NO_HUB,
            message: "no IoT hub is linked to this enrollment or the emulator".into(),
        });
    }
    if let Some(unknown) = candidates.iter().find(|c| !served.contains(c)) {
        return Err(AllocationFailure {
            code: NO_HUB,
            message: format!("IoT hub {unknown} is not linked to this provisioning service"),
        });
    }
    let index = match enrollment.allocation_policy.unwrap_or_default() {
        AllocationPolicy::Static => 0,
        // Custom enrollments are allocated by their webhook (crate::custom_allocation) before
        // this is reached; hashing is the fallback for a caller that does not call it.
        AllocationPolicy::Hashed | AllocationPolicy::GeoLatency | AllocationPolicy::Custom => {
            let d = Sha256::digest(registration_id.as_bytes());
            let n = u64::from_be_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]]);
            (n % candidates.len() as u64) as usize
        }
    };
    Ok(candidates[index].clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hubs() -> Vec<String> {
        vec![
            "a.azure-devices.net".into(),
            "b.azure-devices.net".into(),
            "c.azure-devices.net".into(),
        ]
    }

    #[test]
    fn hashed_spreads_and_is_stable() {
        let e = EnrollmentCommon::default();
        let mut seen = std::collections::HashSet::new();
        for i in 0..60 {
            let id = format!("dev-{i}");
            let h = allocate(&e, &id, &hubs()).unwrap();
            assert_eq!(h, allocate(&e, &id, &hubs()).unwrap());
            seen.insert(h);
        }
        assert_eq!(seen.len(), 3, "60 ids should reach all 3 hubs");
    }

    #[test]
    fn static_takes_the_enrollments_hub_and_unknown_hubs_fail() {
        let e = EnrollmentCommon {
            allocation_policy: Some(AllocationPolicy::Static),
            iot_hubs: vec!["c.azure-devices.net".into()],
            ..Default::default()
        };
        assert_eq!(allocate(&e, "x", &hubs()).unwrap(), "c.azure-devices.net");
        let bad = EnrollmentCommon {
            iot_hubs: vec!["zz".into()],
            ..Default::default()
        };
        assert_eq!(allocate(&bad, "x", &hubs()).unwrap_err().code, 400208);
        assert_eq!(
            allocate(&EnrollmentCommon::default(), "x", &[])
                .unwrap_err()
                .code,
            400208
        );
    }
}
