//! The upstream side: a pool of connections to tiny_http, and the relay of
//! one response from it to the client.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::chunked::{
    chunk_end, chunk_size, read_line, skip_trailers, FramingError, MAX_CHUNK_LINE,
};
use super::fds::Headroom;
use super::response::{Body, ResponseHead, MAX_RESPONSE_HEAD};

/// The most idle upstream connections kept. Each holds a tiny_http thread.
const MAX_IDLE: usize = 64;

/// How long an upstream connection may sit unused in the pool before
/// [`Upstream::close_idle`] closes it.
pub(super) const POOL_IDLE_LIMIT: Duration = Duration::from_secs(2);

/// How much of a response is read from upstream at a time.
const READ_BUFFER: usize = 16 * 1024;

/// How long connecting to the upstream may take; it is on loopback.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a new connection keeps others from opening while its first
/// response is awaited. See [`Upstream::open`].
const OPENING_WAIT: Duration = Duration::from_millis(50);

/// Connections to the upstream server, shared by all client threads.
/// Safe to use from many threads at once.
pub(super) struct Upstream {
    addr: SocketAddr,
    /// Idle connections with the time each was put back; the most recently
    /// used is last, and is taken first, so that spare ones age and close.
    idle: Mutex<Vec<(TcpStream, Instant)>>,
    /// Held while a new connection is being opened.
    opening: Mutex<()>,
    /// Checked before each new connection, so tiny_http is never the one
    /// left without a descriptor.
    headroom: Arc<Headroom>,
}

/// What the client side of an exchange asked for.
#[derive(Debug, Clone, Copy)]
pub(super) struct Want {
    /// The request was `HEAD`, so the response has no body.
    pub(super) head: bool,
    /// The client speaks HTTP/1.0: no chunked responses, no interim responses.
    pub(super) http10: bool,
    /// The client connection closes after this response.
    pub(super) close: bool,
    /// The client asked to switch protocols.
    pub(super) upgrade: bool,
    /// tiny_http keeps its side of the connection open after this request.
    /// It closes after a request that asks to upgrade.
    pub(super) reusable: bool,
}

/// How an exchange ended.
#[derive(Debug)]
pub(super) enum Exchange {
    /// The response was relayed. `close` says the client connection must now
    /// be closed, because the response body was delimited by closing it.
    Done { close: bool },
    /// The upstream switched protocols; from here on bytes are copied raw.
    /// Carries the upstream connection and any bytes already read from it.
    Upgraded(TcpStream, Vec<u8>),
}

/// Why an exchange failed.
#[derive(Debug)]
pub(super) enum ExchangeError {
    /// No connection could be made, so the request never reached the upstream.
    Unreachable,
    /// Too few descriptors were free to open a connection safely, so the
    /// request never reached the upstream.
    NoDescriptors,
    /// The upstream's answer was unusable, and nothing has been sent to the client yet.
    BadResponse(&'static str),
    /// The relay failed part-way; the client has a partial response and must be closed.
    Broken,
}

impl Upstream {
    pub(super) fn new(addr: SocketAddr, headroom: Arc<Headroom>) -> Upstream {
        Upstream {
            addr,
            idle: Mutex::new(Vec::new()),
            opening: Mutex::new(()),
            headroom,
        }
    }

    /// Sends `request` (head and body) upstream and relays the response to `client`.
    pub(super) fn exchange(
        &self,
        request: &[u8],
        want: Want,
        client: &TcpStream,
    ) -> Result<Exchange, ExchangeError> {
        let upstream = self.send(request)?;
        let mut relay = Relay {
            upstream,
            client,
            pending: Vec::new(),
            sent: false,
        };
        match relay_response(&mut relay, want) {
            Ok(Reuse::Pool) => {
                self.put_back(relay.upstream.into_inner());
                Ok(Exchange::Done { close: false })
            }
            Ok(Reuse::Drop { close }) => Ok(Exchange::Done { close }),
            Ok(Reuse::Upgraded) => {
                let leftover = relay.upstream.buffer().to_vec();
                Ok(Exchange::Upgraded(relay.upstream.into_inner(), leftover))
            }
            // Once bytes went out, the client can no longer be told 502.
            Err(ExchangeError::BadResponse(_)) if relay.sent => Err(ExchangeError::Broken),
            Err(err) => Err(err),
        }
    }

