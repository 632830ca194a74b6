//! `libhsmkit_plugin_pkcs11.so`: the PKCS#11 backend exported as an hsmkit plugin.

hsm_plugin_sdk::export_plugin!(entry = hsmkit_backend_pkcs11::plugin_entry);
