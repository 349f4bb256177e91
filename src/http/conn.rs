//! One client connection: each request read whole within its limits, checked and answered in order.

use std::io::{self, BufRead};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::body::BodyWriter;
use super::chunked;
use super::conns::Activity;
use super::parse::{Expect, RequestHead};
use super::response::{self, method_label, Response};
use super::socket::{discard, ClientStream, ReadError};
use super::wire::{self, Delivery, Framing};
use super::{Answer, Request, Shared, Takeover};

/// How long and how much a closing connection reads on, so a reset does not
/// destroy our last response (RFC 9112 section 9.6).
const LINGER_TIME: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 1024 * 1024;

/// Bodies grow as bytes arrive, so a large Content-Length alone cannot make us allocate.
const INITIAL_BODY_CAPACITY: u64 = 64 * 1024;

enum AfterRequest {
    Read,
    /// Close at once: the client is gone, timed out, or broke the framing.
    Close,
    /// A response went out and the connection ends: close gracefully.
    Linger,
    Stream(Takeover),
}

/// Serves requests on `stream` until the client leaves, a limit is hit, or it is evicted.
pub(super) fn serve(stream: TcpStream, shared: &Shared, activity: &Activity) {
    let limits = &shared.limits;
    // A client that stops reading must not hold this thread for ever.
    let Ok(client) = ClientStream::new(stream, limits.write_timeout) else {
        return;
    };
    let mut conn = Conn {
        client,
        shared,
        activity,
    };
    // A new connection starts idle, since its admission.
    loop {
        conn.client.release_buffer();
        conn.client.set_deadline(limits.idle_timeout);
        // Waits for the next request's first bytes; none means the client closed.
        match conn.client.fill_buf() {
            Ok([_, ..]) => {}
            Ok([]) => return,
            Err(err) => return conn.timed_out(&err, "idle_timeout"),
        }
        if !activity.mark_busy() {
            return;
        }
        match conn.serve_request() {
            // The connection was marked idle when its answer was ready.
            AfterRequest::Read => {}
            AfterRequest::Close => return,
            AfterRequest::Linger => return linger(&conn.client.stream),
            AfterRequest::Stream(run) => {
                let (stream, leftover) = conn.client.into_parts();
                // A stream waits on the client as long as both stay: no request deadlines.
                if stream.set_read_timeout(None).is_ok() {
                    run(stream, leftover);
                }
                return;
            }
        }
    }
}

/// What follows an answer that was sent, or failed to be.
fn after(sent: io::Result<()>, close: bool) -> AfterRequest {
    match sent {
        Ok(()) if close => AfterRequest::Linger,
        Ok(()) => AfterRequest::Read,
        Err(_) => AfterRequest::Close,
    }
}

/// How the answer to `head` goes out, and then the connection closes.
fn closing(head: &RequestHead) -> Delivery {
    Delivery {
        close: true,
        ..head.delivery
    }
}

/// A connection being served, by its own thread.
struct Conn<'a> {
    client: ClientStream,
    shared: &'a Shared,
    activity: &'a Activity,
}

