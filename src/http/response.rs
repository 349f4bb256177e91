//! Responses as data, the one place that maps errors to HTTP, and the layer's own refusals.

use serde_json::{json, Value};

use super::wire::{head, Delivery, Framing};
use crate::error::Error;

pub const JSON: &str = "application/json";

/// An answer, built completely before any byte goes out so that a failure can still become a 500.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    pub status: u16,
    /// Content-Type first. Names are ours; values are checked before sending.
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
    /// On a 5xx, what failed in full (paths, offsets, OS error), for the log
    /// line only; the body names nothing on the server, only the request id.
    pub detail: Option<String>,
}

impl Response {
    /// A JSON answer already printed.
    pub fn json_text(status: u16, body: Vec<u8>) -> Response {
        Response {
            status,
            headers: vec![("Content-Type", JSON.to_string())],
            body,
            detail: None,
        }
    }

    pub fn json(status: u16, value: &Value) -> Response {
        Response::json_text(status, value.to_string().into_bytes())
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Response {
        self.headers.push((name, value.into()));
        self
    }

    /// The JSON error answer for an API error code.
    pub fn error(status: u16, code: &str, message: &str) -> Response {
        Response::json(
            status,
            &json!({"error": {"code": code, "message": message}}),
        )
    }
}

impl From<Error> for Response {
    fn from(e: Error) -> Response {
        let (status, code) = match &e {
            Error::Invalid { field, .. } => {
                let error =
                    json!({"code": "BAD_REQUEST", "message": e.to_string(), "field": field});
                return Response::json(400, &json!({ "error": error }));
            }
            Error::NotFound(_) => (404, "NOT_FOUND"),
            Error::Conflict(_) => (409, "CONFLICT"),
            Error::TooLarge(_) => (413, "PAYLOAD_TOO_LARGE"),
            Error::Storage(detail) => {
                let mut r = Response::error(500, "INTERNAL", "storage write failed");
                r.detail = Some(detail.clone());
                return r;
            }
            Error::Exhausted(refused) => {
                // The refusal body the budget milestone specifies, plus the
                // usual error object so generic clients see a JSON error too.
                let mut body = refused.body.clone();
                body["error"] = json!({"code": "BUDGET_EXHAUSTED", "message": refused.message});
                return Response::json(429, &body)
                    .with_header("Retry-After", refused.retry_after_seconds.to_string());
            }
        };
        Response::error(status, code, &e.to_string())
    }
}

impl Response {
    /// The layer's own refusal: our message, never client bytes, under the status's code.
    pub(super) fn refusal(status: u16, message: &str) -> Response {
        let code = match status {
            400 => "BAD_REQUEST",
            413 => "PAYLOAD_TOO_LARGE",
            417 => "EXPECTATION_FAILED",
            431 => "HEADERS_TOO_LARGE",
            501 => "NOT_IMPLEMENTED",
            503 => "UNAVAILABLE",
            _ => "HTTP_VERSION_NOT_SUPPORTED",
        };
        Response::error(status, code, message)
    }

    /// A 413, naming the limit and the setting that raises it.
    pub(super) fn too_large(max_body: u64) -> Response {
        Response::refusal(413, &body_limit_message(max_body))
    }
}

/// What a 413 says: the limit, and the setting that raises it.
pub(super) fn body_limit_message(max_body: u64) -> String {
    format!(
        "the request body is over the limit of {max_body} bytes \
         (raise it with --max-body or CONDUCTOR_MAX_BODY)"
    )
}

/// A refusal with a fresh request id (the client's is not trusted on a
/// refused request) and, for a 503, when to retry; delivered as `d`.
pub(super) fn framed(mut r: Response, d: Delivery) -> Vec<u8> {
    // The length follows the type, in the order this answer has always had.
    r.headers
        .insert(1, ("Content-Length", r.body.len().to_string()));
    if r.status == 503 {
        r.headers.push(("Retry-After", "1".to_string()));
    }
    r.headers
        .push(("X-Request-ID", super::exchange::new_request_id()));
    let mut out = Vec::with_capacity(256 + r.body.len());
    head(&mut out, r.status, &r.headers, Framing::None, d);
    if !d.head_only {
        out.extend_from_slice(&r.body);
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
    use super::*;

    #[test]
    fn errors_map_to_statuses_and_codes() {
        let cases = [
            (Error::invalid("run_id", "bad"), 400, "BAD_REQUEST"),
            (Error::NotFound("x".into()), 404, "NOT_FOUND"),
            (Error::Conflict("x".into()), 409, "CONFLICT"),
            (Error::TooLarge("x".into()), 413, "PAYLOAD_TOO_LARGE"),
            (Error::Storage("x".into()), 500, "INTERNAL"),
        ];
        for (e, status, code) in cases {
            let r = Response::from(e);
            assert_eq!(r.status, status);
            let v: Value = serde_json::from_slice(&r.body).unwrap();
            assert_eq!(v["error"]["code"], code);
        }
        let r = Response::from(Error::invalid("agent", "must be a string"));
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["error"]["field"], "agent");
    }

    #[test]
    fn a_storage_error_names_nothing_on_the_server_and_keeps_the_detail_for_the_log() {
        let detail = "journal /var/lib/conductor/messages/0000000003.jsonl at byte 1567693: \
                      append failed and was rolled back: No space left on device";
        let r = Response::from(Error::Storage(detail.to_string()));
        assert_eq!(r.status, 500);
        let text = String::from_utf8(r.body.clone()).unwrap();
        assert_eq!(
            text,
            r#"{"error":{"code":"INTERNAL","message":"storage write failed"}}"#
        );
        assert_eq!(r.detail.as_deref(), Some(detail));
    }

    fn response(reject: Response, head_only: bool) -> Vec<u8> {
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
        let out = response(Response::too_large(1024), false);
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
        let out = response(Response::refusal(400, "x"), true);
        assert!(out.ends_with(b"Connection: close\r\n\r\n"));
        assert!(out.starts_with(b"HTTP/1.1 400 Bad Request\r\n"));
        let text = String::from_utf8(response(Response::refusal(503, "x"), false)).unwrap();
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
