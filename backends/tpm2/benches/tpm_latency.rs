//! Latency of the DPS TPM operations, tpm-sim and tpm2-on-swtpm side by side:
//! ActivateCredential + Import (the whole `activate_identity_key`) and HMAC signing of a
//! SAS-sized input and of a 4 KiB input (the TPM's sequence path). The baselines, measured in
//! the same run, are the same crypto done in memory by the wire library and a plain software
//! HMAC, so the ratios show what each backend adds. Then the operational key (ABI 1.2):
//! TPM2_Create of a P-256 key under the SRK (a new label each run) and signing a digest with
//! it (Load + Sign + Flush of the SRK-wrapped blob), against P-256 in software, and as ratios
//! to the identity key's HMAC signature on the same TPM.
//!
//! Run: `cargo bench -p hsmkit-backend-tpm2 --bench tpm_latency` (needs swtpm installed).

use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use hsm_plugin_sdk::{HsmPlugin, OperationalKeyHsm, PluginConfig, TpmHsm};
use hsm_tpm_common::dps::{make_dps_challenge, open_dps_challenge, SoftwareTpmKeys};
use hsm_tpm_common::public::{
    ek_template_rsa2048, srk_template_rsa2048, with_rsa_modulus, PublicArea,
};
use hsm_tpm_common::swtpm::Swtpm;
use hsmkit_backend_tpm2::Tpm2Plugin;
use hsmkit_backend_tpm_sim::TpmSimPlugin;
use p256::ecdsa::signature::hazmat::PrehashSigner;
use p256::ecdsa::{DerSignature, SigningKey};
use p256::pkcs8::EncodePublicKey;
use rsa::traits::PublicKeyParts;
use sha2::Sha256;

const ACTIVATIONS: usize = 15;
const SIGNATURES: usize = 200;
/// Operational keys created per backend (tpm-sim holds at most 16, the signing key included).
const CREATES: usize = 12;

/// Median and 95th percentile of `samples`.
fn stats(mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    let p95 = ((samples.len() * 95).div_ceil(100)).saturating_sub(1);
    (samples[samples.len() / 2], samples[p95])
}

