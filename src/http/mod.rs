//! Our own HTTP/1.1 server; the domain never sees HTTP. `conns` caps the
//! connections, `conn` serves one: `socket`, `parse` and `chunked` read the strict
//! request (RFC 9112) within limits, authorising the head before the body;
//! `wire`, `body` and `response` write answers in pieces of at most 64 KiB, each
//! due within [`Limits::write_timeout`]. `exchange` is the middleware, `routes`
//! and `streams` the handlers, run in the client's connection thread.

mod body;
mod chunked;
mod conn;
mod conns;
mod exchange;
mod json;
mod parse;
mod response;
mod routes;
mod socket;
mod streams;
mod wire;

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde_json::json;

pub use wire::Reply;

use body::BodyWriter;
use conns::Connections;
use exchange::Exchange;

use crate::app::App;

/// The deepest handler, a JSON body nested to serde_json's limit of 128, fits in 80 KiB (debug:
/// 512 KiB); untouched stack pages cost nothing: 2,000 idle connections stay far below 64 MiB.
const CONNECTION_STACK: usize = if cfg!(debug_assertions) {
    1024 * 1024
} else {
    256 * 1024
};

/// The waits after consecutive accept errors (out of descriptors, say); accepting never stops.
const BACKOFF_MIN: Duration = Duration::from_millis(1);
const BACKOFF_MAX: Duration = Duration::from_millis(100);

/// Limits and timeouts of the server. The default is a production setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// The most client connections open at once, streams included (default 4096).
    pub max_connections: usize,
    /// The largest request head, or trailers of a chunked body (default 16 KiB).
    pub max_header_bytes: usize,
    /// How long a request head may take to arrive, from its first byte (default 10 s).
    pub header_timeout: Duration,
    /// How long a connection may wait for its next request (default 30 s).
    pub idle_timeout: Duration,
    /// How long a whole request body may take to arrive (default 10 s).
    pub body_timeout: Duration,
    /// How long a client may take to accept each piece (up to 64 KiB) of an answer (default 10 s).
    pub write_timeout: Duration,
    /// The largest request body in bytes (default 1 MiB).
    pub max_body: u64,
    /// The most body bytes buffered across all connections at once (default 64 MiB).
    pub max_buffered_bodies: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_connections: 4096,
            max_header_bytes: 16 * 1024,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            body_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(10),
            max_body: 1024 * 1024,
            max_buffered_bodies: 64 * 1024 * 1024,
        }
    }
}

/// What the layer reports, for metrics. Called from connection threads, at
/// times under a lock: be quick and never call back into the server.
pub trait Hooks: Send + Sync {
    /// A request the layer refused before any handler saw it, by method label and status.
    fn request_rejected(&self, method: &str, status: u16);

    /// A connection closed or refused by the layer: `"limit"` (all busy, or no thread),
    /// `"evicted"` (idle, closed to make room), `"idle_timeout"`, `"header_timeout"`,
    /// `"body_timeout"` or `"write_timeout"` (too slow to take a piece of its answer).
    fn connection_rejected(&self, _reason: &str) {}

    /// The number of open client connections, after each change.
    fn connections(&self, _open: usize) {}

    /// An error from `accept()`, after which the server waits briefly and goes on.
    fn accept_error(&self, _err: &io::Error) {}

    /// The server stopped accepting: streams and the like must end now.
    fn stopping(&self) {}
}

/// Answers requests, in the connection threads.
pub trait Handler: Send + Sync {
    /// Whether `request`, its body not read yet, may go on; else [`Handler::refuse`] answers.
    fn admits(&self, _request: &Request) -> bool {
        true
    }

    /// The answer to a request [`Handler::admits`] refused.
    fn refuse(&self, request: Request) -> Answer;

    /// The answer to `request`. A panic closes the connection unanswered.
    fn handle(&self, request: Request) -> Answer;
}

/// A request as a handler gets it: its head checked, its body read whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The method token, exactly as the client sent it.
    pub method: String,
    /// The request target: the path and any query, as sent.
    pub target: String,
    /// The head as the client sent it, which the fields index.
    head: String,
    /// Each header field's name and value, in order, as byte ranges of `head`.
    fields: Vec<[std::ops::Range<usize>; 2]>,
    /// The whole body; empty when there is none.
    pub body: Vec<u8>,
}

impl Request {
    /// The value of the first field named `name`, compared case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers()
            .find_map(|(field, value)| field.eq_ignore_ascii_case(name).then_some(value))
    }

    /// The header fields as (name, value), in order.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &str)> {
        let head = &self.head;
        (self.fields.iter()).map(|[n, v]| (&head[n.clone()], &head[v.clone()]))
    }
}

