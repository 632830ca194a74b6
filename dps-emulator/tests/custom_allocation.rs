//! Custom allocation webhooks, as the service calls them. The shapes follow "Understand custom
//! allocation policies with Azure IoT Hub Device Provisioning Service"
//! (https://learn.microsoft.com/azure/iot-dps/concepts-custom-allocation: the AllocationRequest
//! `individualEnrollment` / `enrollmentGroup`, `deviceRuntimeContext {registrationId,
//! currentIotHubHostName, currentDeviceId, x509 | symmetricKey | tpm, payload}`, `linkedHubs`;
//! the AllocationResponse `iotHubHostName`, `initialTwin`, `payload`), "How to transfer payloads
//! between devices and DPS" (https://learn.microsoft.com/azure/iot-dps/how-to-send-additional-data:
//! the device's payload reaches the webhook as `deviceRuntimeContext.payload`, the webhook's comes
//! back in `registrationState.payload`) and the request the tutorial "Use custom allocation
//! policies with DPS" logs from the service (`"attestation":{"type":"symmetricKey"}` without
//! keys, `"webhookUrl":"https://...?****"`, `"symmetricKey":{}`). The failure codes are the
//! service's answers captured in public client code and logs: "Custom allocation failed with
//! status code: 400" with errorCode 400207, the same for 401 with 400209; 400208 is the
//! emulator's (and the reference notes') "no hub" code for a hub that is not linked.
//!
//! Each test runs its own webhook (`common::webhook`, a hyper server on an ephemeral loopback
//! port).

mod common;

use common::webhook::Webhook;
use common::*;
use dps_emulator::model::*;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::time::Duration;

const HUB_A: &str = "hub-a.azure-devices.net";
const HUB_B: &str = "hub-b.azure-devices.net";

fn definition(url: String) -> CustomAllocationDefinition {
    CustomAllocationDefinition {
        webhook_url: url,
        api_version: "2021-10-01".into(),
    }
}

/// Custom allocation settings on `common`.
fn custom(common: &mut EnrollmentCommon, url: String) {
    common.allocation_policy = Some(AllocationPolicy::Custom);
    common.custom_allocation_definition = Some(definition(url));
}

/// The key of the test group `group`: each group has its own, so that a device's key names
/// its group (the emulator tries the groups in turn).
fn group_key(group: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(format!("{group:-<32}"))
}

/// Registers `reg` of `group` (a symmetric-key group keyed by [`group_key`]) sending `body`.
async fn register_in_group(env: &Env, group: &str, reg: &str, body: Value) -> Answer {
    let c = client(&env.emu, None);
    let key = dps_proto::group_key::derive_device_key_b64(&group_key(group), reg).unwrap();
    let sas = device_sas(&env.emu, reg, key.as_str(), in_an_hour());
    register(&c, &env.emu, reg, body, Some(&sas)).await
}

/// A symmetric-key group (keyed by [`group_key`]) allocated by the webhook at `url`.
fn custom_group(env: &Env, group: &str, url: String) {
    let mut g = EnrollmentGroup::new(
        group.into(),
        AttestationMechanism::symmetric_key(Some(group_key(group))),
    );
    custom(&mut g.common, url);
    env.emu.enrollments().create_group(g).unwrap();
}

