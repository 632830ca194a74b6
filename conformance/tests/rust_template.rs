//! The vendor template `plugin-sdk/examples/rust-x509` passes the harness as a vendor would run
//! it (`hsm-conformance --plugin-dir DIR NAME`), and its identity survives the process: the key
//! and certificate sit 0600 under `state_dir` and a second run finds the same certificate; it
//! refuses a setting it does not know.

use hsm_test_support::profile_dir;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

/// Runs the built harness on the template, found by name in the build's output folder.
fn run_harness(extra: &[&str]) -> (Option<i32>, String) {
    let dir = profile_dir();
    assert!(
        dir.join("libhsmkit_plugin_rust_x509.so").is_file(),
        "the template is missing: build the workspace first (`cargo build --workspace`)"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_hsm-conformance"))
        .arg("--plugin-dir")
        .arg(&dir)
        .arg("rust-x509")
        .args(extra)
        .output()
        .expect("run hsm-conformance");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn template_passes_every_check() {
    let (code, stdout) = run_harness(&[]);
    assert_eq!(code, Some(0), "{stdout}");
    assert!(!stdout.contains("FAIL"), "{stdout}");
    assert!(
        stdout.contains(" 0 failed, 0 crashed, 0 timed out"),
        "{stdout}"
    );
    assert!(stdout.contains("PASS    x509.sign-verifies"), "{stdout}");
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn template_identity_is_kept_under_state_dir() {
    let state = tempfile::tempdir().expect("temp dir");
    let setting = format!("state_dir={}", state.path().display());
    let only = ["--config", &setting, "--only", "x509.common-name"];
    let (code, stdout) = run_harness(&only);
    assert_eq!(code, Some(0), "{stdout}");
    let key = state.path().join("rust-x509/device-key.pem");
    let cert = state.path().join("rust-x509/device-cert.pem");
    assert_eq!(mode(&key), 0o600, "the device key must be private");
    assert_eq!(mode(&cert), 0o600);
    let first = std::fs::read(&cert).expect("certificate written");
    // A second process on the same folder is the same device.
    let (code, stdout) = run_harness(&only);
    assert_eq!(code, Some(0), "{stdout}");
    assert_eq!(std::fs::read(&cert).expect("certificate kept"), first);
}

#[test]
fn template_refuses_unknown_settings() {
    // Through hsmkit's own loader, as `hsmkit --set bogus=1` would pass it.
    use provisioning_core::plugin::{LoadedPlugin, PluginInstance};
    let state = tempfile::tempdir().expect("temp dir");
    let plugin = LoadedPlugin::load(&profile_dir().join("libhsmkit_plugin_rust_x509.so"))
        .expect("the template loads");
    let state_dir = state.path().display().to_string();
    let err = PluginInstance::create(
        &plugin,
        &[("state_dir", state_dir.as_str()), ("bogus", "1")],
    )
    .expect_err("an unknown setting is refused");
    let message = err.to_string();
    assert!(message.contains("unknown setting `bogus`"), "{message}");
    assert!(message.contains("registration_id"), "{message}");
}
