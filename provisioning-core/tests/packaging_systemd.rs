//! packaging/systemd/hsmkit-provision.service: `systemd-analyze verify` accepts it with no
//! message at all (unknown keys are only warnings there, so any output fails the test), and it
//! has the settings boot-time provisioning relies on.

use std::path::Path;
use std::process::Command;

const UNIT: &str = "hsmkit-provision.service";

fn unit_text() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../packaging/systemd")
        .join(UNIT);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `systemd-analyze verify` on `text` saved as the unit, with ExecStart pointing at the built
/// hsmkit (verify checks that the command exists; the package installs it as /usr/bin/hsmkit).
fn verify(text: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let unit = dir.path().join(UNIT);
    std::fs::write(
        &unit,
        text.replace("/usr/bin/hsmkit", env!("CARGO_BIN_EXE_hsmkit")),
    )
    .unwrap();
    // --man=no: the Documentation= man page is in the package, not necessarily on this machine.
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&unit)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run systemd-analyze ({e}): install the `systemd` package (.ci/install-deps does)")
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success() && text.trim().is_empty(), text)
}

#[test]
fn systemd_analyze_verify_accepts_the_unit_silently() {
    let (ok, text) = verify(&unit_text());
    assert!(ok, "systemd-analyze verify: {text}");
}

#[test]
fn verify_as_run_here_catches_a_misspelt_key() {
    // The check above can fail: a typo in the unit is reported.
    let (ok, text) = verify(&unit_text().replace("ProtectSystem=", "ProtectSytem="));
    assert!(!ok && text.contains("ProtectSytem"), "{text}");
}

#[test]
fn the_unit_runs_provision_once_after_the_network_from_the_standard_config_sandboxed() {
    let text = unit_text();
    for line in [
        "Type=oneshot",
        "Wants=network-online.target",
        "Environment=HSMKIT_CONFIG=/etc/hsmkit/config.toml",
        "ExecStart=/usr/bin/hsmkit provision",
        "Restart=on-failure",
        "StateDirectory=hsmkit",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/hsmkit",
        "PrivateTmp=yes",
        "NoNewPrivileges=yes",
        "DeviceAllow=/dev/tpm0 rw",
        "DeviceAllow=/dev/tpmrm0 rw",
    ] {
        assert!(text.lines().any(|l| l == line), "missing `{line}`");
    }
    assert!(text
        .lines()
        .any(|l| l.starts_with("After=network-online.target")));
    assert!(text.lines().any(|l| l.starts_with("RestartSec=")));
    // Restarting cannot cure a usage, configuration or plugin failure: the unit names exactly
    // their exit codes (the library's mapping), and so still restarts on network, DPS,
    // timeout and HSM failures.
    use provisioning_core::error_kind::ErrorKind;
    let prevented = format!(
        "RestartPreventExitStatus={} {} {}",
        ErrorKind::Usage.exit_code(),
        ErrorKind::Config.exit_code(),
        ErrorKind::Plugin.exit_code()
    );
    assert!(
        text.lines().any(|l| l == prevented),
        "missing `{prevented}`"
    );
}
