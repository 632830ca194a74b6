//! The operational-key checks (ABI 1.2): every bundled software backend passes them (the
//! symmetric and tpm-sim plugins, whose keys sit in a 0600 file and which describe themselves
//! as software, WARN on `not-exportable`), a plugin without the interface is skipped with the
//! reason, and the `conf-op-faults` fixture, with one fault per run, fails exactly the check
//! that fault breaks, with a message naming the problem.

mod support;

use hsm_conformance::Status;
use support::*;

const CHECKS: [&str; 7] = [
    "operational-key.chain-stored",
    "operational-key.delete",
    "operational-key.generate",
    "operational-key.not-exportable",
    "operational-key.public-key-format",
    "operational-key.sign-verifies",
    "operational-key.survives-process",
];

fn run_operational(
    plugin: &std::path::Path,
    config: &[(&str, &str)],
) -> hsm_conformance::RunReport {
    let mut o = options(plugin, config);
    o.only = vec!["operational-key".into()];
    run_report(&o)
}

/// Every check's status, sorted by id.
fn statuses(report: &hsm_conformance::RunReport) -> Vec<(&'static str, Status)> {
    let mut ran: Vec<(&str, Status)> = report.results.iter().map(|r| (r.id, r.status)).collect();
    ran.sort_by_key(|(id, _)| *id);
    ran
}

#[test]
fn the_software_backends_pass_every_operational_key_check() {
    // symmetric and tpm-sim keep the private key in a 0600 file and say they are software:
    // WARN, never FAIL; dice derives its keys and stores none.
    for (backend, warns) in [("symmetric", true), ("dice", false), ("tpm_sim", true)] {
        let report = run_operational(&bundled(backend), &[]);
        let want = CHECKS.map(|id| {
            let warn = warns && id == "operational-key.not-exportable";
            (id, if warn { Status::Warn } else { Status::Pass })
        });
        assert_eq!(statuses(&report), want, "{backend}:\n{}", describe(&report));
        assert!(report.success(), "{backend}:\n{}", describe(&report));
        let r = report.get("operational-key.not-exportable").expect("ran");
        if warns {
            assert!(
                r.message.contains("in clear in state_dir/")
                    && r.message.contains("(0600)")
                    && r.message.contains("describes itself as software"),
                "{backend}: {}",
                r.message
            );
        }
    }
    // dice: the derived-key rules were the ones applied.
    let report = run_operational(&bundled("dice"), &[]);
    for id in ["operational-key.generate", "operational-key.delete"] {
        let r = report.get(id).expect("ran");
        assert!(
            r.message.contains("keys are derived"),
            "{id}: {}",
            r.message
        );
    }
}

#[test]
fn a_plugin_without_the_interface_is_skipped_saying_so() {
    let report = run_operational(std::path::Path::new(hsm_fixture_loader_c::ABI_1_0), &[]);
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

/// `fault` setting of conf-op-faults, the checks it fails, and what the first one's message
/// must say.
const FAULTS: &[(&str, &[&str], &[&str])] = &[
    // The public key is what the other checks parse, so the format fault fails them too;
    // those that only compare bytes pass.
    (
        "spki-raw-point",
        &[
            "operational-key.public-key-format",
            "operational-key.generate",
            "operational-key.not-exportable",
            "operational-key.sign-verifies",
        ],
        &["a DER SubjectPublicKeyInfo", "65 bytes that do not parse"],
    ),
    (
        "new-key-per-call",
        &["operational-key.public-key-format"],
        &["create_key to find the key it made", "another public key"],
    ),
    (
        "one-key-for-all",
        &["operational-key.generate"],
        &[
            "a different key under a second label",
            "the same public key under both labels",
        ],
    ),
    (
        "signature-raw",
        &["operational-key.sign-verifies"],
        &[
            "a DER Ecdsa-Sig-Value",
            "64 bytes that are not DER (raw r||s?)",
        ],
    ),
    (
        "signature-other-key",
        &["operational-key.sign-verifies"],
        &[
            "a signature that verifies with the public key",
            "one that does not",
        ],
    ),
    (
        "chain-trimmed",
        &["operational-key.chain-stored"],
        &["get_chain to return the stored chain byte for byte"],
    ),
    (
        "memory-only",
        &["operational-key.survives-process"],
        &[
            "in a new process to find what the first process made",
            "HSM_ERR_NOT_FOUND",
            "kept in memory only?",
        ],
    ),
    (
        "key-in-clear",
        &["operational-key.not-exportable"],
        &[
            "the private key never to leave the plugin",
            "state_dir/op-faults/conformance-op.key.pem (mode 0600) holds it in clear",
            "does not describe itself as software",
        ],
    ),
    (
        "delete-leaves-chain",
        &["operational-key.delete"],
        &[
            "get_chain after delete_key to return HSM_ERR_NOT_FOUND",
            "the chain is still there",
        ],
    ),
    (
        "no-delete",
        &["operational-key.delete"],
        &[
            "HSM_ERR_NOT_SUPPORTED only where keys are derived",
            "it returned HSM_ERR_NOT_SUPPORTED",
        ],
    ),
];

#[test]
fn the_fault_fixture_is_correct_without_a_fault() {
    for config in [&[][..], &[("fault", "none")][..]] {
        let report = run_operational(&fixture("conf_op_faults"), config);
        assert_eq!(
            statuses(&report),
            CHECKS.map(|id| (id, Status::Pass)),
            "{config:?}:\n{}",
            describe(&report)
        );
    }
}

#[test]
fn each_fault_fails_exactly_the_check_it_breaks_naming_the_problem() {
    for (fault, failing, says) in FAULTS {
        let report = run_operational(&fixture("conf_op_faults"), &[("fault", fault)]);
        let want: Vec<(&str, Status)> = CHECKS
            .iter()
            .map(|id| {
                let fails = failing.contains(id);
                (*id, if fails { Status::Fail } else { Status::Pass })
            })
            .collect();
        assert_eq!(
            statuses(&report),
            want,
            "fault={fault}:\n{}",
            describe(&report)
        );
        let r = report.get(failing[0]).expect("ran");
        for s in *says {
            assert!(
                r.message.contains(s),
                "fault={fault}: {} says {:?}, not {s:?}",
                r.id,
                r.message
            );
        }
    }
}

#[test]
fn an_unknown_fault_is_refused_by_create_naming_the_valid_ones() {
    // The harness learns before any check that no instance can be made, and says why.
    let report = run_operational(&fixture("conf_op_faults"), &[("fault", "bogus")]);
    assert_eq!(
        report.results.len(),
        CHECKS.len(),
        "\n{}",
        describe(&report)
    );
    for r in &report.results {
        assert_eq!(r.status, Status::Skip, "{}: {}", r.id, r.message);
        assert!(
            r.message.contains("no instance can be created")
                && r.message.contains("unknown fault `bogus`")
                && r.message.contains("delete-leaves-chain"),
            "{}",
            r.message
        );
    }
}
