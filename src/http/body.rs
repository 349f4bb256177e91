//! Streamed answers, sent a piece at a time so none is held whole. A body
//! within one piece goes out with `Content-Length`, as a whole answer would, and
//! until then can still become a JSON error; a longer one is chunked, or to an
//! HTTP/1.0 client (no chunks) ends with the connection. `HEAD` gets the head
//! alone, with the length the body would have had.

use std::io::{self, Write};

use super::socket::{ClientStream, PIECE};
use super::wire::{self, Delivery, Framing, LAST_CHUNK};
use super::Hooks;

/// The room kept before a piece for its chunk-size line, at most `10000\r\n`.
const ROOM: usize = 7;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Progress {
    /// Nothing sent: the body so far fits in the buffer.
    Head,
    /// The head is sent; pieces follow.
    Body,
    Ended,
    /// Sending failed, or the answer was given up: the connection closes.
    Failed,
}

/// The body of a 200 answer; after a client too slow to take a piece, every write fails.
pub struct BodyWriter<'a> {
    client: &'a ClientStream,
    hooks: &'a dyn Hooks,
    delivery: Delivery,
    headers: Vec<(&'static str, String)>,
    /// [`ROOM`] bytes, then the piece being made, which is framed in place.
    buf: Vec<u8>,
    progress: Progress,
    /// Whether the body ends with the connection (an HTTP/1.0 client).
    until_close: bool,
    /// The body's bytes so far: sent, waiting in `buf`, or, for `HEAD`, counted.
    bytes: u64,
}

impl<'a> BodyWriter<'a> {
    /// A body for the answer `delivery` describes, with `headers`; timeouts go to `hooks`.
    pub(super) fn new(
        client: &'a ClientStream,
        hooks: &'a dyn Hooks,
        delivery: Delivery,
        headers: Vec<(&'static str, String)>,
    ) -> BodyWriter<'a> {
        BodyWriter {
            client,
            hooks,
            delivery,
            headers,
            buf: Vec::new(),
            progress: Progress::Head,
            until_close: false,
            bytes: 0,
        }
    }

    /// The body's length so far, in bytes; for `HEAD`, what it would be.
    pub(super) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Whether the body is framed by the end of the connection, which must close.
    pub(super) fn closes(&self) -> bool {
        self.until_close
    }

    /// Gives the answer up: a body begun stays unterminated, so the client sees it cut short.
    pub(super) fn abort(&mut self) {
        if self.progress != Progress::Ended {
            self.progress = Progress::Failed;
        }
    }

    /// Sends what is left, and the body's end; on an error the connection must close.
    pub(super) fn finish(&mut self) -> io::Result<()> {
        match self.progress {
            Progress::Ended => return Ok(()),
            Progress::Failed => return Err(ended()),
            Progress::Body => self.send_piece(true)?,
            // A short answer goes out in one write.
            Progress::Head => self.send(self.head(Framing::Length(self.bytes)), ROOM)?,
        }
        self.buf = Vec::new();
        self.progress = Progress::Ended;
        Ok(())
    }

    /// Sends the piece in the buffer, after the head if not sent yet; with `last`, the body's end.
    fn send_piece(&mut self, last: bool) -> io::Result<()> {
        let mut head = Vec::new();
        if self.progress == Progress::Head {
            self.until_close = self.delivery.http10;
            let framing = if self.until_close {
                Framing::Close
            } else {
                Framing::Chunked
            };
            head = self.head(framing);
            self.progress = Progress::Body;
        }
        let mut start = ROOM;
        // A chunk of size 0 would end the body, so none is sent empty.
        if !self.until_close && self.buf.len() > ROOM {
            let size = format!("{:x}\r\n", self.buf.len() - ROOM);
            start -= size.len();
            self.buf[start..ROOM].copy_from_slice(size.as_bytes());
            self.buf.extend_from_slice(b"\r\n");
        }
        if !self.until_close && last {
            self.buf.extend_from_slice(LAST_CHUNK);
        }
        let sent = self.send(head, start);
        self.buf.truncate(ROOM);
        sent
    }

    fn head(&self, framing: Framing) -> Vec<u8> {
        let mut head = Vec::with_capacity(256);
        wire::head(&mut head, 200, &self.headers, framing, self.delivery);
        head
    }

    /// Sends `head`, if any, and the buffer from `start`; a failure fails the answer.
    fn send(&mut self, mut head: Vec<u8>, start: usize) -> io::Result<()> {
        let rest = self.buf.get(start..).unwrap_or_default();
        let sent = if head.is_empty() {
            self.client.send(self.hooks, rest)
        } else {
            // The head and the first piece go out in one write.
            head.extend_from_slice(rest);
            self.client.send(self.hooks, &head)
        };
        if sent.is_err() {
            self.progress = Progress::Failed;
        }
        sent
    }
}

