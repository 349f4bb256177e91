//! The client's socket: buffered reads that give up at a deadline, and
//! writes that give the client a deadline for each piece.

use std::cell::Cell;
use std::io::{self, BufRead, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use super::response::Response;
use super::Hooks;

/// The longest wait on the socket, so a deadline stays exact if the timeout was set for later.
const SLICE: Duration = Duration::from_secs(1);

/// The shortest socket timeout: zero would mean "block forever".
const MIN_TIMEOUT: Duration = Duration::from_millis(1);

const READ_CHUNK: usize = 8 * 1024;

/// The first read after an idle wait goes to the stack, touching few pages; most heads fit.
const IDLE_READ: usize = 1024;

/// The most bytes a client is given one write deadline to accept.
pub(super) const PIECE: usize = 64 * 1024;

/// Why a request's head or body was not read.
#[derive(Debug)]
pub(super) enum ReadError {
    /// The socket failed, ended (`UnexpectedEof`) or the deadline passed (`TimedOut`).
    Io(io::Error),
    Refused(Response),
}

impl From<io::Error> for ReadError {
    fn from(err: io::Error) -> ReadError {
        ReadError::Io(err)
    }
}

/// A client connection with its unread bytes. Not shared between threads.
pub(super) struct ClientStream {
    pub(super) stream: TcpStream,
    buf: Vec<u8>,
    pos: usize,
    deadline: Instant,
    /// The read timeout currently set on the socket, to skip needless syscalls.
    timeout: Option<Duration>,
    write_timeout: Duration,
    /// The write timeout set on the socket: less while a slow client takes a piece.
    send_timeout: Cell<Duration>,
}

impl ClientStream {
    /// Wraps `stream`, whose client gets `write_timeout` (at least 1 ms) per piece.
    pub(super) fn new(stream: TcpStream, write_timeout: Duration) -> io::Result<ClientStream> {
        let write_timeout = write_timeout.max(MIN_TIMEOUT);
        stream.set_write_timeout(Some(write_timeout))?;
        Ok(ClientStream {
            stream,
            buf: Vec::new(),
            pos: 0,
            deadline: Instant::now(),
            timeout: None,
            write_timeout,
            send_timeout: Cell::new(write_timeout),
        })
    }

    /// Makes reads fail with `TimedOut` once `within` has passed from now.
    pub(super) fn set_deadline(&mut self, within: Duration) {
        self.deadline = Instant::now() + within;
    }

    pub(super) fn buffered(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    /// Gives up the socket and the bytes received but not yet consumed.
    pub(super) fn into_parts(mut self) -> (TcpStream, Vec<u8>) {
        self.buf.drain(..self.pos);
        (self.stream, self.buf)
    }

    /// Frees the buffer when empty, so that an idle connection costs no heap memory.
    pub(super) fn release_buffer(&mut self) {
        if self.pos == self.buf.len() {
            self.buf = Vec::new();
            self.pos = 0;
        }
    }

    /// Reads one request head, up to its empty line; empty lines before it count towards `limit`.
    pub(super) fn read_head(&mut self, limit: usize) -> Result<Vec<u8>, ReadError> {
        let mut skipped = 0;
        let mut scanned = 0;
        loop {
            while scanned == 0 && self.buffered().starts_with(b"\r\n") {
                self.pos += 2;
                skipped += 2;
                if skipped > limit {
                    return Err(too_large());
                }
            }
            let data = &self.buf[self.pos..];
            while scanned < data.len() {
                if skipped + scanned + 1 > limit {
                    return Err(too_large());
                }
                if data[scanned] == b'\n' {
                    if scanned == 0 || data[scanned - 1] != b'\r' {
                        return Err(ReadError::Refused(Response::refusal(
                            400,
                            "every line must end in CRLF",
                        )));
                    }
                    if scanned >= 3 && &data[scanned - 3..scanned - 1] == b"\r\n" {
                        let head = data[..=scanned].to_vec();
                        self.pos += scanned + 1;
                        return Ok(head);
                    }
                }
                scanned += 1;
            }
            if self.fill()? == 0 {
                return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
            }
        }
    }

    /// Writes `bytes`, reporting a client too slow to take them to `hooks`.
    pub(super) fn send(&self, hooks: &dyn Hooks, bytes: &[u8]) -> io::Result<()> {
        let sent = self.write_pieces(bytes);
        if sent
            .as_ref()
            .is_err_and(|e| e.kind() == io::ErrorKind::TimedOut)
        {
            hooks.connection_rejected("write_timeout");
        }
        sent
    }

    /// Writes `bytes` in pieces each due within the write timeout, else `TimedOut`. A socket
    /// timeout bounds one `write`, which a client taking a few bytes at a time never trips,
    /// so it is lowered for the rest of a piece, then restored (streams rely on it).
    fn write_pieces(&self, bytes: &[u8]) -> io::Result<()> {
        let set_timeout = |timeout: Duration| {
            self.stream.set_write_timeout(Some(timeout))?;
            self.send_timeout.set(timeout);
            Ok::<_, io::Error>(())
        };
        for mut piece in bytes.chunks(PIECE) {
            let deadline = Instant::now() + self.write_timeout;
            loop {
                match (&self.stream).write(piece) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(n) => piece = &piece[n..],
                    Err(err) if retry(&err) => {}
                    Err(err) => return Err(err),
                }
                if piece.is_empty() {
                    break;
                }
                // A slow client: the rest of the piece gets what is left of its time.
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(io::ErrorKind::TimedOut.into());
                }
                set_timeout(left.max(MIN_TIMEOUT))?;
            }
        }
        if self.send_timeout.get() != self.write_timeout {
            set_timeout(self.write_timeout)?;
        }
        Ok(())
    }

    /// Appends what the socket has: `Ok(0)` at end of stream, `TimedOut` past the deadline.
    fn fill(&mut self) -> io::Result<usize> {
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        loop {
            let remaining = self.deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(io::ErrorKind::TimedOut.into());
            }
            let want = remaining.clamp(MIN_TIMEOUT, SLICE);
            let stale = match self.timeout {
                None => true,
                Some(set) => want < set || want >= set * 2,
            };
            if stale {
                self.stream.set_read_timeout(Some(want))?;
                self.timeout = Some(want);
            }
            match self.read_some() {
                Ok(n) => return Ok(n),
                Err(err) if retry(&err) => {}
                Err(err) => return Err(err),
            }
        }
    }

    fn read_some(&mut self) -> io::Result<usize> {
        if self.buf.capacity() == 0 {
            let mut first = [0u8; IDLE_READ];
            let n = self.stream.read(&mut first)?;
            self.buf.extend_from_slice(&first[..n]);
            return Ok(n);
        }
        // Read on the stack and copied, rather than zeroing room in `buf` with `resize` first.
        let mut chunk = [0u8; READ_CHUNK];
        let n = self.stream.read(&mut chunk)?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }
}

