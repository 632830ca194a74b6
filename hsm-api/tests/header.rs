//! The committed C header must match what cbindgen makes from the Rust definitions, so that C
//! vendors and Rust plugins always see the same ABI.

use std::path::PathBuf;

#[test]
fn committed_header_is_current() {
    let crate_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(crate_dir.join("cbindgen.toml"))
        .expect("hsm-api/cbindgen.toml must parse");
    let generated = cbindgen::Builder::new()
        .with_crate(&crate_dir)
        .with_config(config)
        .generate()
        .expect("cbindgen must understand hsm-api");
    let mut bytes = Vec::new();
    generated.write(&mut bytes);
    let generated = String::from_utf8(bytes).expect("header is UTF-8");
    let path = crate_dir.join("include/hsm_api.h");
    if std::env::var_os("HSMKIT_BLESS").is_some() {
        std::fs::write(&path, &generated).expect("write header");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "hsm-api/include/hsm_api.h is stale: run `HSMKIT_BLESS=1 cargo test -p hsm-api --test header` and commit it"
    );
}
