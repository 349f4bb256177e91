//! The live views: `GET /api/v1/events` (SSE), `GET /api/v1/ws` (the same on a
//! WebSocket), `GET /ws` (AgentGate's dashboard frames, [`agentgate`]) and `GET /`.
//! A handler subscribes and takes the connection over: its thread reads the
//! client, to see at once when it leaves, and a writer thread writes events
//! through a [`Link`]. Whichever side ends first wakes the other.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::json;

use super::exchange::Exchange;
use super::response::Response;
use super::socket::discard;
use super::wire::{chunk, LAST_CHUNK};
use super::Answer;
use crate::error::Error;
use crate::events::{
    agentgate, Closer, Filter, Next, Published, Start, Subscription, Transport, RETAINED,
};
use crate::ws::{self, frame};

/// How long a stream may stay silent before a heartbeat goes out.
const HEARTBEAT: Duration = Duration::from_secs(15);
/// Writer threads format short lines and recurse nowhere.
const STREAM_STACK: usize = 64 * 1024;
/// The most events written with one write.
const BATCH: usize = 256;
/// A writer takes a batch at most this often while events keep coming, so a
/// hundred subscribers cost a publisher few wake-ups; after a quiet spell an event goes at once.
const PACE: Duration = Duration::from_millis(5);
/// The largest message a WebSocket client may send.
const MAX_CLIENT_MESSAGE: usize = 64 * 1024;
/// How long a closing WebSocket waits for the client's close or end of stream.
const CLOSE_WAIT: Duration = Duration::from_secs(5);
/// The most bytes discarded while a stream closes, or from an SSE client.
const DRAIN_LIMIT: usize = 64 * 1024;
/// Close codes: a subscriber cut off for lagging (policy violation); the server stopping.
const CLOSE_LAGGED: u16 = 1008;
const CLOSE_GOING_AWAY: u16 = 1001;
/// The kernel's send buffer for a stream, not the megabytes Linux grows it to: a
/// client that stops reading holds little and is cut off within about a thousand events.
const STREAM_SEND_BUFFER: usize = 128 * 1024;

const PAGE: &str = include_str!("page.html");

/// Inline script and style are the page's own; it talks to this origin only.
const PAGE_CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; \
    style-src 'unsafe-inline'; connect-src 'self'; base-uri 'none'; \
    form-action 'none'; frame-ancestors 'none'";

pub fn page(ex: &mut Exchange) -> Answer {
    let mut page = Response::json_text(200, PAGE.as_bytes().to_vec())
        .with_header("Cache-Control", "no-cache")
        .with_header("Content-Security-Policy", PAGE_CSP);
    page.headers[0].1 = "text/html; charset=utf-8".to_string();
    ex.send(page)
}

/// Reads `?run_id=`, `?tail=` and the resume position: the `header` (SSE's
/// `Last-Event-ID`), then the first of `resume_keys` given.
fn params(
    ex: &Exchange,
    header: Option<&str>,
    resume_keys: &[&str],
) -> Result<(Filter, Start), Error> {
    let given = |key: &str| ex.query(key).filter(|v| !v.is_empty());
    let filter = match given("run_id") {
        Some(id) if crate::runs::valid_run_id(&id) => Filter::run(&id),
        Some(_) => {
            let why = "must be 1-128 characters of A-Z a-z 0-9 . _ : -";
            return Err(Error::invalid("run_id", why));
        }
        None => Filter::all(),
    };
    let from_header = header
        .and_then(|h| Some((h, ex.header(h)?)))
        .filter(|(_, v)| !v.trim().is_empty());
    let resume = from_header.or_else(|| resume_keys.iter().find_map(|k| Some((*k, given(k)?))));
    let start = match (resume, given("tail")) {
        (Some((name, value)), _) => Start::After(
            value
                .trim()
                .parse()
                .map_err(|_| Error::invalid(name, "must be a non-negative integer"))?,
        ),
        (None, Some(n)) => match n.trim().parse::<usize>() {
            Ok(n) if n <= RETAINED => Start::Tail(n),
            _ => {
                let why = format!("must be an integer from 0 to {RETAINED}");
                return Err(Error::invalid("tail", why));
            }
        },
        (None, None) => Start::Live,
    };
    Ok((filter, start))
}

