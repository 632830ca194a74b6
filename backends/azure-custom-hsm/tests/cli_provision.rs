//! `hsmkit provision` through the adapter hosting the project's C custom-HSM library, against
//! the DPS emulator over TLS: TPM (individual), X.509 (individual, TLS signatures made with the
//! library's key), symmetric key (individual and group).

mod support;

use base64::Engine as _;
use dps_emulator::enroll_files::{EnrollmentInfo, EnrollmentInfoExt};
use dps_emulator::model::EnrollmentGroup;
use dps_emulator::{BackgroundEmulator, Emulator, EmulatorConfig};
use serde_json::{json, Value};
use std::process::Command;
use support::*;

/// `hsmkit` with the device's folders, the adapter selected and `library=` set.
fn hsmkit(
    setup: &Setup,
    common_name: &str,
    command: &str,
    args: &[&str],
) -> (bool, String, String) {
    let mut cmd = Command::new(built_exe("hsmkit"));
    setup.env(&mut cmd, common_name);
    cmd.arg("--plugin-dir")
        .arg(setup.plugins.path())
        .arg("--state-dir")
        .arg(setup.state())
        .arg(command)
        .args(["--plugin", "azure-custom-hsm", "--set"])
        .arg(setup.library_setting())
        .args(args);
    run(&mut cmd)
}

fn emulator(setup: &Setup) -> BackgroundEmulator {
    Emulator::start_in_background(EmulatorConfig::new(setup.root.path().join("emu")))
        .expect("the emulator starts")
}

/// `enroll-info --out` for `attestation` (plus `extra`), read back.
fn enroll_info(setup: &Setup, cn: &str, attestation: &str, extra: &[&str]) -> EnrollmentInfo {
    let out = setup.root.path().join(format!("enroll-{attestation}"));
    let out_s = out.to_str().expect("UTF-8 path");
    let mut args = vec!["--attestation", attestation, "--out", out_s];
    args.extend_from_slice(extra);
    let (ok, _, err) = hsmkit(setup, cn, "enroll-info", &args);
    assert!(ok, "enroll-info --attestation {attestation}: {err}");
    EnrollmentInfo::read_dir(&out).expect("enrollment files")
}

/// `provision --json` for `attestation`: the parsed result.
fn provision(
    setup: &Setup,
    emu: &BackgroundEmulator,
    cn: &str,
    attestation: &str,
    extra: &[&str],
) -> Value {
    let endpoint = emu.endpoint();
    let ca = emu.ca_cert_path().to_str().expect("UTF-8 path").to_string();
    let mut args = vec![
        "--attestation",
        attestation,
        "--id-scope",
        emu.id_scope(),
        "--endpoint",
        &endpoint,
        "--trust-ca",
        &ca,
        "--json",
    ];
    args.extend_from_slice(extra);
    let (ok, stdout, stderr) = hsmkit(setup, cn, "provision", &args);
    assert!(ok, "provision --attestation {attestation}: {stderr}");
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

#[test]
fn tpm_individual_provisions_through_the_custom_hsm_library() {
    let setup = Setup::good();
    let emu = emulator(&setup);
    let info = enroll_info(&setup, "unused", "tpm", &[]);
    emu.enrollments()
        .create_individual(info.individual())
        .expect("enrolled");
    let v = provision(&setup, &emu, "unused", "tpm", &[]);
    assert_eq!(v["status"], "assigned", "{v}");
    assert_eq!(v["attestation"], "tpm", "{v}");
    assert_eq!(v["registrationId"], info.registration_id());
    // The identity key is the library's: a hub token is signed through it.
    let (ok, stdout, stderr) = hsmkit(&setup, "unused", "hub-token", &["--json"]);
    assert!(ok, "hub-token: {stderr}");
    assert!(stdout.contains("SharedAccessSignature sr="), "{stdout}");
    // The TPM's state is the library's own, under its folder.
    assert!(setup.root.path().join("library-state/tpm").is_dir());
    emu.shutdown();
}

#[test]
fn x509_individual_provisions_with_the_library_key() {
    let setup = Setup::good();
    let emu = emulator(&setup);
    let cn = "custom-hsm-x509-e2e";
    let info = enroll_info(&setup, cn, "x509", &[]);
    assert_eq!(info.registration_id(), cn);
    emu.enrollments()
        .create_individual(info.individual())
        .expect("enrolled");
    let v = provision(&setup, &emu, cn, "x509", &[]);
    assert_eq!(v["status"], "assigned", "{v}");
    assert_eq!(v["attestation"], "x509", "{v}");
    assert_eq!(v["registrationId"], cn);
    // The key and certificate are the library's file.
    let pem = std::fs::read_to_string(setup.root.path().join("library-state/x509.pem"))
        .expect("the library wrote its identity");
    assert!(pem.contains("PRIVATE KEY") && pem.contains("CERTIFICATE"));
    emu.shutdown();
}

#[test]
fn symmetric_individual_provisions_with_the_key_enroll_info_imported() {
    let setup = Setup::good();
    let emu = emulator(&setup);
    let reg = "custom-hsm-sym-1";
    let info = enroll_info(
        &setup,
        "unused",
        "symmetric-key",
        &["--set", &format!("registration_id={reg}")],
    );
    assert_eq!(info.registration_id(), reg);
    emu.enrollments()
        .create_individual(info.individual())
        .expect("enrolled");
    let v = provision(
        &setup,
        &emu,
        "unused",
        "symmetricKey",
        &["--set", &format!("registration_id={reg}")],
    );
    assert_eq!(v["status"], "assigned", "{v}");
    assert_eq!(v["registrationId"], reg);
    // The key went into the library through set_symm_key_info.
    let stored = std::fs::read_to_string(setup.root.path().join("library-state/symmetric"))
        .expect("the library stored the key");
    assert!(stored.starts_with(&format!("{reg}\n")), "{stored}");
    emu.shutdown();
}

#[test]
fn symmetric_group_member_provisions_with_a_derived_key() {
    let setup = Setup::good();
    let emu = emulator(&setup);
    let group: EnrollmentGroup = serde_json::from_value(
        json!({"enrollmentGroupId": "custom-hsm-group", "attestation": {"type": "symmetricKey"}}),
    )
    .expect("group JSON");
    let group = emu.enrollments().create_group(group).expect("group stored");
    let group_key = group
        .attestation
        .symmetric_key
        .and_then(|k| k.primary_key)
        .expect("the emulator generates group keys");
    base64::engine::general_purpose::STANDARD
        .decode(&group_key)
        .expect("base64 group key");
    let reg = "custom-hsm-member-1";
    let set = format!("registration_id={reg}");
    enroll_info(
        &setup,
        "unused",
        "symmetric-key",
        &["--set", &set, "--group-key", &group_key],
    );
    let v = provision(&setup, &emu, "unused", "symmetricKey", &["--set", &set]);
    assert_eq!(v["status"], "assigned", "{v}");
    assert_eq!(v["registrationId"], reg);
    let records = emu.registration_records().expect("records");
    assert_eq!(records.len(), 1);
    emu.shutdown();
}
