//! The TSS library's own logging. tpm2-tss prints `ERROR:tcti:...` and `WARNING:esys:...`
//! lines straight to stderr, at the level its `TSS2_LOG` variable gives (default: errors and
//! warnings), read once per library module at its first message. When this plugin cannot
//! reach the TPM it already returns an error saying which TCTI failed and what to check, which
//! the host shows; the library's lines beside it only repeat it in another form (and a probe
//! that finds a missing object is not an error at all). So, unless the user set `TSS2_LOG`
//! (for example `TSS2_LOG=all+ERROR` or `tcti+TRACE` to debug a TCTI), it is set to
//! `all+NONE` before the first TSS call of the process.

use std::sync::Once;

/// The level set when the user set none: nothing from any module.
pub(crate) const QUIET: &str = "all+NONE";

/// Sets `TSS2_LOG` to [`QUIET`] unless it is already set; once per process, before the first
/// TCTI or ESYS context is made (the library reads it lazily, at its first message).
pub(crate) fn quiet_unless_asked() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("TSS2_LOG").is_none() {
            // The library reads the variable with getenv() on its first message; setting it
            // here, before any TSS call of this plugin, is the only switch it offers. glibc's
            // setenv keeps old environment arrays alive, so a concurrent getenv elsewhere
            // reads either value, never freed memory.
            std::env::set_var("TSS2_LOG", QUIET);
        }
    });
}
