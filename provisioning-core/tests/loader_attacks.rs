//! The plugin boundary as an unprivileged local attacker tries it: every attack here ran the
//! attacker's code as root before the loader opened each file once and loaded that descriptor.
//!
//! The "evil" library is a shared object whose constructor writes a marker file: if the marker
//! exists, the attacker's code ran in this process. Tests that give files to another user
//! (uid 65534, as an attacker's account) need root and fail, never skip, without it.

mod support;

use hsm_test_support::attacker::{give_away, marker_library, require_root, set_mode as chmod};
use provisioning_core::plugin::{LoadError, LoadedPlugin};
use std::os::unix::fs::{chown, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::*;

fn private_dir() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    chmod(d.path(), 0o700);
    d
}

/// The race as an attacker runs it: each round the victim loads a fresh name (glibc would
/// otherwise hand back the library it already loaded under that name) that `place` made point
/// at the good plugin, while `swap` flips that round's name between the good plugin and the
/// attacker's library in another thread. Bounded in rounds and time; stops at the marker.
fn race(
    place: impl Fn(usize) -> PathBuf,
    swap: impl Fn(usize, bool) + Send + 'static,
    marker: &Path,
) -> (usize, usize) {
    let stop = Arc::new(AtomicBool::new(false));
    let round = Arc::new(AtomicUsize::new(usize::MAX));
    let attacker = {
        let (stop, round) = (stop.clone(), round.clone());
        std::thread::spawn(move || {
            let mut evil = true;
            while !stop.load(Ordering::Relaxed) {
                let r = round.load(Ordering::Acquire);
                if r != usize::MAX {
                    swap(r, evil);
                    evil = !evil;
                }
            }
        })
    };
    let started = Instant::now();
    let (mut loaded, mut refused) = (0, 0);
    // At least 2000 rounds; on a busy machine the attacker thread may not get a turn in them,
    // so go on (up to 20000 rounds or 20 s) until both files were met.
    for r in 0..20_000 {
        let both_met = loaded > 0 && refused > 0;
        if marker.exists() || (r >= 2000 && both_met) || started.elapsed() > Duration::from_secs(20)
        {
            break;
        }
        let path = place(r);
        round.store(r, Ordering::Release);
        // Lets the attacker run between the placement and the load even on a busy core.
        std::thread::yield_now();
        match LoadedPlugin::load(&path) {
            Ok(_) => loaded += 1,
            Err(_) => refused += 1,
        }
        round.store(usize::MAX, Ordering::Release);
    }
    stop.store(true, Ordering::Relaxed);
    attacker.join().unwrap();
    (loaded, refused)
}

/// Points `name` at `target` with a fresh symlink, atomically.
fn relink(target: &Path, name: &Path) {
    let tmp = name.with_extension("swap");
    let _ = std::fs::remove_file(&tmp);
    if symlink(target, &tmp).is_ok() {
        let _ = std::fs::rename(&tmp, name);
    }
}

/// Makes `name` a hard link of `source`, atomically.
fn rehardlink(source: &Path, name: &Path) {
    let tmp = name.with_extension("swap");
    let _ = std::fs::remove_file(&tmp);
    if std::fs::hard_link(source, &tmp).is_ok() {
        let _ = std::fs::rename(&tmp, name);
    }
}

#[test]
fn a_symlink_swapped_between_check_and_load_never_runs_the_attackers_code() {
    require_root();
    let root = private_dir();
    chmod(root.path(), 0o755);
    let marker = root.path().join("marker-symlink");
    // The good plugin sits in a trusted folder; the attacker's library in the attacker's own.
    let good_dir = root.path().join("good");
    std::fs::create_dir(&good_dir).unwrap();
    let good = good_dir.join("libhsmkit_plugin_symmetric.so");
    std::fs::copy(bundled_plugin("symmetric"), &good).unwrap();
    let attacker_dir = root.path().join("attacker");
    std::fs::create_dir(&attacker_dir).unwrap();
    let evil = marker_library(&attacker_dir, "evil_link", &marker);
    give_away(&evil);
    give_away(&attacker_dir);
    // The plugins folder is writable by the attacker (0777, no sticky bit).
    let plugins = root.path().join("plugins");
    std::fs::create_dir(&plugins).unwrap();
    chmod(&plugins, 0o777);
    let name = |r: usize| plugins.join(format!("libhsmkit_plugin_{r}.so"));
    let (plugins2, good2, evil2) = (plugins.clone(), good.clone(), evil.clone());
    let (loaded, refused) = race(
        |r| {
            relink(&good, &name(r));
            name(r)
        },
        move |r, evil| {
            let target = if evil { &evil2 } else { &good2 };
            relink(target, &plugins2.join(format!("libhsmkit_plugin_{r}.so")));
        },
        &marker,
    );
    assert!(
        !marker.exists(),
        "the attacker's library ran (after {loaded} loads, {refused} refusals)"
    );
    assert_eq!(
        loaded, 0,
        "a plugin behind a link in a folder others can write loaded"
    );
    let e = LoadedPlugin::load(&name(0)).unwrap_err();
    assert!(matches!(e, LoadError::InsecurePermissions { .. }), "{e}");
    assert!(
        e.to_string()
            .contains(&format!("its folder {}", plugins.display())),
        "{e}"
    );
}

