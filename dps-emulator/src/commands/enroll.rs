//! `dps-emulator enroll` and `dps-emulator group`: create or replace enrollments.

use anyhow::{bail, Context, Result};
use dps_emulator::enroll_files::{EnrollmentInfo, EnrollmentInfoExt};
use dps_emulator::model::{AttestationMechanism, EnrollmentGroup, IndividualEnrollment};
use std::path::Path;

use super::{common, EnrollArgs, EnrollKind, GroupArgs, GroupKind};

fn read_pem(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

/// The primary key of a symmetric-key mechanism, if it has one.
fn primary_key(a: &AttestationMechanism) -> Option<&str> {
    a.symmetric_key.as_ref()?.primary_key.as_deref()
}

fn print_individual(e: &IndividualEnrollment, show_key: bool) {
    println!(
        "enrolled {} ({}, {:?})",
        e.registration_id, e.attestation.kind, e.common.provisioning_status
    );
    if let Some(k) = primary_key(&e.attestation).filter(|_| show_key) {
        println!("primary key: {k}");
    }
}

fn print_group(g: &EnrollmentGroup, show_key: bool) {
    println!(
        "enrollment group {} ({})",
        g.enrollment_group_id, g.attestation.kind
    );
    if let Some(k) = primary_key(&g.attestation).filter(|_| show_key) {
        println!("group key: {k}");
    }
}

pub(crate) fn enroll(args: EnrollArgs) -> Result<()> {
    match (args.kind, args.from) {
        (None, Some(dir)) => {
            let store = dps_emulator::open_store(&args.state.state)?;
            let info = EnrollmentInfo::read_dir(&dir)?;
            let c = common(&args.common)?;
            if let Some(gid) = args.group {
                let mut g = info.group(&gid)?;
                g.common = c;
                print_group(&store.create_group(g)?, false);
            } else {
                let mut e = info.individual();
                e.common = c;
                print_individual(&store.create_individual(e)?, false);
            }
            Ok(())
        }
        (Some(kind), None) => {
            // A key the store generates (none given) is shown once.
            let (state, c, registration_id, attestation, generated) = match kind {
                EnrollKind::Tpm {
                    registration_id,
                    endorsement_key,
                    state,
                    common: c,
                } => (
                    state,
                    c,
                    registration_id,
                    AttestationMechanism::tpm(endorsement_key),
                    false,
                ),
                EnrollKind::X509 {
                    registration_id,
                    cert,
                    state,
                    common: c,
                } => (
                    state,
                    c,
                    registration_id,
                    AttestationMechanism::x509_client(read_pem(&cert)?),
                    false,
                ),
                EnrollKind::Symmetric {
                    registration_id,
                    primary_key,
                    state,
                    common: c,
                } => (
                    state,
                    c,
                    registration_id,
                    AttestationMechanism::symmetric_key(primary_key.clone()),
                    primary_key.is_none(),
                ),
            };
            let store = dps_emulator::open_store(&state.state)?;
            let mut e = IndividualEnrollment::new(registration_id, attestation);
            e.common = common(&c)?;
            print_individual(&store.create_individual(e)?, generated);
            Ok(())
        }
        (None, None) => bail!("say what to enroll: tpm, x509, symmetric, or --from DIR"),
        (Some(_), Some(_)) => bail!("--from cannot be combined with a kind"),
    }
}

pub(crate) fn group(args: GroupArgs) -> Result<()> {
    let (state, c, group_id, attestation, generated) = match args.kind {
        GroupKind::X509 {
            group_id,
            ca_cert,
            state,
            common: c,
        } => (
            state,
            c,
            group_id,
            AttestationMechanism::x509_signing(read_pem(&ca_cert)?),
            false,
        ),
        GroupKind::Symmetric {
            group_id,
            primary_key,
            state,
            common: c,
        } => (
            state,
            c,
            group_id,
            AttestationMechanism::symmetric_key(primary_key.clone()),
            primary_key.is_none(),
        ),
    };
    let store = dps_emulator::open_store(&state.state)?;
    let mut g = EnrollmentGroup::new(group_id, attestation);
    g.common = common(&c)?;
    print_group(&store.create_group(g)?, generated);
    Ok(())
}
