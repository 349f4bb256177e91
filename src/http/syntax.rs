//! The HTTP/1.1 grammar pieces (RFC 9110 and 9112) shared by request, body and response parsing.

/// Whether `b` may appear in a token (a method or a header name).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

pub(super) fn is_token(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&b| is_tchar(b))
}

/// Whether `value` may be a header value: visible ASCII, space or tab, so
/// that no value can split a head.
pub(super) fn is_field_value(value: &[u8]) -> bool {
    value
        .iter()
        .all(|&b| b == b'\t' || (b' '..=b'~').contains(&b))
}

/// Splits a header field line (without its CRLF) into name and trimmed
/// value; `None` unless the name is a token (which refuses obs-fold and
/// space before the colon) and the value valid.
pub(super) fn split_field(line: &[u8]) -> Option<(&[u8], &[u8])> {
    let colon = line.iter().position(|&b| b == b':')?;
    let (name, value) = (&line[..colon], trim(&line[colon + 1..]));
    (is_token(name) && is_field_value(value)).then_some((name, value))
}

/// The comma-separated list elements of a header value, trimmed, empty ones skipped.
pub(super) fn list_items(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(trim)
        .filter(|s| !s.is_empty())
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// A Content-Length value: digits only, leading zeros ignored. Over 19
/// significant digits reads as `u64::MAX`, over any body limit, so an
/// absurd length gets 413, not 400.
pub(super) fn content_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let significant = &value[value.iter().take_while(|&&b| b == b'0').count()..];
    if significant.len() > 19 {
        return Some(u64::MAX);
    }
    // 19 digits stay below 10^19 < 2^64, so this cannot overflow.
    Some(
        significant
            .iter()
            .fold(0u64, |n, &b| n * 10 + u64::from(b - b'0')),
    )
}

#[cfg(test)]
mod tests {
    use super::{content_length, is_field_value, is_token, list_items, split_field};

    #[test]
    fn tokens() {
        assert!(is_token(b"GET"));
        assert!(is_token(b"X-Custom_1.2~"));
        assert!(!is_token(b""));
        assert!(!is_token(b"A B"));
        assert!(!is_token(b"A:"));
        assert!(!is_token("é".as_bytes()));
    }

    #[test]
    fn fields() {
        let (n, v) = split_field(b"Host:  example.com \t").unwrap();
        assert_eq!((n, v), (&b"Host"[..], &b"example.com"[..]));
        let (_, v) = split_field(b"Empty:").unwrap();
        assert!(v.is_empty());
        assert!(split_field(b"Host : x").is_none());
        assert!(split_field(b" folded").is_none());
        assert!(split_field(b"\tfolded: x").is_none());
        assert!(split_field(b"NoColon").is_none());
        assert!(split_field(b": x").is_none());
        assert!(split_field("X: caf\u{e9}".as_bytes()).is_none());
        assert!(split_field(b"X: a\rb").is_none());
        assert!(split_field(b"X: a\nb").is_none());
        assert!(split_field(b"X: a\x00b").is_none());
        assert!(split_field(b"X: a\x7fb").is_none());
        assert!(split_field(b"X: a\tb c").is_some());
    }

    #[test]
    fn field_values_with_line_breaks_are_refused() {
        assert!(is_field_value(b"abc-123 x\ty"));
        assert!(!is_field_value(b"a\r\nSet-Cookie: x"));
        assert!(!is_field_value(b"a\nb"));
        assert!(!is_field_value("\u{e9}".as_bytes()));
    }

    #[test]
    fn lists() {
        let items: Vec<&[u8]> = list_items(b" keep-alive ,, Upgrade,").collect();
        assert_eq!(items, [&b"keep-alive"[..], &b"Upgrade"[..]]);
    }

    #[test]
    fn content_lengths() {
        assert_eq!(content_length(b"0"), Some(0));
        assert_eq!(content_length(b"000123"), Some(123));
        assert_eq!(
            content_length(b"9999999999999999999"),
            Some(9_999_999_999_999_999_999)
        );
        assert_eq!(content_length(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(content_length(&[b'9'; 400]), Some(u64::MAX));
        assert_eq!(content_length(b""), None);
        assert_eq!(content_length(b"+5"), None);
        assert_eq!(content_length(b"5 "), None);
        assert_eq!(content_length(b"5,5"), None);
        assert_eq!(content_length(b"0x10"), None);
    }
}
