//! The config file from the command line: unknown keys (also in `[plugins.NAME]`) are errors
//! naming the key and the valid ones; a file others can write is refused; `hsmkit config new`
//! writes a config that hsmkit reads back.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use support::*;

/// `hsmkit --config FILE --plugin-dir DIR --state-dir STATE enroll-info --plugin dice`.
fn enroll_info_with(config: &Path, plugins: &Path, state: &Path) -> (bool, String, String) {
    run_hsmkit(&[
        "--config".as_ref(),
        config.as_os_str(),
        "--plugin-dir".as_ref(),
        plugins.as_os_str(),
        "--state-dir".as_ref(),
        state.as_os_str(),
        "enroll-info".as_ref(),
        "--plugin".as_ref(),
        "dice".as_ref(),
    ])
}

#[test]
fn an_unknown_key_in_a_plugin_section_names_the_key_the_file_and_the_valid_keys() {
    let plugins = plugin_dir_with(&[&bundled_plugin("dice")]);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        "[plugins.dice]\nmode = \"normal\"\nmodee = \"debug\"\n",
    )
    .unwrap();
    let (ok, _, stderr) = enroll_info_with(&config, plugins.path(), &dir.path().join("state"));
    assert!(!ok, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "unknown key `modee` in [plugins.dice] of {}; valid keys: uds_hex, code_hash_hex",
            config.display()
        )) && stderr.contains(", state_dir"),
        "{stderr}"
    );

    // The same file with the key spelt right works.
    std::fs::write(&config, "[plugins.dice]\nmode = \"normal\"\n").unwrap();
    let (ok, _, stderr) = enroll_info_with(&config, plugins.path(), &dir.path().join("state"));
    assert!(ok, "{stderr}");
}

#[test]
fn an_unknown_top_level_or_section_key_names_the_key_and_the_valid_ones() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "[provisioning]\nid_scop = \"0ne1\"\n").unwrap();
    let (ok, _, stderr) = run_hsmkit(&["--config", config.to_str().unwrap(), "plugins", "list"]);
    assert!(!ok);
    assert!(
        stderr.contains("id_scop")
            && stderr.contains("expected one of")
            && stderr.contains("`id_scope`"),
        "{stderr}"
    );
}

#[test]
fn a_config_file_others_can_write_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "plugin = \"dice\"\n").unwrap();
    for mode in [0o664, 0o646] {
        std::fs::set_permissions(&config, std::fs::Permissions::from_mode(mode)).unwrap();
        let (ok, _, stderr) =
            run_hsmkit(&["--config", config.to_str().unwrap(), "plugins", "list"]);
        assert!(!ok, "mode {mode:o} accepted");
        assert!(
            stderr.contains("cannot use the config file") && stderr.contains("writable"),
            "{stderr}"
        );
    }
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (ok, _, stderr) = run_hsmkit(&["--config", config.to_str().unwrap(), "plugins", "list"]);
    assert!(ok, "{stderr}");
}

/// `hsmkit config new` for each attestation writes a 0644 file that hsmkit then reads back:
/// `enroll-info` with only `--config` (plugin and attestation from the file) succeeds.
#[test]
fn config_new_round_trips_for_each_attestation() {
    let plugins = software_plugin_dir();
    for (attestation, plugin, dps_name) in [
        ("symmetric-key", "symmetric", "symmetricKey"),
        ("x509", "dice", "x509"),
        ("tpm", "tpm-sim", "tpm"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.toml");
        let c = config.to_str().unwrap();
        let p = plugins.path().to_str().unwrap();
        let (ok, stdout, stderr) = run_hsmkit(&[
            "--plugin-dir",
            p,
            "config",
            "new",
            "--attestation",
            attestation,
            "--plugin",
            plugin,
            "--id-scope",
            "0ne00000001",
            "-o",
            c,
        ]);
        assert!(ok && stdout.is_empty(), "{attestation}: {stderr}");
        let meta = std::fs::metadata(&config).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o644, "{attestation}");
        let text = std::fs::read_to_string(&config).unwrap();
        assert!(
            text.contains(&format!("attestation = \"{dps_name}\""))
                && text.contains("id_scope = \"0ne00000001\"")
                && text.contains(&format!("[plugins.{plugin}]")),
            "{text}"
        );
        let state = dir.path().join("state");
        let mut args = vec![
            "--config",
            c,
            "--plugin-dir",
            p,
            "--state-dir",
            state.to_str().unwrap(),
            "enroll-info",
            "--json",
        ];
        if plugin == "symmetric" {
            // The symmetric plugin has no identity of its own before a key is imported.
            args.extend(["--set", "registration_id=round-trip"]);
        }
        let (ok, stdout, stderr) = run_hsmkit(&args);
        assert!(ok, "{attestation}: {stderr}\n{text}");
        let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        assert_eq!(v["attestation"], dps_name, "{stdout}");

        // No silent overwrite; --force replaces.
        let (ok, _, stderr) = run_hsmkit(&[
            "config",
            "new",
            "--attestation",
            attestation,
            "--plugin",
            plugin,
            "-o",
            c,
        ]);
        assert!(!ok && stderr.contains("exists; pass --force"), "{stderr}");
        assert_eq!(std::fs::read_to_string(&config).unwrap(), text);
        let (ok, _, stderr) = run_hsmkit(&[
            "config",
            "new",
            "--attestation",
            attestation,
            "--plugin",
            plugin,
            "-o",
            c,
            "--force",
        ]);
        assert!(ok, "{stderr}");
        assert!(!std::fs::read_to_string(&config)
            .unwrap()
            .contains("0ne00000001"));
        // Nothing left behind but the config and the state folder.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }
}

#[test]
fn config_new_creates_missing_folders_that_the_trust_rules_accept() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("etc/hsmkit/config.toml");
    let c = config.to_str().unwrap();
    let (ok, _, stderr) = run_hsmkit(&[
        "config",
        "new",
        "--attestation",
        "x509",
        "--plugin",
        "dice",
        "-o",
        c,
    ]);
    assert!(ok, "{stderr}");
    for folder in [dir.path().join("etc"), dir.path().join("etc/hsmkit")] {
        let mode = std::fs::metadata(&folder).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o755, "{}", folder.display());
    }
    let (ok, _, stderr) = run_hsmkit(&["--config", c, "plugins", "list"]);
    assert!(ok, "{stderr}");
}

#[test]
fn config_new_refuses_an_unknown_attestation() {
    let (ok, _, stderr) = run_hsmkit(&[
        "config",
        "new",
        "--attestation",
        "tmp",
        "--plugin",
        "x",
        "-o",
        "-",
    ]);
    assert!(
        !ok && stderr.contains("unknown attestation `tmp`"),
        "{stderr}"
    );
}
