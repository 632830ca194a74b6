//! Renewal of the operational certificate, and the hub connection with it, end to end against
//! the emulator (DPS and its emulated hubs over MQTT/TLS): symmetric, dice and tpm-sim devices
//! provisioned with certificate issuance connect to their hub with the issued chain (mutual
//! TLS, the handshake signed by the operational key in the plugin); `renew` re-registers with
//! a new CSR for a new key under the next label, the new chain works with the hub, and
//! provisioning goes on working. A renewal DPS refuses leaves the old record, key and chain as
//! they were; one that is not due sends nothing.
//!
//! The service's renewal path: "Repeat certificate issuance through DPS: The device starts a
//! new Device Provisioning Service (DPS) registration, uses its onboarding credential, and
//! submits a new certificate signing request (CSR)"
//! (<https://learn.microsoft.com/azure/iot-hub/concept-certificate-renewal>); and "The device
//! authenticates with IoT Hub by presenting its full certificate chain"
//! (<https://learn.microsoft.com/azure/iot-hub/concept-certificate-issuance>).

#[path = "support/e2e.rs"]
mod helpers;
#[path = "support/issuance.rs"]
mod issuance_helpers;

use base64::Engine;
use helpers::*;
use issuance_helpers::*;
use provisioning_core::dps::Attestation;
use provisioning_core::hub::{HubClient, HubError, HubOptions};
use provisioning_core::issuance::OPERATIONAL_KEY_LABEL;
use provisioning_core::plugin::{PluginErrorCode, PluginInstance};
use provisioning_core::provisioning::{
    self, provision_with_certificate, renew, Outcome, ProvisioningRecord, RenewError, RenewOutcome,
    RenewWhen,
};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

/// An emulator with its MQTT listener (DPS and the hubs) on a free port.
async fn hub_emulator() -> Env {
    emulator_with(|c| c.mqtt_listen = Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))).await
}

/// The emulated hub: its MQTT address, its CA only, short timeouts.
fn hub_options(env: &Env) -> HubOptions {
    HubOptions {
        endpoint: Some(format!(
            "127.0.0.1:{}",
            env.emu.mqtt_addr().expect("MQTT listener").port()
        )),
        extra_trust_pem: Some(env.emu.ca_cert_pem().as_bytes().to_vec()),
        trust_public_roots: false,
        connect_timeout: Duration::from_secs(10),
        operation_timeout: Duration::from_secs(10),
        ..HubOptions::default()
    }
}

/// The leaf of a recorded chain: its serial number and SubjectPublicKeyInfo (DER).
fn leaf_serial_and_key(record: &ProvisioningRecord) -> (Vec<u8>, Vec<u8>) {
    use der::{Decode, Encode};
    let chain = record
        .result
        .issued_certificate_chain
        .as_ref()
        .expect("an issued chain");
    let der = B64.decode(&chain[0]).unwrap();
    let cert = x509_cert::Certificate::from_der(&der).unwrap();
    (
        cert.tbs_certificate.serial_number.as_bytes().to_vec(),
        cert.tbs_certificate
            .subject_public_key_info
            .to_der()
            .unwrap(),
    )
}

/// Connects with the record's operational certificate, sends `body`, reads the twin.
async fn use_the_hub(
    env: &Env,
    record: &ProvisioningRecord,
    device: Arc<PluginInstance>,
    body: &str,
) {
    let hub = HubClient::connect(record, device, hub_options(env))
        .await
        .unwrap_or_else(|e| panic!("{body}: {e}"));
    hub.send(body.as_bytes().to_vec(), &[])
        .await
        .unwrap_or_else(|e| panic!("{body}: {e}"));
    hub.twin().await.unwrap_or_else(|e| panic!("{body}: {e}"));
    hub.close().await;
}

fn stored_bodies(env: &Env, device_id: &str) -> Vec<String> {
    env.emu
        .hub_registry()
        .messages(device_id, None)
        .expect("the device's messages")
        .into_iter()
        .map(|m| String::from_utf8_lossy(&m.body).into_owned())
        .collect()
}

