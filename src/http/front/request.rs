//! A client's request head: strict validation, and the clean copy sent upstream.

use std::io::Write;
use std::net::IpAddr;
use std::ops::Range;

use super::local::LocalRequest;
use super::reply::Reject;
use super::syntax::{content_length, is_token, list_items, split_field};

/// How the request body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Framing {
    /// No body: neither Content-Length nor Transfer-Encoding.
    Empty,
    /// Exactly this many bytes follow the head.
    Length(u64),
    /// A chunked body follows.
    Chunked,
}

/// What the client's `Expect` header asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Expect {
    /// No expectation, or one an HTTP/1.0 client sent (which must be ignored).
    Nothing,
    /// `100-continue`: the client waits for our interim response before the body.
    Continue,
    /// Anything else, which the front answers with 417.
    Unknown,
}

/// A validated request head. Every byte in it is visible ASCII, space or tab,
/// and every line ended in CRLF.
#[derive(Debug)]
pub(super) struct RequestHead {
    bytes: Vec<u8>,
    method: Range<usize>,
    target: Range<usize>,
    fields: Vec<(Range<usize>, Range<usize>)>,
    pub(super) http10: bool,
    pub(super) framing: Framing,
    pub(super) expect: Expect,
    /// Whether the client wants the connection kept open after this request.
    pub(super) keep_alive: bool,
    /// Whether the client asks to switch protocols (`Connection: upgrade` and `Upgrade`).
    pub(super) upgrade: bool,
}

/// Header names that describe one hop, or the framing (and `Expect`) we
/// handle ourselves, and so never go upstream as the client sent them.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "expect",
    "keep-alive",
    "transfer-encoding",
    "content-length",
    "te",
    "trailer",
    "upgrade",
    "x-forwarded-for",
];

impl RequestHead {
    /// Parses a complete head, from the request line to the empty line.
    pub(super) fn parse(bytes: Vec<u8>) -> Result<RequestHead, Reject> {
        let mut lines = Lines::new(&bytes);
        let Some(line) = lines.next() else {
            return Err(Reject::bad_request("the request line is missing"));
        };
        let (method, target, http10) = request_line(&bytes, line)?;
        let mut fields = Vec::new();
        for line in lines {
            let Some((name, value)) = split_field(&bytes[line.clone()]) else {
                return Err(Reject::bad_request("a header line is malformed"));
            };
            let shift = |r: Range<usize>| r.start + line.start..r.end + line.start;
            fields.push((shift(name), shift(value)));
        }
        let mut head = RequestHead {
            bytes,
            method,
            target,
            fields,
            http10,
            framing: Framing::Empty,
            expect: Expect::Nothing,
            keep_alive: !http10,
            upgrade: false,
        };
        head.read_fields()?;
        Ok(head)
    }

