//! The harness for the layer's end-to-end tests: a handler with a few
//! routes, a raw HTTP/1.1 client, and hooks that record.

use super::{Answer, Handler, Hooks, Limits, Reply, Request, Server};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// How long a test waits for anything before failing.
pub(super) const PATIENCE: Duration = Duration::from_secs(5);

/// What the hooks were told.
#[derive(Default)]
pub(super) struct Recorder {
    pub(super) rejected: Mutex<Vec<(String, u16)>>,
    pub(super) reasons: Mutex<Vec<String>>,
    pub(super) open: AtomicUsize,
    pub(super) accept_errors: AtomicUsize,
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
    pub(super) fn has_reason(&self, reason: &str) -> bool {
        self.reasons.lock().unwrap().iter().any(|r| r == reason)
    }

    pub(super) fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }
}

/// A handler with a few routes:
///
/// - `/stream`: a chunked stream that sends one event, waits for
///   [`Echo::release`], sends another and ends;
/// - `/ws`: `101` to `echo`, then every byte back;
/// - `/big`: 100,000 bytes;
/// - `/none`: no answer at all;
/// - `/later*`: the answer is parked for the test to send;
/// - `/secret*`: refused on the head with 401;
/// - anything else: `METHOD TARGET BODY-LENGTH`, plus `X-A` if sent.
pub(super) struct Echo {
    /// The targets of the requests handled, in order.
    pub(super) seen: Mutex<Vec<String>>,
    pub(super) parked: Mutex<Vec<(Answer, Reply)>>,
    pub(super) release: Mutex<Sender<()>>,
    released: Arc<Mutex<Receiver<()>>>,
}

impl Default for Echo {
    fn default() -> Echo {
        let (release, released) = mpsc::channel();
        Echo {
            seen: Mutex::default(),
            parked: Mutex::default(),
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

    fn refuse(&self, _: Request, answer: Answer) {
        answer.send(Reply {
            status: 401,
            headers: Vec::new(),
            body: b"no".to_vec(),
        });
    }

    fn handle(&self, request: Request, answer: Answer) {
        self.seen.lock().unwrap().push(request.target.clone());
        match request.target.as_str() {
            "/none" => drop(answer),
            "/stream" => {
                let released = self.released.clone();
                let headers = [("Transfer-Encoding", "chunked".to_string())];
                let run = move |mut stream: TcpStream, _: Vec<u8>| {
                    stream.write_all(b"b\r\ndata: one\n\n\r\n").unwrap();
                    released.lock().unwrap().recv().unwrap();
                    let _ = stream.write_all(b"b\r\ndata: two\n\n\r\n0\r\n\r\n");
                };
                answer.take_over(200, &headers, Box::new(run));
            }
            "/ws" => {
                let headers = [
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
                answer.take_over(101, &headers, Box::new(run));
            }
            "/big" => answer.send(reply(vec![b'x'; 100_000])),
            target => {
                let mut text = format!("{} {target} {}", request.method, request.body.len());
                if let Some(a) = request.header("X-A") {
                    text.push_str(&format!(" X-A={a}"));
                }
                if target.starts_with("/later") {
                    self.parked.lock().unwrap().push((answer, reply(text)));
                } else {
                    answer.send(reply(text));
                }
            }
        }
    }
}

impl Echo {
    pub(super) fn urls(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }

    /// Lets the stream of `/stream` go on.
    pub(super) fn release(&self) {
        self.release.lock().unwrap().send(()).unwrap();
    }

    /// Waits for a parked answer and sends it from this thread. With
    /// `detached`, waits until the connection thread has left it to its
    /// sender and gone back to reading, so the late path is always taken.
    pub(super) fn send_parked(&self, detached: bool) {
        wait_until("a parked answer", || {
            self.parked
                .lock()
                .unwrap()
                .last()
                .is_some_and(|(answer, _)| !detached || answer.is_detached())
        });
        let (answer, response) = self.parked.lock().unwrap().pop().unwrap();
        answer.send(response);
    }
}

pub(super) fn quick() -> Limits {
    Limits {
        header_timeout: Duration::from_secs(3),
        idle_timeout: Duration::from_secs(3),
        body_timeout: Duration::from_secs(3),
        ..Limits::default()
    }
}

/// A server of a new [`Echo`] within `limits`.
pub(super) fn start(limits: Limits) -> (Server, Arc<Echo>, Arc<Recorder>) {
    let echo = Arc::new(Echo::default());
    let recorder = Arc::new(Recorder::default());
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let server = Server::with_handler(listener, limits, recorder.clone(), echo.clone()).unwrap();
    (server, echo, recorder)
}

/// A client connection.
pub(super) struct Client(pub(super) BufReader<TcpStream>);

/// A response as the client read it.
#[derive(Debug)]
pub(super) struct Got {
    pub(super) status: u16,
    pub(super) headers: Vec<(String, String)>,
    pub(super) body: Vec<u8>,
}

impl Got {
    pub(super) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub(super) fn text(&self) -> String {
        String::from_utf8(self.body.clone()).unwrap()
    }
}

impl Client {
    pub(super) fn connect(server: &Server) -> Client {
        let stream = TcpStream::connect(server.addr()).unwrap();
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        Client(BufReader::new(stream))
    }

    pub(super) fn send(&mut self, bytes: &[u8]) {
        self.0.get_mut().write_all(bytes).unwrap();
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.0.read_line(&mut line).unwrap();
        assert!(line.ends_with("\r\n"), "{line:?}");
        line.truncate(line.len() - 2);
        line
    }

    pub(super) fn head(&mut self) -> Got {
        let status_line = self.line();
        let status = status_line[9..12].parse().unwrap();
        let mut headers = Vec::new();
        loop {
            let line = self.line();
            if line.is_empty() {
                break;
            }
            let (name, value) = line.split_once(':').unwrap();
            headers.push((name.to_string(), value.trim().to_string()));
        }
        Got {
            status,
            headers,
            body: Vec::new(),
        }
    }

    pub(super) fn chunk(&mut self) -> Vec<u8> {
        let size = usize::from_str_radix(&self.line(), 16).unwrap();
        let mut data = vec![0; size + 2];
        self.0.read_exact(&mut data).unwrap();
        assert!(data.ends_with(b"\r\n"));
        data.truncate(size);
        data
    }

    pub(super) fn reply_to(&mut self, head_request: bool) -> Got {
        let mut reply = self.head();
        if head_request {
            return reply;
        }
        if let Some(n) = reply.header("Content-Length") {
            reply.body = vec![0; n.parse().unwrap()];
            self.0.read_exact(&mut reply.body).unwrap();
        }
        reply
    }

    pub(super) fn reply(&mut self) -> Got {
        self.reply_to(false)
    }

    pub(super) fn get(&mut self, path: &str) -> Got {
        self.send(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
        self.reply()
    }

    /// True once the server has closed the connection (end of stream or reset).
    pub(super) fn is_closed(&mut self) -> bool {
        let mut byte = [0u8; 1];
        match self.0.read(&mut byte) {
            Ok(0) => true,
            Ok(_) => false,
            Err(err) => err.kind() == io::ErrorKind::ConnectionReset,
        }
    }
}

pub(super) fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        thread::sleep(Duration::from_millis(1));
    }
}
