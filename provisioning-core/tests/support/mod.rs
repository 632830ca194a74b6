//! Shared helpers for tests that load the workspace's built plugins (kept in
//! `hsm-test-support`, which the conformance and pkcs11 tests use too).
#![allow(unused_imports)]

pub use hsm_test_support::{built_library, bundled_plugin, plugin_dir_with, profile_dir};
