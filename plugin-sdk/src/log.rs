//! Logging through the host's logger. Never pass a secret, PIN or key to these functions.

use hsm_api::{HsmSlice, HSM_LOG_DEBUG, HSM_LOG_ERROR, HSM_LOG_INFO, HSM_LOG_WARN};
use std::sync::OnceLock;

type LogFn = extern "C" fn(u32, HsmSlice);

static HOST_LOG: OnceLock<LogFn> = OnceLock::new();

pub(crate) fn install(log: Option<LogFn>) {
    if let Some(f) = log {
        let _ = HOST_LOG.set(f);
    }
}

fn emit(level: u32, message: &str) {
    if let Some(f) = HOST_LOG.get() {
        f(level, HsmSlice::from_bytes(message.as_bytes()));
    }
}

/// Logs an error line.
pub fn error(message: &str) {
    emit(HSM_LOG_ERROR, message)
}
/// Logs a warning line.
pub fn warn(message: &str) {
    emit(HSM_LOG_WARN, message)
}
/// Logs an information line.
pub fn info(message: &str) {
    emit(HSM_LOG_INFO, message)
}
/// Logs a debug line.
pub fn debug(message: &str) {
    emit(HSM_LOG_DEBUG, message)
}
