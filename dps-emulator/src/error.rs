//! Typed errors of the emulator library.

use std::path::PathBuf;

/// Everything that can go wrong when starting the emulator or using its stores.
#[derive(Debug, thiserror::Error)]
pub enum EmulatorError {
    /// A file or folder in the state directory could not be read or written.
    #[error("state file {path}: {error}")]
    StateIo {
        /// The file or folder concerned.
        path: PathBuf,
        /// The underlying I/O error (in the message, so not also the `source()`).
        error: std::io::Error,
    },
    /// The state folder or one of its files was refused or could not be written (owner, mode,
    /// symbolic link; see `hsm_secure_fs::state`).
    #[error(transparent)]
    State(#[from] hsm_secure_fs::state::StateError),
    /// The listening socket could not be bound.
    #[error("cannot listen on {addr}: {error}")]
    Bind {
        /// The requested address.
        addr: std::net::SocketAddr,
        /// The underlying I/O error (in the message, so not also the `source()`).
        error: std::io::Error,
    },
    /// The embedded database failed (its error is in the message, so not also the
    /// `source()`).
    #[error("database: {0}")]
    Database(rusqlite::Error),
    /// A stored record could not be decoded (the database was edited or corrupted).
    #[error("stored record is corrupt: {0}")]
    CorruptRecord(String),
    /// Certificate or key generation or parsing failed.
    #[error("certificate: {0}")]
    Certificate(String),
    /// The TLS configuration could not be built (rustls's error is in the message, so not
    /// also the `source()`).
    #[error("tls: {0}")]
    Tls(rustls::Error),
    /// An enrollment given programmatically or from a file is invalid.
    #[error("invalid enrollment: {0}")]
    InvalidEnrollment(String),
    /// An enrollment that was asked for does not exist.
    #[error("enrollment {0} not found")]
    EnrollmentNotFound(String),
    /// The configuration is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
}

impl From<rusqlite::Error> for EmulatorError {
    fn from(e: rusqlite::Error) -> Self {
        EmulatorError::Database(e)
    }
}

impl From<rustls::Error> for EmulatorError {
    fn from(e: rustls::Error) -> Self {
        EmulatorError::Tls(e)
    }
}

/// Shorthand used across the crate.
pub type Result<T, E = EmulatorError> = std::result::Result<T, E>;

/// Wraps an I/O error with the path it concerns.
pub(crate) fn io_at(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> EmulatorError {
    let path = path.into();
    move |error| EmulatorError::StateIo { path, error }
}
