//! The committed C header must match what cbindgen makes from the Rust definitions, so that C
//! vendors and Rust plugins always see the same ABI.

#[test]
fn committed_header_is_current() {
    hsm_test_support::c_header::assert_current(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")),
        "include/hsm_api.h",
        "cargo test -p hsm-api --test header",
    );
}
