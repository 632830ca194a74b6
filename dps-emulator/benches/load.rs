//! Bounded load benchmark on loopback: N concurrent symmetric-key devices (group-derived keys)
//! register (PUT + poll) against an in-process emulator over TLS. Prints registrations/s and
//! p50/p99 latency, a baseline (unauthenticated 404 round trips on the same clients, i.e. the
//! TLS + HTTP floor) and the ratio, then counts the stored records: none lost, none duplicated.
//!
//! Then the same over MQTT: N concurrent devices, each registration a device of its own (client
//! id = registration id): TLS + CONNECT (authenticated) + SUBSCRIBE + register PUBLISH + polls
//! until assigned, the figures printed beside the HTTPS ones, records counted the same way.
//!
//! Run: `cargo bench -p dps-emulator --bench load` (env DPS_BENCH_CONCURRENCY, DPS_BENCH_PER_DEVICE).

#[path = "../tests/common/mod.rs"]
mod common;

use common::*;
use dps_emulator::model::*;
use std::collections::HashSet;
use std::time::{Duration, Instant};

const GROUP_KEY: &str = "q83vEjRWeJq8p7Bm6x7Ntx0YhEorkqGSTd1U7Nl2JWc=";

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn main() {
    let concurrency = env_usize("DPS_BENCH_CONCURRENCY", 32).clamp(1, 400);
    let per_device = env_usize("DPS_BENCH_PER_DEVICE", 10).clamp(1, 1000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let env = start_with(|c| {
            c.hubs = vec![
                "hub-a.azure-devices.net".into(),
                "hub-b.azure-devices.net".into(),
                "hub-c.azure-devices.net".into(),
            ];
            // HTTPS clients keep their pooled connections while the MQTT devices connect, and a
            // closed MQTT connection's slot comes back only when the emulator has seen the close.
            c.max_connections = 4 * concurrency + 16;
            // Every simulated device connects from 127.0.0.1.
            c.max_connections_per_peer = Some(4 * concurrency + 16);
            c.mqtt_listen = Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
        })
        .await;
        let env = std::sync::Arc::new(env);
        let emu = &env.emu;
        let a = AttestationMechanism {
            kind: "symmetricKey".into(),
            tpm: None,
            x509: None,
            symmetric_key: Some(SymmetricKeyAttestation { primary_key: Some(GROUP_KEY.into()), secondary_key: None }),
        };
        emu.enrollments()
            .create_group(EnrollmentGroup { enrollment_group_id: "bench".into(), attestation: a, common: Default::default() })
            .expect("group");

        // One client (one TLS connection pool) per simulated device.
        let clients: Vec<reqwest::Client> = (0..concurrency).map(|_| client(emu, None)).collect();

        // Baseline: the same clients doing unauthenticated round trips that end in 404.
        let t0 = Instant::now();
        let mut tasks = Vec::new();
        for c in clients.clone() {
            let url = format!("{}/baseline", emu.endpoint());
            tasks.push(tokio::spawn(async move {
                for _ in 0..per_device * 2 {
                    let r = c.get(&url).send().await.expect("baseline request");
                    assert_eq!(r.status(), 404);
                    let _ = r.bytes().await;
                }
            }));
        }
        for t in tasks {
            t.await.expect("baseline task");
        }
        let baseline_rps = (concurrency * per_device * 2) as f64 / t0.elapsed().as_secs_f64();

        // Registrations: each device registers `per_device` distinct registration ids.
        let t0 = Instant::now();
        let mut tasks = Vec::new();
        for (d, c) in clients.iter().cloned().enumerate() {
            let emu_endpoint = emu.endpoint();
            let scope = emu.id_scope().to_string();
            tasks.push(tokio::spawn(async move {
                let mut lat = Vec::with_capacity(per_device);
                for i in 0..per_device {
                    let reg = format!("bench-{d}-{i}");
                    let key = dps_proto::group_key::derive_device_key_b64(GROUP_KEY, &reg).expect("key");
                    let token = dps_proto::sas::create_token(&format!("{scope}/registrations/{reg}"), &key, Some("registration"), in_an_hour()).expect("token");
                    let start = Instant::now();
                    let r = c
                        .put(format!("{emu_endpoint}/{scope}/registrations/{reg}/register?api-version=2021-10-01"))
                        .header("authorization", &token)
                        .json(&body_reg(&reg))
                        .send()
                        .await
                        .expect("register");
                    assert_eq!(r.status(), 202);
                    let v: serde_json::Value = r.json().await.expect("json");
                    let op = v["operationId"].as_str().expect("operationId").to_string();
                    loop {
                        let r = c
                            .get(format!("{emu_endpoint}/{scope}/registrations/{reg}/operations/{op}?api-version=2021-10-01"))
                            .header("authorization", &token)
                            .send()
                            .await
                            .expect("poll");
                        if r.status() == 200 {
                            let v: serde_json::Value = r.json().await.expect("json");
                            assert_eq!(v["status"], "assigned");
                            break;
                        }
                        assert_eq!(r.status(), 202);
                        let _ = r.bytes().await;
                    }
                    lat.push(start.elapsed());
                }
                lat
            }));
        }
        let mut lat = Vec::new();
        for t in tasks {
            lat.extend(t.await.expect("device task"));
        }
        let elapsed = t0.elapsed();
        lat.sort();
        let total = concurrency * per_device;
        let rps = total as f64 / elapsed.as_secs_f64();

        // The same over MQTT: every registration is a device's own connection.
        let t0 = Instant::now();
        let mut tasks = Vec::new();
        for d in 0..concurrency {
            let env = env.clone();
            tasks.push(tokio::spawn(async move {
                let emu = &env.emu;
                let mut lat = Vec::with_capacity(per_device);
                for i in 0..per_device {
                    let reg = format!("mqtt-bench-{d}-{i}");
                    let key = dps_proto::group_key::derive_device_key_b64(GROUP_KEY, &reg).expect("key");
                    let token = device_sas(emu, &reg, &key, in_an_hour());
                    let start = Instant::now();
                    let mut dev = common::mqtt::Device::connect(emu, &reg, Some(&token), None).await;
                    let done = dev.register(&body_reg(&reg)).await;
                    assert_eq!(done.body["status"], "assigned");
                    lat.push(start.elapsed());
                    dev.send(rumqttc::mqttbytes::v4::Packet::Disconnect).await;
                    assert!(dev.closed_by_emulator().await);
                }
                lat
            }));
        }
        let mut mqtt_lat = Vec::new();
        for t in tasks {
            mqtt_lat.extend(t.await.expect("MQTT device task"));
        }
        let mqtt_elapsed = t0.elapsed();
        mqtt_lat.sort();
        let mqtt_rps = total as f64 / mqtt_elapsed.as_secs_f64();

        let records = emu.registration_records().expect("records");
        let ids: HashSet<&str> = records.iter().map(|r| r.registration_id.as_str()).collect();
        let expected: HashSet<String> = (0..concurrency)
            .flat_map(|d| (0..per_device).flat_map(move |i| [format!("bench-{d}-{i}"), format!("mqtt-bench-{d}-{i}")]))
            .collect();
        let lost = expected.iter().filter(|e| !ids.contains(e.as_str())).count();
        let duplicated = records.len() - ids.len();
        let ops = emu.enrollments().operation_count().expect("ops");

        println!("dps-emulator load: {concurrency} concurrent symmetric-key devices x {per_device} registrations = {total} per transport");
        println!("  HTTPS registrations/s {rps:9.1}   (PUT register + poll until assigned, pooled connection per device)");
        println!("  HTTPS latency p50     {:9.2} ms", percentile(&lat, 0.50).as_secs_f64() * 1e3);
        println!("  HTTPS latency p99     {:9.2} ms", percentile(&lat, 0.99).as_secs_f64() * 1e3);
        println!("  MQTT  registrations/s {mqtt_rps:9.1}   (TLS + CONNECT + SUBSCRIBE + register + poll, a connection per registration)");
        println!("  MQTT  latency p50     {:9.2} ms", percentile(&mqtt_lat, 0.50).as_secs_f64() * 1e3);
        println!("  MQTT  latency p99     {:9.2} ms", percentile(&mqtt_lat, 0.99).as_secs_f64() * 1e3);
        println!("  baseline round trips/s {baseline_rps:8.1}   (unauthenticated 404, same HTTPS clients)");
        println!("  ratio HTTPS registrations / baseline round trips: {:.3}", rps / baseline_rps);
        println!("  ratio MQTT / HTTPS registrations/s: {:.3}", mqtt_rps / rps);
        println!("  stored records {}  lost {lost}  duplicated {duplicated}  operations {ops}", records.len());
        assert_eq!(lost, 0, "registration records lost");
        assert_eq!(duplicated, 0, "registration records duplicated");
        assert_eq!(records.len(), 2 * total);
        assert_eq!(ops as usize, 2 * total, "one operation per acknowledged register");
    });
}