#[test]
fn a_file_swapped_between_check_and_load_never_runs_the_attackers_code() {
    require_root();
    let root = private_dir();
    chmod(root.path(), 0o755);
    let marker = root.path().join("marker-file");
    let plugins = root.path().join("plugins");
    std::fs::create_dir(&plugins).unwrap();
    chmod(&plugins, 0o755);
    // Two inodes in the plugins folder, linked in turn to the name the loader opens: the good
    // plugin (ours) and the attacker's library (another user's file).
    let good = plugins.join(".good");
    std::fs::copy(bundled_plugin("symmetric"), &good).unwrap();
    let build = private_dir();
    let evil_built = marker_library(build.path(), "evil_file", &marker);
    let evil = plugins.join(".evil");
    std::fs::copy(&evil_built, &evil).unwrap();
    chmod(&evil, 0o644);
    give_away(&evil);
    let name = |r: usize| plugins.join(format!("libhsmkit_plugin_{r}.so"));
    let (plugins2, good2, evil2) = (plugins.clone(), good.clone(), evil.clone());
    let (loaded, refused) = race(
        |r| {
            rehardlink(&good, &name(r));
            name(r)
        },
        move |r, evil| {
            let source = if evil { &evil2 } else { &good2 };
            rehardlink(source, &plugins2.join(format!("libhsmkit_plugin_{r}.so")));
        },
        &marker,
    );
    assert!(
        !marker.exists(),
        "the attacker's library ran (after {loaded} loads, {refused} refusals)"
    );
    assert!(
        loaded > 0 && refused > 0,
        "the race did not exercise both files ({loaded} loads, {refused} refusals)"
    );
}

#[test]
fn folders_owned_by_another_user_are_refused_all_the_way_up() {
    require_root();
    let root = private_dir();
    chmod(root.path(), 0o755);
    let theirs = root.path().join("theirs");
    let plugins = theirs.join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    let f = plugins.join("libhsmkit_plugin_symmetric.so");
    std::fs::copy(bundled_plugin("symmetric"), &f).unwrap();
    chmod(&f, 0o755);
    // The plugins folder itself belongs to the attacker.
    give_away(&plugins);
    let e = LoadedPlugin::load(&f).unwrap_err();
    assert!(matches!(e, LoadError::InsecurePermissions { .. }), "{e}");
    assert!(e.to_string().contains("owned by uid 65534"), "{e}");
    // A grandparent belongs to the attacker: they could rename the plugins folder away.
    chown(&plugins, Some(0), Some(0)).unwrap();
    LoadedPlugin::load(&f).unwrap();
    give_away(&theirs);
    let e = LoadedPlugin::load(&f).unwrap_err();
    assert!(
        e.to_string()
            .contains(&format!("the folder {} above it", theirs.display())),
        "{e}"
    );
}

#[test]
fn a_world_writable_ancestor_is_refused() {
    let root = private_dir();
    let open = root.path().join("open");
    let plugins = open.join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    let f = plugins.join("libhsmkit_plugin_symmetric.so");
    std::fs::copy(bundled_plugin("symmetric"), &f).unwrap();
    chmod(&f, 0o755);
    chmod(&plugins, 0o755);
    chmod(&open, 0o777);
    let e = LoadedPlugin::load(&f).unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains(&format!("the folder {} above it", open.display())),
        "{text}"
    );
    assert!(text.contains("chmod go-w"), "{text}");
    // The sticky bit (as on /tmp) makes it safe: nobody can rename our entries away.
    chmod(&open, 0o1777);
    LoadedPlugin::load(&f).unwrap();
}