impl Conn<'_> {
    fn serve_request(&mut self) -> AfterRequest {
        let (head, mut request, label) = match self.read_head() {
            Ok(read) => read,
            Err(next) => return next,
        };
        let shared = self.shared;
        // Methods not implemented (case-sensitive) get 501 once the body is read (RFC 9110 9.1).
        let implemented = label != "OTHER";
        if implemented && !shared.handler.admits(&request) {
            // Answered on the head alone: a body is never read, and the
            // connection then closes, since its next request would start inside it.
            let mut d = head.delivery;
            d.close |= head.has_body();
            return self.respond(d, shared.handler.refuse(request));
        }
        let Some(reservation) = Reservation::take(shared, &head) else {
            let why = "the server holds too many request bodies; retry shortly";
            return self.refuse(label, closing(&head), Response::refusal(503, why));
        };
        request.body = match self.read_body(&head, label) {
            Ok(body) => body,
            Err(next) => return next,
        };
        let d = head.delivery;
        if !implemented {
            // The framing was sound, so the connection goes on.
            self.activity.answered();
            let reject = Response::refusal(501, "the request method is not implemented");
            return self.refuse(label, d, reject);
        }
        let answer = shared.handler.handle(request);
        // The handler has parsed the body, or dropped it, by now.
        drop(reservation);
        self.respond(d, answer)
    }

    /// Reads and checks the next request's head, with its method's label; or what to do instead.
    fn read_head(&mut self) -> Result<(RequestHead, Request, &'static str), AfterRequest> {
        let limits = &self.shared.limits;
        self.client.set_deadline(limits.header_timeout);
        let unparsed = Delivery {
            close: true,
            ..Delivery::default()
        };
        let head = match self.client.read_head(limits.max_header_bytes) {
            Ok(head) => head,
            Err(err) => {
                let label = method_label(self.client.buffered());
                return Err(self.failed(err, "header_timeout", label, unparsed));
            }
        };
        let label = method_label(&head);
        let (head, request) = match RequestHead::parse(head) {
            Ok(parsed) => parsed,
            Err(reject) => return Err(self.refuse(label, unparsed, reject)),
        };
        let reject = match head.framing {
            Framing::Length(n) if n > limits.max_body => Response::too_large(limits.max_body),
            // The body is left unread, as RFC 9110 allows.
            _ if head.expect == Expect::Unknown => {
                Response::refusal(417, "the only expectation supported is 100-continue")
            }
            _ => return Ok((head, request, label)),
        };
        Err(self.refuse(label, closing(&head), reject))
    }

    /// Writes `answer`, marking the connection idle first unless a stream takes it over.
    fn respond(&self, d: Delivery, answer: Answer) -> AfterRequest {
        match answer {
            Answer::Reply(reply) => {
                self.activity.answered();
                after(self.send(&wire::encode(&reply, d)), d.close)
            }
            Answer::Stream(headers, write) => {
                self.activity.answered();
                let mut body = BodyWriter::new(&self.client, &*self.shared.hooks, d, headers);
                write(&mut body);
                let sent = body.finish();
                after(sent, d.close || body.closes())
            }
            Answer::TakeOver(status, headers, run) => {
                // Its head carries only its own fields: the stream owns the connection.
                let mut head = Vec::with_capacity(256);
                let framing = Framing::None;
                wire::head(&mut head, status, &headers, framing, Delivery::default());
                match self.send(&head) {
                    Ok(()) => AfterRequest::Stream(run),
                    Err(_) => AfterRequest::Close,
                }
            }
        }
    }

    fn send(&self, bytes: &[u8]) -> io::Result<()> {
        self.client.send(&*self.shared.hooks, bytes)
    }

    /// Reads the whole body, so that a handler never waits on a slow client.
    fn read_body(
        &mut self,
        head: &RequestHead,
        label: &'static str,
    ) -> Result<Vec<u8>, AfterRequest> {
        let limits = &self.shared.limits;
        if !head.has_body() {
            return Ok(Vec::new());
        }
        if head.expect == Expect::Continue && self.send(b"HTTP/1.1 100 Continue\r\n\r\n").is_err() {
            return Err(AfterRequest::Close);
        }
        self.client.set_deadline(limits.body_timeout);
        let client = &mut self.client;
        let result = match head.framing {
            Framing::Length(n) => {
                let mut body = Vec::with_capacity(n.min(INITIAL_BODY_CAPACITY) as usize);
                chunked::read_n(client, n, &mut body)
                    .map(|()| body)
                    .map_err(ReadError::from)
            }
            _ => chunked::read_body(client, limits.max_body, limits.max_header_bytes),
        };
        result.map_err(|err| self.failed(err, "body_timeout", label, closing(head)))
    }

    /// Closes on a socket error (reporting `timeout` if it was that), else answers the refusal.
    fn failed(
        &self,
        err: ReadError,
        timeout: &str,
        label: &'static str,
        d: Delivery,
    ) -> AfterRequest {
        match err {
            ReadError::Io(err) => {
                self.timed_out(&err, timeout);
                AfterRequest::Close
            }
            ReadError::Refused(reject) => self.refuse(label, d, reject),
        }
    }

    /// Answers a request no handler will see, counted by the hooks.
    fn refuse(&self, label: &'static str, d: Delivery, reject: Response) -> AfterRequest {
        self.shared.hooks.request_rejected(label, reject.status);
        after(self.send(&response::framed(reject, d)), d.close)
    }

    /// Reports `reason` when `err` is a deadline that passed.
    fn timed_out(&self, err: &io::Error, reason: &str) {
        if matches!(
            err.kind(),
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
        ) {
            self.shared.hooks.connection_rejected(reason);
        }
    }
}

/// Body bytes counted against [`super::Limits::max_buffered_bodies`], given back when dropped.
struct Reservation<'a> {
    shared: &'a Shared,
    bytes: u64,
}

impl<'a> Reservation<'a> {
    /// Reserves the body `head` announces (chunked: the limit); `None` when the cap is reached.
    fn take(shared: &'a Shared, head: &RequestHead) -> Option<Reservation<'a>> {
        let bytes = match head.framing {
            Framing::Length(n) => n,
            Framing::Chunked => shared.limits.max_body,
            _ => 0,
        };
        // Relaxed is enough: the counter is the only shared state, each add undone by one subtract.
        let before = shared.buffered.fetch_add(bytes, Ordering::Relaxed);
        let reservation = Reservation { shared, bytes };
        (bytes == 0 || before + bytes <= shared.limits.max_buffered_bodies).then_some(reservation)
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        let buffered = &self.shared.buffered;
        buffered.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// Ends our side of the connection, then discards what the client still sends, for a while.
fn linger(stream: &TcpStream) {
    let _ = stream.shutdown(Shutdown::Write);
    let deadline = Instant::now() + LINGER_TIME;
    discard(&mut &*stream, LINGER_BYTES, || {
        let remaining = deadline.saturating_duration_since(Instant::now());
        !remaining.is_zero() && stream.set_read_timeout(Some(remaining)).is_ok()
    });
}
