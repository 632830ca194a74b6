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
