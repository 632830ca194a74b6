//! hsmkit-plugin-dice (work in progress).
