//! Compiles `example_symmetric.c` into a shared library with the system C compiler, the way a
//! C vendor would, and places it next to the other plugins of this build
//! (`target/<profile>/libhsmkit_plugin_c_example.so`).

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets it"));
    let source = manifest.join("example_symmetric.c");
    let include = manifest.join("../../../hsm-api/include");
    println!("cargo:rerun-if-changed={}", source.display());
    println!(
        "cargo:rerun-if-changed={}",
        include.join("hsm_api.h").display()
    );

    let compiler = cc::Build::new().get_compiler();
    let lib = out_dir.join("libhsmkit_plugin_c_example.so");
    let status = Command::new(compiler.path())
        .args([
            "-std=c11", "-Wall", "-Wextra", "-Werror", "-O2", "-fPIC", "-shared",
        ])
        .arg("-fvisibility=hidden")
        .arg("-I")
        .arg(&include)
        .arg(&source)
        .arg("-o")
        .arg(&lib)
        .arg("-lcrypto")
        .status()
        .expect("run the C compiler (install gcc)");
    assert!(
        status.success(),
        "compiling {} failed (is libssl-dev installed?)",
        source.display()
    );

    // OUT_DIR is target/<profile>/build/<pkg>-<hash>/out: the profile folder is three up.
    if let Some(profile_dir) = out_dir.ancestors().nth(3) {
        let dest = profile_dir.join("libhsmkit_plugin_c_example.so");
        let tmp = profile_dir.join(".libhsmkit_plugin_c_example.so.tmp");
        if std::fs::copy(&lib, &tmp).is_ok() {
            let _ = std::fs::rename(&tmp, &dest);
        }
    }
    println!("cargo:rustc-env=HSMKIT_C_EXAMPLE_PLUGIN={}", lib.display());
}
