//! One OTLP/HTTP POST through [`crate::client`], with one deadline covering
//! connect, write and read.

use std::io;
use std::time::Duration;

use super::encode::CONTENT_TYPE;
use crate::client;

/// Where batches go: a parsed `http://host[:port][/prefix]` endpoint.
#[derive(Clone, Debug)]
pub(crate) struct Endpoint {
    url: String,
    authority: String,
    path: String,
}

impl Endpoint {
    /// Parses a base endpoint such as `http://127.0.0.1:4318` and appends
    /// `/v1/traces` to its path; the error says why it is refused.
    pub(crate) fn parse(base: &str) -> Result<Endpoint, String> {
        let invalid = |why| format!("OTLP endpoint {base:?}: {why}");
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
        let path = match prefix.trim_end_matches('/') {
            "" => "/v1/traces".to_string(),
            prefix => format!("/{prefix}/v1/traces"),
        };
        Ok(Endpoint {
            url: format!("http://{authority}{path}"),
            authority: authority.to_string(),
            path,
        })
    }
}

/// Posts `body` as JSON to `endpoint` within `timeout`; success is any 2xx.
/// The error says why, and whether OTLP/HTTP calls it retryable (429, 502,
/// 503, 504). A network error is not, so a dead collector costs one timeout
/// per batch.
pub(crate) fn post(endpoint: &Endpoint, body: &[u8], timeout: Duration) -> Result<(), Failed> {
    let agent = concat!("conductor-metrics/", env!("CARGO_PKG_VERSION"));
    let headers = [("Content-Type", CONTENT_TYPE), ("User-Agent", agent)];
    let answer = client::exchange(
        &endpoint.authority,
        "POST",
        &endpoint.path,
        &headers,
        body,
        timeout,
    );
    let status = answer.as_ref().map_or(0, |r| r.status);
    let why = match answer {
        Ok(r) if (200..300).contains(&r.status) => return Ok(()),
        Ok(r) => format!("HTTP status {}", r.status),
        Err(f) if f.stage == "read" && f.error.kind() == io::ErrorKind::InvalidData => {
            "the answer is not HTTP/1.x".to_string()
        }
        Err(f) => format!("{}: {}", f.stage, f.error),
    };
    let why = format!("OTLP export to {}: {why}", endpoint.url);
    Err((why, matches!(status, 429 | 502 | 503 | 504)))
}

/// Why one export request failed, and whether it may be retried.
pub(crate) type Failed = (String, bool);

#[cfg(test)]
mod tests {
    use super::*;
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
            assert!(err.contains("OTLP endpoint"), "{err}");
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
        let (err, retryable) = post(&busy, b"{}", Duration::from_secs(5)).unwrap_err();
        assert!(retryable);
        assert!(err.contains("503"), "{err}");
        let bad = answer_once(b"HTTP/1.1 400 Bad Request\r\n\r\n");
        assert!(!post(&bad, b"{}", Duration::from_secs(5)).unwrap_err().1);
        let junk = answer_once(b"SSH-2.0-OpenSSH\r\n\r\n");
        let (err, _) = post(&junk, b"{}", Duration::from_secs(5)).unwrap_err();
        assert!(err.contains("not HTTP"), "{err}");
    }

    #[test]
    fn network_errors_carry_their_cause() {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let e = Endpoint::parse(&format!("http://127.0.0.1:{port}")).unwrap();
        let (err, retryable) = post(&e, b"{}", Duration::from_secs(5)).unwrap_err();
        assert!(!retryable);
        assert!(err.contains("connect: "), "{err}");
    }

    /// Checked when the tests compile: error is send and sync.
    const _: () = {
        const fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Failed>();
    };
}
