//! The error returned when a metric cannot be registered.

use std::fmt;

/// Why a registration was refused. Registration is the only fallible step:
/// once a handle exists, its hot paths cannot fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    name: String,
    kind: ErrorKind,
}

/// The kinds of registration failure, kept private so new ones can be added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ErrorKind {
    InvalidMetricName,
    /// A label name, and what is wrong with it.
    Label(String, &'static str),
    Duplicate,
    Clash(String),
    CounterSuffix,
    NonCounterSuffix,
    InvalidBuckets(&'static str),
    NoOriginal(String),
    /// A family's fixed part, as label and exposition bytes, and what its
    /// byte ceiling had left of each.
    OverCeiling {
        fixed: (u64, u64),
        left: (u64, u64),
    },
}

impl Error {
    pub(crate) fn new(name: &str, kind: ErrorKind) -> Error {
        Error {
            name: name.to_string(),
            kind,
        }
    }

    /// True when the name was already registered, or clashes with the
    /// samples of a registered family.
    pub fn is_duplicate(&self) -> bool {
        matches!(self.kind, ErrorKind::Duplicate | ErrorKind::Clash(_))
    }

    /// True when the family's fixed part did not fit under its byte
    /// ceiling (see [`crate::metrics::ByteCeiling`]).
    pub fn is_over_ceiling(&self) -> bool {
        matches!(self.kind, ErrorKind::OverCeiling { .. })
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = &self.name;
        match &self.kind {
            ErrorKind::InvalidMetricName => {
                write!(
                    f,
                    "metric name {name:?} must match [a-zA-Z_:][a-zA-Z0-9_:]*"
                )
            }
            ErrorKind::Label(l, why) => write!(f, "metric {name}: label name {l:?} {why}"),
            ErrorKind::Duplicate => write!(f, "metric {name} is already registered"),
            ErrorKind::Clash(other) => write!(
                f,
                "metric {name} clashes with the samples of registered metric {other}"
            ),
            ErrorKind::CounterSuffix => write!(f, "counter {name} must end in _total"),
            ErrorKind::NonCounterSuffix => {
                write!(
                    f,
                    "metric {name} is not a counter and must not end in _total"
                )
            }
            ErrorKind::InvalidBuckets(why) => write!(f, "histogram {name}: {why}"),
            ErrorKind::NoOriginal(of) => write!(
                f,
                "alias {name}: {of} is not a registered counter, gauge or histogram family"
            ),
            ErrorKind::OverCeiling { fixed, left } => write!(
                f,
                "metric {name} does not fit under its byte ceiling: its header and \
                 overflow series take {} bytes of a scrape and {} label bytes, where \
                 {} and {} are left",
                fixed.1, fixed.0, left.1, left.0
            ),
        }
    }
}

impl std::error::Error for Error {}
