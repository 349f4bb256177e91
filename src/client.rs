//! The HTTP/1.1 client of the subcommands, the OTLP exporter and the tests.
//! Plain `http://` only: std has no TLS, and the server and collectors it
//! talks to sit on the same host or pod.

use std::io::{self, BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The longest line, the most header fields and the largest body read.
const MAX_LINE: u64 = 64 * 1024;
const MAX_HEADERS: usize = 256;
const MAX_BODY: usize = 256 * 1024 * 1024;

/// How long a subcommand waits for the server's whole answer.
const CLI_TIMEOUT: Duration = Duration::from_secs(30);

/// One HTTP response as read off the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// The status code.
    pub status: u16,
    /// Header names and values in wire order, values trimmed.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
    /// Whether the connection ends after it: the response said so, or its
    /// body ran to the end of the stream, or it switched protocols.
    pub closes: bool,
}

impl Received {
    /// The first value of header `name`, compared case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.header_all(name).first().copied()
    }

    /// Every value of header `name`, in order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The body as text, with any invalid UTF-8 replaced.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; `Null` when it is not JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// Why a request failed, at stage `resolve`, `connect`, `send` or `read`.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) stage: &'static str,
    pub(crate) error: io::Error,
}

/// Sends a request to `authority` (`host[:port]`, port 80 by default) on a
/// new connection and reads the whole response, all within `timeout` (else
/// `TimedOut`). `Host`, `Content-Length` and `Connection: close` are added.
pub(crate) fn exchange(
    authority: &str,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> Result<Received, Failure> {
    let deadline = Instant::now() + timeout;
    let fail = |stage| move |error| Failure { stage, error };
    let addrs = socket_target(authority)
        .to_socket_addrs()
        .map_err(fail("resolve"))?;
    let no_address = io::Error::new(ErrorKind::NotFound, "the host has no address");
    let mut connected = Err(no_address);
    for addr in addrs {
        let budget = remaining(deadline).map_err(fail("connect"))?;
        connected = TcpStream::connect_timeout(&addr, budget);
        if connected.is_ok() {
            break;
        }
    }
    let stream = connected.map_err(fail("connect"))?;
    let mut head = format!(
        "{method} {target} HTTP/1.1\r\nHost: {authority}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let mut timed = Timed { stream, deadline };
    timed
        .write_all(head.as_bytes())
        .and_then(|()| timed.write_all(body))
        .map_err(fail("send"))?;
    read_response(&mut BufReader::new(timed), method == "HEAD").map_err(fail("read"))
}

/// `host:port` for the resolver, with HTTP's port 80 when none is given.
fn socket_target(authority: &str) -> String {
    let after_ipv6 = authority
        .rsplit_once(']')
        .map_or(authority, |(_, rest)| rest);
    match after_ipv6.contains(':') {
        true => authority.to_string(),
        false => format!("{authority}:80"),
    }
}

fn remaining(deadline: Instant) -> io::Result<Duration> {
    deadline
        .checked_duration_since(Instant::now())
        .filter(|d| !d.is_zero())
        .ok_or_else(|| io::Error::new(ErrorKind::TimedOut, "the deadline passed"))
}

/// A socket whose every read and write waits at most until the deadline,
/// so a peer that trickles bytes cannot stretch it.
struct Timed {
    stream: TcpStream,
    deadline: Instant,
}

impl Read for Timed {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.stream
            .set_read_timeout(Some(remaining(self.deadline)?))?;
        self.stream.read(buf)
    }
}

impl Write for Timed {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.stream
            .set_write_timeout(Some(remaining(self.deadline)?))?;
        self.stream.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.stream.flush()
    }
}

/// Reads one response from `r` (`head`: it answers a `HEAD`), skipping
/// interim `1xx` except `101`. Errors: `UnexpectedEof` when the stream ends
/// first, `InvalidData` for a malformed or oversized response, or `r`'s own.
pub fn read_response(r: &mut impl BufRead, head: bool) -> io::Result<Received> {
    loop {
        let line = read_line(r)?.ok_or_else(|| eof("connection closed before a response"))?;
        let mut parts = line.splitn(3, ' ');
        let version = parts.next().unwrap_or_default().to_string();
        if !version.starts_with("HTTP/1.") {
            return Err(invalid(format!("bad status line: {line:?}")));
        }
        let status: u16 = parts
            .next()
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| invalid(format!("bad status code in {line:?}")))?;
        let mut resp = Received {
            status,
            headers: read_headers(r)?,
            body: Vec::new(),
            closes: false,
        };
        if (100..200).contains(&status) && status != 101 {
            continue;
        }
        let has_token = |resp: &Received, token: &str| {
            resp.header_all("connection")
                .iter()
                .flat_map(|v| v.split(','))
                .any(|t| t.trim().eq_ignore_ascii_case(token))
        };
        resp.closes = has_token(&resp, "close")
            || (version == "HTTP/1.0" && !has_token(&resp, "keep-alive"))
            || status == 101;
        if head || matches!(status, 101 | 204 | 304) {
            return Ok(resp);
        }
        let chunked = resp
            .header("transfer-encoding")
            .and_then(|v| v.split(',').next_back())
            .is_some_and(|t| t.trim().eq_ignore_ascii_case("chunked"));
        if chunked {
            resp.body = read_chunked(r)?;
        } else if let Some(len) = resp.header("content-length") {
            let len: usize = len
                .parse()
                .map_err(|_| invalid(format!("bad Content-Length {len:?}")))?;
            if len > MAX_BODY {
                return Err(invalid(format!("Content-Length {len} too large")));
            }
            resp.body = vec![0; len];
            r.read_exact(&mut resp.body)?;
        } else {
            r.by_ref()
                .take(MAX_BODY as u64)
                .read_to_end(&mut resp.body)?;
            resp.closes = true;
        }
        return Ok(resp);
    }
}

