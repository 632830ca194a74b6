//! hsmkit-plugin-tpm2 (work in progress).
