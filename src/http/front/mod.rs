//! The front: a small reverse proxy that owns the public socket and passes
//! tiny_http, on loopback, only clean, complete and bounded requests.
//!
//! tiny_http 0.12 trusts its clients: it drains unread bodies into a buffer
//! of the claimed size (an absurd Content-Length panics or aborts the
//! process), has no timeouts or size limits, decodes any Transfer-Encoding as
//! chunked, hangs on `HTTP/2.0` request lines, and stops accepting for good
//! after one `accept()` error. The front takes all of that on:
//!
//! - **Accepting** never stops: errors are reported to
//!   [`FrontHooks::accept_error`] and retried with a backoff of 1 ms doubling
//!   to 100 ms.
//! - **Connections** are capped at [`FrontConfig::max_connections`]; past the
//!   cap the longest-idle connection is closed, or the new one is refused if
//!   none is idle. Each has its own thread with a 128 KiB stack and no heap
//!   buffer while idle.
//! - **Requests** are read whole, head and body, under size limits and
//!   deadlines, and checked strictly (RFC 9112) before anything is sent
//!   upstream. What fails gets a JSON error and the connection is closed.
//! - **Upstream**, each request goes as a clean HTTP/1.1 request with our own
//!   framing and `X-Forwarded-For`, over a pool of keep-alive connections, so
//!   tiny_http's threads follow the requests in flight, not the idle clients.
//! - **Responses** are relayed as they arrive: chunked ones chunk by chunk,
//!   so streamed events are not held back. A `101 Switching Protocols` turns
//!   the connection into a raw two-way tunnel.
//! - **In-process answers.** With a [`LocalHandler`], the requests it
//!   [handles](LocalHandler::handles) are answered in the connection's own
//!   thread, with no loopback hop: only protocol upgrades and the routes it
//!   declines (long-lived streams) go upstream. A scrape then never waits
//!   behind bulk requests for an upstream connection or a worker.
//! - **Descriptors.** A new upstream connection is opened only with enough
//!   descriptors to spare, because tiny_http stops accepting for good when
//!   it runs out (see the `fds` module). Without them the request gets 503
//!   and its connection closes, which frees two.
//!
//! The reasons given to [`FrontHooks::connection_rejected`] are `"limit"`
//! (cap reached with no idle connection, or no descriptor or thread could be
//! had for the connection), `"evicted"` (an idle connection closed to make
//! room), `"idle_timeout"`, `"header_timeout"` and `"body_timeout"`.

mod chunked;
mod client;
mod connection;
mod fds;
mod local;
mod registry;
mod reply;
mod request;
mod response;
mod syntax;
mod tunnel;
mod upstream;

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use fds::Headroom;
pub use local::{Answer, LocalHandler, LocalRequest, LocalResponse};
use registry::Registry;
use upstream::Upstream;

/// The stack size of connection threads. Handlers run on them: the deepest
/// is a JSON body nested to serde_json's limit of 128, measured to fit in
/// 80 KiB, so this leaves three times that. Stack pages cost memory only
/// once touched, so two thousand idle connections stay far below 64 MiB.
const CONNECTION_STACK: usize = 256 * 1024;

/// The first wait after an accept error.
const BACKOFF_MIN: Duration = Duration::from_millis(1);

/// The longest wait after repeated accept errors.
const BACKOFF_MAX: Duration = Duration::from_millis(100);

/// How often unused upstream connections are looked for and closed.
const POOL_SWEEP: Duration = Duration::from_secs(1);

/// Limits, timeouts and lanes of the front. The default is a production
/// setting, with a single lane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrontConfig {
    /// The most client connections open at once (default 4096).
    pub max_connections: usize,
    /// The largest request head, request line included (default 16 KiB). Also
    /// bounds the trailers of a chunked body. Larger gets 431.
    pub max_header_bytes: usize,
    /// How long a request head may take to arrive, from its first byte (default 10 s).
    pub header_timeout: Duration,
    /// How long a connection may wait for its next request (default 30 s).
    pub idle_timeout: Duration,
    /// How long a whole request body may take to arrive (default 10 s). Also
    /// bounds each write to the client, so a client that stops reading is dropped.
    pub body_timeout: Duration,
    /// The largest request body in bytes (default 1 MiB). Larger gets 413.
    pub max_body: u64,
}

