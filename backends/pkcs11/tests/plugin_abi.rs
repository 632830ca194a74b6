//! The built plugin library, loaded by the host's loader and driven through its C ABI, against
//! SoftHSM2: chain, ECDSA and RSA signatures verified by OpenSSL, HMAC equal to a software HMAC,
//! error codes with the CKR_ value named, two instances.

mod common;

use common::{init_self_signed, instance, message, token, x509_settings};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType};
use hmac::{Hmac, Mac};
use hsm_test_support::attacker::{give_away, marker_library, require_root};
use hsmkit_backend_pkcs11::session::TokenSession;
use hsmkit_backend_pkcs11::uri::Pkcs11Uri;
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Public};
use openssl::rsa::{Padding, Rsa};
use openssl::sign::{RsaPssSaltlen, Verifier};
use openssl::x509::X509;
use provisioning_core::plugin::{PluginErrorCode, PluginInstance, SignAlgorithm};
use sha2::{Digest, Sha256};
use std::os::unix::fs::PermissionsExt;

fn leaf_key(chain_pem: &str) -> PKey<Public> {
    X509::stack_from_pem(chain_pem.as_bytes()).unwrap()[0]
        .public_key()
        .unwrap()
}

fn verify(key: &PKey<Public>, message: &[u8], sig: &[u8], pss: Option<bool>) -> bool {
    let mut v = Verifier::new(MessageDigest::sha256(), key).unwrap();
    match pss {
        None => {}
        Some(false) => v.set_rsa_padding(Padding::PKCS1).unwrap(),
        Some(true) => {
            v.set_rsa_padding(Padding::PKCS1_PSS).unwrap();
            v.set_rsa_pss_saltlen(RsaPssSaltlen::custom(32)).unwrap();
            v.set_rsa_mgf1_md(MessageDigest::sha256()).unwrap();
        }
    }
    v.update(message).unwrap();
    v.verify(sig).unwrap()
}

#[test]
fn chain_and_ecdsa_signature_through_the_abi() {
    let tok = token("abi-x509");
    let out = init_self_signed(&tok, "abi-dev", "abi-device");
    let settings = x509_settings(&tok, &out);
    let p = instance(&settings).unwrap();
    let x = p.x509().unwrap();

    let chain = x.certificate_chain_pem().unwrap();
    assert_eq!(chain, out.certificate_pem);
    assert_eq!(x.common_name().unwrap(), "abi-device");
    let message = b"TLS CertificateVerify transcript";
    let sig = x
        .sign_digest(SignAlgorithm::EcdsaP256Sha256, &Sha256::digest(message))
        .unwrap();
    // The ABI promises DER, which OpenSSL parses directly.
    assert_eq!(sig[0], 0x30);
    assert!(verify(&leaf_key(&chain), message, &sig, None));

    let e = x.export_private_key_pem().unwrap_err();
    assert_eq!(e.code(), Some(PluginErrorCode::NotSupported), "{e:?}");
    let e = x
        .sign_digest(SignAlgorithm::EcdsaP384Sha384, &[0; 48])
        .unwrap_err();
    assert_eq!(e.code(), Some(PluginErrorCode::NotSupported), "{e:?}");
    let e = x
        .sign_digest(SignAlgorithm::EcdsaP256Sha256, &[0; 31])
        .unwrap_err();
    assert_eq!(e.code(), Some(PluginErrorCode::InvalidArgument), "{e:?}");
}