    /// Writes the request on a pooled connection, or a fresh one, and waits
    /// for the first byte of the answer.
    fn send(&self, request: &[u8]) -> Result<BufReader<TcpStream>, ExchangeError> {
        if let Some(reader) = self.take().and_then(|stream| try_send(stream, request)) {
            return Ok(reader);
        }
        // A pooled connection may have been closed by tiny_http since we used
        // it. Nothing came back, so sending again cannot do the work twice.
        self.open(request)
    }

    /// Sends the request on a new connection.
    ///
    /// tiny_http hands each new connection to a thread pool that, when
    /// several connections arrive at once, can queue one behind a busy thread
    /// instead of starting another; behind a kept-alive connection it then
    /// waits until that connection closes. So connections are opened one at
    /// a time, each only once the previous one is being served (its answer
    /// has started, or `OPENING_WAIT` has passed).
    ///
    /// The descriptor headroom stays reserved for as long, which is past the
    /// moment tiny_http accepts the connection and clones it.
    fn open(&self, request: &[u8]) -> Result<BufReader<TcpStream>, ExchangeError> {
        let opening = self.opening.lock().unwrap_or_else(|e| e.into_inner());
        // While we waited, another request may have returned a connection.
        if let Some(reader) = self.take().and_then(|stream| try_send(stream, request)) {
            return Ok(reader);
        }
        let reserved = self
            .headroom
            .reserve()
            .ok_or(ExchangeError::NoDescriptors)?;
        let stream = TcpStream::connect_timeout(&self.addr, CONNECT_TIMEOUT)
            .map_err(|_| ExchangeError::Unreachable)?;
        const NO_RESPONSE: ExchangeError =
            ExchangeError::BadResponse("the upstream closed without a response");
        // Small requests and responses must not wait for delayed ACKs.
        let _ = stream.set_nodelay(true);
        (&stream).write_all(request).map_err(|_| NO_RESPONSE)?;
        let _ = stream.set_read_timeout(Some(OPENING_WAIT));
        let mut reader = BufReader::with_capacity(READ_BUFFER, stream);
        let answered = match reader.fill_buf() {
            Ok(bytes) => Some(!bytes.is_empty()),
            Err(err)
                if matches!(
                    err.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                None
            }
            Err(_) => Some(false),
        };
        drop(reserved);
        drop(opening);
        if reader.get_ref().set_read_timeout(None).is_err() {
            return Err(NO_RESPONSE);
        }
        let answered = answered.unwrap_or_else(|| reader.fill_buf().is_ok_and(|b| !b.is_empty()));
        if answered {
            Ok(reader)
        } else {
            Err(NO_RESPONSE)
        }
    }

    fn take(&self) -> Option<TcpStream> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.pop().map(|(stream, _)| stream)
    }

    fn put_back(&self, stream: TcpStream) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push((stream, Instant::now()));
        }
    }

    /// Closes the connections unused for longer than `POOL_IDLE_LIMIT`. Each
    /// holds a tiny_http thread, and a connection queued in tiny_http's pool
    /// (see [`Upstream::open`]) gets a thread only when another closes.
    pub(super) fn close_idle(&self) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.retain(|(_, since)| since.elapsed() < POOL_IDLE_LIMIT);
    }

    /// Closes every pooled connection.
    pub(super) fn close_all(&self) {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

fn try_send(stream: TcpStream, request: &[u8]) -> Option<BufReader<TcpStream>> {
    (&stream).write_all(request).ok()?;
    let mut reader = BufReader::with_capacity(READ_BUFFER, stream);
    match reader.fill_buf() {
        Ok(bytes) if !bytes.is_empty() => Some(reader),
        _ => None,
    }
}

/// What to do with the upstream connection once the response is relayed.
enum Reuse {
    Pool,
    Drop { close: bool },
    Upgraded,
}

/// The upstream reader plus bytes waiting to go to the client. Bytes are
/// held back only while more are already buffered from upstream: before any
/// read that could block, everything pending is written, so streamed events
/// reach the client as soon as they leave the upstream.
struct Relay<'a> {
    upstream: BufReader<TcpStream>,
    client: &'a TcpStream,
    pending: Vec<u8>,
    sent: bool,
}

