//! The live views: `GET /api/v1/events` (server-sent events), `GET
//! /api/v1/ws` (a WebSocket carrying the same events) and `GET /`, a page
//! that shows them.
//!
//! Both streams take `?run_id=` (only that run's events) and resume: SSE
//! from `Last-Event-ID` (or `?last_event_id=`), the WebSocket from
//! `?after_seq=`; both also take `?tail=N`, the N newest retained events.
//!
//! **No worker is held.** A handler answers, subscribes and hands the
//! connection to threads of its own with 64 KiB stacks, then returns to the
//! pool; `/metrics` is served by the same few workers however many streams
//! are open.
//!
//! **SSE** bypasses tiny_http's response, which buffers a body of unknown
//! length until it ends: [`Exchange::stream`] writes the head, and one
//! thread per subscriber writes each batch of ready events as one chunk and
//! flushes it, with a comment line every 15 s to keep proxies and dead-peer
//! detection going. A lagged subscriber gets a `lagged` event without an
//! `id`, so an `EventSource` reconnects with the last seq it saw.
//!
//! **WebSocket.** tiny_http's upgraded connection is one boxed
//! `Read + Write` whose halves (a reader and a writer over two descriptors
//! of the same socket) cannot be reached separately, and it offers no read
//! timeout, so one thread blocked reading client frames would stop events
//! from going out. Holding it behind a mutex does not help, and polling
//! with a timeout would cost either latency or wake-ups. The handler
//! instead takes a second handle to the same socket
//! ([`crate::sys::socket_with_peer`]): a reader thread owns the box and
//! blocks on client frames, answering pings; a writer thread owns the
//! subscription and writes events and heartbeat pings through the second
//! handle. Both write under one mutex, which also records that a close
//! frame went out, after which nothing else is sent. Shutting the socket
//! down from either side wakes the other. The 101 has been flushed through
//! tiny_http's buffer before the second handle writes, so bytes never
//! interleave.
//!
//! Client frames must be masked; a protocol error or a message over 64 KiB
//! is answered with the close code [`frame::ReadError::close_code`] gives.
//! After sending a close frame the server half-closes and waits up to 5 s
//! for the client's close or end of stream before letting go.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::Duration;

use serde_json::json;

use super::exchange::Exchange;
use super::response::Response;
use crate::error::Error;
use crate::events::{Closer, Filter, Next, Published, Start, Subscription, Transport, RETAINED};
use crate::log::Logger;
use crate::ws::{self, frame};

/// How long a stream may stay silent before a heartbeat goes out.
const HEARTBEAT: Duration = Duration::from_secs(15);
/// The stack of each stream thread; they format short lines and recurse nowhere.
const STREAM_STACK: usize = 64 * 1024;
/// The most events written with one flush.
const BATCH: usize = 256;
/// The largest message a WebSocket client may send.
const MAX_CLIENT_MESSAGE: usize = 64 * 1024;
/// How long a closing WebSocket waits for the client's close or end of stream.
const CLOSE_WAIT: Duration = Duration::from_secs(5);
/// How long one write to a WebSocket client may block.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// The most bytes read and thrown away while a WebSocket closes.
const DRAIN_LIMIT: usize = 64 * 1024;
/// The close code sent to a subscriber cut off for lagging (policy violation).
const CLOSE_LAGGED: u16 = 1008;

/// The live page, built into the binary.
const PAGE: &str = include_str!("page.html");

/// Inline script and style are the page's own; it talks to this origin only.
const PAGE_CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; \
    style-src 'unsafe-inline'; connect-src 'self'; base-uri 'none'; \
    form-action 'none'; frame-ancestors 'none'";

/// `GET /`: the live page.
pub fn page(ex: Exchange) {
    ex.send(Response {
        status: 200,
        content_type: "text/html; charset=utf-8",
        headers: vec![
            ("Cache-Control", "no-cache".to_string()),
            ("Content-Security-Policy", PAGE_CSP.to_string()),
        ],
        body: PAGE.as_bytes().to_vec(),
    })
}

/// What a stream asked for.
struct Params {
    filter: Filter,
    start: Start,
}

