//! Shared by the tests and the benchmark: SoftHSM tokens with a device on them, and the plugin
//! as a host sees it: the built `libhsmkit_plugin_pkcs11.so` loaded through provisioning-core's
//! loader (ABI checks, function tables, buffers and `last_error` are the host's, not re-done
//! here).
//!
//! The loaded library is a second copy of this crate next to the rlib the harness links, with
//! its own module registry. The harness initializes SoftHSM first and keeps it initialized, so
//! the library's copy finds it already initialized, shares it and never finalizes it.

#![allow(dead_code, unreachable_pub)] // shared by several test binaries, which see it through `pub`

use hsm_test_support::bundled_plugin;
use hsmkit_backend_pkcs11::config::PinSource;
use hsmkit_backend_pkcs11::provision::{init_device, CaFiles, InitOptions, InitOutcome};
use hsmkit_backend_pkcs11::softhsm::{create_token, TestToken};
use hsmkit_backend_pkcs11::uri::Pkcs11Uri;
use provisioning_core::plugin::{LoadedPlugin, PluginError, PluginInstance};
use std::sync::{Arc, OnceLock};

/// The built plugin library, loaded once per process (a loaded plugin is never unloaded).
pub fn plugin() -> &'static Arc<LoadedPlugin> {
    static PLUGIN: OnceLock<Arc<LoadedPlugin>> = OnceLock::new();
    PLUGIN.get_or_init(|| {
        let path = bundled_plugin("pkcs11");
        LoadedPlugin::load(&path).unwrap_or_else(|e| panic!("loading {}: {e}", path.display()))
    })
}

/// `create` on the built plugin with the given settings.
pub fn instance<K: AsRef<str>, V: AsRef<str>>(
    settings: &[(K, V)],
) -> Result<PluginInstance, PluginError> {
    PluginInstance::create(plugin(), settings)
}

/// The plugin's own message of a failed call.
pub fn message(e: &PluginError) -> &str {
    match e {
        PluginError::Call { message, .. } => message,
        other => panic!("not a failed plugin call: {other}"),
    }
}

/// A new SoftHSM token; panics with the harness's install hint when SoftHSM2 is missing.
pub fn token(prefix: &str) -> TestToken {
    create_token(prefix).unwrap_or_else(|e| panic!("{e}"))
}

/// Runs the device setup on `tok`: self-signed, or signed by `ca`.
pub fn init(tok: &TestToken, label: &str, cn: &str, ca: Option<CaFiles>) -> InitOutcome {
    init_device(&InitOptions {
        module: tok.module.clone(),
        token: Pkcs11Uri::parse(&tok.uri()).unwrap_or_else(|e| panic!("token URI: {e}")),
        pin: PinSource::File(tok.pin_file.clone()),
        label: label.into(),
        id: None,
        common_name: cn.into(),
        ca,
        validity_days: 30,
    })
    .unwrap_or_else(|e| panic!("init failed: {e}"))
}

/// Runs the self-signed device setup on `tok`.
pub fn init_self_signed(tok: &TestToken, label: &str, cn: &str) -> InitOutcome {
    init(tok, label, cn, None)
}

/// The settings of an X.509 instance for a device made by [`init_self_signed`].
pub fn x509_settings(tok: &TestToken, out: &InitOutcome) -> Vec<(String, String)> {
    vec![
        ("module".into(), tok.module.display().to_string()),
        ("token_uri".into(), tok.uri()),
        ("pin_file".into(), tok.pin_file.display().to_string()),
        ("key_uri".into(), out.key_uri.clone()),
        ("cert_uri".into(), out.cert_uri.clone()),
    ]
}
