//! hsmkit-plugin-pkcs11 (work in progress).