/// The whole cycle for one device: provision with issuance, the hub with that certificate,
/// a forced renewal, the hub with the new one, a renewal not due, provisioning again.
async fn renewal_cycle(
    env: &Env,
    device: Arc<PluginInstance>,
    attestation: Attestation,
    what: &str,
) {
    let state = tempfile::tempdir().unwrap();
    let config = dps_config(&env.emu);
    let (first, outcome) = provision_with_certificate(
        &config,
        device.clone(),
        attestation,
        state.path(),
        false,
        OPERATIONAL_KEY_LABEL,
        &|_| {},
    )
    .await
    .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(outcome, Outcome::Registered, "{what}");
    assert_eq!(first.operational_key_label(), Some(OPERATIONAL_KEY_LABEL));
    let device_id = first.device_id().to_string();
    use_the_hub(env, &first, device.clone(), "with the first certificate").await;

    // Not due (a 30-day certificate, renewal within 1 day): nothing is sent to DPS.
    let before = env.emu.registration_records().unwrap();
    let not_due = renew(
        &config,
        device.clone(),
        state.path(),
        RenewWhen::Within(Duration::from_secs(86_400)),
        &|_| {},
    )
    .await
    .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(matches!(not_due, RenewOutcome::NotDue { .. }), "{what}");
    assert_eq!(
        env.emu.registration_records().unwrap(),
        before,
        "{what}: DPS was asked"
    );
    assert_eq!(
        provisioning::load(state.path()).unwrap().as_ref(),
        Some(&first)
    );

    // Forced: a new key under the next label, a new certificate for it.
    let renewed = match renew(
        &config,
        device.clone(),
        state.path(),
        RenewWhen::Always,
        &|_| {},
    )
    .await
    .unwrap_or_else(|e| panic!("{what}: {e}"))
    {
        RenewOutcome::Renewed(r) => r,
        other => panic!("{what}: not renewed: {other:?}"),
    };
    assert_eq!(renewed.old_label, OPERATIONAL_KEY_LABEL, "{what}");
    assert_eq!(renewed.new_label, "hsmkit-operational.2", "{what}");
    let saved = provisioning::load(state.path()).unwrap().expect("a record");
    assert_eq!(saved, renewed.record, "{what}: the new record is saved");
    assert_eq!(saved.operational_key_label(), Some("hsmkit-operational.2"));
    assert_eq!(saved.device_id(), device_id, "{what}: the same device");
    let (old_serial, old_key) = leaf_serial_and_key(&first);
    let (new_serial, new_key) = leaf_serial_and_key(&saved);
    assert_ne!(old_serial, new_serial, "{what}: a new certificate");
    assert_ne!(old_key, new_key, "{what}: for a new key");
    let ops = device.operational_key().unwrap();
    assert_eq!(
        ops.public_key("hsmkit-operational.2").unwrap().to_vec(),
        new_key,
        "{what}: the new certificate is for the plugin's new key"
    );
    // The old key: removed where the plugin can remove keys; otherwise kept, and said so.
    if renewed.old_key_removed {
        let e = ops.chain(OPERATIONAL_KEY_LABEL).unwrap_err();
        assert_eq!(e.code(), Some(PluginErrorCode::NotFound), "{what}: {e}");
        if attestation != Attestation::X509 {
            // dice derives its keys from the label (nothing stored to remove but the chain);
            // the others' key is gone too.
            let e = ops.public_key(OPERATIONAL_KEY_LABEL).unwrap_err();
            assert_eq!(e.code(), Some(PluginErrorCode::NotFound), "{what}: {e}");
        }
        assert!(renewed.warning.is_none(), "{what}");
    } else {
        let warning = renewed.warning.as_deref().expect("a warning");
        assert!(
            warning.contains("cannot remove operational keys"),
            "{what}: {warning}"
        );
        assert!(warning.contains(OPERATIONAL_KEY_LABEL), "{what}: {warning}");
    }
    use_the_hub(env, &saved, device.clone(), "with the renewed certificate").await;

    // Provisioning goes on: the saved record is reused, and renewing again moves on.
    let (again, outcome) = provision_with_certificate(
        &config,
        device.clone(),
        attestation,
        state.path(),
        false,
        OPERATIONAL_KEY_LABEL,
        &|_| {},
    )
    .await
    .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!((outcome, &again), (Outcome::Reused, &saved), "{what}");
    match renew(
        &config,
        device.clone(),
        state.path(),
        RenewWhen::Always,
        &|_| {},
    )
    .await
    .unwrap_or_else(|e| panic!("{what}: {e}"))
    {
        RenewOutcome::Renewed(r) => assert_eq!(r.new_label, "hsmkit-operational.3", "{what}"),
        other => panic!("{what}: not renewed: {other:?}"),
    }
    let third = provisioning::load(state.path()).unwrap().expect("a record");
    use_the_hub(env, &third, device.clone(), "after renewing twice").await;
    assert_eq!(
        stored_bodies(env, &device_id),
        [
            "with the first certificate",
            "with the renewed certificate",
            "after renewing twice"
        ],
        "{what}"
    );

    // The client really uses the recorded operational key: a label with no chain is an error
    // from the plugin, not a fallback to the onboarding credential.
    let mut wrong = third.clone();
    wrong.operational_key_label = Some("hsmkit-operational.99".into());
    let e = HubClient::connect(&wrong, device, hub_options(env))
        .await
        .expect_err("no identity under that label");
    assert!(
        matches!(e, HubError::Plugin(_) | HubError::Config { .. }),
        "{what}: {e}"
    );
}

