//! Fidelity to the real service where the emulator used to differ (issue 19): no echoed
//! payload, the 202's Location header, the documented DeviceRegistrationState on the service
//! API, the service operations the official service SDKs call, TPM challenges across a
//! restart, bounded operations, and the reprovision policy's substatus. Each test cites the
//! documentation it follows.

mod common;

use common::*;
use dps_emulator::model::*;
use dps_emulator::{Emulator, EmulatorConfig};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const KEY: &str = "Zmlyc3Qga2V5IGZvciB0aGUgZmlkZWxpdHkgdGVzdHMh";
const HUB_A: &str = "hub-a.azure-devices.net";
const HUB_B: &str = "hub-b.azure-devices.net";
const HUB_C: &str = "hub-c.azure-devices.net";

/// An enrollment of `reg` with a symmetric key on `hubs`, under `policy`.
fn enroll_on(
    emu: &dps_emulator::RunningEmulator,
    reg: &str,
    hubs: &[&str],
    policy: Option<ReprovisionPolicy>,
) {
    let mut e = IndividualEnrollment::new(
        reg.into(),
        AttestationMechanism::symmetric_key(Some(KEY.into())),
    );
    e.common.iot_hubs = hubs.iter().map(|h| h.to_string()).collect();
    e.common.allocation_policy = Some(AllocationPolicy::Static);
    e.common.reprovision_policy = policy;
    emu.enrollments().create_individual(e).unwrap();
}

/// "Runtime Registration - Register Device": the request's `payload` is the device's data for
/// a custom allocation webhook; the result's `payload` is what such a webhook returned
/// (https://learn.microsoft.com/azure/iot-dps/how-to-send-additional-data). Without a webhook
/// the service answers no payload: the device's own is not echoed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_request_payload_is_not_echoed_in_the_registration_state() {
    let env = start().await;
    let emu = &env.emu;
    enroll_symmetric(emu, "payload-dev", KEY);
    let c = client(emu, None);
    let sas = device_sas(emu, "payload-dev", KEY, in_an_hour());
    let body = json!({"registrationId": "payload-dev", "payload": {"model": "m1"}});
    let done = register(&c, emu, "payload-dev", body.clone(), Some(&sas)).await;
    assert_eq!(done.body["status"], "assigned", "{}", done.body);
    assert!(
        done.body["registrationState"].get("payload").is_none(),
        "{}",
        done.body
    );
    let lookup = send(
        c.post(format!(
            "{}/{}/registrations/payload-dev?api-version=2021-10-01",
            emu.endpoint(),
            emu.id_scope()
        ))
        .header("authorization", &sas)
        .json(&body),
    )
    .await;
    assert_eq!(lookup.status, StatusCode::OK, "{}", lookup.body);
    assert!(lookup.body.get("payload").is_none(), "{}", lookup.body);
    assert!(emu
        .enrollments()
        .registration("payload-dev")
        .unwrap()
        .unwrap()
        .payload
        .is_none());
}

/// "Runtime Registration - Register Device" and "Operation Status Lookup": a 202 carries the
/// headers `Location: string` and `retry-after: integer`
/// (https://learn.microsoft.com/rest/api/iot-dps/device/runtime-registration/register-device).
/// The value is the operation's status URL, which answers like the poll.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_202_carries_location_and_retry_after() {
    let env = start_with(|c| c.assignment_delay = std::time::Duration::from_millis(300)).await;
    let emu = &env.emu;
    enroll_symmetric(emu, "loc-dev", KEY);
    let c = client(emu, None);
    let sas = device_sas(emu, "loc-dev", KEY, in_an_hour());
    let first = put_register(&c, emu, "loc-dev", body_reg("loc-dev"), Some(&sas)).await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{}", first.body);
    assert_eq!(first.headers["retry-after"], "1");
    let op = first.body["operationId"].as_str().unwrap();
    let location = first.headers["location"].to_str().unwrap().to_string();
    assert_eq!(
        location,
        format!(
            "/{}/registrations/loc-dev/operations/{op}?api-version={API}",
            emu.id_scope()
        )
    );
    // Following it is the poll; while assigning it carries the same headers.
    let polled = send(
        c.get(format!("{}{location}", emu.endpoint()))
            .header("authorization", &sas),
    )
    .await;
    assert_eq!(polled.status, StatusCode::ACCEPTED, "{}", polled.body);
    assert_eq!(polled.headers["location"].to_str().unwrap(), location);
    assert_eq!(polled.headers["retry-after"], "1");
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    let done = send(
        c.get(format!("{}{location}", emu.endpoint()))
            .header("authorization", &sas),
    )
    .await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    assert_eq!(done.body["operationId"], op);
    assert!(done.headers.get("location").is_none(), "only a 202 has one");
}

