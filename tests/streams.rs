//! Live progress through the real binary: the SSE stream (order, resume,
//! filter, timing), the WebSocket (handshake, framing, ping, close, errors),
//! AgentGate's dashboard frames on `/ws` and the run metrics they carry
//! (kept byte for byte, across a crash), seqs across a restart, budget
//! alerts, and the hub itself under concurrent publishers and a subscriber
//! that never reads.

mod common;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::ws_client::{decode_server_frame, encode_client_frame};
use common::{get, get_json, post_json, request, ServerProc, TempDir, IO_TIMEOUT};
use conductor_metrics::client::{read_response, Received};
use conductor_metrics::events::{Filter, Hub, NewEvent, Next, Start, Transport, QUEUE_CAPACITY};
use conductor_metrics::log::{Level, LogFormat, Logger};
use conductor_metrics::metrics::{Format, Registry};
use serde_json::{json, Value};

/// How long a test waits for an event it expects.
const EVENT_DEADLINE: Duration = Duration::from_secs(5);
const MASK: [u8; 4] = [0x12, 0x34, 0x56, 0x78];
const RFC_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

fn open(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> BufReader<TcpStream> {
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n");
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    req.push_str("\r\n");
    (&stream).write_all(req.as_bytes()).unwrap();
    BufReader::new(stream)
}

/// A stream's head, leaving its body to be read.
fn read_head(r: &mut BufReader<TcpStream>) -> Received {
    read_response(r, true).expect("a response head")
}

/// One server-sent event.
#[derive(Debug)]
struct Sse {
    id: Option<u64>,
    event: String,
    data: Value,
}

/// An SSE client reading a chunked `text/event-stream`.
struct SseClient {
    reader: BufReader<TcpStream>,
    text: String,
    head: Received,
}

impl SseClient {
    fn connect(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> SseClient {
        let mut reader = open(addr, path, headers);
        let head = read_head(&mut reader);
        SseClient {
            reader,
            text: String::new(),
            head,
        }
    }

    /// Reads one chunk into `text`; false at the last chunk.
    fn read_chunk(&mut self) -> io::Result<bool> {
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        let size = usize::from_str_radix(line.trim(), 16)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, line.clone()))?;
        let mut data = vec![0; size + 2];
        self.reader.read_exact(&mut data)?;
        self.text
            .push_str(std::str::from_utf8(&data[..size]).unwrap());
        Ok(size > 0)
    }

    /// The next event (comments and `retry:` skipped), or `None` at the end
    /// of the stream.
    fn next(&mut self) -> Option<Sse> {
        loop {
            while let Some(i) = self.text.find("\n\n") {
                let block: String = self.text.drain(..i + 2).collect();
                let (mut id, mut event, mut data) = (None, String::new(), None);
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id: ") {
                        id = Some(v.parse().unwrap());
                    } else if let Some(v) = line.strip_prefix("event: ") {
                        event = v.to_string();
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data = Some(serde_json::from_str(v).unwrap());
                    }
                }
                if let Some(data) = data {
                    return Some(Sse { id, event, data });
                }
            }
            match self.read_chunk() {
                Ok(true) => {}
                Ok(false) => return None,
                Err(e) => panic!("SSE stream failed: {e}"),
            }
        }
    }

    /// Events until one of type `last` for `run` (inclusive).
    fn until(&mut self, last: &str, run: &str) -> Vec<Sse> {
        let start = Instant::now();
        let mut got = Vec::new();
        while start.elapsed() < EVENT_DEADLINE {
            let e = self.next().expect("stream ended early");
            let done = e.event == last && e.data["run_id"] == run;
            got.push(e);
            if done {
                return got;
            }
        }
        panic!("no {last} for {run} within {EVENT_DEADLINE:?}; got {got:?}");
    }
}

