//! End to end with real components: the tpm2 plugin on swtpm (one swtpm per test) and the
//! pkcs11 plugin on a SoftHSM2 token and on tpm2-pkcs11 (swtpm behind a private tpm2-abrmd),
//! against the emulator over TLS. Each starts what it needs and fails with an install hint when
//! swtpm, SoftHSM2 or the tpm2-pkcs11 tools are missing.

#[path = "support/e2e.rs"]
mod helpers;

use helpers::*;
use provisioning_core::dps::{register, Attestation};
use provisioning_core::provisioning::hub_sas_token;
use std::time::Duration;

#[tokio::test]
async fn tpm2_on_swtpm_provisions_and_signs_hub_tokens() {
    let swtpm = hsm_tpm_common::swtpm::Swtpm::start().unwrap_or_else(|e| panic!("{e}"));
    let env = emulator().await;
    let state = tempfile::tempdir().unwrap();
    let (device, reg) = tpm2_enrolled(&env, state.path(), &swtpm);
    let r = register(
        &dps_config(&env.emu),
        device.clone(),
        Attestation::Tpm,
        &|_| {},
    )
    .await
    .expect("tpm2 registration on swtpm");
    assert_eq!(r.registration_id, reg);
    single_record(&env.emu, &reg);
    let token = hub_sas_token(
        &device,
        Attestation::Tpm,
        &r.assigned_hub,
        &r.device_id,
        Duration::from_secs(600),
    )
    .expect("hub token signed by the TPM identity key");
    assert!(token.contains("&sig=") && !token.contains("skn="));
}

#[tokio::test]
async fn pkcs11_on_softhsm_provisions_over_mutual_tls() {
    let token =
        hsmkit_backend_pkcs11::softhsm::create_token("dps-e2e").unwrap_or_else(|e| panic!("{e}"));
    let pkcs11 = Pkcs11Token {
        module: &token.module,
        uri: token.uri(),
        pin_file: &token.pin_file,
    };
    let out = pkcs11_init(&pkcs11, "pkcs11-device-1", "SoftHSM");
    let env = emulator().await;
    pkcs11_device_registers(
        &env,
        &pkcs11,
        &out,
        "pkcs11-device-1",
        dps_config,
        "pkcs11 X.509 registration",
    )
    .await;
}

/// The same X.509 provisioning on a second real PKCS#11 module: tpm2-pkcs11 on a private swtpm
/// behind a private tpm2-abrmd on a private D-Bus (issue 13). The key pair is generated in the
/// TPM and never leaves it; the TLS client signature is made by the TPM through the plugin.
///
/// The runtime is the test's own: the client's connection tasks hold the plugin instance until
/// the runtime shuts down, and the module must be finalized before the TPM stack stops.
#[test]
fn pkcs11_on_tpm2_pkcs11_provisions_over_mutual_tls() {
    let token = hsmkit_backend_pkcs11::tpm2_pkcs11::Tpm2Pkcs11Token::start("dps-e2e-tpm2")
        .unwrap_or_else(|e| panic!("{e}"));
    let pkcs11 = Pkcs11Token {
        module: &token.module,
        uri: token.uri(),
        pin_file: &token.pin_file,
    };
    let out = pkcs11_init(&pkcs11, "pkcs11-tpm2-device-1", "tpm2-pkcs11");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(async {
        let env = emulator().await;
        pkcs11_device_registers(
            &env,
            &pkcs11,
            &out,
            "pkcs11-tpm2-device-1",
            dps_config,
            "pkcs11 X.509 registration on tpm2-pkcs11",
        )
        .await;
    });
    drop(runtime);
    drop(token);
}
