//! A client's request head, validated strictly (RFC 9112).

use super::response::Response;
use super::wire::{is_field_value, Delivery, Framing};
use super::Request;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Expect {
    /// No expectation, or one an HTTP/1.0 client sent (which must be ignored).
    Nothing,
    /// `100-continue`: the client waits for our interim response before the body.
    Continue,
    /// Anything else, which is answered with 417.
    Unknown,
}

/// What the layer needs of a validated request head.
#[derive(Debug)]
pub(super) struct RequestHead {
    /// How the answer goes out; `close` unless the client keeps the connection.
    pub(super) delivery: Delivery,
    pub(super) framing: Framing,
    pub(super) expect: Expect,
}

impl RequestHead {
    /// Parses a head into what the layer needs and the bodiless request, whose text it
    /// becomes: a valid head is visible ASCII, space or tab, so a lossy character fails.
    pub(super) fn parse(bytes: Vec<u8>) -> Result<(RequestHead, Request), Response> {
        let text = String::from_utf8(bytes)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
        // Empty lines before the request line are skipped (RFC 9112 section 2.2).
        let mut lines = lines(text.as_bytes()).skip_while(|line| line.is_empty());
        let Some(line) = lines.next() else {
            return Err(Response::refusal(400, "the request line is missing"));
        };
        let (method, target, http10) = request_line(line)?;
        let at = |s: &[u8]| s.as_ptr() as usize - text.as_ptr() as usize;
        let fields = lines
            .take_while(|line| !line.is_empty())
            .map(|line| split_field(line).map(|(n, v)| [n, v].map(|s| at(s)..at(s) + s.len())))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| Response::refusal(400, "a header line is malformed"))?;
        let request = Request {
            method: String::from_utf8_lossy(method).into_owned(),
            target: String::from_utf8_lossy(target).into_owned(),
            head: text,
            fields,
            body: Vec::new(),
        };
        let mut head = RequestHead {
            delivery: Delivery {
                head_only: request.method == "HEAD",
                close: false,
                http10,
            },
            framing: Framing::None,
            expect: Expect::Nothing,
        };
        head.read_fields(&request).map(|()| (head, request))
    }

    /// Reads framing, expectation and connection options from the fields.
    fn read_fields(&mut self, request: &Request) -> Result<(), Response> {
        let bad = |why: &'static str| Err(Response::refusal(400, why));
        let (mut length, mut chunked, mut hosts) = (None, None, 0);
        let (mut expects, mut continues, mut close, mut keep_alive) = (0, 0, false, false);
        for (name, value) in request.headers() {
            let (is, value) = (|n: &str| name.eq_ignore_ascii_case(n), value.as_bytes());
            if is("content-length") {
                let Some(n) = content_length(value) else {
                    return bad("Content-Length must be digits only");
                };
                if length.replace(n).is_some_and(|old| old != n) {
                    return bad("Content-Length values disagree");
                }
            } else if is("transfer-encoding") {
                chunked = Some(chunked.is_none() && value.eq_ignore_ascii_case(b"chunked"));
            } else if is("connection") {
                for option in list_items(value) {
                    close |= option.eq_ignore_ascii_case(b"close");
                    keep_alive |= option.eq_ignore_ascii_case(b"keep-alive");
                }
            } else if is("host") {
                hosts += 1;
            } else if is("expect") {
                expects += 1;
                continues += usize::from(value.eq_ignore_ascii_case(b"100-continue"));
            }
        }
        // RFC 9112 section 3.2: exactly one Host in HTTP/1.1, at most one in 1.0.
        let http10 = self.delivery.http10;
        if hosts > 1 || (hosts == 0 && !http10) {
            return bad("an HTTP/1.1 request must carry exactly one Host header");
        }
        // HTTP/1.1 keeps the connection unless told otherwise; HTTP/1.0 only when asked.
        self.delivery.close = close || (http10 && !keep_alive);
        self.framing = match (length, chunked) {
            (Some(_), Some(_)) => {
                return bad("Content-Length and Transfer-Encoding must not both be sent")
            }
            (_, Some(false)) => {
                let why = "the only supported Transfer-Encoding is chunked";
                return Err(Response::refusal(501, why));
            }
            (_, Some(true)) => Framing::Chunked,
            (Some(n), None) => Framing::Length(n),
            (None, None) => Framing::None,
        };
        // RFC 9110 section 10.1.1: ignore expectations from HTTP/1.0 clients.
        self.expect = match expects {
            0 => Expect::Nothing,
            _ if http10 => Expect::Nothing,
            n if n == continues => Expect::Continue,
            _ => Expect::Unknown,
        };
        Ok(())
    }

    /// Whether a body is expected on the wire after the head.
    pub(super) fn has_body(&self) -> bool {
        matches!(self.framing, Framing::Chunked)
            || matches!(self.framing, Framing::Length(n) if n > 0)
    }
}

