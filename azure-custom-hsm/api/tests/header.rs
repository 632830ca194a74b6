//! The committed C header must match what cbindgen makes from the Rust definitions, so that the
//! C custom-HSM libraries and hosts see the types the adapters use.

#[test]
fn committed_header_is_current() {
    hsm_test_support::c_header::assert_current(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")),
        "include/hsmkit_azure_custom_hsm.h",
        "cargo test -p hsmkit-azure-custom-hsm-api --test header",
    );
}
