//! Requests answered in-process: the front's connection thread hands a
//! checked, complete request to a [`LocalHandler`] and writes its answer,
//! with no loopback hop and no thread in between.

use std::io::Write;
use std::net::IpAddr;

/// A request the front answers in-process: its head checked, its body read
/// whole and within the limit. Hop-by-hop fields are left out, as they are
/// for requests sent upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalRequest {
    /// The method token, exactly as the client sent it.
    pub method: String,
    /// The request target: the path and any query, as sent.
    pub target: String,
    /// The client's end-to-end header fields, in order.
    pub headers: Vec<(String, String)>,
    /// The whole body; empty when there is none.
    pub body: Vec<u8>,
    /// The client's address.
    pub peer: IpAddr,
}

/// The answer to a [`LocalRequest`]: everything but the framing, which the
/// front adds (`Content-Length`, and `Connection` when it closes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalResponse {
    /// The status code, 200 to 599.
    pub status: u16,
    /// Header fields. A value with a control character is left out, so no
    /// byte can split a header whatever the handler put there.
    pub headers: Vec<(&'static str, String)>,
    /// The body. Left out of the answer to `HEAD`, but still measured for
    /// its `Content-Length`.
    pub body: Vec<u8>,
}

/// Answers requests in the front's own connection threads. Called from many
/// threads at once, so implementations must be safe to share.
pub trait LocalHandler: Send + Sync {
    /// Whether the request for `method` and `path` (the target without its
    /// query) is answered here; the others, and every protocol upgrade, go
    /// to the upstream server.
    fn handles(&self, method: &[u8], path: &[u8]) -> bool;

    /// Answers `request`, blocking until the answer is ready. `None` means
    /// no answer could be had: the connection is closed without one.
    fn handle(&self, request: LocalRequest) -> Option<LocalResponse>;
}

/// The whole HTTP/1.1 response for `response`. `head_only` leaves the body
/// out (a `HEAD` request); `close` announces that the connection ends after
/// it, and `keep_alive_10` that an HTTP/1.0 client's connection stays open.
pub(super) fn encode(
    response: &LocalResponse,
    head_only: bool,
    close: bool,
    keep_alive_10: bool,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(160 + response.body.len());
    // Writing to a Vec cannot fail.
    let _ = write!(
        out,
        "HTTP/1.1 {} {}\r\n",
        response.status,
        reason(response.status)
    );
    for (name, value) in &response.headers {
        if !value
            .bytes()
            .all(|b| b == b'\t' || (b' '..=b'~').contains(&b))
        {
            continue;
        }
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    // A 1xx, 204 or 304 answer has no body and no length (RFC 9110 8.6).
    let bodiless = matches!(response.status, 100..=199 | 204 | 304);
    if !bodiless {
        let _ = write!(out, "Content-Length: {}\r\n", response.body.len());
    }
    if close {
        out.extend_from_slice(b"Connection: close\r\n");
    } else if keep_alive_10 {
        out.extend_from_slice(b"Connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if !head_only && !bodiless {
        out.extend_from_slice(&response.body);
    }
    out
}

/// The reason phrase of the statuses the server sends; the phrase is
/// optional in HTTP/1.1 (RFC 9112 section 4), so others go without.
fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Payload Too Large",
        415 => "Unsupported Media Type",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::{encode, LocalResponse};

    fn response(status: u16, body: &str) -> LocalResponse {
        LocalResponse {
            status,
            headers: vec![
                ("Content-Type", "text/plain".to_string()),
                ("X-Bad", "a\r\nSet-Cookie: x".to_string()),
                ("X-Request-ID", "r1".to_string()),
            ],
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn answers_are_framed_by_length() {
        let out = encode(&response(200, "hello"), false, false, false);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Request-ID: r1\r\n\
             Content-Length: 5\r\n\r\nhello"
        );
    }

    #[test]
    fn head_answers_keep_the_length_and_drop_the_body() {
        let out = encode(&response(404, "missing"), true, true, false);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nX-Request-ID: r1\r\n\
             Content-Length: 7\r\nConnection: close\r\n\r\n"
        );
    }

    #[test]
    fn http10_keep_alive_is_announced_and_odd_statuses_have_no_phrase() {
        let out = encode(&response(299, ""), false, false, true);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 299 \r\n"), "{text}");
        assert!(text.ends_with("Content-Length: 0\r\nConnection: keep-alive\r\n\r\n"));
    }

    #[test]
    fn bodiless_statuses_carry_no_length_or_body() {
        let out = encode(&response(204, "ignored"), false, false, false);
        let text = String::from_utf8(out).unwrap();
        assert!(!text.contains("Content-Length"), "{text}");
        assert!(text.ends_with("X-Request-ID: r1\r\n\r\n"));
    }
}
