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
