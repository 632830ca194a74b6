//! provisioning-core (work in progress).
