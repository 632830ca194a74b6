//! Restart persistence (library), kill -9 durability and the CLI (binary).

mod common;

use common::*;
use dps_emulator::model::*;
use dps_emulator::pki::{CertifiedKey, LeafUsage};
use dps_emulator::{Emulator, EmulatorConfig};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const KEY: &str = "q83vEjRWeJq8p7Bm6x7Ntx0YhEorkqGSTd1U7Nl2JWc=";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrollments_and_records_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let cfg = || {
        let mut c = EmulatorConfig::new(&state);
        c.hubs = vec![
            "hub-a.azure-devices.net".into(),
            "hub-b.azure-devices.net".into(),
        ];
        c
    };
    let emu = Emulator::start(cfg()).await.unwrap();
    let ca_before = emu.ca_cert_pem().to_string();
    let conn_before = emu.service_connection_string("localhost").to_string();
    let mut a = AttestationMechanism {
        kind: "symmetricKey".into(),
        tpm: None,
        x509: None,
        symmetric_key: None,
    };
    a.symmetric_key = Some(SymmetricKeyAttestation {
        primary_key: Some(KEY.into()),
        secondary_key: None,
    });
    emu.enrollments()
        .create_individual(IndividualEnrollment {
            registration_id: "keep-me".into(),
            device_id: None,
            attestation: a.clone(),
            common: Default::default(),
        })
        .unwrap();
    emu.enrollments()
        .create_group(EnrollmentGroup {
            enrollment_group_id: "keep-group".into(),
            attestation: a,
            common: Default::default(),
        })
        .unwrap();
    let c = client(&emu, None);
    let auth = device_sas(&emu, "keep-me", KEY, in_an_hour());
    let first = register(&c, &emu, "keep-me", body_reg("keep-me"), Some(&auth)).await;
    let op = first.body["operationId"].as_str().unwrap().to_string();
    emu.shutdown().await;

    // Mode of the secrets on disk.
    use std::os::unix::fs::PermissionsExt;
    for f in ["dev-ca.key.pem", "service-policy.key", "dps.sqlite3"] {
        let m = std::fs::metadata(state.join(f))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(m, 0o600, "{f} has mode {m:o}");
    }
    assert_eq!(
        std::fs::metadata(&state).unwrap().permissions().mode() & 0o777,
        0o700
    );

    let emu = Emulator::start(cfg()).await.unwrap();
    assert_eq!(emu.ca_cert_pem(), ca_before, "the dev CA must be reused");
    assert_eq!(
        emu.service_connection_string("localhost").as_str(),
        conn_before
    );
    assert!(emu.enrollments().individual("keep-me").unwrap().is_some());
    assert!(emu.enrollments().group("keep-group").unwrap().is_some());
    let records = emu.registration_records().unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].registration_id, "keep-me");
    // The old operation still answers, and the client (trusting the same CA) re-registers.
    let c = client(&emu, None);
    let old = get_operation(&c, &emu, "keep-me", &op, Some(&auth)).await;
    assert_eq!(old.status, StatusCode::OK);
    assert_eq!(
        old.body["registrationState"]["assignedHub"],
        first.body["registrationState"]["assignedHub"]
    );
    let again = register(&c, &emu, "keep-me", body_reg("keep-me"), Some(&auth)).await;
    assert_eq!(
        again.body["registrationState"]["createdDateTimeUtc"],
        first.body["registrationState"]["createdDateTimeUtc"]
    );
    emu.shutdown().await;
}

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_dps-emulator"))
}