/// Reads one line without its CR LF; `None` at a clean end of stream.
fn read_line(r: &mut impl BufRead) -> io::Result<Option<String>> {
    let mut buf = Vec::new();
    r.by_ref().take(MAX_LINE).read_until(b'\n', &mut buf)?;
    if buf.is_empty() {
        return Ok(None);
    }
    if buf.last() != Some(&b'\n') {
        let kind = if buf.len() as u64 >= MAX_LINE {
            ErrorKind::InvalidData
        } else {
            ErrorKind::UnexpectedEof
        };
        let line = String::from_utf8_lossy(&buf);
        return Err(io::Error::new(kind, format!("incomplete line: {line:?}")));
    }
    let line = String::from_utf8_lossy(&buf);
    Ok(Some(line.trim_end_matches(['\r', '\n']).to_string()))
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(ErrorKind::InvalidData, msg)
}

fn eof(msg: &str) -> io::Error {
    io::Error::new(ErrorKind::UnexpectedEof, msg)
}

fn read_headers(r: &mut impl BufRead) -> io::Result<Vec<(String, String)>> {
    let mut headers = Vec::new();
    loop {
        let line = read_line(r)?.ok_or_else(|| eof("EOF in headers"))?;
        if line.is_empty() {
            return Ok(headers);
        }
        if headers.len() >= MAX_HEADERS {
            return Err(invalid("too many headers".to_string()));
        }
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| invalid(format!("bad header line {line:?}")))?;
        headers.push((name.trim().to_string(), value.trim().to_string()));
    }
}

fn read_chunked(r: &mut impl BufRead) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line = read_line(r)?.ok_or_else(|| eof("EOF in chunked body"))?;
        let size = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size, 16)
            .map_err(|_| invalid(format!("bad chunk size line {line:?}")))?;
        if size == 0 {
            // Trailers, if any, end with an empty line like the headers.
            read_headers(r)?;
            return Ok(body);
        }
        if body.len() + size > MAX_BODY {
            return Err(invalid("chunked body too large".to_string()));
        }
        let start = body.len();
        body.resize(start + size, 0);
        r.read_exact(&mut body[start..])?;
        let mut crlf = [0u8; 2];
        r.read_exact(&mut crlf)?;
        if &crlf != b"\r\n" {
            return Err(invalid(format!("chunk not followed by CRLF: {crlf:?}")));
        }
    }
}

/// Sends one request to `base_url` + `path` for the subcommands, with
/// `CONDUCTOR_API_KEY`, when set, in `Authorization`. The error is one line:
/// the URL is not `http://`, or the server could not be reached or read.
pub(crate) fn request(
    method: &str,
    base_url: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<Received, String> {
    let rest = base_url
        .strip_prefix("http://")
        .ok_or_else(|| format!("only http:// URLs are supported, not {base_url:?}"))?;
    let (host, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let target = format!("/{}{path}", prefix.trim_end_matches('/')).replace("//", "/");
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let key = std::env::var("CONDUCTOR_API_KEY").map(|k| format!("Bearer {}", k.trim()));
    let mut headers = vec![("Accept", "application/json")];
    if !body.is_empty() {
        headers.push(("Content-Type", "application/json"));
    }
    if let Ok(key) = &key {
        headers.push(("Authorization", key));
    }
    exchange(
        host,
        method,
        &target,
        &headers,
        body.as_bytes(),
        CLI_TIMEOUT,
    )
    .map_err(|f| match f.stage {
        "resolve" | "connect" => format!("cannot connect to {base_url}: {}", f.error),
        "send" => format!("cannot send to {base_url}: {}", f.error),
        _ => format!("cannot read from {base_url}: {}", f.error),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8], head: bool) -> io::Result<Received> {
        read_response(&mut io::Cursor::new(bytes), head)
    }

    #[test]
    fn parses_plain_chunked_and_interim_answers() {
        let a = parse(
            b"HTTP/1.1 201 Created\r\nContent-Length: 8\r\n\r\n{\"a\":1}\n",
            false,
        );
        let a = a.unwrap();
        assert_eq!(
            (a.status, a.json()["a"].as_i64(), a.closes),
            (201, Some(1), false)
        );
        let chunked = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n\
            Transfer-Encoding: chunked\r\n\r\n3\r\n{\"b\r\n4\r\n\":2}\r\n0\r\n\r\n";
        let a = parse(chunked, false).unwrap();
        assert_eq!((a.status, a.json()["b"].as_i64()), (200, Some(2)));
        let a = parse(b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\n", true).unwrap();
        assert!(a.body.is_empty() && a.closes);
        let a = parse(
            b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nto the end",
            false,
        );
        assert_eq!(a.unwrap().text(), "to the end");
        assert!(parse(b"garbage\r\n\r\n", false).is_err());
        assert!(parse(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort", false).is_err());
    }

    #[test]
    fn authorities_get_port_80_by_default() {
        assert_eq!(socket_target("example.com"), "example.com:80");
        assert_eq!(socket_target("127.0.0.1:4318"), "127.0.0.1:4318");
        assert_eq!(socket_target("[::1]"), "[::1]:80");
        assert_eq!(socket_target("[::1]:9"), "[::1]:9");
    }
}
