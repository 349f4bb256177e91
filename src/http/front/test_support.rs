//! The harness for the front's end-to-end tests: a real tiny_http server
//! with a few routes, a raw HTTP/1.1 client, and hooks that record.

use super::{Front, FrontConfig, FrontHandle, FrontHooks, LocalHandler};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
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

impl FrontHooks for Recorder {
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
}

/// A request as the backend saw it.
#[derive(Debug, Clone)]
pub(super) struct Seen {
    pub(super) url: String,
    pub(super) forwarded_for: Option<String>,
    pub(super) upstream_port: u16,
}

/// A tiny_http server with a few routes, the way our server uses it.
pub(super) struct Backend {
    pub(super) addr: SocketAddr,
    server: Arc<tiny_http::Server>,
    pub(super) seen: Arc<Mutex<Vec<Seen>>>,
    pub(super) release: Sender<()>,
    workers: usize,
}

impl Backend {
    pub(super) fn start(workers: usize) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = Arc::new(tiny_http::Server::from_listener(listener, None).unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (release, released) = mpsc::channel();
        let released = Arc::new(Mutex::new(released));
        for _ in 0..workers {
            let (server, seen, released) = (server.clone(), seen.clone(), released.clone());
            thread::spawn(move || {
                while let Ok(request) = server.recv() {
                    handle(request, &seen, &released);
                }
            });
        }
        Backend {
            addr,
            server,
            seen,
            release,
            workers,
        }
    }

    pub(super) fn urls(&self) -> Vec<String> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .map(|s| s.url.clone())
            .collect()
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        for _ in 0..self.workers {
            self.server.unblock();
        }
    }
}

fn handle(
    mut request: tiny_http::Request,
    seen: &Mutex<Vec<Seen>>,
    released: &Arc<Mutex<Receiver<()>>>,
) {
    let url = request.url().to_string();
    let forwarded_for = request
        .headers()
        .iter()
        .find(|h| h.field.equiv("X-Forwarded-For"))
        .map(|h| h.value.to_string());
    let upstream_port = request.remote_addr().map_or(0, |a| a.port());
    seen.lock().unwrap().push(Seen {
        url: url.clone(),
        forwarded_for,
        upstream_port,
    });
    match url.as_str() {
        "/stream" => {
            let mut writer = request.into_writer();
            let released = released.clone();
            thread::spawn(move || {
                let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n";
                writer.write_all(head.as_bytes()).unwrap();
                writer.write_all(b"b\r\ndata: one\n\n\r\n").unwrap();
                writer.flush().unwrap();
                released.lock().unwrap().recv().unwrap();
                writer
                    .write_all(b"b\r\ndata: two\n\n\r\n0\r\n\r\n")
                    .unwrap();
                writer.flush().unwrap();
            });
        }
        "/ws" => {
            let mut stream = request.upgrade("echo", tiny_http::Response::empty(101));
            thread::spawn(move || {
                let mut buf = [0u8; 256];
                while let Ok(n @ 1..) = stream.read(&mut buf) {
                    if stream.write_all(&buf[..n]).is_err() || stream.flush().is_err() {
                        return;
                    }
                }
            });
        }
        "/big" => {
            // tiny_http sends bodies of 32 KiB or more chunked.
            let _ = request.respond(tiny_http::Response::from_data(vec![b'x'; 100_000]));
        }
        _ => {
            let mut body = Vec::new();
            let _ = request.as_reader().read_to_end(&mut body);
            let text = format!("{} {} {}", request.method(), url, body.len());
            let _ = request.respond(tiny_http::Response::from_string(text));
        }
    }
}

pub(super) fn quick() -> FrontConfig {
    FrontConfig {
        header_timeout: Duration::from_secs(3),
        idle_timeout: Duration::from_secs(3),
        body_timeout: Duration::from_secs(3),
        ..FrontConfig::default()
    }
}

pub(super) fn start(backend: &Backend, config: FrontConfig) -> (FrontHandle, Arc<Recorder>) {
    start_local(backend, config, None)
}

/// [`start`] with an in-process handler.
pub(super) fn start_local(
    backend: &Backend,
    config: FrontConfig,
    local: Option<Arc<dyn LocalHandler>>,
) -> (FrontHandle, Arc<Recorder>) {
    let recorder = Arc::new(Recorder::default());
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let front = Front::start(listener, backend.addr, config, recorder.clone(), local).unwrap();
    (front, recorder)
}

/// A client connection.
pub(super) struct Client(pub(super) BufReader<TcpStream>);

/// A response as the client read it.
#[derive(Debug)]
pub(super) struct Reply {
    pub(super) status: u16,
    pub(super) headers: Vec<(String, String)>,
    pub(super) body: Vec<u8>,
}

impl Reply {
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
    pub(super) fn connect(front: &FrontHandle) -> Client {
        let stream = TcpStream::connect(front.local_addr()).unwrap();
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

    pub(super) fn head(&mut self) -> Reply {
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
        Reply {
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
        if size == 0 {
            assert!(data.is_empty());
        }
        data
    }

    pub(super) fn reply_to(&mut self, head_request: bool) -> Reply {
        let mut reply = self.head();
        if head_request {
            return reply;
        }
        if let Some(n) = reply.header("Content-Length") {
            reply.body = vec![0; n.parse().unwrap()];
            self.0.read_exact(&mut reply.body).unwrap();
        } else if reply.header("Transfer-Encoding").is_some() {
            loop {
                let chunk = self.chunk();
                if chunk.is_empty() {
                    // The empty line after the last chunk was read with it.
                    break;
                }
                reply.body.extend(chunk);
            }
        } else {
            self.0.read_to_end(&mut reply.body).unwrap();
        }
        reply
    }

    pub(super) fn reply(&mut self) -> Reply {
        self.reply_to(false)
    }

    pub(super) fn get(&mut self, path: &str) -> Reply {
        self.send(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
        self.reply()
    }

    /// True once the front has closed the connection (end of stream or reset).
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
