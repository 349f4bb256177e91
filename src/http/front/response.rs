//! A response head from the upstream: checked line by line, then written
//! to the client as is, or with our connection headers.

use std::io::BufRead;
use std::ops::Range;

use super::chunked::read_line;
use super::syntax::{content_length, list_items, split_field};
use super::upstream::ExchangeError;

/// The largest response head accepted from upstream.
pub(super) const MAX_RESPONSE_HEAD: usize = 64 * 1024;

/// How the response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Body {
    None,
    Length(u64),
    Chunked,
    UntilClose,
}

/// A response head from upstream, checked line by line.
pub(super) struct ResponseHead {
    pub(super) status: u16,
    /// The lines without their CRLF; `lines[0]` is the status line.
    bytes: Vec<u8>,
    lines: Vec<Range<usize>>,
    /// For each header line, its name as a range into `bytes`.
    names: Vec<Range<usize>>,
    pub(super) body: Body,
    pub(super) upstream_closes: bool,
}

impl ResponseHead {
    pub(super) fn read(r: &mut impl BufRead) -> Result<ResponseHead, ExchangeError> {
        const MALFORMED: ExchangeError =
            ExchangeError::BadResponse("the upstream response is malformed");
        let mut bytes = Vec::new();
        let mut lines = Vec::new();
        let mut names = Vec::new();
        let status_line = read_line(r, MAX_RESPONSE_HEAD, &mut bytes).map_err(|_| MALFORMED)?;
        let status = status_code(&bytes[status_line.clone()]).ok_or(MALFORMED)?;
        lines.push(status_line);
        let (mut length, mut chunked, mut transfer_encoding, mut upstream_closes) =
            (None, false, false, false);
        loop {
            let limit = MAX_RESPONSE_HEAD.saturating_sub(bytes.len());
            let line = read_line(r, limit, &mut bytes).map_err(|_| MALFORMED)?;
            if line.is_empty() {
                break;
            }
            let (name, value) = split_field(&bytes[line.clone()]).ok_or(MALFORMED)?;
            let shift = |r: Range<usize>| r.start + line.start..r.end + line.start;
            let (name, value) = (shift(name), shift(value));
            let (n, v) = (&bytes[name.clone()], &bytes[value]);
            if n.eq_ignore_ascii_case(b"content-length") {
                let len = content_length(v).ok_or(MALFORMED)?;
                if length.is_some_and(|old| old != len) {
                    return Err(MALFORMED);
                }
                length = Some(len);
            } else if n.eq_ignore_ascii_case(b"transfer-encoding") {
                transfer_encoding = true;
                chunked = list_items(v)
                    .last()
                    .is_some_and(|c| c.eq_ignore_ascii_case(b"chunked"));
            } else if n.eq_ignore_ascii_case(b"connection") {
                upstream_closes |= list_items(v).any(|o| o.eq_ignore_ascii_case(b"close"));
            }
            lines.push(line);
            names.push(name);
        }
        let body = match (transfer_encoding, chunked, length) {
            (true, _, Some(_)) => return Err(MALFORMED),
            (true, true, None) => Body::Chunked,
            (true, false, None) => Body::UntilClose,
            (false, _, Some(n)) => Body::Length(n),
            (false, _, None) => Body::UntilClose,
        };
        Ok(ResponseHead {
            status,
            bytes,
            lines,
            names,
            body,
            upstream_closes,
        })
    }