/// The documented fields of the service API's DeviceRegistrationState ("Device Registration
/// State - Get", https://learn.microsoft.com/rest/api/iot-dps/service/device-registration-state/get).
const DOCUMENTED: [&str; 11] = [
    "assignedHub",
    "createdDateTimeUtc",
    "deviceId",
    "errorCode",
    "errorMessage",
    "etag",
    "lastUpdatedDateTimeUtc",
    "payload",
    "registrationId",
    "status",
    "substatus",
];

fn only_documented(v: &Value) {
    let m = v.as_object().expect("an object");
    for k in m.keys() {
        assert!(DOCUMENTED.contains(&k.as_str()), "undocumented {k} in {v}");
    }
}

/// A TPM device's registration read through the service API: no authenticationKey (the
/// device's secret), no initialTwin, only DeviceRegistrationState's fields.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_api_returns_only_the_documented_registration_state() {
    let env = start().await;
    let emu = &env.emu;
    let dev = SoftTpm::new();
    let reg = dev.registration_id();
    let mut e = IndividualEnrollment::new(reg.clone(), AttestationMechanism::tpm(dev.ek_b64()));
    e.common.initial_twin = Some(json!({"tags": {"site": "lab"}}));
    emu.enrollments().create_individual(e).unwrap();
    let c = client(emu, None);
    let ch = put_register(&c, emu, &reg, dev.body(), None).await;
    assert_eq!(ch.status, StatusCode::UNAUTHORIZED, "{}", ch.body);
    let sas = device_sas(emu, &reg, &dev.open(&ch), in_an_hour());
    let done = register(&c, emu, &reg, dev.body(), Some(&sas)).await;
    assert_eq!(done.body["status"], "assigned", "{}", done.body);

    let got = send(service(
        &c,
        emu,
        Method::GET,
        &format!("registrations/{reg}"),
    ))
    .await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.body);
    only_documented(&got.body);
    assert_eq!(got.body["registrationId"], reg.as_str());
    assert_eq!(got.body["status"], "assigned");
    assert_eq!(got.body["substatus"], "initialAssignment");
    assert!(got.body["etag"].is_string());
}

