//! The C SDK's view of libhsmkit_azure_hsm: `tests/c/sdk_host.c` calls the custom-HSM API in the
//! SDK's order (inits twice, create, the attestation's calls, destroy, deinits) against the
//! built `libhsmkit_azure_hsm.so` (and once against the `.a`), with `HSMKIT_CONFIG` naming a
//! config per backend; every value it prints is compared with what `hsmkit enroll-info --json`
//! prints for the same config and state. Each test starts what it needs (swtpm, a SoftHSM2
//! token) and fails with the reason when it is missing.
//!
//! Needs the workspace built first (`cargo build --workspace --features provisioning-core/demo`,
//! as the README test command does): the plugins, hsmkit and the library itself.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use hsm_test_support::{built_library, bundled_plugin, plugin_dir_with, profile_dir};
use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

const HEADER_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../api/include");
const HOST_SOURCE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/c/sdk_host.c");

/// How the host is linked.
#[derive(Clone, Copy)]
enum Link {
    Shared,
    Static,
}

/// Compiles the host once per link kind, the way a C SDK build links a custom HSM library.
fn host(link: Link) -> PathBuf {
    static SHARED: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    static STATIC: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    let cell = match link {
        Link::Shared => &SHARED,
        Link::Static => &STATIC,
    };
    cell.get_or_init(|| {
        let profile = profile_dir();
        let so = built_library("hsmkit_azure_hsm");
        assert_fresh(&so);
        assert_fresh(&profile.join("libhsmkit_azure_hsm.a"));
        let dir = tempfile::tempdir().expect("temp dir");
        let exe = dir.path().join("sdk_host");
        let mut cmd = Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()));
        cmd.args([
            "-std=c11",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-I",
            HEADER_DIR,
            HOST_SOURCE,
        ])
        .arg("-o")
        .arg(&exe);
        match link {
            Link::Shared => {
                cmd.arg(&so)
                    .arg(format!("-Wl,-rpath,{}", profile.display()));
            }
            Link::Static => {
                let a = profile.join("libhsmkit_azure_hsm.a");
                assert!(
                    a.is_file(),
                    "{} is missing: build the workspace first",
                    a.display()
                );
                // What `cargo rustc -- --print native-static-libs` lists for the archive.
                cmd.arg(&a).args([
                    "-ldl",
                    "-lgcc_s",
                    "-lutil",
                    "-lrt",
                    "-lpthread",
                    "-lm",
                    "-lc",
                ]);
            }
        }
        let status = cmd
            .status()
            .unwrap_or_else(|e| panic!("cannot run the C compiler ({e}); install gcc"));
        assert!(
            status.success(),
            "compiling {HOST_SOURCE} failed ({status})"
        );
        (dir, exe)
    })
    .1
    .clone()
}

/// `cargo test` does not rebuild the cdylib/staticlib the host links: refuse one older than
/// this crate's sources rather than test stale code.
fn assert_fresh(lib: &Path) {
    let modified = |p: &Path| {
        std::fs::metadata(p)
            .and_then(|m| m.modified())
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    };
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let newest = std::fs::read_dir(&src)
        .expect("src/")
        .map(|e| modified(&e.expect("src/ entry").path()))
        .max()
        .expect("sources");
    assert!(
        modified(lib) >= newest,
        "{} is older than {}: rebuild it (`cargo build -p hsmkit-azure-hsm`, or the workspace)",
        lib.display(),
        src.display()
    );
}

/// A private folder with a config file (0600) naming `plugin` and its settings, the plugin in
/// a private plugins folder, and a state folder.
struct Setup {
    plugin: String,
    _plugins: tempfile::TempDir,
    dir: tempfile::TempDir,
}

