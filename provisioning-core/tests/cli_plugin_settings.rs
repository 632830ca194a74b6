//! `hsmkit plugins info` shows the settings a plugin's `create` accepts, one line each (ABI
//! 1.1), and says "settings not declared" for a plugin built for ABI 1.0.

mod support;

use serde_json::Value;
use std::path::Path;
use support::*;

/// `hsmkit --plugin-dir DIR plugins info NAME [--json]`, which must succeed; its stdout.
fn info(dir: &Path, name: &str, json: bool) -> String {
    let d = dir.to_str().unwrap();
    let mut args = vec!["--plugin-dir", d, "plugins", "info", name];
    if json {
        args.push("--json");
    }
    let (ok, stdout, stderr) = run_hsmkit(&args);
    assert!(ok, "hsmkit {args:?} failed: {stderr}");
    stdout
}

/// The lines after `settings:`.
fn settings_section(stdout: &str) -> Vec<&str> {
    let mut lines = stdout.lines().skip_while(|l| *l != "settings:");
    assert_eq!(lines.next(), Some("settings:"), "{stdout}");
    lines.map(str::trim).collect()
}

#[test]
fn info_lists_each_declared_setting_on_one_line_then_state_dir() {
    let dir = plugin_dir_with(&[&bundled_plugin("dice")]);
    let stdout = info(dir.path(), "dice", false);
    let lines = settings_section(&stdout);
    let names: Vec<&str> = lines
        .iter()
        .map(|l| l.split_whitespace().next().unwrap_or(""))
        .collect();
    assert_eq!(
        names,
        [
            "uds_hex",
            "code_hash_hex",
            "config_hex",
            "authority_hash_hex",
            "mode",
            "registration_id",
            "root_ca_key_path",
            "allow_key_export",
            "cdi_extension_critical",
            "state_dir",
        ],
        "{stdout}"
    );
    let mode = lines.iter().find(|l| l.starts_with("mode ")).unwrap();
    assert!(
        mode.contains("optional") && mode.contains("not-configured, normal, debug or maintenance"),
        "{mode}"
    );
}

#[test]
fn info_marks_required_settings_and_json_carries_the_declaration() {
    let dir = plugin_dir_with(&[&bundled_plugin("pkcs11")]);
    let lines_text = info(dir.path(), "pkcs11", false);
    let lines = settings_section(&lines_text);
    let module = lines.iter().find(|l| l.starts_with("module ")).unwrap();
    assert!(module.contains("required"), "{module}");
    let pin_file = lines.iter().find(|l| l.starts_with("pin_file ")).unwrap();
    assert!(pin_file.contains("optional"), "{pin_file}");

    let v: Value = serde_json::from_str(&info(dir.path(), "pkcs11", true)).unwrap();
    assert_eq!(v["abiVersion"], "1.2");
    let settings = v["settings"].as_array().unwrap();
    assert_eq!(settings[0]["name"], "module");
    assert_eq!(settings[0]["required"], true);
    assert!(settings[0]["description"]
        .as_str()
        .unwrap()
        .contains("PKCS#11 library"));
    assert!(
        settings.iter().all(|s| s["name"] != "state_dir"),
        "state_dir is implied, not declared: {v}"
    );
}

#[test]
fn an_abi_1_0_plugin_says_settings_not_declared() {
    let dir = plugin_dir_with(&[Path::new(hsm_fixture_loader_c::ABI_1_0)]);
    let file = dir.path().join("libhsm_fixture_abi_1_0.so");
    let stdout = info(dir.path(), file.to_str().unwrap(), false);
    assert!(stdout.contains("abi:          1.0"), "{stdout}");
    let lines = settings_section(&stdout);
    assert_eq!(lines.len(), 1, "{stdout}");
    assert!(lines[0].starts_with("settings not declared"), "{stdout}");

    let v: Value = serde_json::from_str(&info(dir.path(), file.to_str().unwrap(), true)).unwrap();
    assert_eq!(v["settings"], Value::Null, "{v}");
}
