//! Shared helpers for tests that load the workspace's built plugins (kept in
//! `hsm-test-support`, which the conformance and pkcs11 tests use too).
#![allow(unused_imports, dead_code, unreachable_pub)] // shared by several test binaries, which see it through `pub`

pub use hsm_test_support::{built_library, bundled_plugin, plugin_dir_with, profile_dir};

/// Runs the built `hsmkit` with `args` and a clean environment; (success, stdout, stderr).
pub fn run_hsmkit<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hsmkit"))
        .args(args)
        .env_remove("HSMKIT_CONFIG")
        .env_remove("HSMKIT_PLUGIN_DIR")
        .env_remove("HSMKIT_STATE_DIR")
        .output()
        .expect("run hsmkit");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