/// Takes `first` and what else is ready, up to [`BATCH`] events, and how the subscription ended.
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

/// Sleeps out the rest of [`PACE`] since `last`, when a batch went out then.
fn pace(last: &mut Option<Instant>) {
    if let Some(at) = last.replace(Instant::now()) {
        let since = at.elapsed();
        if since < PACE {
            thread::sleep(PACE - since);
        }
    }
}

/// The write side of a stream, shared by its reader (which answers WebSocket pings
/// and the close), its writer and the hub's lag notice; nothing follows a close frame.
struct Link {
    socket: TcpStream,
    /// Held while writing; true once a WebSocket close frame went out.
    closed: Mutex<bool>,
    /// Whether a write is under way, which a client that stopped reading can hold up.
    writing: AtomicBool,
}

impl Link {
    fn new(stream: &TcpStream, sub: &Subscription) -> io::Result<Arc<Link>> {
        crate::sys::set_send_buffer(stream, STREAM_SEND_BUFFER)?;
        let link = Arc::new(Link {
            socket: stream.try_clone()?,
            closed: Mutex::new(false),
            writing: AtomicBool::new(false),
        });
        let lagged = link.clone();
        sub.on_lag(move || {
            // A subscriber cut off for lagging: an idle writer wakes and
            // sends its final notice itself; a stuck one is stopped here.
            if lagged.writing.load(Ordering::SeqCst) {
                lagged.abort();
            }
        });
        Ok(link)
    }

    fn lock(&self) -> MutexGuard<'_, bool> {
        // Only a flag lives under the lock; a panic cannot leave it half set.
        self.closed.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes `bytes` (whole chunks or frames) unless a close frame went out.
    fn send(&self, bytes: &[u8]) -> io::Result<()> {
        let closed = self.lock();
        if *closed {
            let why = "the close frame was sent";
            return Err(io::Error::new(io::ErrorKind::BrokenPipe, why));
        }
        self.writing.store(true, Ordering::SeqCst);
        let written = (&self.socket).write_all(bytes);
        self.writing.store(false, Ordering::SeqCst);
        written
    }

    fn close_sent(&self) -> bool {
        *self.lock()
    }

    /// Sends a WebSocket close frame once, then half-closes and bounds how
    /// long the reader's next reads may wait for the client's answer.
    fn close(&self, code: u16, reason: &str) {
        let mut closed = self.lock();
        if *closed {
            return;
        }
        *closed = true;
        let mut out = Vec::new();
        frame::write_close(&mut out, code, reason);
        let _ = (&self.socket).write_all(&out);
        let _ = self.socket.shutdown(Shutdown::Write);
        let _ = self.socket.set_read_timeout(Some(CLOSE_WAIT));
    }

    /// Ends the connection at once, waking a reader blocked on it.
    fn abort(&self) {
        let _ = self.socket.shutdown(Shutdown::Both);
    }
}

/// `GET /api/v1/events`: the event stream as `text/event-stream`.
pub fn events(ex: &mut Exchange) -> Answer {
    let keys = ["last_event_id", "after_seq"];
    let (filter, start) = match params(ex, Some("Last-Event-ID"), &keys) {
        Ok(p) => p,
        Err(e) => return ex.send(e.into()),
    };
    // Subscribed before the head goes out: nothing published after the 200 is missed.
    let sub = ex.app().events.subscribe(filter, start, Transport::Sse);
    let headers = vec![
        ("Content-Type", "text/event-stream".to_string()),
        ("Transfer-Encoding", "chunked".to_string()),
        ("Cache-Control", "no-cache".to_string()),
        ("X-Accel-Buffering", "no".to_string()),
    ];
    take_over(ex, 200, headers, sub, Wire::Sse)
}

