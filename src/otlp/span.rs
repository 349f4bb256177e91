//! Finished spans as plain data, ready to encode.

/// One finished span.
#[derive(Clone, Debug, PartialEq)]
pub struct Span {
    pub trace_id: [u8; 16],
    /// Its own id; never all zero.
    pub span_id: [u8; 8],
    pub parent_span_id: Option<[u8; 8]>,
    pub name: String,
    pub start_unix_nanos: u64,
    pub end_unix_nanos: u64,
    /// Key-value facts about it, in the order they are sent.
    pub attributes: Vec<(String, AttrValue)>,
    pub events: Vec<SpanEvent>,
    pub status: SpanStatus,
}

/// An attribute value: the scalar kinds of OTLP's `AnyValue`.
#[derive(Clone, Debug, PartialEq)]
pub enum AttrValue {
    Str(String),
    Int(i64),
    Bool(bool),
    /// A double; NaN and the infinities are sent as proto3 JSON spells them.
    Double(f64),
}

/// An event at one instant within a span, such as a gate check.
#[derive(Clone, Debug, PartialEq)]
pub struct SpanEvent {
    pub name: String,
    pub time_unix_nanos: u64,
    pub attributes: Vec<(String, AttrValue)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SpanStatus {
    Unset,
    Ok,
    Error(String),
}

/// Nanoseconds since the Unix epoch for Unix seconds, rounded to the
/// microsecond; negative and NaN times become 0. An f64 of today's Unix
/// seconds resolves about a quarter of a microsecond, so finer digits would
/// be noise (`.6` would come out as `.599999905`).
pub(crate) fn unix_nanos(secs: f64) -> u64 {
    if secs.is_nan() || secs <= 0.0 {
        return 0;
    }
    let whole = secs.trunc();
    let micros = ((secs - whole) * 1e6).round() as u64;
    (whole as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(micros * 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_seconds_to_nanoseconds() {
        assert_eq!(unix_nanos(0.0), 0);
        assert_eq!(unix_nanos(-5.0), 0);
        assert_eq!(unix_nanos(f64::NAN), 0);
        assert_eq!(unix_nanos(1.5), 1_500_000_000);
        assert_eq!(unix_nanos(1_795_439_678.25), 1_795_439_678_250_000_000);
        assert_eq!(unix_nanos(f64::INFINITY), u64::MAX);
        assert_eq!(unix_nanos(1_795_439_678.123_456), 1_795_439_678_123_456_000);
        assert_eq!(unix_nanos(1_795_439_678.6), 1_795_439_678_600_000_000);
        assert_eq!(unix_nanos(1.999_999_9), 2_000_000_000);
    }
}