#[test]
fn rsa_pkcs1_and_pss_through_the_abi() {
    let tok = token("abi-rsa");
    let (n, e) = {
        let session = TokenSession::open(
            &tok.module,
            &Pkcs11Uri::parse(&tok.uri()).unwrap(),
            &tok.pin,
        )
        .unwrap();
        let common = [
            Attribute::Token(true),
            Attribute::Label(b"rsa-dev".to_vec()),
            Attribute::Id(vec![0x52]),
        ];
        let mut public = common.to_vec();
        public.extend([
            Attribute::ModulusBits(2048.into()),
            Attribute::PublicExponent(vec![1, 0, 1]),
            Attribute::Verify(true),
        ]);
        let mut private = common.to_vec();
        private.extend([
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Sign(true),
        ]);
        let (pub_handle, _) = session
            .session()
            .generate_key_pair(&Mechanism::RsaPkcsKeyPairGen, &public, &private)
            .unwrap();
        let n = session
            .attribute_bytes(pub_handle, AttributeType::Modulus)
            .unwrap();
        (n, vec![1u8, 0, 1])
    };
    let key = PKey::from_rsa(
        Rsa::from_public_components(
            openssl::bn::BigNum::from_slice(&n).unwrap(),
            openssl::bn::BigNum::from_slice(&e).unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    let token_uri = tok.uri();
    let settings = vec![
        ("module", tok.module.to_str().unwrap()),
        ("token_uri", token_uri.as_str()),
        ("pin_file", tok.pin_file.to_str().unwrap()),
        ("key_uri", "pkcs11:object=rsa-dev;id=%52"),
    ];
    let p = instance(&settings).unwrap();
    let x = p.x509().unwrap();
    let message = b"rsa message";
    let digest = Sha256::digest(message);
    let sig = x
        .sign_digest(SignAlgorithm::RsaPkcs1Sha256, &digest)
        .unwrap();
    assert_eq!(sig.len(), 256);
    assert!(verify(&key, message, &sig, Some(false)));
    let sig = x.sign_digest(SignAlgorithm::RsaPssSha256, &digest).unwrap();
    assert!(verify(&key, message, &sig, Some(true)));
    assert!(!verify(&key, b"other", &sig, Some(true)));
    let e = x
        .sign_digest(SignAlgorithm::EcdsaP256Sha256, &digest)
        .unwrap_err();
    assert_eq!(e.code(), Some(PluginErrorCode::InvalidArgument), "{e:?}");
}

#[test]
fn hmac_import_through_the_abi_matches_software() {
    let tok = token("abi-hmac");
    let token_uri = tok.uri();
    let settings = [
        ("module", tok.module.to_str().unwrap()),
        ("token_uri", token_uri.as_str()),
        ("pin_file", tok.pin_file.to_str().unwrap()),
        ("hmac_key_uri", "pkcs11:object=sym-abi"),
    ];
    let p = instance(&settings).unwrap();
    let s = p.symmetric_key().unwrap();
    let e = s.sign(b"x").unwrap_err();
    assert_eq!(e.code(), Some(PluginErrorCode::NotFound), "{e:?}");

    // A DPS symmetric key is 64 bytes once base64-decoded.
    let key: Vec<u8> = (0u8..64)
        .map(|i| i.wrapping_mul(91).wrapping_add(3))
        .collect();
    // No registration id: the ABI gets an empty one, as a host without one passes.
    s.import_key(None, &key).unwrap();
    assert_eq!(s.registration_id().unwrap(), "sym-abi");
    let data = b"0ne00000001%2Fregistrations%2Fsym-abi\n1893456000";
    let mut soft = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    soft.update(data);
    assert_eq!(
        s.sign(data).unwrap().to_vec(),
        soft.finalize().into_bytes().to_vec()
    );
}

#[test]
fn wrong_pin_and_missing_objects_give_abi_codes() {
    let tok = token("abi-err");
    let dir = tempfile::tempdir().unwrap();
    let wrong = dir.path().join("pin");
    std::fs::write(&wrong, "wrong-pin-0000").unwrap();
    let e = instance(&[
        ("module", tok.module.to_str().unwrap()),
        ("token_uri", &tok.uri()),
        ("pin_file", wrong.to_str().unwrap()),
    ])
    .expect_err("a wrong PIN must fail");
    assert_eq!(e.code(), Some(PluginErrorCode::Authentication), "{e:?}");
    assert!(message(&e).contains("CKR_PIN_INCORRECT"), "{e:?}");
    assert!(!message(&e).contains("wrong-pin-0000"));

    let p = instance(&[
        ("module", tok.module.to_str().unwrap()),
        ("token_uri", &tok.uri()),
        ("pin_file", tok.pin_file.to_str().unwrap()),
        ("key_uri", "pkcs11:object=absent"),
        ("cert_uri", "pkcs11:object=absent"),
    ])
    .unwrap();
    let x = p.x509().unwrap();
    let e = x
        .sign_digest(SignAlgorithm::EcdsaP256Sha256, &[0; 32])
        .unwrap_err();
    assert_eq!(e.code(), Some(PluginErrorCode::NotFound), "{e:?}");
    assert!(message(&e).contains("object=absent"), "{e:?}");
    assert_eq!(
        x.certificate_chain_pem().unwrap_err().code(),
        Some(PluginErrorCode::NotFound)
    );

    let e = instance(&[("token_uri", "pkcs11:token=x")]).expect_err("a missing module must fail");
    assert_eq!(e.code(), Some(PluginErrorCode::InvalidArgument), "{e:?}");
    assert!(message(&e).contains("`module`"), "{e:?}");
}

#[test]
fn two_abi_instances_in_one_process() {
    let tok = token("abi-two");
    let out = init_self_signed(&tok, "dev", "abi-two");
    let settings = x509_settings(&tok, &out);
    let a = instance(&settings).unwrap();
    let b = instance(&settings).unwrap();
    let key = leaf_key(&a.x509().unwrap().certificate_chain_pem().unwrap());
    let threads: Vec<_> = [a, b]
        .into_iter()
        .map(|p| {
            let key = key.clone();
            std::thread::spawn(move || {
                let x = p.x509().unwrap();
                for n in 0..25u32 {
                    let m = n.to_be_bytes();
                    let sig = x
                        .sign_digest(SignAlgorithm::EcdsaP256Sha256, &Sha256::digest(m))
                        .unwrap();
                    assert!(verify(&key, &m, &sig, None));
                }
                p
            })
        })
        .collect();
    let mut instances: Vec<PluginInstance> =
        threads.into_iter().map(|t| t.join().unwrap()).collect();
    // Destroying one leaves the other logged in and working.
    drop(instances.remove(0));
    let sig = instances[0]
        .x509()
        .unwrap()
        .sign_digest(SignAlgorithm::EcdsaP256Sha256, &Sha256::digest(b"after"))
        .unwrap();
    assert!(verify(&key, b"after", &sig, None));
}

/// A PKCS#11 module becomes code in the host: a module file another user owns and can write
/// (0666, uid 65534) is refused by name and reason, and its constructor never runs. Needs root
/// to give the file away; fails, never skips, without it.
#[test]
fn a_module_other_users_can_write_is_refused_before_it_runs() {
    require_root();
    let tok = token("abi-foreign-module");
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let marker = dir.path().join("marker");
    let module = marker_library(dir.path(), "evil-pkcs11", &marker);
    std::fs::set_permissions(&module, std::fs::Permissions::from_mode(0o666)).unwrap();
    give_away(&module);
    let e = instance(&[
        ("module", module.to_str().unwrap()),
        ("token_uri", &tok.uri()),
        ("pin_file", tok.pin_file.to_str().unwrap()),
    ])
    .expect_err("another user's writable module must be refused");
    assert_eq!(e.code(), Some(PluginErrorCode::InvalidArgument), "{e:?}");
    assert!(message(&e).contains("refused because"), "{e:?}");
    assert!(message(&e).contains("owned by uid 65534"), "{e:?}");
    assert!(!marker.exists(), "the module's code ran");
    // Ours but still writable by others: refused too.
    std::os::unix::fs::chown(&module, Some(0), Some(0)).unwrap();
    let e = instance(&[
        ("module", module.to_str().unwrap()),
        ("token_uri", &tok.uri()),
        ("pin_file", tok.pin_file.to_str().unwrap()),
    ])
    .expect_err("a world-writable module must be refused");
    assert!(message(&e).contains("chmod go-w"), "{e:?}");
    assert!(!marker.exists(), "the module's code ran");
}