fn seq_param(name: &str, value: &str) -> Result<u64, Response> {
    value
        .trim()
        .parse()
        .map_err(|_| Error::invalid(name, "must be a non-negative integer").into())
}

/// Reads `?run_id=`, `?tail=` and the resume position: the `Last-Event-ID`
/// header (SSE only), then the first of `resume_keys` given.
fn params(ex: &Exchange, header: Option<&str>, resume_keys: &[&str]) -> Result<Params, Response> {
    let filter = match ex.query("run_id").filter(|id| !id.is_empty()) {
        Some(id) if crate::runs::valid_run_id(&id) => Filter::run(&id),
        Some(_) => {
            return Err(
                Error::invalid("run_id", "must be 1-128 characters of A-Z a-z 0-9 . _ : -").into(),
            )
        }
        None => Filter::all(),
    };
    let from_header = header
        .and_then(|h| ex.header(h).map(|v| (h, v)))
        .filter(|(_, v)| !v.trim().is_empty());
    let from_query = resume_keys
        .iter()
        .find_map(|k| ex.query(k).filter(|v| !v.is_empty()).map(|v| (*k, v)));
    let start = match from_header.or(from_query) {
        Some((name, value)) => Start::After(seq_param(name, &value)?),
        None => match ex.query("tail").filter(|v| !v.is_empty()) {
            Some(n) => match n.trim().parse::<usize>() {
                Ok(n) if n <= RETAINED => Start::Tail(n),
                _ => {
                    return Err(Error::invalid(
                        "tail",
                        format!("must be an integer from 0 to {RETAINED}"),
                    )
                    .into())
                }
            },
            None => Start::Live,
        },
    };
    Ok(Params { filter, start })
}

