//! The bytes of an answer's head and its framing, shared by the answers
//! built whole and those written as they are made ([`super::body`]).

use std::io::Write;

/// An answer to a [`super::Request`], but for the framing the layer adds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The status code, 200 to 599.
    pub status: u16,
    /// Header fields; one whose value has a control character is left out.
    pub headers: Vec<(&'static str, String)>,
    /// The body; an answer to `HEAD` has only its length.
    pub body: Vec<u8>,
}

/// The statuses sent: code, label, phrase. Others have no phrase (RFC 9112 section 4).
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

/// A status code as a label value; a code the server does not send shows as `other`.
pub(super) fn status_label(status: u16) -> &'static str {
    status_entry(status).map_or("other", |(_, label, _)| label)
}

fn status_entry(status: u16) -> Option<&'static (u16, &'static str, &'static str)> {
    STATUSES.iter().find(|(code, _, _)| *code == status)
}

/// How an answer goes to its client: what the request asked of the connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Delivery {
    /// A `HEAD` request: the body is measured, not sent.
    pub(super) head_only: bool,
    /// The connection ends after the answer.
    pub(super) close: bool,
    /// HTTP/1.0: kept open only on `Connection: keep-alive`, and unable to read chunks.
    pub(super) http10: bool,
}

/// How a message's body is delimited, a request's or an answer's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Framing {
    /// No body, no length: a bodiless request, or a 1xx, 204 or 304 (RFC 9110 section 8.6).
    None,
    Length(u64),
    Chunked,
    /// The end of the connection, for an HTTP/1.0 client (RFC 9112 section 6.3).
    Close,
}

/// Appends the head of an answer: the status line, `headers`, the framing
/// of its body, and the `Connection` field that `d` calls for.
pub(super) fn head(
    out: &mut Vec<u8>,
    status: u16,
    headers: &[(&'static str, String)],
    framing: Framing,
    d: Delivery,
) {
    // Writing to a Vec cannot fail.
    let _ = write!(
        out,
        "HTTP/1.1 {status} {}\r\n",
        status_entry(status).map_or("", |(_, _, phrase)| phrase)
    );
    // A value that could split the head is left out.
    for (name, value) in headers.iter().filter(|(_, v)| is_field_value(v.as_bytes())) {
        for part in [name.as_bytes(), b": ", value.as_bytes(), b"\r\n"] {
            out.extend_from_slice(part);
        }
    }
    match framing {
        Framing::None | Framing::Close => {}
        Framing::Length(n) => {
            let _ = write!(out, "Content-Length: {n}\r\n");
        }
        Framing::Chunked => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
    }
    let connection = match (d.close || framing == Framing::Close, d.http10) {
        (true, _) => "Connection: close\r\n",
        (false, true) => "Connection: keep-alive\r\n",
        (false, false) => "",
    };
    out.extend_from_slice(connection.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// What ends a chunked body: the last chunk and an empty trailer section.
pub(super) const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// Appends `data` as one chunk of a chunked body.
pub(super) fn chunk(out: &mut Vec<u8>, data: &[u8]) {
    // Writing to a Vec cannot fail.
    let _ = write!(out, "{:x}\r\n", data.len());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// The whole HTTP/1.1 response for `response`, delivered as `d`.
pub(super) fn encode(response: &Reply, d: Delivery) -> Vec<u8> {
    let mut out = Vec::with_capacity(160 + response.body.len());
    let bodiless = matches!(response.status, 100..=199 | 204 | 304);
    let framing = if bodiless {
        Framing::None
    } else {
        Framing::Length(response.body.len() as u64)
    };
    head(&mut out, response.status, &response.headers, framing, d);
    if !d.head_only && !bodiless {
        out.extend_from_slice(&response.body);
    }
    out
}

/// Whether `value` is visible ASCII, space or tab, so that it cannot split a head.
pub(super) fn is_field_value(value: &[u8]) -> bool {
    value
        .iter()
        .all(|&b| b == b'\t' || (b' '..=b'~').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::{encode, Delivery, Reply};

    fn response(status: u16, body: &str) -> Reply {
        Reply {
            status,
            headers: vec![
                ("Content-Type", "text/plain".to_string()),
                ("X-Bad", "a\r\nSet-Cookie: x".to_string()),
                ("X-Request-ID", "r1".to_string()),
            ],
            body: body.as_bytes().to_vec(),
        }
    }

    fn delivery(head_only: bool, close: bool, http10: bool) -> Delivery {
        Delivery {
            head_only,
            close,
            http10,
        }
    }

    #[test]
    fn answers_are_framed_by_length() {
        let out = encode(&response(200, "hello"), delivery(false, false, false));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Request-ID: r1\r\n\
             Content-Length: 5\r\n\r\nhello"
        );
    }

    #[test]
    fn head_answers_keep_the_length_and_drop_the_body() {
        let out = encode(&response(404, "missing"), delivery(true, true, false));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nX-Request-ID: r1\r\n\
             Content-Length: 7\r\nConnection: close\r\n\r\n"
        );
    }

    #[test]
    fn http10_keep_alive_is_announced_and_odd_statuses_have_no_phrase() {
        let out = encode(&response(299, ""), delivery(false, false, true));
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 299 \r\n"), "{text}");
        assert!(text.ends_with("Content-Length: 0\r\nConnection: keep-alive\r\n\r\n"));
    }

    #[test]
    fn bodiless_statuses_carry_no_length_or_body() {
        let out = encode(&response(204, "ignored"), delivery(false, false, false));
        let text = String::from_utf8(out).unwrap();
        assert!(!text.contains("Content-Length"), "{text}");
        assert!(text.ends_with("X-Request-ID: r1\r\n\r\n"));
    }
}
