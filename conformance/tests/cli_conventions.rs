//! `hsm-conformance` follows hsmkit's command-line conventions: `--set KEY=VALUE` for plugin
//! settings (the old `--config` still accepted), `--state-dir` and `--plugin-dir` as hsmkit
//! has them, and one-line `error: ...` messages with exit status 1.

mod support;

use std::process::Command;
use support::*;

fn harness() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_hsm-conformance"));
    c.env_remove("HSMKIT_PLUGIN_DIR");
    c
}

/// Runs one check of the symmetric plugin, found by name in `--plugin-dir`, with `args`;
/// (exit status, stdout, stderr).
fn symmetric_check(check: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let out = harness()
        .arg("symmetric")
        .arg("--plugin-dir")
        .arg(profile_dir())
        .args(["--only", check])
        .args(args)
        .output()
        .expect("run hsm-conformance");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn set_is_the_settings_flag_and_config_still_works() {
    for (flag, id) in [("--set", "by-set"), ("--config", "by-config")] {
        let setting = format!("registration_id={id}");
        let (code, out, err) = symmetric_check("symmetric-key.registration-id", &[flag, &setting]);
        assert_eq!(code, Some(0), "{flag}: {out}{err}");
        assert!(out.contains(id), "{flag}: {out}");
    }
    let help = harness().arg("--help").output().expect("help");
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("--set <KEY=VALUE>"), "{help}");
    assert!(help.contains("--state-dir <DIR>"), "{help}");
    assert!(help.contains("--plugin-dir <DIR>"), "{help}");
}

#[test]
fn state_dir_is_the_plugins_state_folder() {
    let dir = tempfile::tempdir().expect("temp dir");
    let state = dir.path().join("state");
    std::fs::create_dir(&state).expect("state folder");
    let s = state.to_str().expect("UTF-8");
    let (code, out, err) = symmetric_check(
        "symmetric-key.import-and-sign",
        &["--set", "registration_id=state-dir", "--state-dir", s],
    );
    assert_eq!(code, Some(0), "{out}{err}");
    // The check's key went into the folder given, not a private copy.
    let written = std::fs::read_dir(&state).expect("read state").count();
    assert!(written > 0, "nothing written to {s}: {out}");

    // Both ways of naming it at once: refused, one line.
    let (code, _, err) = symmetric_check(
        "symmetric-key.import-and-sign",
        &["--state-dir", s, "--set", &format!("state_dir={s}")],
    );
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("error: --state-dir and --set state_dir"),
        "{err}"
    );
}

#[test]
fn errors_are_one_line_with_status_one() {
    let out = harness()
        .arg("no-such-plugin")
        .arg("--plugin-dir")
        .arg(profile_dir())
        .output()
        .expect("run hsm-conformance");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("error: no plugin named `no-such-plugin`"),
        "{err}"
    );
    assert!(!err.contains("Caused by"), "{err}");
}
