//! A private folder holding the adapter plugin and a custom-HSM library, and the environment
//! the project's C custom-HSM library reads its configuration from.

#![allow(dead_code, unreachable_pub)]

use hsm_fixture_azure_custom_hsm_c as fixture;
use hsm_test_support::{bundled_plugin, plugin_dir_with, profile_dir};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A device: a private plugins folder (the adapter and the library), a state folder for
/// hsmkit and one for the library.
pub struct Setup {
    /// The plugins folder (0700), holding `libhsmkit_plugin_azure_custom_hsm.so` and the library.
    pub plugins: tempfile::TempDir,
    /// Root of the other folders.
    pub root: tempfile::TempDir,
    /// The library's path inside `plugins`.
    pub library: PathBuf,
}

impl Setup {
    /// `library` (one of the fixture crate's paths) next to the adapter plugin.
    pub fn new(library: &str) -> Setup {
        let adapter = bundled_plugin("azure_custom_hsm");
        let plugins = plugin_dir_with(&[&adapter, Path::new(library)]);
        let name = Path::new(library).file_name().expect("a file name");
        let library = plugins.path().join(name);
        let root = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir(root.path().join("library-state")).expect("library state folder");
        Setup {
            plugins,
            root,
            library,
        }
    }

    /// The good C library.
    pub fn good() -> Setup {
        Setup::new(fixture::CUSTOM_HSM)
    }

    /// The `library=...` setting.
    pub fn library_setting(&self) -> String {
        format!("library={}", self.library.display())
    }

    /// The adapter plugin's path.
    pub fn adapter(&self) -> PathBuf {
        self.plugins
            .path()
            .join("libhsmkit_plugin_azure_custom_hsm.so")
    }

    /// hsmkit's state folder.
    pub fn state(&self) -> PathBuf {
        self.root.path().join("hsmkit-state")
    }

    /// The environment the good library reads (state folder, its TPM, its common name).
    pub fn env(&self, cmd: &mut Command, common_name: &str) {
        cmd.env(fixture::ENV_DIR, self.root.path().join("library-state"))
            .env(fixture::ENV_TPM_PLUGIN, bundled_plugin("tpm_sim"))
            .env(fixture::ENV_CN, common_name)
            .env_remove("HSMKIT_CONFIG")
            .env_remove("HSMKIT_PLUGIN_DIR")
            .env_remove("HSMKIT_STATE_DIR");
    }
}

/// A built workspace executable (`hsmkit`, `hsm-conformance`).
pub fn built_exe(name: &str) -> PathBuf {
    let path = profile_dir().join(name);
    assert!(
        path.is_file(),
        "{} is missing: build the workspace first (`cargo build --workspace --features provisioning-core/demo`), the README test command does",
        path.display()
    );
    path
}

/// Runs `cmd`: (success, stdout, stderr).
pub fn run(cmd: &mut Command) -> (bool, String, String) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
