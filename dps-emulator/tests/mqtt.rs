//! The device API over MQTT, packet by packet, against the behaviour the service documents in
//! "Communicate with DPS using the MQTT protocol" (learn.microsoft.com, azure/iot-dps/
//! iot-dps-mqtt-support): CONNECT with client id = registration id, username
//! `{idScope}/registrations/{registrationId}/api-version=...`, the SAS as password or mutual
//! TLS for X.509; subscribe `$dps/registrations/res/#` (granted at most QoS 1); register and
//! poll by PUBLISH; answers on `$dps/registrations/res/{status}/?$rid=...&retry-after=...`
//! with the HTTPS bodies; no TPM over MQTT; no persistent sessions. Plus the emulator's own
//! bounds against hostile clients, each ending in a closed connection with the emulator still
//! serving and its records intact.

mod common;

use common::mqtt::*;
use common::*;
use rumqttc::mqttbytes::v4::{
    ConnAck, ConnectReturnCode, Packet, Publish, SubAck, SubscribeReasonCode,
};
use rumqttc::mqttbytes::QoS;
use serde_json::json;
use std::time::Duration;

const KEY: &str = "q83vEjRWeJq8p7Bm6x7Ntx0YhEorkqGSTd1U7Nl2JWc=";
const GROUP_KEY: &str = "c2VjcmV0LWtleS1mb3ItdGVzdHMtb25seS0xMjM0NTY3OA==";

fn derived(reg: &str) -> String {
    dps_proto::group_key::derive_device_key_b64(GROUP_KEY, reg)
        .unwrap()
        .to_string()
}