/// The lines of a head, without their CRLF.
fn lines(mut rest: &[u8]) -> impl Iterator<Item = &[u8]> {
    std::iter::from_fn(move || {
        let end = rest.windows(2).position(|w| w == b"\r\n")?;
        let line = &rest[..end];
        rest = &rest[end + 2..];
        Some(line)
    })
}

/// Checks `METHOD SP TARGET SP VERSION`: method, target, and whether it is HTTP/1.0.
fn request_line(text: &[u8]) -> Result<(&[u8], &[u8], bool), Response> {
    let mut parts = text.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Response::refusal(400, "the request line is malformed"));
    };
    let http10 = match version {
        b"HTTP/1.1" => false,
        b"HTTP/1.0" => true,
        v if v.starts_with(b"HTTP/") && v[5..].iter().all(|&b| b.is_ascii_digit() || b == b'.') => {
            return Err(Response::refusal(
                505,
                "only HTTP/1.0 and HTTP/1.1 are supported",
            ))
        }
        _ => return Err(Response::refusal(400, "the request line is malformed")),
    };
    if !is_token(method) {
        return Err(Response::refusal(400, "the request method is malformed"));
    }
    let target_ok = match target {
        b"*" => method == b"OPTIONS",
        [b'/', ..] => target.iter().all(|&b| (b'!'..=b'~').contains(&b)),
        _ => false,
    };
    if !target_ok {
        return Err(Response::refusal(400, "the request target is malformed"));
    }
    Ok((method, target, http10))
}

/// Whether `s` is a token (a method or a header name).
fn is_token(s: &[u8]) -> bool {
    let tchar = |b: &u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(b);
    !s.is_empty() && s.iter().all(tchar)
}

/// Splits a field line into name and trimmed value; `None` unless the name is a
/// token (refusing obs-fold and space before the colon) and the value valid.
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