    /// Reads framing, expectation and connection options from the fields.
    fn read_fields(&mut self) -> Result<(), Reject> {
        let mut length: Option<u64> = None;
        let mut chunked = None;
        let mut has_upgrade = false;
        let mut expects = (0, 0);
        let (mut close, mut keep_alive) = (false, false);
        for (name, value) in &self.fields {
            let (name, value) = (&self.bytes[name.clone()], &self.bytes[value.clone()]);
            if name.eq_ignore_ascii_case(b"content-length") {
                let Some(n) = content_length(value) else {
                    return Err(Reject::bad_request("Content-Length must be digits only"));
                };
                if length.is_some_and(|old| old != n) {
                    return Err(Reject::bad_request("Content-Length values disagree"));
                }
                length = Some(n);
            } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
                chunked = Some(chunked.is_none() && value.eq_ignore_ascii_case(b"chunked"));
            } else if name.eq_ignore_ascii_case(b"connection") {
                for option in list_items(value) {
                    if option.eq_ignore_ascii_case(b"close") {
                        close = true;
                    } else if option.eq_ignore_ascii_case(b"keep-alive") {
                        keep_alive = true;
                    } else if option.eq_ignore_ascii_case(b"upgrade") {
                        self.upgrade = true;
                    }
                }
            } else if name.eq_ignore_ascii_case(b"upgrade") {
                has_upgrade = true;
            } else if name.eq_ignore_ascii_case(b"expect") {
                expects.0 += 1;
                expects.1 += usize::from(value.eq_ignore_ascii_case(b"100-continue"));
            }
        }
        // HTTP/1.1 keeps the connection unless told otherwise; HTTP/1.0 only when asked.
        self.keep_alive = !close && (keep_alive || !self.http10);
        self.upgrade &= has_upgrade;
        self.framing = match (length, chunked) {
            (Some(_), Some(_)) => {
                return Err(Reject::bad_request(
                    "Content-Length and Transfer-Encoding must not both be sent",
                ))
            }
            (_, Some(false)) => {
                return Err(Reject::not_implemented(
                    "the only supported Transfer-Encoding is chunked",
                ))
            }
            (_, Some(true)) => Framing::Chunked,
            (Some(n), None) => Framing::Length(n),
            (None, None) => Framing::Empty,
        };
        self.expect = match expects {
            (0, _) => Expect::Nothing,
            // RFC 9110 section 10.1.1: ignore expectations from HTTP/1.0 clients.
            _ if self.http10 => Expect::Nothing,
            (n, c) if n == c => Expect::Continue,
            _ => Expect::Unknown,
        };
        Ok(())
    }

    /// The request method, a token.
    pub(super) fn method(&self) -> &[u8] {
        &self.bytes[self.method.clone()]
    }

    /// Whether this is a `HEAD` request, whose response has no body.
    pub(super) fn is_head(&self) -> bool {
        self.method() == b"HEAD"
    }

    /// The request target without its query.
    pub(super) fn path(&self) -> &[u8] {
        let target = &self.bytes[self.target.clone()];
        target.split(|&b| b == b'?').next().unwrap_or_default()
    }

    /// Whether a body is expected on the wire after the head.
    pub(super) fn has_body(&self) -> bool {
        matches!(self.framing, Framing::Chunked)
            || matches!(self.framing, Framing::Length(n) if n > 0)
    }

    /// The request as sent upstream: HTTP/1.1, the client's end-to-end headers,
    /// our own framing for `body`, and the client's address in
    /// `X-Forwarded-For` (replacing any the client sent).
    pub(super) fn forward(&self, body: &[u8], peer: IpAddr) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.bytes.len() + body.len() + 64);
        out.extend_from_slice(self.method());
        out.push(b' ');
        out.extend_from_slice(&self.bytes[self.target.clone()]);
        out.extend_from_slice(b" HTTP/1.1\r\n");
        let listed = self.connection_options();
        for (name, value) in &self.fields {
            let name = &self.bytes[name.clone()];
            if self.is_hop_by_hop(name, &listed) {
                continue;
            }
            out.extend_from_slice(name);
            out.extend_from_slice(b": ");
            out.extend_from_slice(&self.bytes[value.clone()]);
            out.extend_from_slice(b"\r\n");
        }
        if self.upgrade {
            out.extend_from_slice(b"Connection: upgrade\r\n");
        }
        if !body.is_empty() || matches!(self.method(), b"POST" | b"PUT" | b"PATCH") {
            // Writing to a Vec cannot fail.
            let _ = write!(out, "Content-Length: {}\r\n", body.len());
        }
        let _ = write!(out, "X-Forwarded-For: {peer}\r\n\r\n");
        out.extend_from_slice(body);
        out
    }

    /// The request as handed to an in-process handler: the client's
    /// end-to-end fields and `body`. Every byte of the
    /// head is ASCII (see [`RequestHead`]), so the text conversions are exact.
    pub(super) fn local(&self, body: Vec<u8>) -> LocalRequest {
        let text = |r: &Range<usize>| {
            let bytes = self.bytes[r.clone()].to_vec();
            String::from_utf8(bytes)
                .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
        };
        let listed = self.connection_options();
        let headers = self
            .fields
            .iter()
            .filter(|(name, _)| !self.is_hop_by_hop(&self.bytes[name.clone()], &listed))
            .map(|(name, value)| (text(name), text(value)))
            .collect();
        LocalRequest {
            method: text(&self.method),
            target: text(&self.target),
            headers,
            body,
        }
    }

    /// The header names the client's `Connection` header lists: they describe
    /// this hop only (RFC 9110 section 7.6.1).
    fn connection_options(&self) -> Vec<&[u8]> {
        self.fields
            .iter()
            .filter(|(name, _)| self.bytes[name.clone()].eq_ignore_ascii_case(b"connection"))
            .flat_map(|(_, value)| list_items(&self.bytes[value.clone()]))
            .collect()
    }

    fn is_hop_by_hop(&self, name: &[u8], listed: &[&[u8]]) -> bool {
        if name.eq_ignore_ascii_case(b"upgrade") && self.upgrade {
            return false;
        }
        HOP_BY_HOP
            .iter()
            .any(|h| name.eq_ignore_ascii_case(h.as_bytes()))
            || name.len() > 6 && name[..6].eq_ignore_ascii_case(b"proxy-")
            || listed.iter().any(|l| name.eq_ignore_ascii_case(l))
    }
}

