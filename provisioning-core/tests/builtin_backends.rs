//! hsmkit built with `--features builtin-backends`: the backends are linked in, selected by
//! name with no plugins folder at all, listed as builtin, and answer exactly as the same
//! backend loaded from its file does.
//!
//! Run: `cargo test -p provisioning-core --features builtin-backends --test builtin_backends`
//! (after `cargo build --workspace`, which builds the plugin files compared against).

mod support;

use dps_emulator::{Emulator, EmulatorConfig};
use serde_json::{json, Value};
use std::path::Path;
use support::*;

/// The backends compared against their files: (selection name, file suffix, settings).
const SOFTWARE_BACKENDS: [(&str, &str, &[&str]); 3] = [
    ("dice", "dice", &[]),
    ("tpm-sim", "tpm_sim", &[]),
    (
        "symmetric",
        "symmetric",
        &["--set", "registration_id=builtin-sym"],
    ),
];

/// `hsmkit --plugin-dir <empty> --state-dir STATE args...`, which must succeed; its JSON. The
/// folder exists (a missing `--plugin-dir` is an error, issue 18) and holds no plugin file.
fn hsmkit_json(state: &Path, args: &[&str]) -> Value {
    let empty = state.join("no-plugins-here");
    std::fs::create_dir_all(&empty).unwrap();
    let mut all = vec![
        "--plugin-dir",
        empty.to_str().unwrap(),
        "--state-dir",
        state.to_str().unwrap(),
    ];
    all.extend_from_slice(args);
    let (ok, stdout, stderr) = run_hsmkit(&all);
    assert!(ok, "hsmkit {args:?} failed: {stderr}");
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

#[test]
fn plugins_list_shows_every_backend_as_builtin_without_a_plugins_folder() {
    let state = tempfile::tempdir().unwrap();
    let list = hsmkit_json(state.path(), &["plugins", "list", "--json"]);
    let plugins = list["plugins"].as_array().unwrap();
    for name in ["dice", "tpm-sim", "tpm2", "pkcs11", "symmetric"] {
        let row = plugins
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("{name} missing from {list}"));
        assert_eq!(row["status"], "builtin", "{row}");
        assert_eq!(row["path"], format!("builtin:{name}"), "{row}");
        assert_eq!(row["layoutChecked"], true, "{row}");
        // Builtins declare their settings like their files do (ABI 1.1).
        assert_eq!(row["abiVersion"], "1.2", "{row}");
        assert!(row["settings"].is_array(), "{row}");
    }
    let pkcs11 = plugins.iter().find(|p| p["name"] == "pkcs11").unwrap();
    assert_eq!(pkcs11["settings"][0]["name"], "module", "{pkcs11}");
    assert_eq!(pkcs11["settings"][0]["required"], true, "{pkcs11}");
    assert_eq!(plugins.len(), 5, "no file was found: {list}");
}

#[test]
fn builtin_and_loaded_backends_give_the_same_answers_for_the_same_state() {
    for (name, file, settings) in SOFTWARE_BACKENDS {
        let state = tempfile::tempdir().unwrap();
        let plugins = plugin_dir_with(&[&bundled_plugin(file)]);
        let so = plugins.path().join(format!("libhsmkit_plugin_{file}.so"));
        let so = so.to_str().unwrap();

        // Metadata: everything but where it came from and how long that took.
        let mut builtin = hsmkit_json(state.path(), &["plugins", "info", name, "--json"]);
        let mut loaded = hsmkit_json(state.path(), &["plugins", "info", so, "--json"]);
        assert_eq!(builtin["path"], format!("builtin:{name}"));
        assert_eq!(loaded["path"], so);
        for v in [&mut builtin, &mut loaded] {
            let o = v.as_object_mut().unwrap();
            o.remove("path");
            o.remove("loadMillis");
        }
        assert_eq!(builtin, loaded, "{name}: metadata");

        // The first use creates the device's identity (symmetric prints its new key once);
        // after that, both answer from the same state.
        let enroll_info = |plugin: &str| {
            let mut args = vec!["enroll-info", "--plugin", plugin, "--json"];
            args.extend_from_slice(settings);
            hsmkit_json(state.path(), &args)
        };
        enroll_info(name);
        let builtin = enroll_info(name);
        let loaded = enroll_info(so);
        assert!(
            !builtin["registrationId"]
                .as_str()
                .unwrap_or_default()
                .is_empty(),
            "{builtin}"
        );
        assert_eq!(builtin, loaded, "{name}: enrollment information");
    }
    // The TPM identity (EK) and the DICE chain are in those answers.
    let state = tempfile::tempdir().unwrap();
    let tpm = hsmkit_json(
        state.path(),
        &["enroll-info", "--plugin", "tpm-sim", "--json"],
    );
    assert!(tpm["endorsementKey"].is_string(), "{tpm}");
    let dice = hsmkit_json(state.path(), &["enroll-info", "--plugin", "dice", "--json"]);
    assert!(dice["certificates"]["leafPem"].is_string(), "{dice}");
}

#[test]
fn provisions_through_a_builtin_backend_with_no_plugins_folder() {
    let root = tempfile::tempdir().unwrap();
    let emulator =
        Emulator::start_in_background(EmulatorConfig::new(root.path().join("emu"))).unwrap();
    let state = root.path().join("device");
    let info = hsmkit_json(&state, &["enroll-info", "--plugin", "tpm-sim", "--json"]);
    let reg = info["registrationId"].as_str().unwrap().to_string();
    emulator
        .enrollments()
        .create_individual(
            serde_json::from_value(json!({
                "registrationId": reg,
                "attestation": {"type": "tpm", "tpm": {"endorsementKey": info["endorsementKey"]}},
            }))
            .unwrap(),
        )
        .unwrap();
    let endpoint = emulator.endpoint();
    let ca = emulator.ca_cert_path().to_str().unwrap().to_string();
    let result = hsmkit_json(
        &state,
        &[
            "provision",
            "--plugin",
            "tpm-sim",
            "--id-scope",
            emulator.id_scope(),
            "--endpoint",
            &endpoint,
            "--trust-ca",
            &ca,
            "--json",
        ],
    );
    assert_eq!(result["status"], "assigned", "{result}");
    assert_eq!(result["attestation"], "tpm");
    assert_eq!(result["registrationId"], reg);
}
