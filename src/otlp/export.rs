//! The exporter: a bounded span queue drained by one background thread
//! that batches, encodes and posts to the collector through [`crate::client`].

use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::json;

use super::encode::{encode_request, CONTENT_TYPE};
use super::span::Span;
use super::OtlpConfig;
use crate::client;
use crate::log::Logger;
use crate::metrics::Counter;

/// The least time between two warnings about lost spans: a collector that
/// is down for an hour gets sixty lines, not one per batch.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// How many times one batch is tried while the collector answers retryable.
const MAX_ATTEMPTS: u32 = 3;
/// The pause before the first retry; each later pause doubles it.
const FIRST_BACKOFF: Duration = Duration::from_millis(200);

/// Sends spans to an OTLP/HTTP collector from a background thread.
/// [`Exporter::export`] never blocks on the network (the lock covers queue
/// pushes and pops only); memory is bounded by the queue plus one batch in
/// flight. Spans are lost, and counted, when the queue is full, a request
/// fails unretryably, or the retries run out. On drop the thread sends what
/// is queued and exits, unawaited (dropping a batch that waits for a retry).
pub struct Exporter {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    /// Wakes the export thread: spans arrived, a flush began, or shutdown.
    work: Condvar,
    /// Wakes flushers: a batch finished.
    idle: Condvar,
    dropped: Counter,
    log: Logger,
    capacity: usize,
    batch_size: usize,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Span>,
    /// When the oldest queued span arrived; its batch is due a delay later.
    oldest: Option<Instant>,
    in_flight: bool,
    /// How many `flush` calls wait; while any do, batches go out at once.
    flushers: usize,
    shutdown: bool,
    /// Spans lost since the start: after any, no flush sent everything.
    lost: u64,
    report: LossReport,
}

/// When to warn about lost spans: at the first loss, then at the first a
/// minute after the last warning, with the count since and the latest reason.
#[derive(Debug, Default)]
struct LossReport {
    last_warning: Option<Instant>,
    unreported: u64,
    why: String,
}

impl LossReport {
    /// Notes `n` spans lost for `why`; the count and reason, if a warning is due.
    fn lost(&mut self, n: u64, why: &str, now: Instant) -> Option<(u64, String)> {
        self.unreported += n;
        why.clone_into(&mut self.why);
        let due = self
            .last_warning
            .is_none_or(|last| now.saturating_duration_since(last) >= WARN_EVERY);
        due.then(|| self.take(now)).flatten()
    }

    /// The count no warning has named yet, and the latest reason, now named.
    fn take(&mut self, now: Instant) -> Option<(u64, String)> {
        (self.unreported > 0).then(|| {
            self.last_warning = Some(now);
            (std::mem::take(&mut self.unreported), self.why.clone())
        })
    }
}

impl Exporter {
    /// Starts the export thread; `InvalidInput` unless the endpoint is `http://`.
    pub fn start(config: OtlpConfig, dropped: Counter, log: Logger) -> io::Result<Exporter> {
        let endpoint = Endpoint::parse(&config.endpoint)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let capacity = config.queue_capacity.max(1);
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                queue: VecDeque::with_capacity(capacity),
                ..State::default()
            }),
            work: Condvar::new(),
            idle: Condvar::new(),
            dropped,
            log,
            capacity,
            batch_size: config.batch_size.clamp(1, capacity),
        });
        let thread_shared = shared.clone();
        thread::Builder::new()
            .name("otlp-export".to_string())
            .spawn(move || export_loop(&thread_shared, &endpoint, &config))?;
        Ok(Exporter { shared })
    }

    /// Queues `spans` and returns at once; what does not fit is dropped.
    pub fn export(&self, spans: Vec<Span>) {
        if spans.is_empty() {
            return;
        }
        let offered = spans.len();
        let mut st = self.shared.lock();
        let accepted = offered.min(self.shared.capacity - st.queue.len());
        let starts_batch = st.queue.is_empty() && accepted > 0;
        if starts_batch {
            st.oldest = Some(Instant::now());
        }
        st.queue.extend(spans.into_iter().take(accepted));
        // The thread only needs waking to start a batch timer or to send a
        // full batch; otherwise its timed wait is already right.
        let wake = starts_batch || st.queue.len() >= self.shared.batch_size;
        let lost = (offered - accepted) as u64;
        let warning = (lost > 0)
            .then(|| self.shared.lose(&mut st, lost, "the export queue is full"))
            .flatten();
        drop(st);
        if wake {
            self.shared.work.notify_one();
        }
        if let Some(warning) = warning {
            self.shared.warn(warning);
        }
    }

    /// Sends everything queued now and blocks up to `timeout` until nothing
    /// is queued or in flight; true only when that happened and no span was
    /// ever lost. Losses not yet warned about are warned about now, whatever
    /// the minute. For tests and shutdown.
    pub fn flush(&self, timeout: Duration) -> bool {
        let mut st = self.shared.lock();
        st.flushers += 1;
        self.shared.work.notify_one();
        let busy = |st: &mut State| !st.queue.is_empty() || st.in_flight;
        let waited = self.shared.idle.wait_timeout_while(st, timeout, busy);
        let (mut st, result) = waited.unwrap_or_else(|e| e.into_inner());
        let drained = !result.timed_out();
        st.flushers -= 1;
        let sent = drained && st.lost == 0;
        let warning = st.report.take(Instant::now());
        drop(st);
        if let Some(warning) = warning {
            self.shared.warn(warning);
        }
        sent
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        self.shared.lock().shutdown = true;
        self.shared.work.notify_one();
    }
}