fn run_cli(args: &[&str]) -> String {
    let out = bin().args(args).output().unwrap();
    assert!(
        out.status.success(),
        "dps-emulator {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

struct Served {
    child: Child,
    endpoint: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(state: &Path) -> Served {
    let mut child = bin()
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--mqtt-listen",
            "127.0.0.1:0",
            "--mqtt-ws-listen",
            "127.0.0.1:0",
            "--state",
            state.to_str().unwrap(),
            "--hub",
            "hub-a.azure-devices.net",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let endpoint = first
        .strip_prefix("listening: ")
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
        .to_string();
    // Keep draining stdout so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Served { child, endpoint }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_minus_nine_loses_no_acknowledged_registration() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let s = state.to_str().unwrap();
    run_cli(&[
        "group",
        "symmetric",
        "--group-id",
        "fleet",
        "--primary-key",
        KEY,
        "--state",
        s,
    ]);
    let mut served = serve(&state);
    let ca = std::fs::read_to_string(state.join(dps_emulator::CA_CERT_FILE)).unwrap();
    let c = client_for_ca(&ca, None);
    let acked: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let mut tasks = Vec::new();
    for w in 0..6 {
        let (c, acked, endpoint) = (c.clone(), acked.clone(), served.endpoint.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0.. {
                let reg = format!("kill-{w}-{i}");
                let key = dps_proto::group_key::derive_device_key_b64(KEY, &reg).unwrap();
                let token = dps_proto::sas::create_token(
                    &format!("0ne00000001/registrations/{reg}"),
                    &key,
                    Some("registration"),
                    in_an_hour(),
                )
                .unwrap();
                let url = format!(
                    "{endpoint}/0ne00000001/registrations/{reg}/register?api-version=2021-10-01"
                );
                match c
                    .put(url)
                    .header("authorization", token)
                    .json(&body_reg(&reg))
                    .send()
                    .await
                {
                    Ok(r) if r.status() == StatusCode::ACCEPTED => {
                        let v: Value = match r.json().await {
                            Ok(v) => v,
                            Err(_) => return,
                        };
                        acked.lock().unwrap().push((
                            reg,
                            v["operationId"].as_str().unwrap_or_default().to_string(),
                        ));
                    }
                    Ok(r) => panic!("unexpected status {}", r.status()),
                    Err(_) => return, // the server is gone
                }
            }
        }));
    }
    for _ in 0..300 {
        if acked.lock().unwrap().len() >= 60 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    served.child.kill().unwrap(); // SIGKILL, mid-traffic
    served.child.wait().unwrap();
    for t in tasks {
        t.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= 60,
        "only {} registrations were acknowledged",
        acked.len()
    );

    let store = dps_emulator::open_store(&state).unwrap();
    for (reg, op) in &acked {
        let r = store
            .registration(reg)
            .unwrap()
            .unwrap_or_else(|| panic!("acknowledged {reg} lost"));
        assert_eq!(r.status, "assigned");
        assert!(
            store.operation(op).unwrap().is_some(),
            "operation of {reg} lost"
        );
    }
    drop(store);

    // The restarted binary serves the old operations.
    let served = serve(&state);
    let (reg, op) = &acked[0];
    let key = dps_proto::group_key::derive_device_key_b64(KEY, reg).unwrap();
    let token = dps_proto::sas::create_token(
        &format!("0ne00000001/registrations/{reg}"),
        &key,
        Some("registration"),
        in_an_hour(),
    )
    .unwrap();
    let a = send(
        c.get(format!(
            "{}/0ne00000001/registrations/{reg}/operations/{op}?api-version=2021-10-01",
            served.endpoint
        ))
        .header("authorization", token),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(
        a.body["registrationState"]["assignedHub"],
        "hub-a.azure-devices.net"
    );
}

#[test]
fn cli_enrolls_from_enroll_info_folders_and_lists() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let s = state.to_str().unwrap();
    let root = CertifiedKey::new_root_ca("cli root", Duration::from_secs(3600)).unwrap();
    let leaf = root
        .issue_leaf(
            "cli-x509",
            LeafUsage::Client,
            &[],
            Duration::from_secs(3600),
        )
        .unwrap();

    // X.509 folder: JSON without inline PEMs, companion files instead.
    let x = dir.path().join("x509");
    std::fs::create_dir(&x).unwrap();
    std::fs::write(
        x.join("enrollment.json"),
        json!({"registrationId": "cli-x509", "attestation": "x509"}).to_string(),
    )
    .unwrap();
    std::fs::write(x.join("leaf.pem"), leaf.cert_pem()).unwrap();
    std::fs::write(x.join("root-ca.pem"), root.cert_pem()).unwrap();
    run_cli(&["enroll", "--from", x.to_str().unwrap(), "--state", s]);
    run_cli(&[
        "enroll",
        "--from",
        x.to_str().unwrap(),
        "--group",
        "cli-group",
        "--state",
        s,
        "--disabled",
    ]);

    // Symmetric folder with the key inline.
    let k = dir.path().join("sym");
    std::fs::create_dir(&k).unwrap();
    std::fs::write(
        k.join("enrollment.json"),
        json!({"registrationId": "cli-sym", "attestation": "symmetricKey", "primaryKey": KEY})
            .to_string(),
    )
    .unwrap();
    run_cli(&[
        "enroll",
        "--from",
        k.to_str().unwrap(),
        "--state",
        s,
        "--hub",
        "hub-z.azure-devices.net",
        "--allocation",
        "static",
    ]);

    // TPM folder with ek.b64.
    let t = dir.path().join("tpm");
    std::fs::create_dir(&t).unwrap();
    std::fs::write(
        t.join("enrollment.json"),
        json!({"registrationId": "cli-tpm", "attestation": "tpm"}).to_string(),
    )
    .unwrap();
    std::fs::write(
        t.join("ek.b64"),
        "AToAAQALAAMAsgAgg3GXZ0SEs/gakMyNRqXXJP1S124GUgtk8qHaGzMUaaoABgCAAEMAEAgAAAAAAAEA\n",
    )
    .unwrap();
    run_cli(&["enroll", "--from", t.to_str().unwrap(), "--state", s]);
    // TPM cannot be a group.
    let out = bin()
        .args([
            "enroll",
            "--from",
            t.to_str().unwrap(),
            "--group",
            "g",
            "--state",
            s,
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("individually"));
    // Broken folder: clear error.
    let b = dir.path().join("broken");
    std::fs::create_dir(&b).unwrap();
    std::fs::write(b.join("enrollment.json"), "{not json").unwrap();
    let out = bin()
        .args(["enroll", "--from", b.to_str().unwrap(), "--state", s])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("enrollment.json"));

    run_cli(&[
        "enroll",
        "symmetric",
        "--registration-id",
        "cli-gen",
        "--state",
        s,
    ]);
    let listed: Value = serde_json::from_str(&run_cli(&["list", "--json", "--state", s])).unwrap();
    let ids: Vec<&str> = listed["enrollments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["registrationId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["cli-gen", "cli-sym", "cli-tpm", "cli-x509"]);
    assert_eq!(
        listed["enrollmentGroups"][0]["enrollmentGroupId"],
        "cli-group"
    );
    assert_eq!(
        listed["enrollmentGroups"][0]["provisioningStatus"],
        "disabled"
    );
    assert!(
        !listed.to_string().contains(KEY),
        "list must not print keys"
    );
    let store = dps_emulator::open_store(&state).unwrap();
    let sym = store.individual("cli-sym").unwrap().unwrap();
    assert_eq!(
        sym.attestation
            .symmetric_key
            .unwrap()
            .primary_key
            .as_deref(),
        Some(KEY)
    );
    assert_eq!(sym.common.iot_hubs, ["hub-z.azure-devices.net"]);
    let g = store.group("cli-group").unwrap().unwrap();
    assert!(g
        .attestation
        .x509
        .unwrap()
        .signing_certificates
        .unwrap()
        .texts()[0]
        .contains("BEGIN CERTIFICATE"));
    let cs = run_cli(&["connection-string", "--state", s, "--host", "localhost"]);
    assert!(cs.starts_with(
        "HostName=localhost;SharedAccessKeyName=provisioningserviceowner;SharedAccessKey="
    ));
}

#[test]
fn background_emulator_serves_synchronous_callers() {
    let dir = tempfile::tempdir().unwrap();
    let emu = Emulator::start_in_background(EmulatorConfig::new(dir.path().join("state"))).unwrap();
    let mut a = AttestationMechanism {
        kind: "symmetricKey".into(),
        tpm: None,
        x509: None,
        symmetric_key: None,
    };
    a.symmetric_key = Some(SymmetricKeyAttestation {
        primary_key: Some(KEY.into()),
        secondary_key: None,
    });
    emu.enrollments()
        .create_individual(IndividualEnrollment {
            registration_id: "bg-dev".into(),
            device_id: None,
            attestation: a,
            common: Default::default(),
        })
        .unwrap();
    let client_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let status = client_rt.block_on(async {
        let c = client(&emu, None);
        let auth = device_sas(&emu, "bg-dev", KEY, in_an_hour());
        register(&c, &emu, "bg-dev", body_reg("bg-dev"), Some(&auth))
            .await
            .body["status"]
            .clone()
    });
    assert_eq!(status, "assigned");
    // Inside a runtime the blocking start is refused with an error.
    let refused = client_rt.block_on(async {
        Emulator::start_in_background(EmulatorConfig::new(dir.path().join("other"))).err()
    });
    assert!(refused.is_some_and(|e| e.to_string().contains("Emulator::start")));
    emu.shutdown();
}
