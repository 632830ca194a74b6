//! The loader against real plugins: the bundled Rust plugin, the plain-C example, and fixture
//! libraries that are broken in exactly one way each.

mod support;

use hmac::{Hmac, Mac};
use provisioning_core::plugin::{
    settings_lines, LoadError, LoadedPlugin, PluginError, PluginErrorCode, PluginInstance,
    PluginSearchPath, PluginSetting, SETTINGS_NOT_DECLARED,
};
use sha2::Sha256;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use support::*;

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut m = Hmac::<Sha256>::new_from_slice(key).unwrap();
    m.update(data);
    m.finalize().into_bytes().to_vec()
}

fn state_config(dir: &Path) -> Vec<(String, String)> {
    vec![("state_dir".into(), dir.display().to_string())]
}

#[test]
fn rust_plugin_loads_with_layout_checked_and_signs_like_software_hmac() {
    let plugin = LoadedPlugin::load(&bundled_plugin("symmetric")).unwrap();
    let meta = plugin.metadata();
    assert_eq!(meta.name, "symmetric");
    assert!(meta.layout_checked, "SDK plugins export their layout");
    assert!(meta.capabilities.symmetric_key && !meta.capabilities.tpm);
    assert_eq!(meta.abi_version, "1.2");

    let state = tempfile::tempdir().unwrap();
    let inst = PluginInstance::create(&plugin, &state_config(state.path())).unwrap();
    let sym = inst.symmetric_key().unwrap();
    let err = sym.sign(b"x").unwrap_err();
    assert_eq!(err.code(), Some(PluginErrorCode::NotFound));
    assert!(err.to_string().contains("no symmetric key"), "{err}");
    let key = [7u8; 32];
    sym.import_key(Some("device-a"), &key).unwrap();
    assert_eq!(sym.registration_id().unwrap(), "device-a");
    assert_eq!(
        sym.sign(b"scope\n123").unwrap().to_vec(),
        hmac(&key, b"scope\n123")
    );
    let tpm_err = inst.tpm().unwrap_err();
    assert!(tpm_err.to_string().contains("symmetricKey"), "{tpm_err}");
}

