//! ECDSA P-256 signatures per second through the plugin's C ABI (the built library, loaded by
//! provisioning-core's loader as a host loads it) against cryptoki called directly on the same
//! token and key, in the same run. Prints both rates and their ratio.
//!
//! `cargo build --release -p hsmkit-plugin-pkcs11 && cargo bench -p hsmkit-backend-pkcs11 --bench sign_throughput` (SoftHSM2 needed).

#[path = "../tests/common/mod.rs"]
mod common;

use common::{init_self_signed, instance, token, x509_settings};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::ObjectClass;
use hsmkit_backend_pkcs11::session::TokenSession;
use hsmkit_backend_pkcs11::uri::Pkcs11Uri;
use provisioning_core::plugin::SignAlgorithm;
use sha2::{Digest, Sha256};
use std::time::{Duration, Instant};

const WARMUP: u32 = 200;
const ROUNDS: u32 = 3;
const PER_ROUND: Duration = Duration::from_millis(1500);

/// Best signatures/second over a few rounds (the best round is the least disturbed one).
fn rate(mut sign: impl FnMut(&[u8; 32])) -> f64 {
    let digest: [u8; 32] = Sha256::digest(b"benchmark message").into();
    for _ in 0..WARMUP {
        sign(&digest);
    }
    let mut best = 0.0f64;
    for _ in 0..ROUNDS {
        let start = Instant::now();
        let mut n = 0u64;
        while start.elapsed() < PER_ROUND {
            sign(&digest);
            n += 1;
        }
        best = best.max(n as f64 / start.elapsed().as_secs_f64());
    }
    best
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing: both run it once.
    let tok = token("bench");
    let out = init_self_signed(&tok, "bench-dev", "bench-device");

    let direct = TokenSession::open(
        &tok.module,
        &Pkcs11Uri::parse(&tok.uri()).expect("token URI"),
        &tok.pin,
    )
    .expect("open a session for the direct baseline");
    let key = direct
        .find_one(
            ObjectClass::PRIVATE_KEY,
            &Pkcs11Uri::parse(&out.key_uri).expect("key URI"),
            "private key",
        )
        .expect("find the key");
    let baseline = rate(|d| {
        let raw = direct
            .session()
            .sign(&Mechanism::Ecdsa, key, d)
            .expect("direct C_Sign");
        assert_eq!(raw.len(), 64);
    });

    let settings = x509_settings(&tok, &out);
    let plugin = instance(&settings).expect("create the plugin instance");
    let x509 = plugin.x509().expect("the plugin's X.509 interface");
    let through_plugin = rate(|d| {
        let der = x509
            .sign_digest(SignAlgorithm::EcdsaP256Sha256, d)
            .expect("plugin sign_digest");
        assert_eq!(der[0], 0x30);
    });

    println!("ECDSA P-256 on SoftHSM2 (same token, same key, one thread)");
    println!("  cryptoki C_Sign directly (raw r||s):     {baseline:>10.0} signatures/s");
    println!("  plugin sign_digest via the C ABI (DER):  {through_plugin:>10.0} signatures/s");
    println!(
        "  ratio plugin/direct: {:.3} (overhead per signature: {:.1} us)",
        through_plugin / baseline,
        (1.0 / through_plugin - 1.0 / baseline) * 1e6
    );
}
