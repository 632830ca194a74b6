//! Module sharing and finalize, alone in its own test binary so no other test holds the module.
//!
//! The harness keeps the system SoftHSM initialized for the whole process, so finalize is tested
//! on a private copy of the module file: the dynamic loader maps a copy with another inode as a
//! separate library instance, which reads the same token folder.

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use hsm_plugin_sdk::{ErrorCode, HsmPlugin, PluginConfig, X509Hsm};
use hsmkit_backend_pkcs11::session::ModuleLease;
use hsmkit_backend_pkcs11::softhsm::create_token;
use hsmkit_backend_pkcs11::Pkcs11Plugin;

fn initialize(ctx: &Pkcs11) -> Result<(), CkError> {
    ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
}

#[test]
fn instances_share_the_module_and_the_last_one_finalizes() {
    let tok = create_token("registry").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        ModuleLease::users(&tok.module),
        1,
        "the harness keeps one lease"
    );
    let dir = tempfile::tempdir().unwrap();
    let module = dir.path().join("libsofthsm2-copy.so");
    std::fs::copy(&tok.module, &module).unwrap();
    let config = PluginConfig::from_pairs([
        ("module", module.display().to_string()),
        ("token_uri", tok.uri()),
        ("pin_file", tok.pin_file.display().to_string()),
        ("cert_uri", "pkcs11:object=none".to_string()),
    ]);
    let a = Pkcs11Plugin::create(&config).unwrap();
    let b = Pkcs11Plugin::create(&config).unwrap();
    assert_eq!(ModuleLease::users(&module), 2);
    assert_eq!(ModuleLease::initialized_by_us(&module), Some(true));

    // An outside context on the same library (it keeps the library mapped, so its state can be
    // observed after the plugin lets go) sees the module initialized while instances live.
    let observer = Pkcs11::new(&module).unwrap();
    assert!(matches!(
        initialize(&observer),
        Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _))
    ));

    drop(a);
    assert_eq!(ModuleLease::users(&module), 1);
    // Still initialized and logged in for b: the lookup reaches the token and finds nothing.
    let e = b.certificate_chain_pem().unwrap_err();
    assert_eq!(e.code(), ErrorCode::NotFound, "{e}");
    drop(b);
    assert_eq!(ModuleLease::users(&module), 0);

    // The last instance finalized the module: initializing it now succeeds.
    initialize(&observer).expect("the module must have been finalized");
    // The observer now owns the initialization: a new instance shares it and must not
    // finalize it when it goes.
    let c = Pkcs11Plugin::create(&config).unwrap();
    assert_eq!(ModuleLease::initialized_by_us(&module), Some(false));
    assert_eq!(
        c.certificate_chain_pem().unwrap_err().code(),
        ErrorCode::NotFound
    );
    drop(c);
    assert!(matches!(
        initialize(&observer),
        Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _))
    ));
    observer.finalize().unwrap();
    // The harness's own lease on the system module was never touched.
    assert_eq!(ModuleLease::users(&tok.module), 1);
}
