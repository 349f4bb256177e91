//! Responses as plain data, and the one place that maps errors to HTTP.

use serde_json::{json, Value};

use crate::error::Error;

/// The content type of every JSON answer.
pub const JSON: &str = "application/json";

/// An answer, built completely before any byte goes out so that a failure
/// can still become a 500.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The Content-Type.
    pub content_type: &'static str,
    /// Extra headers. Names are ours; values are checked before sending.
    pub headers: Vec<(&'static str, String)>,
    /// The body.
    pub body: Vec<u8>,
    /// On a 5xx, what failed in full (paths, offsets, the OS error): for
    /// the request's log line only. The body says what failed in words
    /// that name nothing on the server, and the request id to look for.
    pub detail: Option<String>,
}

impl Response {
    /// A JSON answer.
    pub fn json(status: u16, value: &Value) -> Response {
        Response {
            status,
            content_type: JSON,
            headers: Vec::new(),
            body: value.to_string().into_bytes(),
            detail: None,
        }
    }

    /// Adds a header.
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

    /// 204 with no body.
    pub fn no_content() -> Response {
        Response {
            status: 204,
            content_type: JSON,
            headers: Vec::new(),
            body: Vec::new(),
            detail: None,
        }
    }

    /// 405 with the methods the route allows.
    pub fn method_not_allowed(allow: &'static str) -> Response {
        Response::error(
            405,
            "METHOD_NOT_ALLOWED",
            &format!("allowed methods: {allow}"),
        )
        .with_header("Allow", allow)
    }

    /// 401 with the challenge.
    pub fn unauthorized() -> Response {
        Response::error(401, "UNAUTHORIZED", "a valid API key is required")
            .with_header("WWW-Authenticate", "Bearer realm=\"conductor\"")
    }

    /// 404 for an unknown route.
    pub fn no_route(path: &str) -> Response {
        Response::error(404, "NOT_FOUND", &format!("no route for {path}"))
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
        if let Error::Exhausted(refused) = &e {
            // The refusal body the budget milestone specifies, plus the
            // usual error object so generic clients see a JSON error too.
            let mut body = refused.body.clone();
            body["error"] = json!({"code": "BUDGET_EXHAUSTED", "message": refused.message});
            return Response::json(429, &body)
                .with_header("Retry-After", refused.retry_after_seconds.to_string());
        }
        let (status, code) = match &e {
            Error::Invalid { .. } => (400, "BAD_REQUEST"),
            Error::NotFound(_) => (404, "NOT_FOUND"),
            Error::Conflict(_) => (409, "CONFLICT"),
            Error::TooLarge(_) => (413, "PAYLOAD_TOO_LARGE"),
            Error::Storage(detail) => return Response::internal("storage write failed", detail),
            Error::Exhausted(_) => (500, "INTERNAL"),
        };
        let mut r = Response::error(status, code, &e.to_string());
        if let Error::Invalid { field, .. } = &e {
            r = Response::json(
                status,
                &json!({"error": {"code": code, "message": e.to_string(), "field": field}}),
            );
        }
        r
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
