//! `dps-emulator list`: enrollments, groups and registration records, keys left out.

use anyhow::Result;
use dps_emulator::model::AttestationMechanism;
use std::path::Path;

/// Listing must not print keys.
fn without_keys(a: &mut AttestationMechanism) {
    if let Some(s) = a.symmetric_key.as_mut() {
        s.primary_key = None;
        s.secondary_key = None;
    }
}

pub(crate) fn run(state: &Path, json: bool) -> Result<()> {
    let store = dps_emulator::open_store(state)?;
    let mut individuals = store.individuals()?;
    let mut groups = store.groups()?;
    individuals
        .iter_mut()
        .for_each(|e| without_keys(&mut e.attestation));
    groups
        .iter_mut()
        .for_each(|g| without_keys(&mut g.attestation));
    let regs = store.registrations()?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "enrollments": individuals, "enrollmentGroups": groups, "registrations": regs
            }))?
        );
        return Ok(());
    }
    println!("enrollments:");
    for e in &individuals {
        println!(
            "  {} {} {:?}",
            e.registration_id, e.attestation.kind, e.common.provisioning_status
        );
    }
    println!("enrollment groups:");
    for g in &groups {
        println!(
            "  {} {} {:?}",
            g.enrollment_group_id, g.attestation.kind, g.common.provisioning_status
        );
    }
    println!("registrations:");
    for r in &regs {
        println!(
            "  {} {} {} {}",
            r.registration_id,
            r.status,
            r.assigned_hub.as_deref().unwrap_or("-"),
            r.device_id.as_deref().unwrap_or("-")
        );
    }
    Ok(())
}
