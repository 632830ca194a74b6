//! `libhsmkit_plugin_symmetric.so`: the software symmetric-key backend exported as an hsmkit plugin.

hsm_plugin_sdk::export_plugin!(entry = hsmkit_backend_symmetric::plugin_entry);
