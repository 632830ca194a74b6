//! `libhsmkit_plugin_tpm2.so`: the TPM 2.0 backend (tss-esapi) exported as an hsmkit plugin.

hsm_plugin_sdk::export_plugin!(entry = hsmkit_backend_tpm2::plugin_entry);