#[test]
fn several_instances_of_one_plugin_are_independent() {
    let plugin = LoadedPlugin::load(&bundled_plugin("symmetric")).unwrap();
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = PluginInstance::create(&plugin, &state_config(a_dir.path())).unwrap();
    let b = PluginInstance::create(&plugin, &state_config(b_dir.path())).unwrap();
    a.symmetric_key()
        .unwrap()
        .import_key(Some("a"), &[1; 32])
        .unwrap();
    b.symmetric_key()
        .unwrap()
        .import_key(Some("b"), &[2; 32])
        .unwrap();
    let threads: Vec<_> = [(a, [1u8; 32]), (b, [2u8; 32])]
        .into_iter()
        .map(|(inst, key)| {
            std::thread::spawn(move || {
                for i in 0..200u32 {
                    let data = i.to_be_bytes();
                    assert_eq!(
                        inst.symmetric_key().unwrap().sign(&data).unwrap().to_vec(),
                        hmac(&key, &data)
                    );
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn one_sdk_instance_serves_threads_at_once_and_each_gets_its_own_error() {
    let plugin = LoadedPlugin::load(&bundled_plugin("symmetric")).unwrap();
    assert!(
        plugin.metadata().thread_safe,
        "SDK plugins declare concurrency"
    );
    let dir = tempfile::tempdir().unwrap();
    let inst = PluginInstance::create(&plugin, &state_config(dir.path())).unwrap();
    let key = [5u8; 32];
    inst.symmetric_key()
        .unwrap()
        .import_key(Some("shared"), &key)
        .unwrap();
    std::thread::scope(|scope| {
        // Signers and failing importers on the one instance at the same time. Each failure
        // must come back with its own message: a message slot shared by the threads would
        // hand some of them another thread's length.
        for t in 0..4u32 {
            let inst = &inst;
            scope.spawn(move || {
                let sym = inst.symmetric_key().unwrap();
                for i in 0..300u32 {
                    let data = [t.to_be_bytes(), i.to_be_bytes()].concat();
                    assert_eq!(sym.sign(&data).unwrap().to_vec(), hmac(&key, &data));
                }
            });
        }
        for bad_len in [3usize, 70] {
            let inst = &inst;
            scope.spawn(move || {
                let sym = inst.symmetric_key().unwrap();
                for _ in 0..300 {
                    let e = sym.import_key(None, &vec![1u8; bad_len]).unwrap_err();
                    assert_eq!(e.code(), Some(PluginErrorCode::InvalidArgument));
                    assert!(e.to_string().contains(&format!("got {bad_len}")), "{e}");
                }
            });
        }
    });
}

#[test]
fn plain_c_plugin_implements_the_abi() {
    let path = Path::new(hsmkit_c_example_plugin::PLUGIN_PATH);
    let dir = plugin_dir_with(&[path]);
    let plugin = LoadedPlugin::load(&dir.path().join(path.file_name().unwrap())).unwrap();
    assert_eq!(plugin.name(), "c-example");
    assert!(
        !plugin.metadata().layout_checked,
        "C plugins cannot export abi_stable layouts"
    );
    assert!(!plugin.metadata().thread_safe);
    let missing = PluginInstance::create(&plugin, &[("other", "x")]).unwrap_err();
    assert!(missing.to_string().contains("registration_id"), "{missing}");
    let inst = PluginInstance::create(&plugin, &[("registration_id", "c-device")]).unwrap();
    let sym = inst.symmetric_key().unwrap();
    assert_eq!(sym.registration_id().unwrap(), "c-device");
    let e = sym.sign(b"data").unwrap_err();
    assert_eq!(e.code(), Some(PluginErrorCode::NotFound));
    assert!(e.to_string().contains("no key imported"), "{e}");
    let key = [9u8; 32];
    sym.import_key(None, &key).unwrap();
    assert_eq!(sym.sign(b"data").unwrap().to_vec(), hmac(&key, b"data"));
    assert_eq!(
        sym.import_key(None, &[1; 3]).unwrap_err().code(),
        Some(PluginErrorCode::InvalidArgument)
    );
}

#[test]
fn a_text_file_is_not_a_shared_library() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("libhsmkit_plugin_fake.so");
    std::fs::write(&f, "#!/bin/sh\necho not a library\n").unwrap();
    let e = LoadedPlugin::load(&f).unwrap_err();
    assert!(matches!(e, LoadError::NotSharedLibrary { .. }), "{e}");
    assert!(e.to_string().contains("not a shared library"), "{e}");
}

#[test]
fn a_library_for_another_architecture_is_refused_before_dlopen() {
    // A real library with its ELF machine field switched to another architecture: exactly what
    // copying an aarch64 build onto an x86-64 device looks like to the loader.
    let mut bytes = std::fs::read(bundled_plugin("symmetric")).unwrap();
    let other: u16 = if cfg!(target_arch = "aarch64") {
        62
    } else {
        183
    };
    bytes[18..20].copy_from_slice(&other.to_le_bytes());
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("libhsmkit_plugin_foreign.so");
    std::fs::write(&f, bytes).unwrap();
    let e = LoadedPlugin::load(&f).unwrap_err();
    assert!(matches!(e, LoadError::WrongArchitecture { .. }), "{e}");
    let text = e.to_string();
    assert!(
        text.contains("aarch64") || text.contains("x86-64"),
        "{text}"
    );
}

#[test]
fn a_library_without_the_entry_symbol_is_refused() {
    let e = LoadedPlugin::load(Path::new(hsm_fixture_loader_c::MISSING_ENTRY)).unwrap_err();
    assert!(matches!(e, LoadError::MissingEntry { .. }), "{e}");
    assert!(e.to_string().contains("hsm_plugin_entry"), "{e}");
}

#[test]
fn an_abi_major_mismatch_names_both_versions() {
    let e = LoadedPlugin::load(Path::new(hsm_fixture_loader_c::ABI_MAJOR_2)).unwrap_err();
    assert!(matches!(e, LoadError::AbiMajorMismatch { .. }), "{e}");
    let text = e.to_string();
    assert!(
        text.contains("plugin ABI 2.3") && text.contains("host ABI 1.2"),
        "{text}"
    );
}

#[test]
fn a_layout_mismatch_names_the_type_and_field() {
    let e = LoadedPlugin::load(&built_library("hsm_fixture_layout_mismatch")).unwrap_err();
    assert!(matches!(e, LoadError::LayoutMismatch { .. }), "{e}");
    let text = e.to_string();
    assert!(text.contains("HsmPluginTable"), "{text}");
    assert!(text.contains("capabilities"), "{text}");
}

#[test]
fn a_panic_in_the_entry_point_is_caught_and_refused() {
    let e = LoadedPlugin::load(&built_library("hsm_fixture_panic_entry")).unwrap_err();
    assert!(matches!(e, LoadError::EntryPanicked { .. }), "{e}");
}

#[test]
fn a_declared_capability_without_its_table_is_refused() {
    let e = LoadedPlugin::load(Path::new(hsm_fixture_loader_c::BAD_CAPABILITIES)).unwrap_err();
    assert!(matches!(e, LoadError::MalformedTable { .. }), "{e}");
    assert!(e.to_string().contains("TPM table is NULL"), "{e}");
}

#[test]
fn a_null_function_entry_is_refused_before_the_table_is_used() {
    let e = LoadedPlugin::load(Path::new(hsm_fixture_conf_null_entry::NULL_ENTRY)).unwrap_err();
    assert!(matches!(e, LoadError::MalformedTable { .. }), "{e}");
    assert!(e.to_string().contains("`import_key` is NULL"), "{e}");
}

#[test]
fn a_newer_minor_is_accepted_and_its_trailing_entries_ignored() {
    let plugin = LoadedPlugin::load(Path::new(hsm_fixture_loader_c::NEWER_MINOR)).unwrap();
    assert_eq!(plugin.metadata().abi_version, "1.7");
    let inst = PluginInstance::create(&plugin, &[("k", "v")]).unwrap();
    assert_eq!(
        inst.symmetric_key().unwrap().registration_id().unwrap(),
        "newer-minor-device"
    );
}

#[test]
fn an_sdk_plugin_declares_its_settings_and_refuses_any_other_key() {
    let plugin = LoadedPlugin::load(&bundled_plugin("symmetric")).unwrap();
    assert_eq!(
        plugin.metadata().settings.as_deref(),
        Some(
            &[PluginSetting {
                name: "registration_id".into(),
                description:
                    "DPS registration id of the key; default: the one stored with the imported key"
                        .into(),
                required: false,
            }][..]
        )
    );
    let state = tempfile::tempdir().unwrap();
    let mut config = state_config(state.path());
    config.push(("registraton_id".into(), "typo".into()));
    let e = PluginInstance::create(&plugin, &config).unwrap_err();
    assert_eq!(e.code(), Some(PluginErrorCode::InvalidArgument), "{e}");
    assert!(
        e.to_string().contains(
            "unknown setting `registraton_id`; valid settings: registration_id, state_dir"
        ),
        "{e}"
    );
    assert!(
        !e.to_string().contains("typo"),
        "values are never echoed: {e}"
    );
    // The declared key and state_dir are accepted.
    config.pop();
    config.push(("registration_id".into(), "device-a".into()));
    let inst = PluginInstance::create(&plugin, &config).unwrap();
    assert_eq!(
        inst.symmetric_key().unwrap().registration_id().unwrap(),
        "device-a"
    );
}

#[test]
fn an_abi_1_0_plugin_still_loads_and_its_settings_are_not_declared() {
    let plugin = LoadedPlugin::load(Path::new(hsm_fixture_loader_c::ABI_1_0)).unwrap();
    let meta = plugin.metadata();
    assert_eq!(meta.abi_version, "1.0");
    assert_eq!(meta.settings, None);
    assert_eq!(
        settings_lines(meta.settings.as_deref()),
        [SETTINGS_NOT_DECLARED]
    );
    assert!(SETTINGS_NOT_DECLARED.starts_with("settings not declared"));
    // Its 1.0 entries work through the host's view of the table.
    let inst = PluginInstance::create(&plugin, &[("state_dir", "/nonexistent")]).unwrap();
    assert_eq!(
        inst.symmetric_key().unwrap().registration_id().unwrap(),
        "abi-1-0-device"
    );
}

#[test]
fn a_plugin_without_the_interface_says_it_cannot_hold_an_operational_key() {
    // ABI 1.0 (the table ends before the entry) and a newer minor that leaves it NULL.
    for (path, abi) in [
        (hsm_fixture_loader_c::ABI_1_0, "1.0"),
        (hsm_fixture_loader_c::NEWER_MINOR, "1.7"),
    ] {
        let plugin = LoadedPlugin::load(Path::new(path)).unwrap();
        assert!(!plugin.metadata().operational_key, "{path}");
        let inst = PluginInstance::create(&plugin, &[("state_dir", "/nonexistent")]).unwrap();
        let e = inst.operational_key().unwrap_err();
        assert!(matches!(e, PluginError::NoOperationalKey { .. }), "{e}");
        assert!(
            e.to_string()
                .contains(&format!("(ABI {abi}) cannot hold an operational key")),
            "{e}"
        );
        // Its older entries still work.
        assert!(inst.symmetric_key().unwrap().registration_id().is_ok());
    }
}

#[test]
fn the_symmetric_plugin_keeps_a_software_operational_key_for_the_next_instance() {
    use der::{asn1::ObjectIdentifier, Decode};
    let plugin = LoadedPlugin::load(&bundled_plugin("symmetric")).unwrap();
    assert!(plugin.metadata().operational_key);
    let state = tempfile::tempdir().unwrap();
    let inst = PluginInstance::create(&plugin, &state_config(state.path())).unwrap();
    let ops = inst.operational_key().unwrap();
    let e = ops.create_key("../escape").unwrap_err();
    assert!(
        matches!(e, PluginError::InvalidOperationalKeyLabel { .. }),
        "{e}"
    );
    let e = ops.public_key("op").unwrap_err();
    assert_eq!(e.code(), Some(PluginErrorCode::NotFound), "{e}");
    let spki = ops.create_key("op").unwrap().to_vec();
    let info = x509_cert::spki::SubjectPublicKeyInfoOwned::from_der(&spki).unwrap();
    assert_eq!(
        info.algorithm.oid,
        ObjectIdentifier::new_unwrap("1.2.840.10045.2.1"),
        "id-ecPublicKey"
    );
    let curve = info
        .algorithm
        .parameters
        .unwrap()
        .decode_as::<ObjectIdentifier>();
    assert_eq!(
        curve.unwrap(),
        ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7")
    );
    let sig = ops.sign_digest("op", &[3; 32]).unwrap();
    assert_eq!(sig[0], 0x30, "a DER Ecdsa-Sig-Value");
    ops.store_chain("op", "chain-pem").unwrap();
    drop(inst);
    let inst = PluginInstance::create(&plugin, &state_config(state.path())).unwrap();
    let ops = inst.operational_key().unwrap();
    assert_eq!(&ops.public_key("op").unwrap()[..], &spki[..]);
    assert_eq!(ops.chain("op").unwrap(), "chain-pem");
}

#[test]
fn a_1_1_table_with_an_empty_declaration_lists_state_dir_only() {
    let plugin = LoadedPlugin::load(Path::new(hsm_fixture_loader_c::NEWER_MINOR)).unwrap();
    assert_eq!(plugin.metadata().settings.as_deref(), Some(&[][..]));
    let lines = settings_lines(plugin.metadata().settings.as_deref());
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].starts_with("state_dir "), "{lines:?}");
}

#[test]
fn the_c_example_declares_its_setting_and_refuses_unknown_keys_by_hand() {
    let path = Path::new(hsmkit_c_example_plugin::PLUGIN_PATH);
    let dir = plugin_dir_with(&[path]);
    let plugin = LoadedPlugin::load(&dir.path().join(path.file_name().unwrap())).unwrap();
    let settings = plugin.metadata().settings.clone().unwrap();
    assert_eq!(settings.len(), 1);
    assert_eq!(settings[0].name, "registration_id");
    assert!(settings[0].required);
    let e = PluginInstance::create(
        &plugin,
        &[
            ("registration_id", "c-device"),
            ("state_dir", "/s"),
            ("bogus", "1"),
        ],
    )
    .unwrap_err();
    assert_eq!(e.code(), Some(PluginErrorCode::InvalidArgument), "{e}");
    assert!(
        e.to_string()
            .contains("unknown setting `bogus`; valid settings: registration_id, state_dir"),
        "{e}"
    );
}

#[test]
fn plugins_writable_by_others_are_refused() {
    let dir = plugin_dir_with(&[&bundled_plugin("symmetric")]);
    let f = dir.path().join("libhsmkit_plugin_symmetric.so");
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o777)).unwrap();
    let e = LoadedPlugin::load(&f).unwrap_err();
    assert!(matches!(e, LoadError::InsecurePermissions { .. }), "{e}");
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let e = LoadedPlugin::load(&f).unwrap_err();
    assert!(e.to_string().contains("its folder"), "{e}");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    LoadedPlugin::load(&f).unwrap();
}

#[test]
fn discovery_reports_every_file_and_finds_by_name() {
    let dir = plugin_dir_with(&[
        &bundled_plugin("symmetric"),
        Path::new(hsmkit_c_example_plugin::PLUGIN_PATH),
        Path::new(hsm_fixture_loader_c::MISSING_ENTRY),
    ]);
    std::fs::write(dir.path().join("notes.txt"), "stray file").unwrap();
    let search = PluginSearchPath::resolve_with(Some(dir.path()), None, None, None);
    let scan = search.scan();
    assert_eq!(scan.candidates.len(), 4);
    let loaded: Vec<_> = scan
        .candidates
        .iter()
        .filter_map(|c| c.result.as_ref().ok().map(|p| p.name().to_string()))
        .collect();
    assert_eq!(loaded.len(), 2, "{loaded:?}");
    assert!(search.find("c-example").is_ok());
    let e = search.find("nope").unwrap_err().to_string();
    assert!(
        e.contains("no plugin named `nope`") && e.contains("hsm_plugin_entry"),
        "{e}"
    );
}

#[test]
fn search_path_precedence() {
    let exe = Some(std::path::PathBuf::from("/opt/hsmkit/bin/hsmkit"));
    let p = PluginSearchPath::resolve_with(
        Some(Path::new("/flag")),
        Some(Path::new("/env")),
        Some(Path::new("/cfg")),
        exe.clone(),
    );
    assert_eq!(p.dirs.len(), 1);
    assert_eq!(p.dirs[0].path, Path::new("/flag"));
    let p = PluginSearchPath::resolve_with(
        None,
        Some(Path::new("/env")),
        Some(Path::new("/cfg")),
        exe.clone(),
    );
    assert_eq!(p.dirs[0].path, Path::new("/env"));
    let p = PluginSearchPath::resolve_with(None, None, Some(Path::new("/cfg")), exe.clone());
    assert_eq!(p.dirs[0].path, Path::new("/cfg"));
    let p = PluginSearchPath::resolve_with(None, None, None, exe);
    let dirs: Vec<_> = p
        .dirs
        .iter()
        .map(|d| d.path.display().to_string())
        .collect();
    assert_eq!(
        dirs,
        [
            "/opt/hsmkit/bin/plugins",
            "/opt/hsmkit/bin",
            "/usr/local/lib/hsmkit/plugins",
            "/usr/lib/hsmkit/plugins"
        ]
    );
}
