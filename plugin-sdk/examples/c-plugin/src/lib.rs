//! A plugin written in plain C (`example_symmetric.c`) against the generated `hsm_api.h`:
//! proof that a C vendor can implement the ABI without Rust. The build compiles it; this crate
//! only tells tests where the library is.

/// Path of the compiled C plugin.
pub const PLUGIN_PATH: &str = env!("HSMKIT_C_EXAMPLE_PLUGIN");
