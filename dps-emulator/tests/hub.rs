//! The emulated IoT hubs, packet by packet, against what the service documents in
//! "Communicate with an IoT hub using the MQTT protocol" (learn.microsoft.com, azure/iot/
//! iot-mqtt-connect-to-iot-hub): a device provisioned by the emulator's DPS connects to its
//! assigned hub on the same MQTT listener with client id = device id, user name
//! `{hub}/{deviceId}/?api-version=...` and a SAS for `{hub}/devices/{deviceId}` signed with the
//! credential DPS gave it (or its X.509 chain); telemetry on `devices/{id}/messages/events/`
//! with a property bag; twin GET / reported PATCH on `$iothub/twin/...` answered on
//! `$iothub/twin/res/{status}/?$rid=..[&$version=..]`; cloud-to-device messages on
//! `devices/{id}/messages/devicebound/...`.

mod common;

use common::hub::*;
use common::*;
use dps_emulator::model::{AttestationMechanism, IndividualEnrollment};
use rumqttc::mqttbytes::v4::{Packet, SubscribeReasonCode};
use rumqttc::mqttbytes::QoS;
use serde_json::json;

const KEY: &str = "q83vEjRWeJq8p7Bm6x7Ntx0YhEorkqGSTd1U7Nl2JWc=";

