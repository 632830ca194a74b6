//! `libhsmkit_plugin_azure_custom_hsm.so`: an existing Azure IoT C SDK custom-HSM library hosted
//! as an hsmkit plugin (hsmkit-backend-azure-custom-hsm).

hsm_plugin_sdk::export_plugin!(entry = hsmkit_backend_azure_custom_hsm::plugin_entry);