impl Default for FrontConfig {
    fn default() -> FrontConfig {
        FrontConfig {
            max_connections: 4096,
            max_header_bytes: 16 * 1024,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            body_timeout: Duration::from_secs(10),
            max_body: 1024 * 1024,
        }
    }
}

/// What the front reports, for metrics. Called from the front's threads,
/// sometimes with an internal lock held: implementations must be quick and
/// must not call back into the front.
pub trait FrontHooks: Send + Sync {
    /// A request the front answered itself and tiny_http never saw. `method`
    /// is one of `GET`, `HEAD`, `POST`, `PUT`, `DELETE`, `PATCH`, `OPTIONS` or
    /// `OTHER`; `status` is 400, 413, 417, 431, 501, 502, 503 or 505.
    fn request_rejected(&self, method: &str, status: u16);

    /// A connection closed or refused by the front; see the module docs for the reasons.
    fn connection_rejected(&self, reason: &str) {
        let _ = reason;
    }

    /// The number of open client connections, after each change.
    fn connections(&self, open: usize) {
        let _ = open;
    }

    /// An error from `accept()`, after which the front waits briefly and goes on.
    fn accept_error(&self, err: &io::Error) {
        let _ = err;
    }
}

/// The front, started with [`Front::start`].
#[derive(Debug)]
pub struct Front;

/// A running front. Safe to share between threads. Dropping it leaves the
/// front running; [`FrontHandle::shutdown`] stops it.
pub struct FrontHandle {
    local_addr: SocketAddr,
    stop: Arc<AtomicBool>,
    accept_thread: Mutex<Option<JoinHandle<()>>>,
    shared: Arc<Shared>,
}

/// What every connection thread shares.
struct Shared {
    config: FrontConfig,
    hooks: Arc<dyn FrontHooks>,
    upstream: Upstream,
    /// Answers what it handles in-process, when there is one.
    local: Option<Arc<dyn LocalHandler>>,
    registry: Arc<Registry>,
    headroom: Arc<Headroom>,
}

impl Front {
    /// Starts serving clients from `listener`: requests `local` handles are
    /// answered in-process, the others passed to the HTTP server at `upstream`.
    ///
    /// # Errors
    ///
    /// Fails if the listener's address cannot be read or its blocking mode
    /// set, or if the accept thread cannot be started.
    pub fn start(
        listener: TcpListener,
        upstream: SocketAddr,
        config: FrontConfig,
        hooks: Arc<dyn FrontHooks>,
        local: Option<Arc<dyn LocalHandler>>,
    ) -> io::Result<FrontHandle> {
        let local_addr = listener.local_addr()?;
        listener.set_nonblocking(false)?;
        let accept = move || listener.accept();
        start_with(accept, local_addr, upstream, config, hooks, local)
    }
}