/// Enrolls `reg` with a symmetric key and `initial_twin`, registers it over HTTPS; returns
/// (assigned hub, device id).
async fn provision_symmetric(
    env: &Env,
    reg: &str,
    initial_twin: serde_json::Value,
) -> (String, String) {
    let mut e = IndividualEnrollment::new(
        reg.into(),
        AttestationMechanism::symmetric_key(Some(KEY.into())),
    );
    e.common.initial_twin = Some(initial_twin);
    env.emu.enrollments().create_individual(e).unwrap();
    let sas = device_sas(&env.emu, reg, KEY, in_an_hour());
    let c = client(&env.emu, None);
    let done = register(&c, &env.emu, reg, body_reg(reg), Some(&sas)).await;
    assert_eq!(done.body["status"], "assigned", "{}", done.body);
    let state = &done.body["registrationState"];
    (
        state["assignedHub"].as_str().unwrap().to_string(),
        state["deviceId"].as_str().unwrap().to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provisioned_device_sends_telemetry_and_reads_and_reports_its_twin() {
    let env = start_mqtt(|_| {}).await;
    let (hub, dev) = provision_symmetric(
        &env,
        "hub-dev-1",
        json!({"tags": {"site": "lab"}, "properties": {"desired": {"interval": 5, "mode": {"fast": true}}}}),
    )
    .await;
    assert!(env.emu.hubs().contains(&hub));
    let sas = hub_sas(&hub, &dev, KEY, in_an_hour());
    let mut d = hub_connect(&env.emu, &hub, &dev, Some(&sas), None).await;
    let granted = d
        .subscribe(dps_proto::hub::TWIN_RESPONSE_FILTER, QoS::AtMostOnce)
        .await;
    assert!(
        matches!(&granted, Packet::SubAck(s) if s.return_codes == [SubscribeReasonCode::Success(QoS::AtMostOnce)]),
        "{granted:?}"
    );

    // The twin's desired document is the enrollment's initialTwin desired properties, at
    // $version 1; reported starts empty at $version 1 (a new twin).
    let t = get_twin(&mut d, "1").await;
    assert_eq!(t.status, 200, "{:?}", t.body);
    assert_eq!(
        t.body,
        json!({"desired": {"interval": 5, "mode": {"fast": true}, "$version": 1}, "reported": {"$version": 1}})
    );

    // Telemetry is acknowledged once stored, with its property bag and body.
    send_telemetry(
        &mut d,
        &dev,
        &[("temp unit", "°C"), ("$.ct", "application/json")],
        br#"{"t":21.5}"#,
    )
    .await;
    let msgs = env.emu.hub_registry().messages(&dev, None).unwrap();
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].body, br#"{"t":21.5}"#);
    assert_eq!(
        msgs[0].properties,
        [
            ("temp unit".to_string(), "°C".to_string()),
            ("$.ct".to_string(), "application/json".to_string())
        ]
    );

    // A reported patch is merged (null deletes) and answered 204 with the new $version.
    let r = report(&mut d, "2", &json!({"fw": "1.0", "battery": 80})).await;
    assert_eq!((r.status, r.version), (204, Some(2)), "{:?}", r.body);
    let r = report(&mut d, "3", &json!({"battery": null, "net": {"rssi": -60}})).await;
    assert_eq!((r.status, r.version), (204, Some(3)));
    let t = get_twin(&mut d, "4").await;
    assert_eq!(
        t.body["reported"],
        json!({"fw": "1.0", "net": {"rssi": -60}, "$version": 3})
    );
    // A patch the service refuses (not an object, a `$` key) is answered 400 and changes nothing.
    let r = report(&mut d, "5", &json!([1, 2])).await;
    assert_eq!(r.status, 400);
    let r = report(&mut d, "6", &json!({"$version": 9})).await;
    assert_eq!(r.status, 400);
    let t = get_twin(&mut d, "7").await;
    assert_eq!(t.body["reported"]["$version"], 3);
}

/// The `dps-emulator` CLI on `env`'s state folder; its stdout, after checking it succeeded.
fn cli(env: &Env, args: &[&str]) -> String {
    let state = env.dir.path().join("state");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dps-emulator"))
        .args(args)
        .arg("--state")
        .arg(&state)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "dps-emulator {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The CLI's exit status and stderr, for refusals.
fn cli_fails(env: &Env, args: &[&str]) -> String {
    let state = env.dir.path().join("state");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dps-emulator"))
        .args(args)
        .arg("--state")
        .arg(&state)
        .output()
        .unwrap();
    assert!(!out.status.success(), "dps-emulator {args:?} succeeded");
    String::from_utf8(out.stderr).unwrap()
}

/// The next PUBLISH (failing the test on anything else or a close).
async fn next_publish(d: &mut common::mqtt::Device) -> rumqttc::mqttbytes::v4::Publish {
    match d.recv().await {
        Some(Packet::Publish(p)) => p,
        other => panic!("expected a PUBLISH, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloud_to_device_messages_from_the_cli_are_delivered_at_qos_1_until_acknowledged() {
    let env = start_mqtt(|_| {}).await;
    let (hub, dev) = provision_symmetric(&env, "c2d-dev", json!({})).await;
    let c2d_filter = dps_proto::hub::c2d_filter(&dev).unwrap();

    // Queued while the device is away: delivered when it subscribes.
    let out = cli(
        &env,
        &[
            "hub",
            "c2d",
            "--device",
            &dev,
            "--property",
            "kind=reboot",
            "first",
        ],
    );
    assert!(out.contains("queued"), "{out}");
    let sas = hub_sas(&hub, &dev, KEY, in_an_hour());
    let mut d = hub_connect(&env.emu, &hub, &dev, Some(&sas), None).await;
    let granted = d.subscribe(&c2d_filter, QoS::AtLeastOnce).await;
    assert!(
        matches!(&granted, Packet::SubAck(s) if s.return_codes == [SubscribeReasonCode::Success(QoS::AtLeastOnce)]),
        "{granted:?}"
    );
    let p = next_publish(&mut d).await;
    assert_eq!(
        (p.qos, p.payload.as_ref()),
        (QoS::AtLeastOnce, &b"first"[..])
    );
    let props = dps_proto::hub::parse_c2d_topic(&dev, &p.topic).unwrap();
    assert!(
        props.contains(&("kind".into(), "reboot".into())),
        "{props:?}"
    );
    assert!(props.iter().any(|(k, _)| k == "$.mid"), "{props:?}");
    // Not acknowledged yet: still pending, and sent again on the next connection.
    assert_eq!(
        env.emu
            .hub_registry()
            .pending_c2d(&dev, None)
            .unwrap()
            .len(),
        1
    );
    drop(d);
    let mut d = hub_connect(&env.emu, &hub, &dev, Some(&sas), None).await;
    d.subscribe(&c2d_filter, QoS::AtLeastOnce).await;
    let p = next_publish(&mut d).await;
    assert_eq!(p.payload.as_ref(), b"first");
    d.send(Packet::PubAck(rumqttc::mqttbytes::v4::PubAck::new(p.pkid)))
        .await;

    // Sent while it is connected and subscribed: arrives promptly (the running emulator
    // notices the CLI's change in the shared database).
    cli(&env, &["hub", "c2d", "--device", &dev, "second"]);
    let p = next_publish(&mut d).await;
    assert_eq!(p.payload.as_ref(), b"second");
    d.send(Packet::PubAck(rumqttc::mqttbytes::v4::PubAck::new(p.pkid)))
        .await;
    // --json names the message.
    let out = cli(&env, &["hub", "c2d", "--device", &dev, "--json", "fourth"]);
    let queued: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(queued["deviceId"], dev.as_str());
    let p = next_publish(&mut d).await;
    assert_eq!(p.payload.as_ref(), b"fourth");
    let props = dps_proto::hub::parse_c2d_topic(&dev, &p.topic).unwrap();
    assert!(
        props.contains(&(
            "$.mid".to_string(),
            queued["messageId"].as_str().unwrap().to_string()
        )),
        "{props:?}"
    );
    d.send(Packet::PubAck(rumqttc::mqttbytes::v4::PubAck::new(p.pkid)))
        .await;
    // And through the library handle.
    env.emu
        .hub_registry()
        .send_c2d(&dev, None, &[("a".into(), "1".into())], b"third")
        .unwrap();
    let p = next_publish(&mut d).await;
    assert_eq!(p.payload.as_ref(), b"third");
    d.send(Packet::PubAck(rumqttc::mqttbytes::v4::PubAck::new(p.pkid)))
        .await;
    // Acknowledged messages are gone (a twin round trip orders the PUBACKs before the check).
    d.subscribe(dps_proto::hub::TWIN_RESPONSE_FILTER, QoS::AtMostOnce)
        .await;
    assert_eq!(get_twin(&mut d, "1").await.status, 200);
    assert!(env
        .emu
        .hub_registry()
        .pending_c2d(&dev, None)
        .unwrap()
        .is_empty());

    // The CLI refuses what the service would: an unknown device, an oversized body, a
    // `$`-property (those are the service's).
    cli_fails(&env, &["hub", "c2d", "--device", "nobody", "x"]);
    cli_fails(
        &env,
        &["hub", "c2d", "--device", &dev, &"x".repeat(65 * 1024)],
    );
    cli_fails(
        &env,
        &["hub", "c2d", "--device", &dev, "--property", "$.mid=1", "x"],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn desired_changes_are_pushed_and_the_cli_shows_devices_messages_and_twins() {
    let env = start_mqtt(|_| {}).await;
    let (hub, dev) = provision_symmetric(
        &env,
        "twin-dev",
        json!({"properties": {"desired": {"interval": 5}}}),
    )
    .await;
    let sas = hub_sas(&hub, &dev, KEY, in_an_hour());
    let mut d = hub_connect(&env.emu, &hub, &dev, Some(&sas), None).await;
    d.subscribe(dps_proto::hub::TWIN_DESIRED_FILTER, QoS::AtMostOnce)
        .await;
    let out = cli(
        &env,
        &[
            "hub",
            "twin",
            "--device",
            &dev,
            "--desired",
            r#"{"interval": 10, "mode": "eco"}"#,
        ],
    );
    let shown: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        shown["desired"],
        json!({"interval": 10, "mode": "eco", "$version": 2})
    );
    let p = next_publish(&mut d).await;
    assert_eq!(
        dps_proto::hub::parse_desired_patch_topic(&p.topic).unwrap(),
        2
    );
    let patch: serde_json::Value = serde_json::from_slice(&p.payload).unwrap();
    assert_eq!(patch, json!({"interval": 10, "mode": "eco", "$version": 2}));
    cli_fails(&env, &["hub", "twin", "--device", &dev, "--desired", "[1]"]);

    send_telemetry(&mut d, &dev, &[("k", "v")], b"hello").await;
    let out = cli(&env, &["hub", "messages", "--device", &dev, "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["messages"][0]["body"], "hello");
    assert_eq!(v["messages"][0]["properties"], json!([["k", "v"]]));
    assert_eq!(v["messages"][0]["deviceId"], dev.as_str());
    let out = cli(&env, &["hub", "devices", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let shown = &v["devices"][0];
    assert_eq!(
        (
            shown["deviceId"].as_str(),
            shown["hub"].as_str(),
            shown["status"].as_str()
        ),
        (Some(dev.as_str()), Some(hub.as_str()), Some("enabled"))
    );
    assert_eq!(shown["authenticationType"], "sas");
    // The listing never shows the key.
    assert!(!out.contains(KEY), "{out}");
}

/// A hub CONNECT's CONNACK code (the connection is dropped).
async fn connack(
    env: &Env,
    tls_name: &str,
    identity: Option<(
        &[&dps_emulator::pki::CertifiedKey],
        &dps_emulator::pki::CertifiedKey,
    )>,
    connect: rumqttc::mqttbytes::v4::Connect,
) -> rumqttc::mqttbytes::v4::ConnectReturnCode {
    hub_connect_with(&env.emu, tls_name, identity, connect)
        .await
        .1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connects_get_the_connack_codes() {
    use rumqttc::mqttbytes::v4::ConnectReturnCode::*;
    let env = start_mqtt(|_| {}).await;
    let (hub, dev) = provision_symmetric(&env, "refused-dev", json!({})).await;
    let other_hub = env.emu.hubs().iter().find(|h| **h != hub).unwrap().clone();
    let good = hub_sas(&hub, &dev, KEY, in_an_hour());
    // The good one connects (so each refusal below is about its one difference).
    assert_eq!(
        connack(
            &env,
            &hub,
            None,
            hub_connect_packet(&hub, &dev, Some(&good))
        )
        .await,
        Success
    );
    // Expired, forged (another key), for another device's scope, for the other hub, none.
    let past = dps_emulator::timeutil::unix_now() - 1;
    let forged_key = "c2VjcmV0LWtleS1mb3ItdGVzdHMtb25seS0xMjM0NTY3OA==";
    for (what, password) in [
        ("expired", hub_sas(&hub, &dev, KEY, past)),
        ("forged", hub_sas(&hub, &dev, forged_key, in_an_hour())),
        (
            "another device's scope",
            hub_sas(&hub, "someone-else", KEY, in_an_hour()),
        ),
        (
            "another hub's scope",
            hub_sas(&other_hub, &dev, KEY, in_an_hour()),
        ),
        (
            "the DPS token",
            device_sas(&env.emu, "refused-dev", KEY, in_an_hour()),
        ),
        ("no token", String::new()),
        ("garbage", "SharedAccessSignature sr=x".into()),
    ] {
        let code = connack(
            &env,
            &hub,
            None,
            hub_connect_packet(&hub, &dev, Some(&password)),
        )
        .await;
        assert_eq!(code, NotAuthorized, "{what}");
    }
    // Client id other than the device id.
    let mut c = hub_connect_packet(&hub, &dev, Some(&good));
    c.client_id = "someone-else".into();
    assert_eq!(connack(&env, &hub, None, c).await, BadClientId);
    // An unknown device, even with a token it signed itself.
    let p = hub_sas(&hub, "ghost", KEY, in_an_hour());
    assert_eq!(
        connack(
            &env,
            &hub,
            None,
            hub_connect_packet(&hub, "ghost", Some(&p))
        )
        .await,
        NotAuthorized
    );
    // A hub the emulator does not serve, a module identity, a TLS server name naming the other
    // hub than the user name.
    let mut c = hub_connect_packet(&hub, &dev, Some(&good));
    c.login.as_mut().unwrap().username =
        dps_proto::hub::username("elsewhere.azure-devices.net", &dev, HUB_API, None).unwrap();
    assert_eq!(
        connack(&env, "localhost", None, c).await,
        BadUserNamePassword
    );
    let mut c = hub_connect_packet(&hub, &dev, Some(&good));
    c.login.as_mut().unwrap().username = format!("{hub}/{dev}/module-1/?api-version={HUB_API}");
    assert_eq!(connack(&env, &hub, None, c).await, BadUserNamePassword);
    assert_eq!(
        connack(
            &env,
            &other_hub,
            None,
            hub_connect_packet(&hub, &dev, Some(&good))
        )
        .await,
        BadUserNamePassword
    );
    // Connecting by the emulator's own name (GatewayHostName-style) is fine.
    assert_eq!(
        connack(
            &env,
            "localhost",
            None,
            hub_connect_packet(&hub, &dev, Some(&good))
        )
        .await,
        Success
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_devices_topics_and_unsupported_packets_close_the_connection() {
    let env = start_mqtt(|_| {}).await;
    let (hub, dev) = provision_symmetric(&env, "topic-dev", json!({})).await;
    let sas = hub_sas(&hub, &dev, KEY, in_an_hour());
    let other_c2d = dps_proto::hub::c2d_filter("topic-other").unwrap();
    let other_events = dps_proto::hub::telemetry_topic::<&str, &str>("topic-other", &[]).unwrap();
    // Direct methods are not emulated: the filter is refused in the SUBACK, the connection
    // stays.
    let mut d = hub_connect(&env.emu, &hub, &dev, Some(&sas), None).await;
    let s = d.subscribe("$iothub/methods/POST/#", QoS::AtMostOnce).await;
    assert!(
        matches!(&s, Packet::SubAck(a) if a.return_codes == [SubscribeReasonCode::Failure]),
        "{s:?}"
    );
    send_telemetry(&mut d, &dev, &[], b"still open").await;

    for (what, packet) in [
        (
            "another device's C2D",
            Packet::Subscribe(rumqttc::mqttbytes::v4::Subscribe::new(
                &other_c2d,
                QoS::AtLeastOnce,
            )),
        ),
        (
            "a wildcard",
            Packet::Subscribe(rumqttc::mqttbytes::v4::Subscribe::new(
                "devices/#",
                QoS::AtLeastOnce,
            )),
        ),
        (
            "another device's telemetry",
            Packet::Publish(rumqttc::mqttbytes::v4::Publish::new(
                &other_events,
                QoS::AtMostOnce,
                b"x".to_vec(),
            )),
        ),
        ("QoS 2", {
            let mut p = rumqttc::mqttbytes::v4::Publish::new(
                dps_proto::hub::telemetry_topic::<&str, &str>(&dev, &[]).unwrap(),
                QoS::ExactlyOnce,
                b"x".to_vec(),
            );
            p.pkid = 7;
            Packet::Publish(p)
        }),
        (
            "a DPS topic",
            Packet::Publish(rumqttc::mqttbytes::v4::Publish::new(
                "$dps/registrations/PUT/iotdps-register/?$rid=1",
                QoS::AtMostOnce,
                b"{}".to_vec(),
            )),
        ),
        (
            "over 256 KiB",
            Packet::Publish(rumqttc::mqttbytes::v4::Publish::new(
                dps_proto::hub::telemetry_topic::<&str, &str>(&dev, &[]).unwrap(),
                QoS::AtMostOnce,
                vec![b'x'; 256 * 1024 + 1],
            )),
        ),
    ] {
        let mut d = hub_connect(&env.emu, &hub, &dev, Some(&sas), None).await;
        d.send(packet).await;
        assert!(d.closed_by_emulator().await, "{what}");
    }
    // Nothing of those was stored; a 256 KiB message (the service's limit) is.
    let mut d = hub_connect(&env.emu, &hub, &dev, Some(&sas), None).await;
    send_telemetry(&mut d, &dev, &[], &vec![b'y'; 256 * 1024]).await;
    let msgs = env.emu.hub_registry().messages(&dev, None).unwrap();
    assert_eq!(msgs.len(), 2);
    assert_eq!(msgs[1].body.len(), 256 * 1024);
    assert!(env
        .emu
        .hub_registry()
        .messages("topic-other", None)
        .is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_hub_device_is_refused_and_a_disabled_enrollment_alone_does_not_disable_it() {
    use dps_emulator::model::ProvisioningStatus;
    use rumqttc::mqttbytes::v4::ConnectReturnCode::*;
    let env = start_mqtt(|_| {}).await;
    let (hub, dev) = provision_symmetric(&env, "disenroll-dev", json!({})).await;
    let sas = hub_sas(&hub, &dev, KEY, in_an_hour());
    // "Disenroll a device": disabling the enrollment stops further provisioning, but the
    // service documentation says the device already registered stays in its hub until it is
    // also disabled or deleted there ("How to disenroll or revoke a device from Azure IoT Hub
    // Device Provisioning Service": disenrollment is both steps).
    let store = env.emu.enrollments();
    let mut e = store.individual("disenroll-dev").unwrap().unwrap();
    e.common.provisioning_status = ProvisioningStatus::Disabled;
    store.create_individual(e).unwrap();
    assert_eq!(
        connack(&env, &hub, None, hub_connect_packet(&hub, &dev, Some(&sas))).await,
        Success
    );
    // DPS itself refuses the device now.
    let c = client(&env.emu, None);
    let again = register(
        &c,
        &env.emu,
        "disenroll-dev",
        body_reg("disenroll-dev"),
        Some(&device_sas(&env.emu, "disenroll-dev", KEY, in_an_hour())),
    )
    .await;
    assert_eq!(again.body["status"], "disabled", "{}", again.body);
    // The hub side: disabled, refused; enabled again, accepted.
    cli(&env, &["hub", "disable", "--device", &dev]);
    assert_eq!(
        connack(&env, &hub, None, hub_connect_packet(&hub, &dev, Some(&sas))).await,
        NotAuthorized
    );
    let v: serde_json::Value =
        serde_json::from_str(&cli(&env, &["hub", "devices", "--json"])).unwrap();
    assert_eq!(v["devices"][0]["status"], "disabled");
    cli(&env, &["hub", "enable", "--device", &dev]);
    assert_eq!(
        connack(&env, &hub, None, hub_connect_packet(&hub, &dev, Some(&sas))).await,
        Success
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tpm_device_signs_its_hub_token_with_the_identity_key_dps_delivered() {
    use dps_emulator::model::TpmAttestation;
    use rumqttc::mqttbytes::v4::ConnectReturnCode::*;
    let env = start_mqtt(|_| {}).await;
    let tpm = SoftTpm::new();
    let reg = tpm.registration_id();
    let mut a = AttestationMechanism::new(dps_proto::AttestationKind::Tpm);
    a.tpm = Some(TpmAttestation {
        endorsement_key: tpm.ek_b64(),
        storage_root_key: None,
    });
    let mut e = IndividualEnrollment::new(reg.clone(), a);
    e.device_id = Some("tpm-hub-device".into());
    e.common.initial_twin = Some(json!({"properties": {"desired": {"tpm": true}}}));
    env.emu.enrollments().create_individual(e).unwrap();
    let c = client(&env.emu, None);
    let challenge = put_register(&c, &env.emu, &reg, tpm.body(), None).await;
    let identity_key = tpm.open(&challenge);
    let sas = device_sas(&env.emu, &reg, &identity_key, in_an_hour());
    let done = register(&c, &env.emu, &reg, tpm.body(), Some(&sas)).await;
    assert_eq!(done.body["status"], "assigned", "{}", done.body);
    let hub = done.body["registrationState"]["assignedHub"]
        .as_str()
        .unwrap()
        .to_string();
    let dev = "tpm-hub-device";
    // Signed with the identity key: accepted, and the twin is the enrollment's.
    let good = hub_sas(&hub, dev, &identity_key, in_an_hour());
    let mut d = hub_connect(&env.emu, &hub, dev, Some(&good), None).await;
    d.subscribe(dps_proto::hub::TWIN_RESPONSE_FILTER, QoS::AtMostOnce)
        .await;
    let t = get_twin(&mut d, "1").await;
    assert_eq!(t.body["desired"], json!({"tpm": true, "$version": 1}));
    // Signed with any other key: refused.
    let other_key = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, [7u8; 32]);
    let bad = hub_sas(&hub, dev, &other_key, in_an_hour());
    assert_eq!(
        connack(&env, &hub, None, hub_connect_packet(&hub, dev, Some(&bad))).await,
        NotAuthorized
    );
    // The registration id is not the device id here: a token for it is refused too.
    let by_reg = hub_sas(&hub, &reg, &identity_key, in_an_hour());
    assert_eq!(
        connack(
            &env,
            &hub,
            None,
            hub_connect_packet(&hub, &reg, Some(&by_reg))
        )
        .await,
        NotAuthorized
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x509_devices_connect_with_their_chain_and_another_chain_is_refused() {
    use dps_emulator::pki::{CertifiedKey, LeafUsage};
    use rumqttc::mqttbytes::v4::ConnectReturnCode::*;
    use std::time::Duration;
    let env = start_mqtt(|_| {}).await;
    let c_dps = |leaf: &CertifiedKey| client(&env.emu, Some((&[leaf], leaf)));
    // Individual: the enrolled leaf.
    let (_root, leaf) = x509_leaf("x509-hub-1");
    enroll_x509(&env.emu, "x509-hub-1", &leaf);
    let done = register(
        &c_dps(&leaf),
        &env.emu,
        "x509-hub-1",
        body_reg("x509-hub-1"),
        None,
    )
    .await;
    let hub1 = done.body["registrationState"]["assignedHub"]
        .as_str()
        .unwrap()
        .to_string();
    // Group: a leaf of the group's CA.
    let ca = CertifiedKey::new_root_ca("hub group root", Duration::from_secs(3600)).unwrap();
    enroll_x509_group(&env.emu, "hub-fleet", &ca);
    let member = ca
        .issue_leaf(
            "x509-hub-member",
            LeafUsage::Client,
            &[],
            Duration::from_secs(3600),
        )
        .unwrap();
    let done = register(
        &c_dps(&member),
        &env.emu,
        "x509-hub-member",
        body_reg("x509-hub-member"),
        None,
    )
    .await;
    let hub2 = done.body["registrationState"]["assignedHub"]
        .as_str()
        .unwrap()
        .to_string();

    let mut d = hub_connect(&env.emu, &hub1, "x509-hub-1", None, Some((&[&leaf], &leaf))).await;
    send_telemetry(&mut d, "x509-hub-1", &[], b"from x509").await;
    let mut m = hub_connect(
        &env.emu,
        &hub2,
        "x509-hub-member",
        None,
        Some((&[&member], &member)),
    )
    .await;
    send_telemetry(&mut m, "x509-hub-member", &[], b"from the group").await;
    let mut types: Vec<String> = env
        .emu
        .hub_registry()
        .devices()
        .unwrap()
        .iter()
        .map(|d| format!("{} {}", d.device_id, d.authentication.type_name()))
        .collect();
    types.sort();
    assert_eq!(
        types,
        [
            "x509-hub-1 selfSigned",
            "x509-hub-member certificateAuthority"
        ]
    );

    // Another chain with the same common names: another root's leaf, for either device.
    let (_other_root, impostor) = x509_leaf("x509-hub-1");
    assert_eq!(
        connack(
            &env,
            &hub1,
            Some((&[&impostor], &impostor)),
            hub_connect_packet(&hub1, "x509-hub-1", None)
        )
        .await,
        NotAuthorized
    );
    let (_r, impostor_member) = x509_leaf("x509-hub-member");
    assert_eq!(
        connack(
            &env,
            &hub2,
            Some((&[&impostor_member], &impostor_member)),
            hub_connect_packet(&hub2, "x509-hub-member", None)
        )
        .await,
        NotAuthorized
    );
    // The right chain for another device id (CN ≠ device id), and no chain at all.
    assert_eq!(
        connack(
            &env,
            &hub2,
            Some((&[&leaf], &leaf)),
            hub_connect_packet(&hub2, "x509-hub-member", None)
        )
        .await,
        NotAuthorized
    );
    assert_eq!(
        connack(
            &env,
            &hub1,
            None,
            hub_connect_packet(&hub1, "x509-hub-1", None)
        )
        .await,
        NotAuthorized
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_twins_telemetry_and_pending_messages_survive_a_restart() {
    let env = start_mqtt(|_| {}).await;
    let (hub, dev) = provision_symmetric(
        &env,
        "restart-dev",
        json!({"properties": {"desired": {"a": 1}}}),
    )
    .await;
    let sas = hub_sas(&hub, &dev, KEY, in_an_hour());
    let mut d = hub_connect(&env.emu, &hub, &dev, Some(&sas), None).await;
    d.subscribe(dps_proto::hub::TWIN_RESPONSE_FILTER, QoS::AtMostOnce)
        .await;
    send_telemetry(&mut d, &dev, &[("n", "1")], b"before").await;
    assert_eq!(report(&mut d, "1", &json!({"fw": "2"})).await.status, 204);
    env.emu
        .hub_registry()
        .send_c2d(&dev, None, &[], b"waiting")
        .unwrap();
    drop(d);
    let Env { emu, dir } = env;
    emu.shutdown().await;

    let mut cfg = dps_emulator::EmulatorConfig::new(dir.path().join("state"));
    cfg.hubs = vec![
        "hub-a.azure-devices.net".into(),
        "hub-b.azure-devices.net".into(),
    ];
    cfg.mqtt_listen = Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
    let emu = dps_emulator::Emulator::start(cfg).await.unwrap();
    assert_ne!(emu.mqtt_addr(), None);
    let env = Env { emu, dir };
    let mut d = hub_connect(&env.emu, &hub, &dev, Some(&sas), None).await;
    d.subscribe(dps_proto::hub::TWIN_RESPONSE_FILTER, QoS::AtMostOnce)
        .await;
    let t = get_twin(&mut d, "2").await;
    assert_eq!(
        t.body,
        json!({"desired": {"a": 1, "$version": 1}, "reported": {"fw": "2", "$version": 2}})
    );
    let msgs = env.emu.hub_registry().messages(&dev, None).unwrap();
    assert_eq!(msgs.len(), 1);
    assert_eq!(
        (msgs[0].body.as_slice(), msgs[0].properties.as_slice()),
        (&b"before"[..], &[("n".to_string(), "1".to_string())][..])
    );
    d.subscribe(&dps_proto::hub::c2d_filter(&dev).unwrap(), QoS::AtLeastOnce)
        .await;
    let p = next_publish(&mut d).await;
    assert_eq!(p.payload.as_ref(), b"waiting");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_connection_of_the_same_device_closes_the_old_one() {
    let env = start_mqtt(|_| {}).await;
    let (hub, dev) = provision_symmetric(&env, "takeover-dev", json!({})).await;
    let sas = hub_sas(&hub, &dev, KEY, in_an_hour());
    let mut old = hub_connect(&env.emu, &hub, &dev, Some(&sas), None).await;
    let mut new = hub_connect(&env.emu, &hub, &dev, Some(&sas), None).await;
    // MQTT 3.1.1, 3.1.4-2: the server disconnects the existing client with that client id.
    assert!(old.closed_by_emulator().await);
    send_telemetry(&mut new, &dev, &[], b"on the new connection").await;
    // Another device's connection is not affected.
    let (hub2, dev2) = provision_symmetric(&env, "takeover-other", json!({})).await;
    let sas2 = hub_sas(&hub2, &dev2, KEY, in_an_hour());
    let _other = hub_connect(&env.emu, &hub2, &dev2, Some(&sas2), None).await;
    send_telemetry(&mut new, &dev, &[], b"still open").await;
    assert_eq!(
        env.emu.hub_registry().messages(&dev, None).unwrap().len(),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floods_and_random_bytes_after_a_hub_connect_close_only_that_connection() {
    let env = start_mqtt(|c| c.mqtt_max_packets_per_second = 5).await;
    let (hub, dev) = provision_symmetric(&env, "fuzz-dev", json!({})).await;
    let sas = hub_sas(&hub, &dev, KEY, in_an_hour());
    // The DPS listener's packet rate applies to hub connections too.
    let mut d = hub_connect(&env.emu, &hub, &dev, Some(&sas), None).await;
    let mut burst = bytes::BytesMut::new();
    for _ in 0..50 {
        Packet::PingReq.write(&mut burst, 16).unwrap();
    }
    d.send_raw(&burst).await;
    let mut answered = 0;
    while let Some(p) = d.recv().await {
        assert_eq!(p, Packet::PingResp);
        answered += 1;
    }
    assert!(answered < 50, "all {answered} pings were answered");

    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for round in 0..30 {
        // Keep-alive 1 s: a packet announced longer than what follows is waited for until
        // 1.5 times the keep-alive has passed, then the connection is closed.
        let mut c = hub_connect_packet(&hub, &dev, Some(&sas));
        c.keep_alive = 1;
        let (mut d, code) = hub_connect_with(&env.emu, &hub, None, c).await;
        assert_eq!(code, rumqttc::mqttbytes::v4::ConnectReturnCode::Success);
        // A valid packet type half of the time, so the packet parsers see the bytes too.
        let len = (next() % 200) as usize + 2;
        let mut bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        if round % 2 == 0 {
            bytes[0] = [0x30, 0x32, 0x82, 0xA2, 0x10, 0x40][(next() % 6) as usize];
        }
        d.send_raw(&bytes).await;
        d.send(Packet::PingReq).await;
        while let Some(p) = d.recv().await {
            if p == Packet::PingResp {
                break;
            }
        }
        // Pause so the next round's packets are not over the rate.
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    // The emulator still serves the device, and what it stored is intact.
    let mut d = hub_connect(&env.emu, &hub, &dev, Some(&sas), None).await;
    send_telemetry(&mut d, &dev, &[("after", "fuzz")], b"alive").await;
    let msgs = env.emu.hub_registry().messages(&dev, None).unwrap();
    assert!(msgs.iter().any(|m| m.body == b"alive"), "{msgs:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_minus_nine_loses_no_acknowledged_telemetry() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let s = state.to_str().unwrap();
    let bin = || std::process::Command::new(env!("CARGO_BIN_EXE_dps-emulator"));
    let out = bin()
        .args([
            "enroll",
            "symmetric",
            "--registration-id",
            "kill-dev",
            "--primary-key",
            KEY,
        ])
        .args(["--hub", "hub-a.azure-devices.net", "--state", s])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut child = bin()
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--mqtt-listen",
            "127.0.0.1:0",
        ])
        .args([
            "--mqtt-ws-listen",
            "127.0.0.1:0",
            "--hub",
            "hub-a.azure-devices.net",
            "--state",
            s,
        ])
        .args(["--mqtt-max-packets-per-second", "10000"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut endpoint, mut mqtt) = (String::new(), None);
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(e) = line.strip_prefix("listening: ") {
            endpoint = e.to_string();
        }
        if let Some(m) = line.strip_prefix("mqtt: mqtts://") {
            mqtt = Some(m.parse::<std::net::SocketAddr>().unwrap());
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    let mqtt = mqtt.expect("the served emulator printed its MQTT address");
    let ca = std::fs::read_to_string(state.join(dps_emulator::CA_CERT_FILE)).unwrap();
    let url = format!("{endpoint}/0ne00000001/registrations/kill-dev/register?api-version={API}");
    let token = dps_proto::sas::create_token(
        "0ne00000001/registrations/kill-dev",
        KEY,
        Some("registration"),
        in_an_hour(),
    )
    .unwrap();
    let c = client_for_ca(&ca, None);
    let a = send(
        c.put(url)
            .header("authorization", token)
            .json(&body_reg("kill-dev")),
    )
    .await;
    assert_eq!(a.status, reqwest::StatusCode::ACCEPTED, "{}", a.body);

    let hub = "hub-a.azure-devices.net";
    let sas = hub_sas(hub, "kill-dev", KEY, in_an_hour());
    let mut d = common::mqtt::Device::new(hub_tls_at(mqtt, &ca, hub, None).await);
    d.send(Packet::Connect(hub_connect_packet(
        hub,
        "kill-dev",
        Some(&sas),
    )))
    .await;
    assert!(matches!(d.recv().await, Some(Packet::ConnAck(_))));
    // Telemetry at QoS 1, one at a time, until the emulator is killed mid-stream (fewer than
    // the 1000 messages a device keeps, so all acknowledged ones must be there).
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = count.clone();
    let sender = tokio::spawn(async move {
        let topic = dps_proto::hub::telemetry_topic::<&str, &str>("kill-dev", &[]).unwrap();
        let mut acked = Vec::new();
        for i in 1..=900u16 {
            let mut p =
                rumqttc::mqttbytes::v4::Publish::new(&topic, QoS::AtLeastOnce, format!("m{i}"));
            p.pkid = i;
            d.send(Packet::Publish(p)).await;
            match d.recv().await {
                Some(Packet::PubAck(a)) if a.pkid == i => {
                    acked.push(format!("m{i}"));
                    counted.store(acked.len(), std::sync::atomic::Ordering::Relaxed);
                }
                None => break,
                other => panic!("expected the PUBACK of {i}, got {other:?}"),
            }
        }
        acked
    });
    for _ in 0..500 {
        if count.load(std::sync::atomic::Ordering::Relaxed) >= 100 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let acked = sender.await.unwrap();
    assert!(
        acked.len() >= 5,
        "only {} messages acknowledged",
        acked.len()
    );
    // Every acknowledged message is on disk (read by the CLI, without the server).
    let out = bin()
        .args([
            "hub", "messages", "--device", "kill-dev", "--json", "--state", s,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let stored: Vec<&str> = v["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["body"].as_str().unwrap())
        .collect();
    for m in &acked {
        assert!(
            stored.contains(&m.as_str()),
            "{m} was acknowledged but not stored: {} acknowledged, stored {stored:?}",
            acked.len()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hubs_are_served_over_mqtt_over_websocket_too() {
    use async_tungstenite::tungstenite::client::IntoClientRequest;
    use rumqttc::mqttbytes::v4::ConnectReturnCode::*;
    let env =
        start_mqtt(|c| c.mqtt_ws_listen = Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0))))
            .await;
    let (hub, dev) = provision_symmetric(
        &env,
        "ws-hub-dev",
        json!({"properties": {"desired": {"ws": 1}}}),
    )
    .await;
    let other_hub = env.emu.hubs().iter().find(|h| **h != hub).unwrap().clone();
    let sas = hub_sas(&hub, &dev, KEY, in_an_hour());
    let ws_addr = env.emu.mqtt_ws_addr().unwrap();
    // `wss://{hub}/$iothub/websocket` reached at the emulator's address (TLS SNI = `tls_name`).
    let ws_device = |tls_name: String| {
        let ca = env.emu.ca_cert_pem().to_string();
        async move {
            let tls = hub_tls_at(ws_addr, &ca, &tls_name, None).await;
            let mut request = format!("wss://{tls_name}:{}/$iothub/websocket", ws_addr.port())
                .into_client_request()
                .unwrap();
            request
                .headers_mut()
                .insert("Sec-WebSocket-Protocol", "mqtt".parse().unwrap());
            let (ws, _) = async_tungstenite::tokio::client_async(request, tls)
                .await
                .unwrap();
            common::mqtt::Device::new(ws_stream_tungstenite::WsStream::new(ws))
        }
    };
    let mut d = ws_device(hub.clone()).await;
    assert_eq!(
        d.connack(hub_connect_packet(&hub, &dev, Some(&sas))).await,
        Success
    );
    send_telemetry(&mut d, &dev, &[("over", "ws")], b"websocket").await;
    d.subscribe(dps_proto::hub::TWIN_RESPONSE_FILTER, QoS::AtMostOnce)
        .await;
    let t = get_twin(&mut d, "1").await;
    assert_eq!(t.body["desired"], json!({"ws": 1, "$version": 1}));
    let msgs = env.emu.hub_registry().messages(&dev, None).unwrap();
    assert_eq!(msgs[0].properties, [("over".to_string(), "ws".to_string())]);
    // The WebSocket's TLS server name is checked against the user name's hub as well.
    let mut d = ws_device(other_hub).await;
    assert_eq!(
        d.connack(hub_connect_packet(&hub, &dev, Some(&sas))).await,
        BadUserNamePassword
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_reassigned_to_another_hub_is_named_with_its_hub() {
    let env = start_mqtt(|_| {}).await;
    let mut e = IndividualEnrollment::new(
        "moving-dev".into(),
        AttestationMechanism::symmetric_key(Some(KEY.into())),
    );
    e.common.iot_hubs = vec!["hub-a.azure-devices.net".into()];
    env.emu.enrollments().create_individual(e.clone()).unwrap();
    let sas = device_sas(&env.emu, "moving-dev", KEY, in_an_hour());
    let c = client(&env.emu, None);
    register(
        &c,
        &env.emu,
        "moving-dev",
        body_reg("moving-dev"),
        Some(&sas),
    )
    .await;
    e.common.iot_hubs = vec!["hub-b.azure-devices.net".into()];
    env.emu.enrollments().create_individual(e).unwrap();
    let done = register(
        &c,
        &env.emu,
        "moving-dev",
        body_reg("moving-dev"),
        Some(&sas),
    )
    .await;
    assert_eq!(
        done.body["registrationState"]["assignedHub"],
        "hub-b.azure-devices.net"
    );
    // Both hubs have the device now (DPS creates it in the new hub; the old hub's identity is
    // the solution's to remove): the CLI asks which one.
    let err = cli_fails(&env, &["hub", "messages", "--device", "moving-dev"]);
    assert!(err.contains("several hubs"), "{err}");
    let out = cli(
        &env,
        &[
            "hub",
            "messages",
            "--device",
            "moving-dev",
            "--hub",
            "hub-b.azure-devices.net",
            "--json",
        ],
    );
    assert!(out.contains("\"messages\": []"), "{out}");
    // Each hub verifies tokens for its own scope.
    for hub in ["hub-a.azure-devices.net", "hub-b.azure-devices.net"] {
        let sas = hub_sas(hub, "moving-dev", KEY, in_an_hour());
        let mut d = hub_connect(&env.emu, hub, "moving-dev", Some(&sas), None).await;
        send_telemetry(&mut d, "moving-dev", &[], hub.as_bytes()).await;
    }
    let b = env
        .emu
        .hub_registry()
        .messages("moving-dev", Some("hub-b.azure-devices.net"))
        .unwrap();
    assert_eq!(b.len(), 1);
    assert_eq!(b[0].body, b"hub-b.azure-devices.net");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_name_that_is_no_dns_name_is_refused_at_start() {
    for bad in ["hub a", "hub/a", "-hub", "hub..x", "hübe"] {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = dps_emulator::EmulatorConfig::new(dir.path().join("state"));
        cfg.hubs = vec![bad.into()];
        let err = dps_emulator::Emulator::start(cfg).await.unwrap_err();
        assert!(
            err.to_string().contains("not a DNS host name"),
            "{bad}: {err}"
        );
    }
}

#[test]
fn each_device_keeps_its_newest_1000_messages_whatever_the_others_send() {
    let dir = tempfile::tempdir().unwrap();
    let store = dps_emulator::Store::open(&dir.path().join("db.sqlite3")).unwrap();
    let hub = "hub-a.azure-devices.net";
    for i in 0..10 {
        store
            .store_telemetry(hub, "quiet", &[], format!("q{i}").as_bytes())
            .unwrap();
    }
    // A chatty device sends more than it may keep, while the quiet one sends now and then.
    let max = dps_emulator::hub::MAX_STORED_TELEMETRY;
    for i in 0..max + 5 {
        store
            .store_telemetry(hub, "chatty", &[], format!("c{i}").as_bytes())
            .unwrap();
        if i % 300 == 0 {
            store.store_telemetry(hub, "quiet", &[], b"more").unwrap();
        }
    }
    // Stored after more than 1000 messages in all: its own oldest are still its newest 1000.
    store.store_telemetry(hub, "quiet", &[], b"last").unwrap();
    let chatty = store.telemetry(hub, "chatty").unwrap();
    assert_eq!(chatty.len(), max);
    assert_eq!(chatty[0].body, b"c5");
    assert_eq!(chatty[max - 1].body, format!("c{}", max + 4).as_bytes());
    let quiet = store.telemetry(hub, "quiet").unwrap();
    assert_eq!(
        quiet.len(),
        15,
        "the quiet device lost messages to the chatty one"
    );
    assert_eq!(quiet[0].body, b"q0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_messages_are_marked_and_a_will_is_sent_only_on_an_abnormal_close() {
    use rumqttc::mqttbytes::v4::LastWill;
    let env = start_mqtt(|_| {}).await;
    let (hub, dev) = provision_symmetric(&env, "will-dev", json!({})).await;
    let sas = hub_sas(&hub, &dev, KEY, in_an_hour());
    let events = |props: &[(&str, &str)]| dps_proto::hub::telemetry_topic(&dev, props).unwrap();
    let props_of = |body: &[u8]| {
        env.emu
            .hub_registry()
            .messages(&dev, None)
            .unwrap()
            .into_iter()
            .find(|m| m.body == body)
            .map(|m| m.properties)
    };

    // RETAIN: not retained, marked with mqtt-retain (service documentation, "Sending
    // device-to-cloud messages").
    let mut d = hub_connect(&env.emu, &hub, &dev, Some(&sas), None).await;
    let mut p = rumqttc::mqttbytes::v4::Publish::new(
        events(&[("k", "v")]),
        QoS::AtLeastOnce,
        b"kept?".to_vec(),
    );
    p.retain = true;
    p.pkid = 1;
    d.send(Packet::Publish(p)).await;
    assert!(matches!(d.recv().await, Some(Packet::PubAck(_))));
    assert_eq!(
        props_of(b"kept?").unwrap(),
        [
            ("k".to_string(), "v".to_string()),
            ("mqtt-retain".to_string(), "true".to_string())
        ]
    );
    drop(d);

    // A Will on the telemetry topic: sent as telemetry with iothub-MessageType=Will when the
    // connection breaks, not after a DISCONNECT.
    let with_will = |body: &'static [u8]| {
        let mut c = hub_connect_packet(&hub, &dev, Some(&sas));
        c.last_will = Some(LastWill::new(
            events(&[("w", "1")]),
            body.to_vec(),
            QoS::AtLeastOnce,
            false,
        ));
        c
    };
    let (mut d, code) = hub_connect_with(&env.emu, &hub, None, with_will(b"orderly")).await;
    assert_eq!(code, rumqttc::mqttbytes::v4::ConnectReturnCode::Success);
    let asked = std::time::Instant::now();
    d.send(Packet::Disconnect).await;
    assert!(d.closed_by_emulator().await);
    // Closed at once, not after the writer's 5 s grace (the session's tasks hold senders).
    assert!(
        asked.elapsed() < std::time::Duration::from_secs(2),
        "{:?}",
        asked.elapsed()
    );
    let (d, _) = hub_connect_with(&env.emu, &hub, None, with_will(b"broken")).await;
    drop(d); // the TCP connection just ends
    let mut will = None;
    for _ in 0..100 {
        will = props_of(b"broken");
        if will.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(
        will.expect("the Will was stored"),
        [
            ("w".to_string(), "1".to_string()),
            ("iothub-MessageType".to_string(), "Will".to_string())
        ]
    );
    assert_eq!(props_of(b"orderly"), None, "a Will after DISCONNECT");
    // A Will on another topic is ignored; the device still connects.
    let mut c = hub_connect_packet(&hub, &dev, Some(&sas));
    c.last_will = Some(LastWill::new(
        "elsewhere/x",
        b"nope".to_vec(),
        QoS::AtMostOnce,
        false,
    ));
    let (d, code) = hub_connect_with(&env.emu, &hub, None, c).await;
    assert_eq!(code, rumqttc::mqttbytes::v4::ConnectReturnCode::Success);
    drop(d);
    let mut d = hub_connect(&env.emu, &hub, &dev, Some(&sas), None).await;
    send_telemetry(&mut d, &dev, &[], b"after").await;
    assert_eq!(props_of(b"nope"), None);
}

/// A device DPS issued an operational certificate to connects to its hub with that certificate
/// (mutual TLS, no password): the service's documents say "The device authenticates with IoT
/// Hub by presenting its full certificate chain" and "Linked IoT hubs trust the issuing CA
/// that ADR syncs from the policy"
/// (https://learn.microsoft.com/azure/iot-hub/concept-certificate-issuance,
/// https://learn.microsoft.com/azure/iot-hub/concepts-certificate-policy-management). Refused:
/// the issuing CA's certificate for another CN, an expired one, another CA's with the right
/// CN, and an issuing-CA certificate for a device that was provisioned without issuance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_with_an_issued_certificate_connects_with_it_and_no_other() {
    use dps_emulator::pki::{CertifiedKey, LeafUsage};
    use openssl::ec::{EcGroup, EcKey};
    use openssl::hash::MessageDigest;
    use openssl::nid::Nid;
    use openssl::pkey::PKey;
    use openssl::x509::{X509NameBuilder, X509ReqBuilder, X509};
    use rumqttc::mqttbytes::v4::ConnectReturnCode::*;
    use std::time::{Duration, SystemTime};
    let env = start_mqtt(|_| {}).await;
    let reg = "issued-hub-1";
    let mut e = IndividualEnrollment::new(
        reg.into(),
        AttestationMechanism::symmetric_key(Some(KEY.into())),
    );
    e.common.certificate_issuance_policy =
        Some(dps_emulator::model::CertificateIssuancePolicy { validity_days: 30 });
    env.emu.enrollments().create_individual(e).unwrap();
    // The device's P-256 key and its CSR (CN = registration id), sent with the preview API.
    let key = PKey::from_ec_key(
        EcKey::generate(&EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap()).unwrap(),
    )
    .unwrap();
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_nid(Nid::COMMONNAME, reg).unwrap();
    let mut req = X509ReqBuilder::new().unwrap();
    req.set_subject_name(&name.build()).unwrap();
    req.set_pubkey(&key).unwrap();
    req.sign(&key, MessageDigest::sha256()).unwrap();
    let csr = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        req.build().to_der().unwrap(),
    );
    let c = client(&env.emu, None);
    let sas = device_sas(&env.emu, reg, KEY, in_an_hour());
    let url = format!(
        "{}/{}/registrations/{reg}/register?api-version=2025-07-01-preview",
        env.emu.endpoint(),
        env.emu.id_scope()
    );
    let mut a = send(
        c.put(url)
            .json(&json!({"registrationId": reg, "csr": csr}))
            .header("authorization", &sas),
    )
    .await;
    for _ in 0..100 {
        if a.status != reqwest::StatusCode::ACCEPTED {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let op = a.body["operationId"].as_str().unwrap().to_string();
        a = get_operation(&c, &env.emu, reg, &op, Some(&sas)).await;
    }
    assert_eq!(a.body["status"], "assigned", "{}", a.body);
    let state = &a.body["registrationState"];
    let hub = state["assignedHub"].as_str().unwrap().to_string();
    let pem_of = |b64: &serde_json::Value| {
        let der = base64::Engine::decode(
            &base64::engine::general_purpose::STANDARD,
            b64.as_str().unwrap(),
        )
        .unwrap();
        String::from_utf8(X509::from_der(&der).unwrap().to_pem().unwrap()).unwrap()
    };
    let key_pem = String::from_utf8(key.private_key_to_pem_pkcs8().unwrap()).unwrap();
    let issued =
        CertifiedKey::from_pem(&pem_of(&state["issuedCertificateChain"][0]), &key_pem).unwrap();
    let ca_dir = env.dir.path().join("state");
    let read = |f: &str| std::fs::read_to_string(ca_dir.join(f)).unwrap();
    let issuing_ca = CertifiedKey::from_pem(
        &read(dps_emulator::ISSUING_CA_CERT_FILE),
        &read("issuing-ca.key.pem"),
    )
    .unwrap();

    // The issued chain, no password: accepted, and the device works.
    let mut d = hub_connect(
        &env.emu,
        &hub,
        reg,
        None,
        Some((&[&issued, &issuing_ca], &issued)),
    )
    .await;
    send_telemetry(&mut d, reg, &[], b"with the issued certificate").await;

    async fn refused(
        env: &Env,
        hub: &str,
        leaf: &CertifiedKey,
        ca: &CertifiedKey,
        device: &str,
    ) -> rumqttc::mqttbytes::v4::ConnectReturnCode {
        connack(
            env,
            hub,
            Some((&[leaf, ca], leaf)),
            hub_connect_packet(hub, device, None),
        )
        .await
    }
    // The issuing CA's certificate for another CN.
    let other_cn = issuing_ca
        .issue_leaf(
            "someone-else",
            LeafUsage::Client,
            &[],
            Duration::from_secs(3600),
        )
        .unwrap();
    assert_eq!(
        refused(&env, &hub, &other_cn, &issuing_ca, reg).await,
        NotAuthorized
    );
    // Expired.
    let hour = Duration::from_secs(3600);
    let expired = issuing_ca
        .issue_leaf_valid(
            reg,
            LeafUsage::Client,
            &[],
            SystemTime::now() - 3 * hour,
            SystemTime::now() - hour,
        )
        .unwrap();
    assert_eq!(
        refused(&env, &hub, &expired, &issuing_ca, reg).await,
        NotAuthorized
    );
    // Another CA, the right CN.
    let other_ca = CertifiedKey::new_root_ca("not the issuing CA", hour).unwrap();
    let impostor = other_ca
        .issue_leaf(reg, LeafUsage::Client, &[], hour)
        .unwrap();
    assert_eq!(
        refused(&env, &hub, &impostor, &other_ca, reg).await,
        NotAuthorized
    );
    // A device provisioned without issuance is not let in by an issuing-CA certificate.
    let (plain_hub, plain) = provision_symmetric(&env, "issued-hub-none", json!({})).await;
    let for_plain = issuing_ca
        .issue_leaf("issued-hub-none", LeafUsage::Client, &[], hour)
        .unwrap();
    assert_eq!(plain, "issued-hub-none");
    assert_eq!(
        refused(&env, &plain_hub, &for_plain, &issuing_ca, "issued-hub-none").await,
        NotAuthorized
    );
    assert_eq!(
        env.emu
            .hub_registry()
            .messages(reg, None)
            .unwrap()
            .iter()
            .map(|m| m.body.clone())
            .collect::<Vec<_>>(),
        [b"with the issued certificate".to_vec()]
    );
}
