//! End-to-end tests of the HTTP layer through its public API: a test
//! handler with a few routes behind a real server, a raw HTTP/1.1 client,
//! and hooks that record.

use conductor_metrics::client::{read_response, Received};
use conductor_metrics::http::{Answer, Handler, Hooks, Limits, Reply, Request, Server};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// How long a test waits for anything before failing.
const PATIENCE: Duration = Duration::from_secs(5);

/// What the hooks were told.
#[derive(Default)]
struct Recorder {
    rejected: Mutex<Vec<(String, u16)>>,
    reasons: Mutex<Vec<String>>,
    open: AtomicUsize,
    accept_errors: AtomicUsize,
}

impl Hooks for Recorder {
    fn request_rejected(&self, method: &str, status: u16) {
        self.rejected
            .lock()
            .unwrap()
            .push((method.to_string(), status));
    }
    fn connection_rejected(&self, reason: &str) {
        self.reasons.lock().unwrap().push(reason.to_string());
    }
    fn connections(&self, open: usize) {
        self.open.store(open, Ordering::SeqCst);
    }
    fn accept_error(&self, _: &io::Error) {
        self.accept_errors.fetch_add(1, Ordering::SeqCst);
    }
}

impl Recorder {
    fn has_reason(&self, reason: &str) -> bool {
        self.reasons.lock().unwrap().iter().any(|r| r == reason)
    }

    fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }
}

/// A handler with a few routes:
///
/// - `/stream`: a chunked stream that sends one event, waits for
///   [`Echo::release`], sends another and ends;
/// - `/ws`: `101` to `echo`, then every byte back;
/// - `/big`: 100,000 bytes;
/// - `/none`: a panic, and so no answer at all;
/// - `/later*`: the answer waits for [`Echo::release`];
/// - `/secret*`: refused on the head with 401;
/// - anything else: `METHOD TARGET BODY-LENGTH`, plus `X-A` if sent.
struct Echo {
    /// The targets of the requests handled, in order.
    seen: Mutex<Vec<String>>,
    release: Mutex<Sender<()>>,
    released: Arc<Mutex<Receiver<()>>>,
}

impl Default for Echo {
    fn default() -> Echo {
        let (release, released) = mpsc::channel();
        Echo {
            seen: Mutex::default(),
            release: Mutex::new(release),
            released: Arc::new(Mutex::new(released)),
        }
    }
}

fn reply(body: impl Into<Vec<u8>>) -> Reply {
    Reply {
        status: 200,
        headers: Vec::new(),
        body: body.into(),
    }
}

impl Handler for Echo {
    fn admits(&self, request: &Request) -> bool {
        !request.target.starts_with("/secret")
    }

    fn refuse(&self, _: Request) -> Answer {
        Answer::Reply(Reply {
            status: 401,
            headers: Vec::new(),
            body: b"no".to_vec(),
        })
    }

    fn handle(&self, request: Request) -> Answer {
        self.seen.lock().unwrap().push(request.target.clone());
        match request.target.as_str() {
            "/none" => panic!("no answer"),
            "/stream" => {
                let released = self.released.clone();
                let headers = vec![("Transfer-Encoding", "chunked".to_string())];
                let run = move |mut stream: TcpStream, _: Vec<u8>| {
                    stream.write_all(b"b\r\ndata: one\n\n\r\n").unwrap();
                    released.lock().unwrap().recv().unwrap();
                    let _ = stream.write_all(b"b\r\ndata: two\n\n\r\n0\r\n\r\n");
                };
                Answer::TakeOver(200, headers, Box::new(run))
            }
            "/ws" => {
                let headers = vec![
                    ("Upgrade", "echo".to_string()),
                    ("Connection", "upgrade".to_string()),
                ];
                let run = |mut stream: TcpStream, _: Vec<u8>| {
                    let mut buf = [0u8; 256];
                    while let Ok(n @ 1..) = stream.read(&mut buf) {
                        if stream.write_all(&buf[..n]).is_err() {
                            return;
                        }
                    }
                };
                Answer::TakeOver(101, headers, Box::new(run))
            }
            "/big" => Answer::Reply(reply(vec![b'x'; 100_000])),
            target => {
                let mut text = format!("{} {target} {}", request.method, request.body.len());
                if let Some(a) = request.header("X-A") {
                    text.push_str(&format!(" X-A={a}"));
                }
                if target.starts_with("/later") {
                    self.released.lock().unwrap().recv().unwrap();
                }
                Answer::Reply(reply(text))
            }
        }
    }
}

