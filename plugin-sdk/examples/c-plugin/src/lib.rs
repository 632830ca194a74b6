//! hsmkit-c-example-plugin (work in progress).
