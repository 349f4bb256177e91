//! One OTLP/HTTP POST through [`crate::client`], with one deadline covering
//! connect, write and read.
//!
//! Plain `http://` only: std has no TLS, and the usual deployment puts a
//! collector on the same host or pod anyway.

use std::fmt;
use std::io;
use std::time::Duration;

use super::encode::CONTENT_TYPE;
use crate::client;

/// The path OTLP/HTTP appends to the base endpoint for traces.
const TRACES_PATH: &str = "v1/traces";

/// Where batches go: a parsed `http://host[:port][/prefix]` endpoint.
#[derive(Clone, Debug)]
pub(crate) struct Endpoint {
    url: String,
    authority: String,
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
}

/// Posts `body` as JSON to `endpoint`, giving up when `timeout` has passed
/// since the call began. Success is any 2xx answer.
pub(crate) fn post(endpoint: &Endpoint, body: &[u8], timeout: Duration) -> Result<(), Error> {
    let agent = concat!("conductor-metrics/", env!("CARGO_PKG_VERSION"));
    let headers = [("Content-Type", CONTENT_TYPE), ("User-Agent", agent)];
    let fail = |kind| Error::new(&endpoint.url, kind);
    let answer = client::exchange(
        &endpoint.authority,
        "POST",
        &endpoint.path,
        &headers,
        body,
        timeout,
    );
    match answer {
        Ok(r) if (200..300).contains(&r.status) => Ok(()),
        Ok(r) => Err(fail(ErrorKind::Status(r.status))),
        Err(f) if f.stage == "read" && f.error.kind() == io::ErrorKind::InvalidData => {
            Err(fail(ErrorKind::BadAnswer))
        }
        Err(f) => Err(fail(ErrorKind::Io(f.stage, f.error))),
    }
}

/// Why one export request failed. Safe to send across threads.
#[derive(Debug)]
pub(crate) struct Error {
    url: String,
    kind: ErrorKind,
}

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
    use std::io::{Read, Write};
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
        let e = Endpoint::parse("http://collector/otel/").unwrap();
        assert_eq!(
            (e.authority.as_str(), e.path.as_str()),
            ("collector", "/otel/v1/traces")
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

    /// Serves one connection: reads the whole request (whose body the tests
    /// send is always `{}`) before answering, since closing with unread
    /// bytes would reset the connection and lose the answer.
    fn answer_once(response: &'static [u8]) -> Endpoint {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            while !request.ends_with(b"\r\n\r\n{}") {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
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