impl Echo {
    fn urls(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }

    /// Lets the stream of `/stream` go on.
    fn release(&self) {
        self.release.lock().unwrap().send(()).unwrap();
    }

    /// Waits until the handler has taken `target`, then lets its answer go.
    fn release_later(&self, target: &str) {
        wait_until("the handler waits", || {
            self.urls().last().map(String::as_str) == Some(target)
        });
        self.release();
    }
}

fn quick() -> Limits {
    Limits {
        header_timeout: Duration::from_secs(3),
        idle_timeout: Duration::from_secs(3),
        body_timeout: Duration::from_secs(3),
        ..Limits::default()
    }
}

/// A server of a new [`Echo`] within `limits`.
fn start(limits: Limits) -> (Server, Arc<Echo>, Arc<Recorder>) {
    let echo = Arc::new(Echo::default());
    let recorder = Arc::new(Recorder::default());
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let server = Server::with_handler(listener, limits, recorder.clone(), echo.clone()).unwrap();
    (server, echo, recorder)
}

/// A client connection.
struct Client(BufReader<TcpStream>);

impl Client {
    fn connect(server: &Server) -> Client {
        let stream = TcpStream::connect(server.addr()).unwrap();
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        Client(BufReader::new(stream))
    }

    fn send(&mut self, bytes: &[u8]) {
        self.0.get_mut().write_all(bytes).unwrap();
    }

