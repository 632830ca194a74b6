//! The callbacks the host offers every plugin.

use hsm_api::{HsmHostApi, HsmSlice, HsmTableHeader};

/// Routes a plugin's log line into `tracing` under the `hsmkit::plugin` target.
extern "C" fn host_log(level: u32, message: HsmSlice) {
    let text = if message.ptr.is_null() || message.len == 0 {
        String::new()
    } else {
        // SAFETY: the plugin passes a slice valid for the duration of this call (ABI
        // contract); NULL was excluded above.
        let bytes = unsafe { std::slice::from_raw_parts(message.ptr, message.len) };
        String::from_utf8_lossy(bytes).into_owned()
    };
    match level {
        hsm_api::HSM_LOG_ERROR => tracing::error!(target: "hsmkit::plugin", "{text}"),
        hsm_api::HSM_LOG_WARN => tracing::warn!(target: "hsmkit::plugin", "{text}"),
        hsm_api::HSM_LOG_INFO => tracing::info!(target: "hsmkit::plugin", "{text}"),
        hsm_api::HSM_LOG_DEBUG => tracing::debug!(target: "hsmkit::plugin", "{text}"),
        _ => tracing::trace!(target: "hsmkit::plugin", "{text}"),
    }
}

/// The one host table, shared by every plugin for the life of the process.
pub(crate) static HOST_API: HsmHostApi = HsmHostApi {
    header: HsmTableHeader::current::<HsmHostApi>(),
    log: Some(host_log),
};