/// What runs a stream on the client's socket, given the bytes sent after the request.
pub type Takeover = Box<dyn FnOnce(TcpStream, Vec<u8>)>;

/// What makes a streamed answer's body, writing it as the connection sends it.
pub type Producer = Box<dyn FnOnce(&mut BodyWriter<'_>)>;

/// A handler's answer, which its connection's thread writes.
pub enum Answer {
    /// A whole answer.
    Reply(Reply),
    /// 200 with these headers and a body the producer makes as it is sent.
    Stream(Vec<(&'static str, String)>, Producer),
    /// This status and headers, no framed body; then the socket goes to the takeover.
    TakeOver(u16, Vec<(&'static str, String)>, Takeover),
}

/// A running server. Dropping it leaves the server running.
pub struct Server {
    local_addr: SocketAddr,
    stop: Arc<AtomicBool>,
    accept_thread: Mutex<Option<JoinHandle<()>>>,
    shared: Arc<Shared>,
}

struct Shared {
    limits: Limits,
    hooks: Arc<dyn Hooks>,
    handler: Arc<dyn Handler>,
    connections: Arc<Connections>,
    /// Body bytes buffered by all connections.
    buffered: AtomicU64,
}

/// Routes requests to the app; what the layer reports becomes metrics and log lines.
struct AppServer(Arc<App>);

impl Handler for AppServer {
    fn admits(&self, request: &Request) -> bool {
        !routes::needs_key(&request.target) || routes::authorized(&self.0, request)
    }

    fn refuse(&self, request: Request) -> Answer {
        let r = response::Response::error(401, "UNAUTHORIZED", "a valid API key is required");
        let r = r.with_header("WWW-Authenticate", "Bearer realm=\"conductor\"");
        Exchange::new(request, self.0.clone()).send(r)
    }

    fn handle(&self, request: Request) -> Answer {
        routes::route(&mut Exchange::new(request, self.0.clone()))
    }
}

impl Hooks for AppServer {
    fn request_rejected(&self, method: &str, status: u16) {
        let http = &self.0.http;
        http.requests.inc(&[method, wire::status_label(status)]);
        self.0.log.info(
            "request refused by the HTTP layer",
            &[("method", json!(method)), ("status", json!(status))],
        );
    }

    fn connection_rejected(&self, reason: &str) {
        self.0.http.connections_rejected.inc(&[reason]);
    }

    fn connections(&self, open: usize) {
        self.0.http.connections.set(open as f64);
    }

    fn stopping(&self) {
        self.0.events.stop();
    }

    fn accept_error(&self, err: &io::Error) {
        self.0.http.connections_rejected.inc(&["accept_error"]);
        let error = [("error", json!(err.to_string()))];
        self.0.log.warn("accept failed; retrying", &error);
    }
}

impl Server {
    /// Serves `app` on `listener` within `limits`.
    pub fn start(app: Arc<App>, listener: TcpListener, limits: Limits) -> io::Result<Server> {
        let app = Arc::new(AppServer(app));
        Server::with_handler(listener, limits, app.clone(), app)
    }

    /// Serves `handler` on `listener`, reporting to `hooks`.
    pub fn with_handler(
        listener: TcpListener,
        limits: Limits,
        hooks: Arc<dyn Hooks>,
        handler: Arc<dyn Handler>,
    ) -> io::Result<Server> {
        let local_addr = listener.local_addr()?;
        listener.set_nonblocking(false)?;
        let accept = move || listener.accept();
        start_with(accept, local_addr, limits, hooks, handler)
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Waits for the accept thread, which runs until [`Server::shutdown`].
    pub fn join(&self) {
        if let Some(thread) = self.accept_thread() {
            let _ = thread.join();
        }
    }

    fn accept_thread(&self) -> Option<JoinHandle<()>> {
        let thread = self.accept_thread.lock();
        thread.unwrap_or_else(|e| e.into_inner()).take()
    }

    /// Stops accepting and closes every client connection, answers and streams cut short.
    pub fn shutdown(&self) {
        self.stop_accepting();
        self.shared.connections.close_all();
    }

    /// Stops accepting, tells [`Hooks::stopping`], and closes each connection once
    /// idle, cutting off what is open after `grace`; true if all ended in time.
    pub fn stop(&self, grace: Duration) -> bool {
        let deadline = Instant::now() + grace;
        self.stop_accepting();
        self.shared.hooks.stopping();
        let drained = self.shared.connections.drain(deadline);
        if !drained {
            self.shared.connections.close_all();
        }
        drained
    }

    fn stop_accepting(&self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.accept_thread() {
            // A connection wakes accept(); if connecting fails, it is not blocked there.
            let _ = TcpStream::connect_timeout(&wake_addr(self.local_addr), Duration::from_secs(1));
            let _ = thread.join();
        }
    }
}

/// [`Server::with_handler`] with the accept call passed in, so tests can make it fail.
fn start_with<A>(
    accept: A,
    local_addr: SocketAddr,
    limits: Limits,
    hooks: Arc<dyn Hooks>,
    handler: Arc<dyn Handler>,
) -> io::Result<Server>
where
    A: FnMut() -> io::Result<(TcpStream, SocketAddr)> + Send + 'static,
{
    let connections = Arc::new(Connections::new(limits.max_connections, hooks.clone()));
    let shared = Arc::new(Shared {
        limits,
        hooks,
        handler,
        connections,
        buffered: AtomicU64::new(0),
    });
    let stop = Arc::new(AtomicBool::new(false));
    let (accept_shared, accept_stop) = (shared.clone(), stop.clone());
    let accept_thread = thread::Builder::new()
        .name("http-accept".into())
        .spawn(move || accept_loop(accept, &accept_shared, &accept_stop))?;
    Ok(Server {
        local_addr,
        stop,
        accept_thread: Mutex::new(Some(accept_thread)),
        shared,
    })
}

/// The address that reaches our own listener, which may be bound to the unspecified address.
fn wake_addr(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => (Ipv4Addr::LOCALHOST, addr.port()).into(),
        IpAddr::V6(ip) if ip.is_unspecified() => (Ipv6Addr::LOCALHOST, addr.port()).into(),
        _ => addr,
    }
}

fn accept_loop<A>(mut accept: A, shared: &Arc<Shared>, stop: &AtomicBool)
where
    A: FnMut() -> io::Result<(TcpStream, SocketAddr)>,
{
    let mut backoff = BACKOFF_MIN;
    while !stop.load(Ordering::SeqCst) {
        match accept() {
            Ok(_) if stop.load(Ordering::SeqCst) => return,
            Ok((stream, _)) => {
                backoff = BACKOFF_MIN;
                admit(stream, shared);
            }
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => {
                shared.hooks.accept_error(&err);
                thread::sleep(backoff);
                backoff = next_backoff(backoff);
            }
        }
    }
}

fn next_backoff(wait: Duration) -> Duration {
    (wait * 2).min(BACKOFF_MAX)
}

fn admit(stream: TcpStream, shared: &Arc<Shared>) {
    // Responses and events go out in few writes; Nagle would only delay them.
    let _ = stream.set_nodelay(true);
    let Some(registration) = shared.connections.admit(&stream) else {
        return;
    };
    let thread_shared = shared.clone();
    let spawned = thread::Builder::new()
        .name("http-conn".into())
        .stack_size(CONNECTION_STACK)
        .spawn(move || {
            conn::serve(stream, &thread_shared, &registration.activity);
            drop(registration);
        });
    if spawned.is_err() {
        shared.hooks.connection_rejected("limit");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::sync::atomic::AtomicUsize;

    /// Counts accept errors; answers every request with an empty 200.
    #[derive(Default)]
    struct Errors(AtomicUsize);

    impl Hooks for Errors {
        fn request_rejected(&self, _: &str, _: u16) {}
        fn accept_error(&self, _: &io::Error) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    impl Handler for Errors {
        fn refuse(&self, _: Request) -> Answer {
            unreachable!("every request is admitted")
        }

        fn handle(&self, _: Request) -> Answer {
            Answer::Reply(Reply {
                status: 200,
                headers: Vec::new(),
                body: Vec::new(),
            })
        }
    }

    #[test]
    fn accepting_survives_errors() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mut failures = 3;
        let accept = move || {
            if failures > 0 {
                failures -= 1;
                return Err(io::Error::from_raw_os_error(24)); // EMFILE
            }
            listener.accept()
        };
        let errors = Arc::new(Errors::default());
        let server = start_with(
            accept,
            addr,
            Limits::default(),
            errors.clone(),
            errors.clone(),
        );
        let _server = server.unwrap();
        let mut client = TcpStream::connect(addr).unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut answer = String::new();
        client.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        assert_eq!(errors.0.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn backoff_doubles_to_its_cap() {
        let mut wait = BACKOFF_MIN;
        let delays: Vec<u64> = (0..9)
            .map(|_| {
                let delay = wait;
                wait = next_backoff(wait);
                delay.as_millis() as u64
            })
            .collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 64, 100, 100]);
        assert_eq!(wait, BACKOFF_MAX);
    }

    /// Checked when the tests compile: the server and its limits are shared between threads.
    const _: () = {
        const fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Server>();
        assert_send_sync::<Limits>();
    };
}