    /// Whether the server has sent something or closed, without waiting.
    fn has_news(&mut self) -> bool {
        let stream = self.0.get_mut();
        stream.set_nonblocking(true).unwrap();
        let peeked = stream.peek(&mut [0; 1]);
        stream.set_nonblocking(false).unwrap();
        !matches!(peeked, Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.0.read_line(&mut line).unwrap();
        assert!(line.ends_with("\r\n"), "{line:?}");
        line.truncate(line.len() - 2);
        line
    }

    /// A response's head, leaving its body to be read.
    fn head(&mut self) -> Received {
        read_response(&mut self.0, true).unwrap()
    }

    fn chunk(&mut self) -> Vec<u8> {
        let size = usize::from_str_radix(&self.line(), 16).unwrap();
        let mut data = vec![0; size + 2];
        self.0.read_exact(&mut data).unwrap();
        assert!(data.ends_with(b"\r\n"));
        data.truncate(size);
        data
    }

    fn reply_to(&mut self, head_request: bool) -> Received {
        read_response(&mut self.0, head_request).unwrap()
    }

    fn reply(&mut self) -> Received {
        self.reply_to(false)
    }

    fn get(&mut self, path: &str) -> Received {
        self.send(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
        self.reply()
    }

    /// True once the server has closed the connection (end of stream or reset).
    fn is_closed(&mut self) -> bool {
        let mut byte = [0u8; 1];
        match self.0.read(&mut byte) {
            Ok(0) => true,
            Ok(_) => false,
            Err(err) => err.kind() == io::ErrorKind::ConnectionReset,
        }
    }
}

fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn keep_alive_requests_share_one_connection() {
    let (server, echo, recorder) = start(quick());
    let mut client = Client::connect(&server);
    assert_eq!(client.get("/a").text(), "GET /a 0");
    client.send(b"POST /b HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello");
    let reply = client.reply();
    assert_eq!((reply.status, reply.text().as_str()), (200, "POST /b 5"));
    assert_eq!(client.get("/c").text(), "GET /c 0");
    assert_eq!(echo.urls(), ["/a", "/b", "/c"]);
    assert_eq!(recorder.open(), 1);
}

#[test]
fn absurd_content_lengths_get_413_without_reaching_the_handler() {
    let (server, echo, recorder) = start(quick());
    for length in ["18446744073709551615", "1000000000000000", "1048577"] {
        let mut client = Client::connect(&server);
        client.send(
            format!("POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: {length}\r\n\r\n").as_bytes(),
        );
        let reply = client.reply();
        assert_eq!(reply.status, 413);
        assert!(reply.text().contains("\"PAYLOAD_TOO_LARGE\""));
        assert!(client.is_closed());
    }
    assert!(echo.urls().is_empty());
    assert_eq!(recorder.rejected.lock().unwrap().len(), 3);
    assert_eq!(Client::connect(&server).get("/ok").status, 200);
}

#[test]
fn chunked_bodies_are_decoded_and_limited() {
    let limits = Limits {
        max_body: 16,
        ..quick()
    };
    let (server, echo, recorder) = start(limits);
    let mut client = Client::connect(&server);
    client.send(b"POST /c HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;x=y\r\n world\r\n0\r\nT: v\r\n\r\n");
    assert_eq!(client.reply().text(), "POST /c 11");

    let mut client = Client::connect(&server);
    client.send(b"PUT /big HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\na\r\n0123456789\r\na\r\n0123456789\r\n0\r\n\r\n");
    assert_eq!(client.reply().status, 413);
    assert!(client.is_closed());
    assert_eq!(echo.urls(), ["/c"]);
    assert_eq!(
        *recorder.rejected.lock().unwrap(),
        [("PUT".to_string(), 413)]
    );
}

#[test]
fn a_slow_body_times_out_without_holding_up_others() {
    let limits = Limits {
        body_timeout: Duration::from_millis(300),
        ..quick()
    };
    let (server, echo, recorder) = start(limits);
    let mut slow = Client::connect(&server);
    slow.send(b"POST /slow HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n0123456789");
    assert_eq!(Client::connect(&server).get("/fast").status, 200);
    assert!(slow.is_closed());
    assert!(recorder.has_reason("body_timeout"));
    assert_eq!(echo.urls(), ["/fast"]);
}

#[test]
fn a_refused_head_is_answered_without_reading_its_body() {
    let (server, echo, _) = start(quick());
    let mut client = Client::connect(&server);
    // The body never comes: the answer must not wait for it.
    client.send(b"POST /secret HTTP/1.1\r\nHost: t\r\nContent-Length: 1000000\r\n\r\n");
    let reply = client.reply();
    assert_eq!((reply.status, reply.text().as_str()), (401, "no"));
    assert_eq!(reply.header("Connection"), Some("close"));
    assert!(client.is_closed());
    assert!(echo.urls().is_empty());
}

#[test]
fn past_the_cap_on_buffered_bodies_requests_get_503() {
    let limits = Limits {
        max_buffered_bodies: 100,
        ..quick()
    };
    let (server, _, recorder) = start(limits);
    let hold = |holding: &mut Client| {
        *holding = Client::connect(&server);
        holding.send(b"POST /hold HTTP/1.1\r\nHost: t\r\nContent-Length: 80\r\n\r\npart");
    };
    let mut holding = Client::connect(&server);
    hold(&mut holding);
    let mut refused = Client::connect(&server);
    // Sent until refused: the first connection may not hold its share yet, and on a busy machine
    // a probe can take its room first, so that it is the one refused: then it holds again.
    wait_until("a body is refused", || {
        if holding.has_news() {
            hold(&mut holding);
        }
        let mut client = Client::connect(&server);
        client.send(b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 30\r\n\r\n");
        // Sent whole, so that a request admitted before the first one held
        // its share is answered rather than left waiting.
        client.send(&[b'y'; 30]);
        let reply = client.reply();
        if reply.status == 503 {
            refused = client;
            assert_eq!(reply.header("Retry-After"), Some("1"));
            return true;
        }
        false
    });
    assert!(refused.is_closed());
    // A bodiless request needs no room.
    assert_eq!(Client::connect(&server).get("/free").status, 200);
    holding.send(&[b'x'; 76]);
    assert_eq!(holding.reply().text(), "POST /hold 80");
    assert!(recorder
        .rejected
        .lock()
        .unwrap()
        .contains(&("POST".to_string(), 503)));
}

#[test]
fn malformed_requests_get_json_errors_and_are_closed() {
    let (server, echo, recorder) = start(quick());
    let many_headers = format!(
        "GET / HTTP/1.1\r\nHost: t\r\n{}\r\n",
        "X-Filler: 0123456789abcdef\r\n".repeat(740)
    );
    let cases: [(&[u8], u16, &str, &str); 10] = [
        (
            b"GET / HTTP/2.0\r\nHost: t\r\n\r\n",
            505,
            "HTTP_VERSION_NOT_SUPPORTED",
            "GET",
        ),
        (b"GET / HTTP/1.1\nHost: t\r\n\r\n", 400, "BAD_REQUEST", "GET"),
        (
            "GET / HTTP/1.1\r\nHost: t\r\nX-Name: caf\u{e9}\r\n\r\n".as_bytes(),
            400,
            "BAD_REQUEST",
            "GET",
        ),
        (
            b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            400,
            "BAD_REQUEST",
            "POST",
        ),
        (
            b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\n",
            501,
            "NOT_IMPLEMENTED",
            "POST",
        ),
        (many_headers.as_bytes(), 431, "HEADERS_TOO_LARGE", "GET"),
        (
            b"DELETE /x HTTP/1.1\r\nHost: t\r\nContent-Length: -1\r\n\r\n",
            400,
            "BAD_REQUEST",
            "DELETE",
        ),
        (b"G(T / HTTP/1.1\r\nHost: t\r\n\r\n", 400, "BAD_REQUEST", "OTHER"),
        (b"GET / HTTP/1.1\r\n\r\n", 400, "BAD_REQUEST", "GET"),
        (
            b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            400,
            "BAD_REQUEST",
            "GET",
        ),
    ];
    for (request, status, code, _) in cases {
        let mut client = Client::connect(&server);
        client.send(request);
        let reply = client.reply();
        assert_eq!(reply.status, status, "{}", String::from_utf8_lossy(request));
        assert_eq!(reply.header("Content-Type"), Some("application/json"));
        assert_eq!(reply.header("Connection"), Some("close"));
        assert!(reply
            .text()
            .starts_with(&format!("{{\"error\":{{\"code\":\"{code}\",\"message\":\"")));
        assert!(client.is_closed());
    }
    let expected: Vec<(String, u16)> = cases.iter().map(|c| (c.3.to_string(), c.1)).collect();
    assert_eq!(*recorder.rejected.lock().unwrap(), expected);
    assert!(echo.urls().is_empty());
}

#[test]
fn unknown_and_lowercase_methods_get_501_and_the_connection_goes_on() {
    let (server, echo, recorder) = start(quick());
    let mut client = Client::connect(&server);
    for method in ["get", "BREW"] {
        client.send(
            format!("{method} /x HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nhi").as_bytes(),
        );
        let reply = client.reply();
        assert_eq!(reply.status, 501, "{method}");
        assert!(reply.text().contains("\"NOT_IMPLEMENTED\""));
        assert_eq!(reply.header("Connection"), None);
    }
    assert_eq!(client.get("/after").text(), "GET /after 0");
    assert_eq!(echo.urls(), ["/after"]);
    assert_eq!(recorder.rejected.lock().unwrap().len(), 2);
}

#[test]
fn idle_and_slowloris_connections_are_closed() {
    // Long enough that a busy machine still gets the slowloris's first bytes in before it.
    let limits = Limits {
        idle_timeout: Duration::from_secs(1),
        header_timeout: Duration::from_secs(1),
        ..quick()
    };
    let (server, echo, recorder) = start(limits);
    let mut idle = Client::connect(&server);
    let mut slowloris = Client::connect(&server);
    slowloris.send(b"GET / HTTP/1.1\r\nX-a: b\r\n");
    assert!(idle.is_closed());
    assert!(slowloris.is_closed());
    assert!(recorder.has_reason("idle_timeout"));
    assert!(recorder.has_reason("header_timeout"));
    wait_until("both are gone", || recorder.open() == 0);
    assert!(echo.urls().is_empty());
}

#[test]
fn over_the_cap_the_longest_idle_connection_is_closed() {
    let limits = Limits {
        max_connections: 2,
        ..quick()
    };
    let (server, _, recorder) = start(limits);
    let mut oldest = Client::connect(&server);
    wait_until("one is open", || recorder.open() == 1);
    let mut newer = Client::connect(&server);
    wait_until("two are open", || recorder.open() == 2);
    let mut newest = Client::connect(&server);
    assert!(oldest.is_closed());
    assert_eq!(newest.get("/3").status, 200);
    assert_eq!(newer.get("/2").status, 200);
    assert_eq!(*recorder.reasons.lock().unwrap(), ["evicted"]);
}

#[test]
fn a_stream_counts_under_the_cap_and_frees_its_place_when_it_ends() {
    let limits = Limits {
        max_connections: 1,
        ..quick()
    };
    let (server, echo, recorder) = start(limits);
    let mut streaming = Client::connect(&server);
    streaming.send(b"GET /stream HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(streaming.head().status, 200);
    assert_eq!(streaming.chunk(), b"data: one\n\n");
    let mut refused = Client::connect(&server);
    assert!(refused.is_closed());
    assert_eq!(*recorder.reasons.lock().unwrap(), ["limit"]);
    echo.release();
    assert_eq!(streaming.chunk(), b"data: two\n\n");
    assert!(streaming.chunk().is_empty());
    assert!(streaming.is_closed());
    wait_until("the stream is gone", || recorder.open() == 0);
    assert_eq!(Client::connect(&server).get("/next").status, 200);
}

#[test]
fn streamed_events_arrive_before_the_stream_ends() {
    let (server, echo, _) = start(quick());
    let mut client = Client::connect(&server);
    client.send(b"GET /stream HTTP/1.1\r\nHost: t\r\n\r\n");
    let head = client.head();
    assert_eq!(head.header("Transfer-Encoding"), Some("chunked"));
    assert_eq!(client.chunk(), b"data: one\n\n");
    echo.release();
    assert_eq!(client.chunk(), b"data: two\n\n");
    assert!(client.chunk().is_empty());
}

#[test]
fn an_upgrade_hands_the_socket_to_the_new_protocol() {
    let (server, _, recorder) = start(quick());
    let mut client = Client::connect(&server);
    client.send(b"GET /ws HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n");
    let head = client.head();
    assert_eq!(head.status, 101);
    assert_eq!(head.header("Upgrade"), Some("echo"));
    for message in [&b"ping"[..], b"and a longer message"] {
        client.send(message);
        let mut echo = vec![0; message.len()];
        client.0.read_exact(&mut echo).unwrap();
        assert_eq!(echo, message);
    }
    client
        .0
        .get_ref()
        .shutdown(std::net::Shutdown::Write)
        .unwrap();
    assert!(client.is_closed());
    wait_until("the connection is gone", || recorder.open() == 0);
}

#[test]
fn head_responses_have_no_body() {
    let (server, _, _) = start(quick());
    let mut client = Client::connect(&server);
    client.send(b"HEAD /h HTTP/1.1\r\nHost: t\r\n\r\n");
    let reply = client.reply_to(true);
    assert_eq!(
        (reply.status, reply.header("Content-Length")),
        (200, Some("9"))
    );
    client.send(b"HEAD /big HTTP/1.1\r\nHost: t\r\n\r\n");
    let reply = client.reply_to(true);
    assert_eq!(reply.header("Content-Length"), Some("100000"));
    assert_eq!(client.get("/next").text(), "GET /next 0");
    assert_eq!(client.get("/big").body.len(), 100_000);
}

#[test]
fn a_bad_request_leaves_other_connections_unharmed() {
    let (server, echo, _) = start(quick());
    let mut first = Client::connect(&server);
    assert_eq!(first.get("/1").status, 200);
    first
        .send(b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!");
    assert_eq!(first.reply().status, 400);
    assert!(first.is_closed());
    let mut second = Client::connect(&server);
    assert_eq!(second.get("/2").text(), "GET /2 0");
    assert_eq!(echo.urls(), ["/1", "/2"]);
}

#[test]
fn expectations_are_handled_by_the_layer() {
    let (server, echo, recorder) = start(quick());
    let mut client = Client::connect(&server);
    client.send(b"PUT /e HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n");
    // The interim answer is read by hand: the parser skips it.
    assert_eq!(client.line(), "HTTP/1.1 100 Continue");
    assert_eq!(client.line(), "");
    client.send(b"hello");
    assert_eq!(client.reply().text(), "PUT /e 5");

    client.send(b"PUT /e HTTP/1.1\r\nHost: t\r\nExpect: teapot\r\nContent-Length: 5\r\n\r\nhello");
    let reply = client.reply();
    assert_eq!(reply.status, 417);
    assert!(reply.text().contains("\"EXPECTATION_FAILED\""));
    assert!(client.is_closed());
    assert_eq!(echo.urls(), ["/e"]);
    assert_eq!(
        *recorder.rejected.lock().unwrap(),
        [("PUT".to_string(), 417)]
    );
}

#[test]
fn slow_answers_keep_their_order() {
    let (server, echo, _) = start(quick());
    let mut client = Client::connect(&server);
    for i in 0..3 {
        client.send(
            format!("POST /later-{i} HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\n\r\nx").as_bytes(),
        );
        echo.release_later(&format!("/later-{i}"));
        assert_eq!(client.reply().text(), format!("POST /later-{i} 1"));
    }
    // Pipelined: the second request waits for the first answer to be written.
    client.send(b"POST /later HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\nGET /now HTTP/1.1\r\nHost: t\r\nX-A: b\r\n\r\n");
    echo.release_later("/later");
    assert_eq!(client.reply().text(), "POST /later 0");
    assert_eq!(client.reply().text(), "GET /now 0 X-A=b");
    // Connection: close is answered, then the connection ends.
    client
        .send(b"POST /later HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: 0\r\n\r\n");
    echo.release_later("/later");
    let reply = client.reply();
    assert_eq!(reply.header("Connection"), Some("close"));
    assert!(client.is_closed());
}

#[test]
fn a_request_without_an_answer_closes_the_connection() {
    let (server, _, _) = start(quick());
    let mut client = Client::connect(&server);
    client.send(b"GET /none HTTP/1.1\r\nHost: t\r\n\r\n");
    assert!(client.is_closed());
}

#[test]
fn a_body_over_the_limit_is_refused_before_100_continue() {
    let (server, echo, _) = start(quick());
    let mut client = Client::connect(&server);
    client.send(
        b"PUT /e HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 2000000\r\n\r\n",
    );
    assert_eq!(client.head().status, 413);
    assert!(echo.urls().is_empty());
}

#[test]
fn http10_clients_keep_alive_only_when_asked() {
    let (server, _, _) = start(quick());
    let mut client = Client::connect(&server);
    client.send(b"GET /k HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    let reply = client.reply();
    assert_eq!(reply.header("Connection"), Some("keep-alive"));
    client.send(b"GET /l HTTP/1.0\r\n\r\n");
    assert_eq!(client.reply().text(), "GET /l 0");
    assert!(client.is_closed());
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let (server, _, _) = start(quick());
    let mut client = Client::connect(&server);
    client.send(b"GET /p1 HTTP/1.1\r\nHost: t\r\n\r\nPOST /p2 HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nhiGET /p3 HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(client.reply().text(), "GET /p1 0");
    assert_eq!(client.reply().text(), "POST /p2 2");
    assert_eq!(client.reply().text(), "GET /p3 0");
}

#[test]
fn a_burst_of_new_clients_is_served_promptly() {
    let (server, _, _) = start(quick());
    let addr = server.addr();
    let clients: Vec<_> = (0..32)
        .map(|i| {
            thread::spawn(move || {
                let stream = TcpStream::connect(addr).unwrap();
                stream.set_read_timeout(Some(PATIENCE)).unwrap();
                let mut client = Client(BufReader::new(stream));
                let reply = client.get(&format!("/burst/{i}"));
                (reply.status, client)
            })
        })
        .collect();
    let replies: Vec<_> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    assert!(replies.iter().all(|(status, _)| *status == 200));
}

#[test]
fn shutdown_stops_accepting_and_closes_connections() {
    let (server, _, _) = start(quick());
    let mut client = Client::connect(&server);
    assert_eq!(client.get("/").status, 200);
    server.shutdown();
    server.shutdown();
    assert!(client.is_closed());
    assert!(TcpStream::connect(server.addr()).is_err());
}