impl Write for BodyWriter<'_> {
    /// Takes what fits in the piece being made, sending the piece once it is full.
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if matches!(self.progress, Progress::Ended | Progress::Failed) {
            return Err(ended());
        }
        if self.delivery.head_only {
            self.bytes += data.len() as u64;
            return Ok(data.len());
        }
        if self.buf.capacity() == 0 {
            // Taken once, for the whole answer: a piece and what frames it.
            self.buf.reserve_exact(ROOM + PIECE + 2 + LAST_CHUNK.len());
            self.buf.resize(ROOM, 0);
        }
        let n = data.len().min(ROOM + PIECE - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        self.bytes += n as u64;
        if self.buf.len() == ROOM + PIECE {
            self.send_piece(false)?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn ended() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "the answer was given up")
}

#[cfg(test)]
mod tests {
    use super::super::chunked::read_body;
    use super::super::Hooks;
    use super::*;
    use std::io::{BufRead, BufReader, Read};
    use std::net::{TcpListener, TcpStream};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    use std::thread;
    use std::time::{Duration, Instant};

    /// The bound on what one answer holds in user space while its client reads.
    const SEND_BUFFER: usize = 256 * 1024;

    #[derive(Default)]
    struct Reasons(Mutex<Vec<String>>);

    impl Hooks for Reasons {
        fn request_rejected(&self, _: &str, _: u16) {}
        fn connection_rejected(&self, reason: &str) {
            self.0.lock().unwrap().push(reason.to_string());
        }
    }

    /// Our side, with `write_timeout`, and the client's.
    fn pair(write_timeout: Duration) -> (ClientStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let (server, _) = listener.accept().unwrap();
        (ClientStream::new(server, write_timeout).unwrap(), client)
    }

    fn delivery(head_only: bool, http10: bool) -> Delivery {
        Delivery {
            head_only,
            close: false,
            http10,
        }
    }

    fn headers() -> Vec<(&'static str, String)> {
        vec![("Content-Type", "text/plain".to_string())]
    }

    /// The head of an answer, read up to its empty line.
    fn read_head(r: &mut impl BufRead) -> String {
        let mut head = String::new();
        while !head.ends_with("\r\n\r\n") {
            assert!(r.read_line(&mut head).unwrap() > 0, "closed in {head:?}");
        }
        head
    }

