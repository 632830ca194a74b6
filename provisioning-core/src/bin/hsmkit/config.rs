//! The TOML configuration file. Every setting here can also be given as a flag. The reader is
//! the library's (`provisioning_core::config`), shared with libhsmkit_azure_hsm.

pub(crate) use provisioning_core::config::{ConfigFile, ProvisioningSection};
