//! The error returned when a metric cannot be registered.

use std::fmt;

/// The result of a registration.
pub type Result<T> = std::result::Result<T, Error>;

/// Why a registration was refused: the only fallible step, so a handle's hot paths cannot fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    kind: ErrorKind,
    message: String,
}

/// What a caller can ask of a refusal; its message names the metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorKind {
    Refused,
    Duplicate,
    OverCeiling,
}

impl Error {
    pub(crate) fn new(kind: ErrorKind, message: String) -> Error {
        Error { kind, message }
    }

    pub(crate) fn refused(message: String) -> Error {
        Error::new(ErrorKind::Refused, message)
    }

    /// True when the name was already registered, or clashes with a registered family's samples.
    pub fn is_duplicate(&self) -> bool {
        self.kind == ErrorKind::Duplicate
    }

    /// True when the family's fixed part did not fit its [`ByteCeiling`](super::ByteCeiling).
    pub fn is_over_ceiling(&self) -> bool {
        self.kind == ErrorKind::OverCeiling
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}
