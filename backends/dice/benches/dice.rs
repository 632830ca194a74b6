//! DICE backend figures: cold identity derivation and chain building, and ECDSA signatures
//! per second through the plugin's C ABI against the same signing function called directly.
//!
//! Run: `cargo bench -p hsmkit-backend-dice`. Prints figures only; nothing here asserts a
//! speed.

#[path = "../tests/common/mod.rs"]
mod common;

use std::hint::black_box;
use std::time::{Duration, Instant};

use hsm_plugin_sdk::hsm_api::HSM_SIGN_ECDSA_P256_SHA256;
use hsmkit_backend_dice::derive::{derive_identity, DiceInputs, Mode, Secret32};
use hsmkit_backend_dice::plugin::sign_p256_digest;
use hsmkit_backend_dice::{build_chain, DeviceChain};
use p256::ecdsa::SigningKey;

const DERIVE_ROUNDS: u32 = 50;
const SIGN_ROUNDS: u32 = 3000;

fn per_op(total: Duration, rounds: u32) -> f64 {
    total.as_secs_f64() * 1e3 / f64::from(rounds)
}

fn time<T>(rounds: u32, mut f: impl FnMut(u32) -> T) -> Duration {
    let start = Instant::now();
    for i in 0..rounds {
        black_box(f(i));
    }
    start.elapsed()
}

fn main() {
    let inputs = DiceInputs::zero(Mode::Normal);
    let root_key = SigningKey::from_slice(&[0x42; 32]).expect("constant root key is valid");
    // A different UDS each round, so nothing is reused between rounds ("cold").
    let uds = |i: u32| {
        let mut bytes = [0u8; 32];
        bytes[..4].copy_from_slice(&i.to_be_bytes());
        Secret32::new(bytes)
    };

    let derive = time(DERIVE_ROUNDS, |i| {
        derive_identity(&uds(i), &inputs).expect("derivation")
    });
    let chain = time(DERIVE_ROUNDS, |i| {
        build_chain(&uds(i), &inputs, &root_key, None).expect("chain")
    });
    println!("identity derivation (CDIs + 3 HMAC-DRBG keys + IDs), cold: {:.3} ms/op over {DERIVE_ROUNDS} UDSes", per_op(derive, DERIVE_ROUNDS));
    println!("derivation + 4-certificate chain (PEM), cold:          {:.3} ms/op over {DERIVE_ROUNDS} UDSes", per_op(chain, DERIVE_ROUNDS));

    let state = tempfile::tempdir().expect("temp dir");
    let uds_hex = hex::encode([0x5a; 32]);
    let settings = [
        ("state_dir", state.path().to_str().expect("utf-8 temp path")),
        ("uds_hex", uds_hex.as_str()),
    ];
    let create = time(10, |_| {
        common::AbiInstance::create(&settings).expect("create")
    });
    println!(
        "plugin create through the ABI (incl. root key file), cold: {:.3} ms/op",
        per_op(create, 10)
    );

    let plugin = common::AbiInstance::create(&settings).expect("create");
    let direct: DeviceChain = build_chain(
        &Secret32::new([0x5a; 32]),
        &inputs,
        &{
            let pem = std::fs::read_to_string(state.path().join("dice/root-ca-key.pem"))
                .expect("root key");
            <SigningKey as p256::pkcs8::DecodePrivateKey>::from_pkcs8_pem(&pem).expect("root key")
        },
        None,
    )
    .expect("chain");
    assert_eq!(
        direct.chain_pem,
        plugin.chain_pem().expect("chain"),
        "baseline must use the plugin's key"
    );

    let digest = |i: u32| {
        let mut d = [0u8; 32];
        d[..4].copy_from_slice(&i.to_be_bytes());
        d
    };
    // Warm-up, so neither side pays first-call costs in its measurement.
    for i in 0..100 {
        black_box(
            plugin
                .sign_digest(HSM_SIGN_ECDSA_P256_SHA256, &digest(i))
                .expect("sign"),
        );
        black_box(sign_p256_digest(&direct.leaf_key, &digest(i)).expect("sign"));
    }
    let through_abi = time(SIGN_ROUNDS, |i| {
        plugin
            .sign_digest(HSM_SIGN_ECDSA_P256_SHA256, &digest(i))
            .expect("sign")
    });
    let called_directly = time(SIGN_ROUNDS, |i| {
        sign_p256_digest(&direct.leaf_key, &digest(i)).expect("sign")
    });
    let abi_rate = f64::from(SIGN_ROUNDS) / through_abi.as_secs_f64();
    let direct_rate = f64::from(SIGN_ROUNDS) / called_directly.as_secs_f64();
    println!("ECDSA P-256 signatures through the plugin ABI: {abi_rate:.0}/s");
    println!("ECDSA P-256 signatures, same code called directly: {direct_rate:.0}/s");
    println!(
        "ratio ABI / direct: {:.3} (1.0 = no ABI overhead)",
        abi_rate / direct_rate
    );
}
