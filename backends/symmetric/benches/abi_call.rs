//! Cost of the plugin ABI: one HMAC-SHA256 over 32 bytes through the loaded plugin against the
//! same `sign` called directly in-process, as a ratio measured in one run; and the time to load
//! one plugin (permission and ELF checks, dlopen, entry, layout check).
//!
//! Run: `cargo build --release -p hsmkit-plugin-symmetric && cargo bench -p hsmkit-backend-symmetric --bench abi_call [-- --runs N]`
//!
//! Each run is a separate process measuring both sides, interleaved, and reporting its own
//! ratio. Code and stack placement differ from process to process (ASLR) and move a 200 ns
//! HMAC by several percent on either side, so one process is one sample: the figure is the
//! median of the per-run ratios, printed with every run's value.

use hsm_plugin_sdk::{HsmPlugin, PluginConfig, SymmetricKeyHsm};
use hsmkit_backend_symmetric::SymmetricKeyPlugin;
use provisioning_core::plugin::{LoadedPlugin, PluginInstance};
use std::hint::black_box;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

const ROUNDS: usize = 15;
const CALLS_PER_ROUND: u32 = 20_000;
const DEFAULT_RUNS: usize = 9;
/// Set in the child processes, which measure once and print one `run` line.
const CHILD_ENV: &str = "HSMKIT_ABI_BENCH_CHILD";
/// `direct` or `abi`: run only that side, `PROFILE_CALLS` times, and print nothing (profiling).
const PROFILE_ENV: &str = "HSMKIT_ABI_BENCH_PROFILE";
const PROFILE_CALLS: u32 = 200_000;

fn plugin_path() -> PathBuf {
    let exe = std::env::current_exe().expect("bench path");
    let dir = exe
        .parent()
        .and_then(|p| p.parent())
        .expect("target/<profile>/deps");
    // The plugin crate's cdylib (hsmkit-plugin-symmetric), in deps/ or copied up by a build.
    [dir.join("deps"), dir.to_path_buf()]
        .into_iter()
        .map(|d| d.join("libhsmkit_plugin_symmetric.so"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "libhsmkit_plugin_symmetric.so missing under {}",
                dir.display()
            )
        })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn time_calls(mut f: impl FnMut(u32)) -> f64 {
    let start = Instant::now();
    for i in 0..CALLS_PER_ROUND {
        f(i);
    }
    start.elapsed().as_nanos() as f64 / CALLS_PER_ROUND as f64
}

/// One run: (direct ns/call, ABI ns/call), each the median of `ROUNDS` interleaved rounds.
fn measure_calls() -> (f64, f64) {
    let key = [0x42u8; 32];
    let state_direct = tempfile::tempdir().expect("temp dir");
    let state_abi = tempfile::tempdir().expect("temp dir");

    let direct = SymmetricKeyPlugin::create(&PluginConfig::from_pairs([(
        "state_dir",
        state_direct.path().display().to_string(),
    )]))
    .expect("direct instance");
    direct.import_key(Some("bench"), &key).expect("import");

    let plugin = LoadedPlugin::load(&plugin_path()).expect("load plugin");
    let instance = PluginInstance::create(
        &plugin,
        &[("state_dir", state_abi.path().display().to_string())],
    )
    .expect("plugin instance");
    let sym = instance.symmetric_key().expect("symmetric interface");
    sym.import_key(Some("bench"), &key).expect("import");

    let mut data = [0u8; 32];
    assert_eq!(
        direct.sign(&data).unwrap(),
        sym.sign(&data).unwrap().to_vec()
    );

    // One side alone in a plain loop, for `perf record` or `valgrind --tool=callgrind`.
    if let Some(side) = std::env::var_os(PROFILE_ENV) {
        for i in 0..PROFILE_CALLS {
            data[..4].copy_from_slice(&i.to_le_bytes());
            if side == "direct" {
                black_box(direct.sign(black_box(&data)).expect("sign"));
            } else {
                black_box(sym.sign(black_box(&data)).expect("sign"));
            }
        }
        std::process::exit(0);
    }

    // Interleave rounds so that machine noise hits both sides alike.
    let (mut d_ns, mut a_ns) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        d_ns.push(time_calls(|i| {
            data[..4].copy_from_slice(&i.to_le_bytes());
            black_box(direct.sign(black_box(&data)).expect("sign"));
        }));
        a_ns.push(time_calls(|i| {
            data[..4].copy_from_slice(&i.to_le_bytes());
            black_box(sym.sign(black_box(&data)).expect("sign"));
        }));
    }
    (median(d_ns), median(a_ns))
}

