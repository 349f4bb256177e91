//! The trace a run belongs to, from a caller's W3C `traceparent` or new.

use super::id::new_trace_id;

/// Where a run's root span sits: in which trace, under which parent span.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: [u8; 16],
    /// The caller's span, which becomes the root span's parent; `None` when
    /// the run starts a trace of its own.
    pub parent_span_id: Option<[u8; 8]>,
}

/// `00-` + 32 + `-` + 16 + `-` + 2: the length of a version-00 header.
const TRACEPARENT_LEN: usize = 55;

impl TraceContext {
    /// Parses a W3C `traceparent`, `<version>-<trace id>-<parent id>-<flags>`
    /// in lower-case hex; `None` for what the recommendation says to ignore:
    /// upper-case hex, wrong lengths, version `ff`, an all-zero id, or a
    /// version-00 header with trailing data. A later version's extra `-`
    /// fields are ignored; flags are checked, not kept (every run is recorded).
    pub fn parse_traceparent(s: &str) -> Option<TraceContext> {
        let b = s.trim_matches([' ', '\t']).as_bytes();
        if b.len() < TRACEPARENT_LEN || b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
            return None;
        }
        let [version] = hex::<1>(&b[0..2])?;
        let trace_id = hex::<16>(&b[3..35])?;
        let parent = hex::<8>(&b[36..52])?;
        hex::<1>(&b[53..55])?;
        let rest_ok = match version {
            0xff => false,
            0 => b.len() == TRACEPARENT_LEN,
            _ => b.len() == TRACEPARENT_LEN || b[TRACEPARENT_LEN] == b'-',
        };
        if !rest_ok || trace_id == [0; 16] || parent == [0; 8] {
            return None;
        }
        Some(TraceContext {
            trace_id,
            parent_span_id: Some(parent),
        })
    }

    /// A context for a new trace with a random id and no parent.
    pub fn new_root() -> TraceContext {
        TraceContext {
            trace_id: new_trace_id(),
            parent_span_id: None,
        }
    }
}

/// Decodes exactly `2 * N` lower-case hex digits.
fn hex<const N: usize>(text: &[u8]) -> Option<[u8; N]> {
    let lower_hex = text.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'));
    if text.len() != 2 * N || !lower_hex {
        return None;
    }
    let mut out = [0; N];
    for (byte, pair) in out.iter_mut().zip(text.chunks_exact(2)) {
        *byte = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn parses_a_valid_header() {
        let ctx = TraceContext::parse_traceparent(VALID).unwrap();
        assert_eq!(
            ctx.trace_id,
            [
                0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e,
                0x47, 0x36
            ]
        );
        assert_eq!(
            ctx.parent_span_id,
            Some([0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7])
        );
        let unsampled = VALID.replace("-01", "-00");
        assert!(TraceContext::parse_traceparent(&unsampled).is_some());
        assert_eq!(
            TraceContext::parse_traceparent(&format!(" {VALID}\t")),
            Some(ctx)
        );
    }

    #[test]
    fn later_versions_may_carry_more_fields() {
        let v1 = VALID.replacen("00", "01", 1);
        assert!(TraceContext::parse_traceparent(&v1).is_some());
        assert!(TraceContext::parse_traceparent(&format!("{v1}-what-ever")).is_some());
        assert!(TraceContext::parse_traceparent(&format!("{v1}x")).is_none());
    }

    #[test]
    fn rejects_what_the_spec_says_to_ignore() {
        let bad = [
            String::new(),
            "garbage".to_string(),
            VALID.to_uppercase(),
            VALID.replace("4bf92f", "4BF92F"),
            VALID.replacen("00", "ff", 1),
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01".to_string(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01".to_string(),
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01".to_string(),
            "00-4bf92f3577b34da6a3ce929d0e0e47366-0f067aa0ba902b7-01".to_string(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1".to_string(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g".to_string(),
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_string(),
            format!("{VALID}-extra"),
            VALID.replace("4bf9", "4bé"),
        ];
        for s in &bad {
            assert_eq!(TraceContext::parse_traceparent(s), None, "{s:?}");
        }
    }

    #[test]
    fn new_roots_have_no_parent_and_a_fresh_id() {
        let a = TraceContext::new_root();
        assert_eq!(a.parent_span_id, None);
        assert_ne!(a.trace_id, [0; 16]);
        assert_ne!(a.trace_id, TraceContext::new_root().trace_id);
    }
}