/// Symmetric-key group: the documented request (no keys, masked function key, `symmetricKey:
/// {}`, the device's payload, the linked hubs), the webhook's hub, initial twin and payload in
/// effect, and `currentIotHubHostName` / `currentDeviceId` on the second registration.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn symmetric_group_webhook_chooses_the_hub_twin_and_payload() {
    let env = start().await;
    let hook = Webhook::answering(json!({
        "iotHubHostName": HUB_B,
        "initialTwin": {
            "tags": {"deviceType": "toaster"},
            "properties": {"desired": {"state": "ready", "darkness": {"level": 3}}}
        },
        "payload": {"greeting": "hello", "slot": 7}
    }))
    .await;
    custom_group(&env, "toasters", hook.url("/api/alloc?code=function-key"));

    let reg = "toaster-007";
    let sent_payload = json!({"model": "t-1000", "firmware": "12.0.2"});
    let done = register_in_group(
        &env,
        "toasters",
        reg,
        json!({"registrationId": reg, "payload": sent_payload}),
    )
    .await;
    let st = &done.body["registrationState"];
    assert_eq!(done.body["status"], "assigned", "{}", done.body);
    assert_eq!(st["assignedHub"], HUB_B);
    assert_eq!(st["deviceId"], reg);
    assert_eq!(st["payload"], json!({"greeting": "hello", "slot": 7}));

    let got = hook.received();
    assert_eq!(got.len(), 1, "{got:?}");
    let r = &got[0];
    assert_eq!(r.method, "POST");
    // The function key reaches the webhook in its URL, as the service calls the function.
    assert_eq!(r.path_and_query, "/api/alloc?code=function-key");
    assert!(
        r.content_type.starts_with("application/json"),
        "{}",
        r.content_type
    );
    let b = &r.body;
    let g = &b["enrollmentGroup"];
    assert_eq!(g["enrollmentGroupId"], "toasters");
    assert_eq!(g["attestation"], json!({"type": "symmetricKey"}), "{b}");
    assert_eq!(g["allocationPolicy"], "custom");
    assert_eq!(g["provisioningStatus"], "enabled");
    let masked = format!("{}?****", hook.url("/api/alloc"));
    assert_eq!(
        g["customAllocationDefinition"],
        json!({"webhookUrl": masked, "apiVersion": "2021-10-01"})
    );
    assert!(b.get("individualEnrollment").is_none(), "{b}");
    assert!(
        !b.to_string().contains(&group_key("toasters")),
        "the group key leaked: {b}"
    );
    assert!(!b.to_string().contains("function-key"), "{b}");
    assert_eq!(
        b["deviceRuntimeContext"],
        json!({"registrationId": reg, "symmetricKey": {}, "payload": sent_payload})
    );
    assert_eq!(b["linkedHubs"], json!([HUB_A, HUB_B]));

    // The hub device has the webhook's desired properties.
    let dev = env.emu.hub_registry().device(reg, Some(HUB_B)).unwrap();
    assert_eq!(dev.desired["state"], "ready");
    assert_eq!(dev.desired["darkness"], json!({"level": 3}));

    // A second registration tells the webhook where the device is now.
    let again = register_in_group(&env, "toasters", reg, json!({"registrationId": reg})).await;
    assert_eq!(again.body["status"], "assigned", "{}", again.body);
    let got = hook.received();
    assert_eq!(got.len(), 2);
    assert_eq!(
        got[1].body["deviceRuntimeContext"],
        json!({"registrationId": reg, "currentIotHubHostName": HUB_B,
               "currentDeviceId": reg, "symmetricKey": {}})
    );
}

/// X.509 individual enrollment: `individualEnrollment` and the device's certificate details in
/// `deviceRuntimeContext.x509`; the webhook's hub, no payload when it returns none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x509_individual_request_carries_the_certificate_details() {
    let env = start().await;
    let hook = Webhook::answering(json!({"iotHubHostName": HUB_A})).await;
    let (root, leaf) = x509_leaf("x509-custom-1");
    let mut e = IndividualEnrollment::new(
        "x509-custom-1".into(),
        AttestationMechanism::x509_client(leaf.cert_pem()),
    );
    custom(&mut e.common, hook.url("/x509"));
    env.emu.enrollments().create_individual(e).unwrap();

    let c = client(&env.emu, Some((&[&leaf, &root], &leaf)));
    let done = register(
        &c,
        &env.emu,
        "x509-custom-1",
        body_reg("x509-custom-1"),
        None,
    )
    .await;
    let st = &done.body["registrationState"];
    assert_eq!(done.body["status"], "assigned", "{}", done.body);
    assert_eq!(st["assignedHub"], HUB_A);
    assert!(st.get("payload").is_none(), "{st}");

    let got = hook.received();
    assert_eq!(got.len(), 1);
    let b = &got[0].body;
    assert_eq!(b["individualEnrollment"]["registrationId"], "x509-custom-1");
    assert_eq!(b["individualEnrollment"]["attestation"]["type"], "x509");
    assert!(b.get("enrollmentGroup").is_none(), "{b}");
    let ctx = &b["deviceRuntimeContext"];
    assert_eq!(ctx["registrationId"], "x509-custom-1");
    assert_eq!(
        ctx["x509"]["certificateInfo"]["subjectName"],
        "CN=x509-custom-1"
    );
    assert_eq!(
        ctx["x509"]["certificateInfo"]["sha256Thumbprint"],
        st["x509"]["certificateInfo"]["sha256Thumbprint"]
    );
    assert!(
        ctx.get("symmetricKey").is_none() && ctx.get("tpm").is_none(),
        "{ctx}"
    );
    assert!(ctx.get("payload").is_none(), "{ctx}");
}