/// [`Front::start`] with the accept call passed in, so tests can make it fail.
fn start_with<A>(
    accept: A,
    local_addr: SocketAddr,
    upstream: SocketAddr,
    config: FrontConfig,
    hooks: Arc<dyn FrontHooks>,
    local: Option<Arc<dyn LocalHandler>>,
) -> io::Result<FrontHandle>
where
    A: FnMut() -> io::Result<(TcpStream, SocketAddr)> + Send + 'static,
{
    let registry = Arc::new(Registry::new(config.max_connections, Arc::clone(&hooks)));
    let headroom = Arc::new(Headroom::new());
    let shared = Arc::new(Shared {
        config,
        hooks,
        upstream: Upstream::new(upstream, Arc::clone(&headroom)),
        local,
        registry,
        headroom,
    });
    let stop = Arc::new(AtomicBool::new(false));
    let (accept_shared, accept_stop) = (Arc::clone(&shared), Arc::clone(&stop));
    let accept_thread = thread::Builder::new()
        .name("front-accept".into())
        .spawn(move || accept_loop(accept, &accept_shared, &accept_stop))?;
    let (sweep_shared, sweep_stop) = (Arc::downgrade(&shared), Arc::clone(&stop));
    let swept = thread::Builder::new()
        .name("front-pool".into())
        .stack_size(CONNECTION_STACK)
        .spawn(move || sweep_pool(&sweep_shared, &sweep_stop));
    let handle = FrontHandle {
        local_addr,
        stop,
        accept_thread: Mutex::new(Some(accept_thread)),
        shared,
    };
    if let Err(err) = swept {
        handle.shutdown();
        return Err(err);
    }
    Ok(handle)
}

/// Closes unused upstream connections now and then, until the front stops.
fn sweep_pool(shared: &Weak<Shared>, stop: &AtomicBool) {
    loop {
        thread::sleep(POOL_SWEEP);
        let Some(shared) = shared.upgrade() else {
            return;
        };
        if stop.load(Ordering::SeqCst) {
            return;
        }
        shared.upstream.close_idle();
    }
}

impl FrontHandle {
    /// The address clients connect to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, waits for the accept thread to end, and closes every
    /// open client connection, cutting short any response in progress.
    /// Calling it again does nothing.
    pub fn shutdown(&self) {
        self.stop.store(true, Ordering::SeqCst);
        let thread = self
            .accept_thread
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(thread) = thread {
            // The accept thread is blocked in accept(); a connection wakes it.
            // If connecting fails, it is not blocked there, and sees the flag.
            let _ = TcpStream::connect_timeout(&wake_addr(self.local_addr), Duration::from_secs(1));
            let _ = thread.join();
        }
        self.shared.registry.close_all();
        self.shared.upstream.close_all();
    }
}

impl fmt::Debug for FrontHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrontHandle")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

/// The address to connect to for reaching our own listener, which may be
/// bound to the unspecified address.
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
    let mut backoff = Backoff::default();
    while !stop.load(Ordering::SeqCst) {
        // An upstream connection being opened needs the descriptors that
        // are free now; this thread may take at most one (and its clone)
        // before it waits here again.
        shared.headroom.pass();
        match accept() {
            Ok((stream, peer)) => {
                backoff.reset();
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                admit(stream, peer, shared);
            }
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => {
                // Out of descriptors (EMFILE) or an aborted handshake must not
                // end accepting for good, as it does in tiny_http.
                shared.hooks.accept_error(&err);
                thread::sleep(backoff.next_delay());
            }
        }
    }
}

fn admit(stream: TcpStream, peer: SocketAddr, shared: &Arc<Shared>) {
    // Responses go out in few writes; Nagle would only delay them.
    let _ = stream.set_nodelay(true);
    let Some(registration) = shared.registry.admit(&stream) else {
        return;
    };
    let thread_shared = Arc::clone(shared);
    let spawned = thread::Builder::new()
        .name("front-conn".into())
        .stack_size(CONNECTION_STACK)
        .spawn(move || {
            connection::serve(stream, peer.ip(), &thread_shared, registration.activity());
            drop(registration);
        });
    if spawned.is_err() {
        // The closure was dropped: the stream closed and the registration ended.
        shared.hooks.connection_rejected("limit");
    }
}

/// The wait after consecutive accept errors: 1 ms, doubling to 100 ms.
#[derive(Debug)]
struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff { next: BACKOFF_MIN }
    }
}

impl Backoff {
    fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        delay
    }

    fn reset(&mut self) {
        self.next = BACKOFF_MIN;
    }
}

#[cfg(test)]
mod test_support;
#[cfg(test)]
mod tests;
