//! `libhsmkit_plugin_dice.so`: the software DICE backend exported as an hsmkit plugin.

hsm_plugin_sdk::export_plugin!(entry = hsmkit_backend_dice::plugin_entry);
