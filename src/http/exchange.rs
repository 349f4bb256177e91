//! One request and its answer. The HTTP handlers see this instead of
//! tiny_http's types or the front's; it counts, logs and sends exactly one
//! answer.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use serde_json::json;

use super::front::{Answer, LocalRequest, LocalResponse};
use super::response::{safe_header_value, Response};
use crate::app::App;
use crate::error::Error;

/// A request in flight and the duty to answer it. Safe to move to another
/// thread (the journal committer answers durable writes).
///
/// Dropping it unanswered, including while a handler panics, answers 500:
/// every request gets exactly one counted and logged answer.
pub struct Exchange {
    /// Where the answer goes; `None` once it is sent.
    reply: Option<Reply>,
    app: Arc<App>,
    method: &'static str,
    path: String,
    query: String,
    request_id: String,
    started: Instant,
    /// Extra fields for the request's log line, such as the run it concerns.
    fields: Vec<(&'static str, serde_json::Value)>,
}

/// Where an exchange's answer goes.
enum Reply {
    /// Back through tiny_http, which serves the streaming routes.
    Tiny(tiny_http::Request),
    /// To the front, which writes it to the client.
    Local {
        headers: Vec<(String, String)>,
        body: Vec<u8>,
        answer: Answer,
    },
}

/// The method label: one of a fixed set, so clients cannot grow the series.
pub fn method_label(method: &str) -> &'static str {
    const KNOWN: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"];
    KNOWN
        .into_iter()
        .find(|known| *known == method)
        .unwrap_or("OTHER")
}

/// True for an `X-Request-ID` we keep: 1–64 of `[A-Za-z0-9._:-]`.
pub fn valid_request_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// A new 16-hex-digit request id.
pub fn new_request_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let n = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(n);
    format!("{:016x}", h.finish())
}

impl Exchange {
    /// Wraps a request from tiny_http.
    pub fn new(request: tiny_http::Request, app: Arc<App>) -> Exchange {
        let method = method_label(request.method().as_str());
        let target = request.url().to_string();
        let request_id = request
            .headers()
            .iter()
            .find(|h| h.field.equiv("X-Request-ID"))
            .map(|h| h.value.as_str().to_string());
        Exchange::with(Reply::Tiny(request), app, method, target, request_id)
    }

    /// Wraps a request the front answers in-process; the answer goes
    /// through `answer`, exactly once, from whichever thread finishes the
    /// exchange.
    pub fn local(request: LocalRequest, answer: Answer, app: Arc<App>) -> Exchange {
        let method = method_label(&request.method);
        let request_id = find_header(&request.headers, "X-Request-ID").map(str::to_string);
        let reply = Reply::Local {
            headers: request.headers,
            body: request.body,
            answer,
        };
        Exchange::with(reply, app, method, request.target, request_id)
    }