impl Setup {
    fn new(plugin: &str, plugin_file: &Path, settings: &[(&str, String)]) -> Setup {
        let plugins = plugin_dir_with(&[plugin_file]);
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let mut text = format!(
            "plugin_dir = {:?}\nstate_dir = {:?}\n\n[azure_custom_hsm]\nplugin = {plugin:?}\n\n[plugins.{plugin}]\n",
            plugins.path().display().to_string(),
            dir.path().join("state").display().to_string(),
        );
        for (k, v) in settings {
            text.push_str(&format!("{k} = {v:?}\n"));
        }
        let config = dir.path().join("hsmkit.toml");
        std::fs::write(&config, text).unwrap();
        std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600)).unwrap();
        Setup {
            plugin: plugin.to_string(),
            _plugins: plugins,
            dir,
        }
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("hsmkit.toml")
    }

    fn command(&self, program: &Path) -> Command {
        let mut cmd = Command::new(program);
        cmd.env("HSMKIT_CONFIG", self.config())
            .env_remove("HSMKIT_PLUGIN_DIR")
            .env_remove("HSMKIT_STATE_DIR")
            .env_remove("RUST_LOG");
        cmd
    }

    /// Runs the host; its `name=value` lines, and its stderr.
    fn host(&self, link: Link, args: &[&str]) -> (HashMap<String, String>, String) {
        let out = self
            .command(&host(link))
            .args(args)
            .output()
            .expect("run sdk_host");
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            out.status.success(),
            "sdk_host {args:?} failed ({}):\n{stderr}",
            out.status
        );
        (values(&out), stderr)
    }

    /// `hsmkit enroll-info --json` for the same config and state.
    fn enroll_info(&self, attestation: &str) -> serde_json::Value {
        let out = self
            .command(&profile_dir().join("hsmkit"))
            // hsmkit reads `plugin`, not [azure_custom_hsm]: named here.
            .args(["enroll-info", "--json", "--plugin", &self.plugin])
            .args(["--attestation", attestation])
            .output()
            .expect("run hsmkit (build the workspace first)");
        assert!(
            out.status.success(),
            "hsmkit enroll-info failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("enroll-info JSON")
    }
}

fn values(out: &Output) -> HashMap<String, String> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn text(values: &HashMap<String, String>, name: &str) -> String {
    let hex = values
        .get(name)
        .unwrap_or_else(|| panic!("sdk_host printed no {name}: {values:?}"));
    String::from_utf8(hex::decode(hex).expect("hex")).expect("UTF-8")
}

fn bytes(values: &HashMap<String, String>, name: &str) -> Vec<u8> {
    hex::decode(
        values
            .get(name)
            .unwrap_or_else(|| panic!("sdk_host printed no {name}: {values:?}")),
    )
    .expect("hex")
}

/// The TPM flow: EK and SRK equal enroll-info's EK (and the registration id the SDK derives
/// from it), and a DPS challenge made by the emulator's code for them activates through the C
/// API; both handles' signatures are HMAC-SHA256 under the challenge's identity key.
fn tpm_round_trip(setup: &Setup) {
    let (first, _) = setup.host(Link::Shared, &["tpm"]);
    let ek = bytes(&first, "ek");
    let srk = bytes(&first, "srk");
    let info = setup.enroll_info("tpm");
    assert_eq!(
        info["endorsementKey"],
        B64.encode(&ek),
        "EK differs from enroll-info"
    );
    assert_eq!(
        info["registrationId"],
        dps_proto::tpm_registration_id(&ek),
        "the SDK's registration id (base32 of SHA-256 of the EK) differs from enroll-info"
    );

    let challenge =
        hsm_tpm_common::dps::make_dps_challenge(&ek, &srk).expect("a DPS challenge for EK/SRK");
    let blob = setup.dir.path().join("authentication-key.bin");
    std::fs::write(&blob, &challenge.blob).unwrap();
    let data = "0ne00000001%2fregistrations%2fdevice\n1700000000";
    let (second, _) = setup.host(Link::Shared, &["tpm", blob.to_str().unwrap(), data]);
    assert_eq!(bytes(&second, "ek"), ek, "EK changed between processes");
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&challenge.identity_key).unwrap();
    mac.update(data.as_bytes());
    let expected = mac.finalize().into_bytes().to_vec();
    assert_eq!(bytes(&second, "signature"), expected, "sign_with_identity");
    assert_eq!(
        bytes(&second, "signature2"),
        expected,
        "a second handle signs with the persisted identity key"
    );
}

#[test]
fn tpm_sim_through_the_c_api() {
    let setup = Setup::new("tpm-sim", &bundled_plugin("tpm_sim"), &[]);
    tpm_round_trip(&setup);
}

#[test]
fn tpm2_on_swtpm_through_the_c_api() {
    let swtpm = hsm_tpm_common::swtpm::Swtpm::start().unwrap_or_else(|e| panic!("{e}"));
    let setup = Setup::new("tpm2", &bundled_plugin("tpm2"), &[("tcti", swtpm.tcti())]);
    tpm_round_trip(&setup);
}

