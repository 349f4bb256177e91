//! The answers the layer gives on its own, when it refuses a request before
//! any handler sees it.

use std::borrow::Cow;

use serde_json::json;

use super::wire::{head, Delivery, Framing};

/// Why a request was refused: a status and a message that is always our
/// own text, never client bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Reject {
    pub(super) status: u16,
    pub(super) message: Cow<'static, str>,
}

impl Reject {
    pub(super) const fn new(status: u16, message: &'static str) -> Reject {
        Reject {
            status,
            message: Cow::Borrowed(message),
        }
    }

    pub(super) fn too_large(max_body: u64) -> Reject {
        Reject {
            status: 413,
            message: Cow::Owned(body_limit_message(max_body)),
        }
    }

    fn error_code(&self) -> &'static str {
        match self.status {
            400 => "BAD_REQUEST",
            413 => "PAYLOAD_TOO_LARGE",
            417 => "EXPECTATION_FAILED",
            431 => "HEADERS_TOO_LARGE",
            501 => "NOT_IMPLEMENTED",
            503 => "UNAVAILABLE",
            _ => "HTTP_VERSION_NOT_SUPPORTED",
        }
    }
}

/// What a 413 says: the limit, and the setting that raises it.
pub(super) fn body_limit_message(max_body: u64) -> String {
    format!(
        "the request body is over the limit of {max_body} bytes \
         (raise it with --max-body or CONDUCTOR_MAX_BODY)"
    )
}

/// A JSON error with a fresh request id (the client's is not trusted on a
/// refused request) and, for a 503, when to retry; delivered as `d`.
pub(super) fn framed(reject: Reject, d: Delivery) -> Vec<u8> {
    let error = json!({"code": reject.error_code(), "message": reject.message});
    let body = json!({ "error": error }).to_string();
    let mut headers = vec![
        ("Content-Type", "application/json".to_string()),
        ("Content-Length", body.len().to_string()),
    ];
    if reject.status == 503 {
        headers.push(("Retry-After", "1".to_string()));
    }
    headers.push(("X-Request-ID", super::exchange::new_request_id()));
    let mut out = Vec::with_capacity(256 + body.len());
    // The length is among the fields, in the order this answer has always had.
    head(&mut out, reject.status, &headers, Framing::None, d);
    if !d.head_only {
        out.extend_from_slice(body.as_bytes());
    }
    out
}

/// The method label for metrics, read from the start of a request head.
pub(super) fn method_label(head: &[u8]) -> &'static str {
    let token = head.split(|&b| b == b' ').next().unwrap_or_default();
    match std::str::from_utf8(token) {
        Ok(method) if head.len() > token.len() => super::exchange::method_label(method),
        _ => "OTHER",
    }
}

#[cfg(test)]
mod tests {
    use super::super::wire::Delivery;
    use super::{framed, method_label, Reject};

    fn response(reject: Reject, head_only: bool) -> Vec<u8> {
        let close = true;
        framed(
            reject,
            Delivery {
                head_only,
                close,
                http10: false,
            },
        )
    }

    #[test]
    fn error_response_is_json_with_close() {
        let out = response(Reject::too_large(1024), false);
        let text = String::from_utf8(out).unwrap();
        let id_at = text.find("X-Request-ID: ").unwrap() + 14;
        let id = &text[id_at..id_at + 16];
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
        let text = text.replace(id, "ID");
        let body =
            "{\"error\":{\"code\":\"PAYLOAD_TOO_LARGE\",\"message\":\"the request body is over \
            the limit of 1024 bytes (raise it with --max-body or CONDUCTOR_MAX_BODY)\"}}";
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
    fn head_response_has_no_body_and_busy_says_when_to_retry() {
        let out = response(Reject::new(400, "x"), true);
        assert!(out.ends_with(b"Connection: close\r\n\r\n"));
        assert!(out.starts_with(b"HTTP/1.1 400 Bad Request\r\n"));
        let text = String::from_utf8(response(Reject::new(503, "x"), false)).unwrap();
        assert!(text.starts_with("HTTP/1.1 503 Service Unavailable\r\n"));
        assert!(text.contains("\r\nRetry-After: 1\r\n"), "{text}");
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