/// Takes `first` and whatever else is ready, up to [`BATCH`] events; also
/// returns how the subscription ended, if it did.
fn batch(sub: &mut Subscription, first: Next) -> (Vec<Arc<Published>>, Option<Next>) {
    let mut events = Vec::new();
    let mut next = first;
    loop {
        match next {
            Next::Event(e) => {
                events.push(e);
                if events.len() == BATCH {
                    return (events, None);
                }
            }
            Next::Idle => return (events, None),
            end => return (events, Some(end)),
        }
        next = sub.next(Duration::ZERO);
    }
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> io::Result<()> {
    thread::Builder::new()
        .name(name.to_string())
        .stack_size(STREAM_STACK)
        .spawn(f)
        .map(drop)
}

// ---------------------------------------------------------------------------
// Server-sent events

/// `GET /api/v1/events`: the event stream as `text/event-stream`.
pub fn events(ex: Exchange) {
    let p = match params(&ex, Some("Last-Event-ID"), &["last_event_id", "after_seq"]) {
        Ok(p) => p,
        Err(r) => return ex.send(r),
    };
    let app = ex.app().clone();
    // Subscribed before the head goes out, so nothing published after the
    // client sees the 200 is missed.
    let sub = app.events.subscribe(p.filter, p.start, Transport::Sse);
    let headers = [
        ("Cache-Control", "no-cache".to_string()),
        ("X-Accel-Buffering", "no".to_string()),
    ];
    let Ok(writer) = ex.stream("text/event-stream", &headers) else {
        return;
    };
    if let Err(e) = spawn("sse", move || sse(writer, sub)) {
        warn_no_thread(&app.log, "sse", &e);
    }
}

fn warn_no_thread(log: &Logger, stream: &str, e: &io::Error) {
    log.warn(
        "cannot start a stream thread; closing the stream",
        &[("stream", json!(stream)), ("error", json!(e.to_string()))],
    );
}

/// Appends `data` as one chunk of a chunked body.
fn chunk(out: &mut Vec<u8>, data: &[u8]) {
    out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

fn sse(mut w: Box<dyn Write + Send>, mut sub: Subscription) {
    // EventSource waits this long before reconnecting.
    let mut out = Vec::with_capacity(4096);
    chunk(&mut out, b"retry: 2000\n\n");
    loop {
        if w.write_all(&out).and_then(|()| w.flush()).is_err() {
            return;
        }
        out.clear();
        let first = sub.next(HEARTBEAT);
        if first == Next::Idle {
            chunk(&mut out, b": keepalive\n\n");
            continue;
        }
        let (events, end) = batch(&mut sub, first);
        let mut text = String::new();
        for e in &events {
            text.push_str(&format!(
                "id: {}\nevent: {}\ndata: {}\n\n",
                e.seq(),
                e.kind(),
                e.json()
            ));
        }
        if let Some(Next::Lagged(lagged)) = &end {
            text.push_str(&format!("event: lagged\ndata: {}\n\n", lagged.to_json()));
        }
        if !text.is_empty() {
            chunk(&mut out, text.as_bytes());
        }
        if end.is_some() {
            out.extend_from_slice(b"0\r\n\r\n");
            let _ = w.write_all(&out).and_then(|()| w.flush());
            return;
        }
    }
}

// ---------------------------------------------------------------------------
// WebSocket

/// True when header `name` lists `token` (comma-separated, any case).
fn lists(ex: &Exchange, name: &str, token: &str) -> bool {
    ex.header(name)
        .is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
}

/// Checks the opening handshake (RFC 6455 section 4.2.1) and returns the key.
fn handshake_key(ex: &Exchange) -> Result<String, Response> {
    if !lists(ex, "Upgrade", "websocket") {
        return Err(Error::invalid("Upgrade", "must be websocket").into());
    }
    if !lists(ex, "Connection", "upgrade") {
        return Err(Error::invalid("Connection", "must include upgrade").into());
    }
    if ex.header("Sec-WebSocket-Version").as_deref().map(str::trim) != Some("13") {
        let r: Response = Error::invalid("Sec-WebSocket-Version", "must be 13").into();
        return Err(r.with_header("Sec-WebSocket-Version", "13"));
    }
    match ex.header("Sec-WebSocket-Key") {
        Some(key) if ws::valid_client_key(&key) => Ok(key),
        _ => Err(Error::invalid("Sec-WebSocket-Key", "must be the base64 of 16 bytes").into()),
    }
}

/// `GET /api/v1/ws`: the event stream over a WebSocket, one text frame per event.
pub fn websocket(ex: Exchange) {
    let key = match handshake_key(&ex) {
        Ok(key) => key,
        Err(r) => return ex.send(r),
    };
    let p = match params(&ex, None, &["after_seq"]) {
        Ok(p) => p,
        Err(r) => return ex.send(r),
    };
    let Some(socket) = ex.remote_addr().and_then(crate::sys::socket_with_peer) else {
        return ex.send(Response::internal(
            "the connection's socket cannot be reached for a WebSocket",
        ));
    };
    let _ = socket.set_write_timeout(Some(WRITE_TIMEOUT));
    let app = ex.app().clone();
    let sub = app
        .events
        .subscribe(p.filter, p.start, Transport::WebSocket);
    let accept = [("Sec-WebSocket-Accept", ws::accept_key(&key))];
    let Some(stream) = ex.upgrade("websocket", &accept) else {
        return;
    };
    let conn = Arc::new(Conn {
        socket,
        close_sent: Mutex::new(false),
    });
    let closer = sub.closer();
    // The reader drops the sender when it ends; the writer waits on that
    // after a close it sent, and no longer than CLOSE_WAIT.
    let (reader_done, reader_gone) = mpsc::channel::<()>();
    let writer_conn = conn.clone();
    if let Err(e) = spawn("ws-write", move || {
        ws_writer(&writer_conn, sub, &reader_gone)
    }) {
        conn.abort();
        return warn_no_thread(&app.log, "websocket", &e);
    }
    let reader_conn = conn.clone();
    let reader_closer = closer.clone();
    let reader = move || {
        ws_reader(&reader_conn, stream, &reader_closer);
        drop(reader_done);
    };
    if let Err(e) = spawn("ws-read", reader) {
        closer.close();
        conn.abort();
        warn_no_thread(&app.log, "websocket", &e);
    }
}

/// The write side of a WebSocket, shared by its two threads. Safe to share
/// across threads.
struct Conn {
    /// A second handle to the upgraded socket.
    socket: TcpStream,
    /// Held while writing a frame; true once a close frame went out.
    close_sent: Mutex<bool>,
}

impl Conn {
    fn lock(&self) -> MutexGuard<'_, bool> {
        // Only a flag lives under the lock; a panic cannot leave it half set.
        self.close_sent.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes `bytes` (whole frames) unless a close frame already went out.
    fn send(&self, bytes: &[u8]) -> io::Result<()> {
        let closed = self.lock();
        if *closed {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the close frame was sent",
            ));
        }
        (&self.socket).write_all(bytes)
    }

    fn close_sent(&self) -> bool {
        *self.lock()
    }

    /// Sends a close frame once, then half-closes and bounds how long the
    /// reader may wait for the client's answer.
    fn close(&self, code: u16, reason: &str) {
        let mut closed = self.lock();
        if *closed {
            return;
        }
        *closed = true;
        let _ = frame::write_close(&mut &self.socket, code, reason);
        let _ = self.socket.shutdown(Shutdown::Write);
        let _ = self.socket.set_read_timeout(Some(CLOSE_WAIT));
    }

    /// Ends the connection at once, waking a reader blocked on it.
    fn abort(&self) {
        let _ = self.socket.shutdown(Shutdown::Both);
    }
}

