//! The operational-key checks (ABI 1.2): every bundled backend that has the interface passes
//! them, and a plugin without it is skipped with the reason.

mod support;

use hsm_conformance::Status;
use support::*;

const CHECKS: [&str; 4] = [
    "operational-key.chain-stored",
    "operational-key.public-key-format",
    "operational-key.sign-verifies",
    "operational-key.survives-process",
];

fn run_operational(plugin: &std::path::Path) -> hsm_conformance::RunReport {
    let mut o = options(plugin, &[]);
    o.only = vec!["operational-key".into()];
    run_report(&o)
}

#[test]
fn the_software_backends_pass_every_operational_key_check() {
    for backend in ["symmetric", "dice", "tpm_sim"] {
        let report = run_operational(&bundled(backend));
        let mut ran: Vec<(&str, Status)> =
            report.results.iter().map(|r| (r.id, r.status)).collect();
        ran.sort_by_key(|(id, _)| *id);
        assert_eq!(
            ran,
            CHECKS.map(|id| (id, Status::Pass)),
            "{backend}:\n{}",
            describe(&report)
        );
    }
}

#[test]
fn a_plugin_without_the_interface_is_skipped_saying_so() {
    let report = run_operational(std::path::Path::new(hsm_fixture_loader_c::ABI_1_0));
    assert_eq!(
        report.results.len(),
        CHECKS.len(),
        "\n{}",
        describe(&report)
    );
    for r in &report.results {
        assert_eq!(r.status, Status::Skip, "{}", r.id);
        assert!(
            r.message.contains("cannot hold an operational key"),
            "{}: {}",
            r.id,
            r.message
        );
    }
}
