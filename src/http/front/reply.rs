//! The responses the front writes itself, when it refuses a request.

/// Why the front refused a request: the status to answer with and a fixed explanation.
///
/// The message is always one of our own constants, never client bytes, so it is
/// safe to put in the response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Reject {
    pub(super) status: Status,
    pub(super) message: &'static str,
}

/// The statuses the front can answer with on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Status {
    BadRequest,
    ExpectationFailed,
    PayloadTooLarge,
    HeadersTooLarge,
    NotImplemented,
    BadGateway,
    Unavailable,
    VersionNotSupported,
}

impl Reject {
    pub(super) const fn bad_request(message: &'static str) -> Reject {
        Reject {
            status: Status::BadRequest,
            message,
        }
    }

    pub(super) const fn expectation_failed(message: &'static str) -> Reject {
        Reject {
            status: Status::ExpectationFailed,
            message,
        }
    }

    pub(super) const fn too_large(message: &'static str) -> Reject {
        Reject {
            status: Status::PayloadTooLarge,
            message,
        }
    }

    pub(super) const fn headers_too_large(message: &'static str) -> Reject {
        Reject {
            status: Status::HeadersTooLarge,
            message,
        }
    }

    pub(super) const fn not_implemented(message: &'static str) -> Reject {
        Reject {
            status: Status::NotImplemented,
            message,
        }
    }

    pub(super) const fn bad_gateway(message: &'static str) -> Reject {
        Reject {
            status: Status::BadGateway,
            message,
        }
    }

    pub(super) const fn unavailable(message: &'static str) -> Reject {
        Reject {
            status: Status::Unavailable,
            message,
        }
    }

    pub(super) const fn version(message: &'static str) -> Reject {
        Reject {
            status: Status::VersionNotSupported,
            message,
        }
    }
}

impl Status {
    /// The numeric status code.
    pub(super) fn code(self) -> u16 {
        match self {
            Status::BadRequest => 400,
            Status::ExpectationFailed => 417,
            Status::PayloadTooLarge => 413,
            Status::HeadersTooLarge => 431,
            Status::NotImplemented => 501,
            Status::BadGateway => 502,
            Status::Unavailable => 503,
            Status::VersionNotSupported => 505,
        }
    }

    fn reason(self) -> &'static str {
        match self {
            Status::BadRequest => "Bad Request",
            Status::ExpectationFailed => "Expectation Failed",
            Status::PayloadTooLarge => "Payload Too Large",
            Status::HeadersTooLarge => "Request Header Fields Too Large",
            Status::NotImplemented => "Not Implemented",
            Status::BadGateway => "Bad Gateway",
            Status::Unavailable => "Service Unavailable",
            Status::VersionNotSupported => "HTTP Version Not Supported",
        }
    }

    fn error_code(self) -> &'static str {
        match self {
            Status::BadRequest => "BAD_REQUEST",
            Status::ExpectationFailed => "EXPECTATION_FAILED",
            Status::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            Status::HeadersTooLarge => "HEADERS_TOO_LARGE",
            Status::NotImplemented => "NOT_IMPLEMENTED",
            Status::BadGateway => "BAD_GATEWAY",
            Status::Unavailable => "UNAVAILABLE",
            Status::VersionNotSupported => "HTTP_VERSION_NOT_SUPPORTED",
        }
    }
}

/// The whole response for `reject`: a JSON error body, a fresh request id
/// (the client's own is not trusted on a request we refuse), and
/// `Connection: close` because after a refusal we no longer trust where the
/// next request starts.
/// `head_only` leaves the body out, as a response to `HEAD` must.
pub(super) fn response(reject: Reject, head_only: bool) -> Vec<u8> {
    let status = reject.status;
    let mut body = String::with_capacity(96);
    body.push_str("{\"error\":{\"code\":\"");
    body.push_str(status.error_code());
    body.push_str("\",\"message\":\"");
    push_json_escaped(&mut body, reject.message);
    body.push_str("\"}}");
    let mut out = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nX-Request-ID: {}\r\nConnection: close\r\n\r\n",
        status.code(),
        status.reason(),
        body.len(),
        crate::http::exchange::new_request_id()
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(body.as_bytes());
    }
    out
}

/// Our messages are plain text, but escaping keeps the body valid JSON if one
/// ever gains a quote.
fn push_json_escaped(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
}

/// The method label for metrics, read from the start of a request head:
/// one of a fixed set, so a client cannot create new label values.
pub(super) fn method_label(head: &[u8]) -> &'static str {
    let token = head.split(|&b| b == b' ').next().unwrap_or_default();
    match std::str::from_utf8(token) {
        Ok(method) if head.len() > token.len() => crate::http::exchange::method_label(method),
        _ => "OTHER",
    }
}

#[cfg(test)]
mod tests {
    use super::{method_label, response, Reject};

    #[test]
    fn error_response_is_json_with_close() {
        let out = response(Reject::too_large("body too \"big\""), false);
        let text = String::from_utf8(out).unwrap();
        let id_at = text.find("X-Request-ID: ").unwrap() + 14;
        let id = &text[id_at..id_at + 16];
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
        let text = text.replace(id, "ID");
        let body =
            "{\"error\":{\"code\":\"PAYLOAD_TOO_LARGE\",\"message\":\"body too \\\"big\\\"\"}}";
        assert_eq!(
            text,
            format!(
                "HTTP/1.1 413 Payload Too Large\r\nContent-Type: application/json\r\n\
                 Content-Length: {}\r\nX-Request-ID: ID\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
        );
    }

    #[test]
    fn head_response_has_no_body() {
        let out = response(Reject::bad_request("x"), true);
        assert!(out.ends_with(b"Connection: close\r\n\r\n"));
        assert!(out.starts_with(b"HTTP/1.1 400 Bad Request\r\n"));
    }

    #[test]
    fn method_labels_are_a_closed_set() {
        assert_eq!(method_label(b"GET / HTTP/1.1\r\n"), "GET");
        assert_eq!(method_label(b"OPTIONS * HTTP/1.1"), "OPTIONS");
        assert_eq!(method_label(b"PATCH "), "PATCH");
        assert_eq!(method_label(b"get / HTTP/1.1"), "OTHER");
        assert_eq!(method_label(b"GETX / HTTP/1.1"), "OTHER");
        assert_eq!(method_label(b"GET"), "OTHER");
        assert_eq!(method_label(b""), "OTHER");
        assert_eq!(method_label(b"\xff\xfe"), "OTHER");
    }
}