/// Answers `status`, then a writer thread writes `sub`'s events while this one reads the client.
fn take_over(
    ex: &mut Exchange,
    status: u16,
    headers: Vec<(&'static str, String)>,
    sub: Subscription,
    wire: Wire,
) -> Answer {
    let log = ex.app().log;
    let run = move |stream: TcpStream, leftover: Vec<u8>| {
        let Ok(link) = Link::new(&stream, &sub) else {
            return;
        };
        let closer = sub.closer();
        // The reader drops the sender when it ends: a WebSocket writer awaits that after its close.
        let (reader_done, reader_gone) = mpsc::channel::<()>();
        let writer = link.clone();
        let (label, name) = match wire {
            Wire::Sse => ("sse", "sse"),
            _ => ("websocket", "ws-write"),
        };
        let spawned = thread::Builder::new()
            .name(name.to_string())
            .stack_size(STREAM_STACK)
            .spawn(move || write_stream(&writer, sub, wire, &reader_gone));
        if let Err(e) = spawned {
            let fields = [("stream", json!(label)), ("error", json!(e.to_string()))];
            return log.warn("cannot start a stream thread; closing the stream", &fields);
        }
        // Bytes the client sent right after its request come first.
        let mut input = io::Cursor::new(leftover).chain(&stream);
        match wire {
            // The client sends nothing more; its end of stream ends the stream.
            Wire::Sse => discard(&mut input, DRAIN_LIMIT, || true),
            _ => ws_reader(&link, &mut input, &closer),
        }
        closer.close();
        drop(reader_done);
    };
    ex.take_over(status, headers, Box::new(run))
}

/// How a stream puts events on the wire.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Wire {
    Sse,
    /// `GET /api/v1/ws`: a text frame per event, and our notices.
    Ours,
    /// `GET /ws`: AgentGate's dashboard frames only ([`agentgate`]); the
    /// notices, which it does not know, are left to the close codes.
    AgentGate,
}

/// Writes the subscription's events until it ends, and returns how; `None` if a write failed.
fn write_events(link: &Link, sub: &mut Subscription, wire: Wire) -> Option<Next> {
    let mut last = None;
    loop {
        let (events, end) = match sub.next(HEARTBEAT) {
            Next::Idle => (Vec::new(), None),
            first => batch(sub, first),
        };
        let mut out = Vec::new();
        encode(&mut out, wire, &events, end.as_ref());
        link.send(&out).ok()?;
        if end.is_some() {
            return end;
        }
        if !events.is_empty() {
            pace(&mut last);
        }
    }
}

/// Appends `events` as `wire` puts them, then the final notice and an SSE body's
/// end if the subscription ended; with neither events nor an end, a heartbeat.
fn encode(out: &mut Vec<u8>, wire: Wire, events: &[Arc<Published>], end: Option<&Next>) {
    let notice = match end {
        Some(Next::Lagged(lagged)) => Some(("lagged", lagged.to_json())),
        Some(Next::Stopping(stopped)) => Some(("shutdown", stopped.to_json())),
        _ => None,
    };
    let idle = events.is_empty() && end.is_none();
    if wire == Wire::Sse {
        let mut text = String::from(if idle { ": keepalive\n\n" } else { "" });
        for e in events {
            let render =
                |e: &Published| format!("id: {}\nevent: {}\ndata: {}\n\n", e.seq, e.kind, e.json);
            text.push_str(e.rendered(render));
        }
        // Notices have no `id`, so an EventSource reconnects from the last seq it saw.
        if let Some((event, data)) = notice {
            text.push_str(&format!("event: {event}\ndata: {data}\n\n"));
        }
        if !text.is_empty() {
            chunk(out, text.as_bytes());
        }
        if end.is_some() {
            out.extend_from_slice(LAST_CHUNK);
        }
        return;
    }
    if idle {
        let _ = frame::write(out, frame::OP_PING, b"");
    }
    for e in events {
        let text = match wire {
            Wire::AgentGate => e.agentgate_frame(),
            _ => Some(e.json.as_str()),
        };
        if let Some(text) = text {
            let _ = frame::write(out, frame::OP_TEXT, text.as_bytes());
        }
    }
    if let (Some((_, notice)), Wire::Ours) = (notice, wire) {
        let _ = frame::write(out, frame::OP_TEXT, notice.to_string().as_bytes());
    }
}

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

