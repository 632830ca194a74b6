//! Certificate issuance: a register call with a `csr` on an enrollment with a
//! certificateIssuancePolicy gets [leaf, issuing CA] in registrationState.issuedCertificateChain;
//! bad CSRs and CSRs without a policy are refused with a DPS-style 400.

mod common;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use common::*;
use dps_emulator::model::*;
use dps_emulator::RunningEmulator;
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::x509::{X509NameBuilder, X509ReqBuilder, X509};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::os::unix::fs::PermissionsExt;

const KEY: &str = "c2VjcmV0LWtleS1mb3ItaXNzdWFuY2UtdGVzdHMtMDE=";
const PREVIEW: &str = "2025-07-01-preview";

fn p256() -> PKey<Private> {
    let g = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
    PKey::from_ec_key(EcKey::generate(&g).unwrap()).unwrap()
}

fn rsa(bits: u32) -> PKey<Private> {
    PKey::from_rsa(Rsa::generate(bits).unwrap()).unwrap()
}

/// A DER PKCS#10 with subject CN = `cn`, signed by `key`.
fn csr_der(key: &PKey<Private>, cn: &str) -> Vec<u8> {
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_nid(Nid::COMMONNAME, cn).unwrap();
    let name = name.build();
    let mut b = X509ReqBuilder::new().unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_pubkey(key).unwrap();
    b.sign(key, MessageDigest::sha256()).unwrap();
    b.build().to_der().unwrap()
}

fn enroll(emu: &RunningEmulator, reg: &str, policy: Option<u32>) {
    emu.enrollments()
        .create_individual(IndividualEnrollment {
            registration_id: reg.into(),
            device_id: None,
            attestation: AttestationMechanism {
                kind: "symmetricKey".into(),
                tpm: None,
                x509: None,
                symmetric_key: Some(SymmetricKeyAttestation {
                    primary_key: Some(KEY.into()),
                    secondary_key: None,
                }),
            },
            common: EnrollmentCommon {
                certificate_issuance_policy: policy
                    .map(|validity_days| CertificateIssuancePolicy { validity_days }),
                ..Default::default()
            },
        })
        .unwrap();
}

