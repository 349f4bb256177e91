//! The middleware handlers see: it gives each request an id, and counts and logs its answer.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use serde_json::{json, Value};

use super::body::BodyWriter;
use super::response::Response;
use super::wire::status_label;
use super::{Answer, Reply, Request, Takeover};
use crate::app::App;
use crate::error::Error;
use crate::log::Level;

/// A request in flight, as its handler sees it; what makes the answer counts and logs it.
#[derive(Clone)]
pub struct Exchange {
    request: Request,
    app: Arc<App>,
    method: &'static str,
    /// Where the query starts in the target, if it has one.
    query_at: Option<usize>,
    request_id: String,
    started: Instant,
    /// Extra fields for the request's log line, such as the run it concerns.
    fields: Vec<(&'static str, Value)>,
}

/// The method label: a method the server implements, or `OTHER`, so clients cannot grow the series.
pub(super) fn method_label(method: &str) -> &'static str {
    const KNOWN: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"];
    KNOWN.into_iter().find(|k| *k == method).unwrap_or("OTHER")
}

/// True for an `X-Request-ID` we keep: 1–64 of `[A-Za-z0-9._:-]`.
fn valid_request_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// A 5xx is the server failing (a full disk, say), which an operator keeping
/// only warnings and errors must still see; any other answer is routine.
fn request_level(status: u16) -> Level {
    match status {
        500.. => Level::Error,
        _ => Level::Info,
    }
}

pub(super) fn new_request_id() -> String {
    use std::hash::BuildHasher;
    let n = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    format!("{:016x}", std::hash::RandomState::new().hash_one(n))
}

impl Exchange {
    pub(super) fn new(request: Request, app: Arc<App>) -> Exchange {
        let request_id = request
            .header("X-Request-ID")
            .map(str::trim)
            .filter(|id| valid_request_id(id))
            .map_or_else(new_request_id, str::to_string);
        Exchange {
            method: method_label(&request.method),
            query_at: request.target.find('?'),
            request,
            app,
            request_id,
            started: Instant::now(),
            fields: Vec::new(),
        }
    }

