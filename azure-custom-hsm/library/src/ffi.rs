//! The C boundary: panics caught, failures logged, outputs `malloc`ed for the SDK's `free`.

use crate::error::{chain, AdapterError};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Runs `f` for the C function `name`: its value, or `fail` when it returned an error (logged
/// with its reason) or panicked (logged; the panic never crosses into C).
pub(crate) fn boundary<T>(
    name: &'static str,
    fail: T,
    f: impl FnOnce() -> Result<T, AdapterError>,
) -> T {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => {
            tracing::error!("hsmkit_azure_hsm: {name} failed: {}", chain(&e));
            fail
        }
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "(no message)".into());
            tracing::error!("hsmkit_azure_hsm: {name} failed: internal error (panic: {what})");
            fail
        }
    }
}

/// A `malloc`ed copy of `bytes` (at least one byte is allocated, so an empty output is not
/// NULL), for the caller to `free`.
pub(crate) fn malloc_bytes(bytes: &[u8]) -> Result<*mut u8, AdapterError> {
    // SAFETY: malloc has no preconditions; the result is checked for NULL.
    let p = unsafe { libc::malloc(bytes.len().max(1)) }.cast::<u8>();
    if p.is_null() {
        return Err(AdapterError::OutOfMemory);
    }
    // SAFETY: `p` has room for `bytes.len()` bytes and cannot overlap a Rust borrow.
    unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), p, bytes.len()) };
    Ok(p)
}

/// A `malloc`ed NUL-terminated copy of `text`, for the caller to `free`; `what` names it in
/// the error when it holds a NUL byte.
pub(crate) fn malloc_string(
    text: &str,
    what: &'static str,
) -> Result<*mut libc::c_char, AdapterError> {
    if text.as_bytes().contains(&0) {
        return Err(AdapterError::InteriorNul(what));
    }
    // SAFETY: as in malloc_bytes, with one more byte for the terminator.
    let p = unsafe { libc::malloc(text.len() + 1) }.cast::<u8>();
    if p.is_null() {
        return Err(AdapterError::OutOfMemory);
    }
    // SAFETY: `p` has room for the text and its terminator.
    unsafe {
        std::ptr::copy_nonoverlapping(text.as_ptr(), p, text.len());
        *p.add(text.len()) = 0;
    }
    Ok(p.cast())
}

/// The C string `p` as UTF-8, `None` for NULL.
///
/// # Safety
/// `p` is NULL or a NUL-terminated string valid for the call.
pub(crate) unsafe fn c_str<'a>(
    p: *const libc::c_char,
    what: &'static str,
) -> Result<Option<&'a str>, AdapterError> {
    if p.is_null() {
        return Ok(None);
    }
    // SAFETY: the caller's contract.
    let s = unsafe { std::ffi::CStr::from_ptr(p) };
    s.to_str()
        .map(Some)
        .map_err(|_| AdapterError::InvalidArgument(what))
}

/// Logging to stderr for the host process, once: `RUST_LOG` (targets and levels) or warnings.
/// The subscriber belongs to this library's own copy of `tracing`, so the application's
/// logging is not touched.
pub(crate) fn init_logging() {
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let filter = std::env::var("RUST_LOG")
            .ok()
            .and_then(|v| v.parse::<Targets>().ok())
            .unwrap_or_else(|| Targets::new().with_default(LevelFilter::WARN));
        let _ = tracing_subscriber::registry()
            .with(filter)
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_target(false)
                    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                    .without_time(),
            )
            .try_init();
    });
}
