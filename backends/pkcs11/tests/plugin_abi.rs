//! The plugin through its C ABI against SoftHSM2: chain, ECDSA and RSA signatures verified by
//! OpenSSL, HMAC equal to a software HMAC, error codes with the CKR_ value named, two instances.

mod common;

use common::{borrowed, init_self_signed, token, x509_settings, AbiInstance};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType};
use hmac::{Hmac, Mac};
use hsm_plugin_sdk::hsm_api::{
    HSM_ERR_AUTHENTICATION, HSM_ERR_INVALID_ARGUMENT, HSM_ERR_NOT_FOUND, HSM_ERR_NOT_SUPPORTED,
    HSM_SIGN_ECDSA_P256_SHA256, HSM_SIGN_ECDSA_P384_SHA384, HSM_SIGN_RSA_PKCS1_SHA256,
    HSM_SIGN_RSA_PSS_SHA256,
};
use hsmkit_plugin_pkcs11::session::TokenSession;
use hsmkit_plugin_pkcs11::uri::Pkcs11Uri;
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Public};
use openssl::rsa::{Padding, Rsa};
use openssl::sign::{RsaPssSaltlen, Verifier};
use openssl::x509::X509;
use sha2::{Digest, Sha256};

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
    let p = AbiInstance::create(&borrowed(&settings)).unwrap();

    let chain = p.chain_pem().unwrap();
    assert_eq!(chain, out.certificate_pem);
    assert_eq!(p.common_name().unwrap(), "abi-device");
    let message = b"TLS CertificateVerify transcript";
    let sig = p
        .sign_digest(HSM_SIGN_ECDSA_P256_SHA256, &Sha256::digest(message))
        .unwrap();
    // The ABI promises DER, which OpenSSL parses directly.
    assert_eq!(sig[0], 0x30);
    assert!(verify(&leaf_key(&chain), message, &sig, None));

    let e = p.export_private_key().unwrap_err();
    assert_eq!(e.status, HSM_ERR_NOT_SUPPORTED, "{e:?}");
    let e = p
        .sign_digest(HSM_SIGN_ECDSA_P384_SHA384, &[0; 48])
        .unwrap_err();
    assert_eq!(e.status, HSM_ERR_NOT_SUPPORTED, "{e:?}");
    let e = p
        .sign_digest(HSM_SIGN_ECDSA_P256_SHA256, &[0; 31])
        .unwrap_err();
    assert_eq!(e.status, HSM_ERR_INVALID_ARGUMENT, "{e:?}");
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
    let p = AbiInstance::create(&settings).unwrap();
    let message = b"rsa message";
    let digest = Sha256::digest(message);
    let sig = p.sign_digest(HSM_SIGN_RSA_PKCS1_SHA256, &digest).unwrap();
    assert_eq!(sig.len(), 256);
    assert!(verify(&key, message, &sig, Some(false)));
    let sig = p.sign_digest(HSM_SIGN_RSA_PSS_SHA256, &digest).unwrap();
    assert!(verify(&key, message, &sig, Some(true)));
    assert!(!verify(&key, b"other", &sig, Some(true)));
    let e = p
        .sign_digest(HSM_SIGN_ECDSA_P256_SHA256, &digest)
        .unwrap_err();
    assert_eq!(e.status, HSM_ERR_INVALID_ARGUMENT, "{e:?}");
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
    let p = AbiInstance::create(&settings).unwrap();
    let e = p.hmac(b"x").unwrap_err();
    assert_eq!(e.status, HSM_ERR_NOT_FOUND, "{e:?}");

    // A DPS symmetric key is 64 bytes once base64-decoded.
    let key: Vec<u8> = (0u8..64)
        .map(|i| i.wrapping_mul(91).wrapping_add(3))
        .collect();
    p.import_key("", &key).unwrap();
    assert_eq!(p.registration_id().unwrap(), "sym-abi");
    let data = b"0ne00000001%2Fregistrations%2Fsym-abi\n1893456000";
    let mut soft = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    soft.update(data);
    assert_eq!(p.hmac(data).unwrap(), soft.finalize().into_bytes().to_vec());
}

#[test]
fn wrong_pin_and_missing_objects_give_abi_codes() {
    let tok = token("abi-err");
    let dir = tempfile::tempdir().unwrap();
    let wrong = dir.path().join("pin");
    std::fs::write(&wrong, "wrong-pin-0000").unwrap();
    let e = AbiInstance::create(&[
        ("module", tok.module.to_str().unwrap()),
        ("token_uri", &tok.uri()),
        ("pin_file", wrong.to_str().unwrap()),
    ])
    .err()
    .expect("a wrong PIN must fail");
    assert_eq!(e.status, HSM_ERR_AUTHENTICATION, "{e:?}");
    assert!(e.message.contains("CKR_PIN_INCORRECT"), "{e:?}");
    assert!(!e.message.contains("wrong-pin-0000"));

    let p = AbiInstance::create(&[
        ("module", tok.module.to_str().unwrap()),
        ("token_uri", &tok.uri()),
        ("pin_file", tok.pin_file.to_str().unwrap()),
        ("key_uri", "pkcs11:object=absent"),
        ("cert_uri", "pkcs11:object=absent"),
    ])
    .unwrap();
    let e = p
        .sign_digest(HSM_SIGN_ECDSA_P256_SHA256, &[0; 32])
        .unwrap_err();
    assert_eq!(e.status, HSM_ERR_NOT_FOUND, "{e:?}");
    assert!(e.message.contains("object=absent"), "{e:?}");
    assert_eq!(p.chain_pem().unwrap_err().status, HSM_ERR_NOT_FOUND);

    let e = AbiInstance::create(&[("token_uri", "pkcs11:token=x")])
        .err()
        .expect("a missing module must fail");
    assert_eq!(e.status, HSM_ERR_INVALID_ARGUMENT, "{e:?}");
    assert!(e.message.contains("`module`"), "{e:?}");
}

#[test]
fn two_abi_instances_in_one_process() {
    let tok = token("abi-two");
    let out = init_self_signed(&tok, "dev", "abi-two");
    let settings = x509_settings(&tok, &out);
    let a = AbiInstance::create(&borrowed(&settings)).unwrap();
    let b = AbiInstance::create(&borrowed(&settings)).unwrap();
    let key = leaf_key(&a.chain_pem().unwrap());
    let threads: Vec<_> = [a, b]
        .into_iter()
        .map(|p| {
            let key = key.clone();
            std::thread::spawn(move || {
                for n in 0..25u32 {
                    let m = n.to_be_bytes();
                    let sig = p
                        .sign_digest(HSM_SIGN_ECDSA_P256_SHA256, &Sha256::digest(m))
                        .unwrap();
                    assert!(verify(&key, &m, &sig, None));
                }
                p
            })
        })
        .collect();
    let mut instances: Vec<AbiInstance> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    // Destroying one leaves the other logged in and working.
    drop(instances.remove(0));
    let sig = instances[0]
        .sign_digest(HSM_SIGN_ECDSA_P256_SHA256, &Sha256::digest(b"after"))
        .unwrap();
    assert!(verify(&key, b"after", &sig, None));
}
