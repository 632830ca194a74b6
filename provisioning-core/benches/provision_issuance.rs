//! Provisioning with certificate issuance against provisioning without it, per backend:
//! `hsmkit provision` (process start to assigned) with and without `--issue-certificate`
//! against an in-process DPS emulator over TLS, the register request answered with the final
//! state. With issuance the device also makes (first run) or finds its operational key, has
//! the plugin sign a CSR with it, sends it, verifies the issued chain against its issuer and
//! stores it through the plugin; the emulator checks the CSR and issues a leaf. The figure is
//! the ratio with/without in the same run, same emulator, same enrollment (which carries a
//! `certificateIssuancePolicy`; a request without a CSR ignores it). Every issued run is
//! checked to have recorded a two-certificate chain, every plain run to have recorded none.
//!
//! Backends: symmetric, tpm-sim and dice (software), tpm2 on a private swtpm (TPM2_Create
//! under the SRK) and pkcs11 on a private SoftHSM2 token (X.509 key and certificate made by
//! `init_device`, operational key generated in the token); swtpm and SoftHSM2 are started here
//! and their absence fails the bench with the install hint.
//!
//! Needs release plugins, swtpm and SoftHSM2 (.ci/install-deps):
//!   cargo build --release --workspace
//!   cargo bench -p provisioning-core --bench provision_issuance

mod support;

use dps_emulator::enroll_files::{EnrollmentInfo, EnrollmentInfoExt};
use dps_emulator::model::CertificateIssuancePolicy;
use hsmkit_backend_pkcs11::config::PinSource;
use hsmkit_backend_pkcs11::provision::{init_device, InitOptions};
use hsmkit_backend_pkcs11::uri::Pkcs11Uri;
use serde_json::Value;
use std::path::{Path, PathBuf};
use support::{enroll, median, mode_emulator, os, plugins_folder, provision_args, timed, Target};

/// Runs of each kind per backend; a run is ~50-100 ms, and many keep the median steady on a
/// busy machine.
const RUNS: usize = 25;

/// The chain `hsmkit provision` recorded in `state`, as the number of certificates.
fn recorded_chain_len(state: &Path) -> usize {
    let path = state.join("provisioning.json");
    let record: Value = serde_json::from_slice(
        &std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display())),
    )
    .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
    record["issuedCertificateChain"]
        .as_array()
        .map_or(0, Vec::len)
}

fn main() {
    let hsmkit = PathBuf::from(env!("CARGO_BIN_EXE_hsmkit"));
    let root = tempfile::tempdir().expect("temp dir");
    let plugins = plugins_folder(
        root.path(),
        &["dice", "tpm_sim", "symmetric", "tpm2", "pkcs11"],
        "cargo build --release --workspace",
    );
    // Register answered 200 assigned: no Retry-After wait diluting the difference.
    let (mode_root, emulator) = mode_emulator(root.path(), true, false);
    let ca = emulator.ca_cert_path().to_path_buf();
    let endpoint = emulator.endpoint();
    let scope = emulator.id_scope().to_string();
    println!(
        "hsmkit provision with --issue-certificate against without, process start to assigned, median of {RUNS} (register answered 200 assigned):"
    );
    // A private swtpm, and a private SoftHSM2 token (its SOFTHSM2_CONF is set for this
    // process, which the hsmkit children inherit) with a device key and certificate.
    let swtpm = hsm_tpm_common::swtpm::Swtpm::start()
        .unwrap_or_else(|e| panic!("the benchmark needs swtpm: {e}"));
    let token = hsmkit_backend_pkcs11::softhsm::create_token("bench-issuance")
        .unwrap_or_else(|e| panic!("the benchmark needs SoftHSM2: {e}"));
    let device = init_device(&InitOptions {
        module: token.module.clone(),
        token: Pkcs11Uri::parse(&token.uri()).expect("token URI"),
        pin: PinSource::File(token.pin_file.clone()),
        label: "bench-device".into(),
        id: None,
        common_name: "bench-issuance-pkcs11".into(),
        ca: None,
        validity_days: 30,
    })
    .unwrap_or_else(|e| panic!("device init on SoftHSM2: {e}"));
    let set = |k: &str, v: String| ["--set".to_string(), format!("{k}={v}")];
    let backends: Vec<(&str, Vec<String>)> = vec![
        (
            "symmetric",
            set("registration_id", "bench-issuance-symmetric".into()).to_vec(),
        ),
        ("tpm-sim", vec![]),
        ("dice", vec![]),
        ("tpm2", set("tcti", swtpm.tcti()).to_vec()),
        (
            "pkcs11",
            [
                set("module", token.module.display().to_string()),
                set("token_uri", token.uri()),
                set("pin_file", token.pin_file.display().to_string()),
                set("key_uri", device.key_uri.clone()),
                set("cert_uri", device.cert_uri.clone()),
                // It also offers symmetric keys (HMAC in the token); the device is X.509.
                ["--attestation".to_string(), "x509".to_string()],
            ]
            .concat(),
        ),
    ];
    for (plugin, extra) in &backends {
        let plugin = *plugin;
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        let state = mode_root.join(plugin);
        enroll(&hsmkit, &emulator, &plugins, &state, plugin, &extra);
        // The same enrollment, now with an issuance policy.
        let info = EnrollmentInfo::read_dir(&state.join("enroll")).expect("enrollment files");
        let store = emulator.enrollments();
        let reg = info.individual().registration_id;
        let mut e = store
            .individual(&reg)
            .expect("read enrollment")
            .expect("enrolled");
        e.common.certificate_issuance_policy =
            Some(CertificateIssuancePolicy { validity_days: 30 });
        store.put_individual(e, None).expect("set issuance policy");

        let target = Target {
            scope: &scope,
            endpoint: &endpoint,
            ca: &ca,
            transport: None,
        };
        let plain = provision_args(&plugins, &state, plugin, &target, &extra);
        let mut issuing = plain.clone();
        issuing.push(os("--issue-certificate"));
        // The first issuance makes the operational key; reported apart, not in the median.
        let first = timed(&hsmkit, &issuing, &[]);
        assert_eq!(recorded_chain_len(&state), 2, "{plugin}: no chain issued");
        let (mut without, mut with) = (Vec::new(), Vec::new());
        let mut peak = (0u64, first.max_rss_kib);
        // Interleaved, so that drift on the machine hits both alike.
        for _ in 0..RUNS {
            let run = timed(&hsmkit, &plain, &[]);
            assert_eq!(
                recorded_chain_len(&state),
                0,
                "{plugin}: plain run has a chain"
            );
            without.push(run.wall.as_secs_f64() * 1e3);
            peak.0 = peak.0.max(run.max_rss_kib);
            let run = timed(&hsmkit, &issuing, &[]);
            assert_eq!(recorded_chain_len(&state), 2, "{plugin}: no chain issued");
            with.push(run.wall.as_secs_f64() * 1e3);
            peak.1 = peak.1.max(run.max_rss_kib);
        }
        let (without, with) = (median(without), median(with));
        println!(
            "  {plugin:<10} without {without:7.1} ms   with issuance {with:7.1} ms   ratio {:.3}   first issuance (key made) {:7.1} ms   peak RSS {:.1} / {:.1} MiB",
            with / without,
            first.wall.as_secs_f64() * 1e3,
            peak.0 as f64 / 1024.0,
            peak.1 as f64 / 1024.0,
        );
    }
    emulator.shutdown();
    drop(swtpm);
    // The figures are only as steady as the machine was quiet.
    if let Ok(load) = std::fs::read_to_string("/proc/loadavg") {
        println!(
            "load average while measuring: {}",
            load.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
}
