//! Creating an SDK plugin instance keeps the host's memory out of core dumps, whatever the
//! host is. Checked in a fresh child process (this test binary run again), because the setting
//! is process-wide and other tests in this process may already have changed it.

use hsm_plugin_sdk::hsm_api::{HsmBuffer, HsmInstance, HSM_OK};
use hsm_plugin_sdk::{HsmError, HsmPlugin, PluginConfig, PluginInfo};

const CHILD_ENV: &str = "HSMKIT_SDK_CORE_DUMP_CHILD";
const TEST_NAME: &str = "creating_an_instance_makes_the_process_non_dumpable";

struct Nothing;

impl HsmPlugin for Nothing {
    const INFO: PluginInfo = PluginInfo {
        name: "nothing",
        version: "0.0.0",
        vendor: "tests",
        description: "holds no secret",
    };

    fn create(_config: &PluginConfig) -> Result<Self, HsmError> {
        Ok(Nothing)
    }
}

fn dumpable() -> i32 {
    // SAFETY: PR_GET_DUMPABLE takes no pointer arguments and only reads a process flag.
    unsafe { libc::prctl(libc::PR_GET_DUMPABLE, 0, 0, 0, 0) }
}

/// In the child: the flag before and after creating one instance through the ABI.
fn child() {
    let before = dumpable();
    let mut instance: *mut HsmInstance = std::ptr::null_mut();
    let mut error = HsmBuffer::EMPTY;
    // SAFETY: no configuration entries (NULL with length 0) and writable output slots, as the
    // ABI contract of `create` asks.
    let status = unsafe {
        hsm_plugin_sdk::ffi::create::<Nothing>(std::ptr::null(), 0, &mut instance, &mut error)
    };
    assert_eq!(status, HSM_OK, "create failed");
    let after = dumpable();
    // SAFETY: `instance` was made by `create::<Nothing>` above and is not used afterwards.
    unsafe { hsm_plugin_sdk::ffi::destroy::<Nothing>(instance) };
    println!("dumpable before={before} after={after}");
}

#[test]
fn creating_an_instance_makes_the_process_non_dumpable() {
    if std::env::var_os(CHILD_ENV).is_some() {
        child();
        return;
    }
    let exe = std::env::current_exe().expect("this test's executable");
    let out = std::process::Command::new(exe)
        .args(["--exact", TEST_NAME, "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, "1")
        .output()
        .expect("run the child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("dumpable before=1 after=0"),
        "a fresh process is dumpable and creating an instance turns that off: {stdout}"
    );
}
