//! The swtpm test harness itself: it starts a reachable TPM, restarts it on the same state,
//! and stops it on drop. Needs the `swtpm-harness` feature and swtpm installed.
#![cfg(feature = "swtpm-harness")]

use std::net::TcpStream;
use std::time::Duration;

use hsm_tpm_common::swtpm::Swtpm;

fn reachable(port: u16) -> bool {
    TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(300),
    )
    .is_ok()
}

#[test]
fn starts_restarts_and_stops() {
    let mut tpm = Swtpm::start().unwrap_or_else(|e| panic!("{e}"));
    let port = tpm.port();
    assert!(tpm.tcti().ends_with(&format!("port={port}")));
    assert!(reachable(port));
    let state = tpm.state_dir().to_path_buf();
    assert!(state.is_dir());

    tpm.restart().unwrap();
    assert_eq!(tpm.state_dir(), state);
    assert!(reachable(tpm.port()));
    // The TPM saved its permanent state on the graceful shutdown.
    assert!(std::fs::read_dir(&state)
        .unwrap()
        .filter_map(Result::ok)
        .any(|e| e.file_name().to_string_lossy().contains("permall")));

    let port = tpm.port();
    drop(tpm);
    assert!(!reachable(port));
    assert!(!state.exists());
}