/// A Content-Length value: digits only. Over 19 significant digits reads as
/// `u64::MAX`, over any body limit, so an absurd length gets 413, not 400.
pub(super) fn content_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let significant = &value[value.iter().take_while(|&&b| b == b'0').count()..];
    if significant.len() > 19 {
        return Some(u64::MAX);
    }
    // 19 digits stay below 10^19 < 2^64; none is a zero.
    Some(std::str::from_utf8(significant).ok()?.parse().unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::super::response::method_label;
    use super::*;

    fn parse_exact(text: &str) -> Result<RequestHead, u16> {
        RequestHead::parse(text.into())
            .map(|(head, _)| head)
            .map_err(|r| r.status)
    }

    /// Parses `text` with a `Host` field added after the request line, which
    /// HTTP/1.1 requires and the cases below would only repeat.
    fn parse(text: &str) -> Result<RequestHead, u16> {
        let (line, rest) = text.split_at(text.find("\r\n").map_or(0, |i| i + 2));
        parse_exact(&format!("{line}Host: t\r\n{rest}"))
    }

    #[test]
    fn http11_needs_exactly_one_host() {
        assert_eq!(parse_exact("GET / HTTP/1.1\r\n\r\n").err(), Some(400));
        let two = "GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n";
        assert_eq!(parse_exact(two).err(), Some(400));
        assert!(parse_exact("GET / HTTP/1.0\r\n\r\n").is_ok());
        assert!(parse_exact("GET / HTTP/1.1\r\nHost: a\r\n\r\n").is_ok());
    }

    #[test]
    fn unknown_and_lowercase_methods_are_not_implemented() {
        for method in ["get", "Post", "TRACE", "CONNECT", "BREW"] {
            let text = format!("{method} / HTTP/1.1\r\n\r\n");
            assert!(parse(&text).is_ok(), "{method}");
            assert_eq!(method_label(text.as_bytes()), "OTHER", "{method}");
        }
        assert_eq!(method_label(b"PATCH / HTTP/1.1\r\n\r\n"), "PATCH");
    }

    #[test]
    fn simple_get() {
        let head = parse_exact("GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
        assert_eq!(method_label(b"GET /metrics?x=1 HTTP/1.1\r\n"), "GET");
        assert_eq!(head.framing, Framing::None);
        assert_eq!(head.expect, Expect::Nothing);
        assert_eq!(head.delivery, Delivery::default());
        assert!(parse("HEAD / HTTP/1.1\r\n\r\n").unwrap().delivery.head_only);
    }

    #[test]
    fn requests_keep_every_field() {
        let text = "POST /api/v1/messages?x=1 HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\n\
             Content-Length: 2\r\nX-Request-ID: r-1\r\nReferer:\thttp://a:1/ \r\nX-Empty:\r\n\
             x-request-id: r-2\r\n\r\n";
        let (_, request) = RequestHead::parse(text.into()).unwrap();
        assert_eq!(request.method, "POST");
        assert_eq!(request.target, "/api/v1/messages?x=1");
        assert_eq!(request.header("x-request-id"), Some("r-1"));
        assert_eq!(request.header("REFERER"), Some("http://a:1/"));
        assert_eq!(request.header("x-empty"), Some(""));
        assert_eq!(request.header("X-Missing"), None);
        let fields: Vec<(&str, &str)> = request.headers().collect();
        let expected = [
            ("Host", "a"),
            ("Connection", "keep-alive"),
            ("Content-Length", "2"),
            ("X-Request-ID", "r-1"),
            ("Referer", "http://a:1/"),
            ("X-Empty", ""),
            ("x-request-id", "r-2"),
        ];
        assert_eq!(fields, expected);
        assert!(request.body.is_empty());
        let text = "OPTIONS * HTTP/1.1\r\nHost: t\r\n\r\n";
        assert_eq!(RequestHead::parse(text.into()).unwrap().1.target, "*");
    }

    #[test]
    fn heads_that_are_not_utf8_fail_as_their_first_bad_part_does() {
        let status = |bytes: &[u8]| RequestHead::parse(bytes.to_vec()).err().map(|r| r.status);
        assert_eq!(status(b"GET /\xff HTTP/1.1\r\nHost: a\r\n\r\n"), Some(400));
        assert_eq!(
            status(b"GET / HTTP/1.1\r\nHost: a\r\nX: \xff\r\n\r\n"),
            Some(400)
        );
        assert_eq!(status(b"GET / HTTP/2.0\r\nX: \xff\r\n\r\n"), Some(505));
        let text = RequestHead::parse(b"GET / HTTP/1.1\r\nHost: \xe9\r\n\r\n".to_vec());
        let message = String::from_utf8(text.err().unwrap().body).unwrap();
        assert!(message.contains("a header line is malformed"), "{message}");
    }

    #[test]
    fn leading_empty_lines_are_skipped() {
        assert!(parse_exact("\r\n\r\nGET / HTTP/1.1\r\nHost: t\r\n\r\n").is_ok());
    }

    #[test]
    fn request_line_errors() {
        const BAD_REQUEST: u16 = 400;
        const VERSION: u16 = 505;
        let cases = [
            ("GET / HTTP/2.0\r\n\r\n", VERSION),
            ("PRI * HTTP/2.0\r\n\r\n", VERSION),
            ("GET / HTTP/1.2\r\n\r\n", VERSION),
            ("GET / HTTP/x\r\n\r\n", BAD_REQUEST),
            ("GET / http/1.1\r\n\r\n", BAD_REQUEST),
            ("GET /  HTTP/1.1\r\n\r\n", BAD_REQUEST),
            ("GET / HTTP/1.1 x\r\n\r\n", BAD_REQUEST),
            ("GET /\r\n\r\n", BAD_REQUEST),
            ("G(T / HTTP/1.1\r\n\r\n", BAD_REQUEST),
            ("GET http://a/ HTTP/1.1\r\n\r\n", BAD_REQUEST),
            ("GET * HTTP/1.1\r\n\r\n", BAD_REQUEST),
            ("GET /\x7f HTTP/1.1\r\n\r\n", BAD_REQUEST),
            ("GET /\u{e9} HTTP/1.1\r\n\r\n", BAD_REQUEST),
            ("GET /\ra HTTP/1.1\r\n\r\n", BAD_REQUEST),
        ];
        for (text, status) in cases {
            assert_eq!(parse(text).err(), Some(status), "{text:?}");
        }
        assert!(parse("OPTIONS * HTTP/1.1\r\n\r\n").is_ok());
    }

    #[test]
    fn header_errors() {
        let bad = [
            "GET / HTTP/1.1\r\nX: caf\u{e9}\r\n\r\n",
            "GET / HTTP/1.1\r\nX: a\r\n folded\r\n\r\n",
            "GET / HTTP/1.1\r\nX : a\r\n\r\n",
            "GET / HTTP/1.1\r\nX: a\nY: b\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 1e3\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: gzip\r\n\r\n",
        ];
        for text in bad {
            assert_eq!(parse(text).err(), Some(400), "{text:?}");
        }
    }

    #[test]
    fn transfer_encodings() {
        let head = parse("POST / HTTP/1.1\r\nTransfer-Encoding: ChunKed\r\n\r\n").unwrap();
        assert_eq!(head.framing, Framing::Chunked);
        for te in [
            "gzip",
            "gzip, chunked",
            "chunked, chunked",
            "chunked\r\nTransfer-Encoding: chunked",
        ] {
            let text = format!("POST / HTTP/1.1\r\nTransfer-Encoding: {te}\r\n\r\n");
            assert_eq!(parse(&text).err(), Some(501), "{te}");
        }
    }

    #[test]
    fn content_lengths() {
        let head =
            parse("POST / HTTP/1.1\r\nContent-Length: 5\r\ncontent-length: 005\r\n\r\n").unwrap();
        assert_eq!(head.framing, Framing::Length(5));
        let head =
            parse("POST / HTTP/1.1\r\nContent-Length: 18446744073709551615\r\n\r\n").unwrap();
        assert_eq!(head.framing, Framing::Length(u64::MAX));
        assert!(head.has_body());
        let head = parse("POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n").unwrap();
        assert!(!head.has_body());
    }

    #[test]
    fn keep_alive_rules() {
        let closes = |text: &str| parse(text).unwrap().delivery.close;
        assert!(closes("GET / HTTP/1.1\r\nConnection: Close\r\n\r\n"));
        assert!(closes("GET / HTTP/1.0\r\n\r\n"));
        assert!(!closes("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"));
        let text = "GET / HTTP/1.0\r\nConnection: close\r\nConnection: keep-alive\r\n\r\n";
        assert!(closes(text));
        let text =
            "GET / HTTP/1.1\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n";
        assert!(!closes(text));
    }

    #[test]
    fn expectations() {
        let expect = |text: &str| parse(text).unwrap().expect;
        assert_eq!(
            expect("PUT / HTTP/1.1\r\nExpect: 100-Continue\r\n\r\n"),
            Expect::Continue
        );
        assert_eq!(
            expect("PUT / HTTP/1.1\r\nExpect: fly\r\n\r\n"),
            Expect::Unknown
        );
        let text = "PUT / HTTP/1.1\r\nExpect: 100-continue\r\nExpect: fly\r\n\r\n";
        assert_eq!(expect(text), Expect::Unknown);
        assert_eq!(
            expect("PUT / HTTP/1.0\r\nExpect: fly\r\n\r\n"),
            Expect::Nothing
        );
    }

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
    fn content_length_values() {
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