    fn with(
        reply: Reply,
        app: Arc<App>,
        method: &'static str,
        target: String,
        request_id: Option<String>,
    ) -> Exchange {
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p.to_string(), q.to_string()),
            None => (target, String::new()),
        };
        let request_id = request_id
            .map(|id| id.trim().to_string())
            .filter(|id| valid_request_id(id))
            .unwrap_or_else(new_request_id);
        Exchange {
            reply: Some(reply),
            app,
            method,
            path,
            query,
            request_id,
            started: Instant::now(),
            fields: Vec::new(),
        }
    }

    /// The method label (GET, POST, …, or OTHER).
    pub fn method(&self) -> &'static str {
        self.method
    }

    /// The path, without the query.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The request id echoed on the answer.
    pub fn request_id(&self) -> &str {
        &self.request_id
    }

    /// The application.
    pub fn app(&self) -> &Arc<App> {
        &self.app
    }

    /// The first value of query parameter `key`, percent-decoded.
    pub fn query(&self, key: &str) -> Option<String> {
        self.query.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k) == key).then(|| percent_decode(v))
        })
    }

    /// The value of header `name`, if present.
    pub fn header(&self, name: &str) -> Option<String> {
        match self.reply.as_ref()? {
            Reply::Tiny(request) => request
                .headers()
                .iter()
                .find(|h| h.field.as_str().as_str().eq_ignore_ascii_case(name))
                .map(|h| h.value.as_str().to_string()),
            Reply::Local { headers, .. } => find_header(headers, name).map(str::to_string),
        }
    }

    /// Reads the body, refusing one over the configured `--max-body`
    /// whether its Content-Length says so or a chunked body grows past it.
    pub fn read_body(&mut self) -> Result<Vec<u8>, Error> {
        let max = self.app.config.max_body;
        let too_large = || Error::TooLarge(format!("the body limit is {max} bytes"));
        let request = match self.reply.as_mut() {
            Some(Reply::Tiny(request)) => request,
            // The front has read it whole, within the same limit.
            Some(Reply::Local { body, .. }) if body.len() as u64 <= max => {
                return Ok(std::mem::take(body))
            }
            Some(Reply::Local { .. }) => return Err(too_large()),
            None => return Ok(Vec::new()),
        };
        if request.body_length().is_some_and(|n| n as u64 > max) {
            return Err(too_large());
        }
        let mut body = Vec::new();
        request
            .as_reader()
            .take(max + 1)
            .read_to_end(&mut body)
            .map_err(|e| Error::invalid("body", format!("could not be read: {e}")))?;
        if body.len() as u64 > max {
            return Err(too_large());
        }
        Ok(body)
    }

    /// Adds a field to this request's log line.
    pub fn annotate(&mut self, key: &'static str, value: serde_json::Value) {
        self.fields.push((key, value));
    }

    /// Sends the answer: adds the request id, counts it and logs it.
    pub fn send(mut self, response: Response) {
        self.finish(response);
    }

    fn finish(&mut self, response: Response) {
        let Some(reply) = self.reply.take() else {
            return;
        };
        let status = response.status;
        let bytes = response.body.len();
        // Names are ours; values are checked so no client byte can split a
        // header (tiny_http accepts CR and LF).
        let headers: Vec<(&'static str, String)> =
            [("Content-Type", response.content_type.to_string())]
                .into_iter()
                .chain(response.headers)
                .chain([("X-Request-ID", self.request_id.clone())])
                .filter(|(_, value)| safe_header_value(value))
                .collect();
        self.app
            .http
            .requests
            .inc(&[self.method, status_text(status)]);
        match reply {
            Reply::Tiny(request) => {
                let mut out =
                    tiny_http::Response::from_data(response.body).with_status_code(status);
                for (name, value) in headers {
                    if let Ok(h) = tiny_http::Header::from_bytes(name.as_bytes(), value.as_bytes())
                    {
                        out.add_header(h);
                    }
                }
                let _ = request.respond(out);
            }
            Reply::Local { answer, .. } => answer.send(LocalResponse {
                status,
                headers,
                body: response.body,
            }),
        }
        self.log_answer(status, bytes);
    }

    fn log_answer(&mut self, status: u16, bytes: usize) {
        let mut fields = vec![
            ("method", json!(self.method)),
            ("path", json!(self.path)),
            ("status", json!(status)),
            ("bytes", json!(bytes)),
            (
                "duration_ms",
                json!((self.started.elapsed().as_secs_f64() * 1e6).round() / 1e3),
            ),
            ("request_id", json!(self.request_id)),
        ];
        fields.append(&mut self.fields);
        self.app.log.info("request", &fields);
    }

    /// The address of the peer tiny_http got the request from (the front);
    /// `None` for a request answered in-process.
    pub fn remote_addr(&self) -> Option<SocketAddr> {
        match self.reply.as_ref()? {
            Reply::Tiny(request) => request.remote_addr().copied(),
            Reply::Local { .. } => None,
        }
    }

    /// The tiny_http request, taken for a streamed answer. A request answered
    /// in-process stays, and is answered 500 when the exchange drops: the
    /// front sends the streaming routes to tiny_http, so this is a bug.
    fn take_tiny(&mut self) -> Option<tiny_http::Request> {
        match self.reply.take()? {
            Reply::Tiny(request) => Some(request),
            local => {
                self.reply = Some(local);
                None
            }
        }
    }

    /// Answers `200` with a chunked body the caller streams: writes the head
    /// (`content_type`, `headers`, `Transfer-Encoding: chunked` and the
    /// request id), counts and logs the answer, and hands over the
    /// connection. The caller frames each chunk, flushes when it should, and
    /// ends with the last chunk; it owns the connection until then.
    pub fn stream(
        mut self,
        content_type: &str,
        headers: &[(&'static str, String)],
    ) -> std::io::Result<Box<dyn Write + Send>> {
        let Some(request) = self.take_tiny() else {
            return Err(std::io::Error::other(
                "only tiny_http connections can stream",
            ));
        };
        let mut head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nTransfer-Encoding: chunked\r\n"
        );
        let request_id = [("X-Request-ID", self.request_id.clone())];
        for (name, value) in headers.iter().chain(&request_id) {
            if safe_header_value(value) {
                head.push_str(&format!("{name}: {value}\r\n"));
            }
        }
        head.push_str("\r\n");
        self.app.http.requests.inc(&[self.method, "200"]);
        self.log_answer(200, 0);
        let mut writer = request.into_writer();
        writer.write_all(head.as_bytes())?;
        writer.flush()?;
        Ok(writer)
    }

    /// Answers `101 Switching Protocols` to `protocol` with `headers` and the
    /// request id, counts and logs it, and returns the raw connection.
    pub fn upgrade(
        mut self,
        protocol: &str,
        headers: &[(&'static str, String)],
    ) -> Option<Box<dyn tiny_http::ReadWrite + Send>> {
        let request = self.take_tiny()?;
        let mut out = tiny_http::Response::empty(101);
        let request_id = [("X-Request-ID", self.request_id.clone())];
        for (name, value) in headers.iter().chain(&request_id) {
            if !safe_header_value(value) {
                continue;
            }
            if let Ok(h) = tiny_http::Header::from_bytes(name.as_bytes(), value.as_bytes()) {
                out.add_header(h);
            }
        }
        self.app.http.requests.inc(&[self.method, "101"]);
        self.log_answer(101, 0);
        Some(request.upgrade(protocol, out))
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        if self.reply.is_none() {
            return;
        }
        if std::thread::panicking() {
            self.app.http.panics.inc();
            self.finish(Response::internal("the handler panicked"));
        } else {
            self.finish(Response::internal("the handler gave no answer"));
        }
    }
}

/// A status code as a label value, without allocating for the codes the
/// server sends; any other shows as `other`.
pub fn status_text(status: u16) -> &'static str {
    match status {
        100 => "100",
        101 => "101",
        200 => "200",
        201 => "201",
        202 => "202",
        204 => "204",
        304 => "304",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        405 => "405",
        409 => "409",
        411 => "411",
        413 => "413",
        415 => "415",
        417 => "417",
        429 => "429",
        431 => "431",
        502 => "502",
        500 => "500",
        501 => "501",
        503 => "503",
        505 => "505",
        _ => "other",
    }
}

/// The value of the first field named `name`, compared case-insensitively.
fn find_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(field, _)| field.eq_ignore_ascii_case(name))
        .map(|(_, value)| value.as_str())
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_checked() {
        assert!(valid_request_id("abc-123_x.y:z"));
        assert!(!valid_request_id(""));
        assert!(!valid_request_id(&"a".repeat(65)));
        assert!(!valid_request_id("a b"));
        assert!(!valid_request_id("a\r\nb"));
        let a = new_request_id();
        assert!(valid_request_id(&a) && a != new_request_id());
    }

    fn app(name: &str) -> (std::path::PathBuf, Arc<App>) {
        let dir = std::env::temp_dir().join(format!("exchange-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let config = crate::app::AppConfig {
            data_dir: dir.clone(),
            api_key: None,
            max_body: 8,
            budget: crate::budget::BudgetConfig::new(&dir),
            otlp: None,
            declared: Vec::new(),
        };
        let log = crate::log::Logger::new(crate::log::Level::Error, crate::log::LogFormat::Json);
        (dir, App::open(config, log).unwrap())
    }

    fn local(target: &str, headers: &[(&str, &str)], body: &[u8]) -> LocalRequest {
        LocalRequest {
            method: "POST".into(),
            target: target.into(),
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            body: body.to_vec(),
        }
    }

    #[test]
    fn local_exchanges_answer_once_with_safe_headers() {
        let (dir, app) = app("local");
        let (answer, slot) = Answer::for_test();
        let headers = [("x-request-id", "abc"), ("X-Key", "k")];
        let mut ex = Exchange::local(
            local("/p?a=b%20c", &headers, b"12345678"),
            answer,
            app.clone(),
        );
        assert_eq!(
            (ex.method(), ex.path(), ex.request_id()),
            ("POST", "/p", "abc")
        );
        assert_eq!(ex.query("a").as_deref(), Some("b c"));
        assert_eq!(ex.header("x-KEY").as_deref(), Some("k"));
        assert_eq!(ex.read_body().unwrap(), b"12345678");
        assert!(ex.remote_addr().is_none());
        ex.send(Response::json(201, &json!({})).with_header("X-Bad", "a\r\nb"));
        assert_eq!(
            slot.answered().unwrap(),
            "HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nX-Request-ID: abc\r\n\
             Content-Length: 2\r\n\r\n{}"
        );

        let (answer, slot) = Answer::for_test();
        let mut ex = Exchange::local(local("/p", &[], b"123456789"), answer, app.clone());
        assert!(matches!(ex.read_body(), Err(Error::TooLarge(_))));
        drop(ex);
        assert!(slot.answered().unwrap().starts_with("HTTP/1.1 500 "));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_panic_is_answered_500_and_counted_and_streams_are_refused() {
        let (dir, app) = app("panic");
        let (answer, slot) = Answer::for_test();
        let ex = Exchange::local(local("/p", &[], b""), answer, app.clone());
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            let _held = ex;
            panic!("handler bug");
        }));
        assert!(outcome.is_err());
        let answered = slot.answered().unwrap();
        assert!(answered.starts_with("HTTP/1.1 500 "), "{answered}");
        assert!(answered.contains("the handler panicked"));
        assert_eq!(app.http.panics.get(), 1.0);

        let (answer, slot) = Answer::for_test();
        let ex = Exchange::local(local("/p", &[], b""), answer, app.clone());
        assert!(ex.stream("text/event-stream", &[]).is_err());
        assert!(slot.answered().unwrap().starts_with("HTTP/1.1 500 "));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b+c"), "a b c");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(percent_decode("MSG-1"), "MSG-1");
    }
}
