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

/// Runs the built `hsmkit` with `args`, as [`run_hsmkit`] does, with `env` set after removing
/// every variable that changes where it connects, what it trusts or what it logs (hsmkit's
/// own, the proxy variables, the CA-store variables, `RUST_LOG`, `TSS2_LOG`), so that only what
/// a test sets applies; (success, stdout, stderr).
pub fn run_hsmkit_with_env(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let out = hsmkit_command(args, env).output().expect("run hsmkit");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The command [`run_hsmkit_with_env`] runs, for a test that needs more than success (the
/// exit code).
pub fn hsmkit_command(args: &[&str], env: &[(&str, &str)]) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_hsmkit"));
    cmd.args(args);
    for v in [
        "HSMKIT_CONFIG",
        "HSMKIT_PLUGIN_DIR",
        "HSMKIT_STATE_DIR",
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "ALL_PROXY",
        "all_proxy",
        "NO_PROXY",
        "no_proxy",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "RUST_LOG",
        "TSS2_LOG",
    ] {
        cmd.env_remove(v);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// A plugins folder with the three software plugins (dice, tpm-sim, symmetric).
pub fn software_plugin_dir() -> tempfile::TempDir {
    plugin_dir_with(&[
        &bundled_plugin("dice"),
        &bundled_plugin("tpm_sim"),
        &bundled_plugin("symmetric"),
    ])
}

/// Runs `hsmkit --plugin-dir <dir> demo <extra> --json`; asserts it succeeded and returns the
/// JSON it printed.
pub fn demo_json(dir: &std::path::Path, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["--plugin-dir", dir.to_str().expect("UTF-8 path"), "demo"];
    args.extend_from_slice(extra);
    args.push("--json");
    let (ok, stdout, stderr) = run_hsmkit(&args);
    assert!(ok, "{stderr}\n{stdout}");
    serde_json::from_str(&stdout).expect("the demo's JSON")
}

/// Runs `hsmkit --plugin-dir <plugin_dir> --state-dir <state> enroll-info --plugin <plugin>
/// --out <out> <extra>`, asserts it succeeded, and enrolls what it wrote in `emulator`
/// (individually); returns it.
pub fn enroll_info_into(
    emulator: &dps_emulator::BackgroundEmulator,
    plugin_dir: &str,
    state: &str,
    plugin: &str,
    out: &std::path::Path,
    extra: &[&str],
) -> dps_emulator::enroll_files::EnrollmentInfo {
    use dps_emulator::enroll_files::{EnrollmentInfo, EnrollmentInfoExt};
    let mut args = vec![
        "--plugin-dir",
        plugin_dir,
        "--state-dir",
        state,
        "enroll-info",
        "--plugin",
        plugin,
        "--out",
        out.to_str().expect("UTF-8 path"),
    ];
    args.extend_from_slice(extra);
    let (ok, _, err) = run_hsmkit(&args);
    assert!(ok, "{err}");
    let info = EnrollmentInfo::read_dir(out).expect("the enrollment files");
    emulator
        .enrollments()
        .create_individual(info.individual())
        .expect("enrollment stored");
    info
}