/// Checks `METHOD SP TARGET SP VERSION`, returning method and target ranges and
/// whether the version is HTTP/1.0.
fn request_line(
    bytes: &[u8],
    line: Range<usize>,
) -> Result<(Range<usize>, Range<usize>, bool), Reject> {
    let text = &bytes[line.clone()];
    let mut parts = text.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Reject::bad_request("the request line is malformed"));
    };
    let http10 = match version {
        b"HTTP/1.1" => false,
        b"HTTP/1.0" => true,
        v if v.starts_with(b"HTTP/") && v[5..].iter().all(|&b| b.is_ascii_digit() || b == b'.') => {
            return Err(Reject::version("only HTTP/1.0 and HTTP/1.1 are supported"))
        }
        _ => return Err(Reject::bad_request("the request line is malformed")),
    };
    if !is_token(method) {
        return Err(Reject::bad_request("the request method is malformed"));
    }
    let target_ok = match target {
        b"*" => method == b"OPTIONS",
        [b'/', ..] => target.iter().all(|&b| (b'!'..=b'~').contains(&b)),
        _ => false,
    };
    if !target_ok {
        return Err(Reject::bad_request("the request target is malformed"));
    }
    let start = line.start;
    let method_end = start + method.len();
    let target_start = method_end + 1;
    Ok((
        start..method_end,
        target_start..target_start + target.len(),
        http10,
    ))
}

/// The lines of a head, as ranges without their CRLF, skipping empty lines
/// before the request line (RFC 9112 section 2.2) and stopping at the empty
/// line that ends the head.
struct Lines<'a> {
    bytes: &'a [u8],
    at: usize,
    started: bool,
}

impl<'a> Lines<'a> {
    fn new(bytes: &'a [u8]) -> Lines<'a> {
        Lines {
            bytes,
            at: 0,
            started: false,
        }
    }
}

impl Iterator for Lines<'_> {
    type Item = Range<usize>;