/// TPM individual enrollment: the webhook is called once, for the authenticated register (not
/// for the challenge), with `deviceRuntimeContext.tpm {endorsementKey, storageRootKey}`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tpm_request_carries_the_endorsement_and_storage_root_keys() {
    let env = start().await;
    let hook = Webhook::answering(json!({"iotHubHostName": HUB_B, "payload": {"tpm": true}})).await;
    let tpm = SoftTpm::new();
    let reg = tpm.registration_id();
    let mut e = IndividualEnrollment::new(reg.clone(), AttestationMechanism::tpm(tpm.ek_b64()));
    custom(&mut e.common, hook.url("/tpm"));
    env.emu.enrollments().create_individual(e).unwrap();

    let c = client(&env.emu, None);
    let challenge = put_register(&c, &env.emu, &reg, tpm.body(), None).await;
    assert_eq!(
        challenge.status,
        StatusCode::UNAUTHORIZED,
        "{}",
        challenge.body
    );
    assert!(
        hook.received().is_empty(),
        "the webhook was called for the challenge"
    );
    let key = tpm.open(&challenge);
    let sas = device_sas(&env.emu, &reg, &key, in_an_hour());
    let done = register(&c, &env.emu, &reg, tpm.body(), Some(&sas)).await;
    assert_eq!(done.body["status"], "assigned", "{}", done.body);
    assert_eq!(done.body["registrationState"]["assignedHub"], HUB_B);
    assert_eq!(
        done.body["registrationState"]["payload"],
        json!({"tpm": true})
    );

    let got = hook.received();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(
        got[0].body["deviceRuntimeContext"],
        json!({"registrationId": reg,
               "tpm": {"endorsementKey": tpm.ek_b64(), "storageRootKey": tpm.srk_b64()}})
    );
}

/// Every way a webhook can fail ends the registration `failed` with the service's errorCode and
/// message (or, where the service's is undocumented, the emulator's 400207 with the reason), no
/// payload and no hub device.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_failures_fail_the_registration() {
    let env = start_with(|c| c.webhook_timeout = Duration::from_millis(1500)).await;
    let status =
        |code: u16, body: &'static str| move |_: &Value| (code, body.to_string(), Duration::ZERO);
    let bad_request = Webhook::start(status(400, "Unrecognized device registration.")).await;
    let unauthorized = Webhook::start(status(401, "")).await;
    let forbidden = Webhook::start(status(403, "")).await;
    let server_error = Webhook::start(status(500, "boom")).await;
    let not_json = Webhook::start(status(200, "this is not json")).await;
    let not_linked = Webhook::answering(json!({"iotHubHostName": "hub-z.azure-devices.net"})).await;
    let no_hub = Webhook::answering(json!({"payload": {"x": 1}})).await;
    let bad_twin = Webhook::answering(
        json!({"iotHubHostName": HUB_A, "initialTwin": {"properties": {"desired": {"a.b": 1}}}}),
    )
    .await;
    let bad_payload = Webhook::answering(json!({"iotHubHostName": HUB_A, "payload": [1, 2]})).await;
    let slow = Webhook::start(|_| {
        (
            200,
            json!({"iotHubHostName": HUB_A}).to_string(),
            Duration::from_secs(5),
        )
    })
    .await;
    // A port nothing listens on any more.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    // https to the emulator's own listener: its certificate is from the emulator's dev CA, not
    // a public root, so the webhook call fails the TLS handshake.
    let untrusted_https = format!("https://127.0.0.1:{}/api/alloc", env.emu.addr().port());

    let cases: Vec<(&str, String, u64, &str)> = vec![
        (
            "bad-request",
            bad_request.url("/"),
            400207,
            "Custom allocation failed with status code: 400",
        ),
        (
            "unauthorized",
            unauthorized.url("/"),
            400209,
            "Custom allocation failed with status code: 401",
        ),
        (
            "forbidden",
            forbidden.url("/"),
            400209,
            "Custom allocation failed with status code: 403",
        ),
        (
            "server-error",
            server_error.url("/"),
            400207,
            "Custom allocation failed with status code: 500",
        ),
        (
            "not-json",
            not_json.url("/"),
            400207,
            "is not an AllocationResponse",
        ),
        (
            "not-linked",
            not_linked.url("/"),
            400208,
            "hub-z.azure-devices.net, which is not linked",
        ),
        ("no-hub", no_hub.url("/"), 400208, "gave no iotHubHostName"),
        (
            "bad-twin",
            bad_twin.url("/"),
            400207,
            "initialTwin.properties.desired",
        ),
        (
            "bad-payload",
            bad_payload.url("/"),
            400207,
            "payload is not a JSON object",
        ),
        ("slow", slow.url("/"), 400207, "did not answer in time"),
        (
            "refused",
            format!("http://{closed}/"),
            400207,
            "cannot connect to the webhook",
        ),
        (
            "untrusted-https",
            untrusted_https,
            400207,
            "invalid peer certificate",
        ),
    ];
    for (group, url, code, message) in &cases {
        // The function key in the URL must not reach the device in the error message.
        custom_group(&env, group, format!("{url}?code=function-secret"));
        let reg = format!("{group}-dev");
        let done = register_in_group(
            &env,
            group,
            &reg,
            json!({"registrationId": reg, "payload": {"sent": true}}),
        )
        .await;
        let st = &done.body["registrationState"];
        assert_eq!(done.body["status"], "failed", "{group}: {}", done.body);
        assert_eq!(st["status"], "failed", "{group}: {st}");
        assert_eq!(st["errorCode"], *code, "{group}: {st}");
        let m = st["errorMessage"].as_str().unwrap_or_default();
        assert!(m.contains(message), "{group}: {m:?} lacks {message:?}");
        assert!(!m.contains("function-secret"), "{group}: {m:?}");
        assert!(st.get("assignedHub").is_none(), "{group}: {st}");
        assert!(st.get("payload").is_none(), "{group}: {st}");
        assert!(
            env.emu.hub_registry().device(&reg, None).is_err(),
            "{group}: a hub device was created"
        );
    }
    for (hook, name) in [
        (&bad_request, "bad-request"),
        (&slow, "slow"),
        (&not_linked, "not-linked"),
    ] {
        assert_eq!(hook.received().len(), 1, "{name} was not called once");
    }
}