    pub fn method(&self) -> &'static str {
        self.method
    }

    pub fn path(&self) -> &str {
        &self.request.target[..self.query_at.unwrap_or(self.request.target.len())]
    }

    pub fn app(&self) -> &Arc<App> {
        &self.app
    }

    /// The first value of query parameter `key`, percent-decoded.
    pub fn query(&self, key: &str) -> Option<String> {
        let query = &self.request.target[self.query_at? + 1..];
        query.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k) == key).then(|| percent_decode(v))
        })
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.request.header(name).map(str::to_string)
    }

    /// Takes the body, which the connection read whole and within `--max-body`.
    pub fn read_body(&mut self) -> Result<Vec<u8>, Error> {
        let max = self.app.config.limits.max_body;
        if self.request.body.len() as u64 > max {
            return Err(Error::TooLarge(super::response::body_limit_message(max)));
        }
        Ok(std::mem::take(&mut self.request.body))
    }

    pub fn annotate(&mut self, key: &'static str, value: Value) {
        self.fields.push((key, value));
    }

    /// Answers `r` with the request id; a 5xx's detail goes to the log line,
    /// which carries the id the body gives the client to quote.
    pub fn send(&mut self, mut r: Response) -> Answer {
        if let Some(detail) = r.detail.take() {
            if let Ok(mut body) = serde_json::from_slice::<Value>(&r.body) {
                body["error"]["request_id"] = json!(self.request_id);
                r.body = body.to_string().into_bytes();
            }
            self.fields.push(("error", json!(detail)));
        }
        r.headers.push(("X-Request-ID", self.request_id.clone()));
        self.count(r.status);
        self.log_answer(r.status, r.body.len() as u64);
        let (status, headers, body) = (r.status, r.headers, r.body);
        Answer::Reply(Reply {
            status,
            headers,
            body,
        })
    }

    /// Answers 200 with a body `write` makes as it is sent, after the handler returned.
    /// Check all that can refuse first: once begun, a failure can only cut it short.
    pub fn stream<F>(&mut self, content_type: &'static str, write: F) -> Answer
    where
        F: FnOnce(&mut BodyWriter<'_>) -> io::Result<()> + 'static,
    {
        let headers = vec![
            ("Content-Type", content_type.to_string()),
            ("X-Request-ID", self.request_id.clone()),
        ];
        let mut done = self.clone();
        let producer = move |body: &mut BodyWriter<'_>| {
            let written = write(body);
            // Counted before the end goes out, as a whole answer is: a client
            // asking again sees it counted; a scrape is not in its own output.
            done.count(200);
            if let Err(e) = written.and_then(|()| body.finish()) {
                body.abort();
                let why = format!("the answer was cut short: {e}");
                done.fields.push(("error", json!(why)));
            }
            done.log_answer(200, body.bytes());
        };
        Answer::Stream(headers, Box::new(producer))
    }

    fn count(&self, status: u16) {
        let labels = [self.method, status_label(status)];
        self.app.http.requests.inc(&labels);
    }

    fn log_answer(&mut self, status: u16, bytes: u64) {
        let ms = (self.started.elapsed().as_secs_f64() * 1e6).round() / 1e3;
        let mut fields = vec![
            ("method", json!(self.method)),
            ("path", json!(self.path())),
            ("status", json!(status)),
            ("bytes", json!(bytes)),
            ("duration_ms", json!(ms)),
            ("request_id", json!(self.request_id)),
        ];
        fields.append(&mut self.fields);
        self.app.log.log(request_level(status), "request", &fields);
    }

    /// Answers `status` with `headers` and the request id, and hands the socket to `run`.
    pub fn take_over(
        &mut self,
        status: u16,
        mut headers: Vec<(&'static str, String)>,
        run: Takeover,
    ) -> Answer {
        headers.push(("X-Request-ID", self.request_id.clone()));
        self.count(status);
        self.log_answer(status, 0);
        Answer::TakeOver(status, headers, run)
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'+', _) => out.push(b' '),
            (b'%', Some(b)) => {
                out.push(b);
                i += 2;
            }
            (b, _) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TempDir;

    #[test]
    fn a_failed_answer_is_logged_as_an_error() {
        use crate::log::Level;
        assert_eq!(request_level(500), Level::Error);
        assert_eq!(request_level(503), Level::Error);
        assert_eq!(request_level(404), Level::Info);
        assert_eq!(request_level(201), Level::Info);
    }

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

    fn app(name: &str) -> (TempDir, Arc<App>) {
        let dir = TempDir::new(&format!("exchange-{name}"));
        let mut config = crate::config::Config::for_data_dir(&dir);
        config.limits.max_body = 8;
        config.run_timeout = None;
        let log = crate::testing::quiet();
        (dir, App::open(config, log).unwrap())
    }

    fn request(target: &str, headers: &[(&str, &str)], body: &[u8]) -> Request {
        let (mut text, mut spans) = (String::new(), Vec::new());
        for (name, value) in headers {
            let at = text.len();
            text.push_str(name);
            text.push_str(value);
            spans.push([at..at + name.len(), at + name.len()..text.len()]);
        }
        Request {
            method: "POST".into(),
            target: target.into(),
            head: text,
            fields: spans,
            body: body.to_vec(),
        }
    }

    /// What a client of an HTTP/1.1 keep-alive request reads of a whole answer.
    fn answered(answer: Answer) -> String {
        let Answer::Reply(reply) = answer else {
            panic!("not a whole answer");
        };
        let d = super::super::wire::Delivery::default();
        String::from_utf8(super::super::wire::encode(&reply, d)).unwrap()
    }

    #[test]
    fn exchanges_answer_with_safe_headers() {
        let (_dir, app) = app("local");
        let headers = [("x-request-id", "abc"), ("X-Key", "k")];
        let mut ex = Exchange::new(request("/p?a=b%20c", &headers, b"12345678"), app.clone());
        assert_eq!(
            (ex.method(), ex.path(), ex.request_id.as_str()),
            ("POST", "/p", "abc")
        );
        assert_eq!(ex.query("a").as_deref(), Some("b c"));
        assert_eq!(ex.header("x-KEY").as_deref(), Some("k"));
        assert_eq!(ex.read_body().unwrap(), b"12345678");
        let sent = ex.send(Response::json(201, &json!({})).with_header("X-Bad", "a\r\nb"));
        assert_eq!(
            answered(sent),
            "HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nX-Request-ID: abc\r\n\
             Content-Length: 2\r\n\r\n{}"
        );

        let mut ex = Exchange::new(request("/p", &[], b"123456789"), app.clone());
        assert!(matches!(ex.read_body(), Err(Error::TooLarge(_))));
    }

    /// Runs a streamed answer as a connection thread does, and returns what
    /// the client read and whether the answer ended.
    fn run_stream(answer: Answer) -> (Vec<u8>, bool) {
        use super::super::socket::ClientStream;
        use std::io::Read;
        use std::net::{TcpListener, TcpStream};
        struct Quiet;
        impl super::super::Hooks for Quiet {
            fn request_rejected(&self, _: &str, _: u16) {}
        }
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut peer = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (ours, _) = listener.accept().unwrap();
        let Answer::Stream(headers, write) = answer else {
            panic!("not a streamed answer");
        };
        let client = ClientStream::new(ours, std::time::Duration::from_secs(10)).unwrap();
        let d = super::super::wire::Delivery::default();
        let mut body = BodyWriter::new(&client, &Quiet, d, headers);
        write(&mut body);
        let ended = body.finish().is_ok();
        drop(body);
        drop(client);
        let mut got = Vec::new();
        peer.read_to_end(&mut got).unwrap();
        (got, ended)
    }

    #[test]
    fn a_stream_that_fails_after_its_first_piece_is_cut_short() {
        use std::io::Write;
        let (_dir, app) = app("stream-fails");
        let mut ex = Exchange::new(request("/p", &[], b""), app.clone());
        let answer = ex.stream("text/plain", |out| {
            out.write_all(&vec![b'x'; 100_000])?;
            Err(io::Error::other("the producer failed"))
        });
        let (got, ended) = run_stream(answer);
        let text = String::from_utf8(got).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{}", &text[..40]);
        assert!(text.contains("Transfer-Encoding: chunked\r\n"));
        // One piece went out, and no last chunk after it.
        assert!(text.ends_with(&format!("10000\r\n{}\r\n", "x".repeat(65536))));
        assert!(!ended);
    }

    #[test]
    fn a_5xx_body_carries_the_request_id_and_not_the_detail() {
        let (dir, app) = app("detail");
        let headers = [("x-request-id", "req-42")];
        let mut ex = Exchange::new(request("/p", &headers, b""), app.clone());
        let detail = format!("journal {}/runs.jsonl at byte 7: disk full", dir.display());
        let answered = answered(ex.send(Error::Storage(detail).into()));
        let body = answered.split("\r\n\r\n").nth(1).unwrap();
        let want = r#"{"error":{"code":"INTERNAL","message":"storage write failed","request_id":"req-42"}}"#;
        assert_eq!(body, want);
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b+c"), "a b c");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(percent_decode("MSG-1"), "MSG-1");
    }
}
