//! hsm-plugin-sdk (work in progress).
