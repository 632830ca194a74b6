//! hsm-tpm-common (work in progress).
