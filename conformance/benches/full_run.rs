//! Full-run timing: the whole harness over the bundled tpm-sim and symmetric plugins, with
//! `--jobs 1` (the baseline) and `--jobs 2` (the default), plus the bare cost of one child
//! process, all measured in this run. Needs `cargo build --workspace` first.
//!
//! Run: `cargo bench -p hsm-conformance --bench full_run`

use hsm_conformance::{run, RunOptions};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn profile_dir() -> PathBuf {
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_hsm-conformance"));
    exe.parent().map(Path::to_path_buf).unwrap_or_default()
}

fn plugin(name: &str) -> PathBuf {
    // Benches build in the release profile; fall back to the debug build of the plugins.
    for profile in [profile_dir(), profile_dir().join("../debug")] {
        let p = profile.join(format!("libhsmkit_plugin_{name}.so"));
        if p.is_file() {
            return p;
        }
    }
    panic!("libhsmkit_plugin_{name}.so not found: run `cargo build --workspace` first");
}

fn full_run(plugin: &Path, config: &[(&str, &str)], jobs: usize) -> (Duration, usize) {
    let options = RunOptions {
        plugin: plugin.to_path_buf(),
        config: config
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        only: vec![],
        skip: vec![],
        jobs,
        timeout: Duration::from_secs(30),
        exe: PathBuf::from(env!("CARGO_BIN_EXE_hsm-conformance")),
    };
    let started = Instant::now();
    let report = run(&options, &|_| {}).unwrap_or_else(|e| panic!("run failed: {e}"));
    assert!(report.success(), "{}", report.summary());
    let ran = report
        .results
        .iter()
        .filter(|r| !r.duration.is_zero())
        .count();
    (started.elapsed(), ran)
}

fn main() {
    let exe = env!("CARGO_BIN_EXE_hsm-conformance");
    let spawn = {
        let n = 20;
        let t = Instant::now();
        for _ in 0..n {
            let ok = Command::new(exe)
                .arg("--list")
                .output()
                .map(|o| o.status.success());
            assert!(matches!(ok, Ok(true)), "cannot run {exe}");
        }
        t.elapsed() / n
    };
    println!(
        "one child process (hsm-conformance --list): {:.2} ms",
        spawn.as_secs_f64() * 1e3
    );
    for (name, config) in [
        ("tpm_sim", vec![]),
        ("symmetric", vec![("registration_id", "bench-device")]),
    ] {
        let p = plugin(name);
        let (base, ran) = full_run(&p, &config, 1);
        let (two, _) = full_run(&p, &config, 2);
        println!(
            "{name}: {ran} checks run; --jobs 1 {:.2} s (baseline), --jobs 2 {:.2} s, speed-up x{:.2}; isolation overhead {:.0}% of the baseline",
            base.as_secs_f64(),
            two.as_secs_f64(),
            base.as_secs_f64() / two.as_secs_f64(),
            100.0 * spawn.as_secs_f64() * ran as f64 / base.as_secs_f64()
        );
    }
}