/// A disabled enrollment and a device kept on its hub (`updateHubAssignment: false`) do not
/// call the webhook.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_is_not_called_when_nothing_is_to_be_allocated() {
    let env = start().await;
    let hook = Webhook::answering(json!({"iotHubHostName": HUB_A})).await;
    let mut g = EnrollmentGroup::new(
        "sticky".into(),
        AttestationMechanism::symmetric_key(Some(group_key("sticky"))),
    );
    custom(&mut g.common, hook.url("/"));
    g.common.reprovision_policy = Some(ReprovisionPolicy {
        update_hub_assignment: false,
        migrate_device_data: true,
    });
    env.emu.enrollments().create_group(g).unwrap();
    let first = register_in_group(&env, "sticky", "sticky-1", body_reg("sticky-1")).await;
    assert_eq!(first.body["registrationState"]["assignedHub"], HUB_A);
    let second = register_in_group(&env, "sticky", "sticky-1", body_reg("sticky-1")).await;
    assert_eq!(second.body["registrationState"]["assignedHub"], HUB_A);
    assert_eq!(hook.received().len(), 1, "the webhook was asked again");

    let mut d = EnrollmentGroup::new(
        "off".into(),
        AttestationMechanism::symmetric_key(Some(group_key("off"))),
    );
    custom(&mut d.common, hook.url("/"));
    d.common.provisioning_status = ProvisioningStatus::Disabled;
    env.emu.enrollments().create_group(d).unwrap();
    let off = register_in_group(&env, "off", "off-1", body_reg("off-1")).await;
    assert_eq!(off.body["status"], "disabled", "{}", off.body);
    assert_eq!(
        hook.received().len(),
        1,
        "the webhook was asked for a disabled device"
    );
}

