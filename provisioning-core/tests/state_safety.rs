//! Security review issue 12: the state folder and the provisioning record, attacked by an
//! unprivileged local user, and secrets kept out of core dumps of `hsmkit`.
//!
//! Tests that chown a folder to another user or run hsmkit as another user need root; run as
//! anyone else they fail saying so instead of passing without checking anything.

mod support;

use hsm_test_support::attacker::{dead_pid, require_root, set_mode, victim, ATTACKER};
use provisioning_core::provisioning::{self, ProvisioningRecord};
use provisioning_core::state_dir::prepare_state_dir;
use std::io::Read;
use std::os::unix::fs::{chown, MetadataExt};
use std::time::{Duration, Instant};
use support::*;

fn record() -> ProvisioningRecord {
    serde_json::from_value(serde_json::json!({
        "version": provisioning::RECORD_VERSION,
        "endpoint": "global.azure-devices-provisioning.net",
        "idScope": "0ne00000001",
        "plugin": "dice",
        "registrationId": "device-1",
        "assignedHub": "hub.azure-devices.net",
        "deviceId": "device-1",
        "status": "assigned",
        "attestation": "x509",
        "operationId": "op",
        "provisionedAtUnix": 1
    }))
    .expect("a record")
}

#[test]
fn provision_force_into_a_state_folder_owned_by_another_user_is_refused() {
    let root = tempfile::tempdir().expect("temp dir");
    require_root();
    let victim = victim(root.path());
    let state = root.path().join("state");
    std::fs::create_dir(&state).expect("mkdir");
    set_mode(&state, 0o700);
    // The attack of the review: a symlink at every temp name the record writer could pick.
    let me = std::process::id();
    for pid in me.saturating_sub(300)..me + 300 {
        for name in [
            format!(".provisioning.json.{pid}.tmp"),
            format!(".hsmkit-tmp.{pid}.provisioning.json"),
        ] {
            std::os::unix::fs::symlink(&victim, state.join(name)).expect("plant a symlink");
        }
    }
    chown(&state, Some(ATTACKER), Some(ATTACKER)).expect("chown to the attacker");

    let saved = provisioning::save(&state, &record());
    assert_eq!(
        std::fs::read(&victim).expect("read the victim"),
        b"root's file",
        "a planted symlink made the record land in another file"
    );
    assert_eq!(
        std::fs::metadata(&victim).expect("stat").mode() & 0o7777,
        0o644
    );
    let message = saved
        .expect_err("a state folder owned by another user must be refused")
        .to_string();
    assert!(
        message.contains(&state.display().to_string())
            && message.contains(&format!("uid {ATTACKER}"))
            && message.contains("chown"),
        "the error names the folder, its owner and the fix: {message}"
    );

    let prepared = prepare_state_dir(&state).expect_err("preparing it is refused too");
    assert!(prepared.to_string().contains("chown"), "{prepared}");
}

#[test]
fn a_group_writable_state_folder_is_refused_with_the_fix() {
    let root = tempfile::tempdir().expect("temp dir");
    let state = root.path().join("state");
    std::fs::create_dir(&state).expect("mkdir");
    set_mode(&state, 0o770);
    let message = prepare_state_dir(&state)
        .expect_err("group-writable")
        .to_string();
    assert!(message.contains("chmod 700"), "{message}");
    let saved = provisioning::save(&state, &record()).expect_err("saving there is refused");
    assert!(saved.to_string().contains("chmod 700"), "{saved}");
}

#[test]
fn a_symlinked_record_is_refused() {
    let root = tempfile::tempdir().expect("temp dir");
    let state = root.path().join("state");
    prepare_state_dir(&state).expect("prepare");
    let elsewhere = root.path().join("elsewhere.json");
    std::fs::write(
        &elsewhere,
        serde_json::to_vec(&record()).expect("serialize"),
    )
    .expect("write");
    set_mode(&elsewhere, 0o600);
    std::os::unix::fs::symlink(&elsewhere, provisioning::record_path(&state)).expect("symlink");
    let message = provisioning::load(&state)
        .expect_err("a symlinked record is refused")
        .to_string();
    assert!(message.contains("symbolic link"), "{message}");
}

