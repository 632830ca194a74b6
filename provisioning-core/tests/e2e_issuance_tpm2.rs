//! Certificate issuance end to end with a real TPM: the tpm2 plugin on a private swtpm (fails
//! with an install hint when swtpm is missing) onboards with TPM attestation against the
//! emulator and registers with a CSR for an operational key made by TPM2_Create under the SRK.
//! The issued chain verifies to the emulator's issuing CA, its leaf carries the TPM's key, it is
//! stored beside the key, and the TPM key completes a mutual-TLS handshake with it.

#[path = "support/e2e.rs"]
mod helpers;
#[path = "support/issuance.rs"]
mod issuance_helpers;

use base64::Engine;
use helpers::*;
use issuance_helpers::*;
use provisioning_core::dps::Attestation;
use provisioning_core::issuance::OPERATIONAL_KEY_LABEL;
use serde_json::json;

#[tokio::test]
async fn tpm2_on_swtpm_gets_its_operational_certificate() {
    let swtpm = hsm_tpm_common::swtpm::Swtpm::start().unwrap_or_else(|e| panic!("{e}"));
    let env = emulator().await;
    let state = tempfile::tempdir().unwrap();
    let settings = [
        ("state_dir", state.path().display().to_string()),
        ("tcti", swtpm.tcti()),
    ];
    let device = instance("tpm2", &settings);
    let ek = device.tpm().unwrap().endorsement_key().unwrap();
    let reg = provisioning_core::dps::tpm_registration_id(&ek);
    individual(
        &env.emu,
        json!({"registrationId": reg, "attestation": {"type": "tpm", "tpm": {"endorsementKey": B64.encode(&ek)}}, "certificateIssuancePolicy": policy()}),
    );
    // Issued, verified to the issuing CA, for the TPM's key, stored, and mutual TLS with it.
    issue_and_check(&env, device.clone(), Attestation::Tpm, "tpm2").await;

    // The key is the TPM's: its blob sits in the state folder wrapped by the SRK (no private
    // scalar the host could use), and a new instance (a new connection) finds the same key
    // and chain.
    let spki = device
        .operational_key()
        .unwrap()
        .public_key(OPERATIONAL_KEY_LABEL)
        .unwrap()
        .to_vec();
    let chain = device
        .operational_key()
        .unwrap()
        .chain(OPERATIONAL_KEY_LABEL)
        .unwrap();
    let blob = state
        .path()
        .join(format!("tpm2/operational/{OPERATIONAL_KEY_LABEL}.key"));
    assert!(std::fs::read(&blob).unwrap().starts_with(b"HKTPM2OK"));
    drop(device);
    let again = instance("tpm2", &settings);
    let ops = again.operational_key().unwrap();
    assert_eq!(
        ops.public_key(OPERATIONAL_KEY_LABEL).unwrap().to_vec(),
        spki
    );
    assert_eq!(ops.chain(OPERATIONAL_KEY_LABEL).unwrap(), chain);
    mutual_tls_with_the_operational_key(&env, again.clone(), "tpm2, new instance");
}
