//! One OTLP/HTTP POST over a std `TcpStream`, with one deadline covering
//! connect, write and read.
//!
//! Plain `http://` only: std has no TLS, and the usual deployment puts a
//! collector on the same host or pod anyway.

use std::fmt;
use std::io::{self, ErrorKind as IoKind, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use super::encode::CONTENT_TYPE;

/// The path OTLP/HTTP appends to the base endpoint for traces.
const TRACES_PATH: &str = "v1/traces";
/// The most response header bytes read before the answer is refused.
const MAX_HEAD: usize = 16 * 1024;

/// Where batches go: a parsed `http://host[:port][/prefix]` endpoint.
#[derive(Clone, Debug)]
pub(crate) struct Endpoint {
    /// The full URL of the traces resource, for messages.
    url: String,
    /// `host[:port]`, for connecting and for the `Host` header.
    authority: String,
    /// The request target, e.g. `/v1/traces`.
    path: String,
}

impl Endpoint {
    /// Parses a base endpoint such as `http://127.0.0.1:4318` and appends
    /// `/v1/traces` to its path.
    pub(crate) fn parse(base: &str) -> Result<Endpoint, Error> {
        let invalid = |why| Error::new(base, ErrorKind::Endpoint(why));
        let rest = base
            .strip_prefix("http://")
            .ok_or_else(|| invalid("only plain http:// endpoints are supported"))?;
        let (authority, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if authority.is_empty() || authority.contains('@') {
            return Err(invalid("the endpoint needs a host and no user info"));
        }
        if prefix.contains(['?', '#']) || !base.is_ascii() || base.contains(char::is_whitespace) {
            return Err(invalid(
                "the endpoint may not carry a query, fragment or spaces",
            ));
        }
        let prefix = prefix.trim_end_matches('/');
        let path = if prefix.is_empty() {
            format!("/{TRACES_PATH}")
        } else {
            format!("/{prefix}/{TRACES_PATH}")
        };
        Ok(Endpoint {
            url: format!("http://{authority}{path}"),
            authority: authority.to_string(),
            path,
        })
    }

    /// `host:port` for the resolver, with HTTP's port 80 when none is given.
    fn socket_target(&self) -> String {
        let has_port = match self.authority.rfind(']') {
            Some(close) => self.authority[close..].contains(':'),
            None => self.authority.contains(':'),
        };
        if has_port {
            self.authority.clone()
        } else {
            format!("{}:80", self.authority)
        }
    }
}

/// Posts `body` as JSON to `endpoint`, giving up when `timeout` has passed
/// since the call began. Success is any 2xx answer.
pub(crate) fn post(endpoint: &Endpoint, body: &[u8], timeout: Duration) -> Result<(), Error> {
    let deadline = Instant::now() + timeout;
    let fail = |kind| Error::new(&endpoint.url, kind);
    let mut stream =
        connect(endpoint, deadline).map_err(|(stage, e)| fail(ErrorKind::Io(stage, e)))?;
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: {CONTENT_TYPE}\r\nContent-Length: {}\r\n\
         User-Agent: conductor-metrics/{}\r\nConnection: close\r\n\r\n",
        endpoint.path,
        endpoint.authority,
        body.len(),
        env!("CARGO_PKG_VERSION"),
    );
    write_before(&mut stream, head.as_bytes(), deadline)
        .and_then(|()| write_before(&mut stream, body, deadline))
        .map_err(|e| fail(ErrorKind::Io("send", e)))?;
    let status = read_status(&mut stream, deadline).map_err(|e| fail(ErrorKind::Io("read", e)))?;
    match status {
        Some(code) if (200..300).contains(&code) => Ok(()),
        Some(code) => Err(fail(ErrorKind::Status(code))),
        None => Err(fail(ErrorKind::BadAnswer)),
    }
}

fn remaining(deadline: Instant) -> io::Result<Duration> {
    deadline
        .checked_duration_since(Instant::now())
        .filter(|d| !d.is_zero())
        .ok_or_else(|| io::Error::new(IoKind::TimedOut, "the export timeout passed"))
}

fn connect(endpoint: &Endpoint, deadline: Instant) -> Result<TcpStream, (&'static str, io::Error)> {
    let addrs = endpoint
        .socket_target()
        .to_socket_addrs()
        .map_err(|e| ("resolve", e))?;
    let mut last = io::Error::new(IoKind::NotFound, "the host has no address");
    for addr in addrs {
        let budget = remaining(deadline).map_err(|e| ("connect", e))?;
        match TcpStream::connect_timeout(&addr, budget) {
            Ok(stream) => return Ok(stream),
            Err(e) => last = e,
        }
    }
    Err(("connect", last))
}

/// `write_all` with the socket timeout re-armed to what is left before each
/// write, so a slow reader cannot stretch the deadline.
fn write_before(stream: &mut TcpStream, mut data: &[u8], deadline: Instant) -> io::Result<()> {
    while !data.is_empty() {
        stream.set_write_timeout(Some(remaining(deadline)?))?;
        match stream.write(data) {
            Ok(0) => return Err(io::Error::new(IoKind::WriteZero, "the collector closed")),
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == IoKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads until the end of the response head and returns the status code,
/// or `None` when the answer is not HTTP. The body is not needed.
fn read_status(stream: &mut TcpStream, deadline: Instant) -> io::Result<Option<u16>> {
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_HEAD {
        stream.set_read_timeout(Some(remaining(deadline)?))?;
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => head.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == IoKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let line_end = head.windows(2).position(|w| w == b"\r\n");
    let status = line_end.and_then(|end| {
        let line = std::str::from_utf8(&head[..end]).ok()?;
        let mut parts = line.split(' ');
        let version = parts.next()?;
        let code = parts.next()?;
        (version.starts_with("HTTP/1.") && code.len() == 3)
            .then(|| code.parse().ok())
            .flatten()
    });
    Ok(status)
}

/// Why one export request failed. Safe to send across threads.
#[derive(Debug)]
pub(crate) struct Error {
    url: String,
    kind: ErrorKind,
}

/// The kinds of export failure, kept private so new ones can be added.
#[derive(Debug)]
enum ErrorKind {
    Endpoint(&'static str),
    Io(&'static str, io::Error),
    Status(u16),
    BadAnswer,
}

impl Error {
    fn new(url: &str, kind: ErrorKind) -> Error {
        Error {
            url: url.to_string(),
            kind,
        }
    }

    /// True when the collector asked to be tried again later: 429, 502,
    /// 503 or 504, the statuses OTLP/HTTP calls retryable. A network error
    /// is not retried, so a dead collector costs one timeout per batch.
    pub(crate) fn is_retryable(&self) -> bool {
        matches!(self.kind, ErrorKind::Status(429 | 502 | 503 | 504))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let url = &self.url;
        match &self.kind {
            ErrorKind::Endpoint(why) => write!(f, "OTLP endpoint {url:?}: {why}"),
            ErrorKind::Io(stage, e) => write!(f, "OTLP export to {url}: {stage}: {e}"),
            ErrorKind::Status(code) => write!(f, "OTLP export to {url}: HTTP status {code}"),
            ErrorKind::BadAnswer => write!(f, "OTLP export to {url}: the answer is not HTTP/1.x"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            ErrorKind::Io(_, e) => Some(e),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;
    use std::net::TcpListener;
    use std::thread;

    #[test]
    fn parses_endpoints() {
        let e = Endpoint::parse("http://127.0.0.1:4318").unwrap();
        assert_eq!(
            (e.authority.as_str(), e.path.as_str()),
            ("127.0.0.1:4318", "/v1/traces")
        );
        assert_eq!(e.url, "http://127.0.0.1:4318/v1/traces");
        assert_eq!(e.socket_target(), "127.0.0.1:4318");
        let e = Endpoint::parse("http://collector/otel/").unwrap();
        assert_eq!(e.path, "/otel/v1/traces");
        assert_eq!(e.socket_target(), "collector:80");
        assert_eq!(
            Endpoint::parse("http://[::1]").unwrap().socket_target(),
            "[::1]:80"
        );
        assert_eq!(
            Endpoint::parse("http://[::1]:9/").unwrap().socket_target(),
            "[::1]:9"
        );
        for bad in [
            "https://c:4318",
            "c:4318",
            "http://",
            "http://u@c",
            "http://c/?q",
            "http://c /x",
        ] {
            let err = Endpoint::parse(bad).unwrap_err();
            assert!(err.to_string().contains("OTLP endpoint"), "{err}");
            assert!(!err.is_retryable());
        }
    }

    fn answer_once(response: &'static [u8]) -> Endpoint {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = s.write_all(response);
        });
        Endpoint::parse(&format!("http://{addr}")).unwrap()
    }

    #[test]
    fn classifies_answers() {
        let ok = answer_once(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}");
        post(&ok, b"{}", Duration::from_secs(5)).unwrap();
        let busy = answer_once(b"HTTP/1.1 503 Busy\r\n\r\n");
        let err = post(&busy, b"{}", Duration::from_secs(5)).unwrap_err();
        assert!(err.is_retryable());
        assert!(err.to_string().contains("503"), "{err}");
        let bad = answer_once(b"HTTP/1.1 400 Bad Request\r\n\r\n");
        assert!(!post(&bad, b"{}", Duration::from_secs(5))
            .unwrap_err()
            .is_retryable());
        let junk = answer_once(b"SSH-2.0-OpenSSH\r\n\r\n");
        let err = post(&junk, b"{}", Duration::from_secs(5)).unwrap_err();
        assert!(err.to_string().contains("not HTTP"), "{err}");
    }

    #[test]
    fn network_errors_carry_their_cause() {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let e = Endpoint::parse(&format!("http://127.0.0.1:{port}")).unwrap();
        let err = post(&e, b"{}", Duration::from_secs(5)).unwrap_err();
        assert!(!err.is_retryable());
        assert!(err.source().is_some());
        assert!(err.to_string().contains("connect"), "{err}");
    }

    /// Checked when the tests compile: error is send and sync.
    const _: () = {
        const fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Error>();
    };
}
