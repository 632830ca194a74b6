//! End to end against the in-process DPS emulator over TLS, with the software plugins
//! (symmetric, tpm-sim, dice), and the errors a user gets for the usual mistakes.

#[path = "support/e2e.rs"]
mod helpers;

use base64::Engine;
use helpers::*;
use provisioning_core::dps::{register, Attestation, DpsError, ProgressEvent};
use provisioning_core::provisioning::{self, hub_sas_token, Outcome};
use serde_json::json;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

#[tokio::test]
async fn symmetric_individual_provisions_saves_reuses_and_signs_hub_tokens() {
    let env = emulator().await;
    let reg = "sym-device-1";
    let p = provision_symmetric_with_payload(&env, reg, dps_config).await;
    assert!(p
        .events
        .all()
        .iter()
        .any(|e| matches!(e, ProgressEvent::Assigned { .. })));

    // Saved 0600 and read back identically.
    let path = provisioning::record_path(p.state.path());
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert_eq!(
        provisioning::load(p.state.path()).unwrap(),
        Some(p.record.clone())
    );

    // A second run reuses the record without asking DPS (the emulator would record it).
    env.emu.faults().fail_next(1000);
    let (again, outcome) = provisioning::provision(
        &p.config,
        p.device.clone(),
        Attestation::SymmetricKey,
        p.state.path(),
        false,
        &|_| {},
    )
    .await
    .expect("reused");
    assert_eq!(outcome, Outcome::Reused);
    assert_eq!(again, p.record);
    env.emu.faults().clear();

    // --force asks again.
    let (_, outcome) = provisioning::provision(
        &p.config,
        p.device.clone(),
        Attestation::SymmetricKey,
        p.state.path(),
        true,
        &|_| {},
    )
    .await
    .expect("forced");
    assert_eq!(outcome, Outcome::Registered);
    single_record(&env.emu, reg);

    // The hub token verifies with the key, computed independently.
    let token = hub_sas_token(
        &p.device,
        Attestation::SymmetricKey,
        p.record.assigned_hub(),
        p.record.device_id(),
        Duration::from_secs(3600),
    )
    .unwrap();
    let sr = format!("{}%2fdevices%2f{}", p.record.assigned_hub(), reg);
    let se: u64 = token.rsplit("&se=").next().unwrap().parse().unwrap();
    let expected = hmac(&p.key, format!("{sr}\n{se}").as_bytes());
    let expected = provisioning_core::dps::sas::url_encode(&B64.encode(expected));
    assert_eq!(
        token,
        format!("SharedAccessSignature sr={sr}&sig={expected}&se={se}")
    );
    let x509 = hub_sas_token(
        &p.device,
        Attestation::X509,
        "h",
        "d",
        Duration::from_secs(1),
    );
    assert!(x509.unwrap_err().to_string().contains("certificate"));
}

#[tokio::test]
async fn symmetric_group_member_with_derived_key_and_api_versions() {
    let env = emulator().await;
    group_members_with_every_api_version(&env, "grp-1", "member", dps_config).await;
}

#[tokio::test]
async fn registration_id_override_is_used() {
    let env = emulator().await;
    let key = symmetric_enrollment(&env.emu, "override-id");
    let state = tempfile::tempdir().unwrap();
    let device = symmetric_device(state.path(), "plugin-id", &key);
    let mut config = dps_config(&env.emu);
    config.registration_id = Some("override-id".into());
    let r = register(&config, device, Attestation::SymmetricKey, &|_| {})
        .await
        .expect("registered");
    assert_eq!(r.registration_id, "override-id");
    single_record(&env.emu, "override-id");
}

#[tokio::test]
async fn tpm_sim_answers_the_challenge_and_signs_hub_tokens() {
    let env = emulator().await;
    let state = tempfile::tempdir().unwrap();
    let (device, reg) = tpm_sim_enrolled(&env, state.path());
    let events = Events::default();
    let r = register(
        &dps_config(&env.emu),
        device.clone(),
        Attestation::Tpm,
        &events.sink(),
    )
    .await
    .expect("TPM registration");
    assert_eq!(r.registration_id, reg);
    assert_eq!(r.attestation, Attestation::Tpm);
    assert!(events.all().contains(&ProgressEvent::TpmChallenge));
    single_record(&env.emu, &reg);
    let t1 = hub_sas_token(
        &device,
        Attestation::Tpm,
        &r.assigned_hub,
        &r.device_id,
        Duration::from_secs(60),
    )
    .unwrap();
    assert!(t1.starts_with(&format!(
        "SharedAccessSignature sr={}%2fdevices%2f{reg}&sig=",
        r.assigned_hub
    )));
    assert!(!t1.contains("skn="));
}

