//! The concurrency checks on the hot path: a plugin declared concurrent that mixes results
//! between threads, and one whose last_error is shared between threads, each get exactly their
//! failure, with its diagnosis, on every run; the bundled plugins never do.

mod support;

use hsm_conformance::{RunOptions, Status};
use support::*;

/// Runs a full check of `stem` (a conformance fixture), with no other setting.
fn full_run(stem: &str) -> hsm_conformance::RunReport {
    run_report(&options(&fixture(stem), &[]))
}

/// Nothing in `report` needs setup or warns: the fixture is otherwise a sound plugin.
fn otherwise_sound(report: &hsm_conformance::RunReport) {
    for r in &report.results {
        assert!(
            !matches!(r.status, Status::Setup | Status::Warn),
            "{}: {:?} {}",
            r.id,
            r.status,
            r.message
        );
    }
}

/// Options that run only the concurrency checks on the hot path and last_error (conf-unstable-ek
/// fails the identity ones by design).
fn concurrency_only(mut o: RunOptions) -> RunOptions {
    o.only = vec![
        "concurrency.*-hot-path".into(),
        "concurrency.last-error-per-thread".into(),
    ];
    o
}

/// How many times the concurrency checks are run again to show they catch a race every time
/// (and never flag a sound plugin).
const REPEATS: usize = 10;

#[test]
fn results_mixed_between_threads_on_one_instance_are_caught() {
    let report = full_run("conf_racy_concurrent");
    assert_exactly(
        &report,
        Status::Fail,
        &["concurrency.symmetric-key-hot-path"],
    );
    otherwise_sound(&report);
    let r = report
        .get("concurrency.symmetric-key-hot-path")
        .expect("ran");
    // Its buffer is per instance: an instance per thread is fine, the shared one is not.
    for part in [
        "4 threads sharing one instance",
        "instead of the HMAC-SHA256 of `hsm-conformance shared thread ",
        "which is the answer to thread ",
        "declared concurrent but results are mixed between threads; lock shared buffers or \
         declare HSM_THREADING_SERIALIZED",
    ] {
        assert!(r.message.contains(part), "{part}: {}", r.message);
    }
    assert!(
        r.message.contains("thread ") && r.message.contains(" call "),
        "{}",
        r.message
    );
    // The existing identity check reads from threads only, and passes: the race is in sign.
    assert_eq!(
        report.get("concurrency.shared-instance").map(|r| r.status),
        Some(Status::Pass)
    );
}

#[test]
fn last_error_shared_between_threads_is_caught() {
    let report = full_run("conf_shared_last_error");
    assert_exactly(
        &report,
        Status::Fail,
        &["concurrency.last-error-per-thread"],
    );
    otherwise_sound(&report);
    let r = report
        .get("concurrency.last-error-per-thread")
        .expect("ran");
    for part in [
        "each thread to read back its own failure's message from last_error",
        "last_error gave `",
        "another thread's failure",
        "last_error is shared between instances and threads",
    ] {
        assert!(r.message.contains(part), "{part}: {}", r.message);
    }
    // Its sign is right from any number of threads.
    assert_eq!(
        report
            .get("concurrency.symmetric-key-hot-path")
            .map(|r| r.status),
        Some(Status::Pass)
    );
}

#[test]
fn the_races_are_caught_on_every_run() {
    for (stem, check) in [
        ("conf_racy_concurrent", "concurrency.symmetric-key-hot-path"),
        (
            "conf_shared_last_error",
            "concurrency.last-error-per-thread",
        ),
    ] {
        let o = concurrency_only(options(&fixture(stem), &[]));
        for run in 0..REPEATS {
            let report = run_report(&o);
            let failed = failures(&report);
            assert_eq!(
                failed,
                [(check.to_string(), Status::Fail)].into_iter().collect(),
                "{stem}, run {run}:\n{}",
                describe(&report)
            );
        }
    }
}

#[test]
fn sound_plugins_are_never_flagged() {
    let plugins = [
        (bundled("symmetric"), vec![("registration_id", "dev-1")]),
        (bundled("c_example"), vec![("registration_id", "c-device")]),
        (bundled("dice"), vec![]),
        (bundled("tpm_sim"), vec![]),
        (bundled("rust_x509"), vec![]),
        (fixture("conf_unstable_ek"), vec![]),
    ];
    for (plugin, config) in &plugins {
        let o = concurrency_only(options(plugin, config));
        for run in 0..REPEATS {
            let report = run_report(&o);
            assert_exactly(&report, Status::Fail, &[]);
            let passed: Vec<&str> = report
                .results
                .iter()
                .filter(|r| r.status == Status::Pass)
                .map(|r| r.id)
                .collect();
            assert!(
                passed.contains(&"concurrency.last-error-per-thread")
                    && passed.iter().any(|id| id.ends_with("-hot-path")),
                "{}, run {run}: {passed:?}\n{}",
                plugin.display(),
                report.summary()
            );
        }
    }
}
