//! Cost of the plugin ABI: one HMAC-SHA256 over 32 bytes through the loaded plugin against the
//! same `sign` called directly in-process, as a ratio measured in one run; and the time to load
//! one plugin (permission and ELF checks, dlopen, entry, layout check).
//!
//! Run: `cargo bench -p hsmkit-plugin-symmetric --bench abi_call`

use hsm_plugin_sdk::{HsmPlugin, PluginConfig, SymmetricKeyHsm};
use hsmkit_plugin_symmetric::SymmetricKeyPlugin;
use provisioning_core::plugin::{LoadedPlugin, PluginInstance};
use std::hint::black_box;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const ROUNDS: usize = 15;
const CALLS_PER_ROUND: u32 = 20_000;

fn plugin_path() -> PathBuf {
    let exe = std::env::current_exe().expect("bench path");
    let dir = exe
        .parent()
        .and_then(|p| p.parent())
        .expect("target/<profile>/deps");
    // `cargo bench` leaves this crate's cdylib in deps/; a workspace build also copies it up.
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

fn main() {
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
    let (d, a) = (median(d_ns), median(a_ns));
    println!("HMAC-SHA256 over 32 bytes (median of {ROUNDS} rounds x {CALLS_PER_ROUND} calls)");
    println!("  direct in-process call : {d:8.1} ns/call");
    println!("  through the plugin ABI : {a:8.1} ns/call");
    println!(
        "  ratio ABI / direct     : {:8.3}   (target <= 1.05)",
        a / d
    );
    println!("  overhead per call      : {:8.1} ns", a - d);

    // Cold loads: each copy is a distinct file, so dlopen really maps and relocates it.
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let source = plugin_path();
    let mut loads = Vec::new();
    for i in 0..20 {
        let copy = dir.path().join(format!("libhsmkit_plugin_copy{i}.so"));
        std::fs::copy(&source, &copy).expect("copy");
        let start = Instant::now();
        let p = LoadedPlugin::load(&copy).expect("load copy");
        loads.push(start.elapsed());
        black_box(p);
    }
    let ms: Vec<f64> = loads
        .iter()
        .map(|d: &Duration| d.as_secs_f64() * 1e3)
        .collect();
    let worst = ms.iter().cloned().fold(0.0, f64::max);
    println!("Plugin load (checks + dlopen + entry + layout check), 20 cold loads");
    println!(
        "  median {:.3} ms, worst {:.3} ms   (target < 2 ms)",
        median(ms),
        worst
    );
}