/// The service API takes `allocationPolicy: custom` with `customAllocationDefinition` on
/// individual enrollments and groups, shows it back, and refuses a custom enrollment without
/// a definition, a non-https webhook (http only to loopback) and a missing API version.
/// ("Individual Enrollment - Create Or Update": `allocationPolicy` `custom`,
/// `customAllocationDefinition {webhookUrl, apiVersion}`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_api_takes_and_checks_custom_allocation() {
    let env = start().await;
    let emu = &env.emu;
    let c = client(emu, None);
    let individual = |def: Value| {
        json!({"registrationId": "svc-custom", "attestation": {"type": "symmetricKey"},
               "allocationPolicy": "custom", "customAllocationDefinition": def})
    };
    let group = |def: Value| {
        json!({"enrollmentGroupId": "svc-custom-group", "attestation": {"type": "symmetricKey"},
               "allocationPolicy": "custom", "customAllocationDefinition": def})
    };
    let good = json!({"webhookUrl": "https://func.example.net/api/alloc?code=k", "apiVersion": "2021-10-01"});
    for (path, body) in [
        ("enrollments/svc-custom", individual(good.clone())),
        ("enrollmentGroups/svc-custom-group", group(good.clone())),
    ] {
        let put = send(service(&c, emu, Method::PUT, path).json(&body)).await;
        assert_eq!(put.status, StatusCode::OK, "{path}: {}", put.body);
        let got = send(service(&c, emu, Method::GET, path)).await;
        assert_eq!(got.status, StatusCode::OK, "{}", got.body);
        assert_eq!(got.body["allocationPolicy"], "custom");
        assert_eq!(got.body["customAllocationDefinition"], good);
    }
    let loopback =
        json!({"webhookUrl": "http://localhost:7071/api/alloc", "apiVersion": "2019-03-31"});
    let put =
        send(service(&c, emu, Method::PUT, "enrollments/svc-custom").json(&individual(loopback)))
            .await;
    assert_eq!(put.status, StatusCode::OK, "{}", put.body);

    let mut no_definition = individual(Value::Null);
    no_definition
        .as_object_mut()
        .unwrap()
        .remove("customAllocationDefinition");
    let refused = [
        (no_definition, "customAllocationDefinition"),
        (
            individual(
                json!({"webhookUrl": "http://func.example.net/api", "apiVersion": "2021-10-01"}),
            ),
            "must be https",
        ),
        (
            individual(json!({"webhookUrl": "ftp://127.0.0.1/x", "apiVersion": "2021-10-01"})),
            "must be an https URL",
        ),
        (
            individual(json!({"webhookUrl": "not a url", "apiVersion": "2021-10-01"})),
            "not an absolute URL",
        ),
        (
            individual(json!({"webhookUrl": "https://func.example.net/api", "apiVersion": ""})),
            "apiVersion",
        ),
        (
            individual(json!({"webhookUrl": "https://func.example.net/api"})),
            "apiVersion",
        ),
        (
            group(json!({"webhookUrl": "http://10.0.0.1/api", "apiVersion": "2021-10-01"})),
            "must be https",
        ),
    ];
    for (body, needle) in refused {
        let path = if body.get("enrollmentGroupId").is_some() {
            "enrollmentGroups/svc-custom-group"
        } else {
            "enrollments/svc-custom"
        };
        let put = send(service(&c, emu, Method::PUT, path).json(&body)).await;
        assert_error_body(&put, StatusCode::BAD_REQUEST);
        assert!(
            put.body["message"]
                .as_str()
                .unwrap_or_default()
                .contains(needle),
            "{body}: {}",
            put.body
        );
    }
}

/// `dps-emulator enroll ... --custom-allocation-webhook URL [--custom-allocation-api-version V]`
/// and `dps-emulator group ...` store a custom enrollment; a bad URL is refused.
#[test]
fn the_cli_enrolls_with_a_custom_allocation_webhook() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let state_arg = state.to_str().unwrap();
    // `dps-emulator CMD symmetric ID_FLAG ID --state DIR EXTRA...`
    let run = |cmd: &str, id_flag: &str, id: &str, extra: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_dps-emulator"))
            .args([cmd, "symmetric", id_flag, id, "--state", state_arg])
            .args(extra)
            .output()
            .unwrap()
    };
    let webhook = "--custom-allocation-webhook";
    for out in [
        run(
            "enroll",
            "--registration-id",
            "cli-custom",
            &[
                webhook,
                "https://func.example.net/api/alloc?code=k",
                "--custom-allocation-api-version",
                "2019-03-31",
            ],
        ),
        run(
            "group",
            "--group-id",
            "cli-custom-group",
            &[webhook, "http://127.0.0.1:7071/api/alloc"],
        ),
    ] {
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{err}");
    }
    let bad = run(
        "enroll",
        "--registration-id",
        "cli-bad",
        &[webhook, "http://func.example.net/api"],
    );
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("must be https"), "{err}");
    let conflicting = run(
        "enroll",
        "--registration-id",
        "cli-bad",
        &[
            "--allocation",
            "static",
            webhook,
            "https://func.example.net/api",
        ],
    );
    assert!(!conflicting.status.success());

    let store = dps_emulator::open_store(&state).unwrap();
    let e = store.individual("cli-custom").unwrap().unwrap();
    assert_eq!(e.common.allocation_policy, Some(AllocationPolicy::Custom));
    assert_eq!(
        e.common.custom_allocation_definition,
        Some(CustomAllocationDefinition {
            webhook_url: "https://func.example.net/api/alloc?code=k".into(),
            api_version: "2019-03-31".into(),
        })
    );
    let g = store.group("cli-custom-group").unwrap().unwrap();
    assert_eq!(g.common.allocation_policy, Some(AllocationPolicy::Custom));
    assert_eq!(
        g.common.custom_allocation_definition.unwrap().api_version,
        "2021-10-01"
    );
    assert!(store.individual("cli-bad").unwrap().is_none());
}
