//! Responses as plain data, and the one place that maps errors to HTTP.

use serde_json::{json, Value};

use crate::error::Error;

pub const JSON: &str = "application/json";

/// An answer, built completely before any byte goes out so that a failure
/// can still become a 500.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    /// Extra headers. Names are ours; values are checked before sending.
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
            content_type: JSON,
            headers: Vec::new(),
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

    pub fn method_not_allowed(allow: &'static str) -> Response {
        let message = format!("allowed methods: {allow}");
        Response::error(405, "METHOD_NOT_ALLOWED", &message).with_header("Allow", allow)
    }

    pub fn unauthorized() -> Response {
        Response::error(401, "UNAUTHORIZED", "a valid API key is required")
            .with_header("WWW-Authenticate", "Bearer realm=\"conductor\"")
    }

    /// An internal error: `message` for the client, `detail` for the log.
    pub fn internal(message: &str, detail: impl Into<String>) -> Response {
        let mut r = Response::error(500, "INTERNAL", message);
        r.detail = Some(detail.into());
        r
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
            Error::Storage(detail) => return Response::internal("storage write failed", detail),
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
}
