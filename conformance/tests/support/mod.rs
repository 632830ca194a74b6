//! Shared helpers: where the built plugins are, and running the harness as a library with
//! this package's `hsm-conformance` binary for the child processes.
#![allow(dead_code, unused_imports, unreachable_pub)] // shared by several test binaries, which see it through `pub`

use hsm_conformance::{run, RunOptions, RunReport, Status};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use hsm_test_support::{built_library, bundled_plugin as bundled, profile_dir};

/// A conformance fixture (`conf_leak` -> libhsm_fixture_conf_leak.so).
pub fn fixture(stem: &str) -> PathBuf {
    built_library(&format!("hsm_fixture_{stem}"))
}

/// Options for a full run of `plugin` with `config`.
pub fn options(plugin: &Path, config: &[(&str, &str)]) -> RunOptions {
    RunOptions {
        plugin: plugin.to_path_buf(),
        config: config
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        only: vec![],
        skip: vec![],
        jobs: 2,
        timeout: Duration::from_secs(30),
        exe: PathBuf::from(env!("CARGO_BIN_EXE_hsm-conformance")),
    }
}

/// Runs the harness; the harness itself must never fail to produce a report.
pub fn run_report(options: &RunOptions) -> RunReport {
    run(options, &|_| {}).unwrap_or_else(|e| panic!("the harness failed: {e}"))
}

/// Every check that failed, crashed or timed out, with its status.
pub fn failures(report: &RunReport) -> BTreeSet<(String, Status)> {
    report
        .failures()
        .into_iter()
        .map(|(id, s)| (id.to_string(), s))
        .collect()
}

/// Asserts that exactly `expected` checks failed, each with `status`.
pub fn assert_exactly(report: &RunReport, status: Status, expected: &[&str]) {
    let want: BTreeSet<(String, Status)> =
        expected.iter().map(|id| (id.to_string(), status)).collect();
    let got = failures(report);
    assert_eq!(got, want, "\n{}", describe(report));
}

/// All failing lines and the summary, for assertion messages.
pub fn describe(report: &RunReport) -> String {
    let mut s: Vec<String> = report
        .results
        .iter()
        .filter(|r| r.status.is_failure())
        .map(|r| format!("{}\n    stderr: {}", r.line(), r.stderr.trim()))
        .collect();
    s.push(report.summary());
    s.join("\n")
}

/// Asserts a backend passes every applicable check (skips only for undeclared interfaces,
/// the thread-safety declaration, or a key the device already holds), and that it ran at
/// least `min_ran` checks.
pub fn assert_all_pass(report: &RunReport, min_ran: usize) {
    assert!(report.success(), "\n{}", describe(report));
    assert!(report.load_error.is_none(), "{:?}", report.load_error);
    let ran = report
        .results
        .iter()
        .filter(|r| matches!(r.status, Status::Pass | Status::Warn))
        .count();
    assert!(
        ran >= min_ran,
        "only {ran} checks ran:\n{}",
        report.summary()
    );
    for r in &report.results {
        if r.status == Status::Skip {
            assert!(
                r.message.contains("does not declare")
                    || r.message.contains("serialized")
                    || r.message.contains("already"),
                "{} skipped for another reason: {}",
                r.id,
                r.message
            );
        }
    }
}