fn too_large() -> ReadError {
    ReadError::Refused(Response::refusal(431, "the request head is too large"))
}

/// Whether a failed read or write only waited or was interrupted, to retry within the deadline.
fn retry(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

impl Read for ClientStream {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let available = self.fill_buf()?;
        let n = available.len().min(out.len());
        out[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for ClientStream {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.pos == self.buf.len() {
            self.fill()?;
        }
        Ok(&self.buf[self.pos..])
    }

    fn consume(&mut self, n: usize) {
        self.pos = (self.pos + n).min(self.buf.len());
    }
}

/// Reads and discards until end of stream, an error, `limit` bytes, or `go_on` says stop,
/// so that closing does not reset a connection with unread bytes and lose what we sent.
pub(super) fn discard(stream: &mut dyn Read, limit: usize, mut go_on: impl FnMut() -> bool) {
    let mut buf = vec![0u8; 16 * 1024];
    let mut left = limit;
    while left > 0 && go_on() {
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
    use super::{ClientStream, ReadError};
    use std::io::{BufRead, ErrorKind, Write};
    use std::net::{TcpListener, TcpStream};
    use std::time::{Duration, Instant};

    /// A connected pair: our side wrapped, and the peer to write from.
    fn pair() -> (ClientStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let peer = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (ours, _) = listener.accept().unwrap();
        let mut client = ClientStream::new(ours, Duration::from_secs(5)).unwrap();
        client.set_deadline(Duration::from_secs(5));
        (client, peer)
    }

    #[test]
    fn reads_pipelined_heads_one_at_a_time() {
        let (mut client, mut peer) = pair();
        peer.write_all(b"\r\nGET /a HTTP/1.1\r\nA: b\r\n\r\nGET /b HTTP/1.1\r\n\r\nxy")
            .unwrap();
        assert_eq!(
            client.read_head(1024).unwrap(),
            b"GET /a HTTP/1.1\r\nA: b\r\n\r\n"
        );
        assert_eq!(client.read_head(1024).unwrap(), b"GET /b HTTP/1.1\r\n\r\n");
        assert_eq!(client.buffered(), b"xy");
    }

    #[test]
    fn refuses_bare_lf_and_oversized_heads() {
        let (mut client, mut peer) = pair();
        peer.write_all(b"GET / HTTP/1.1\nHost: a\r\n\r\n").unwrap();
        assert!(matches!(client.read_head(1024), Err(ReadError::Refused(r)) if r.status == 400));

        let (mut client, mut peer) = pair();
        let head = b"GET / HTTP/1.1\r\n\r\n";
        peer.write_all(head).unwrap();
        assert!(matches!(
            client.read_head(head.len() - 1),
            Err(ReadError::Refused(r)) if r.status == 431
        ));
        let (mut client, mut peer) = pair();
        peer.write_all(head).unwrap();
        assert!(client.read_head(head.len()).is_ok());
    }

    #[test]
    fn a_silent_client_times_out_at_the_deadline() {
        let (mut client, mut peer) = pair();
        peer.write_all(b"GET / HTTP/1.1\r\n").unwrap();
        client.set_deadline(Duration::from_millis(50));
        let started = Instant::now();
        match client.read_head(1024) {
            Err(ReadError::Io(err)) => assert_eq!(err.kind(), ErrorKind::TimedOut),
            other => panic!("{other:?}"),
        }
        assert!(started.elapsed() >= Duration::from_millis(50));
    }

    #[test]
    fn end_of_stream_is_reported() {
        let (mut client, peer) = pair();
        drop(peer);
        assert!(client.fill_buf().unwrap().is_empty());
        assert!(
            matches!(client.read_head(1024), Err(ReadError::Io(e)) if e.kind() == ErrorKind::UnexpectedEof)
        );
    }

    #[test]
    fn body_reads_take_buffered_bytes_first() {
        let (mut client, mut peer) = pair();
        peer.write_all(b"GET / HTTP/1.1\r\n\r\nhel").unwrap();
        client.read_head(1024).unwrap();
        peer.write_all(b"lo!").unwrap();
        let mut body = Vec::new();
        super::super::chunked::read_n(&mut client, 5, &mut body).unwrap();
        assert_eq!(body, b"hello");
        let (_, rest) = client.into_parts();
        assert_eq!(rest, b"!");
    }
}