/// "Device Registration State - Delete" (If-Match optional) and "- Query" (the registration
/// states of an enrollment group), "Individual Enrollment - Run Bulk Operation" (at most 10
/// enrollments) and "Get Attestation Mechanism"
/// (https://learn.microsoft.com/rest/api/iot-dps/service/device-registration-state,
/// https://learn.microsoft.com/rest/api/iot-dps/service/individual-enrollment/run-bulk-operation).
/// The Node service SDK drives them too (tests/node_clients.rs); these are the refusals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_operations_refuse_as_documented() {
    let env = start().await;
    let emu = &env.emu;
    enroll_symmetric(emu, "del-dev", KEY);
    enroll_symmetric_group(emu, "fleet", KEY);
    let c = client(emu, None);
    let sas = device_sas(emu, "del-dev", KEY, in_an_hour());
    register(&c, emu, "del-dev", body_reg("del-dev"), Some(&sas)).await;

    // Group query: only the group's devices, documented fields.
    let derived = dps_proto::group_key::derive_device_key_b64(KEY, "fleet-dev-1").unwrap();
    let gsas = device_sas(emu, "fleet-dev-1", &derived, in_an_hour());
    register(&c, emu, "fleet-dev-1", body_reg("fleet-dev-1"), Some(&gsas)).await;
    let q = send(
        service(&c, emu, Method::POST, "registrations/fleet/query").json(&json!({"query": "*"})),
    )
    .await;
    assert_eq!(q.status, StatusCode::OK, "{}", q.body);
    let states = q.body.as_array().unwrap();
    assert_eq!(states.len(), 1, "{}", q.body);
    assert_eq!(states[0]["registrationId"], "fleet-dev-1");
    only_documented(&states[0]);

    // Delete with a stale etag: 412, kept; with the right one: 204, gone; again: 404.
    let wrong =
        send(service(&c, emu, Method::DELETE, "registrations/del-dev").header("if-match", "stale"))
            .await;
    assert_eq!(
        wrong.status,
        StatusCode::PRECONDITION_FAILED,
        "{}",
        wrong.body
    );
    let etag = emu
        .enrollments()
        .registration("del-dev")
        .unwrap()
        .unwrap()
        .etag;
    let ok =
        send(service(&c, emu, Method::DELETE, "registrations/del-dev").header("if-match", etag))
            .await;
    assert_eq!(ok.status, StatusCode::NO_CONTENT, "{}", ok.body);
    assert!(emu.enrollments().registration("del-dev").unwrap().is_none());
    assert!(
        emu.enrollments().individual("del-dev").unwrap().is_some(),
        "the enrollment stays"
    );
    let again = send(service(&c, emu, Method::DELETE, "registrations/del-dev")).await;
    assert_error_body(&again, StatusCode::NOT_FOUND);

    // Bulk: 11 enrollments, an unknown mode: 400; a create of an existing id: reported.
    let e = |id: &str| json!({"registrationId": id, "attestation": {"type": "symmetricKey"}});
    let eleven: Vec<Value> = (0..11).map(|i| e(&format!("bulk-{i}"))).collect();
    let r = send(
        service(&c, emu, Method::POST, "enrollments")
            .json(&json!({"mode": "create", "enrollments": eleven})),
    )
    .await;
    assert_error_body(&r, StatusCode::BAD_REQUEST);
    let r = send(
        service(&c, emu, Method::POST, "enrollments")
            .json(&json!({"mode": "upsert", "enrollments": [e("bulk-0")]})),
    )
    .await;
    assert_error_body(&r, StatusCode::BAD_REQUEST);
    let r = send(
        service(&c, emu, Method::POST, "enrollments")
            .json(&json!({"mode": "create", "enrollments": [e("bulk-0"), e("del-dev")]})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["isSuccessful"], false);
    assert_eq!(r.body["errors"].as_array().unwrap().len(), 1, "{}", r.body);
    assert_eq!(r.body["errors"][0]["registrationId"], "del-dev");
    assert!(emu.enrollments().individual("bulk-0").unwrap().is_some());
    // updateIfMatchETag with a stale etag is reported, not written.
    let mut stale = e("bulk-0");
    stale["etag"] = json!("stale");
    stale["provisioningStatus"] = json!("disabled");
    let r = send(
        service(&c, emu, Method::POST, "enrollments")
            .json(&json!({"mode": "updateIfMatchETag", "enrollments": [stale]})),
    )
    .await;
    assert_eq!(r.body["isSuccessful"], false, "{}", r.body);
    assert_eq!(
        emu.enrollments()
            .individual("bulk-0")
            .unwrap()
            .unwrap()
            .common
            .provisioning_status,
        ProvisioningStatus::Enabled
    );

    // Attestation mechanism of an unknown enrollment: 404.
    let r = send(service(
        &c,
        emu,
        Method::POST,
        "enrollments/nobody/attestationmechanism",
    ))
    .await;
    assert_error_body(&r, StatusCode::NOT_FOUND);
}

/// A TPM device that got a challenge before a restart answers it afterwards: the challenge is
/// in the database, so the restart does not hand the waiting device a new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tpm_challenge_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = || {
        let mut c = EmulatorConfig::new(dir.path().join("state"));
        c.hubs = vec![HUB_A.into()];
        c
    };
    let dev = SoftTpm::new();
    let reg = dev.registration_id();
    let emu = Emulator::start(cfg()).await.unwrap();
    emu.enrollments()
        .create_individual(IndividualEnrollment::new(
            reg.clone(),
            AttestationMechanism::tpm(dev.ek_b64()),
        ))
        .unwrap();
    let ch = put_register(&client(&emu, None), &emu, &reg, dev.body(), None).await;
    assert_eq!(ch.status, StatusCode::UNAUTHORIZED, "{}", ch.body);
    let key = dev.open(&ch);
    emu.shutdown().await;

    let emu = Emulator::start(cfg()).await.unwrap();
    let c = client(&emu, None);
    let sas = device_sas(&emu, &reg, &key, in_an_hour());
    let done = register(&c, &emu, &reg, dev.body(), Some(&sas)).await;
    assert_eq!(done.body["status"], "assigned", "{}", done.body);
    emu.shutdown().await;
}

