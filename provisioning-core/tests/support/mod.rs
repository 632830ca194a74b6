//! Shared helpers for tests that load the workspace's built plugins.
#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// `target/<profile>`: tests run from `target/<profile>/deps/`.
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent()
        .and_then(Path::parent)
        .expect("tests run from target/<profile>/deps")
        .to_path_buf()
}

/// The built library `lib<stem>.so` of a workspace crate; fails loudly when it was not built.
pub fn built_library(stem: &str) -> PathBuf {
    let path = profile_dir().join(format!("lib{stem}.so"));
    assert!(
        path.is_file(),
        "{} is missing: build the workspace first (`cargo build --workspace`), the README test command does",
        path.display()
    );
    path
}

/// A bundled plugin by crate suffix (`symmetric` -> libhsmkit_plugin_symmetric.so).
pub fn bundled_plugin(suffix: &str) -> PathBuf {
    built_library(&format!("hsmkit_plugin_{suffix}"))
}

/// A private (0700) temporary plugins folder holding copies of `files`.
pub fn plugin_dir_with(files: &[&Path]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    for f in files {
        let dest = dir.path().join(f.file_name().expect("file name"));
        std::fs::copy(f, &dest).expect("copy plugin");
        std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    dir
}
