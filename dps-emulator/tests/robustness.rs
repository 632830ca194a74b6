//! Bad input, limits, fault injection and the service API.

mod common;

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::json;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const KEY: &str = "q83vEjRWeJq8p7Bm6x7Ntx0YhEorkqGSTd1U7Nl2JWc=";

fn reg_url(emu: &dps_emulator::RunningEmulator, reg: &str, version: &str) -> String {
    format!(
        "{}/{}/registrations/{reg}/register?api-version={version}",
        emu.endpoint(),
        emu.id_scope()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_4xx_with_error_bodies() {
    let env = start_with(|c| c.max_body_bytes = 1024).await;
    let emu = &env.emu;
    let c = client(emu, None);
    let auth = device_sas(emu, "dev", KEY, in_an_hour());

    let a = send(
        c.put(reg_url(emu, "dev", API))
            .header("authorization", &auth)
            .header("content-type", "application/json")
            .body("{\"registrationId\": "),
    )
    .await;
    assert_error_body(&a, StatusCode::BAD_REQUEST);
    assert!(a.body["message"]
        .as_str()
        .unwrap()
        .contains("malformed JSON"));
    let a = send(
        c.put(reg_url(emu, "dev", API))
            .header("authorization", &auth)
            .body("[1,2,3]"),
    )
    .await;
    assert_error_body(&a, StatusCode::BAD_REQUEST);
    let a = send(
        c.put(reg_url(emu, "dev", API))
            .json(&json!({"registrationId": "someone-else"})),
    )
    .await;
    assert_error_body(&a, StatusCode::BAD_REQUEST);
    let a = send(c.put(reg_url(emu, "dev", API)).body(vec![b'x'; 4096])).await;
    assert_error_body(&a, StatusCode::PAYLOAD_TOO_LARGE);
    // Chunked (no Content-Length) oversized body.
    let mut tls = raw_tls(emu).await;
    let head = format!("PUT /{}/registrations/dev/register?api-version={API} HTTP/1.1\r\nhost: localhost\r\ntransfer-encoding: chunked\r\n\r\n", emu.id_scope());
    tls.write_all(head.as_bytes()).await.unwrap();
    for _ in 0..8 {
        tls.write_all(format!("200\r\n{}\r\n", " ".repeat(512)).as_bytes())
            .await
            .unwrap();
    }
    tls.write_all(b"0\r\n\r\n").await.unwrap();
    let mut answer = vec![0u8; 4096];
    let n = tls.read(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("errorCode"), "{answer}");

    let a = send(
        c.put(reg_url(emu, "dev", "1999-01-01"))
            .json(&body_reg("dev")),
    )
    .await;
    assert_error_body(&a, StatusCode::BAD_REQUEST);
    assert!(a.body["message"].as_str().unwrap().contains("2021-10-01"));
    let a = send(
        c.put(format!(
            "{}/{}/registrations/dev/register",
            emu.endpoint(),
            emu.id_scope()
        ))
        .json(&body_reg("dev")),
    )
    .await;
    assert_error_body(&a, StatusCode::BAD_REQUEST);
    for v in dps_emulator::DEVICE_API_VERSIONS {
        // Every supported version passes the version check (and fails later, on credentials).
        let a = send(c.put(reg_url(emu, "dev", v)).json(&body_reg("dev"))).await;
        assert_error_body(&a, StatusCode::UNAUTHORIZED);
    }
    assert_error_body(
        &send(c.get(format!("{}/nothing/here", emu.endpoint()))).await,
        StatusCode::NOT_FOUND,
    );
    assert_error_body(
        &send(c.get(format!("{}/", emu.endpoint()))).await,
        StatusCode::NOT_FOUND,
    );
    assert_error_body(
        &send(c.delete(reg_url(emu, "dev", API))).await,
        StatusCode::METHOD_NOT_ALLOWED,
    );
    let a = send(
        c.put(format!(
            "{}/wrongscope/registrations/dev/register?api-version={API}",
            emu.endpoint()
        ))
        .json(&body_reg("dev")),
    )
    .await;
    assert_error_body(&a, StatusCode::NOT_FOUND);
    let a = send(
        c.put(format!(
            "{}/{}/registrations/bad%20id/register?api-version={API}",
            emu.endpoint(),
            emu.id_scope()
        ))
        .json(&body_reg("bad id")),
    )
    .await;
    assert_error_body(&a, StatusCode::BAD_REQUEST);
}

async fn raw_tls(
    emu: &dps_emulator::RunningEmulator,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut emu.ca_cert_pem().as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let cfg = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = TcpStream::connect(emu.addr()).await.unwrap();
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg))
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap()
}