fn start_run(addr: SocketAddr, id: &str) {
    let r = post_json(
        addr,
        "/api/v1/runs",
        &json!({"run_id": id, "agent": "coder", "work_order_id": "WO-9", "correlation_id": format!("corr-{id}")}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
}

fn events_of(addr: SocketAddr, id: &str, events: &Value) {
    let r = post_json(addr, &format!("/api/v1/runs/{id}/events"), events);
    assert_eq!(r.status, 200, "{}", r.text());
}

fn complete(addr: SocketAddr, id: &str) {
    let r = post_json(addr, &format!("/api/v1/runs/{id}/complete"), &json!({}));
    assert_eq!(r.status, 200, "{}", r.text());
}

fn metric(addr: SocketAddr, series: &str) -> f64 {
    get(addr, "/metrics")
        .text()
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

fn seqs(events: &[Sse]) -> Vec<u64> {
    events
        .iter()
        .map(|e| e.data["seq"].as_u64().unwrap())
        .collect()
}

#[test]
fn sse_delivers_every_change_in_seq_order_right_after_its_ack() {
    let dir = TempDir::new();
    let server = ServerProc::start(dir.path(), &[], &[]);
    let addr = server.addr();
    let mut sse = SseClient::connect(addr, "/api/v1/events", &[]);
    assert_eq!(sse.head.status, 200);
    assert_eq!(sse.head.header("Content-Type"), Some("text/event-stream"));
    assert_eq!(sse.head.header("Cache-Control"), Some("no-cache"));
    assert!(sse.head.header("X-Request-ID").is_some());

    let posted = Instant::now();
    start_run(addr, "run-a");
    let first = sse.next().expect("run_started");
    println!(
        "sse_latency_ms {:.3} ms (POST sent to event read, fsync included)",
        posted.elapsed().as_secs_f64() * 1e3
    );
    assert_eq!(first.event, "run_started");
    assert_eq!(first.id, first.data["seq"].as_u64());
    assert_eq!(first.data["run_id"], "run-a");
    assert_eq!(first.data["correlation_id"], "corr-run-a");
    assert_eq!(first.data["work_order_id"], "WO-9");
    assert_eq!(first.data["agent"], "coder");
    assert!(first.data["timestamp"].as_str().unwrap().ends_with('Z'));

    events_of(
        addr,
        "run-a",
        &json!([
            {"type": "iteration_started", "iteration": 1},
            {"type": "phase_started", "phase": "plan", "iteration": 1},
            {"type": "tokens", "phase": "plan", "input_tokens": 10, "output_tokens": 5},
            {"type": "phase_completed", "phase": "plan", "success": true},
            {"type": "gate_checked", "gate": "lint", "passed": true},
            {"type": "iteration_completed", "iteration": 1, "success": true},
            {"type": "delivery_started"},
            {"type": "delivery_completed", "success": true, "pr_url": "https://example.test/pr/1"}
        ]),
    );
    let m = post_json(
        addr,
        "/api/v1/messages",
        &json!({"type": "note", "body": {"text": "hi"}, "run_id": "run-a"}),
    );
    assert_eq!(m.status, 201);
    complete(addr, "run-a");
    let rest = sse.until("run_completed", "run-a");
    let types: Vec<&str> = rest.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(
        types,
        [
            "iteration_started",
            "phase_started",
            "phase_completed",
            "gate_checked",
            "iteration_completed",
            "delivery_started",
            "delivery_completed",
            "message_appended",
            "run_completed"
        ]
    );
    let mut all = vec![first];
    all.extend(rest);
    let s = seqs(&all);
    assert!(s.windows(2).all(|w| w[1] > w[0]), "{s:?}");
    for e in &all {
        assert_eq!(e.id, e.data["seq"].as_u64());
        assert_eq!(e.data["type"], e.event.as_str());
        assert_eq!(e.data["correlation_id"], "corr-run-a");
    }
    let msg = &all[all.len() - 2].data;
    assert_eq!(msg["message_type"], "note");
    assert_eq!(msg["body"]["text"], "hi");
    assert_eq!(msg["work_order_id"], "WO-9");
    assert_eq!(
        metric(
            addr,
            "conductor_events_published_total{type=\"run_started\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(addr, "conductor_event_subscribers{transport=\"sse\"}"),
        1.0
    );
}

#[test]
fn sse_resumes_after_last_event_id_and_filters_by_run() {
    let dir = TempDir::new();
    let server = ServerProc::start(dir.path(), &[], &[]);
    let addr = server.addr();
    let mut all = SseClient::connect(addr, "/api/v1/events", &[]);
    for id in ["a", "b"] {
        start_run(addr, id);
        events_of(
            addr,
            id,
            &json!({"type": "iteration_started", "iteration": 1}),
        );
    }
    complete(addr, "a");
    let seen = all.until("run_completed", "a");
    let s = seqs(&seen);
    assert_eq!(s.len(), 5);

    let last = s[1].to_string();
    let mut resumed = SseClient::connect(addr, "/api/v1/events", &[("Last-Event-ID", &last)]);
    assert_eq!(seqs(&resumed.until("run_completed", "a")), s[2..]);
    let path = format!("/api/v1/events?last_event_id={}", s[2]);
    let mut resumed = SseClient::connect(addr, &path, &[]);
    assert_eq!(seqs(&resumed.until("run_completed", "a")), s[3..]);
    let mut tail = SseClient::connect(addr, "/api/v1/events?tail=2", &[]);
    assert_eq!(seqs(&tail.until("run_completed", "a")), s[3..]);

    let mut only_b = SseClient::connect(addr, "/api/v1/events?run_id=b&after_seq=0", &[]);
    complete(addr, "b");
    let got = only_b.until("run_completed", "b");
    assert_eq!(
        got.iter().map(|e| e.event.as_str()).collect::<Vec<_>>(),
        ["run_started", "iteration_started", "run_completed"]
    );
    assert!(got.iter().all(|e| e.data["run_id"] == "b"));

    for bad in [
        "/api/v1/events?run_id=a%20b",
        "/api/v1/events?last_event_id=x",
        "/api/v1/events?tail=-1",
    ] {
        let r = get(addr, bad);
        assert_eq!(r.status, 400, "{bad}: {}", r.text());
        assert_eq!(r.json()["error"]["code"], "BAD_REQUEST");
    }
    // POST on the stream's path takes progress events; other methods are 405.
    let r = post_json(addr, "/api/v1/events", &json!({}));
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["field"], "events[0].run_id");
    let r = request(addr, "PUT", "/api/v1/events", &[], Some(b"{}")).unwrap();
    assert_eq!(r.status, 405);
    assert_eq!(r.header("Allow"), Some("GET, POST"));
}

#[test]
fn seqs_continue_past_the_reserved_block_after_a_crash() {
    let dir = TempDir::new();
    let mut server = ServerProc::start(dir.path(), &[], &[]);
    let mut sse = SseClient::connect(server.addr(), "/api/v1/events", &[]);
    start_run(server.addr(), "before");
    let before = sse.next().unwrap().data["seq"].as_u64().unwrap();
    let reserved: u64 = std::fs::read_to_string(dir.join("events.seq"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(reserved > before);
    drop(sse);
    server.kill();

    let server = ServerProc::start(dir.path(), &[], &[]);
    let mut sse = SseClient::connect(server.addr(), "/api/v1/events", &[]);
    start_run(server.addr(), "after");
    let after = sse.next().unwrap().data["seq"].as_u64().unwrap();
    assert_eq!(
        after, reserved,
        "a restart continues after the reserved block"
    );
}

/// A WebSocket client speaking raw frames.
struct WsClient {
    reader: BufReader<TcpStream>,
    head: Received,
}

impl WsClient {
    fn connect(addr: SocketAddr, path: &str) -> WsClient {
        WsClient::connect_with(addr, path, &[])
    }

    fn connect_with(addr: SocketAddr, path: &str, extra: &[(&str, &str)]) -> WsClient {
        let mut headers = vec![
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Version", "13"),
            ("Sec-WebSocket-Key", RFC_KEY),
        ];
        headers.extend_from_slice(extra);
        let mut reader = open(addr, path, &headers);
        let head = read_head(&mut reader);
        WsClient { reader, head }
    }

    fn send(&mut self, frame: &[u8]) {
        self.reader.get_mut().write_all(frame).unwrap();
    }

    fn frame(&mut self) -> (u8, Vec<u8>) {
        let (op, fin, payload) = decode_server_frame(&mut self.reader, 1 << 20).unwrap();
        assert!(fin);
        (op, payload)
    }

    /// Frames up to and including the close; returns its code.
    fn close_code(&mut self) -> u16 {
        loop {
            let (op, payload) = self.frame();
            if op == 0x8 {
                return u16::from_be_bytes([payload[0], payload[1]]);
            }
        }
    }

    /// Whether the server ends the stream (EOF) after its close frame.
    fn at_eof(&mut self) -> bool {
        let mut rest = Vec::new();
        self.reader.read_to_end(&mut rest).is_ok() && rest.is_empty()
    }

    fn event(&mut self) -> Value {
        serde_json::from_str(&self.text()).unwrap()
    }

    /// The next frame, which must be a text frame, as sent.
    fn text(&mut self) -> String {
        let (op, payload) = self.frame();
        assert_eq!(op, 0x1, "a text frame");
        String::from_utf8(payload).unwrap()
    }
}

#[test]
fn websocket_handshake_answers_the_rfc_sample_key() {
    let dir = TempDir::new();
    let server = ServerProc::start(dir.path(), &[], &[]);
    let mut ws = WsClient::connect(server.addr(), "/api/v1/ws");
    assert_eq!(ws.head.status, 101);
    assert_eq!(
        ws.head.header("Sec-WebSocket-Accept"),
        Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    );
    assert!(ws
        .head
        .header("Upgrade")
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket")));
    assert!(ws.head.header("X-Request-ID").is_some());
    ws.send(&encode_client_frame(
        0x8,
        true,
        MASK,
        &1000u16.to_be_bytes(),
    ));
    assert_eq!(ws.close_code(), 1000);
    assert!(ws.at_eof());
}

#[test]
fn websocket_rejects_bad_handshakes_with_400() {
    let dir = TempDir::new();
    let server = ServerProc::start(dir.path(), &[], &[]);
    let addr = server.addr();
    let good = [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Key", RFC_KEY),
    ];
    let cases: [(&str, Option<&str>, &str); 4] = [
        ("Sec-WebSocket-Key", Some("c2hvcnQ="), "Sec-WebSocket-Key"),
        ("Sec-WebSocket-Key", None, "Sec-WebSocket-Key"),
        ("Sec-WebSocket-Version", Some("8"), "Sec-WebSocket-Version"),
        ("Upgrade", None, "Upgrade"),
    ];
    for (name, value, field) in cases {
        let headers: Vec<(&str, &str)> = good
            .iter()
            .filter(|(n, _)| *n != name)
            .copied()
            .chain(value.map(|v| (name, v)))
            .collect();
        let r = request(addr, "GET", "/api/v1/ws", &headers, None).unwrap();
        assert_eq!(r.status, 400, "{name}={value:?}: {}", r.text());
        assert_eq!(r.json()["error"]["field"], field);
        if field == "Sec-WebSocket-Version" {
            assert_eq!(r.header("Sec-WebSocket-Version"), Some("13"));
        }
    }
    assert_eq!(post_json(addr, "/api/v1/ws", &json!({})).status, 405);
}

#[test]
fn websocket_streams_events_answers_pings_and_closes_cleanly() {
    let dir = TempDir::new();
    let server = ServerProc::start(dir.path(), &[], &[]);
    let addr = server.addr();
    start_run(addr, "w1");
    let mut ws = WsClient::connect(addr, "/api/v1/ws?after_seq=0&run_id=w1");
    assert_eq!(ws.head.status, 101);
    let started = ws.event();
    assert_eq!(started["type"], "run_started");
    assert_eq!(
        metric(addr, "conductor_event_subscribers{transport=\"websocket\"}"),
        1.0
    );

    ws.send(&encode_client_frame(0x9, true, MASK, b"are you there"));
    assert_eq!(ws.frame(), (0xA, b"are you there".to_vec()));

    start_run(addr, "other");
    events_of(
        addr,
        "w1",
        &json!({"type": "phase_started", "phase": "build"}),
    );
    complete(addr, "w1");
    let phase = ws.event();
    assert_eq!(phase["type"], "phase_started");
    assert_eq!(phase["phase"], "build");
    let done = ws.event();
    assert_eq!(done["type"], "run_completed");
    assert!(done["seq"].as_u64() > phase["seq"].as_u64());

    // A fragmented, masked text message is accepted and ignored.
    ws.send(&encode_client_frame(0x1, false, MASK, b"hel"));
    ws.send(&encode_client_frame(0x0, true, MASK, b"lo"));
    ws.send(&encode_client_frame(0x9, true, MASK, b""));
    assert_eq!(ws.frame(), (0xA, Vec::new()));

    let mut close = 1001u16.to_be_bytes().to_vec();
    close.extend_from_slice(b"bye");
    ws.send(&encode_client_frame(0x8, true, MASK, &close));
    assert_eq!(ws.close_code(), 1001);
    assert!(ws.at_eof());
    common::poll_until(EVENT_DEADLINE, || {
        (metric(addr, "conductor_event_subscribers{transport=\"websocket\"}") == 0.0).then_some(())
    });
}

#[test]
fn a_stopping_server_ends_both_streams_with_a_final_notice_and_exits_0() {
    let dir = TempDir::new();
    let mut server = ServerProc::start(dir.path(), &[], &[]);
    let addr = server.addr();
    let mut sse = SseClient::connect(addr, "/api/v1/events", &[]);
    let mut ws = WsClient::connect(addr, "/api/v1/ws");
    assert_eq!((sse.head.status, ws.head.status), (200, 101));
    common::poll_until(EVENT_DEADLINE, || {
        (metric(addr, "conductor_event_subscribers{transport=\"websocket\"}") == 1.0).then_some(())
    });
    start_run(addr, "s1");
    let started = sse.until("run_started", "s1");
    assert_eq!(ws.event()["run_id"], "s1");
    let last_seq = started.last().and_then(|e| e.id).expect("an id");

    server.terminate();
    let notice = sse.next().expect("a shutdown event");
    assert_eq!((notice.id, notice.event.as_str()), (None, "shutdown"));
    assert_eq!(
        notice.data,
        json!({"type": "shutdown", "last_seq": last_seq})
    );
    assert!(
        sse.next().is_none(),
        "the chunked body ends after the notice"
    );
    assert_eq!(
        ws.event(),
        json!({"type": "shutdown", "last_seq": last_seq})
    );
    assert_eq!(ws.close_code(), 1001);
    ws.send(&encode_client_frame(
        0x8,
        true,
        MASK,
        &1001u16.to_be_bytes(),
    ));
    drop(ws);
    let status = server.wait_timeout(Duration::from_secs(10));
    assert_eq!(status.map(|s| s.code()), Some(Some(0)), "exit status");
    let stopped = server.wait_for_stderr(EVENT_DEADLINE, |l| l.contains("\"msg\":\"stopped\""));
    assert!(stopped.contains("\"connections_cut\":false"), "{stopped}");
}

#[test]
fn websocket_closes_with_1002_on_an_unmasked_frame_and_1009_when_oversized() {
    let dir = TempDir::new();
    let server = ServerProc::start(dir.path(), &[], &[]);
    let addr = server.addr();

    let mut ws = WsClient::connect(addr, "/api/v1/ws");
    assert_eq!(ws.head.status, 101);
    let mut unmasked = encode_client_frame(0x1, true, MASK, b"hi");
    unmasked[1] &= 0x7F;
    unmasked.drain(2..6);
    ws.send(&unmasked);
    assert_eq!(ws.close_code(), 1002);
    assert!(ws.at_eof());

    let mut ws = WsClient::connect(addr, "/api/v1/ws");
    assert_eq!(ws.head.status, 101);
    // Only the header of a 100 000-byte message: it is refused before its payload.
    let mut header = vec![0x81, 0x80 | 127];
    header.extend_from_slice(&100_000u64.to_be_bytes());
    header.extend_from_slice(&MASK);
    ws.send(&header);
    assert_eq!(ws.close_code(), 1009);
    assert!(ws.at_eof());

    // The server is unharmed: a new client is served.
    let mut ws = WsClient::connect(addr, "/api/v1/ws");
    assert_eq!(ws.head.status, 101);
    start_run(addr, "after-errors");
    assert_eq!(ws.event()["run_id"], "after-errors");
}

/// The keys of the JSON object `text`, in the order they were printed.
fn printed_keys(text: &str) -> Vec<String> {
    let v: Value = serde_json::from_str(text).unwrap();
    let mut keys: Vec<(usize, String)> = v
        .as_object()
        .unwrap()
        .keys()
        .map(|k| (text.find(&format!("\"{k}\":")).unwrap(), k.clone()))
        .collect();
    keys.sort();
    keys.into_iter().map(|(_, k)| k).collect()
}

/// The emitter's metrics, with spacing, key order and number spellings
/// that a JSON tree would not keep.
const AG_METRICS: &str = r#"{"totalDurationMs": 240000, "iterationCount":2,"phaseBreakdown":{"verify":2500,"build":9000.0},"agentMetrics":{"totalTokens":1e3,"totalCostUsd":0.10,"avgIterationMs":120000}}"#;

/// Posts `body`, progress events as text, to `POST /api/v1/events`.
fn post_progress(addr: SocketAddr, body: &str) -> Received {
    request(
        addr,
        "POST",
        "/api/v1/events",
        &[("Content-Type", "application/json")],
        Some(body.as_bytes()),
    )
    .unwrap()
}

#[test]
fn agentgate_ws_sends_its_four_frame_types_with_exactly_their_keys() {
    let dir = TempDir::new();
    let server = ServerProc::start(dir.path(), &[], &[]);
    let addr = server.addr();
    let mut ag = WsClient::connect(addr, "/ws");
    assert_eq!(ag.head.status, 101);
    assert_eq!(
        ag.head.header("Sec-WebSocket-Accept"),
        Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    );

    // A run reported by AgentGate's emitter, with other types in between
    // that /ws leaves out.
    let body = format!(
        r#"[{{"type":"run_started","runId":"ag-1","workOrderId":"wo-7","taskSpec":{{"goal":"g"}}}},
            {{"type":"iteration_started","runId":"ag-1","iteration":1,"maxIterations":2}},
            {{"type":"phase_started","runId":"ag-1","phase":"build"}},
            {{"type":"phase_completed","runId":"ag-1","phase":"build","success":true,"durationMs":9000}},
            {{"type":"gate_checked","runId":"ag-1","gate":"tests","passed":true}},
            {{"type":"phase_started","runId":"ag-1","phase":"verify"}},
            {{"type":"phase_completed","runId":"ag-1","phase":"verify","success":false,"durationMs":2.5}},
            {{"type":"iteration_completed","runId":"ag-1","iteration":1,"success":false}},
            {{"type":"delivery_started","runId":"ag-1"}},
            {{"type":"run_completed","runId":"ag-1","result":"succeeded","iterations":1,"durationMs":240000,"metrics":{AG_METRICS}}}]"#
    );
    let r = post_progress(addr, &body);
    assert_eq!(r.status, 200, "{}", r.text());
    let r = post_json(
        addr,
        "/api/v1/messages",
        &json!({"type": "note", "body": {}, "run_id": "ag-1"}),
    );
    assert_eq!(r.status, 201);
    // Runs reported through our own API: one with a work order that
    // fails, one without that is cancelled, one whose completion is an
    // AgentGate run_completed with result failed and no metrics.
    start_run(addr, "own-1");
    events_of(
        addr,
        "own-1",
        &json!([{"type": "iteration_started", "iteration": 3}]),
    );
    let r = post_json(addr, "/api/v1/runs/own-1/fail", &json!({"error": "boom"}));
    assert_eq!(r.status, 200, "{}", r.text());
    let r = post_json(addr, "/api/v1/runs", &json!({"run_id": "own-2"}));
    assert_eq!(r.status, 201);
    // Measured from its start: the server fills in the duration.
    events_of(
        addr,
        "own-2",
        &json!([{"type": "phase_started", "phase": "p", "timestamp": 100.0},
                {"type": "phase_completed", "phase": "p", "success": true, "timestamp": 101.5}]),
    );
    let r = post_json(addr, "/api/v1/runs/own-2/cancel", &json!({}));
    assert_eq!(r.status, 200, "{}", r.text());
    let r = post_progress(
        addr,
        r#"[{"type":"run_started","runId":"ag-2","workOrderId":"wo-8"},
            {"type":"run_completed","runId":"ag-2","result":"failed"}]"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());

    let expected = [
        json!({"type": "iteration:started", "workOrderId": "wo-7", "runId": "ag-1", "iteration": 1}),
        json!({"type": "phase:completed", "workOrderId": "wo-7", "runId": "ag-1", "phase": "build", "durationMs": 9000}),
        json!({"type": "phase:completed", "workOrderId": "wo-7", "runId": "ag-1", "phase": "verify", "durationMs": 2.5}),
        json!({"type": "iteration:completed", "workOrderId": "wo-7", "runId": "ag-1", "iteration": 1, "success": false}),
        json!({"type": "run:completed", "workOrderId": "wo-7", "runId": "ag-1", "result": "succeeded",
               "metrics": serde_json::from_str::<Value>(AG_METRICS).unwrap()}),
        json!({"type": "iteration:started", "workOrderId": "WO-9", "runId": "own-1", "iteration": 3}),
        json!({"type": "run:completed", "workOrderId": "WO-9", "runId": "own-1", "result": "failed", "metrics": null}),
        json!({"type": "phase:completed", "workOrderId": "own-2", "runId": "own-2", "phase": "p", "durationMs": 1500}),
        json!({"type": "run:completed", "workOrderId": "own-2", "runId": "own-2", "result": "canceled", "metrics": null}),
        json!({"type": "run:completed", "workOrderId": "wo-8", "runId": "ag-2", "result": "failed", "metrics": null}),
    ];
    let frames: Vec<String> = expected.iter().map(|_| ag.text()).collect();
    for (frame, want) in frames.iter().zip(&expected) {
        assert_eq!(
            &serde_json::from_str::<Value>(frame).unwrap(),
            want,
            "{frame}"
        );
        // Exactly these keys, in the broadcaster's order.
        let own: &[&str] = match want["type"].as_str().unwrap() {
            "iteration:started" => &["iteration"],
            "iteration:completed" => &["iteration", "success"],
            "phase:completed" => &["phase", "durationMs"],
            _ => &["result", "metrics"],
        };
        let order: Vec<&str> = ["type", "workOrderId", "runId"]
            .into_iter()
            .chain(own.iter().copied())
            .collect();
        assert_eq!(printed_keys(frame), order, "{frame}");
    }
    // The metrics byte for byte, and durations as JavaScript prints them.
    assert!(
        frames[4].ends_with(&format!(r#","metrics":{AG_METRICS}}}"#)),
        "{}",
        frames[4]
    );
    assert!(
        frames[1].ends_with(r#""durationMs":9000}"#),
        "{}",
        frames[1]
    );

    // Nothing else went out: the next frame is the next qualifying event.
    start_run(addr, "last");
    events_of(
        addr,
        "last",
        &json!({"type": "iteration_started", "iteration": 9}),
    );
    assert_eq!(ag.event()["runId"], "last");

    // Our own stream still carries our own format, now with the metrics.
    let mut ours = WsClient::connect(addr, "/api/v1/ws?run_id=ag-1&after_seq=0");
    let done = loop {
        let text = ours.text();
        if text.contains(r#""type":"run_completed""#) {
            break text;
        }
    };
    assert!(
        done.contains(&format!(r#","metrics":{AG_METRICS}"#)),
        "{done}"
    );
    assert!(serde_json::from_str::<Value>(&done).unwrap()["seq"].is_u64());

    // /ws takes the stream's query and its handshake checks.
    let mut tail = WsClient::connect(addr, "/ws?run_id=ag-1&tail=1");
    assert_eq!(tail.event()["type"], "run:completed");
    let r = request(addr, "GET", "/ws", &[], None).unwrap();
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["error"]["field"], "Upgrade");
    assert_eq!(post_json(addr, "/ws", &json!({})).status, 405);
}

#[test]
fn agentgate_ws_takes_the_api_key_as_api_v1_ws_does() {
    let dir = TempDir::new();
    let server = ServerProc::start(dir.path(), &[], &[("CONDUCTOR_API_KEY", "k3y")]);
    let addr = server.addr();
    for path in ["/ws", "/ws/", "/ws?tail=1", "/api/v1/ws"] {
        let ws = WsClient::connect(addr, path);
        assert_eq!(ws.head.status, 401, "{path}");
        for key in [("Authorization", "Bearer k3y"), ("X-API-Key", "k3y")] {
            let ws = WsClient::connect_with(addr, path, &[key]);
            assert_eq!(ws.head.status, 101, "{path} {key:?}");
        }
    }
    assert_eq!(get(addr, "/metrics").status, 200);
}

#[test]
fn run_metrics_show_in_the_detail_and_survive_a_crash_from_snapshot_and_journal() {
    let dir = TempDir::new();
    let args = ["--snapshot-bytes", "1"];
    let mut server = ServerProc::start(dir.path(), &args, &[]);
    let addr = server.addr();
    let finish = |addr: SocketAddr, id: &str, metrics: &str| {
        let body = format!(
            r#"[{{"type":"run_started","runId":"{id}"}},
                {{"type":"run_completed","runId":"{id}","result":"succeeded","metrics":{metrics}}}]"#
        );
        post_progress(addr, &body)
    };
    // Oversized: 400 naming the field, and nothing of the batch is kept.
    let big = format!(r#"{{"pad":"{}"}}"#, "x".repeat(4096));
    let r = finish(addr, "big", &big);
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["error"]["field"], "events[1].metrics");
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("the limit is 4096"),
        "{}",
        r.text()
    );
    assert_eq!(get_json(addr, "/api/v1/runs/big").status, 404);

    // The first is covered by a snapshot, the second only by the journal.
    assert_eq!(finish(addr, "snap", AG_METRICS).status, 200);
    server.wait_for_stderr(EVENT_DEADLINE, |l| l.contains("run snapshot written"));
    let late = r#"{"b": [1.0, "\u00e9"], "a": {}}"#;
    assert_eq!(finish(addr, "tail", late).status, 200);
    let shown = |addr: SocketAddr, id: &str, metrics: &str| {
        let r = get_json(addr, &format!("/api/v1/runs/{id}"));
        assert_eq!(r.status, 200);
        let text = r.text();
        assert!(text.contains(&format!(r#""metrics":{metrics}"#)), "{text}");
        assert_eq!(
            r.json()["metrics"],
            serde_json::from_str::<Value>(metrics).unwrap()
        );
        let list = get_json(addr, "/api/v1/runs?status=completed").text();
        assert!(list.contains(&format!(r#""metrics":{metrics}"#)), "{list}");
    };
    shown(addr, "snap", AG_METRICS);
    shown(addr, "tail", late);
    server.kill();

    let server = ServerProc::start(dir.path(), &args, &[]);
    let addr = server.addr();
    shown(addr, "snap", AG_METRICS);
    shown(addr, "tail", late);
    // A run ended through our own API has none.
    start_run(addr, "plain");
    let r = post_json(addr, "/api/v1/runs/plain/complete", &json!({}));
    assert_eq!(r.status, 200);
    assert!(r.text().ends_with(r#","metrics":null}"#), "{}", r.text());
    assert_eq!(
        get_json(addr, "/api/v1/runs/plain").json()["metrics"],
        Value::Null
    );
}

#[test]
fn metrics_answer_while_many_streams_are_open() {
    let dir = TempDir::new();
    let server = ServerProc::start(dir.path(), &[], &[]);
    let addr = server.addr();
    let streams: Vec<SseClient> = (0..50)
        .map(|_| SseClient::connect(addr, "/api/v1/events", &[]))
        .collect();
    assert!(streams.iter().all(|s| s.head.status == 200));
    let asked = Instant::now();
    let text = get(addr, "/metrics").text();
    println!(
        "metrics_with_50_streams_ms {:.3}",
        asked.elapsed().as_secs_f64() * 1e3
    );
    assert!(text.contains("conductor_event_subscribers{transport=\"sse\"} 50"));
    let page = get(addr, "/");
    assert_eq!(page.status, 200);
    assert!(page.text().contains("EventSource"));
}

fn hub() -> (Arc<Hub>, Registry, TempDir) {
    let dir = TempDir::new();
    let registry = Registry::new();
    let log = Logger::new(Level::Error, LogFormat::Json);
    let hub = Arc::new(Hub::open(dir.path(), &registry, log).unwrap());
    (hub, registry, dir)
}

#[test]
fn hub_keeps_order_under_concurrent_publishers_and_cuts_off_a_stuck_subscriber() {
    let (hub, registry, _dir) = hub();
    let mut stuck = hub.subscribe(Filter::all(), Start::Live, Transport::Sse);
    let mut reader = hub.subscribe(Filter::all(), Start::Live, Transport::WebSocket);
    // Four threads publish 1000 events in all, fewer than a queue holds, so
    // the reader may take them afterwards whatever the scheduling.
    let per_thread = 250;
    let publishers: Vec<_> = (0..4)
        .map(|t| {
            let hub = hub.clone();
            std::thread::spawn(move || {
                for i in 0..per_thread {
                    hub.publish(
                        NewEvent::new("phase_started", 0.0)
                            .run(&format!("run-{t}"), None, None)
                            .field("i", json!(i)),
                    );
                }
            })
        })
        .collect();
    for p in publishers {
        p.join().unwrap();
    }
    let mut got = Vec::new();
    while let Next::Event(e) = reader.next(Duration::ZERO) {
        got.push(e);
    }
    assert_eq!(got.len(), 4 * per_thread);
    assert!(got.windows(2).all(|w| w[1].seq == w[0].seq + 1));
    for t in 0..4 {
        let mine: Vec<u64> = got
            .iter()
            .filter(|e| e.run_id.as_deref() == Some(&format!("run-{t}")))
            .map(|e| {
                serde_json::from_str::<Value>(&e.json).unwrap()["i"]
                    .as_u64()
                    .unwrap()
            })
            .collect();
        assert_eq!(mine, (0..per_thread as u64).collect::<Vec<_>>());
    }
    // The stuck subscriber overflows with the 1025th event; the reader,
    // which keeps up, gets every one.
    for _ in 0..100 {
        hub.publish(NewEvent::new("phase_started", 0.0).run("run-0", None, None));
        assert!(matches!(reader.next(Duration::ZERO), Next::Event(_)));
    }
    assert_eq!(reader.next(Duration::ZERO), Next::Idle);
    let Next::Lagged(lagged) = stuck.next(Duration::ZERO) else {
        panic!("the stuck subscriber was not cut off");
    };
    assert_eq!(lagged.dropped, QUEUE_CAPACITY as u64 + 1);
    assert_eq!(lagged.last_seq, None);
    assert_eq!(lagged.to_json()["type"], "lagged");
    assert_eq!(stuck.next(Duration::ZERO), Next::Closed);
    let mut text = Vec::new();
    registry.render(&mut text, Format::Text);
    let text = String::from_utf8(text).unwrap();
    assert!(
        text.contains(&format!(
            "conductor_events_dropped_total {}",
            QUEUE_CAPACITY + 1
        )),
        "{text}"
    );
    assert!(text.contains("conductor_events_published_total{type=\"phase_started\"} 1100"));
}

#[test]
fn a_crossed_budget_threshold_is_published_as_budget_alert() {
    let dir = TempDir::new();
    let server = ServerProc::start(dir.path(), &["--daily-budget", "10"], &[]);
    let addr = server.addr();
    let mut sse = SseClient::connect(addr, "/api/v1/events", &[]);
    let spend = post_json(addr, "/api/v1/budget/spend", &json!({"amount": 6}));
    assert_eq!(spend.status, 201, "{}", spend.text());
    let start = Instant::now();
    let alert = loop {
        assert!(start.elapsed() < EVENT_DEADLINE, "no budget_alert");
        let e = sse.next().expect("stream ended early");
        if e.event == "budget_alert" {
            break e.data;
        }
    };
    assert_eq!(alert["threshold"], 50);
    assert_eq!(alert["status"]["daily_limit"], 10.0);
    assert_eq!(alert["status"]["today_spend"], 6.0);
    assert_eq!(
        metric(
            addr,
            "conductor_events_published_total{type=\"budget_alert\"}"
        ),
        1.0
    );
}
