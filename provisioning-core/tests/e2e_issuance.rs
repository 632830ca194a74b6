//! Certificate issuance end to end against the emulator: the symmetric, dice and tpm-sim
//! plugins register with a CSR for their operational key; the issued chain verifies to the
//! emulator's issuing CA, is for the plugin's key, and is stored beside it.

#[path = "support/e2e.rs"]
mod helpers;
#[path = "support/issuance.rs"]
mod issuance_helpers;

use helpers::*;
use issuance_helpers::*;
use provisioning_core::dps::Attestation;
use provisioning_core::issuance::{register_with_certificate, IssueError, OPERATIONAL_KEY_LABEL};
use provisioning_core::plugin::PluginInstance;
use std::sync::Arc;

#[tokio::test]
async fn symmetric_device_gets_its_operational_certificate() {
    let env = emulator().await;
    let (_state, device) = symmetric_with_issuance(&env, "issue-sym-1");
    issue_and_check(&env, device, Attestation::SymmetricKey, "symmetric").await;
}

#[tokio::test]
async fn dice_device_gets_its_operational_certificate() {
    let env = emulator().await;
    let (_state, device) = dice_with_issuance(&env, "issue-dice-1");
    issue_and_check(&env, device, Attestation::X509, "dice").await;
}

#[tokio::test]
async fn tpm_sim_device_gets_its_operational_certificate() {
    let env = emulator().await;
    let (_state, device) = tpm_sim_with_issuance(&env);
    issue_and_check(&env, device, Attestation::Tpm, "tpm-sim").await;
}

#[tokio::test]
async fn an_enrollment_without_issuance_is_a_clear_error() {
    let env = emulator().await;
    let (_state, device) = symmetric_setup(&env, "issue-none-1");
    let e = register_with_certificate(
        &dps_config(&env.emu),
        device,
        Attestation::SymmetricKey,
        OPERATIONAL_KEY_LABEL,
        &|_| {},
    )
    .await
    .unwrap_err();
    assert!(matches!(e, IssueError::Dps(_)), "{e:?}");
    assert!(format!("{e}").contains("certificateIssuancePolicy"), "{e}");
}

/// Without a chain stored under the label there is no operational TLS identity.
#[tokio::test]
async fn no_issued_chain_no_operational_tls_identity() {
    let state = tempfile::tempdir().unwrap();
    let device = dice_device(state.path(), "issue-none-tls");
    let e = provisioning_core::dps::tls_client_config_with_operational_key(
        device,
        OPERATIONAL_KEY_LABEL,
        rustls::RootCertStore::empty(),
    )
    .unwrap_err();
    assert!(!e.to_string().is_empty());
}

/// A plugin built against ABI 1.0 cannot hold an operational key, and the flow says so before
/// anything is sent.
#[tokio::test]
async fn an_abi_1_0_plugin_cannot_hold_an_operational_key() {
    let plugin = provisioning_core::plugin::LoadedPlugin::load(std::path::Path::new(
        hsm_fixture_loader_c::ABI_1_0,
    ))
    .unwrap();
    let inst = Arc::new(PluginInstance::create(&plugin, &[("state_dir", "/nonexistent")]).unwrap());
    let mut config = provisioning_core::dps::DpsClientConfig::new("0ne00000001");
    // Nothing listens there: a request would fail differently.
    config.endpoint = "127.0.0.1:9".into();
    let e = register_with_certificate(
        &config,
        inst,
        Attestation::SymmetricKey,
        OPERATIONAL_KEY_LABEL,
        &|_| {},
    )
    .await
    .unwrap_err();
    assert!(matches!(e, IssueError::Plugin(_)), "{e:?}");
    assert!(
        e.to_string().contains("cannot hold an operational key"),
        "{e}"
    );
}
