//! The attacks of security review issue 12, played by an unprivileged local user against the
//! SDK's secret files (what every software backend writes its keys and UDS through).
//!
//! Tests that chown a folder to another user to play the attacker need root; run as anyone
//! else they fail saying so instead of passing without checking anything.

use hsm_plugin_sdk::secret_file;
use hsm_test_support::attacker::{dead_pid, require_root, set_mode, victim, ATTACKER};
use std::os::unix::fs::{chown, MetadataExt};

#[test]
fn a_state_folder_owned_by_another_user_is_refused_and_planted_symlinks_go_nowhere() {
    let root = tempfile::tempdir().expect("temp dir");
    require_root();
    let victim = victim(root.path());
    let folder = root.path().join("symmetric");
    std::fs::create_dir(&folder).expect("mkdir");
    set_mode(&folder, 0o755);
    // What the attacker does in a folder they own: a symlink at every temp name a writer of
    // `key` could pick, for the pids around ours (the real attack used ~600 of them).
    let me = std::process::id();
    for pid in me.saturating_sub(300)..me + 300 {
        for name in [
            format!(".key.tmp{pid}"),
            format!(".key.{pid}.tmp"),
            format!(".key.new{pid}"),
            format!(".hsmkit-tmp.{pid}.key"),
        ] {
            std::os::unix::fs::symlink(&victim, folder.join(name)).expect("plant a symlink");
        }
    }
    chown(&folder, Some(ATTACKER), Some(ATTACKER)).expect("chown to the attacker");

    let written = secret_file::write(&folder.join("key"), b"a secret key");
    assert_eq!(
        std::fs::read(&victim).expect("read the victim"),
        b"root's file",
        "a planted symlink made the write land in another file"
    );
    assert_eq!(
        std::fs::metadata(&victim).expect("stat").mode() & 0o7777,
        0o644
    );
    let refused = written.expect_err("a folder owned by another user must be refused");
    let message = refused.message().to_string();
    assert!(
        message.contains(&folder.display().to_string())
            && message.contains(&format!("uid {ATTACKER}"))
            && message.contains("chown"),
        "the error names the folder, its owner and the fix: {message}"
    );
    assert!(!folder.join("key").exists(), "nothing was written");

    let read = secret_file::read(&folder.join("key")).expect_err("reading there is refused too");
    assert!(read.message().contains("chown"), "{}", read.message());
}

#[test]
fn a_group_writable_private_subfolder_is_refused() {
    let root = tempfile::tempdir().expect("temp dir");
    let folder = root.path().join("dice");
    std::fs::create_dir(&folder).expect("mkdir");
    set_mode(&folder, 0o770);
    let refused = secret_file::write(&folder.join("uds"), &[7u8; 32])
        .expect_err("a group-writable private folder must be refused");
    let message = refused.message().to_string();
    assert!(
        message.contains(&folder.display().to_string())
            && message.contains("770")
            && message.contains("chmod 700"),
        "the error names the folder, its mode and the fix: {message}"
    );
    assert!(!folder.join("uds").exists());
    let refused = secret_file::create_private_dir(&folder).expect_err("preparing it too");
    assert!(
        refused.message().contains("chmod 700"),
        "{}",
        refused.message()
    );
}

#[test]
fn a_secret_file_that_is_a_symlink_is_refused() {
    let root = tempfile::tempdir().expect("temp dir");
    let elsewhere = root.path().join("elsewhere");
    std::fs::write(&elsewhere, [9u8; 32]).expect("write");
    set_mode(&elsewhere, 0o600);
    let folder = root.path().join("dice");
    secret_file::create_private_dir(&folder).expect("private folder");
    let uds = folder.join("uds");
    std::os::unix::fs::symlink(&elsewhere, &uds).expect("symlink");
    let refused = secret_file::read(&uds).expect_err("a symlinked secret file must be refused");
    assert!(
        refused.message().contains(&uds.display().to_string())
            && refused.message().contains("symbolic link"),
        "{}",
        refused.message()
    );
}

#[test]
fn temp_files_of_a_dead_writer_are_removed_and_a_live_writers_kept() {
    let root = tempfile::tempdir().expect("temp dir");
    let folder = root.path().join("tpm-sim");
    secret_file::create_private_dir(&folder).expect("private folder");
    let dead = folder.join(format!(".hsmkit-tmp.{}.AbCdEf", dead_pid()));
    let live = folder.join(format!(".hsmkit-tmp.{}.GhIjKl", std::process::id()));
    let unrelated = folder.join("state");
    for f in [&dead, &live, &unrelated] {
        std::fs::write(f, b"half a key").expect("write");
        set_mode(f, 0o600);
    }
    secret_file::create_private_dir(&folder).expect("prepare again, as a new run does");
    assert!(!dead.exists(), "a killed writer's temp file is removed");
    assert!(live.exists(), "a running writer's temp file is left alone");
    assert!(unrelated.exists(), "other files are left alone");
}

#[test]
fn writes_leave_no_temp_file_and_replace_symlinks_instead_of_following_them() {
    let root = tempfile::tempdir().expect("temp dir");
    let victim = victim(root.path());
    let folder = root.path().join("symmetric");
    secret_file::create_private_dir(&folder).expect("private folder");
    let key = folder.join("key");
    std::os::unix::fs::symlink(&victim, &key).expect("symlink");
    secret_file::write(&key, b"new key").expect("write");
    assert_eq!(std::fs::read(&victim).expect("read"), b"root's file");
    assert_eq!(&secret_file::read(&key).expect("read back")[..], b"new key");
    let names: Vec<String> = std::fs::read_dir(&folder)
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["key"], "no temp file is left behind");
}
