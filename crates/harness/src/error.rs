//! The harness's error type.
//!
//! Job: carry a human-readable explanation of what went wrong while setting up
//! or driving a private Postfix instance, including enough context (command
//! output, the tail of the mail log) to diagnose a failure from a CI log alone.
//! Invariant: every message says what was attempted; none is empty.

use std::fmt;

/// An error of the harness: a message with the context needed to debug it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    message: String,
}

impl Error {
    /// Makes an error from a message.
    pub fn new(message: impl Into<String>) -> Self {
        Error {
            message: message.into(),
        }
    }

    /// Makes an error from an I/O (or other) error and what was being done.
    pub fn io(what: impl fmt::Display, err: impl fmt::Display) -> Self {
        Error::new(format!("{what}: {err}"))
    }

    /// The explanation.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

/// The harness's result type.
pub type Result<T> = std::result::Result<T, Error>;