/// `GET /api/v1/ws` and `GET /ws`: the event stream over a WebSocket.
pub(super) fn websocket(ex: &mut Exchange, wire: Wire) -> Answer {
    let checked = handshake_key(ex).and_then(|key| Ok((key, params(ex, None, &["after_seq"])?)));
    let (key, (filter, start)) = match checked {
        Ok(checked) => checked,
        Err(r) => return ex.send(r),
    };
    let filter = match wire {
        Wire::AgentGate => filter.only(&agentgate::KINDS),
        _ => filter,
    };
    let events = &ex.app().events;
    let sub = events.subscribe(filter, start, Transport::WebSocket);
    let headers = vec![
        ("Upgrade", "websocket".to_string()),
        ("Connection", "Upgrade".to_string()),
        ("Sec-WebSocket-Accept", ws::accept_key(&key)),
    ];
    take_over(ex, 101, headers, sub, wire)
}

/// Writes the stream until it ends; on a WebSocket, then closes it.
fn write_stream(link: &Link, mut sub: Subscription, wire: Wire, reader_gone: &Receiver<()>) {
    if wire == Wire::Sse {
        let mut out = Vec::new();
        // EventSource waits this long before reconnecting.
        chunk(&mut out, b"retry: 2000\n\n");
        if link.send(&out).is_ok() {
            write_events(link, &mut sub, wire);
        }
        return link.abort();
    }
    let (code, reason) = match write_events(link, &mut sub, wire) {
        Some(Next::Lagged(_)) => (CLOSE_LAGGED, "lagged"),
        Some(Next::Stopping(_)) => (CLOSE_GOING_AWAY, "server stopping"),
        // Closed: the reader has finished with the connection.
        Some(_) => return,
        None if link.close_sent() => return,
        None => return link.abort(),
    };
    link.close(code, reason);
    // A blocked read does not see the new read timeout; the wait is bounded here.
    if reader_gone.recv_timeout(CLOSE_WAIT).is_err() {
        link.abort();
    }
}

/// Answers pings until the client closes or breaks the protocol; then closes,
/// ends the subscription and waits out the client's end of stream.
fn ws_reader(link: &Link, stream: &mut impl Read, closer: &Closer) {
    let mut reader = frame::Reader::new(MAX_CLIENT_MESSAGE);
    let (code, reason) = loop {
        match reader.read_message(stream) {
            Ok(frame::Message::Ping(payload)) => {
                let mut out = Vec::new();
                let _ = frame::write(&mut out, frame::OP_PONG, &payload);
                if link.send(&out).is_err() && !link.close_sent() {
                    return;
                }
            }
            // The client's code was checked on reading; echo it.
            Ok(frame::Message::Close(status)) => {
                break (status.map_or(1000, |(code, _)| code), String::new())
            }
            // Clients send nothing the server acts on.
            Ok(_) => {}
            Err(frame::ReadError::Io) => return,
            Err(frame::ReadError::Close(code, reason)) => break (code, reason),
        }
    };
    link.close(code, &reason);
    closer.close();
    discard(stream, DRAIN_LIMIT, || true);
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
        // The charts' SVG namespace is a name, never fetched.
        let page = PAGE.replace("\"http://www.w3.org/2000/svg\"", "");
        for external in [
            "http://", "https://", "//cdn", "src=", "href=", "url(", "@import",
        ] {
            assert!(!page.contains(external), "{external}");
        }
    }

    #[test]
    fn the_page_stays_small() {
        // Served from the binary: its size is the binary's.
        assert!(PAGE.len() < 32 * 1024, "the page is {} bytes", PAGE.len());
    }
}