    /// The head exactly as the upstream sent it.
    pub(super) fn write_verbatim(&self, out: &mut Vec<u8>) {
        for line in &self.lines {
            out.extend_from_slice(&self.bytes[line.clone()]);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
    }

    /// The head for the client: the upstream's connection headers are
    /// replaced by our own decision, and an HTTP/1.0 client gets no
    /// Transfer-Encoding, because we decode the chunks for it.
    pub(super) fn write_for_client(&self, out: &mut Vec<u8>, http10: bool, close: bool) {
        out.extend_from_slice(&self.bytes[self.lines[0].clone()]);
        out.extend_from_slice(b"\r\n");
        for (line, name) in self.lines[1..].iter().zip(&self.names) {
            let name = &self.bytes[name.clone()];
            let skip = name.eq_ignore_ascii_case(b"connection")
                || name.eq_ignore_ascii_case(b"keep-alive")
                || http10 && name.eq_ignore_ascii_case(b"transfer-encoding");
            if !skip {
                out.extend_from_slice(&self.bytes[line.clone()]);
                out.extend_from_slice(b"\r\n");
            }
        }
        if close {
            out.extend_from_slice(b"Connection: close\r\n");
        } else if http10 {
            out.extend_from_slice(b"Connection: keep-alive\r\n");
        }
        out.extend_from_slice(b"\r\n");
    }
}

/// The status code from `HTTP/1.x SSS[ reason]`.
fn status_code(line: &[u8]) -> Option<u16> {
    let rest = line
        .strip_prefix(b"HTTP/1.1 ")
        .or_else(|| line.strip_prefix(b"HTTP/1.0 "))?;
    let (code, reason) = rest.split_at_checked(3)?;
    if !code.iter().all(u8::is_ascii_digit) || !(reason.is_empty() || reason[0] == b' ') {
        return None;
    }
    let code = code.iter().fold(0u16, |n, &b| n * 10 + u16::from(b - b'0'));
    (100..=599).contains(&code).then_some(code)
}

#[cfg(test)]
mod tests {
    use super::{status_code, Body, ResponseHead};
    use std::io::BufReader;

    fn head(text: &str) -> Option<ResponseHead> {
        ResponseHead::read(&mut BufReader::new(text.as_bytes())).ok()
    }

    #[test]
    fn status_lines() {
        assert_eq!(status_code(b"HTTP/1.1 200 OK"), Some(200));
        assert_eq!(status_code(b"HTTP/1.0 404"), Some(404));
        assert_eq!(status_code(b"HTTP/1.1 101 Switching Protocols"), Some(101));
        assert_eq!(status_code(b"HTTP/2 200 OK"), None);
        assert_eq!(status_code(b"HTTP/1.1 20 OK"), None);
        assert_eq!(status_code(b"HTTP/1.1 2000 OK"), None);
        assert_eq!(status_code(b"HTTP/1.1 099 OK"), None);
    }

    #[test]
    fn response_framing() {
        let body = |text: &str| head(text).map(|h| h.body);
        assert_eq!(
            body("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"),
            Some(Body::Length(5))
        );
        assert_eq!(
            body("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Some(Body::Chunked)
        );
        assert_eq!(
            body("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n"),
            Some(Body::UntilClose)
        );
        assert_eq!(body("HTTP/1.1 200 OK\r\n\r\n"), Some(Body::UntilClose));
        assert_eq!(
            body("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"),
            None
        );
        assert_eq!(
            body("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"),
            None
        );
        assert_eq!(body("HTTP/1.1 200 OK\r\nBad Header\r\n\r\n"), None);
        assert_eq!(body("HTTP/1.1 200 OK\r\nX: a\r\nY: b\nZ: c\r\n\r\n"), None);
    }

    #[test]
    fn client_head_replaces_connection_headers() {
        let h = head(
            "HTTP/1.1 200 OK\r\nConnection: close\r\nTransfer-Encoding: chunked\r\nX: y\r\n\r\n",
        )
        .unwrap();
        assert!(h.upstream_closes);
        let mut out = Vec::new();
        h.write_for_client(&mut out, false, false);
        assert_eq!(
            out,
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX: y\r\n\r\n"
        );
        out.clear();
        h.write_for_client(&mut out, true, true);
        assert_eq!(out, b"HTTP/1.1 200 OK\r\nX: y\r\nConnection: close\r\n\r\n");
        out.clear();
        h.write_verbatim(&mut out);
        assert_eq!(
            out,
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nTransfer-Encoding: chunked\r\nX: y\r\n\r\n"
        );
    }
}