/// Operations completed more than a day ago are deleted when a registration is recorded (the
/// service documents no retention; a device polls within seconds).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_operations_are_pruned() {
    let env = start().await;
    let store = env.emu.enrollments();
    let state = |id: &str| RegistrationState {
        registration_id: id.into(),
        status: "assigned".into(),
        ..serde_json::from_value(json!({})).unwrap()
    };
    let now = dps_emulator::timeutil::unix_now_ms();
    let day = dps_emulator::store::OPERATION_RETENTION_MS;
    let old = store
        .record_registration(state("old-dev"), now - day - 1000)
        .unwrap();
    assert!(
        store.operation(&old.operation_id).unwrap().is_some(),
        "kept until the next registration is recorded"
    );
    let recent = store
        .record_registration(state("recent-dev"), now - day + 60_000)
        .unwrap();
    assert!(
        store.operation(&old.operation_id).unwrap().is_none(),
        "pruned"
    );
    store.record_registration(state("new-dev"), now).unwrap();
    assert!(
        store.operation(&recent.operation_id).unwrap().is_some(),
        "kept"
    );
    assert_eq!(store.operation_count().unwrap(), 2);
}

async fn register_sym(
    c: &reqwest::Client,
    emu: &dps_emulator::RunningEmulator,
    reg: &str,
) -> Value {
    let sas = device_sas(emu, reg, KEY, in_an_hour());
    let done = register(c, emu, reg, body_reg(reg), Some(&sas)).await;
    assert_eq!(done.body["status"], "assigned", "{}", done.body);
    done.body["registrationState"].clone()
}

/// "IoT Hub Device reprovisioning concepts"
/// (https://learn.microsoft.com/azure/iot-dps/concepts-device-reprovision) and the substatus
/// values of DeviceRegistrationState: `initialAssignment` (first hub), `deviceDataMigrated`
/// (another hub, data migrated: migrateDeviceData true, the default), `deviceDataReset`
/// (another hub, initial state: migrateDeviceData false), `reprovisionedToInitialAssignment`
/// (a hub it was assigned before); updateHubAssignment false keeps the current hub.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn re_registration_substatus_follows_the_reprovision_policy() {
    let env = start_with(|c| c.hubs = vec![HUB_A.into(), HUB_B.into(), HUB_C.into()]).await;
    let emu = &env.emu;
    let c = client(emu, None);

    // Default policy: migrate.
    enroll_on(emu, "mover", &[HUB_A], None);
    let s = register_sym(&c, emu, "mover").await;
    assert_eq!(
        (s["assignedHub"].as_str(), s["substatus"].as_str()),
        (Some(HUB_A), Some("initialAssignment"))
    );
    let s = register_sym(&c, emu, "mover").await;
    assert_eq!(s["substatus"], "initialAssignment", "same hub again");
    enroll_on(emu, "mover", &[HUB_B], None);
    let s = register_sym(&c, emu, "mover").await;
    assert_eq!(
        (s["assignedHub"].as_str(), s["substatus"].as_str()),
        (Some(HUB_B), Some("deviceDataMigrated"))
    );
    enroll_on(emu, "mover", &[HUB_A], None);
    let s = register_sym(&c, emu, "mover").await;
    assert_eq!(
        (s["assignedHub"].as_str(), s["substatus"].as_str()),
        (Some(HUB_A), Some("reprovisionedToInitialAssignment"))
    );

    // migrateDeviceData false: reset.
    let reset = ReprovisionPolicy {
        update_hub_assignment: true,
        migrate_device_data: false,
    };
    enroll_on(emu, "mover", &[HUB_C], Some(reset));
    let s = register_sym(&c, emu, "mover").await;
    assert_eq!(
        (s["assignedHub"].as_str(), s["substatus"].as_str()),
        (Some(HUB_C), Some("deviceDataReset"))
    );

    // updateHubAssignment false: stays on its current hub whatever the enrollment now says.
    let stay = ReprovisionPolicy {
        update_hub_assignment: false,
        migrate_device_data: true,
    };
    enroll_on(emu, "mover", &[HUB_B], Some(stay));
    let s = register_sym(&c, emu, "mover").await;
    assert_eq!(
        (s["assignedHub"].as_str(), s["substatus"].as_str()),
        (Some(HUB_C), Some("initialAssignment"))
    );

    // The policy goes through the service API as the documented object.
    let got = send(service(&c, emu, Method::GET, "enrollments/mover")).await;
    assert_eq!(
        got.body["reprovisionPolicy"],
        json!({"updateHubAssignment": false, "migrateDeviceData": true})
    );
    // A deleted registration state starts over.
    let d = send(service(&c, emu, Method::DELETE, "registrations/mover")).await;
    assert_eq!(d.status, StatusCode::NO_CONTENT);
    enroll_on(emu, "mover", &[HUB_B], None);
    let s = register_sym(&c, emu, "mover").await;
    assert_eq!(
        (s["assignedHub"].as_str(), s["substatus"].as_str()),
        (Some(HUB_B), Some("initialAssignment"))
    );
}