#[test]
fn a_bare_library_name_is_never_searched_for_on_the_library_path() {
    require_root();
    let root = private_dir();
    chmod(root.path(), 0o755);
    let marker = root.path().join("marker-bare");
    // The attacker's library under the plugin's file name, on LD_LIBRARY_PATH, 0666 and theirs.
    let lib_dir = root.path().join("ldpath");
    std::fs::create_dir(&lib_dir).unwrap();
    let built = marker_library(&lib_dir, "build_evil", &marker);
    let evil = lib_dir.join("libhsmkit_plugin_symmetric.so");
    std::fs::rename(&built, &evil).unwrap();
    chmod(&evil, 0o666);
    give_away(&evil);
    // The working folder has the real plugin under that name.
    let cwd = root.path().join("cwd");
    std::fs::create_dir(&cwd).unwrap();
    std::fs::copy(
        bundled_plugin("symmetric"),
        cwd.join("libhsmkit_plugin_symmetric.so"),
    )
    .unwrap();
    let run = |dir: &Path| {
        Command::new(env!("CARGO_BIN_EXE_hsmkit"))
            .args(["plugins", "info", "libhsmkit_plugin_symmetric.so", "--json"])
            .current_dir(dir)
            .env("LD_LIBRARY_PATH", &lib_dir)
            .env_remove("HSMKIT_CONFIG")
            .env_remove("HSMKIT_PLUGIN_DIR")
            .output()
            .unwrap()
    };
    let out = run(&cwd);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!marker.exists(), "the library-path copy was loaded");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("\"symmetric\""), "{stdout}");
    // With no such file in the working folder, the name is refused, not looked up.
    let empty = root.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let out = run(&empty);
    // With --json the failure is the error object on stdout.
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert!(!marker.exists(), "the library-path copy was loaded");
    assert!(
        stdout.contains("./libhsmkit_plugin_symmetric.so") && stdout.contains("No such file"),
        "{stdout}"
    );
}

#[test]
fn a_config_file_others_can_write_is_refused() {
    require_root();
    let root = private_dir();
    chmod(root.path(), 0o755);
    let plugins = plugin_dir_with(&[&bundled_plugin("symmetric")]);
    let conf = root.path().join("hsmkit.toml");
    std::fs::write(
        &conf,
        format!("plugin_dir = \"{}\"\n", plugins.path().display()),
    )
    .unwrap();
    let run = || {
        run_hsmkit(&[
            "--config",
            conf.to_str().unwrap(),
            "plugins",
            "info",
            "symmetric",
        ])
    };
    let (ok, _, stderr) = run();
    assert!(ok, "{stderr}");
    chmod(&conf, 0o666);
    give_away(&conf);
    let (ok, _, stderr) = run();
    assert!(!ok);
    assert!(stderr.contains("cannot use the config file"), "{stderr}");
    assert!(stderr.contains("owned by uid 65534"), "{stderr}");
    // Ours again but world-writable: still refused.
    chown(&conf, Some(0), Some(0)).unwrap();
    let (ok, _, stderr) = run();
    assert!(!ok);
    assert!(stderr.contains("writable by group and others"), "{stderr}");
    // Its folder writable by others: refused.
    chmod(&conf, 0o644);
    chmod(root.path(), 0o777);
    let (ok, _, stderr) = run();
    assert!(!ok);
    assert!(stderr.contains("its folder"), "{stderr}");
}

#[test]
fn a_trust_ca_file_others_can_write_is_refused() {
    let root = private_dir();
    let ca = root.path().join("ca.pem");
    std::fs::write(
        &ca,
        "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    chmod(&ca, 0o666);
    let plugins = plugin_dir_with(&[&bundled_plugin("symmetric")]);
    let state = private_dir();
    let (ok, _, stderr) = run_hsmkit(&[
        "--plugin-dir",
        plugins.path().to_str().unwrap(),
        "--state-dir",
        state.path().to_str().unwrap(),
        "provision",
        "--plugin",
        "symmetric",
        "--id-scope",
        "0ne00000001",
        "--endpoint",
        "127.0.0.1:9",
        "--trust-ca",
        ca.to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(
        stderr.contains("cannot use the CA certificate file (--trust-ca)")
            && stderr.contains("writable by group and others"),
        "{stderr}"
    );
}
