//! hsmkit-plugin-symmetric (work in progress).