    /// Bytes of every length from 1 to 99,999, so pieces fall anywhere.
    fn writes(total: usize) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let (mut n, mut i) = (0, 0u32);
        while n < total {
            let len = (i as usize * 7919 % 99_999 + 1).min(total - n);
            out.push((0..len).map(|j| (n + j) as u8).collect());
            n += len;
            i += 1;
        }
        out
    }

    #[test]
    fn a_body_within_a_piece_is_one_answer_framed_by_its_length() {
        let (server, client) = pair(Duration::from_secs(10));
        let hooks = Reasons::default();
        let mut body = BodyWriter::new(&server, &hooks, delivery(false, false), headers());
        body.write_all(b"hello ").unwrap();
        body.write_all(b"world").unwrap();
        body.finish().unwrap();
        assert!(!body.closes());
        let reply = wire::Reply {
            status: 200,
            headers: headers(),
            body: b"hello world".to_vec(),
        };
        let want = wire::encode(&reply, delivery(false, false));
        let mut got = vec![0; want.len()];
        (&client).read_exact(&mut got).unwrap();
        assert_eq!(got, want);
    }

    #[test]
    fn a_long_body_goes_in_chunks_and_holds_one_piece_while_the_client_reads_slowly() {
        let (server, client) = pair(Duration::from_secs(10));
        let total = 8 << 20;
        let want: Vec<u8> = writes(total).concat();
        let reader = thread::spawn(move || {
            let mut r = BufReader::with_capacity(4096, client);
            let head = read_head(&mut r);
            // Slow: small reads, so the socket buffers stay full.
            let mut slow = BufReader::with_capacity(4096, r);
            let body = read_body(&mut slow, u64::MAX, 1024).map_err(|_| "bad chunks");
            (head, body)
        });
        let hooks = Reasons::default();
        let mut body = BodyWriter::new(&server, &hooks, delivery(false, false), headers());
        let mut most = 0;
        for w in writes(total) {
            body.write_all(&w).unwrap();
            most = most.max(body.buf.capacity());
        }
        body.finish().unwrap();
        assert_eq!(body.bytes(), total as u64);
        let (head, got) = reader.join().unwrap();
        assert_eq!(
            head,
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"
        );
        assert!(got.unwrap() == want, "the body differs");
        assert!(most <= SEND_BUFFER, "held {most} bytes");
        assert!(most >= PIECE);
    }

    #[test]
    fn chunks_are_a_piece_each_and_the_last_ends_the_body() {
        let (server, client) = pair(Duration::from_secs(10));
        let hooks = Reasons::default();
        let mut body = BodyWriter::new(&server, &hooks, delivery(false, false), headers());
        body.write_all(&vec![b'a'; PIECE * 2 + 3]).unwrap();
        body.finish().unwrap();
        drop(server);
        let mut r = BufReader::new(client);
        read_head(&mut r);
        let mut rest = Vec::new();
        r.read_to_end(&mut rest).unwrap();
        let piece = format!("10000\r\n{}\r\n", "a".repeat(PIECE));
        let want = format!("{piece}{piece}3\r\naaa\r\n0\r\n\r\n");
        assert!(rest == want.as_bytes());
    }

    #[test]
    fn a_long_head_goes_out_whole() {
        for size in [5, PIECE + 5] {
            let (server, client) = pair(Duration::from_secs(10));
            let hooks = Reasons::default();
            let long = vec![("X-Long", "v".repeat(1024))];
            let mut body = BodyWriter::new(&server, &hooks, delivery(false, false), long);
            body.write_all(&vec![b'b'; size]).unwrap();
            body.finish().unwrap();
            drop(server);
            let mut r = BufReader::new(client);
            let head = read_head(&mut r);
            assert!(head.contains(&"v".repeat(1024)));
            let got = if size < PIECE {
                assert!(head.contains(&format!("Content-Length: {size}\r\n")));
                let mut rest = Vec::new();
                r.read_to_end(&mut rest).unwrap();
                rest
            } else {
                read_body(&mut r, u64::MAX, 1024)
                    .map_err(|_| "bad chunks")
                    .unwrap()
            };
            assert!(got == vec![b'b'; size]);
        }
    }

    #[test]
    fn head_sends_the_length_the_body_would_have() {
        let (server, client) = pair(Duration::from_secs(10));
        let hooks = Reasons::default();
        let mut body = BodyWriter::new(&server, &hooks, delivery(true, false), headers());
        body.write_all(&vec![b'x'; 3 * PIECE]).unwrap();
        assert_eq!(body.buf.capacity(), 0);
        body.finish().unwrap();
        drop(server);
        let mut got = String::new();
        (&client).read_to_string(&mut got).unwrap();
        assert_eq!(
            got,
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n",
                3 * PIECE
            )
        );
    }

    #[test]
    fn an_http10_client_gets_the_body_until_the_connection_closes() {
        let (server, client) = pair(Duration::from_secs(10));
        let hooks = Reasons::default();
        let mut body = BodyWriter::new(&server, &hooks, delivery(false, true), headers());
        body.write_all(&vec![b'z'; PIECE + 1]).unwrap();
        body.finish().unwrap();
        assert!(body.closes());
        drop(server);
        let mut r = BufReader::new(client);
        let head = read_head(&mut r);
        assert_eq!(
            head,
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n"
        );
        let mut rest = Vec::new();
        r.read_to_end(&mut rest).unwrap();
        assert!(rest == vec![b'z'; PIECE + 1]);
    }

    #[test]
    fn an_aborted_body_after_its_first_piece_is_cut_short() {
        let (server, _client) = pair(Duration::from_secs(10));
        let hooks = Reasons::default();
        let mut body = BodyWriter::new(&server, &hooks, delivery(false, false), headers());
        body.write_all(&vec![b'a'; PIECE]).unwrap();
        body.abort();
        assert!(body.finish().is_err());
        assert!(body.write_all(b"more").is_err());
    }

    /// Our side with a small kernel send buffer, so that a client that
    /// reads slowly or not at all makes writes wait soon.
    fn slow_pair(write_timeout: Duration) -> (ClientStream, TcpStream) {
        let (server, client) = pair(write_timeout);
        crate::sys::set_send_buffer(&server.stream, 16 * 1024).unwrap();
        (server, client)
    }

    #[test]
    fn a_client_that_stops_reading_is_dropped_at_the_write_deadline_and_counted() {
        let (server, _client) = slow_pair(Duration::from_millis(200));
        let hooks = Reasons::default();
        let mut body = BodyWriter::new(&server, &hooks, delivery(false, false), headers());
        let started = Instant::now();
        // Far more than the socket buffers take: a write must time out.
        let err = (0..1024)
            .try_for_each(|_| body.write_all(&[b'x'; PIECE]))
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() < Duration::from_secs(60));
        assert_eq!(*hooks.0.lock().unwrap(), ["write_timeout"]);
        assert!(body.finish().is_err());
    }

    #[test]
    fn a_client_that_reads_a_little_at_a_time_is_dropped_too() {
        // The client keeps taking a few bytes, so a socket timeout per
        // write call could wait for ever; a piece as a whole takes far
        // longer than allowed.
        let (server, client) = slow_pair(Duration::from_millis(300));
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let trickle = thread::spawn(move || {
            let mut buf = [0u8; 512];
            let mut read = 0;
            while !stopped.load(Ordering::Relaxed) {
                match (&client).read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => read += n,
                }
                // A slow client, not a wait for something.
                thread::sleep(Duration::from_millis(20));
            }
            read
        });
        let hooks = Reasons::default();
        let mut body = BodyWriter::new(&server, &hooks, delivery(false, false), headers());
        let err = (0..1024)
            .try_for_each(|_| body.write_all(&[b'x'; PIECE]))
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(*hooks.0.lock().unwrap(), ["write_timeout"]);
        stop.store(true, Ordering::Relaxed);
        assert!(trickle.join().unwrap() > 0, "the client read nothing");
    }
}