#[test]
fn preparing_the_state_folder_removes_only_dead_writers_temp_files() {
    let root = tempfile::tempdir().expect("temp dir");
    let state = root.path().join("state");
    prepare_state_dir(&state).expect("prepare");
    let dead = state.join(format!(".hsmkit-tmp.{}.AbCdEf", dead_pid()));
    let live = state.join(format!(".hsmkit-tmp.{}.GhIjKl", std::process::id()));
    for f in [&dead, &live] {
        std::fs::write(f, b"{\"half\": ").expect("write");
        set_mode(f, 0o600);
    }
    prepare_state_dir(&state).expect("prepare again, as the next run does");
    assert!(!dead.exists(), "a killed run's temp file is removed");
    assert!(live.exists(), "a running writer's temp file is left alone");
    provisioning::save(&state, &record()).expect("save");
    assert_eq!(provisioning::load(&state).expect("load"), Some(record()));
    let mut names: Vec<String> = std::fs::read_dir(&state)
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            live.file_name().unwrap().to_string_lossy().into_owned(),
            "provisioning.json".into()
        ]
    );
    assert_eq!(
        std::fs::metadata(provisioning::record_path(&state))
            .expect("stat")
            .mode()
            & 0o777,
        0o600
    );
}

/// `hsmkit` run as an ordinary user (uid 65534) still loads its plugin, and while it runs its
/// `/proc/<pid>/environ` belongs to root: the kernel's sign that the process is not dumpable
/// (no core file, no ptrace or `/proc/<pid>/mem` for the user's other processes).
#[test]
fn hsmkit_run_by_an_ordinary_user_loads_its_plugin_and_is_not_dumpable() {
    let work = tempfile::tempdir_in(profile_dir()).expect("temp dir beside the build");
    require_root();
    set_mode(work.path(), 0o755);
    let plugins = work.path().join("plugins");
    std::fs::create_dir(&plugins).expect("mkdir");
    set_mode(&plugins, 0o755);
    let plugin = bundled_plugin("dice");
    let copy = plugins.join(plugin.file_name().expect("file name"));
    std::fs::copy(&plugin, &copy).expect("copy the plugin");
    set_mode(&copy, 0o755);
    let state = work.path().join("state");
    std::fs::create_dir(&state).expect("mkdir");
    set_mode(&state, 0o700);
    chown(&state, Some(ATTACKER), Some(ATTACKER)).expect("chown the state folder");

    // A DPS endpoint that accepts the connection and never answers: hsmkit waits there, after
    // it loaded the plugin and created the instance.
    let dps = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
    let endpoint = dps.local_addr().expect("address").to_string();
    let mut child = std::process::Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--",
            env!("CARGO_BIN_EXE_hsmkit"),
        ])
        .arg("--plugin-dir")
        .arg(&plugins)
        .arg("--state-dir")
        .arg(&state)
        .args([
            "provision",
            "--plugin",
            "dice",
            "--id-scope",
            "0ne00000001",
            "--endpoint",
            &endpoint,
        ])
        .env_remove("HSMKIT_CONFIG")
        .env_remove("HSMKIT_PLUGIN_DIR")
        .env_remove("HSMKIT_STATE_DIR")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run setpriv (util-linux) and hsmkit");
    let pid = child.id();

    dps.set_nonblocking(true).expect("nonblocking");
    let deadline = Instant::now() + Duration::from_secs(60);
    let connection = loop {
        if let Ok((connection, _)) = dps.accept() {
            break connection;
        }
        if let Some(status) = child.try_wait().expect("poll hsmkit") {
            let mut stderr = String::new();
            if let Some(mut pipe) = child.stderr.take() {
                let _ = pipe.read_to_string(&mut stderr);
            }
            panic!("hsmkit run as uid {ATTACKER} exited ({status}) before reaching DPS: {stderr}");
        }
        assert!(
            Instant::now() < deadline,
            "hsmkit did not reach DPS in 60 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    };

    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    // The kernel gives a non-dumpable process's private /proc files to root (the /proc/<pid>
    // folder itself keeps the process's uid).
    let proc_owner = std::fs::metadata(format!("/proc/{pid}/environ")).map(|m| m.uid());
    let _ = child.kill();
    let _ = child.wait();
    drop(connection);

    assert!(
        status
            .lines()
            .any(|l| l.starts_with("Uid:") && l.contains(&ATTACKER.to_string())),
        "hsmkit runs as uid {ATTACKER}: {status}"
    );
    assert_eq!(
        proc_owner.expect("stat /proc/<pid>/environ"),
        0,
        "/proc/{pid}/environ of a dumpable process belongs to its user; hsmkit must not be dumpable"
    );
}