fn ws_writer(conn: &Conn, mut sub: Subscription, reader_gone: &Receiver<()>) {
    loop {
        let first = sub.next(HEARTBEAT);
        let mut out = Vec::new();
        if first == Next::Idle {
            let _ = frame::write_ping(&mut out, b"");
            if conn.send(&out).is_err() {
                break;
            }
            continue;
        }
        let (events, end) = batch(&mut sub, first);
        for e in &events {
            let _ = frame::write_text(&mut out, e.json());
        }
        if let Some(Next::Lagged(lagged)) = &end {
            let _ = frame::write_text(&mut out, &lagged.to_json().to_string());
        }
        if conn.send(&out).is_err() {
            break;
        }
        match end {
            None => continue,
            Some(Next::Lagged(_)) => {
                conn.close(CLOSE_LAGGED, "lagged");
                // A blocked read does not see the new read timeout, so the
                // wait for the client's close is bounded here.
                if reader_gone.recv_timeout(CLOSE_WAIT).is_err() {
                    conn.abort();
                }
                return;
            }
            // Closed: the reader has finished with the connection.
            Some(_) => return,
        }
    }
    if !conn.close_sent() {
        conn.abort();
    }
}

fn ws_reader(conn: &Conn, mut stream: Box<dyn tiny_http::ReadWrite + Send>, closer: &Closer) {
    let mut reader = frame::Reader::new(MAX_CLIENT_MESSAGE);
    loop {
        match reader.read_message(&mut stream) {
            Ok(frame::Message::Ping(payload)) => {
                let mut out = Vec::new();
                let _ = frame::write_pong(&mut out, &payload);
                if conn.send(&out).is_err() && !conn.close_sent() {
                    break;
                }
            }
            Ok(frame::Message::Close(status)) => {
                // The client's code was checked on reading; echo it.
                conn.close(status.map_or(1000, |(code, _)| code), "");
                drain(&mut stream);
                break;
            }
            // Clients send nothing the server acts on.
            Ok(_) => {}
            Err(e) if e.is_io() => break,
            Err(e) => {
                conn.close(e.close_code(), &e.to_string());
                drain(&mut stream);
                break;
            }
        }
    }
    closer.close();
}

/// Reads and discards until the client ends the stream, the close timeout
/// passes or [`DRAIN_LIMIT`] bytes went by, so closing does not reset a
/// connection with unread bytes and lose the close frame.
fn drain(stream: &mut dyn Read) {
    let mut buf = vec![0; 4096];
    let mut left = DRAIN_LIMIT;
    while left > 0 {
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => left = left.saturating_sub(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_framed_with_hex_lengths() {
        let mut out = Vec::new();
        chunk(&mut out, &[b'x'; 26]);
        assert_eq!(&out[..4], b"1a\r\n");
        assert!(out.ends_with(b"x\r\n"));
    }

    #[test]
    fn the_page_is_self_contained() {
        assert!(PAGE.starts_with("<!DOCTYPE html>"));
        assert!(PAGE.contains("EventSource"));
        for external in ["http://", "https://", "//cdn"] {
            assert!(!PAGE.contains(external), "{external}");
        }
    }
}
