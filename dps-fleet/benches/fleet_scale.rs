//! Fleet scale: 1k, 2k, 5k and 10k devices of the 40/30/30 mix (symmetric group, X.509 DICE
//! group, TPM on tpm-sim) against the in-process emulator, each size in a process of its own
//! (so that its peak RSS is its own). Prints, per size: manufacturing (its own figure, before
//! the clock; cached in `target/fleet-bench-cache`), enrollment, provisioning wall time,
//! registrations/s, p99 per attestation, peak RSS, lost/duplicated; then the ratios between
//! consecutive sizes (wall time and memory growth against N growth: 1.0 is linear).
//!
//! Run: `cargo bench -p dps-fleet --bench fleet_scale` (after `cargo build --release` of the
//! plugins: `cargo build --release -p hsmkit-plugin-symmetric -p hsmkit-plugin-dice -p
//! hsmkit-plugin-tpm-sim`). Env: FLEET_BENCH_SIZES (comma list, default 1000,2000,5000,10000),
//! FLEET_BENCH_CONCURRENCY (default 128), FLEET_BENCH_CACHE (the manufacture cache folder).

use dps_fleet::{DeviceKind, FleetOptions, Mix, ProgressMode, Report};
use hsm_test_support::{bundled_plugin, plugin_dir_with, profile_dir};
use std::path::PathBuf;
use std::process::Command;

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

/// One size, in this (child) process: prints the report as one JSON line.
fn child(n: usize) {
    let concurrency: usize = env_or("FLEET_BENCH_CONCURRENCY", "128")
        .parse()
        .expect("FLEET_BENCH_CONCURRENCY is a number");
    let cache = PathBuf::from(env_or(
        "FLEET_BENCH_CACHE",
        &profile_dir()
            .parent()
            .expect("target/")
            .join("fleet-bench-cache")
            .display()
            .to_string(),
    ));
    let plugins = plugin_dir_with(&[
        &bundled_plugin("symmetric"),
        &bundled_plugin("dice"),
        &bundled_plugin("tpm_sim"),
    ]);
    let mut opts = FleetOptions::new(n, Mix::bench(), plugins.path());
    opts.concurrency = concurrency;
    opts.manufacture_cache = Some(cache);
    opts.progress = ProgressMode::Lines;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (report, outcomes) = rt.block_on(dps_fleet::run(opts)).expect("fleet run");
    if let Ok(dir) = std::env::var("FLEET_BENCH_OUT") {
        let dir = PathBuf::from(dir).join(n.to_string());
        dps_fleet::write_outputs(&dir, &report, &outcomes).expect("outputs");
        eprintln!("wrote {}", dir.display());
    }
    eprint!("{}", report.table());
    println!("{}", serde_json::to_string(&report).expect("JSON"));
}

fn p99(r: &Report, k: DeviceKind) -> f64 {
    r.per_attestation
        .iter()
        .find(|x| x.kind == k)
        .map(|x| x.latency_ms.p99)
        .unwrap_or(f64::NAN)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--fleet-child") {
        let n = args
            .get(i + 1)
            .and_then(|v| v.parse().ok())
            .expect("--fleet-child N");
        child(n);
        return;
    }
    let sizes: Vec<usize> = env_or("FLEET_BENCH_SIZES", "1000,2000,5000,10000")
        .split(',')
        .map(|s| s.trim().parse().expect("FLEET_BENCH_SIZES: numbers"))
        .collect();
    let exe = std::env::current_exe().expect("bench path");
    let mut rows: Vec<Report> = Vec::new();
    for n in &sizes {
        eprintln!("--- {n} devices ---");
        let out = Command::new(&exe)
            .arg("--fleet-child")
            .arg(n.to_string())
            .stderr(std::process::Stdio::inherit())
            .output()
            .expect("run the size in its own process");
        assert!(out.status.success(), "the {n}-device run failed");
        let line = String::from_utf8_lossy(&out.stdout);
        let report: Report = serde_json::from_str(line.trim().lines().last().unwrap_or(""))
            .expect("the child's JSON report");
        rows.push(report);
    }
    println!();
    println!(
        "fleet_scale: mix symmetric-group 40% / dice-group 30% / tpm 30%, in-process emulator, concurrency {}",
        rows.first().map(|r| r.concurrency).unwrap_or(0)
    );
    println!(
        "{:>6} {:>9} {:>8} {:>8} {:>8} {:>9} {:>10} {:>10} {:>10} {:>9} {:>5} {:>5} {:>6}",
        "N",
        "manuf s",
        "made",
        "enroll s",
        "wall s",
        "regs/s",
        "p99 symg",
        "p99 dice",
        "p99 tpm",
        "RSS MiB",
        "lost",
        "dup",
        "failed"
    );
    for r in &rows {
        println!(
            "{:>6} {:>9.1} {:>8} {:>8.2} {:>8.2} {:>9.1} {:>10.1} {:>10.1} {:>10.1} {:>9.1} {:>5} {:>5} {:>6}",
            r.devices,
            r.manufacture.seconds,
            r.manufacture.made,
            r.enrollment_seconds,
            r.wall_seconds,
            r.registrations_per_second,
            p99(r, DeviceKind::SymmetricGroup),
            p99(r, DeviceKind::DiceGroup),
            p99(r, DeviceKind::Tpm),
            r.peak_rss_kib.unwrap_or(0) as f64 / 1024.0,
            r.cross_check.lost,
            r.cross_check.duplicated,
            r.failed,
        );
    }
    println!();
    println!("growth between sizes (exponent: log(ratio)/log(N ratio); 1.0 = linear)");
    for w in rows.windows(2) {
        let (a, b) = (&w[0], &w[1]);
        let nr = b.devices as f64 / a.devices as f64;
        let wr = b.wall_seconds / a.wall_seconds;
        let mr = b.peak_rss_kib.unwrap_or(1) as f64 / a.peak_rss_kib.unwrap_or(1) as f64;
        println!(
            "{:>6} -> {:>6}: N x{:.2}, wall x{:.2} (exponent {:.2}), per-device wall {:.2} -> {:.2} ms, peak RSS x{:.2}, regs/s x{:.2}",
            a.devices,
            b.devices,
            nr,
            wr,
            wr.ln() / nr.ln(),
            a.wall_seconds * 1e3 / a.devices as f64,
            b.wall_seconds * 1e3 / b.devices as f64,
            mr,
            b.registrations_per_second / a.registrations_per_second,
        );
    }
    if let Some(big) = rows.iter().find(|r| r.devices == 10_000) {
        println!(
            "10k target (wall < 60 s, p99 < 1 s, 0 lost, 0 duplicated): wall {:.1} s, worst p99 {:.0} ms, lost {}, duplicated {}",
            big.wall_seconds,
            big.per_attestation.iter().map(|k| k.latency_ms.p99).fold(0.0, f64::max),
            big.cross_check.lost,
            big.cross_check.duplicated
        );
    }
}