/// Certificate and common name equal enroll-info's leaf and registration id.
fn x509_matches_enroll_info(
    setup: &Setup,
    values: &HashMap<String, String>,
) -> x509_cert::Certificate {
    use der::DecodePem;
    let info = setup.enroll_info("x509");
    assert_eq!(
        values.get("common_name").map(String::as_str),
        info["registrationId"].as_str(),
        "common name differs from enroll-info's registration id"
    );
    let chain = text(values, "cert");
    let certs = x509_cert::Certificate::load_pem_chain(chain.as_bytes()).expect("PEM chain");
    let leaf = x509_cert::Certificate::from_pem(
        info["certificates"]["leafPem"]
            .as_str()
            .expect("enroll-info leafPem")
            .as_bytes(),
    )
    .expect("enroll-info leaf");
    assert_eq!(
        certs.first(),
        Some(&leaf),
        "the chain's first certificate is not the leaf"
    );
    leaf
}

#[test]
fn pkcs11_on_softhsm_gives_the_certificate_and_refuses_the_key() {
    use hsmkit_backend_pkcs11::config::PinSource;
    use hsmkit_backend_pkcs11::provision::{init_device, InitOptions};
    use hsmkit_backend_pkcs11::uri::Pkcs11Uri;
    let token =
        hsmkit_backend_pkcs11::softhsm::create_token("azure-hsm").unwrap_or_else(|e| panic!("{e}"));
    let out = init_device(&InitOptions {
        module: token.module.clone(),
        token: Pkcs11Uri::parse(&token.uri()).expect("token URI"),
        pin: PinSource::File(token.pin_file.clone()),
        label: "sdk-device".into(),
        id: None,
        common_name: "pkcs11-sdk-device".into(),
        ca: None,
        validity_days: 30,
    })
    .unwrap_or_else(|e| panic!("device init on SoftHSM: {e}"));
    let setup = Setup::new(
        "pkcs11",
        &bundled_plugin("pkcs11"),
        &[
            ("module", token.module.display().to_string()),
            ("token_uri", token.uri()),
            ("pin_file", token.pin_file.display().to_string()),
            ("key_uri", out.key_uri.clone()),
            ("cert_uri", out.cert_uri.clone()),
        ],
    );
    let (values, stderr) = setup.host(Link::Shared, &["x509"]);
    x509_matches_enroll_info(&setup, &values);
    assert_eq!(
        values.get("common_name").map(String::as_str),
        Some("pkcs11-sdk-device")
    );
    assert_eq!(
        values.get("key_error").map(String::as_str),
        Some("1"),
        "{values:?}"
    );
    assert!(!values.contains_key("key"));
    assert!(
        stderr.contains("hsm_client_get_key failed")
            && stderr.contains("does not export its private key"),
        "the refusal is logged with its reason:\n{stderr}"
    );
    assert!(!stderr.contains("PRIVATE KEY"), "{stderr}");
    assert!(
        !stderr.contains('\x1b'),
        "no colour codes into a log file: {stderr}"
    );
}

#[test]
fn dice_with_export_allowed_gives_the_leaf_key() {
    use pkcs8::DecodePrivateKey;
    let setup = Setup::new(
        "dice",
        &bundled_plugin("dice"),
        &[("allow_key_export", "true".into())],
    );
    let (values, _) = setup.host(Link::Shared, &["x509"]);
    let leaf = x509_matches_enroll_info(&setup, &values);
    let key_pem = text(&values, "key");
    let key = p256::SecretKey::from_pkcs8_pem(&key_pem).expect("a PKCS#8 P-256 key PEM");
    let spki = leaf
        .tbs_certificate
        .subject_public_key_info
        .subject_public_key
        .raw_bytes()
        .to_vec();
    let public = p256::PublicKey::from_sec1_bytes(&spki).expect("P-256 leaf key");
    assert_eq!(key.public_key(), public, "get_key is the leaf's key");
}

#[test]
fn dice_without_export_refuses_the_key() {
    let setup = Setup::new("dice", &bundled_plugin("dice"), &[]);
    let (values, stderr) = setup.host(Link::Shared, &["x509"]);
    x509_matches_enroll_info(&setup, &values);
    assert_eq!(values.get("key_error").map(String::as_str), Some("1"));
    assert!(
        stderr.contains("does not export its private key"),
        "{stderr}"
    );
}