/// PUT register with the preview api-version; a 202 is polled to its final answer.
async fn register_csr(
    emu: &RunningEmulator,
    reg: &str,
    key_b64: &str,
    csr: Option<String>,
) -> Answer {
    let c = client(emu, None);
    let auth = device_sas(emu, reg, key_b64, in_an_hour());
    let mut body = json!({ "registrationId": reg });
    if let Some(csr) = csr {
        body["csr"] = json!(csr);
    }
    let url = format!(
        "{}/{}/registrations/{reg}/register?api-version={PREVIEW}",
        emu.endpoint(),
        emu.id_scope()
    );
    let a = send(c.put(url).json(&body).header("authorization", &auth)).await;
    if a.status != StatusCode::ACCEPTED {
        return a;
    }
    let op = a.body["operationId"].as_str().unwrap().to_string();
    for _ in 0..100 {
        let s = get_operation(&c, emu, reg, &op, Some(&auth)).await;
        if s.status != StatusCode::ACCEPTED {
            return s;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("operation {op} never completed");
}

fn chain_of(a: &Answer) -> Vec<X509> {
    let chain = a.body["registrationState"]["issuedCertificateChain"]
        .as_array()
        .unwrap_or_else(|| panic!("no issuedCertificateChain in {}", a.body));
    chain
        .iter()
        .map(|c| X509::from_der(&B64.decode(c.as_str().unwrap()).unwrap()).unwrap())
        .collect()
}

fn issuing_ca(env: &Env) -> X509 {
    let pem = std::fs::read(
        env.dir
            .path()
            .join("state")
            .join(dps_emulator::ISSUING_CA_CERT_FILE),
    )
    .unwrap();
    X509::from_pem(&pem).unwrap()
}

fn assert_400(a: &Answer, words: &str) {
    assert_error_body(a, StatusCode::BAD_REQUEST);
    let code = a.body["errorCode"].as_u64().unwrap();
    assert!((400000..401000).contains(&code), "{}", a.body);
    let msg = a.body["message"].as_str().unwrap();
    assert!(msg.contains(words), "expected {words:?} in {msg:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_p256_csr_gets_a_client_certificate_from_the_issuing_ca() {
    let env = start().await;
    enroll(&env.emu, "op-dev-1", Some(30));
    let key = p256();
    let csr = B64.encode(csr_der(&key, "op-dev-1"));
    let a = register_csr(&env.emu, "op-dev-1", KEY, Some(csr)).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.body["registrationState"]["status"], "assigned");
    let chain = chain_of(&a);
    assert_eq!(chain.len(), 2);
    let ca = issuing_ca(&env);
    assert_eq!(chain[1].to_der().unwrap(), ca.to_der().unwrap());
    assert!(chain[0].verify(&ca.public_key().unwrap()).unwrap());
    assert!(chain[0].public_key().unwrap().public_eq(&key));
    let cn = chain[0]
        .subject_name()
        .entries_by_nid(Nid::COMMONNAME)
        .next()
        .unwrap()
        .data()
        .as_slice()
        .to_vec();
    let cn = String::from_utf8(cn).unwrap();
    assert_eq!(cn, "op-dev-1");
    // 30 days from an hour ago.
    let span = chain[0].not_before().diff(chain[0].not_after()).unwrap();
    assert_eq!((span.days, span.secs), (30, 3600));
    let text = String::from_utf8(chain[0].to_text().unwrap()).unwrap();
    assert!(text.contains("TLS Web Client Authentication"), "{text}");
    let key_file = env.dir.path().join("state").join("issuing-ca.key.pem");
    let mode = std::fs::metadata(key_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    // The same issuing CA signs the next device's certificate.
    enroll(&env.emu, "op-dev-2", Some(1));
    let csr = B64.encode(csr_der(&p256(), "op-dev-2"));
    let b = register_csr(&env.emu, "op-dev-2", KEY, Some(csr)).await;
    assert_eq!(chain_of(&b)[1].to_der().unwrap(), ca.to_der().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_issues_for_an_rsa_2048_csr() {
    let env = start().await;
    env.emu
        .enrollments()
        .create_group(EnrollmentGroup {
            enrollment_group_id: "op-fleet".into(),
            attestation: AttestationMechanism {
                kind: "symmetricKey".into(),
                tpm: None,
                x509: None,
                symmetric_key: Some(SymmetricKeyAttestation {
                    primary_key: Some(KEY.into()),
                    secondary_key: None,
                }),
            },
            common: EnrollmentCommon {
                certificate_issuance_policy: Some(CertificateIssuancePolicy { validity_days: 7 }),
                ..Default::default()
            },
        })
        .unwrap();
    let derived = dps_proto::group_key::derive_device_key_b64(KEY, "fleet-op-3").unwrap();
    let key = rsa(2048);
    let csr = B64.encode(csr_der(&key, "fleet-op-3"));
    let a = register_csr(&env.emu, "fleet-op-3", &derived, Some(csr)).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let chain = chain_of(&a);
    assert!(chain[0].public_key().unwrap().public_eq(&key));
    assert!(chain[0]
        .verify(&issuing_ca(&env).public_key().unwrap())
        .unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_csrs_are_refused_with_400() {
    let env = start().await;
    enroll(&env.emu, "op-bad", Some(30));
    let emu = &env.emu;

    let wrong_cn = B64.encode(csr_der(&p256(), "someone-else"));
    assert_400(
        &register_csr(emu, "op-bad", KEY, Some(wrong_cn)).await,
        "CN",
    );

    let mut der = csr_der(&p256(), "op-bad");
    // The last byte is the ECDSA signature's s; changing it breaks the signature only.
    let last = der.len() - 1;
    der[last] ^= 0x01;
    let bad_sig = B64.encode(der);
    assert_400(
        &register_csr(emu, "op-bad", KEY, Some(bad_sig)).await,
        "signature",
    );

    let rsa512 = B64.encode(csr_der(&rsa(512), "op-bad"));
    assert_400(
        &register_csr(emu, "op-bad", KEY, Some(rsa512)).await,
        "RSA key has 512 bits",
    );

    assert_400(
        &register_csr(emu, "op-bad", KEY, Some("%%% not base64 %%%".into())).await,
        "base64",
    );
    assert_400(
        &register_csr(emu, "op-bad", KEY, Some(B64.encode(b"not a request"))).await,
        "PKCS#10",
    );
    assert!(
        emu.registration_records().unwrap().is_empty(),
        "a refused CSR records no registration"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_csr_without_a_policy_is_refused_and_no_csr_is_unchanged() {
    let env = start().await;
    enroll(&env.emu, "op-none", None);
    let csr = B64.encode(csr_der(&p256(), "op-none"));
    assert_400(
        &register_csr(&env.emu, "op-none", KEY, Some(csr)).await,
        "certificateIssuancePolicy",
    );
    // Without a csr, a policy changes nothing.
    enroll(&env.emu, "op-plain", Some(30));
    let a = register_csr(&env.emu, "op-plain", KEY, None).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.body["registrationState"]["status"], "assigned");
    assert_eq!(
        a.body["registrationState"].get("issuedCertificateChain"),
        None::<&Value>
    );
}

#[test]
fn a_policy_out_of_range_is_refused() {
    let mut g = IndividualEnrollment {
        registration_id: "x".into(),
        device_id: None,
        attestation: AttestationMechanism {
            kind: "symmetricKey".into(),
            tpm: None,
            x509: None,
            symmetric_key: Some(SymmetricKeyAttestation {
                primary_key: Some(KEY.into()),
                secondary_key: None,
            }),
        },
        common: EnrollmentCommon {
            certificate_issuance_policy: Some(CertificateIssuancePolicy { validity_days: 0 }),
            ..Default::default()
        },
    };
    assert!(dps_emulator::validate::individual(&g).is_err());
    g.common.certificate_issuance_policy = Some(CertificateIssuancePolicy { validity_days: 30 });
    assert!(dps_emulator::validate::individual(&g).is_ok());
}
