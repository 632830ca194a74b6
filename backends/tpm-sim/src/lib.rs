//! hsmkit-plugin-tpm-sim (work in progress).