impl Relay<'_> {
    fn flush(&mut self) -> io::Result<()> {
        if !self.pending.is_empty() {
            self.sent = true;
            self.client.write_all(&self.pending)?;
            self.pending.clear();
        }
        Ok(())
    }

    /// Moves `n` body bytes from upstream to the pending output.
    fn copy(&mut self, n: u64) -> io::Result<()> {
        let mut left = n;
        while left > 0 {
            if self.upstream.buffer().is_empty() {
                self.flush()?;
            }
            let available = self.upstream.fill_buf()?;
            if available.is_empty() {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            let take = available
                .len()
                .min(usize::try_from(left).unwrap_or(usize::MAX));
            self.pending.extend_from_slice(&available[..take]);
            self.upstream.consume(take);
            left -= take as u64;
        }
        Ok(())
    }
}

impl Read for Relay<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        super::client::read_buffered(self, out)
    }
}

impl BufRead for Relay<'_> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.upstream.buffer().is_empty() {
            self.flush()?;
        }
        self.upstream.fill_buf()
    }

    fn consume(&mut self, n: usize) {
        self.upstream.consume(n);
    }
}

fn relay_response(relay: &mut Relay<'_>, want: Want) -> Result<Reuse, ExchangeError> {
    let head = loop {
        let head = ResponseHead::read(relay)?;
        match head.status {
            101 if want.upgrade => {
                head.write_verbatim(&mut relay.pending);
                relay.flush().map_err(|_| ExchangeError::Broken)?;
                return Ok(Reuse::Upgraded);
            }
            101 => {
                return Err(ExchangeError::BadResponse(
                    "the upstream switched protocols unasked",
                ))
            }
            100..=199 => {
                if !want.http10 {
                    head.write_verbatim(&mut relay.pending);
                }
            }
            _ => break head,
        }
    };
    let body = if want.head || matches!(head.status, 204 | 304) {
        Body::None
    } else {
        head.body
    };
    let dechunk = want.http10 && body == Body::Chunked;
    let close = want.close || dechunk || body == Body::UntilClose;
    head.write_for_client(&mut relay.pending, want.http10, close);
    relay_body(relay, body, dechunk).map_err(|_| ExchangeError::Broken)?;
    relay.flush().map_err(|_| ExchangeError::Broken)?;
    let reusable = want.reusable
        && !head.upstream_closes
        && body != Body::UntilClose
        && relay.upstream.buffer().is_empty();
    Ok(if reusable {
        Reuse::Pool
    } else {
        Reuse::Drop {
            close: body == Body::UntilClose || dechunk,
        }
    })
}

fn relay_body(relay: &mut Relay<'_>, body: Body, dechunk: bool) -> Result<(), FramingError> {
    match body {
        Body::None => Ok(()),
        Body::Length(n) => Ok(relay.copy(n)?),
        Body::UntilClose => loop {
            let n = relay.fill_buf()?.len();
            if n == 0 {
                return Ok(());
            }
            relay.copy(n as u64)?;
        },
        Body::Chunked => {
            let mut line = Vec::new();
            loop {
                line.clear();
                read_line(relay, MAX_CHUNK_LINE, &mut line)?;
                let size = chunk_size(&line)?;
                if size == 0 {
                    skip_trailers(relay, MAX_RESPONSE_HEAD)?;
                    if !dechunk {
                        relay.pending.extend_from_slice(b"0\r\n\r\n");
                    }
                    return Ok(());
                }
                if !dechunk {
                    // Writing to a Vec cannot fail.
                    let _ = write!(relay.pending, "{size:x}\r\n");
                }
                relay.copy(size)?;
                if !dechunk {
                    relay.pending.extend_from_slice(b"\r\n");
                }
                chunk_end(relay)?;
            }
        }
    }
}
