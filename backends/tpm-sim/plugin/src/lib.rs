//! `libhsmkit_plugin_tpm_sim.so`: the software TPM 2.0 backend exported as an hsmkit plugin.

hsm_plugin_sdk::export_plugin!(entry = hsmkit_backend_tpm_sim::plugin_entry);