impl Shared {
    /// Counts `n` spans lost for `why`; returns a warning if one is due, for
    /// the caller to log after letting go of the lock.
    fn lose(&self, st: &mut State, n: u64, why: &str) -> Option<(u64, String)> {
        self.dropped.inc_by(n);
        st.lost += n;
        st.report.lost(n, why, Instant::now())
    }

    fn warn(&self, (spans, why): (u64, String)) {
        let fields = [("spans", json!(spans)), ("error", json!(why))];
        self.log.warn("trace spans dropped", &fields);
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while the lock is held (queue operations and field
        // updates only), so a poisoned lock still guards a consistent state.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until the next batch is due and takes it; `None` at shutdown once the queue is empty.
    fn next_batch(&self, batch_delay: Duration) -> Option<Vec<Span>> {
        let mut st = self.lock();
        loop {
            if st.queue.is_empty() {
                if st.shutdown {
                    return None;
                }
                st = self.work.wait(st).unwrap_or_else(|e| e.into_inner());
                continue;
            }
            let due = st.oldest.map_or_else(Instant::now, |t| t + batch_delay);
            let now = Instant::now();
            if st.queue.len() >= self.batch_size || st.flushers > 0 || st.shutdown || now >= due {
                break;
            }
            st = self
                .work
                .wait_timeout(st, due - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        let n = st.queue.len().min(self.batch_size);
        let batch: Vec<Span> = st.queue.drain(..n).collect();
        // Spans left behind keep the old arrival time: they are already
        // due, so they follow at once instead of waiting another delay.
        if st.queue.is_empty() {
            st.oldest = None;
        }
        st.in_flight = true;
        Some(batch)
    }

    /// Pauses for `pause`; false when shutdown began.
    fn backoff(&self, pause: Duration) -> bool {
        let waited = self
            .work
            .wait_timeout_while(self.lock(), pause, |st| !st.shutdown);
        !waited.unwrap_or_else(|e| e.into_inner()).0.shutdown
    }
}

fn export_loop(shared: &Shared, endpoint: &Endpoint, config: &OtlpConfig) {
    while let Some(batch) = shared.next_batch(config.batch_delay) {
        let outcome = deliver(shared, endpoint, config, &batch);
        let mut st = shared.lock();
        st.in_flight = false;
        let warning = match outcome {
            Ok(()) => None,
            Err((why, _)) => shared.lose(&mut st, batch.len() as u64, &why),
        };
        drop(st);
        shared.idle.notify_all();
        if let Some(warning) = warning {
            shared.warn(warning);
        }
    }
}

/// Posts one batch, retrying with exponential backoff only on the statuses
/// OTLP calls retryable. `Retry-After` is not honoured: a misbehaving
/// collector must not be able to park the thread.
fn deliver(
    shared: &Shared,
    endpoint: &Endpoint,
    config: &OtlpConfig,
    batch: &[Span],
) -> Result<(), Failed> {
    let body = encode_request(&config.service_name, batch);
    let mut pause = FIRST_BACKOFF;
    let mut attempt = 1;
    loop {
        match post(endpoint, body.as_bytes(), config.timeout) {
            Err((_, true)) if attempt < MAX_ATTEMPTS && shared.backoff(pause) => {
                attempt += 1;
                pause *= 2;
            }
            outcome => return outcome,
        }
    }
}

/// Where batches go: a parsed `http://host[:port][/prefix]` endpoint.
#[derive(Clone, Debug)]
pub(crate) struct Endpoint {
    url: String,
    authority: String,
    path: String,
}

impl Endpoint {
    /// Parses a base endpoint such as `http://127.0.0.1:4318`, adding `/v1/traces`; errors say why.
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
    use crate::otlp::fake_collector::Collector;
    use crate::otlp::span::SpanStatus;
    use crate::otlp::TraceContext;
    use crate::testing::quiet;
    use std::net::TcpListener;

    /// A logger for tests: the warnings about lost spans are not printed.
    fn config(endpoint: String) -> OtlpConfig {
        OtlpConfig {
            endpoint,
            service_name: "test-svc".into(),
            queue_capacity: 64,
            batch_size: 2,
            batch_delay: Duration::from_secs(3600),
            timeout: Duration::from_secs(5),
        }
    }

    fn span(n: u64) -> Span {
        Span {
            trace_id: TraceContext::new_root().trace_id,
            span_id: crate::otlp::id::new_span_id(),
            parent_span_id: None,
            name: format!("s{n}"),
            start_unix_nanos: n,
            end_unix_nanos: n + 1,
            attributes: Vec::new(),
            events: Vec::new(),
            status: SpanStatus::Unset,
        }
    }

    fn span_count(body: &str) -> usize {
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        v["resourceSpans"][0]["scopeSpans"][0]["spans"]
            .as_array()
            .unwrap()
            .len()
    }

    const LONG: Duration = Duration::from_secs(20);

    #[test]
    fn full_batches_go_at_once_and_flush_sends_the_rest() {
        let c = Collector::start(vec![], Some(200));
        let dropped = Counter::new();
        let e = Exporter::start(
            config(format!("{}/otel/", c.endpoint())),
            dropped.clone(),
            quiet(),
        )
        .unwrap();
        for n in 0..5 {
            e.export(vec![span(n)]);
        }
        assert!(c.wait_for(2, LONG), "full batches are not held back");
        assert!(e.flush(LONG));
        let seen = c.seen();
        assert_eq!(seen.len(), 3);
        for s in seen.iter() {
            assert!(
                s.head.starts_with("POST /otel/v1/traces HTTP/1.1\r\n"),
                "{}",
                s.head
            );
            assert!(
                s.head.contains("\r\nContent-Type: application/json\r\n"),
                "{}",
                s.head
            );
            assert!(s
                .body
                .contains(r#"{"key":"service.name","value":{"stringValue":"test-svc"}}"#));
        }
        let counts: Vec<usize> = seen.iter().map(|s| span_count(&s.body)).collect();
        assert_eq!(counts, vec![2, 2, 1]);
        assert_eq!(dropped.get(), 0.0);
        assert_eq!(e.shared.lock().report.why, "");
    }

    #[test]
    fn a_partial_batch_goes_after_the_delay() {
        let c = Collector::start(vec![], Some(200));
        let mut cfg = config(c.endpoint());
        cfg.batch_size = 100;
        cfg.batch_delay = Duration::from_millis(20);
        let e = Exporter::start(cfg, Counter::new(), quiet()).unwrap();
        e.export(vec![span(1), span(2)]);
        assert!(c.wait_for(1, LONG));
        assert_eq!(span_count(&c.seen()[0].body), 2);
    }

    #[test]
    fn retryable_statuses_are_retried_until_delivered() {
        let c = Collector::start(vec![Some(503), Some(503)], Some(200));
        let dropped = Counter::new();
        let e = Exporter::start(config(c.endpoint()), dropped.clone(), quiet()).unwrap();
        e.export(vec![span(1)]);
        assert!(e.flush(LONG));
        let seen = c.seen();
        assert_eq!(seen.len(), 3);
        assert!(seen.iter().all(|s| s.body == seen[0].body));
        assert_eq!(dropped.get(), 0.0);
    }

    #[test]
    fn retries_stop_after_three_attempts() {
        let c = Collector::start(vec![], Some(429));
        let dropped = Counter::new();
        let e = Exporter::start(config(c.endpoint()), dropped.clone(), quiet()).unwrap();
        e.export(vec![span(1), span(2)]);
        assert!(!e.flush(LONG), "a lost batch is not flushed");
        assert_eq!(c.seen().len(), 3);
        assert_eq!(dropped.get(), 2.0);
        assert!(e.shared.lock().report.why.contains("429"));
    }

    #[test]
    fn other_failures_drop_the_batch_without_retrying() {
        let c = Collector::start(vec![Some(400)], Some(200));
        let dropped = Counter::new();
        let e = Exporter::start(config(c.endpoint()), dropped.clone(), quiet()).unwrap();
        e.export(vec![span(1)]);
        assert!(!e.flush(LONG));
        assert_eq!(c.seen().len(), 1);
        assert_eq!(dropped.get(), 1.0);
        assert!(e.shared.lock().report.why.contains("400"));

        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let e = Exporter::start(
            config(format!("http://127.0.0.1:{port}")),
            dropped.clone(),
            quiet(),
        )
        .unwrap();
        e.export(vec![span(1), span(2)]);
        assert!(!e.flush(LONG));
        assert_eq!(dropped.get(), 3.0);
    }

    #[test]
    fn a_silent_collector_costs_spans_not_memory_or_callers() {
        let c = Collector::start(vec![], None);
        let dropped = Counter::new();
        let mut cfg = config(c.endpoint());
        cfg.queue_capacity = 4;
        cfg.timeout = Duration::from_millis(200);
        let e = Exporter::start(cfg, dropped.clone(), quiet()).unwrap();
        for n in 0..10_000 {
            e.export(vec![span(n)]);
            assert!(e.shared.lock().queue.len() <= 4);
        }
        assert!(dropped.get() > 0.0);
        assert!(!e.flush(LONG));
        assert_eq!(dropped.get(), 10_000.0);
        assert!(c.wait_for(1, LONG));
        let err = e.shared.lock().report.why.clone();
        assert!(err.contains("read"), "{err}");
    }

    #[test]
    fn a_span_lost_before_the_flush_still_makes_it_false() {
        let c = Collector::start(vec![Some(400)], Some(200));
        let e = Exporter::start(config(c.endpoint()), Counter::new(), quiet()).unwrap();
        // A full batch goes at once, and is refused.
        e.export(vec![span(1), span(2)]);
        assert!(c.wait_for(1, LONG));
        e.export(vec![span(3)]);
        assert!(!e.flush(LONG), "not everything was sent");
        assert_eq!(c.seen().len(), 2, "what came later was sent");
    }

    #[test]
    fn losses_are_warned_about_at_most_once_a_minute_with_their_count() {
        let start = Instant::now();
        let at = |seconds| start + Duration::from_secs(seconds);
        let said = |n: u64, why: &str| Some((n, why.to_string()));
        let mut r = LossReport::default();
        assert_eq!(r.take(at(0)), None, "nothing lost, nothing to say");
        let first = r.lost(3, "a", at(0));
        assert_eq!(first, said(3, "a"), "the first loss is said at once");
        assert_eq!(r.lost(2, "b", at(10)), None);
        assert_eq!(r.lost(5, "c", at(59)), None);
        let minute = r.lost(1, "d", at(60));
        assert_eq!(
            minute,
            said(8, "d"),
            "a minute later: the count since, the latest reason"
        );
        assert_eq!(r.lost(4, "e", at(61)), None);
        assert_eq!(r.take(at(62)), said(4, "e"), "a flush says what is left");
        assert_eq!(r.take(at(63)), None);
        let after_flush = r.lost(1, "f", at(100));
        assert_eq!(after_flush, None, "the flush's line starts a new minute");
        assert_eq!(r.lost(1, "g", at(122)), said(2, "g"));
    }

    #[test]
    fn dropping_the_exporter_still_sends_what_is_queued() {
        let c = Collector::start(vec![], Some(200));
        let e = Exporter::start(config(c.endpoint()), Counter::new(), quiet()).unwrap();
        e.export(vec![span(1)]);
        drop(e);
        assert!(c.wait_for(1, LONG));
        assert_eq!(span_count(&c.seen()[0].body), 1);
    }

    #[test]
    fn rejects_endpoints_it_cannot_reach() {
        let err = Exporter::start(config("https://c:4318".into()), Counter::new(), quiet())
            .err()
            .unwrap();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(err.to_string().contains("http://"), "{err}");
    }

    /// Checked when the tests compile: exporter is send and sync.
    const _: () = {
        const fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Exporter>();
    };
}

#[cfg(test)]
mod transport_tests {
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
