//! The bytes of an answer's head and its framing: the statuses the server
//! sends, the headers it writes, and a whole answer encoded at once. Plain
//! functions over plain data, shared by the answers built whole
//! ([`super::answer`]) and those written as they are made
//! ([`super::body`]).

use std::io::Write;
use std::time::Duration;

use super::syntax::is_field_value;

/// The statuses the server sends: code, metric label and reason phrase. The
/// phrase is optional in HTTP/1.1 (RFC 9112 section 4), so others go
/// without, and their label is `other`.
const STATUSES: [(u16, &str, &str); 24] = [
    (100, "100", "Continue"),
    (101, "101", "Switching Protocols"),
    (200, "200", "OK"),
    (201, "201", "Created"),
    (202, "202", "Accepted"),
    (204, "204", "No Content"),
    (304, "304", "Not Modified"),
    (400, "400", "Bad Request"),
    (401, "401", "Unauthorized"),
    (403, "403", "Forbidden"),
    (404, "404", "Not Found"),
    (405, "405", "Method Not Allowed"),
    (409, "409", "Conflict"),
    (411, "411", "Length Required"),
    (413, "413", "Payload Too Large"),
    (415, "415", "Unsupported Media Type"),
    (417, "417", "Expectation Failed"),
    (429, "429", "Too Many Requests"),
    (431, "431", "Request Header Fields Too Large"),
    (500, "500", "Internal Server Error"),
    (501, "501", "Not Implemented"),
    (502, "502", "Bad Gateway"),
    (503, "503", "Service Unavailable"),
    (505, "505", "HTTP Version Not Supported"),
];

/// A status code as a label value, without allocating; a code the server
/// does not send shows as `other`.
pub(super) fn status_label(status: u16) -> &'static str {
    STATUSES
        .iter()
        .find(|(code, _, _)| *code == status)
        .map_or("other", |(_, label, _)| label)
}

pub(super) fn reason(status: u16) -> &'static str {
    STATUSES
        .iter()
        .find(|(code, _, _)| *code == status)
        .map_or("", |(_, _, phrase)| phrase)
}

/// An answer to a [`Request`](super::Request): everything but the framing, which the layer
/// adds (`Content-Length`, and `Connection` when it closes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The status code, 200 to 599.
    pub status: u16,
    /// Header fields. A value with a control character is left out, so no
    /// byte can split a header whatever the handler put there.
    pub headers: Vec<(&'static str, String)>,
    /// The body. Left out of the answer to `HEAD`, but still measured for
    /// its `Content-Length`.
    pub body: Vec<u8>,
}

/// How an answer goes to its client: what the request asked of the
/// connection, and how long the client has to take each piece. Plain data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Delivery {
    /// A `HEAD` request: the body is measured, not sent.
    pub(super) head_only: bool,
    /// The connection ends after the answer.
    pub(super) close: bool,
    /// An HTTP/1.0 client's connection stays open (`Connection: keep-alive`).
    pub(super) keep_alive_10: bool,
    /// An HTTP/1.0 request: a body of unknown length is framed by closing
    /// the connection, since such a client cannot read chunks.
    pub(super) http10: bool,
    /// How long the client has to accept each piece of the answer.
    pub(super) write_timeout: Duration,
}

/// Appends `fields` as header lines, leaving out any whose value could
/// split the head.
fn push_fields(out: &mut Vec<u8>, fields: &[(&'static str, String)]) {
    for (name, value) in fields {
        if !is_field_value(value.as_bytes()) {
            continue;
        }
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Framing {
    /// No body and no length: a 1xx, 204 or 304 (RFC 9110 section 8.6).
    None,
    Length(u64),
    Chunked,
    /// The end of the connection, for an HTTP/1.0 client (RFC 9112
    /// section 6.3); the head says `Connection: close`.
    Close,
}

/// Appends the head of an answer: the status line, `headers`, the framing
/// of its body, and the `Connection` field that `close` (the connection
/// ends after it) or `keep_alive_10` (an HTTP/1.0 client's connection
/// stays open) calls for.
pub(super) fn head(
    out: &mut Vec<u8>,
    status: u16,
    headers: &[(&'static str, String)],
    framing: Framing,
    close: bool,
    keep_alive_10: bool,
) {
    // Writing to a Vec cannot fail.
    let _ = write!(out, "HTTP/1.1 {status} {}\r\n", reason(status));
    push_fields(out, headers);
    match framing {
        Framing::None | Framing::Close => {}
        Framing::Length(n) => {
            let _ = write!(out, "Content-Length: {n}\r\n");
        }
        Framing::Chunked => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
    }
    if close || framing == Framing::Close {
        out.extend_from_slice(b"Connection: close\r\n");
    } else if keep_alive_10 {
        out.extend_from_slice(b"Connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// The whole HTTP/1.1 response for `response`. `head_only` leaves the body
/// out (a `HEAD` request); `close` and `keep_alive_10` are as for [`head`].
pub(super) fn encode(
    response: &Reply,
    head_only: bool,
    close: bool,
    keep_alive_10: bool,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(160 + response.body.len());
    let bodiless = matches!(response.status, 100..=199 | 204 | 304);
    let framing = if bodiless {
        Framing::None
    } else {
        Framing::Length(response.body.len() as u64)
    };
    head(
        &mut out,
        response.status,
        &response.headers,
        framing,
        close,
        keep_alive_10,
    );
    if !head_only && !bodiless {
        out.extend_from_slice(&response.body);
    }
    out
}
