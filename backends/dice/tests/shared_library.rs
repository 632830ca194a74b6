//! The built cdylib loaded the way a host loads it (dlopen + dlsym), not linked in.

mod common;

use common::{plugin_table, uds_hex, AbiInstance};
use hsm_plugin_sdk::hsm_api::{HsmPluginEntryFn, HSM_CAP_X509, HSM_ENTRY_SYMBOL};
use std::ffi::CStr;
use std::path::PathBuf;

/// `libhsmkit_plugin_dice.so`, which cargo builds next to this test binary.
fn library_path() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let deps = exe.parent().expect("deps folder");
    let path = deps.join("libhsmkit_plugin_dice.so");
    assert!(
        path.is_file(),
        "{} is missing: build the plugin first (cargo build -p hsmkit-plugin-dice)",
        path.display()
    );
    path
}

#[test]
fn dlopened_plugin_serves_the_same_identity() {
    // SAFETY: loading our own plugin, whose initialisers are plain Rust statics.
    let library = unsafe { libloading::Library::new(library_path()) }.expect("dlopen");
    // The host never unloads plugins; neither does this test.
    let library: &'static libloading::Library = Box::leak(Box::new(library));
    // SAFETY: the symbol has the ABI's entry type.
    let entry: libloading::Symbol<HsmPluginEntryFn> =
        unsafe { library.get(HSM_ENTRY_SYMBOL.as_bytes()) }.expect("entry symbol");
    let table = plugin_table(*entry);
    // SAFETY: the plugin's static NUL-terminated name.
    let name = unsafe { CStr::from_ptr(table.name) }.to_str().unwrap();
    assert_eq!(name, "dice");
    assert_ne!(table.capabilities & HSM_CAP_X509, 0);

    let state = tempfile::tempdir().unwrap();
    let uds = uds_hex(11);
    let settings = [
        ("state_dir", state.path().to_str().unwrap()),
        ("uds_hex", uds.as_str()),
    ];
    let loaded = AbiInstance::create_from(table, &settings).expect("create via dlopen");
    let linked = AbiInstance::create(&settings).expect("create linked");
    assert_eq!(loaded.chain_pem().unwrap(), linked.chain_pem().unwrap());
    assert_eq!(loaded.common_name().unwrap(), linked.common_name().unwrap());
}
