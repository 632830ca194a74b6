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
