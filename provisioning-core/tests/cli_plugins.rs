//! `hsmkit plugins list|info` and `hsmkit enroll-info` as a user runs them: a plugins folder
//! with every bundled plugin, the C example, and planted bad files.

mod support;

use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use support::*;

const BUNDLED: &[&str] = &["symmetric", "dice", "tpm_sim", "tpm2", "pkcs11"];

fn hsmkit(args: &[&str]) -> (bool, String, String) {
    run_hsmkit(args)
}

fn planted_folder() -> tempfile::TempDir {
    let mut files: Vec<std::path::PathBuf> = BUNDLED.iter().map(|b| bundled_plugin(b)).collect();
    files.push(Path::new(hsmkit_c_example_plugin::PLUGIN_PATH).to_path_buf());
    files.push(Path::new(hsm_fixture_loader_c::MISSING_ENTRY).to_path_buf());
    files.push(Path::new(hsm_fixture_loader_c::ABI_MAJOR_2).to_path_buf());
    files.push(built_library("hsm_fixture_layout_mismatch"));
    files.push(built_library("hsm_fixture_panic_entry"));
    let refs: Vec<&Path> = files.iter().map(|p| p.as_path()).collect();
    let dir = plugin_dir_with(&refs);
    std::fs::write(dir.path().join("README.txt"), "not a plugin").unwrap();
    let mut foreign = std::fs::read(bundled_plugin("symmetric")).unwrap();
    foreign[18..20].copy_from_slice(
        &(if cfg!(target_arch = "aarch64") {
            62u16
        } else {
            183u16
        })
        .to_le_bytes(),
    );
    std::fs::write(dir.path().join("libforeign_arch.so"), foreign).unwrap();
    let writable = dir.path().join("libworld_writable.so");
    std::fs::copy(bundled_plugin("symmetric"), &writable).unwrap();
    std::fs::set_permissions(&writable, std::fs::Permissions::from_mode(0o666)).unwrap();
    dir
}

#[test]
fn plugins_list_shows_loaded_and_refused_with_reasons() {
    let dir = planted_folder();
    let d = dir.path().to_str().unwrap();
    let (ok, stdout, stderr) = hsmkit(&["--plugin-dir", d, "plugins", "list", "--json"]);
    assert!(ok, "{stderr}");
    let v: Value = serde_json::from_str(&stdout).unwrap();
    let plugins = v["plugins"].as_array().unwrap();
    let by_file = |name: &str| -> &Value {
        plugins
            .iter()
            .find(|p| p["path"].as_str().unwrap().ends_with(name))
            .unwrap_or_else(|| panic!("{name} not listed: {stdout}"))
    };
    for (file, name) in [
        ("libhsmkit_plugin_symmetric.so", "symmetric"),
        ("libhsmkit_plugin_dice.so", "dice"),
        ("libhsmkit_plugin_tpm_sim.so", "tpm-sim"),
        ("libhsmkit_plugin_tpm2.so", "tpm2"),
        ("libhsmkit_plugin_pkcs11.so", "pkcs11"),
        ("libhsmkit_plugin_c_example.so", "c-example"),
    ] {
        let p = by_file(file);
        assert_eq!(p["status"], "loaded", "{p}");
        assert_eq!(p["name"], name, "{p}");
        assert!(p["capabilities"].is_object(), "{p}");
    }
    for (file, kind, words) in [
        ("README.txt", "not-shared-library", "not a shared library"),
        ("libforeign_arch.so", "wrong-architecture", "built for"),
        (
            "libhsm_fixture_missing_entry.so",
            "missing-entry",
            "hsm_plugin_entry",
        ),
        (
            "libhsm_fixture_abi_major_2.so",
            "abi-major-mismatch",
            "plugin ABI 2.3",
        ),
        (
            "libhsm_fixture_layout_mismatch.so",
            "layout-mismatch",
            "capabilities",
        ),
        (
            "libhsm_fixture_panic_entry.so",
            "entry-panicked",
            "panicked",
        ),
        ("libworld_writable.so", "insecure-permissions", "chmod go-w"),
    ] {
        let p = by_file(file);
        assert_eq!(p["status"], "refused", "{p}");
        assert_eq!(p["refusedBecause"], kind, "{p}");
        assert!(p["name"].is_null(), "{p}");
        let reason = p["reason"].as_str().unwrap();
        assert!(reason.contains(words), "{file}: {reason}");
    }
    // The table for people says the same.
    let (ok, text, _) = hsmkit(&["--plugin-dir", d, "plugins", "list"]);
    assert!(ok);
    assert!(
        text.contains("refused") && text.contains("tpm-sim"),
        "{text}"
    );
}