#[test]
fn symmetric_key_set_by_the_application_is_imported_and_returned() {
    let setup = Setup::new("symmetric", &bundled_plugin("symmetric"), &[]);
    let key = B64.encode([0x5au8; 32]);
    let (values, _) = setup.host(Link::Shared, &["symm", "sdk-symm-device", &key]);
    assert_eq!(
        values.get("registration_name").map(String::as_str),
        Some("sdk-symm-device")
    );
    assert_eq!(values.get("symm_key"), Some(&key), "get_symm_key");

    // The same state, seen by hsmkit: the imported id, and a key it will not show again.
    let info = setup.enroll_info("symmetric-key");
    assert_eq!(info["registrationId"], "sdk-symm-device");
    assert!(info.get("primaryKey").is_none(), "{info}");

    // The plugin signs with the imported key.
    let plugin =
        provisioning_core::plugin::LoadedPlugin::load(&bundled_plugin("symmetric")).unwrap();
    let state = setup.dir.path().join("state").display().to_string();
    let instance =
        provisioning_core::plugin::PluginInstance::create(&plugin, &[("state_dir", state)])
            .unwrap();
    let sig = instance.symmetric_key().unwrap().sign(b"probe").unwrap();
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&[0x5au8; 32]).unwrap();
    mac.update(b"probe");
    assert_eq!(&sig[..], &mac.finalize().into_bytes()[..]);

    // A later process whose application set no key: the id still, the key never.
    let (later, stderr) = setup.host(Link::Shared, &["symm"]);
    assert_eq!(
        later.get("registration_name").map(String::as_str),
        Some("sdk-symm-device")
    );
    assert_eq!(later.get("symm_key_error").map(String::as_str), Some("1"));
    assert!(
        stderr.contains("hsm_client_get_symm_key failed")
            && stderr.contains("never exports symmetric keys"),
        "{stderr}"
    );
    assert!(!stderr.contains(&key), "{stderr}");
}

#[test]
fn symmetric_key_from_enroll_info_gives_the_same_registration_name() {
    let setup = Setup::new(
        "symmetric",
        &bundled_plugin("symmetric"),
        &[("registration_id", "enrolled-symm-device".into())],
    );
    // enroll-info generates and imports the key; the C SDK sees the same device.
    let info = setup.enroll_info("symmetric-key");
    assert!(info["primaryKey"].is_string(), "{info}");
    let (values, _) = setup.host(Link::Shared, &["symm"]);
    assert_eq!(
        values.get("registration_name").map(String::as_str),
        info["registrationId"].as_str()
    );
    // With the enrolled key given back by the application, nothing is re-imported and
    // get_symm_key returns it.
    let key = info["primaryKey"].as_str().unwrap();
    let (values, _) = setup.host(Link::Shared, &["symm", "enrolled-symm-device", key]);
    assert_eq!(values.get("symm_key").map(String::as_str), Some(key));
}

#[test]
fn the_static_archive_links_and_serves_the_same_device() {
    let setup = Setup::new("tpm-sim", &bundled_plugin("tpm_sim"), &[]);
    let (shared, _) = setup.host(Link::Shared, &["tpm"]);
    let (archived, _) = setup.host(Link::Static, &["tpm"]);
    assert_eq!(shared.get("ek"), archived.get("ek"));
    let info = setup.enroll_info("tpm");
    assert_eq!(info["endorsementKey"], B64.encode(bytes(&archived, "ek")));
}

#[test]
fn no_handle_after_the_last_deinit_and_handles_stay_with_their_interface() {
    let setup = Setup::new("dice", &bundled_plugin("dice"), &[]);
    let (values, stderr) = setup.host(Link::Shared, &["lifecycle"]);
    assert_eq!(
        values.get("common_name").map(String::as_str),
        setup.enroll_info("x509")["registrationId"].as_str()
    );
    assert_eq!(
        values.get("wrong_handle_refused").map(String::as_str),
        Some("1")
    );
    assert!(
        stderr.contains("hsm_client_x509_create failed: hsm_client_tpm_init/hsm_client_x509_init has not been called"),
        "{stderr}"
    );
    assert!(
        stderr.contains("the handle was made by the X.509 interface, not the symmetric-key one"),
        "{stderr}"
    );
}

#[test]
fn set_symm_key_info_refuses_half_or_malformed_input() {
    let setup = Setup::new("symmetric", &bundled_plugin("symmetric"), &[]);
    let (values, stderr) = setup.host(Link::Shared, &["symm-misuse"]);
    assert_eq!(values.get("misuse_refused").map(String::as_str), Some("1"));
    assert!(
        stderr.contains("a registration name without a key"),
        "{stderr}"
    );
    assert!(
        stderr.contains("the symmetric key is not base64"),
        "{stderr}"
    );
}

#[test]
fn init_fails_with_a_reason_without_a_config() {
    let out = Command::new(host(Link::Shared))
        .arg("tpm")
        .env_remove("HSMKIT_CONFIG")
        .output()
        .expect("run sdk_host");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("hsm_client_x509_init failed")
            && stderr.contains("HSMKIT_CONFIG is not set"),
        "{stderr}"
    );
}
