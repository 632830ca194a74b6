//! hsm-conformance (work in progress).