/// Cold loads in milliseconds: each copy is a distinct file, so dlopen really maps and
/// relocates it.
fn measure_loads() -> Vec<f64> {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let source = plugin_path();
    (0..20)
        .map(|i| {
            let copy = dir.path().join(format!("libhsmkit_plugin_copy{i}.so"));
            std::fs::copy(&source, &copy).expect("copy");
            let start = Instant::now();
            let p = LoadedPlugin::load(&copy).expect("load copy");
            let ms = start.elapsed().as_secs_f64() * 1e3;
            black_box(p);
            ms
        })
        .collect()
}

fn runs_from_args() -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == "--runs")
        .and_then(|i| args.get(i + 1))
        .map(|n| n.parse().expect("--runs takes a number"))
        .unwrap_or(DEFAULT_RUNS)
}

fn main() {
    if std::env::var_os(CHILD_ENV).is_some() || std::env::var_os(PROFILE_ENV).is_some() {
        let (d, a) = measure_calls();
        println!("run {d} {a}");
        return;
    }
    let runs = runs_from_args().max(1);
    let exe = std::env::current_exe().expect("bench path");
    let mut samples = Vec::new();
    for n in 1..=runs {
        let out = Command::new(&exe)
            .env(CHILD_ENV, "1")
            .output()
            .expect("run the measuring child");
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text
            .lines()
            .find_map(|l| l.strip_prefix("run "))
            .unwrap_or_else(|| {
                panic!(
                    "run {n} printed no figures: {}",
                    String::from_utf8_lossy(&out.stderr)
                )
            });
        let mut fields = line.split(' ').map(|f| f.parse::<f64>().expect("figure"));
        let (d, a) = (fields.next().expect("direct"), fields.next().expect("abi"));
        eprintln!(
            "  run {n}/{runs}: direct {d:.1} ns, ABI {a:.1} ns, ratio {:.3}",
            a / d
        );
        samples.push((d, a));
    }
    let ratio = median(samples.iter().map(|(d, a)| a / d).collect());
    let d = median(samples.iter().map(|s| s.0).collect());
    let a = median(samples.iter().map(|s| s.1).collect());
    let (lo, hi) = samples
        .iter()
        .map(|(d, a)| a / d)
        .fold((f64::MAX, 0.0f64), |(lo, hi), r| (lo.min(r), hi.max(r)));
    println!(
        "HMAC-SHA256 over 32 bytes ({runs} runs, each the median of {ROUNDS} interleaved rounds x {CALLS_PER_ROUND} calls)"
    );
    println!("  direct in-process call : {d:8.1} ns/call (median of runs)");
    println!("  through the plugin ABI : {a:8.1} ns/call (median of runs)");
    println!("  ratio ABI / direct     : {ratio:8.3}   (median of per-run ratios; range {lo:.3}-{hi:.3}; target <= 1.05)");
    println!("  overhead per call      : {:8.1} ns", a - d);

    let ms = measure_loads();
    let worst = ms.iter().cloned().fold(0.0, f64::max);
    println!("Plugin load (checks + dlopen + entry + layout check), 20 cold loads");
    println!(
        "  median {:.3} ms, worst {:.3} ms   (target < 2 ms)",
        median(ms),
        worst
    );
}
