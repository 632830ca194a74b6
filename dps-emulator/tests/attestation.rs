//! Each attestation's success and rejection paths, over real TLS against a running emulator.

mod common;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use common::*;
use dps_emulator::model::*;
use dps_emulator::pki::{CertifiedKey, LeafUsage};
use reqwest::StatusCode;
use serde_json::json;
use std::time::{Duration, SystemTime};

const KEY: &str = "q83vEjRWeJq8p7Bm6x7Ntx0YhEorkqGSTd1U7Nl2JWc=";
const OTHER_KEY: &str = "c2VjcmV0LWtleS1mb3ItdGVzdHMtb25seS0xMjM0NTY3OA==";

fn attestation(kind: &str) -> AttestationMechanism {
    AttestationMechanism {
        kind: kind.into(),
        tpm: None,
        x509: None,
        symmetric_key: None,
    }
}

fn symmetric_individual(reg: &str, key: &str) -> IndividualEnrollment {
    let mut a = attestation("symmetricKey");
    a.symmetric_key = Some(SymmetricKeyAttestation {
        primary_key: Some(key.into()),
        secondary_key: None,
    });
    IndividualEnrollment {
        registration_id: reg.into(),
        device_id: None,
        attestation: a,
        common: Default::default(),
    }
}

fn certs(pem: String) -> X509Certificates {
    X509Certificates {
        primary: Some(X509CertificateWithInfo {
            certificate: Some(pem),
            info: None,
        }),
        secondary: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn symmetric_individual_registers_and_bad_tokens_get_401() {
    let env = start_with(|c| c.assignment_delay = Duration::from_millis(150)).await;
    let emu = &env.emu;
    let mut e = symmetric_individual("sym-dev-1", KEY);
    e.common.initial_twin = Some(json!({"tags": {"site": "lab"}}));
    emu.enrollments().create_individual(e).unwrap();
    let c = client(emu, None);

    // Success, with the assigning phase visible because of the delay.
    let auth = device_sas(emu, "sym-dev-1", KEY, in_an_hour());
    let first = put_register(
        &c,
        emu,
        "sym-dev-1",
        json!({"registrationId": "sym-dev-1", "payload": {"model": "m1"}}),
        Some(&auth),
    )
    .await;
    assert_eq!(first.status, StatusCode::ACCEPTED);
    assert_eq!(first.headers["retry-after"], "1");
    let op = first.body["operationId"].as_str().unwrap().to_string();
    let early = get_operation(&c, emu, "sym-dev-1", &op, Some(&auth)).await;
    assert_eq!(early.status, StatusCode::ACCEPTED);
    assert_eq!(early.body["status"], "assigning");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let done = get_operation(&c, emu, "sym-dev-1", &op, Some(&auth)).await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    let st = &done.body["registrationState"];
    assert_eq!(done.body["status"], "assigned");
    assert_eq!(st["registrationId"], "sym-dev-1");
    assert_eq!(st["deviceId"], "sym-dev-1");
    assert!(emu
        .hubs()
        .contains(&st["assignedHub"].as_str().unwrap().to_string()));
    assert_eq!(st["substatus"], "initialAssignment");
    // The device's payload is not echoed (only a custom allocation webhook gives one back;
    // tests/fidelity.rs).
    assert!(st.get("payload").is_none(), "{st}");
    assert_eq!(st["initialTwin"]["tags"]["site"], "lab");
    assert!(st["symmetricKey"].is_object());
    for f in ["createdDateTimeUtc", "lastUpdatedDateTimeUtc", "etag"] {
        assert!(
            st[f].as_str().is_some_and(|s| !s.is_empty()),
            "{f} missing in {st}"
        );
    }

    // Status lookup returns the record.
    let lookup = send(
        c.post(format!(
            "{}/{}/registrations/sym-dev-1?api-version=2021-10-01",
            emu.endpoint(),
            emu.id_scope()
        ))
        .header("authorization", &auth)
        .json(&body_reg("sym-dev-1")),
    )
    .await;
    assert_eq!(lookup.status, StatusCode::OK, "{}", lookup.body);
    assert_eq!(lookup.body["assignedHub"], st["assignedHub"]);

    // Rejections: wrong key, expired, wrong scope, no token, garbage token, unknown device.
    let wrong_key = device_sas(emu, "sym-dev-1", OTHER_KEY, in_an_hour());
    let expired = device_sas(
        emu,
        "sym-dev-1",
        KEY,
        dps_emulator::timeutil::unix_now() - 1,
    );
    let wrong_scope = dps_proto::sas::create_token(
        "0neOTHER/registrations/sym-dev-1",
        KEY,
        Some("registration"),
        in_an_hour(),
    )
    .unwrap();
    for (what, token) in [
        ("wrong key", Some(wrong_key.as_str())),
        ("expired", Some(&expired)),
        ("wrong scope", Some(&wrong_scope)),
        ("none", None),
        ("garbage", Some("SharedAccessSignature nonsense")),
    ] {
        let a = put_register(&c, emu, "sym-dev-1", body_reg("sym-dev-1"), token).await;
        assert_error_body(&a, StatusCode::UNAUTHORIZED);
        assert!(!a.body.to_string().contains(KEY), "{what}: key leaked");
    }
    // Like the service, the answer does not say why (the emulator logs it under the
    // trackingId): a reason would tell callers which ids are enrolled.
    assert_eq!(expired_msg(&c, emu, &expired).await, "Unauthorized");
    let unknown = device_sas(emu, "nobody", KEY, in_an_hour());
    assert_error_body(
        &put_register(&c, emu, "nobody", body_reg("nobody"), Some(&unknown)).await,
        StatusCode::UNAUTHORIZED,
    );
    // Polling someone else's operation with one's own valid token is refused.
    emu.enrollments()
        .create_individual(symmetric_individual("sym-dev-2", OTHER_KEY))
        .unwrap();
    let other = device_sas(emu, "sym-dev-2", OTHER_KEY, in_an_hour());
    assert_eq!(
        get_operation(&c, emu, "sym-dev-2", &op, Some(&other))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
}

async fn expired_msg(
    c: &reqwest::Client,
    emu: &dps_emulator::RunningEmulator,
    token: &str,
) -> String {
    put_register(c, emu, "sym-dev-1", body_reg("sym-dev-1"), Some(token))
        .await
        .body["message"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn symmetric_group_uses_derived_keys() {
    let env = start().await;
    let emu = &env.emu;
    let mut a = attestation("symmetricKey");
    a.symmetric_key = Some(SymmetricKeyAttestation {
        primary_key: Some(KEY.into()),
        secondary_key: None,
    });
    emu.enrollments()
        .create_group(EnrollmentGroup {
            enrollment_group_id: "fleet".into(),
            attestation: a,
            common: Default::default(),
        })
        .unwrap();
    let c = client(emu, None);
    let derived = dps_proto::group_key::derive_device_key_b64(KEY, "fleet-dev-7").unwrap();
    let auth = device_sas(emu, "fleet-dev-7", &derived, in_an_hour());
    let done = register(&c, emu, "fleet-dev-7", body_reg("fleet-dev-7"), Some(&auth)).await;
    assert_eq!(done.body["status"], "assigned");
    assert_eq!(
        done.body["registrationState"]["symmetricKey"]["enrollmentGroupId"],
        "fleet"
    );

    // The group key itself is not a device key; another device's derived key is not this one's.
    let raw_group = device_sas(emu, "fleet-dev-7", KEY, in_an_hour());
    assert_error_body(
        &put_register(
            &c,
            emu,
            "fleet-dev-7",
            body_reg("fleet-dev-7"),
            Some(&raw_group),
        )
        .await,
        StatusCode::UNAUTHORIZED,
    );
    let other = dps_proto::group_key::derive_device_key_b64(KEY, "fleet-dev-8").unwrap();
    let crossed = device_sas(emu, "fleet-dev-7", &other, in_an_hour());
    assert_error_body(
        &put_register(
            &c,
            emu,
            "fleet-dev-7",
            body_reg("fleet-dev-7"),
            Some(&crossed),
        )
        .await,
        StatusCode::UNAUTHORIZED,
    );
    let expired = device_sas(emu, "fleet-dev-7", &derived, 1000);
    assert_error_body(
        &put_register(
            &c,
            emu,
            "fleet-dev-7",
            body_reg("fleet-dev-7"),
            Some(&expired),
        )
        .await,
        StatusCode::UNAUTHORIZED,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabled_and_unallocatable_enrollments_end_disabled_and_failed() {
    let env = start().await;
    let emu = &env.emu;
    let mut off = symmetric_individual("off-dev", KEY);
    off.common.provisioning_status = ProvisioningStatus::Disabled;
    emu.enrollments().create_individual(off).unwrap();
    let mut nowhere = symmetric_individual("nowhere-dev", KEY);
    nowhere.common.allocation_policy = Some(AllocationPolicy::Static);
    nowhere.common.iot_hubs = vec!["not-served.azure-devices.net".into()];
    emu.enrollments().create_individual(nowhere).unwrap();
    let mut pinned = symmetric_individual("pinned-dev", KEY);
    pinned.common.allocation_policy = Some(AllocationPolicy::Static);
    pinned.common.iot_hubs = vec!["hub-b.azure-devices.net".into()];
    emu.enrollments().create_individual(pinned).unwrap();
    let c = client(emu, None);

    let d = register(
        &c,
        emu,
        "off-dev",
        body_reg("off-dev"),
        Some(&device_sas(emu, "off-dev", KEY, in_an_hour())),
    )
    .await;
    assert_eq!(d.body["status"], "disabled");
    assert!(d.body["registrationState"]["assignedHub"].is_null());
    let f = register(
        &c,
        emu,
        "nowhere-dev",
        body_reg("nowhere-dev"),
        Some(&device_sas(emu, "nowhere-dev", KEY, in_an_hour())),
    )
    .await;
    assert_eq!(f.body["status"], "failed");
    assert_eq!(f.body["registrationState"]["errorCode"], 400208);
    let p = register(
        &c,
        emu,
        "pinned-dev",
        body_reg("pinned-dev"),
        Some(&device_sas(emu, "pinned-dev", KEY, in_an_hour())),
    )
    .await;
    assert_eq!(
        p.body["registrationState"]["assignedHub"],
        "hub-b.azure-devices.net"
    );
}

struct Pki {
    root: CertifiedKey,
    intermediate: CertifiedKey,
}

fn pki() -> Pki {
    let root = CertifiedKey::new_root_ca("test device root", Duration::from_secs(86400)).unwrap();
    let intermediate = root
        .issue_intermediate_ca("test device intermediate", Duration::from_secs(86400))
        .unwrap();
    Pki { root, intermediate }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x509_individual_by_leaf_certificate() {
    let env = start().await;
    let emu = &env.emu;
    let p = pki();
    let leaf = p
        .intermediate
        .issue_leaf(
            "x509-dev-1",
            LeafUsage::Client,
            &[],
            Duration::from_secs(3600),
        )
        .unwrap();
    let mut a = attestation("x509");
    a.x509 = Some(X509Attestation {
        client_certificates: Some(certs(leaf.cert_pem())),
        ..Default::default()
    });
    emu.enrollments()
        .create_individual(IndividualEnrollment {
            registration_id: "x509-dev-1".into(),
            device_id: Some("custom-device".into()),
            attestation: a,
            common: Default::default(),
        })
        .unwrap();

    let c = client(emu, Some((&[&leaf, &p.intermediate], &leaf)));
    let done = register(&c, emu, "x509-dev-1", body_reg("x509-dev-1"), None).await;
    assert_eq!(done.body["status"], "assigned", "{}", done.body);
    let st = &done.body["registrationState"];
    assert_eq!(st["deviceId"], "custom-device");
    assert_eq!(
        st["x509"]["certificateInfo"]["subjectName"],
        "CN=x509-dev-1"
    );
    assert_eq!(
        st["x509"]["certificateInfo"]["sha256Thumbprint"]
            .as_str()
            .unwrap()
            .len(),
        64
    );

    // Same CN, same issuer, different certificate: not the enrolled one.
    let impostor = p
        .intermediate
        .issue_leaf(
            "x509-dev-1",
            LeafUsage::Client,
            &[],
            Duration::from_secs(3600),
        )
        .unwrap();
    let ci = client(emu, Some((&[&impostor, &p.intermediate], &impostor)));
    let a = put_register(&ci, emu, "x509-dev-1", body_reg("x509-dev-1"), None).await;
    assert_error_body(&a, StatusCode::UNAUTHORIZED);
    // The enrolled certificate used for another registration id: CN mismatch.
    let a = put_register(&c, emu, "x509-dev-2", body_reg("x509-dev-2"), None).await;
    assert_error_body(&a, StatusCode::UNAUTHORIZED);
    // No client certificate at all.
    let plain = client(emu, None);
    assert_error_body(
        &put_register(&plain, emu, "x509-dev-1", body_reg("x509-dev-1"), None).await,
        StatusCode::UNAUTHORIZED,
    );

    // An expired enrolled certificate is refused even though it is the enrolled one.
    let now = SystemTime::now();
    let old = p
        .intermediate
        .issue_leaf_valid(
            "x509-old",
            LeafUsage::Client,
            &[],
            now - Duration::from_secs(7200),
            now - Duration::from_secs(3600),
        )
        .unwrap();
    let mut a = attestation("x509");
    a.x509 = Some(X509Attestation {
        client_certificates: Some(certs(old.cert_pem())),
        ..Default::default()
    });
    emu.enrollments()
        .create_individual(IndividualEnrollment {
            registration_id: "x509-old".into(),
            device_id: None,
            attestation: a,
            common: Default::default(),
        })
        .unwrap();
    let co = client(emu, Some((&[&old], &old)));
    let r = put_register(&co, emu, "x509-old", body_reg("x509-old"), None).await;
    assert_error_body(&r, StatusCode::UNAUTHORIZED);
    assert_eq!(r.body["message"], "Unauthorized", "{}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x509_group_by_ca_certificate() {
    let env = start().await;
    let emu = &env.emu;
    let p = pki();
    let mut a = attestation("x509");
    a.x509 = Some(X509Attestation {
        signing_certificates: Some(certs(p.root.cert_pem())),
        ..Default::default()
    });
    emu.enrollments()
        .create_group(EnrollmentGroup {
            enrollment_group_id: "x509-fleet".into(),
            attestation: a,
            common: Default::default(),
        })
        .unwrap();

    let leaf = p
        .intermediate
        .issue_leaf(
            "fleet-x-1",
            LeafUsage::Client,
            &[],
            Duration::from_secs(3600),
        )
        .unwrap();
    let c = client(emu, Some((&[&leaf, &p.intermediate], &leaf)));
    let done = register(&c, emu, "fleet-x-1", body_reg("fleet-x-1"), None).await;
    assert_eq!(done.body["status"], "assigned", "{}", done.body);
    let x = &done.body["registrationState"]["x509"];
    assert_eq!(x["enrollmentGroupId"], "x509-fleet");
    assert_eq!(
        x["signingCertificateInfo"]["subjectName"],
        "CN=test device root"
    );

    // Chain without the intermediate cannot be built up to the root.
    let short = client(emu, Some((&[&leaf], &leaf)));
    assert_error_body(
        &put_register(&short, emu, "fleet-x-1", body_reg("fleet-x-1"), None).await,
        StatusCode::UNAUTHORIZED,
    );
    // A device from another PKI with the same names.
    let q = pki();
    let stranger = q
        .intermediate
        .issue_leaf(
            "fleet-x-1",
            LeafUsage::Client,
            &[],
            Duration::from_secs(3600),
        )
        .unwrap();
    let cs = client(emu, Some((&[&stranger, &q.intermediate], &stranger)));
    assert_error_body(
        &put_register(&cs, emu, "fleet-x-1", body_reg("fleet-x-1"), None).await,
        StatusCode::UNAUTHORIZED,
    );
    // CN must equal the registration id.
    assert_error_body(
        &put_register(&c, emu, "fleet-x-2", body_reg("fleet-x-2"), None).await,
        StatusCode::UNAUTHORIZED,
    );
    // Expired device certificate under the right CA.
    let now = SystemTime::now();
    let old = p
        .intermediate
        .issue_leaf_valid(
            "fleet-x-3",
            LeafUsage::Client,
            &[],
            now - Duration::from_secs(7200),
            now - Duration::from_secs(60),
        )
        .unwrap();
    let co = client(emu, Some((&[&old, &p.intermediate], &old)));
    assert_error_body(
        &put_register(&co, emu, "fleet-x-3", body_reg("fleet-x-3"), None).await,
        StatusCode::UNAUTHORIZED,
    );
}

mod tpm {
    use super::*;
    use hsm_tpm_common::dps::{open_dps_challenge, SoftwareTpmKeys};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tpm_challenge_then_sas_with_the_duplicated_key() {
        let env = start().await;
        let emu = &env.emu;
        let dev = SoftTpm::new();
        let other = SoftTpm::new();
        let reg = dps_proto::tpm_registration_id(&dev.ek_pub.to_tpm2b().unwrap());
        let mut a = attestation("tpm");
        a.tpm = Some(TpmAttestation {
            endorsement_key: dev.ek_b64(),
            storage_root_key: None,
        });
        emu.enrollments()
            .create_individual(IndividualEnrollment {
                registration_id: reg.clone(),
                device_id: None,
                attestation: a,
                common: Default::default(),
            })
            .unwrap();
        let c = client(emu, None);
        let body = json!({"registrationId": reg, "tpm": {"endorsementKey": dev.ek_b64(), "storageRootKey": dev.srk_b64()}});

        // 1. No authorization: 401 with a challenge for this EK and SRK.
        let ch = put_register(&c, emu, &reg, body.clone(), None).await;
        assert_eq!(ch.status, StatusCode::UNAUTHORIZED, "{}", ch.body);
        assert_eq!(ch.body["keyName"], "registration");
        let blob = B64
            .decode(ch.body["authenticationKey"].as_str().unwrap())
            .unwrap();
        // Another TPM cannot open it.
        let wrong = SoftwareTpmKeys {
            ek_private: &other.ek,
            ek_public: &dev.ek_pub,
            srk_private: &dev.srk,
            srk_public: &dev.srk_pub,
        };
        assert!(open_dps_challenge(&wrong, &blob).is_err());
        let imported = open_dps_challenge(&dev.keys(), &blob).unwrap();
        let key_b64 = B64.encode(imported.key.as_slice());

        // 2. Wrong signature, expired token, wrong scope: 401.
        let forged = device_sas(emu, &reg, KEY, in_an_hour());
        let expired = device_sas(emu, &reg, &key_b64, 10);
        let scope = dps_proto::sas::create_token(
            &format!("otherscope/registrations/{reg}"),
            &key_b64,
            Some("registration"),
            in_an_hour(),
        )
        .unwrap();
        for t in [&forged, &expired, &scope] {
            let r = put_register(&c, emu, &reg, body.clone(), Some(t)).await;
            assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.body);
            assert!(
                r.body.get("authenticationKey").is_none(),
                "a bad token must not get a new challenge"
            );
        }

        // 3. The SAS signed with the duplicated identity key is accepted.
        let good = device_sas(emu, &reg, &key_b64, in_an_hour());
        let done = register(&c, emu, &reg, body.clone(), Some(&good)).await;
        assert_eq!(done.body["status"], "assigned", "{}", done.body);
        assert_eq!(
            done.body["registrationState"]["tpm"]["authenticationKey"]
                .as_str()
                .unwrap(),
            B64.encode(&blob)
        );

        // A device presenting a different EK for this registration id gets no challenge.
        let bad = json!({"registrationId": reg, "tpm": {"endorsementKey": other.ek_b64(), "storageRootKey": other.srk_b64()}});
        let r = put_register(&c, emu, &reg, bad, None).await;
        assert_error_body(&r, StatusCode::UNAUTHORIZED);
        assert!(r.body.get("authenticationKey").is_none());
        // A malformed SRK is a 400, not a crash.
        let junk = json!({"registrationId": reg, "tpm": {"endorsementKey": dev.ek_b64(), "storageRootKey": B64.encode(b"\x00\x10short")}});
        assert_error_body(
            &put_register(&c, emu, &reg, junk, None).await,
            StatusCode::BAD_REQUEST,
        );
    }
}

/// An X.509 group whose signing certificate is replaced (service API "Enrollment Group -
/// Create Or Update" with the group's etag) takes the new CA at the next registration: the
/// emulator keeps parsed certificates between requests, and must not answer from the old one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_x509_group_update_takes_effect_at_the_next_registration() {
    let env = start().await;
    let emu = &env.emu;
    let (root_a, leaf_a) = x509_leaf("swap-dev");
    let (root_b, leaf_b) = x509_leaf("swap-dev");
    enroll_x509_group(emu, "swap-group", &root_a);
    let ca = client(emu, Some((&[&leaf_a], &leaf_a)));
    let cb = client(emu, Some((&[&leaf_b], &leaf_b)));
    let done = register(&ca, emu, "swap-dev", body_reg("swap-dev"), None).await;
    assert_eq!(done.body["status"], "assigned", "{}", done.body);
    assert_error_body(
        &put_register(&cb, emu, "swap-dev", body_reg("swap-dev"), None).await,
        StatusCode::UNAUTHORIZED,
    );

    let store = emu.enrollments();
    let mut g = store.group("swap-group").unwrap().unwrap();
    let etag = g.common.etag.clone();
    g.attestation.x509 = Some(X509Attestation {
        signing_certificates: Some(certs(root_b.cert_pem())),
        ..Default::default()
    });
    assert!(matches!(
        store.put_group(g, etag.as_deref()).unwrap(),
        dps_emulator::store::PutOutcome::Written(_)
    ));
    let done = register(&cb, emu, "swap-dev", body_reg("swap-dev"), None).await;
    assert_eq!(done.body["status"], "assigned", "{}", done.body);
    assert_error_body(
        &put_register(&ca, emu, "swap-dev", body_reg("swap-dev"), None).await,
        StatusCode::UNAUTHORIZED,
    );
}
