//! One client connection: each request is read completely and within its
//! limits, checked, and only then sent upstream.

use std::io::{self, Read};
use std::net::{IpAddr, Shutdown, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::chunked::{self, FramingError};
use super::client::{ClientStream, HeadError};
use super::local::{Answer, LocalHandler, Outcome, Slot};
use super::registry::Activity;
use super::reply::{self, method_label, Reject};
use super::request::{Expect, Framing, RequestHead};
use super::upstream::{Exchange, ExchangeError, Want};
use super::{tunnel, Shared};

/// How long a closing connection keeps reading what the client still sends,
/// so that our last response is not destroyed by a reset (RFC 9112 section 9.6).
const LINGER_TIME: Duration = Duration::from_secs(1);

/// The most bytes read while lingering.
const LINGER_BYTES: usize = 1024 * 1024;

/// Bodies are read into memory that grows as bytes arrive, so a large
/// Content-Length alone cannot make us allocate.
const INITIAL_BODY_CAPACITY: u64 = 64 * 1024;

/// What the connection does after a request.
enum Next {
    /// Wait for the next request.
    Request,
    /// Close at once: the client is gone, timed out, or broke the framing.
    Close,
    /// A response went out and the connection ends: close gracefully.
    Linger,
    /// The upstream switched protocols: copy raw bytes both ways.
    Tunnel(TcpStream, Vec<u8>),
    /// The answer is written by its sender: wait for the next request, and
    /// for the answer to be written before serving it.
    Later(Arc<Slot>),
}

/// Serves requests on `stream` until the client leaves, a limit is hit, or
/// the registry evicts the connection while it is idle.
pub(super) fn serve(stream: TcpStream, peer: IpAddr, shared: &Shared, activity: &Arc<Activity>) {
    let config = &shared.config;
    // A client that stops reading must not hold this thread, and the upstream
    // connection behind it, for ever.
    let write_timeout = config.body_timeout.max(Duration::from_millis(1));
    if stream.set_write_timeout(Some(write_timeout)).is_err() {
        return;
    }
    let mut client = ClientStream::new(stream);
    let mut pending: Option<Arc<Slot>> = None;
    // A new connection starts idle, since its admission.
    loop {
        client.release_buffer();
        client.set_deadline(config.idle_timeout);
        match client.wait_for_data() {
            Ok(true) => {}
            Ok(false) => return,
            Err(err) => {
                if timed_out(&err) {
                    shared.hooks.connection_rejected("idle_timeout");
                }
                return;
            }
        }
        // Answers go out in order: the last one first, if its sender is
        // still writing it. Its sender marked the connection idle.
        if pending.take().is_some_and(|slot| !slot.wait_written()) {
            return;
        }
        if !activity.mark_busy() {
            return;
        }
        match serve_request(&mut client, peer, shared, activity) {
            Next::Request => activity.mark_idle(),
            Next::Later(slot) => pending = Some(slot),
            Next::Close => return,
            Next::Linger => return linger(client.stream()),
            Next::Tunnel(upstream, upstream_leftover) => {
                let (stream, client_leftover) = client.into_parts();
                return tunnel::run(stream, &client_leftover, upstream, &upstream_leftover);
            }
        }
    }
}

fn serve_request(
    client: &mut ClientStream,
    peer: IpAddr,
    shared: &Shared,
    activity: &Arc<Activity>,
) -> Next {
    let config = &shared.config;
    client.set_deadline(config.header_timeout);
    let head = match client.read_head(config.max_header_bytes) {
        Ok(head) => head,
        Err(HeadError::Closed) => return Next::Close,
        Err(HeadError::Io(err)) => {
            if timed_out(&err) {
                shared.hooks.connection_rejected("header_timeout");
            }
            return Next::Close;
        }
        Err(HeadError::TooLarge) => {
            let label = method_label(client.buffered());
            let reject = Reject::headers_too_large("the request head is too large");
            return refuse(client, shared, label, false, reject);
        }
        Err(HeadError::BareLf) => {
            let label = method_label(client.buffered());
            let reject = Reject::bad_request("every line must end in CRLF");
            return refuse(client, shared, label, false, reject);
        }
    };
    let label = method_label(&head);
    let request = match RequestHead::parse(head) {
        Ok(request) => request,
        Err(reject) => return refuse(client, shared, label, false, reject),
    };
    let head_only = request.is_head();
    if matches!(request.framing, Framing::Length(n) if n > config.max_body) {
        let reject = Reject::too_large("the request body is too large");
        return refuse(client, shared, label, head_only, reject);
    }
    // Answered here rather than by tiny_http, whose own 417 no handler sees
    // and so nothing counts. The body is left unread, as RFC 9110 allows.
    if request.expect == Expect::Unknown {
        let reject = Reject::expectation_failed("the only expectation supported is 100-continue");
        return refuse(client, shared, label, head_only, reject);
    }
    let body = match read_body(client, &request, shared, label) {
        Ok(body) => body,
        Err(next) => return next,
    };
    if let Some(handler) = shared.local.as_deref() {
        if !request.upgrade && handler.handles(request.method(), request.path()) {
            return answer_locally(client, &request, body, handler, activity);
        }
    }
    let message = request.forward(&body, peer);
    drop(body);
    let want = Want {
        head: head_only,
        http10: request.http10,
        close: !request.keep_alive,
        upgrade: request.upgrade,
        reusable: !request.upgrade,
    };
    match shared.upstream.exchange(&message, want, client.stream()) {
        Ok(Exchange::Done { close }) if close || want.close => Next::Linger,
        Ok(Exchange::Done { .. }) => Next::Request,
        Ok(Exchange::Upgraded(upstream, leftover)) => Next::Tunnel(upstream, leftover),
        Err(ExchangeError::Unreachable) => {
            let reject = Reject::bad_gateway("the server is unreachable");
            refuse(client, shared, label, head_only, reject)
        }
        // Closing this connection frees two descriptors towards the next try.
        Err(ExchangeError::NoDescriptors) => {
            let reject =
                Reject::unavailable("the server is out of file descriptors; retry shortly");
            refuse(client, shared, label, head_only, reject)
        }
        // The upstream saw this request and counted it, so the hook is not told.
        Err(ExchangeError::BadResponse(message)) => {
            answer(client, head_only, Reject::bad_gateway(message))
        }
        Err(ExchangeError::Broken) => Next::Close,
    }
}

/// Answers `request` in this thread through `handler`.
fn answer_locally(
    client: &ClientStream,
    request: &RequestHead,
    body: Vec<u8>,
    handler: &dyn LocalHandler,
    activity: &Arc<Activity>,
) -> Next {
    let close = !request.keep_alive;
    let keep_alive_10 = request.http10 && !close;
    let (answer, slot) = Answer::new(request.is_head(), close, keep_alive_10, activity.clone());
    handler.handle(request.local(body), answer);
    match slot.outcome(client.stream()) {
        Outcome::Ready(bytes) => match client.write_all(&bytes) {
            Ok(()) if close => Next::Linger,
            Ok(()) => Next::Request,
            Err(_) => Next::Close,
        },
        Outcome::Later(slot) => Next::Later(slot),
        Outcome::Failed => Next::Close,
    }
}

/// Reads the whole body into memory, so that tiny_http never waits on a slow
/// client, and never has to drain a body it did not read.
fn read_body(
    client: &mut ClientStream,
    request: &RequestHead,
    shared: &Shared,
    label: &'static str,
) -> Result<Vec<u8>, Next> {
    let config = &shared.config;
    if !request.has_body() {
        return Ok(Vec::new());
    }
    if request.expect == Expect::Continue
        && client.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").is_err()
    {
        return Err(Next::Close);
    }
    client.set_deadline(config.body_timeout);
    let result = match request.framing {
        Framing::Length(n) => {
            let capacity = n.min(INITIAL_BODY_CAPACITY) as usize;
            let mut body = Vec::with_capacity(capacity);
            client
                .read_body(n, &mut body)
                .map(|()| body)
                .map_err(FramingError::Io)
        }
        Framing::Chunked => chunked::read_body(client, config.max_body, config.max_header_bytes),
        Framing::Empty => Ok(Vec::new()),
    };
    result.map_err(|err| {
        let reject = match err {
            FramingError::Io(err) => {
                if timed_out(&err) {
                    shared.hooks.connection_rejected("body_timeout");
                }
                return Next::Close;
            }
            FramingError::Malformed(message) => Reject::bad_request(message),
            FramingError::LineTooLong => Reject::bad_request("a chunk-size line is too long"),
            FramingError::TrailersTooLarge => {
                Reject::headers_too_large("the trailers are too large")
            }
            FramingError::BodyTooLarge => Reject::too_large("the request body is too large"),
        };
        refuse(client, shared, label, request.is_head(), reject)
    })
}

/// Answers a request that tiny_http will never see, and tells the hooks so
/// that it is still counted once.
fn refuse(
    client: &ClientStream,
    shared: &Shared,
    label: &'static str,
    head_only: bool,
    reject: Reject,
) -> Next {
    shared.hooks.request_rejected(label, reject.status.code());
    answer(client, head_only, reject)
}

fn answer(client: &ClientStream, head_only: bool, reject: Reject) -> Next {
    // The connection ends either way; a failed write changes nothing.
    let _ = client.write_all(&reply::response(reject, head_only));
    Next::Linger
}

/// Ends our side of the connection, then reads and discards what the client
/// still sends for a bounded time, so that closing with unread bytes does not
/// send a reset that could destroy the response before the client reads it.
fn linger(stream: &TcpStream) {
    let _ = stream.shutdown(Shutdown::Write);
    let deadline = Instant::now() + LINGER_TIME;
    let mut buf = vec![0u8; 16 * 1024];
    let mut drained = 0;
    while drained < LINGER_BYTES {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() || stream.set_read_timeout(Some(remaining)).is_err() {
            return;
        }
        match (&*stream).read(&mut buf) {
            Ok(0) => return,
            Ok(n) => drained += n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

fn timed_out(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
    )
}