    fn next(&mut self) -> Option<Range<usize>> {
        loop {
            let rest = &self.bytes[self.at..];
            let end = rest.windows(2).position(|w| w == b"\r\n")?;
            let line = self.at..self.at + end;
            self.at += end + 2;
            if !line.is_empty() {
                self.started = true;
                return Some(line);
            }
            if self.started {
                return None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::reply::Status;
    use super::{Expect, Framing, RequestHead};

    fn parse(text: &str) -> Result<RequestHead, Status> {
        RequestHead::parse(text.as_bytes().to_vec()).map_err(|r| r.status)
    }

    fn forwarded(text: &str, body: &[u8]) -> String {
        let head = parse(text).unwrap();
        String::from_utf8(head.forward(body, "10.0.0.7".parse().unwrap())).unwrap()
    }

    #[test]
    fn simple_get() {
        let head = parse("GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
        assert_eq!(head.method(), b"GET");
        assert_eq!(head.framing, Framing::Empty);
        assert_eq!(head.expect, Expect::Nothing);
        assert!(head.keep_alive && !head.http10 && !head.upgrade && !head.is_head());
    }

    #[test]
    fn local_requests_keep_the_end_to_end_fields() {
        let head = parse(
            "POST /api/v1/messages?x=1 HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, X-Hop\r\n\
             X-Hop: 1\r\nContent-Length: 2\r\nX-Request-ID: r-1\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n",
        )
        .unwrap();
        assert_eq!(head.path(), b"/api/v1/messages");
        let local = head.local(b"{}".to_vec());
        assert_eq!(local.method, "POST");
        assert_eq!(local.target, "/api/v1/messages?x=1");
        assert_eq!(
            local.headers,
            [
                ("Host".to_string(), "a".to_string()),
                ("X-Request-ID".to_string(), "r-1".to_string())
            ]
        );
        assert_eq!(local.body, b"{}");
        assert_eq!(parse("OPTIONS * HTTP/1.1\r\n\r\n").unwrap().path(), b"*");
    }

    #[test]
    fn leading_empty_lines_are_skipped() {
        assert!(parse("\r\n\r\nGET / HTTP/1.1\r\n\r\n").is_ok());
    }

    #[test]
    fn request_line_errors() {
        use Status::*;
        let cases = [
            ("GET / HTTP/2.0\r\n\r\n", VersionNotSupported),
            ("PRI * HTTP/2.0\r\n\r\n", VersionNotSupported),
            ("GET / HTTP/1.2\r\n\r\n", VersionNotSupported),
            ("GET / HTTP/x\r\n\r\n", BadRequest),
            ("GET / http/1.1\r\n\r\n", BadRequest),
            ("GET /  HTTP/1.1\r\n\r\n", BadRequest),
            ("GET / HTTP/1.1 x\r\n\r\n", BadRequest),
            ("GET /\r\n\r\n", BadRequest),
            ("G(T / HTTP/1.1\r\n\r\n", BadRequest),
            ("GET http://a/ HTTP/1.1\r\n\r\n", BadRequest),
            ("GET * HTTP/1.1\r\n\r\n", BadRequest),
            ("GET /\x7f HTTP/1.1\r\n\r\n", BadRequest),
            ("GET /\u{e9} HTTP/1.1\r\n\r\n", BadRequest),
            ("GET /\ra HTTP/1.1\r\n\r\n", BadRequest),
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
            assert_eq!(parse(text).err(), Some(Status::BadRequest), "{text:?}");
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
            assert_eq!(parse(&text).err(), Some(Status::NotImplemented), "{te}");
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
        assert!(
            !parse("GET / HTTP/1.1\r\nConnection: Close\r\n\r\n")
                .unwrap()
                .keep_alive
        );
        assert!(!parse("GET / HTTP/1.0\r\n\r\n").unwrap().keep_alive);
        assert!(
            parse("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
                .unwrap()
                .keep_alive
        );
        let text = "GET / HTTP/1.0\r\nConnection: close\r\nConnection: keep-alive\r\n\r\n";
        assert!(!parse(text).unwrap().keep_alive);
        let text =
            "GET / HTTP/1.1\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n";
        let head = parse(text).unwrap();
        assert!(head.upgrade && head.keep_alive);
        assert!(
            !parse("GET / HTTP/1.1\r\nConnection: upgrade\r\n\r\n")
                .unwrap()
                .upgrade
        );
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
    fn forward_rewrites_framing_and_hop_by_hop_headers() {
        let text = "POST /p?q HTTP/1.0\r\nHost: h\r\nConnection: keep-alive, X-Secret\r\n\
                    X-Secret: s\r\nKeep-Alive: 5\r\nProxy-Authorization: p\r\nTE: trailers\r\n\
                    Transfer-Encoding: chunked\r\nX-Forwarded-For: 6.6.6.6\r\nExpect: 100-continue\r\n\
                    Upgrade: h2c\r\nAccept: */*\r\n\r\n";
        assert_eq!(
            forwarded(text, b"hello"),
            "POST /p?q HTTP/1.1\r\nHost: h\r\nAccept: */*\r\nContent-Length: 5\r\n\
             X-Forwarded-For: 10.0.0.7\r\n\r\nhello"
        );
    }

    #[test]
    fn forward_adds_length_only_where_needed() {
        assert_eq!(
            forwarded("GET / HTTP/1.1\r\nContent-Length: 0\r\n\r\n", b""),
            "GET / HTTP/1.1\r\nX-Forwarded-For: 10.0.0.7\r\n\r\n"
        );
        assert_eq!(
            forwarded("PUT / HTTP/1.1\r\n\r\n", b""),
            "PUT / HTTP/1.1\r\nContent-Length: 0\r\nX-Forwarded-For: 10.0.0.7\r\n\r\n"
        );
    }

    #[test]
    fn forward_keeps_upgrade() {
        let text = "GET /ws HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nX: y\r\n\r\n";
        assert_eq!(
            forwarded(text, b""),
            "GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nX: y\r\nConnection: upgrade\r\n\
             X-Forwarded-For: 10.0.0.7\r\n\r\n"
        );
    }
}