#[tokio::test]
async fn symmetric_device_renews_and_uses_its_certificate_with_the_hub() {
    let env = hub_emulator().await;
    let (_state, device) = symmetric_with_issuance(&env, "renew-sym-1");
    renewal_cycle(&env, device, Attestation::SymmetricKey, "symmetric").await;
}

#[tokio::test]
async fn dice_device_renews_under_a_new_label_and_uses_its_certificate_with_the_hub() {
    let env = hub_emulator().await;
    let (_state, device) = dice_with_issuance(&env, "renew-dice-1");
    renewal_cycle(&env, device, Attestation::X509, "dice").await;
}

#[tokio::test]
async fn tpm_sim_device_renews_and_uses_its_certificate_with_the_hub() {
    let env = hub_emulator().await;
    let (_state, device) = tpm_sim_with_issuance(&env);
    renewal_cycle(&env, device, Attestation::Tpm, "tpm-sim").await;
}

/// DPS refuses the renewal (the enrollment's issuance policy removed, then the enrollment
/// disabled): the record, the old key and its chain stay, and the device still connects to
/// its hub with the old certificate.
#[tokio::test]
async fn a_refused_renewal_leaves_the_old_certificate_working() {
    let env = hub_emulator().await;
    let reg = "renew-refused-1";
    let enrollment = |extra: Value| {
        let mut e = json!({"registrationId": reg, "attestation": {"type": "symmetricKey", "symmetricKey": {"primaryKey": B64.encode([7u8; 32])}}});
        e.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        individual(&env.emu, e)
    };
    enrollment(json!({"certificateIssuancePolicy": policy()}));
    let dev_state = tempfile::tempdir().unwrap();
    let device = symmetric_device(dev_state.path(), reg, &[7u8; 32]);
    let state = tempfile::tempdir().unwrap();
    let config = dps_config(&env.emu);
    let (record, _) = provision_with_certificate(
        &config,
        device.clone(),
        Attestation::SymmetricKey,
        state.path(),
        false,
        OPERATIONAL_KEY_LABEL,
        &|_| {},
    )
    .await
    .unwrap();
    let old_chain = device
        .operational_key()
        .unwrap()
        .chain(OPERATIONAL_KEY_LABEL)
        .unwrap();
    for (change, words) in [
        (json!({}), "certificateIssuancePolicy"),
        (
            json!({"certificateIssuancePolicy": policy(), "provisioningStatus": "disabled"}),
            "disabled",
        ),
    ] {
        enrollment(change);
        let e = renew(
            &config,
            device.clone(),
            state.path(),
            RenewWhen::Always,
            &|_| {},
        )
        .await
        .unwrap_err();
        assert!(matches!(e, RenewError::Issue(_)), "{e:?}");
        assert!(e.to_string().contains(words), "{words}: {e}");
        assert_eq!(
            provisioning::load(state.path()).unwrap().as_ref(),
            Some(&record),
            "the record is unchanged"
        );
        let ops = device.operational_key().unwrap();
        assert_eq!(ops.chain(OPERATIONAL_KEY_LABEL).unwrap(), old_chain);
        assert!(
            ops.chain("hsmkit-operational.2").is_err(),
            "no chain under the new label"
        );
    }
    use_the_hub(&env, &record, device.clone(), "after the refused renewals").await;
    assert_eq!(stored_bodies(&env, reg), ["after the refused renewals"]);
}

/// Renewal needs a record with an issued certificate.
#[tokio::test]
async fn renewal_without_an_issued_certificate_says_what_to_do() {
    let env = emulator().await;
    let (dev_state, device) = symmetric_setup(&env, "renew-none-1");
    let _ = &dev_state;
    let state = tempfile::tempdir().unwrap();
    let config = dps_config(&env.emu);
    let e = renew(
        &config,
        device.clone(),
        state.path(),
        RenewWhen::Always,
        &|_| {},
    )
    .await
    .unwrap_err();
    assert!(matches!(e, RenewError::NotProvisioned { .. }), "{e:?}");
    assert!(e.to_string().contains("--issue-certificate"), "{e}");
    provisioning::provision(
        &config,
        device.clone(),
        Attestation::SymmetricKey,
        state.path(),
        false,
        &|_| {},
    )
    .await
    .unwrap();
    let e = renew(&config, device, state.path(), RenewWhen::Always, &|_| {})
        .await
        .unwrap_err();
    assert!(matches!(e, RenewError::NoCertificate), "{e:?}");
    assert!(e.to_string().contains("--issue-certificate"), "{e}");
}
