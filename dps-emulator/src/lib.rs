//! dps-emulator (work in progress).