/// Hubs are named by host name, as the service's linked hubs and enrollments' `iotHubs` are
/// ("The list of IoT Hub hostnames...", "Individual Enrollment - Create Or Update",
/// https://learn.microsoft.com/rest/api/iot-dps/service/individual-enrollment/create-or-update):
/// a bare name is refused with a message giving the full name, no longer silently rewritten.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_names_without_a_domain_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = EmulatorConfig::new(dir.path().join("state"));
    cfg.hubs = vec!["hub-a".into()];
    let err = Emulator::start(cfg)
        .await
        .map(|_| ())
        .expect_err("refused")
        .to_string();
    assert!(
        err.contains("`hub-a`") && err.contains("hub-a.azure-devices.net"),
        "{err}"
    );

    let env = start().await;
    let emu = &env.emu;
    let c = client(emu, None);
    for field in [
        json!({"iotHubs": ["hub-b"]}),
        json!({"iotHubHostName": "hub-b"}),
    ] {
        let mut body =
            json!({"registrationId": "bare-hub", "attestation": {"type": "symmetricKey"}});
        body.as_object_mut()
            .unwrap()
            .extend(field.as_object().unwrap().clone());
        let r = send(service(&c, emu, Method::PUT, "enrollments/bare-hub").json(&body)).await;
        assert_error_body(&r, StatusCode::BAD_REQUEST);
        assert!(
            r.body["message"]
                .as_str()
                .unwrap()
                .contains("hub-b.azure-devices.net"),
            "{}",
            r.body
        );
    }
    assert!(emu.enrollments().individual("bare-hub").unwrap().is_none());
}

/// What a registration costs the disk (each commit is one fsync under synchronous=FULL): a
/// symmetric-key registration is ONE commit (the hub device and the registration record with
/// its operation together), a TPM one two (the challenge, which must survive a restart before
/// the device gets it, then the registration: the challenge answered right after it was
/// issued is not written again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_is_one_commit_a_tpm_one_two() {
    let env = start().await;
    let store = env.emu.enrollments();
    enroll_on(&env.emu, "commit-sym", &[HUB_A], None);
    let c = client(&env.emu, None);
    let before = store.commits();
    register_sym(&c, &env.emu, "commit-sym").await;
    assert_eq!(store.commits() - before, 1, "symmetric key");
    assert!(store.hub_device(HUB_A, "commit-sym").unwrap().is_some());
    assert!(store.registration("commit-sym").unwrap().is_some());

    let dev = SoftTpm::new();
    let reg = dev.registration_id();
    store
        .create_individual(IndividualEnrollment::new(
            reg.clone(),
            AttestationMechanism::tpm(dev.ek_b64()),
        ))
        .unwrap();
    let before = store.commits();
    let ch = put_register(&c, &env.emu, &reg, dev.body(), None).await;
    assert_eq!(ch.status, StatusCode::UNAUTHORIZED, "{}", ch.body);
    let key = dev.open(&ch);
    let sas = device_sas(&env.emu, &reg, &key, in_an_hour());
    let done = register(&c, &env.emu, &reg, dev.body(), Some(&sas)).await;
    assert_eq!(done.body["status"], "assigned", "{}", done.body);
    assert_eq!(
        store.commits() - before,
        2,
        "TPM: challenge, then registration"
    );
}
