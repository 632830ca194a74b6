//! Module sharing and finalize, alone in its own test binary so no other test holds the module.

use hsm_plugin_sdk::{HsmPlugin, PluginConfig, X509Hsm};
use hsmkit_plugin_pkcs11::session::ModuleLease;
use hsmkit_plugin_pkcs11::softhsm::create_token;
use hsmkit_plugin_pkcs11::Pkcs11Plugin;

#[test]
fn instances_share_the_module_and_the_last_one_finalizes() {
    let tok = create_token("registry").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        ModuleLease::users(&tok.module),
        0,
        "the harness must release the module"
    );
    let config = PluginConfig::from_pairs([
        ("module", tok.module.display().to_string()),
        ("token_uri", tok.uri()),
        ("pin_file", tok.pin_file.display().to_string()),
        ("cert_uri", "pkcs11:object=none".to_string()),
    ]);
    let a = Pkcs11Plugin::create(&config).unwrap();
    let mut b = Pkcs11Plugin::create(&config).unwrap();
    assert_eq!(ModuleLease::users(&tok.module), 2);
    drop(a);
    assert_eq!(ModuleLease::users(&tok.module), 1);
    // Still initialized and logged in for b: the lookup reaches the token and finds nothing.
    let e = b.certificate_chain_pem().unwrap_err();
    assert_eq!(e.code(), hsm_plugin_sdk::ErrorCode::NotFound, "{e}");
    drop(b);
    assert_eq!(ModuleLease::users(&tok.module), 0);
    // Finalized: a new instance initializes the module again and logs in afresh.
    let mut c = Pkcs11Plugin::create(&config).unwrap();
    assert_eq!(ModuleLease::users(&tok.module), 1);
    assert_eq!(
        c.certificate_chain_pem().unwrap_err().code(),
        hsm_plugin_sdk::ErrorCode::NotFound
    );
}