fn time<F: FnMut()>(runs: usize, mut f: F) -> Vec<Duration> {
    (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect()
}

/// Times `activate_identity_key` with a fresh challenge each run (made outside the timing).
fn time_activation<T: TpmHsm>(tpm: &mut T) -> Vec<Duration> {
    let ek = tpm.endorsement_key().expect("EK");
    let srk = tpm.storage_root_key().expect("SRK");
    (0..ACTIVATIONS)
        .map(|_| {
            let challenge = make_dps_challenge(&ek, &srk).expect("challenge");
            let t = Instant::now();
            tpm.activate_identity_key(&challenge.blob)
                .expect("activate");
            t.elapsed()
        })
        .collect()
}

fn time_sign<T: TpmHsm>(tpm: &mut T, data: &[u8], runs: usize) -> Vec<Duration> {
    time(runs, || {
        let tag = tpm.sign_with_identity(data).expect("sign");
        assert_eq!(tag.len(), 32);
    })
}

/// Times `create_operational_key` on a new label each run.
fn time_create<T: OperationalKeyHsm>(hsm: &T) -> Vec<Duration> {
    let mut n = 0;
    time(CREATES, || {
        n += 1;
        let spki = hsm
            .create_operational_key(&format!("bench-{n}"))
            .expect("create");
        assert!(!spki.is_empty());
    })
}

/// Times `sign_operational_digest` with one key.
fn time_op_sign<T: OperationalKeyHsm>(hsm: &T, runs: usize) -> Vec<Duration> {
    hsm.create_operational_key("bench-sign").expect("create");
    time(runs, || {
        let sig = hsm
            .sign_operational_digest("bench-sign", &[0x42; 32])
            .expect("sign");
        assert!(sig.len() > 8);
    })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn row(op: &str, baseline: Duration, sim: (Duration, Duration), tpm2: (Duration, Duration)) {
    println!(
        "{op:<34} {:>10.3} {:>10.3} {:>10.3} {:>10.3} {:>10.3} {:>9.1}x {:>9.1}x",
        ms(baseline),
        ms(sim.0),
        ms(sim.1),
        ms(tpm2.0),
        ms(tpm2.1),
        sim.0.as_secs_f64() / baseline.as_secs_f64().max(1e-9),
        tpm2.0.as_secs_f64() / baseline.as_secs_f64().max(1e-9),
    );
}

fn main() {
    let swtpm = Swtpm::start().unwrap_or_else(|e| panic!("the benchmark needs swtpm: {e}"));
    let tcti = swtpm.tcti();
    let dir = tempfile::tempdir().expect("temp dir");
    let tpm2_dir = tempfile::tempdir().expect("temp dir");
    let mut tpm2 = Tpm2Plugin::create(&PluginConfig::from_pairs([
        ("tcti", tcti.as_str()),
        (
            "state_dir",
            tpm2_dir.path().to_str().expect("utf-8 temp path"),
        ),
    ]))
    .expect("tpm2");
    let mut sim = TpmSimPlugin::create(&PluginConfig::from_pairs([(
        "state_dir",
        dir.path().to_str().expect("utf-8 temp path"),
    )]))
    .expect("tpm-sim");

    // Baseline for activation: the same ActivateCredential + Import crypto in memory.
    let mut rng = rand::thread_rng();
    let ek_key = rsa::RsaPrivateKey::new(&mut rng, 2048).expect("rsa");
    let srk_key = rsa::RsaPrivateKey::new(&mut rng, 2048).expect("rsa");
    let ek: PublicArea = with_rsa_modulus(ek_template_rsa2048(), ek_key.n().to_bytes_be());
    let srk: PublicArea = with_rsa_modulus(srk_template_rsa2048(), srk_key.n().to_bytes_be());
    let keys = SoftwareTpmKeys {
        ek_private: &ek_key,
        ek_public: &ek,
        srk_private: &srk_key,
        srk_public: &srk,
    };
    let challenges: Vec<_> = (0..ACTIVATIONS)
        .map(|_| {
            make_dps_challenge(&ek.to_tpm2b().expect("ek"), &srk.to_tpm2b().expect("srk"))
                .expect("challenge")
        })
        .collect();
    let mut next = challenges.iter();
    let baseline_activate = stats(time(ACTIVATIONS, || {
        let c = next.next().expect("enough challenges");
        open_dps_challenge(&keys, &c.blob).expect("open");
    }))
    .0;

    let sim_activate = stats(time_activation(&mut sim));
    let tpm2_activate = stats(time_activation(&mut tpm2));

    let sas = b"0ne00000000%2fregistrations%2fabcdefghijklmnopqrstuvwxyz234567abcdefghijklmnopqrstuv\n1767225600";
    let long = vec![0x5au8; 4096];
    let software_key = [7u8; 32];
    let baseline_sign = |data: &[u8]| {
        stats(time(SIGNATURES, || {
            let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&software_key).expect("key");
            mac.update(data);
            std::hint::black_box(mac.finalize().into_bytes());
        }))
        .0
    };

    println!(
        "TPM latency, milliseconds ({ACTIVATIONS} activations, {SIGNATURES} signatures per row; \
         tpm2 on swtpm {tcti})"
    );
    println!(
        "{:<34} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}",
        "operation",
        "baseline",
        "sim p50",
        "sim p95",
        "tpm2 p50",
        "tpm2 p95",
        "sim/base",
        "tpm2/base"
    );
    row(
        "activate (ActivateCred + Import)",
        baseline_activate,
        sim_activate,
        tpm2_activate,
    );
    let tpm2_hmac = stats(time_sign(&mut tpm2, sas, SIGNATURES));
    row(
        &format!("HMAC sign {} B", sas.len()),
        baseline_sign(sas),
        stats(time_sign(&mut sim, sas, SIGNATURES)),
        tpm2_hmac,
    );
    row(
        &format!("HMAC sign {} B (TPM sequence)", long.len()),
        baseline_sign(&long),
        stats(time_sign(&mut sim, &long, SIGNATURES / 4)),
        stats(time_sign(&mut tpm2, &long, SIGNATURES / 4)),
    );

    // Operational key: baselines are the same P-256 work in software, in memory.
    let baseline_create = stats(time(CREATES, || {
        let key = SigningKey::random(&mut rand::rngs::OsRng);
        let spki = key.verifying_key().to_public_key_der().expect("spki");
        std::hint::black_box(spki);
    }))
    .0;
    let software_key = SigningKey::random(&mut rand::rngs::OsRng);
    let baseline_op_sign = stats(time(SIGNATURES, || {
        let sig: DerSignature = software_key.sign_prehash(&[0x42; 32]).expect("sign");
        std::hint::black_box(sig);
    }))
    .0;
    let tpm2_create = stats(time_create(&tpm2));
    let tpm2_op_sign = stats(time_op_sign(&tpm2, SIGNATURES));
    row(
        "operational key create (P-256)",
        baseline_create,
        stats(time_create(&sim)),
        tpm2_create,
    );
    row(
        "operational key sign (ECDSA)",
        baseline_op_sign,
        stats(time_op_sign(&sim, SIGNATURES)),
        tpm2_op_sign,
    );
    println!(
        "tpm2 operational key vs the identity HMAC sign ({} B), p50: create {:.1}x, sign {:.1}x",
        sas.len(),
        tpm2_create.0.as_secs_f64() / tpm2_hmac.0.as_secs_f64(),
        tpm2_op_sign.0.as_secs_f64() / tpm2_hmac.0.as_secs_f64(),
    );
    println!(
        "tpm2/tpm-sim p50: activate {:.1}x, sign {:.1}x",
        tpm2_activate.0.as_secs_f64() / sim_activate.0.as_secs_f64(),
        stats(time_sign(&mut tpm2, sas, 50)).0.as_secs_f64()
            / stats(time_sign(&mut sim, sas, 50)).0.as_secs_f64()
    );
}
