//! Interoperability with the official Azure IoT Node SDK: the service client creates enrollments,
//! the device client registers with symmetric keys (individual and group) and X.509, then the
//! service client reads attestation mechanisms and registration states, deletes one, and runs
//! bulk enrollment operations; a device of a custom allocation enrollment (created by the service
//! client) sends a payload, which reaches the test's webhook, and gets the webhook's hub and
//! payload back.
//! Needs node and the packages `.ci/install-node-deps` installs; fails with that hint otherwise.

mod common;

use common::webhook::Webhook;
use common::*;
use dps_emulator::model::*;
use dps_emulator::pki::{CertifiedKey, LeafUsage};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

const SYM_KEY: &str = "Zm9yIHRoZSBub2RlIHNkayBpbnRlcm9wIHRlc3Qgb25seQ==";
const GROUP_KEY: &str = "q83vEjRWeJq8p7Bm6x7Ntx0YhEorkqGSTd1U7Nl2JWc=";

fn node_tests_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("node-tests")
}

fn require_node() {
    let ok = Command::new("node")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(ok, "node is not installed: run .ci/install-node-deps (installs nodejs, npm and the Azure IoT SDK packages)");
    for pkg in [
        "azure-iot-provisioning-device-http",
        "azure-iot-provisioning-service",
        "azure-iot-security-symmetric-key",
        "azure-iot-security-x509",
        "azure-iot-http-base",
    ] {
        let p = node_tests_dir().join("node_modules").join(pkg);
        assert!(
            p.is_dir(),
            "npm package {pkg} is missing ({}): run .ci/install-node-deps",
            p.display()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_node_clients_register_and_manage_enrollments() {
    require_node();
    let env = start().await;
    let emu = &env.emu;
    let dir = env.dir.path();

    // The X.509 device is enrolled through the library; the symmetric ones by the Node service SDK.
    let root = CertifiedKey::new_root_ca("node interop root", Duration::from_secs(3600)).unwrap();
    let leaf = root
        .issue_leaf(
            "node-x509-dev",
            LeafUsage::Client,
            &[],
            Duration::from_secs(3600),
        )
        .unwrap();
    let mut a = AttestationMechanism {
        kind: "x509".into(),
        tpm: None,
        x509: None,
        symmetric_key: None,
    };
    a.x509 = Some(X509Attestation {
        client_certificates: Some(X509Certificates {
            primary: Some(X509CertificateWithInfo {
                certificate: Some(leaf.cert_pem()),
                info: None,
            }),
            secondary: None,
        }),
        ..Default::default()
    });
    emu.enrollments()
        .create_individual(IndividualEnrollment {
            registration_id: "node-x509-dev".into(),
            device_id: None,
            attestation: a,
            common: Default::default(),
        })
        .unwrap();
    let cert_file = dir.join("leaf.pem");
    let key_file = dir.join("leaf.key.pem");
    std::fs::write(&cert_file, leaf.cert_pem()).unwrap();
    std::fs::write(&key_file, leaf.key_pem().unwrap().as_bytes()).unwrap();

    // The custom allocation webhook: the second hub, and the device's payload echoed back.
    let hub_b = emu.hubs()[1].clone();
    let hook = Webhook::start({
        let hub_b = hub_b.clone();
        move |req: &Value| {
            let answer = json!({
                "iotHubHostName": hub_b,
                "payload": {"echo": req["deviceRuntimeContext"]["payload"]},
            });
            (200, answer.to_string(), Duration::ZERO)
        }
    })
    .await;
    let hook_url = hook.url("/api/alloc");

    let cs = emu.service_connection_string("localhost");
    let out = tokio::task::spawn_blocking({
        let (cert_file, key_file, ca) = (
            cert_file.clone(),
            key_file.clone(),
            emu.ca_cert_path().to_path_buf(),
        );
        let (port, scope, cs) = (
            emu.addr().port().to_string(),
            emu.id_scope().to_string(),
            cs.to_string(),
        );
        move || {
            Command::new("node")
                .arg(node_tests_dir().join("official-clients.js"))
                .env("NODE_EXTRA_CA_CERTS", ca)
                .env("DPS_HOST", "localhost")
                .env("DPS_PORT", port)
                .env("ID_SCOPE", scope)
                .env("SERVICE_CONNECTION_STRING", cs)
                .env("SYM_REG_ID", "node-sym-dev")
                .env("SYM_KEY", SYM_KEY)
                .env("GROUP_ID", "node-group")
                .env("GROUP_KEY", GROUP_KEY)
                .env("GROUP_REG_ID", "node-group-dev-1")
                .env("X509_REG_ID", "node-x509-dev")
                .env("X509_CERT_FILE", cert_file)
                .env("X509_KEY_FILE", key_file)
                .env("CUSTOM_REG_ID", "node-custom-dev")
                .env("CUSTOM_WEBHOOK_URL", hook_url)
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "node failed\nstdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_str(stdout.trim()).unwrap();

    // Service SDK: created, read back, etag set, keys as given.
    assert_eq!(v["serviceCreate"]["registrationId"], "node-sym-dev");
    assert!(v["serviceCreate"]["etag"].is_string());
    assert_eq!(
        v["serviceGet"]["attestation"]["symmetricKey"]["primaryKey"],
        SYM_KEY
    );
    assert_eq!(v["serviceGroup"]["enrollmentGroupId"], "node-group");
    let stored = emu
        .enrollments()
        .individual("node-sym-dev")
        .unwrap()
        .expect("enrollment created by the Node service SDK");
    assert_eq!(
        stored.common.initial_twin.unwrap()["tags"]["createdBy"],
        "node-service-sdk"
    );
    assert!(
        emu.enrollments().group("node-group").unwrap().is_none(),
        "deleted by the Node service SDK"
    );

    // Device SDK: all three registered and assigned.
    for (k, id) in [
        ("symmetric", "node-sym-dev"),
        ("group", "node-group-dev-1"),
        ("x509", "node-x509-dev"),
    ] {
        assert_eq!(v[k]["deviceId"], id, "{k}: {}", v[k]);
        let hub = v[k]["assignedHub"].as_str().unwrap_or_default().to_string();
        assert!(emu.hubs().contains(&hub), "{k}: hub {hub}");
    }
    assert_eq!(v["wrongKey"], "rejected");

    // Custom allocation: the service SDK's enrollment carries the definition, the device SDK's
    // payload reaches the webhook, and the webhook's hub and payload reach the device SDK.
    assert_eq!(v["customEnrollment"]["allocationPolicy"], "custom");
    assert_eq!(
        v["customEnrollment"]["customAllocationDefinition"]["apiVersion"],
        "2021-10-01"
    );
    let device_payload = json!({"model": "node-toaster", "firmware": "1.2.3"});
    assert_eq!(
        v["custom"]["assignedHub"],
        hub_b.as_str(),
        "{}",
        v["custom"]
    );
    assert_eq!(v["custom"]["deviceId"], "node-custom-dev");
    assert_eq!(v["custom"]["payload"], json!({"echo": device_payload}));
    let calls = hook.received();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(
        calls[0].body["deviceRuntimeContext"]["registrationId"],
        "node-custom-dev"
    );
    assert_eq!(
        calls[0].body["deviceRuntimeContext"]["payload"],
        device_payload
    );

    // The service operations the SDK calls beyond create/get/delete ("Individual Enrollment",
    // "Enrollment Group" and "Device Registration State" operations,
    // https://learn.microsoft.com/rest/api/iot-dps/service/).
    assert_eq!(v["individualAttestation"]["type"], "symmetricKey");
    assert_eq!(
        v["individualAttestation"]["symmetricKey"]["primaryKey"],
        SYM_KEY
    );
    assert_eq!(
        v["groupAttestation"]["symmetricKey"]["primaryKey"],
        GROUP_KEY
    );
    let in_group = v["groupRegistrations"].as_array().expect("an array");
    assert_eq!(in_group.len(), 1, "{}", v["groupRegistrations"]);
    assert_eq!(in_group[0]["registrationId"], "node-group-dev-1");
    assert_eq!(v["registrationState"]["status"], "assigned");
    assert!(
        v["registrationState"].get("symmetricKey").is_none(),
        "only DeviceRegistrationState's fields: {}",
        v["registrationState"]
    );
    let gone = &v["registrationStateAfterDelete"];
    assert_eq!(gone["statusCode"], 404, "{gone}");
    assert!(
        gone["body"].as_str().is_some_and(|b| b.contains("404202")),
        "{gone}"
    );
    assert_eq!(v["bulkCreate"]["isSuccessful"], true, "{}", v["bulkCreate"]);
    assert_eq!(v["bulkCreateAgain"]["isSuccessful"], false);
    assert_eq!(
        v["bulkCreateAgain"]["errors"][0]["registrationId"],
        "node-bulk-1"
    );
    assert_eq!(v["bulkDelete"]["isSuccessful"], true, "{}", v["bulkDelete"]);
    assert!(emu
        .enrollments()
        .individual("node-bulk-1")
        .unwrap()
        .is_some());
    assert!(emu
        .enrollments()
        .individual("node-bulk-2")
        .unwrap()
        .is_none());

    let records = emu.registration_records().unwrap();
    let ids: Vec<&str> = records.iter().map(|r| r.registration_id.as_str()).collect();
    // node-group-dev-1's registration state was deleted through the SDK.
    assert_eq!(ids, ["node-custom-dev", "node-sym-dev", "node-x509-dev"]);
}