/// A device that registers over MQTT to prove the emulator still serves; returns its record
/// count afterwards.
async fn still_serves(emu: &dps_emulator::RunningEmulator, reg: &str) {
    let sas = device_sas(emu, reg, &derived(reg), in_an_hour());
    let mut d = Device::connect(emu, reg, Some(&sas), None).await;
    let done = d.register(&body_reg(reg)).await;
    assert_eq!(done.body["status"], "assigned", "{}", done.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn symmetric_individual_and_group_register_and_poll() {
    let env = start_mqtt(|c| c.assignment_delay = Duration::from_millis(100)).await;
    let emu = &env.emu;
    enroll_symmetric(emu, "mqtt-sym-1", KEY);
    enroll_symmetric_group(emu, "fleet", GROUP_KEY);

    let sas = device_sas(emu, "mqtt-sym-1", KEY, in_an_hour());
    let mut d = Device::connect(emu, "mqtt-sym-1", Some(&sas), None).await;
    let first = d
        .register_once(&json!({"registrationId": "mqtt-sym-1", "payload": {"model": "m1"}}))
        .await;
    // 202 assigning with an operationId and retry-after in the topic, as over HTTPS.
    assert_eq!(first.status, 202, "{}", first.body);
    assert_eq!(first.retry_after, Some(1));
    assert_eq!(first.body["status"], "assigning");
    let op = first.body["operationId"].as_str().unwrap().to_string();
    let mut done = d.poll_once(&op).await;
    while done.status == 202 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        done = d.poll_once(&op).await;
    }
    assert_eq!(done.status, 200, "{}", done.body);
    assert_eq!(done.retry_after, None);
    let st = &done.body["registrationState"];
    assert_eq!(st["status"], "assigned");
    assert_eq!(st["deviceId"], "mqtt-sym-1");
    assert!(
        st.get("payload").is_none(),
        "not echoed, as over HTTPS: {st}"
    );
    assert!(emu
        .hubs()
        .contains(&st["assignedHub"].as_str().unwrap().to_string()));
    // Another device's operation: 404, as over HTTPS.
    let other = d.poll_once("5.0000000000000000.unknown").await;
    assert_eq!(other.status, 404, "{}", other.body);
    assert_eq!(other.body["errorCode"], 404202);

    // Group member with the derived key.
    let reg = "mqtt-fleet-7";
    let sas = device_sas(emu, reg, &derived(reg), in_an_hour());
    let mut g = Device::connect(emu, reg, Some(&sas), None).await;
    let done = g.register(&body_reg(reg)).await;
    assert_eq!(
        done.body["registrationState"]["symmetricKey"]["enrollmentGroupId"],
        "fleet"
    );
    assert_eq!(record_ids(emu), ["mqtt-fleet-7", "mqtt-sym-1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x509_individual_and_group_over_mutual_tls() {
    let env = start_mqtt(|_| {}).await;
    let emu = &env.emu;
    let (_root, leaf) = x509_leaf("mqtt-x509-1");
    enroll_x509(emu, "mqtt-x509-1", &leaf);
    // No password: the chain comes from the TLS session.
    let mut d = Device::connect(emu, "mqtt-x509-1", None, Some((&[&leaf], &leaf))).await;
    let done = d.register(&body_reg("mqtt-x509-1")).await;
    assert_eq!(done.body["status"], "assigned", "{}", done.body);
    assert_eq!(
        done.body["registrationState"]["x509"]["certificateInfo"]["subjectName"],
        "CN=mqtt-x509-1"
    );

    let ca =
        dps_emulator::pki::CertifiedKey::new_root_ca("mqtt group root", Duration::from_secs(3600))
            .unwrap();
    enroll_x509_group(emu, "x509-fleet", &ca);
    let member = ca
        .issue_leaf(
            "mqtt-x509-member",
            dps_emulator::pki::LeafUsage::Client,
            &[],
            Duration::from_secs(3600),
        )
        .unwrap();
    let mut m = Device::connect(emu, "mqtt-x509-member", None, Some((&[&member], &member))).await;
    let done = m.register(&body_reg("mqtt-x509-member")).await;
    assert_eq!(
        done.body["registrationState"]["x509"]["enrollmentGroupId"],
        "x509-fleet"
    );

    // "The registration ID must match the common name" (service documentation): a leaf whose
    // CN is another id is refused at CONNECT.
    let (c, code) = Device::connect_with(
        emu,
        Some((&[&leaf], &leaf)),
        connect_packet(emu, "mqtt-x509-member", None),
    )
    .await;
    assert_eq!(code, ConnectReturnCode::NotAuthorized);
    drop(c);
    assert_eq!(record_ids(emu), ["mqtt-x509-1", "mqtt-x509-member"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connects_get_the_connack_codes_and_no_record() {
    let env = start_mqtt(|_| {}).await;
    let emu = &env.emu;
    enroll_symmetric(emu, "mqtt-sym-2", KEY);
    let good = device_sas(emu, "mqtt-sym-2", KEY, in_an_hour());

    // A wrong key, an expired token, a token for another device, no credentials, an unknown
    // device: CONNACK 5 "not authorized" (what the service answers a refused device, e.g.
    // Azure/azure-sdk-for-c#2235, MicrosoftDocs/azure-docs#69882), whatever the reason.
    for (reg, password) in [
        (
            "mqtt-sym-2",
            Some(device_sas(emu, "mqtt-sym-2", GROUP_KEY, in_an_hour())),
        ),
        ("mqtt-sym-2", Some(device_sas(emu, "mqtt-sym-2", KEY, 10))),
        (
            "mqtt-sym-2",
            Some(device_sas(emu, "other", KEY, in_an_hour())),
        ),
        ("mqtt-sym-2", None),
        (
            "unknown-dev",
            Some(device_sas(emu, "unknown-dev", KEY, in_an_hour())),
        ),
    ] {
        let (mut d, code) =
            Device::connect_with(emu, None, connect_packet(emu, reg, password.as_deref())).await;
        assert_eq!(code, ConnectReturnCode::NotAuthorized, "{reg} {password:?}");
        assert!(d.closed_by_emulator().await);
    }

    // Client id other than the registration id: identifier rejected.
    let mut c = connect_packet(emu, "mqtt-sym-2", Some(&good));
    c.client_id = "someone-else".into();
    let (_, code) = Device::connect_with(emu, None, c).await;
    assert_eq!(code, ConnectReturnCode::BadClientId);

    // A username that is not {idScope}/registrations/{id}/api-version=..., another scope, an
    // api-version the device API does not know: bad user name or password.
    for user in [
        "mqtt-sym-2".to_string(),
        format!("{}/registrations/mqtt-sym-2", emu.id_scope()),
        "0ne99999999/registrations/mqtt-sym-2/api-version=2019-03-31".to_string(),
        format!(
            "{}/registrations/mqtt-sym-2/api-version=1999-01-01",
            emu.id_scope()
        ),
    ] {
        let mut c = connect_packet(emu, "mqtt-sym-2", Some(&good));
        c.set_login(user.clone(), good.clone());
        let (_, code) = Device::connect_with(emu, None, c).await;
        assert_eq!(code, ConnectReturnCode::BadUserNamePassword, "{user}");
    }

    // MQTT 3.1.1 only (3.1.2.2: an unsupported protocol level gets return code 1).
    let mut c = connect_packet(emu, "mqtt-sym-2", Some(&good));
    c.protocol = rumqttc::mqttbytes::Protocol::V5;
    let (_, code) = Device::connect_with(emu, None, c).await;
    assert_eq!(code, ConnectReturnCode::RefusedProtocolVersion);

    assert!(record_ids(emu).is_empty());
    // The good token still works.
    let mut d = Device::connect(emu, "mqtt-sym-2", Some(&good), None).await;
    assert_eq!(d.register(&body_reg("mqtt-sym-2")).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tpm_is_refused_over_mqtt() {
    // "DPS does not currently support devices using TPM attestation mechanism over the MQTT
    // protocol" (service documentation).
    let env = start_mqtt(|_| {}).await;
    let emu = &env.emu;
    let dev = SoftTpm::new();
    let reg = dev.registration_id();
    let mut a = dps_emulator::model::AttestationMechanism {
        kind: "tpm".into(),
        tpm: None,
        x509: None,
        symmetric_key: None,
    };
    a.tpm = Some(dps_emulator::model::TpmAttestation {
        endorsement_key: dev.ek_b64(),
        storage_root_key: None,
    });
    emu.enrollments()
        .create_individual(dps_emulator::model::IndividualEnrollment {
            registration_id: reg.clone(),
            device_id: None,
            attestation: a,
            common: Default::default(),
        })
        .unwrap();
    // Over HTTPS the same device gets its challenge; over MQTT, with or without a token,
    // it is not let in.
    let c = client(emu, None);
    let ch = put_register(&c, emu, &reg, dev.body(), None).await;
    assert_eq!(ch.status, reqwest::StatusCode::UNAUTHORIZED);
    let key = dev.open(&ch);
    let sas = create_sas(emu, &reg, &key);
    for password in [None, Some(sas.as_str())] {
        let (mut d, code) =
            Device::connect_with(emu, None, connect_packet(emu, &reg, password)).await;
        assert_eq!(code, ConnectReturnCode::NotAuthorized);
        assert!(d.closed_by_emulator().await);
    }
    assert!(record_ids(emu).is_empty());
}

fn create_sas(emu: &dps_emulator::RunningEmulator, reg: &str, key: &str) -> String {
    device_sas(emu, reg, key, in_an_hour())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_connection_gets_only_its_own_answers() {
    let env = start_mqtt(|_| {}).await;
    let emu = &env.emu;
    enroll_symmetric_group(emu, "fleet", GROUP_KEY);
    let (a_id, b_id) = ("mqtt-own-a", "mqtt-own-b");
    let mut a = Device::connect(
        emu,
        a_id,
        Some(&create_sas(emu, a_id, &derived(a_id))),
        None,
    )
    .await;
    let mut b = Device::connect(
        emu,
        b_id,
        Some(&create_sas(emu, b_id, &derived(b_id))),
        None,
    )
    .await;
    let done = a.register(&body_reg(a_id)).await;
    assert_eq!(done.body["registrationState"]["registrationId"], a_id);
    // B sees none of A's answers: the next thing it receives is the answer to its own ping.
    b.send(Packet::PingReq).await;
    assert_eq!(b.recv().await, Some(Packet::PingResp));
    // A device cannot register another id through its connection (the body names another).
    let wrong = b.register_once(&body_reg(a_id)).await;
    assert_eq!(wrong.status, 400, "{}", wrong.body);
    // Nor poll another device's operation.
    let op = done.body["operationId"].as_str().unwrap();
    assert_eq!(b.poll_once(op).await.status, 404);
    assert_eq!(record_ids(emu), [a_id]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_qos_is_granted_at_most_1() {
    // "When a device app subscribes to a topic with QoS 2, DPS grants maximum QoS level 1 in
    // the SUBACK packet. After that, DPS delivers messages to the device using QoS 1."
    let env = start_mqtt(|_| {}).await;
    let emu = &env.emu;
    enroll_symmetric(emu, "mqtt-qos", KEY);
    let sas = create_sas(emu, "mqtt-qos", KEY);
    let (mut d, code) =
        Device::connect_with(emu, None, connect_packet(emu, "mqtt-qos", Some(&sas))).await;
    assert_eq!(code, ConnectReturnCode::Success);
    match d.subscribe(RESPONSES, QoS::ExactlyOnce).await {
        Packet::SubAck(SubAck { return_codes, .. }) => {
            assert_eq!(
                return_codes,
                [SubscribeReasonCode::Success(QoS::AtLeastOnce)]
            )
        }
        other => panic!("{other:?}"),
    }
    let rid = d.send_register(&body_reg("mqtt-qos")).await;
    match d.recv().await {
        Some(Packet::Publish(p)) => {
            assert_eq!(p.qos, QoS::AtLeastOnce);
            assert_eq!(MqttAnswer::parse(&p).rid, rid);
        }
        other => panic!("{other:?}"),
    }
}

/// Connects a good device and returns it, subscribed.
async fn good_device(emu: &dps_emulator::RunningEmulator, reg: &str) -> Device {
    let sas = create_sas(emu, reg, &derived(reg));
    Device::connect(emu, reg, Some(&sas), None).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_packets_close_the_connection_and_the_emulator_lives_on() {
    let env = start_mqtt(|c| c.max_body_bytes = 2048).await;
    let emu = &env.emu;
    enroll_symmetric_group(emu, "fleet", GROUP_KEY);
    still_serves(emu, "before").await;

    // Malformed packets: a reserved packet type, a remaining length that never ends, a
    // PUBLISH whose topic length runs past the packet, garbage before CONNECT.
    for bytes in [
        &[0xF0u8, 0x00][..],
        &[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01][..],
        &[0x32, 0x04, 0x00, 0x40, b'a', b'b'][..],
    ] {
        let mut d = good_device(emu, "hostile").await;
        d.send_raw(bytes).await;
        assert!(d.closed_by_emulator().await, "{bytes:?}");
    }
    let mut raw = Device::new(tls(emu, None).await);
    raw.send_raw(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(raw.closed_by_emulator().await);

    // A first packet that is not CONNECT.
    let mut raw = Device::new(tls(emu, None).await);
    raw.send(Packet::PingReq).await;
    assert!(raw.closed_by_emulator().await);

    // A second CONNECT.
    let mut d = good_device(emu, "hostile").await;
    let sas = create_sas(emu, "hostile", &derived("hostile"));
    d.send(Packet::Connect(connect_packet(emu, "hostile", Some(&sas))))
        .await;
    assert!(d.closed_by_emulator().await);

    // Subscriptions to anything but the documented filter: "DPS doesn't allow the use of the #
    // or ? wildcards for filtering of subtopics ... it only supports the documented topic
    // names and topic filters."
    for filter in [
        "#",
        "$dps/registrations/res/+",
        "$dps/#",
        "devices/hostile/messages/devicebound/#",
    ] {
        let mut d = good_device(emu, "hostile").await;
        d.send(Packet::Subscribe(rumqttc::mqttbytes::v4::Subscribe::new(
            filter,
            QoS::AtLeastOnce,
        )))
        .await;
        assert!(d.closed_by_emulator().await, "{filter}");
    }

    // Publishes to other topics, with wildcards, at QoS 2.
    for topic in [
        "devices/hostile/messages/events/",
        "$dps/registrations/res/200/?$rid=1",
        "$dps/registrations/PUT/iotdps-register/?$rid=#",
        "$dps/registrations/PUT/iotdps-register/",
    ] {
        let mut d = good_device(emu, "hostile").await;
        let mut p = Publish::new(topic, QoS::AtLeastOnce, b"{}".to_vec());
        p.pkid = 9;
        d.send(Packet::Publish(p)).await;
        assert!(d.closed_by_emulator().await, "{topic}");
    }
    let mut d = good_device(emu, "hostile").await;
    let mut p = Publish::new(
        "$dps/registrations/PUT/iotdps-register/?$rid=1",
        QoS::ExactlyOnce,
        serde_json::to_vec(&body_reg("hostile")).unwrap(),
    );
    p.pkid = 9;
    d.send(Packet::Publish(p)).await;
    assert!(d.closed_by_emulator().await);

    // An oversized payload (over max_body_bytes), and a packet over the packet bound, which is
    // refused from its header before it is read.
    let mut d = good_device(emu, "hostile").await;
    let big = json!({"registrationId": "hostile", "payload": "x".repeat(3000)});
    let mut p = Publish::new(
        "$dps/registrations/PUT/iotdps-register/?$rid=1",
        QoS::AtMostOnce,
        serde_json::to_vec(&big).unwrap(),
    );
    p.pkid = 0;
    d.send(Packet::Publish(p)).await;
    assert!(d.closed_by_emulator().await);
    let mut d = good_device(emu, "hostile").await;
    d.send_raw(&[0x30, 0xFF, 0xFF, 0x7F]).await; // remaining length 2 MiB
    assert!(d.closed_by_emulator().await);

    // Packets only a server sends.
    let mut d = good_device(emu, "hostile").await;
    d.send(Packet::ConnAck(ConnAck::new(
        ConnectReturnCode::Success,
        false,
    )))
    .await;
    assert!(d.closed_by_emulator().await);

    // None of that registered anything; a good device still registers.
    assert_eq!(record_ids(emu), ["before"]);
    still_serves(emu, "after").await;
    assert_eq!(record_ids(emu), ["after", "before"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_silence_and_a_missing_connect_close_the_connection() {
    let env = start_mqtt(|_| {}).await;
    let emu = &env.emu;
    enroll_symmetric_group(emu, "fleet", GROUP_KEY);
    // Keep-alive 1 s and then silence: closed after 1.5 s (MQTT 3.1.1, 3.1.2.10).
    let sas = create_sas(emu, "idle", &derived("idle"));
    let mut c = connect_packet(emu, "idle", Some(&sas));
    c.keep_alive = 1;
    let (mut d, code) = Device::connect_with(emu, None, c).await;
    assert_eq!(code, ConnectReturnCode::Success);
    assert!(d.closed_by_emulator().await);
    // TLS and then no CONNECT: closed after the connect timeout (10 s).
    let mut raw = Device::new(tls(emu, None).await);
    assert!(raw.closed_by_emulator().await);
    still_serves(emu, "after-idle").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_sending_too_fast_is_closed() {
    let env = start_mqtt(|c| c.mqtt_max_packets_per_second = 5).await;
    let emu = &env.emu;
    enroll_symmetric_group(emu, "fleet", GROUP_KEY);
    let mut d = good_device(emu, "flood").await;
    // 50 pings at once: far over 5 per second.
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
    still_serves(emu, "after-flood").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_limit_are_closed_and_count_with_https() {
    let env = start_mqtt(|c| {
        c.max_connections = 2;
        c.max_connections_per_peer = Some(2);
    })
    .await;
    let emu = &env.emu;
    enroll_symmetric_group(emu, "fleet", GROUP_KEY);
    let a = good_device(emu, "limit-a").await;
    let b = good_device(emu, "limit-b").await;
    // The third is closed before its handshake completes (or right after it).
    let tcp = tokio::net::TcpStream::connect(mqtt_addr(emu))
        .await
        .unwrap();
    let mut buf = [0u8; 16];
    let mut tcp = tcp;
    let n = tokio::time::timeout(WAIT, tokio::io::AsyncReadExt::read(&mut tcp, &mut buf))
        .await
        .expect("closed in time")
        .unwrap_or(0);
    assert_eq!(n, 0, "the third connection was served");
    // HTTPS shares the caps: its connection is refused too while both MQTT ones are open.
    let c = client(emu, None);
    let r = c
        .get(format!(
            "{}/{}/registrations/x/register",
            emu.endpoint(),
            emu.id_scope()
        ))
        .send()
        .await;
    assert!(r.is_err(), "HTTPS was served over the shared limit");
    drop(a);
    drop(b);
    // Once they are gone, devices are served again.
    let mut served = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if tokio::net::TcpStream::connect(mqtt_addr(emu)).await.is_ok() {
            served = true;
            break;
        }
    }
    assert!(served);
    // The slots are given back when the closes are noticed: retry until a device gets in.
    let mut registered = false;
    for _ in 0..100 {
        let mut d = Device::new(tls(emu, None).await);
        let sas = create_sas(emu, "limit-c", &derived("limit-c"));
        d.send(Packet::Connect(connect_packet(emu, "limit-c", Some(&sas))))
            .await;
        if let Some(Packet::ConnAck(a)) = d.recv().await {
            assert_eq!(a.code, ConnectReturnCode::Success);
            d.subscribe(RESPONSES, QoS::AtLeastOnce).await;
            assert_eq!(d.register(&body_reg("limit-c")).await.status, 200);
            registered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(registered);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_drop_after_connect_drop_after_publish_429_500_and_slow_answers() {
    let env = start_mqtt(|_| {}).await;
    let emu = &env.emu;
    enroll_symmetric_group(emu, "fleet", GROUP_KEY);
    let reg = "faulty";
    let sas = create_sas(emu, reg, &derived(reg));

    // Dropped right after CONNECT: no CONNACK, the connection closes; the next one is served.
    emu.faults().drop_next_mqtt_connects(1);
    let mut raw = Device::new(tls(emu, None).await);
    raw.send(Packet::Connect(connect_packet(emu, reg, Some(&sas))))
        .await;
    assert_eq!(raw.recv().await, None, "a CONNACK despite the drop");

    // Dropped after the register PUBLISH, before the answer: closed with no answer and no
    // record; the device reconnects and registers once.
    emu.faults().drop_next(1);
    let mut d = Device::connect(emu, reg, Some(&sas), None).await;
    let mut p = Publish::new(
        "$dps/registrations/PUT/iotdps-register/?$rid=1",
        QoS::AtLeastOnce,
        serde_json::to_vec(&body_reg(reg)).unwrap(),
    );
    p.pkid = 1;
    d.send(Packet::Publish(p)).await;
    // The PUBACK may or may not make it out before the close; an answer must not.
    while let Some(p) = d.recv().await {
        assert!(matches!(p, Packet::PubAck(_)), "{p:?} despite the drop");
    }
    assert!(record_ids(emu).is_empty());

    // 429 with retry-after in the topic, then 500, then success.
    emu.faults().throttle_next(1, 3);
    emu.faults().fail_next(1);
    let mut d = Device::connect(emu, reg, Some(&sas), None).await;
    let r = d.register_once(&body_reg(reg)).await;
    assert_eq!(r.status, 500, "{}", r.body);
    assert!(r.body["errorCode"].is_u64());
    let r = d.register_once(&body_reg(reg)).await;
    assert_eq!(r.status, 429, "{}", r.body);
    assert_eq!(r.retry_after, Some(3));
    assert_eq!(r.body["errorCode"], 429001);

    // Slow answers: still answered, in order, on the same connection.
    emu.faults().delay_responses(Duration::from_millis(300));
    let done = d.register(&body_reg(reg)).await;
    assert_eq!(done.body["status"], "assigned");
    emu.faults().clear();

    // Exactly one record for all those attempts.
    assert_eq!(record_ids(emu), [reg]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos0_requests_and_unsubscribed_devices() {
    let env = start_mqtt(|_| {}).await;
    let emu = &env.emu;
    enroll_symmetric_group(emu, "fleet", GROUP_KEY);
    let reg = "qos0";
    let sas = create_sas(emu, reg, &derived(reg));
    let (mut d, code) = Device::connect_with(emu, None, connect_packet(emu, reg, Some(&sas))).await;
    assert_eq!(code, ConnectReturnCode::Success);
    // Not subscribed: the request is handled (DPS is not a broker, but answers go only to
    // the response subscription), nothing is delivered.
    d.send(Packet::Publish(Publish::new(
        "$dps/registrations/PUT/iotdps-register/?$rid=a",
        QoS::AtMostOnce,
        serde_json::to_vec(&body_reg(reg)).unwrap(),
    )))
    .await;
    d.send(Packet::PingReq).await;
    // The ping is answered; nothing else arrives before it but possibly nothing at all.
    assert_eq!(d.recv().await, Some(Packet::PingResp));
    // Subscribed with QoS 0: answers come with QoS 0.
    assert!(matches!(
        d.subscribe(RESPONSES, QoS::AtMostOnce).await,
        Packet::SubAck(SubAck { ref return_codes, .. }) if return_codes == &[SubscribeReasonCode::Success(QoS::AtMostOnce)]
    ));
    d.send(Packet::Publish(Publish::new(
        "$dps/registrations/PUT/iotdps-register/?$rid=b",
        QoS::AtMostOnce,
        serde_json::to_vec(&body_reg(reg)).unwrap(),
    )))
    .await;
    loop {
        match d.recv().await {
            Some(Packet::Publish(p)) => {
                assert_eq!(p.qos, QoS::AtMostOnce);
                let a = MqttAnswer::parse(&p);
                if a.rid == "b" {
                    assert_eq!(a.status, 202);
                    break;
                }
            }
            other => panic!("{other:?}"),
        }
    }
    // A clean DISCONNECT closes it.
    d.send(Packet::Disconnect).await;
    assert!(d.closed_by_emulator().await);
    assert_eq!(record_ids(emu), [reg]);
}

/// A registration record or answer without what differs between two registrations of one
/// device (timestamps, etag, operation id).
fn comparable(mut v: serde_json::Value) -> serde_json::Value {
    if let Some(m) = v.as_object_mut() {
        for k in [
            "createdDateTimeUtc",
            "lastUpdatedDateTimeUtc",
            "etag",
            "operationId",
        ] {
            m.remove(k);
        }
        if let Some(st) = m.get_mut("registrationState") {
            *st = comparable(st.take());
        }
    }
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_are_identical_whichever_transport_registered() {
    let env = start_mqtt(|_| {}).await;
    let emu = &env.emu;
    enroll_symmetric(emu, "same-sym", KEY);
    enroll_symmetric_group(emu, "fleet", GROUP_KEY);
    let (_root, leaf) = x509_leaf("same-x509");
    enroll_x509(emu, "same-x509", &leaf);
    let body = |reg: &str| json!({"registrationId": reg, "payload": {"model": "m1", "n": 2}});

    for (reg, key) in [
        ("same-sym", Some(KEY.to_string())),
        ("same-group-dev", Some(derived("same-group-dev"))),
        ("same-x509", None),
    ] {
        let sas = key.map(|k| create_sas(emu, reg, &k));
        let chain = [&leaf];
        let identity: Option<(&[&dps_emulator::pki::CertifiedKey], _)> =
            sas.is_none().then_some((&chain[..], &leaf));
        // HTTPS first.
        let c = client(emu, identity);
        let https = register(&c, emu, reg, body(reg), sas.as_deref()).await;
        let https_record = emu.enrollments().registration(reg).unwrap().unwrap();
        // Then MQTT, the same device.
        let mut d = Device::connect(emu, reg, sas.as_deref(), identity).await;
        let mqtt = d.register(&body(reg)).await;
        let mqtt_record = emu.enrollments().registration(reg).unwrap().unwrap();
        assert_eq!(
            comparable(serde_json::to_value(&https_record).unwrap()),
            comparable(serde_json::to_value(&mqtt_record).unwrap()),
            "{reg}: the records differ"
        );
        assert_eq!(
            comparable(https.body.clone()),
            comparable(mqtt.body.clone()),
            "{reg}: the answers differ"
        );
        // The device's payload is not echoed into the record, on either transport.
        assert_eq!(mqtt_record.payload, None);
        // The record keeps its first creation time, whichever transport came second.
        assert_eq!(
            https_record.created_date_time_utc,
            mqtt_record.created_date_time_utc
        );
    }
    assert_eq!(record_ids(emu), ["same-group-dev", "same-sym", "same-x509"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_bytes_after_connect_never_take_the_emulator_down() {
    let env = start_mqtt(|c| c.max_body_bytes = 1024).await;
    let emu = &env.emu;
    enroll_symmetric_group(emu, "fleet", GROUP_KEY);
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let sas = create_sas(emu, "fuzzed", &derived("fuzzed"));
    for round in 0..30 {
        // Keep-alive 1 s: a packet announced longer than what follows is waited for until
        // 1.5 times the keep-alive has passed, then the connection is closed.
        let mut c = connect_packet(emu, "fuzzed", Some(&sas));
        c.keep_alive = 1;
        let (mut d, code) = Device::connect_with(emu, None, c).await;
        assert_eq!(code, ConnectReturnCode::Success);
        // A valid packet type half of the time, so the packet parsers see the bytes too.
        let len = (next() % 200) as usize + 2;
        let mut bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        if round % 2 == 0 {
            bytes[0] = [0x30, 0x32, 0x82, 0xA2, 0x10, 0x40][(next() % 6) as usize];
        }
        d.send_raw(&bytes).await;
        // Whatever the emulator makes of it, it answers with packets or closes (at the latest
        // when the keep-alive runs out).
        d.send(Packet::PingReq).await;
        while let Some(p) = d.recv().await {
            if p == Packet::PingResp {
                break;
            }
        }
    }
    still_serves(emu, "after-fuzz").await;
    assert_eq!(record_ids(emu), ["after-fuzz"]);
}
