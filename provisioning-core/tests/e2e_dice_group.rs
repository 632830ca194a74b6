//! X.509 group enrollment of the DICE plugin's chain (TLS leaf <- CDI <- DeviceID <- dev root
//! CA) against the in-process emulator: the group is created from the files
//! `hsmkit enroll-info --out` writes, read back by the emulator's own reader, exactly as a user
//! would enroll a fleet under its root CA.

#[path = "support/e2e.rs"]
mod helpers;

use der::Decode;
use dps_emulator::enroll_files::{EnrollmentInfo, EnrollmentInfoExt};
use helpers::*;
use provisioning_core::dps::{register, Attestation, DpsError};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

/// open-dice's OpenDiceInput extension, critical in the open-dice profile.
const OPEN_DICE_INPUT: &str = "1.3.6.1.4.1.11129.2.1.24";

/// Runs `hsmkit enroll-info --plugin dice --out <state>/enroll` with the built dice plugin and
/// `settings` (`--set key=value`), and reads the files back as the emulator does.
fn enroll_info(state: &Path, settings: &[&str]) -> EnrollmentInfo {
    // A private plugins folder: the loader refuses folders other users can write.
    let plugins = tempfile::tempdir().unwrap();
    std::fs::set_permissions(plugins.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let built = bundled_plugin("dice");
    std::fs::copy(&built, plugins.path().join(built.file_name().unwrap())).unwrap();
    let out = state.join("enroll");
    let mut args = vec![
        "--plugin-dir".to_string(),
        plugins.path().display().to_string(),
        "--state-dir".to_string(),
        state.display().to_string(),
        "enroll-info".to_string(),
        "--plugin".to_string(),
        "dice".to_string(),
        "--out".to_string(),
        out.display().to_string(),
    ];
    for s in settings {
        args.push("--set".into());
        args.push((*s).to_string());
    }
    let output = Command::new(env!("CARGO_BIN_EXE_hsmkit"))
        .args(&args)
        .env_remove("HSMKIT_CONFIG")
        .env_remove("HSMKIT_PLUGIN_DIR")
        .env_remove("HSMKIT_STATE_DIR")
        .output()
        .expect("run hsmkit");
    assert!(
        output.status.success(),
        "hsmkit enroll-info failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        out.join("root-ca.pem").is_file(),
        "enroll-info wrote no root-ca.pem"
    );
    EnrollmentInfo::read_dir(&out).expect("the emulator reads the enroll-info files")
}

/// A dice plugin instance on `state` (the UDS and root CA key enroll-info created there).
fn dice_device(
    state: &Path,
    settings: &[(&str, &str)],
) -> std::sync::Arc<provisioning_core::plugin::PluginInstance> {
    let mut all = vec![("state_dir", state.display().to_string())];
    all.extend(settings.iter().map(|(k, v)| (*k, v.to_string())));
    instance("dice", &all)
}

/// Criticality of OpenDiceInput in the chain's CDI certificate (the second one).
fn cdi_extension_critical(device: &provisioning_core::plugin::PluginInstance) -> Option<bool> {
    let pem = device.x509().unwrap().certificate_chain_pem().unwrap();
    let chain = x509_cert::Certificate::load_pem_chain(pem.as_bytes()).expect("PEM chain");
    assert_eq!(chain.len(), 4, "leaf, CDI, DeviceID, root CA");
    let der = der::Encode::to_der(&chain[1]).unwrap();
    let cdi = x509_cert::Certificate::from_der(&der).unwrap();
    cdi.tbs_certificate
        .extensions
        .unwrap_or_default()
        .iter()
        .find(|e| e.extn_id.to_string() == OPEN_DICE_INPUT)
        .map(|e| e.critical)
}

#[tokio::test]
async fn dice_chain_provisions_through_a_group_on_its_dev_root_ca() {
    let env = emulator().await;
    let state = tempfile::tempdir().unwrap();
    let info = enroll_info(state.path(), &[]);
    let g = info.group("dice-fleet").expect("an X.509 group");
    env.emu.enrollments().create_group(g).expect("group stored");

    let device = dice_device(state.path(), &[]);
    // The default (open-dice profile) chain: the case plain OpenSSL refuses.
    assert_eq!(cdi_extension_critical(&device), Some(true));
    let r = register(&dps_config(&env.emu), device, Attestation::X509, &|_| {})
        .await
        .expect("group X.509 registration with the critical DICE extension");
    assert_eq!(r.registration_id, info.registration_id());
    assert_eq!(r.device_id, info.registration_id());
    assert_eq!(r.status, "assigned");
    assert!(env.emu.hubs().contains(&r.assigned_hub));
    single_record(&env.emu, info.registration_id());
}

#[tokio::test]
async fn non_critical_cdi_extension_provisions_through_the_same_group() {
    let env = emulator().await;
    let state = tempfile::tempdir().unwrap();
    let info = enroll_info(state.path(), &["cdi_extension_critical=false"]);
    env.emu
        .enrollments()
        .create_group(info.group("dice-fleet").unwrap())
        .expect("group stored");
    let device = dice_device(state.path(), &[("cdi_extension_critical", "false")]);
    assert_eq!(cdi_extension_critical(&device), Some(false));
    let r = register(&dps_config(&env.emu), device, Attestation::X509, &|_| {})
        .await
        .expect("group X.509 registration with a non-critical DICE extension");
    assert_eq!(r.registration_id, info.registration_id());
    single_record(&env.emu, info.registration_id());
}

#[tokio::test]
async fn chain_from_another_root_ca_is_refused() {
    let env = emulator().await;
    let enrolled = tempfile::tempdir().unwrap();
    let info = enroll_info(enrolled.path(), &[]);
    env.emu
        .enrollments()
        .create_group(info.group("dice-fleet").unwrap())
        .expect("group stored");

    // Another device folder: its own UDS and its own development root CA.
    let stranger_state = tempfile::tempdir().unwrap();
    let stranger = dice_device(stranger_state.path(), &[]);
    let stranger_pem = stranger.x509().unwrap().certificate_chain_pem().unwrap();
    let enrolled_root = match &info {
        EnrollmentInfo::X509 {
            root_ca_pem: Some(root),
            ..
        } => root.trim().to_string(),
        other => panic!("not an X.509 enrollment with a root CA: {other:?}"),
    };
    assert!(
        !stranger_pem.contains(&enrolled_root),
        "the second device must have another root CA"
    );

    let e = register(&dps_config(&env.emu), stranger, Attestation::X509, &|_| {})
        .await
        .unwrap_err();
    match &e {
        // DPS does not say why a credential was refused (no enumeration of enrollments);
        // the emulator logs the reason under the tracking id instead.
        DpsError::Unauthorized { message, .. } => assert_eq!(message, "Unauthorized", "{e}"),
        other => panic!("expected Unauthorized, got {other}"),
    }
    assert!(
        env.emu.registration_records().unwrap().is_empty(),
        "nothing recorded for a refused device"
    );
}