/// Reads until EOF or error; true when the peer closed (EOF or reset) within 5 s.
async fn closed_by_peer(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_tls_port_closes_the_connection_and_the_server_lives_on() {
    let env = start().await;
    let emu = &env.emu;
    for garbage in [
        &b"GET / HTTP/1.1\r\nhost: x\r\n\r\n"[..],
        &[0x16, 0x03, 0x01, 0xff, 0xff, 1, 2, 3][..],
        &[0u8; 4096][..],
        &b"\xff\xfe random"[..],
    ] {
        let mut s = TcpStream::connect(emu.addr()).await.unwrap();
        let _ = s.write_all(garbage).await;
        assert!(
            closed_by_peer(&mut s).await,
            "connection kept open after {garbage:?}"
        );
    }
    // HTTP garbage inside a good TLS session: 400 from the HTTP layer or a close, never a hang.
    let mut tls = raw_tls(emu).await;
    tls.write_all(b"\x01\x02 NOT HTTP\r\n\r\n").await.unwrap();
    let mut buf = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), tls.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(n == 0 || text.starts_with("HTTP/1.1 400"), "{text}");
    // Still serving.
    let c = client(emu, None);
    assert_error_body(
        &send(c.get(format!("{}/x", emu.endpoint()))).await,
        StatusCode::NOT_FOUND,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_limit_are_closed() {
    let env = start_with(|c| {
        c.max_connections = 2;
        // All from 127.0.0.1: this checks the overall limit, not the per-address one.
        c.max_connections_per_peer = Some(2);
    })
    .await;
    let emu = &env.emu;
    let held1 = raw_tls(emu).await;
    let held2 = raw_tls(emu).await;
    let mut third = TcpStream::connect(emu.addr()).await.unwrap();
    assert!(
        closed_by_peer(&mut third).await,
        "third connection was not closed"
    );
    drop((held1, held2));
    // Permits come back once the held connections are gone.
    let c = client(emu, None);
    let mut ok = false;
    for _ in 0..50 {
        if let Ok(r) = c.get(format!("{}/x", emu.endpoint())).send().await {
            ok = r.status() == StatusCode::NOT_FOUND;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        ok,
        "server did not accept connections after the held ones closed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_faults_500_429_drop_and_delay() {
    let env = start().await;
    let emu = &env.emu;
    let c = client(emu, None);
    let url = reg_url(emu, "dev", API);
    emu.faults().fail_next(2);
    for _ in 0..2 {
        assert_error_body(
            &send(c.put(&url).json(&body_reg("dev"))).await,
            StatusCode::INTERNAL_SERVER_ERROR,
        );
    }
    emu.faults().throttle_next(1, 7);
    let a = send(c.put(&url).json(&body_reg("dev"))).await;
    assert_error_body(&a, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(a.headers["retry-after"], "7");
    // Faults are consumed: next answer is the real one (401, unknown device).
    assert_error_body(
        &send(c.put(&url).json(&body_reg("dev"))).await,
        StatusCode::UNAUTHORIZED,
    );
    emu.faults().drop_next(1);
    assert!(
        c.put(&url).json(&body_reg("dev")).send().await.is_err(),
        "dropped request got an answer"
    );
    emu.faults().delay_responses(Duration::from_millis(300));
    let t = std::time::Instant::now();
    assert_error_body(
        &send(c.put(&url).json(&body_reg("dev"))).await,
        StatusCode::UNAUTHORIZED,
    );
    assert!(t.elapsed() >= Duration::from_millis(300));
    emu.faults().clear();
    // The service API is never faulted.
    emu.faults().fail_next(5);
    assert_eq!(
        send(service(&c, emu, Method::GET, "enrollments/none"))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_api_crud_with_sas_and_etags() {
    let env = start().await;
    let emu = &env.emu;
    let c = client(emu, None);
    // Authentication.
    let url = format!("{}/enrollments/e1?api-version=2021-10-01", emu.endpoint());
    assert_error_body(&send(c.get(&url)).await, StatusCode::UNAUTHORIZED);
    let forged = dps_proto::sas::create_token(
        "localhost",
        KEY,
        Some("provisioningserviceowner"),
        in_an_hour(),
    )
    .unwrap();
    assert_error_body(
        &send(c.get(&url).header("authorization", forged)).await,
        StatusCode::UNAUTHORIZED,
    );

    // Individual symmetric-key enrollment in the service's JSON; keys generated when absent.
    let body = json!({"registrationId": "e1", "attestation": {"type": "symmetricKey"}, "provisioningStatus": "enabled",
        "initialTwin": {"properties": {"desired": {"x": 1}}}, "allocationPolicy": "hashed", "reprovisionPolicy": {"updateHubAssignment": true}});
    let a = send(service(&c, emu, Method::PUT, "enrollments/e1").json(&body)).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let key = a.body["attestation"]["symmetricKey"]["primaryKey"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(a.body["attestation"]["symmetricKey"]["secondaryKey"].is_string());
    assert_eq!(
        a.body["reprovisionPolicy"]["updateHubAssignment"], true,
        "unknown fields pass through"
    );
    let etag = a.body["etag"].as_str().unwrap().to_string();
    assert!(a.body["createdDateTimeUtc"].is_string());
    let g = send(service(&c, emu, Method::GET, "enrollments/e1")).await;
    assert_eq!(g.body, a.body);
    // The generated key works for the device.
    let done = register(
        &c,
        emu,
        "e1",
        body_reg("e1"),
        Some(&device_sas(emu, "e1", &key, in_an_hour())),
    )
    .await;
    assert_eq!(done.body["status"], "assigned");
    let r = send(service(&c, emu, Method::GET, "registrations/e1")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["status"], "assigned");

    // Etags.
    let stale = send(
        service(&c, emu, Method::PUT, "enrollments/e1")
            .header("if-match", "stale")
            .json(&body),
    )
    .await;
    assert_error_body(&stale, StatusCode::PRECONDITION_FAILED);
    let fresh = send(
        service(&c, emu, Method::PUT, "enrollments/e1")
            .header("if-match", &etag)
            .json(&body),
    )
    .await;
    assert_eq!(fresh.status, StatusCode::OK);
    assert_ne!(fresh.body["etag"].as_str().unwrap(), etag);
    assert_eq!(
        fresh.body["createdDateTimeUtc"],
        a.body["createdDateTimeUtc"]
    );

    // Invalid enrollments: 400 naming the problem.
    for (bad, needle) in [
        (
            json!({"registrationId": "e2", "attestation": {"type": "tpm"}}),
            "attestation.tpm",
        ),
        (
            json!({"registrationId": "e2", "attestation": {"type": "x509", "x509": {"clientCertificates": {"primary": {"certificate": "not a cert"}}}}}),
            "x509",
        ),
        (
            json!({"registrationId": "e2", "attestation": {"type": "magic"}}),
            "magic",
        ),
        (
            json!({"registrationId": "e2", "attestation": {"type": "symmetricKey", "symmetricKey": {"primaryKey": "!!"}}}),
            "base64",
        ),
        (json!({"registrationId": "e2"}), "attestation"),
    ] {
        let a = send(service(&c, emu, Method::PUT, "enrollments/e2").json(&bad)).await;
        assert_error_body(&a, StatusCode::BAD_REQUEST);
        assert!(
            a.body["message"].as_str().unwrap().contains(needle),
            "{needle}: {}",
            a.body
        );
    }
    assert_error_body(
        &send(service(&c, emu, Method::PUT, "enrollments/other").json(&body)).await,
        StatusCode::BAD_REQUEST,
    );

    // Groups, query, delete.
    let grp = json!({"enrollmentGroupId": "g1", "attestation": {"type": "symmetricKey", "symmetricKey": {"primaryKey": KEY, "secondaryKey": KEY}}});
    assert_eq!(
        send(service(&c, emu, Method::PUT, "enrollmentGroups/g1").json(&grp))
            .await
            .status,
        StatusCode::OK
    );
    let q =
        send(service(&c, emu, Method::POST, "enrollmentGroups/query").json(&json!({"query": "*"})))
            .await;
    assert_eq!(q.body.as_array().unwrap().len(), 1);
    let q = send(service(&c, emu, Method::POST, "enrollments/query").json(&json!({"query": "*"})))
        .await;
    assert_eq!(q.body[0]["registrationId"], "e1");
    assert_eq!(
        send(service(&c, emu, Method::DELETE, "enrollmentGroups/g1"))
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_error_body(
        &send(service(&c, emu, Method::GET, "enrollmentGroups/g1")).await,
        StatusCode::NOT_FOUND,
    );
    assert_error_body(
        &send(service(&c, emu, Method::DELETE, "enrollments/e1").header("if-match", "stale")).await,
        StatusCode::PRECONDITION_FAILED,
    );
    assert_eq!(
        send(service(&c, emu, Method::DELETE, "enrollments/e1"))
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_error_body(
        &send(service(&c, emu, Method::DELETE, "enrollments/e1")).await,
        StatusCode::NOT_FOUND,
    );
    // Deleting the enrollment removes its registration record, as the service does.
    assert_error_body(
        &send(service(&c, emu, Method::GET, "registrations/e1")).await,
        StatusCode::NOT_FOUND,
    );
}
