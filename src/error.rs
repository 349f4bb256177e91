//! The domain error: what went wrong, in terms of the request rather than
//! of HTTP. `http::response` is the one place that maps it to a status.

use std::fmt;

/// A failed domain operation. Safe to send across threads.
#[derive(Debug, Clone, PartialEq)]
pub enum Error {
    /// The input is malformed; `field` (or `body`) names the part at fault.
    Invalid {
        field: String,
        message: String,
    },
    NotFound(String),
    /// The request conflicts with the current state.
    Conflict(String),
    TooLarge(String),
    /// Storage failed; nothing was acknowledged.
    Storage(String),
    /// The day's budget cannot cover another run.
    Exhausted(Box<ExhaustedAnswer>),
}

/// A run the day's budget refused, as its answer shows it. Plain data, so that this module needs
/// nothing from the budget's; safe to send across threads.
#[derive(Debug, Clone, PartialEq)]
pub struct ExhaustedAnswer {
    pub message: String,
    /// The refusal as JSON: the budget at that moment and what did not fit.
    pub body: serde_json::Value,
    /// Whole seconds until the budget resets, at least 1: the `Retry-After` value.
    pub retry_after_seconds: u64,
}

impl Error {
    pub fn invalid(field: &str, message: impl Into<String>) -> Error {
        Error::Invalid {
            field: field.to_string(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Invalid { field, message } => write!(f, "{field}: {message}"),
            Error::NotFound(m) | Error::Conflict(m) | Error::TooLarge(m) | Error::Storage(m) => {
                f.write_str(m)
            }
            Error::Exhausted(refused) => f.write_str(&refused.message),
        }
    }
}

impl std::error::Error for Error {}