#[tokio::test]
async fn dice_x509_individual_over_mutual_tls_signed_in_the_plugin() {
    let env = emulator().await;
    // Individual: the leaf certificate enrolled.
    let state = tempfile::tempdir().unwrap();
    let device = instance(
        "dice",
        &[
            ("state_dir", state.path().display().to_string()),
            ("registration_id", "dice-individual".to_string()),
        ],
    );
    let chain = device.x509().unwrap().certificate_chain_pem().unwrap();
    let leaf = chain
        .split_inclusive("-----END CERTIFICATE-----")
        .next()
        .unwrap()
        .trim()
        .to_string();
    individual(
        &env.emu,
        json!({"registrationId": "dice-individual", "attestation": {"type": "x509", "x509": {"clientCertificates": {"primary": {"certificate": leaf}}}}}),
    );
    let r = register(&dps_config(&env.emu), device, Attestation::X509, &|_| {})
        .await
        .expect("X.509 individual registration");
    assert_eq!(r.device_id, "dice-individual");

    single_record(&env.emu, "dice-individual");
}

#[tokio::test]
async fn user_errors_say_what_to_do() {
    let env = emulator().await;
    let state = tempfile::tempdir().unwrap();

    // Not enrolled.
    let device = symmetric_device(state.path(), "nobody", &[9u8; 32]);
    let e = register(
        &dps_config(&env.emu),
        device.clone(),
        Attestation::SymmetricKey,
        &|_| {},
    )
    .await
    .unwrap_err();
    assert!(matches!(e, DpsError::Unauthorized { .. }), "{e}");
    assert!(e.to_string().contains("enrollment"), "{e}");

    // Wrong key.
    symmetric_enrollment(&env.emu, "wrong-key");
    let device = symmetric_device(state.path(), "wrong-key", &[7u8; 32]);
    let e = register(
        &dps_config(&env.emu),
        device,
        Attestation::SymmetricKey,
        &|_| {},
    )
    .await
    .unwrap_err();
    assert!(matches!(e, DpsError::Unauthorized { .. }), "{e}");

    // Disabled enrollment.
    let e = individual(
        &env.emu,
        json!({"registrationId": "off", "provisioningStatus": "disabled", "attestation": {"type": "symmetricKey"}}),
    );
    let key = B64
        .decode(e.attestation.symmetric_key.unwrap().primary_key.unwrap())
        .unwrap();
    let device = symmetric_device(state.path(), "off", &key);
    let e = register(
        &dps_config(&env.emu),
        device.clone(),
        Attestation::SymmetricKey,
        &|_| {},
    )
    .await
    .unwrap_err();
    assert!(matches!(e, DpsError::Disabled { .. }), "{e}");
    assert!(e.to_string().contains("enable it"), "{e}");

    // Untrusted server certificate.
    let mut config = dps_config(&env.emu);
    config.extra_trust_pem = None;
    config.trust_public_roots = true;
    let e = register(&config, device.clone(), Attestation::SymmetricKey, &|_| {})
        .await
        .unwrap_err();
    assert!(matches!(e, DpsError::TlsTrust { .. }), "{e}");
    assert!(e.to_string().contains("--trust-ca"), "{e}");

    // Wrong id scope.
    let mut config = dps_config(&env.emu);
    config.id_scope = "0ne99999999".into();
    let e = register(&config, device.clone(), Attestation::SymmetricKey, &|_| {})
        .await
        .unwrap_err();
    assert!(matches!(e, DpsError::NotFound { .. }), "{e}");

    // Nothing listening.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut config = dps_config(&env.emu);
    config.endpoint = format!("127.0.0.1:{port}");
    let e = register(&config, device.clone(), Attestation::SymmetricKey, &|_| {})
        .await
        .unwrap_err();
    assert!(matches!(e, DpsError::Unreachable { .. }), "{e}");

    // Plugin without the interface.
    let e = register(
        &dps_config(&env.emu),
        device.clone(),
        Attestation::Tpm,
        &|_| {},
    )
    .await
    .unwrap_err();
    assert!(matches!(e, DpsError::Plugin(_)), "{e}");

    // Bad settings.
    let mut config = dps_config(&env.emu);
    config.endpoint = "http://plain".into();
    let e = register(&config, device, Attestation::SymmetricKey, &|_| {})
        .await
        .unwrap_err();
    assert!(matches!(e, DpsError::Config { .. }), "{e}");
    assert_eq!(
        env.emu.registration_records().unwrap().len(),
        1,
        "only the disabled device was recorded"
    );
}