#[test]
fn plugins_info_and_unknown_names() {
    let dir = plugin_dir_with(&[&bundled_plugin("dice")]);
    let d = dir.path().to_str().unwrap();
    let (ok, stdout, stderr) = hsmkit(&["--plugin-dir", d, "plugins", "info", "dice", "--json"]);
    assert!(ok, "{stderr}");
    let v: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["name"], "dice");
    assert_eq!(v["capabilities"]["x509"], true);
    assert_eq!(v["layoutChecked"], true);
    let (ok, _, stderr) = hsmkit(&["--plugin-dir", d, "plugins", "info", "nope"]);
    assert!(!ok);
    assert!(stderr.contains("no plugin named `nope`"), "{stderr}");
}

#[test]
fn enroll_info_for_each_software_attestation() {
    let dir = plugin_dir_with(&[
        &bundled_plugin("tpm_sim"),
        &bundled_plugin("dice"),
        &bundled_plugin("symmetric"),
    ]);
    let d = dir.path().to_str().unwrap();
    let state = tempfile::tempdir().unwrap();
    let s = state.path().to_str().unwrap();

    let (ok, stdout, stderr) = hsmkit(&[
        "--plugin-dir",
        d,
        "--state-dir",
        s,
        "enroll-info",
        "--plugin",
        "tpm-sim",
        "--json",
    ]);
    assert!(ok, "{stderr}");
    let v: Value = serde_json::from_str(&stdout).unwrap();
    let id = v["registrationId"].as_str().unwrap();
    assert_eq!(id.len(), 52, "{id}");
    assert!(id
        .bytes()
        .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b)));
    let ek = v["endorsementKey"].as_str().unwrap();
    // Stable across runs: a second process reads the same simulated TPM.
    let (_, again, _) = hsmkit(&[
        "--plugin-dir",
        d,
        "--state-dir",
        s,
        "enroll-info",
        "--plugin",
        "tpm-sim",
        "--json",
    ]);
    let again: Value = serde_json::from_str(&again).unwrap();
    assert_eq!(again["endorsementKey"].as_str().unwrap(), ek);

    let out = state.path().join("dice-enroll");
    let (ok, stdout, stderr) = hsmkit(&[
        "--plugin-dir",
        d,
        "--state-dir",
        s,
        "enroll-info",
        "--plugin",
        "dice",
        "--json",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    let v: Value = serde_json::from_str(&stdout).unwrap();
    assert!(v["registrationId"].as_str().unwrap().starts_with("dice-"));
    assert!(out.join("leaf.pem").is_file() && out.join("root-ca.pem").is_file());
    assert!(out.join("enrollment.json").is_file());

    let (ok, stdout, stderr) = hsmkit(&[
        "--plugin-dir",
        d,
        "--state-dir",
        s,
        "enroll-info",
        "--plugin",
        "symmetric",
        "--set",
        "registration_id=sym-dev",
        "--json",
    ]);
    assert!(ok, "{stderr}");
    let v: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["registrationId"], "sym-dev");
    assert_eq!(v["primaryKey"].as_str().unwrap().len(), 44);
    // Asked again, the key stays inside and is not printed.
    let (ok, stdout, _) = hsmkit(&[
        "--plugin-dir",
        d,
        "--state-dir",
        s,
        "enroll-info",
        "--plugin",
        "symmetric",
        "--json",
    ]);
    assert!(ok);
    let v: Value = serde_json::from_str(&stdout).unwrap();
    assert!(v.get("primaryKey").is_none(), "{v}");

    let (ok, _, stderr) = hsmkit(&[
        "--plugin-dir",
        d,
        "--state-dir",
        s,
        "enroll-info",
        "--plugin",
        "dice",
        "--attestation",
        "tpm",
    ]);
    assert!(!ok);
    assert!(stderr.contains("does not implement tpm"), "{stderr}");
}
