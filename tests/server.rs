//! End-to-end tests of the server binary: the metrics endpoint, health and status, runs, the
//! message bus, request counting, errors, body limits, auth, request ids, logs, durability
//! across a SIGKILL, torn journal tails and the command line.
//!
//! Each test starts its own server on `127.0.0.1:0` with its own data dir, so they run in
//! parallel without sharing state.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{
    get, get_json, get_json_with, parse_response, poll_until, post_json, post_json_with, raw,
    request, run_cli, Client, Received, ServerProc, TempDir,
};
use serde_json::{json, Value};

const TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
const VERSION: &str = env!("CARGO_PKG_VERSION");
const POLL: Duration = Duration::from_secs(5);
const CLI_TIMEOUT: Duration = Duration::from_secs(10);

/// Every family the issue lists, with its TYPE.
const FAMILIES: [(&str, &str); 13] = [
    ("conductor_uptime_seconds", "gauge"),
    ("conductor_active_runs", "gauge"),
    ("agent_cycles_total", "counter"),
    ("conductor_messagebus_appends_total", "counter"),
    ("conductor_api_requests_total", "counter"),
    ("conductor_build_info", "gauge"),
    ("process_cpu_seconds_total", "counter"),
    ("process_resident_memory_bytes", "gauge"),
    ("process_virtual_memory_bytes", "gauge"),
    ("process_open_fds", "gauge"),
    ("process_max_fds", "gauge"),
    ("process_start_time_seconds", "gauge"),
    ("process_threads", "gauge"),
];

// ---------------------------------------------------------------------------------------------
// Helpers

fn start(extra_args: &[&str], envs: &[(&str, &str)]) -> (TempDir, ServerProc) {
    let dir = TempDir::new();
    let server = ServerProc::start(&dir.join("data"), extra_args, envs);
    (dir, server)
}

#[track_caller]
fn scrape(server: &ServerProc) -> String {
    let r = get(server.addr(), "/metrics");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    r.text()
}

/// The value of the sample whose series is exactly `series` (`name` or `name{labels}`).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (s, v) = l.rsplit_once(' ')?;
        if s == series {
            v.parse().ok()
        } else {
            None
        }
    })
}

#[track_caller]
fn value(text: &str, series: &str) -> f64 {
    sample(text, series).unwrap_or_else(|| panic!("no sample {series} in:\n{text}"))
}

/// Every sample of family `name`, as (series, value).
fn family(text: &str, name: &str) -> Vec<(String, f64)> {
    let labelled = format!("{name}{{");
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (s, v) = l.rsplit_once(' ')?;
            let ours = s == name || s.starts_with(&labelled);
            ours.then(|| (s.to_string(), v.parse().expect("numeric sample value")))
        })
        .collect()
}

/// Asserts a JSON error answer and returns its `error` object.
#[track_caller]
fn assert_error(r: &Received, status: u16, code: &str) -> Value {
    assert_eq!(
        r.status,
        status,
        "body: {}",
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(r.header("content-type"), Some("application/json"));
    let v = r.json();
    let e = &v["error"];
    assert_eq!(e["code"], code, "{v}");
    let message = e["message"].as_str().unwrap_or_default();
    assert!(!message.is_empty(), "error without a message: {v}");
    e.clone()
}

/// Asserts a 400 that names `field` both in `field` and in the message.
#[track_caller]
fn assert_bad_field(r: &Received, field: &str) {
    let e = assert_error(r, 400, "BAD_REQUEST");
    assert_eq!(e["field"], field, "{e}");
    let message = e["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(field),
        "message does not name {field}: {e}"
    );
}

#[track_caller]
fn post_raw(server: &ServerProc, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Received {
    let mut all = vec![("Content-Type", "application/json")];
    all.extend_from_slice(headers);
    request(server.addr(), "POST", path, &all, Some(body))
        .unwrap_or_else(|e| panic!("POST {path}: {e}"))
}

#[track_caller]
fn start_run(server: &ServerProc, body: Value) -> Value {
    let r = post_json(server.addr(), "/api/v1/runs", &body);
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    r.json()
}

#[track_caller]
fn finish(server: &ServerProc, id: &str, action: &str, body: Value) -> Received {
    post_json(server.addr(), &format!("/api/v1/runs/{id}/{action}"), &body)
}

#[track_caller]
fn append(server: &ServerProc, body: Value) -> String {
    let r = post_json(server.addr(), "/api/v1/messages", &body);
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    assert!(v["timestamp"].is_string(), "{v}");
    v["msg_id"].as_str().expect("msg_id").to_string()
}

#[track_caller]
fn read_messages(server: &ServerProc, query: &str) -> Vec<Value> {
    let r = get_json(server.addr(), &format!("/api/v1/messages{query}"));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    r.json()["messages"].as_array().expect("messages").clone()
}

fn ids(messages: &[Value]) -> Vec<String> {
    messages
        .iter()
        .map(|m| m["msg_id"].as_str().expect("msg_id").to_string())
        .collect()
}

fn is_hex16(s: &str) -> bool {
    s.len() == 16 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn now_unix() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64()
}

/// Checks that every line of a journal is JSON and that the file ends with a newline.
#[track_caller]
fn assert_clean_journal(path: &std::path::Path) -> usize {
    let data = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    if data.is_empty() {
        return 0;
    }
    assert_eq!(
        data.last(),
        Some(&b'\n'),
        "{} has a torn tail",
        path.display()
    );
    let lines: Vec<&[u8]> = data[..data.len() - 1].split(|&b| b == b'\n').collect();
    for line in &lines {
        assert!(
            serde_json::from_slice::<Value>(line).is_ok(),
            "{}: not JSON: {:?}",
            path.display(),
            String::from_utf8_lossy(line)
        );
    }
    lines.len()
}

// ---------------------------------------------------------------------------------------------
// /metrics

#[test]
fn metrics_exposes_every_family_with_the_text_content_type() {
    let (_dir, server) = start(&[], &[]);
    assert_eq!(get(server.addr(), "/healthz").status, 200);
    let r = get(server.addr(), "/metrics");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some(TEXT));
    let text = r.text();
    for (name, kind) in FAMILIES {
        let type_line = format!("# TYPE {name} {kind}");
        assert!(
            text.lines().any(|l| l == type_line),
            "missing {type_line:?} in:\n{text}"
        );
        assert!(!family(&text, name).is_empty(), "no sample of {name}");
    }
    assert_eq!(
        value(
            &text,
            &format!("conductor_build_info{{version=\"{VERSION}\"}}")
        ),
        1.0
    );
    assert_eq!(family(&text, "conductor_build_info").len(), 1);
    assert_eq!(
        value(
            &text,
            "conductor_api_requests_total{method=\"GET\",status=\"200\"}"
        ),
        1.0
    );
    for zero in [
        "conductor_active_runs",
        r#"agent_cycles_total{outcome="completed"}"#,
        r#"agent_cycles_total{outcome="failed"}"#,
        r#"agent_cycles_total{outcome="cancelled"}"#,
        "conductor_messagebus_appends_total",
    ] {
        assert_eq!(value(&text, zero), 0.0, "{zero}");
    }
    assert!(value(&text, "process_resident_memory_bytes") > 0.0);
    assert!(value(&text, "process_virtual_memory_bytes") > 0.0);
    assert!(value(&text, "process_threads") >= 1.0);
    assert!(value(&text, "process_cpu_seconds_total") >= 0.0);
    let open = value(&text, "process_open_fds");
    assert!(open >= 3.0 && value(&text, "process_max_fds") >= open);
    let started = value(&text, "process_start_time_seconds");
    assert!(
        (started - now_unix()).abs() < 600.0,
        "start time {started} is not close to now"
    );

    let head = request(server.addr(), "HEAD", "/metrics", &[], None).expect("HEAD /metrics");
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-type"), Some(TEXT));
    assert!(head.body.is_empty());
}

#[test]
fn metrics_refuses_other_methods_with_405_and_allow() {
    let (_dir, server) = start(&[], &[]);
    for method in ["POST", "PUT", "DELETE"] {
        let r = request(server.addr(), method, "/metrics", &[], Some(b"")).expect(method);
        assert_error(&r, 405, "METHOD_NOT_ALLOWED");
        assert_eq!(r.header("allow"), Some("GET, HEAD"), "{method}");
    }
    let text = scrape(&server);
    for method in ["POST", "PUT", "DELETE"] {
        let series = format!("conductor_api_requests_total{{method=\"{method}\",status=\"405\"}}");
        assert_eq!(value(&text, &series), 1.0, "{series}");
    }
}

#[test]
fn uptime_grows_between_scrapes() {
    let (_dir, server) = start(&[], &[]);
    let first = value(&scrape(&server), "conductor_uptime_seconds");
    assert!(first >= 0.0);
    let later = poll_until(POLL, || {
        let t = value(&scrape(&server), "conductor_uptime_seconds");
        (t > first).then_some(t)
    });
    assert!(later > first);
}

// ---------------------------------------------------------------------------------------------
// Health and status

#[test]
fn healthz_and_status_report_the_state() {
    let (_dir, server) = start(&[], &[]);
    let r = get(server.addr(), "/healthz");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.json(), json!({"status": "ok"}));

    let started = start_run(&server, json!({"run_id": "st-1", "agent": "planner"}));
    start_run(&server, json!({"run_id": "st-2"}));
    start_run(&server, json!({"run_id": "st-3"}));
    assert_eq!(finish(&server, "st-2", "complete", json!({})).status, 200);
    assert_eq!(finish(&server, "st-3", "cancel", json!({})).status, 200);
    append(&server, json!({"type": "note", "body": "hello"}));

    let r = get_json(server.addr(), "/api/v1/status");
    assert_eq!(r.status, 200);
    let s = r.json();
    assert_eq!(s["version"], VERSION);
    assert!(
        s["uptime_seconds"].as_f64().is_some_and(|u| u >= 0.0),
        "{s}"
    );
    assert_eq!(s["active_runs_count"], 1, "{s}");
    assert_eq!(s["completed_runs"], 1, "{s}");
    assert_eq!(s["failed_runs"], 0, "{s}");
    assert_eq!(s["cancelled_runs"], 1, "{s}");
    assert_eq!(s["messagebus_appends"], 1, "{s}");
    assert_eq!(
        s["runs"],
        json!([{"run_id": "st-1", "agent": "planner", "started_at": started["started_at"]}]),
        "{s}"
    );
    let r = request(server.addr(), "POST", "/api/v1/status", &[], Some(b"")).expect("POST");
    assert_error(&r, 405, "METHOD_NOT_ALLOWED");
    assert_eq!(r.header("allow"), Some("GET"));
}

// ---------------------------------------------------------------------------------------------
// Runs

#[test]
fn runs_move_through_their_lifecycle_and_counters_follow() {
    let (_dir, server) = start(&[], &[]);
    let addr = server.addr();
    let created = start_run(
        &server,
        json!({"run_id": "run-a", "agent": "coder", "goal": "fix it"}),
    );
    assert_eq!(created["run_id"], "run-a");
    assert_eq!(created["status"], "running");
    assert!(created["started_at"]
        .as_str()
        .is_some_and(|t| t.ends_with('Z')));

    let made = start_run(&server, json!({}));
    let made_id = made["run_id"].as_str().expect("made run_id").to_string();
    assert!(!made_id.is_empty());
    let made2 = start_run(&server, json!({"agent": "x"}));
    assert_ne!(made2["run_id"], made["run_id"]);
    let empty_body = request(addr, "POST", "/api/v1/runs", &[], None).expect("POST");
    assert_eq!(empty_body.status, 201, "an empty body is an empty object");
    let empty_id = empty_body.json()["run_id"]
        .as_str()
        .expect("id")
        .to_string();

    let dup = post_json(addr, "/api/v1/runs", &json!({"run_id": "run-a"}));
    assert_error(&dup, 409, "CONFLICT");

    let text = scrape(&server);
    assert_eq!(value(&text, "conductor_active_runs"), 4.0);

    let done = finish(&server, "run-a", "complete", json!({}));
    assert_eq!(done.status, 200, "{}", String::from_utf8_lossy(&done.body));
    let done = done.json();
    assert_eq!(done["status"], "completed");
    assert_eq!(done["agent"], "coder");
    assert_eq!(done["goal"], "fix it");
    assert!(done["ended_at"].is_string());

    let failed = finish(&server, &made_id, "fail", json!({"error": "timed out"}));
    assert_eq!(failed.status, 200);
    assert_eq!(failed.json()["status"], "failed");
    assert_eq!(failed.json()["error"], "timed out");
    let no_body = request(
        addr,
        "POST",
        &format!("/api/v1/runs/{empty_id}/fail"),
        &[],
        None,
    )
    .expect("POST fail");
    assert_eq!(no_body.status, 200, "fail without a body");

    let cancelled = finish(
        &server,
        made2["run_id"].as_str().unwrap(),
        "cancel",
        json!({}),
    );
    assert_eq!(cancelled.status, 200);
    assert_eq!(cancelled.json()["status"], "cancelled");

    for action in ["complete", "fail", "cancel"] {
        let again = finish(&server, "run-a", action, json!({}));
        assert_error(&again, 409, "CONFLICT");
        let unknown = finish(&server, "no-such-run", action, json!({}));
        assert_error(&unknown, 404, "NOT_FOUND");
    }

    let text = scrape(&server);
    assert_eq!(value(&text, "conductor_active_runs"), 0.0);
    assert_eq!(
        value(&text, r#"agent_cycles_total{outcome="completed"}"#),
        1.0
    );
    assert_eq!(value(&text, r#"agent_cycles_total{outcome="failed"}"#), 2.0);
    assert_eq!(
        value(&text, r#"agent_cycles_total{outcome="cancelled"}"#),
        1.0
    );

    let r = request(addr, "GET", "/api/v1/runs/run-a/complete", &[], None).expect("GET");
    assert_error(&r, 405, "METHOD_NOT_ALLOWED");
    assert_eq!(r.header("allow"), Some("POST"));
}

#[test]
fn runs_can_be_listed_by_status_and_looked_up() {
    let (_dir, server) = start(&[], &[]);
    let addr = server.addr();
    for id in ["l-1", "l-2", "l-3", "l-4"] {
        start_run(&server, json!({"run_id": id, "agent": "ag"}));
    }
    assert_eq!(finish(&server, "l-2", "complete", json!({})).status, 200);
    assert_eq!(finish(&server, "l-3", "fail", json!({})).status, 200);
    assert_eq!(finish(&server, "l-4", "cancel", json!({})).status, 200);

    let list = |query: &str| -> Vec<String> {
        let r = get_json(addr, &format!("/api/v1/runs{query}"));
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let mut ids: Vec<String> = r.json()["runs"]
            .as_array()
            .expect("runs")
            .iter()
            .map(|r| r["run_id"].as_str().expect("run_id").to_string())
            .collect();
        ids.sort();
        ids
    };
    assert_eq!(list(""), ["l-1", "l-2", "l-3", "l-4"]);
    assert_eq!(list("?status=running"), ["l-1"]);
    assert_eq!(list("?status=completed"), ["l-2"]);
    assert_eq!(list("?status=failed"), ["l-3"]);
    assert_eq!(list("?status=cancelled"), ["l-4"]);
    assert_bad_field(&get_json(addr, "/api/v1/runs?status=bogus"), "status");

    let r = get_json(addr, "/api/v1/runs/l-2");
    assert_eq!(r.status, 200);
    let run = r.json();
    assert_eq!(run["run_id"], "l-2");
    assert_eq!(run["status"], "completed");
    assert_eq!(run["agent"], "ag");
    assert_error(&get_json(addr, "/api/v1/runs/nope"), 404, "NOT_FOUND");
    let r = request(addr, "DELETE", "/api/v1/runs/l-1", &[], None).expect("DELETE");
    assert_error(&r, 405, "METHOD_NOT_ALLOWED");
}

// ---------------------------------------------------------------------------------------------
// Message bus

#[test]
fn messages_are_read_back_in_append_order_and_counted() {
    let (_dir, server) = start(&[], &[]);
    let bodies = [
        json!("text"),
        json!({"nested": [1, 2, {"k": null}]}),
        json!(42),
        json!(null),
        json!([true, false]),
    ];
    let mut sent = Vec::new();
    for (i, body) in bodies.iter().enumerate() {
        let run_id = (i % 2 == 0).then(|| format!("run-{i}"));
        let id = append(
            &server,
            json!({"type": format!("t{i}"), "body": body, "run_id": run_id}),
        );
        sent.push((id, body.clone(), run_id));
    }
    let got = read_messages(&server, "");
    assert_eq!(got.len(), sent.len());
    let mut previous = String::new();
    for (m, (id, body, run_id)) in got.iter().zip(&sent) {
        assert_eq!(&m["msg_id"], id);
        assert_eq!(&m["body"], body);
        assert_eq!(m["run_id"], json!(run_id));
        assert!(m["type"].as_str().is_some_and(|t| t.starts_with('t')));
        assert!(m["timestamp"].is_string());
        assert!(*id > previous, "ids must increase: {previous} then {id}");
        previous = id.clone();
    }
    let after_second = read_messages(&server, &format!("?after={}", sent[1].0));
    assert_eq!(ids(&after_second), ids(&got[2..]));
    assert!(read_messages(&server, &format!("?after={}", sent[4].0)).is_empty());

    let text = scrape(&server);
    assert_eq!(value(&text, "conductor_messagebus_appends_total"), 5.0);
    let status = get_json(server.addr(), "/api/v1/status").json();
    assert_eq!(status["messagebus_appends"], 5);
}

#[test]
fn message_reads_page_with_after_and_limit() {
    let (_dir, server) = start(&[], &[]);
    let addr = server.addr();
    let mut client = Client::connect(addr).expect("connect");
    let mut sent = Vec::new();
    for i in 0..105 {
        let body = serde_json::to_vec(&json!({"type": "page", "body": i})).unwrap();
        let r = client
            .send(
                "POST",
                "/api/v1/messages",
                &[("Content-Type", "application/json")],
                Some(&body),
            )
            .expect("append");
        assert_eq!(r.status, 201);
        sent.push(r.json()["msg_id"].as_str().unwrap().to_string());
    }
    let default_page = read_messages(&server, "");
    assert_eq!(ids(&default_page), sent[..100], "default limit is 100");
    assert_eq!(ids(&read_messages(&server, "?limit=1000")), sent);
    assert_eq!(ids(&read_messages(&server, "?limit=1")), sent[..1]);

    let mut paged = Vec::new();
    let mut query = "?limit=40".to_string();
    loop {
        let page = read_messages(&server, &query);
        assert!(page.len() <= 40);
        if page.is_empty() {
            break;
        }
        paged.extend(ids(&page));
        query = format!("?after={}&limit=40", paged.last().unwrap());
    }
    assert_eq!(paged, sent);

    for bad in ["0", "1001", "-1", "abc", ""] {
        let r = get_json(addr, &format!("/api/v1/messages?limit={bad}"));
        assert_bad_field(&r, "limit");
    }
    for unknown in ["MSG-000000099999", "nonsense", "MSG-", "MSG-000000000000"] {
        let r = get_json(addr, &format!("/api/v1/messages?after={unknown}"));
        assert_error(&r, 404, "NOT_FOUND");
    }
    let r = request(addr, "PUT", "/api/v1/messages", &[], Some(b"{}")).expect("PUT");
    assert_error(&r, 405, "METHOD_NOT_ALLOWED");
    assert_eq!(r.header("allow"), Some("GET, POST"));
}

#[test]
fn message_bodies_over_64_kib_are_refused() {
    let (_dir, server) = start(&[], &[]);
    let addr = server.addr();
    // A JSON string's encoding is its characters plus two quotes.
    let fits = "x".repeat(64 * 1024 - 2);
    let r = post_json(
        addr,
        "/api/v1/messages",
        &json!({"type": "big", "body": fits}),
    );
    assert_eq!(r.status, 201, "exactly 64 KiB encoded is allowed");
    let over = "x".repeat(64 * 1024 - 1);
    let r = post_json(
        addr,
        "/api/v1/messages",
        &json!({"type": "big", "body": over}),
    );
    assert_error(&r, 413, "PAYLOAD_TOO_LARGE");
    let r = post_json(
        addr,
        "/api/v1/messages",
        &json!({"type": "big", "body": {"list": vec![1234567; 20_000]}}),
    );
    assert_error(&r, 413, "PAYLOAD_TOO_LARGE");
    assert_eq!(read_messages(&server, "").len(), 1);
    let text = scrape(&server);
    assert_eq!(value(&text, "conductor_messagebus_appends_total"), 1.0);
}

// ---------------------------------------------------------------------------------------------
// Errors

#[test]
fn bad_input_gets_a_json_error_naming_the_field() {
    let (_dir, server) = start(&[], &[]);
    let addr = server.addr();
    start_run(&server, json!({"run_id": "e-1"}));

    assert_bad_field(&post_raw(&server, "/api/v1/runs", &[], b"{"), "body");
    assert_bad_field(&post_raw(&server, "/api/v1/runs", &[], b"[1]"), "body");
    assert_bad_field(&post_raw(&server, "/api/v1/runs", &[], b"\"s\""), "body");
    let runs = "/api/v1/runs";
    assert_bad_field(&post_json(addr, runs, &json!({"agent": 3})), "agent");
    assert_bad_field(&post_json(addr, runs, &json!({"goal": ["g"]})), "goal");
    assert_bad_field(&post_json(addr, runs, &json!({"run_id": 7})), "run_id");
    assert_bad_field(&post_json(addr, runs, &json!({"agnet": "x"})), "agnet");
    assert_bad_field(
        &post_json(addr, runs, &json!({"run_id": "has space"})),
        "run_id",
    );
    let long = "r".repeat(129);
    assert_bad_field(&post_json(addr, runs, &json!({"run_id": long})), "run_id");

    let fail = "/api/v1/runs/e-1/fail";
    assert_bad_field(&post_json(addr, fail, &json!({"error": 5})), "error");
    assert_bad_field(&post_json(addr, fail, &json!({"reason": "x"})), "reason");
    let complete = "/api/v1/runs/e-1/complete";
    assert_bad_field(&post_json(addr, complete, &json!({"x": 1})), "x");
    assert_bad_field(&post_raw(&server, complete, &[], b"nope"), "body");
    let run = get_json(addr, "/api/v1/runs/e-1").json();
    assert_eq!(run["status"], "running", "rejected finishes change nothing");

    let msgs = "/api/v1/messages";
    assert_bad_field(&post_json(addr, msgs, &json!({"body": 1})), "type");
    assert_bad_field(
        &post_json(addr, msgs, &json!({"type": 5, "body": 1})),
        "type",
    );
    assert_bad_field(
        &post_json(addr, msgs, &json!({"type": "", "body": 1})),
        "type",
    );
    assert_bad_field(&post_json(addr, msgs, &json!({"type": "t"})), "body");
    let bad_run = json!({"type": "t", "body": 1, "run_id": false});
    assert_bad_field(&post_json(addr, msgs, &bad_run), "run_id");
    let extra = json!({"type": "t", "body": 1, "colour": "red"});
    assert_bad_field(&post_json(addr, msgs, &extra), "colour");
    assert_bad_field(&post_raw(&server, msgs, &[], b"{\"type\":"), "body");
    assert!(read_messages(&server, "").is_empty());

    let r = get_json(addr, "/no/such/route");
    assert_error(&r, 404, "NOT_FOUND");
    let r = get_json(addr, "/api/v1/nothing");
    assert_error(&r, 404, "NOT_FOUND");
}

// ---------------------------------------------------------------------------------------------
// Request counting

#[test]
fn every_request_is_counted_once() {
    let (_dir, server) = start(&["--max-body", "1024"], &[("CONDUCTOR_API_KEY", "secret")]);
    let addr = server.addr();
    let key = [("X-API-Key", "secret")];
    let big = format!("{{\"type\":\"t\",\"body\":\"{}\"}}", "x".repeat(2048));
    let mut k = 0;
    let mut expect = |r: Received, status: u16| {
        assert_eq!(
            r.status,
            status,
            "request {k}: {}",
            String::from_utf8_lossy(&r.body)
        );
        k += 1;
    };
    expect(get(addr, "/metrics"), 200);
    expect(request(addr, "HEAD", "/metrics", &[], None).unwrap(), 200);
    expect(get(addr, "/healthz"), 200);
    expect(get(addr, "/nope"), 404);
    expect(get_json(addr, "/api/v1/status"), 401);
    expect(
        get_json_with(addr, "/api/v1/status", &[("X-API-Key", "wrong")]),
        401,
    );
    expect(get_json_with(addr, "/api/v1/status", &key), 200);
    expect(
        request(addr, "POST", "/metrics", &[], Some(b"")).unwrap(),
        405,
    );
    expect(request(addr, "BREW", "/healthz", &[], None).unwrap(), 501);
    expect(
        post_raw(&server, "/api/v1/messages", &key, big.as_bytes()),
        413,
    );
    expect(post_raw(&server, "/api/v1/runs", &key, b"{"), 400);
    expect(
        post_json_with(addr, "/api/v1/runs", &key, &json!({"run_id": "c"})),
        201,
    );
    expect(
        post_json_with(addr, "/api/v1/runs/c/complete", &key, &json!({})),
        200,
    );
    expect(
        post_json_with(addr, "/api/v1/runs/c/cancel", &key, &json!({})),
        409,
    );
    expect(
        post_json_with(addr, "/api/v1/runs/zz/cancel", &key, &json!({})),
        404,
    );
    let mut client = Client::connect(addr).expect("connect");
    for (path, status) in [("/healthz", 200), ("/api/v1/messages", 401), ("/x", 404)] {
        expect(client.send("GET", path, &[], None).unwrap(), status);
    }
    let k = k as f64;
    assert_eq!(k, 18.0);

    let text = scrape(&server);
    let counted = family(&text, "conductor_api_requests_total");
    let sum: f64 = counted.iter().map(|(_, v)| v).sum();
    assert_eq!(
        sum, k,
        "the scrape itself is not in its own output: {counted:?}"
    );
    let series = |m: &str, s: &str| {
        value(
            &text,
            &format!("conductor_api_requests_total{{method=\"{m}\",status=\"{s}\"}}"),
        )
    };
    assert_eq!(series("OTHER", "501"), 1.0);
    assert_eq!(series("POST", "405"), 1.0);
    assert_eq!(series("GET", "401"), 3.0);
    assert_eq!(series("POST", "413"), 1.0);
    assert_eq!(series("POST", "400"), 1.0);
    assert_eq!(series("POST", "409"), 1.0);
    assert_eq!(series("HEAD", "200"), 1.0);
    assert_eq!(series("GET", "404"), 2.0);
    assert_eq!(series("GET", "200"), 4.0);

    let text = scrape(&server);
    let sum: f64 = family(&text, "conductor_api_requests_total")
        .iter()
        .map(|(_, v)| v)
        .sum();
    assert_eq!(sum, k + 1.0, "the previous scrape is counted by the next");
}

// ---------------------------------------------------------------------------------------------
// Body limits

#[test]
fn bodies_over_max_body_are_refused_with_413() {
    let (_dir, server) = start(&["--max-body", "1024"], &[]);
    let body = |n: usize| format!("{{\"type\":\"t\",\"body\":\"{}\"}}", "x".repeat(n));

    // The answer names the limit and the setting that raises it.
    let names_the_limit = |e: Value| {
        let message = e["message"].as_str().unwrap_or_default().to_string();
        assert!(
            message.contains("1024 bytes") && message.contains("--max-body"),
            "{message}"
        );
    };
    let r = post_raw(&server, "/api/v1/messages", &[], body(2048).as_bytes());
    names_the_limit(assert_error(&r, 413, "PAYLOAD_TOO_LARGE"));
    let r = post_raw(&server, "/api/v1/runs", &[], &[b' '; 2048]);
    names_the_limit(assert_error(&r, 413, "PAYLOAD_TOO_LARGE"));
    let r = post_raw(&server, "/api/v1/messages", &[], body(900).as_bytes());
    assert_eq!(r.status, 201, "a body under the limit is taken");

    let te = [("Transfer-Encoding", "chunked")];
    let growing = chunked(body(2048).as_bytes(), 512);
    let r = post_raw(&server, "/api/v1/messages", &te, &growing);
    names_the_limit(assert_error(&r, 413, "PAYLOAD_TOO_LARGE"));
    let small = chunked(body(100).as_bytes(), 37);
    let r = post_raw(&server, "/api/v1/messages", &te, &small);
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));

    assert_eq!(read_messages(&server, "").len(), 2);
}

/// Encodes `payload` as a chunked body of `size`-byte chunks.
fn chunked(payload: &[u8], size: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for chunk in payload.chunks(size) {
        out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

const CHUNKED_POST: &str = "POST /api/v1/messages HTTP/1.1\r\nHost: x\r\n\
    Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";

#[test]
fn a_refused_chunked_body_does_not_leak_into_the_next_request() {
    let (_dir, server) = start(&["--max-body", "1024"], &[]);
    let payload = format!("{{\"type\":\"t\",\"body\":\"{}\"}}", "x".repeat(2048));
    let mut client = Client::connect(server.addr()).expect("connect");
    let headers = [
        ("Content-Type", "application/json"),
        ("Transfer-Encoding", "chunked"),
    ];
    let r = client
        .send(
            "POST",
            "/api/v1/messages",
            &headers,
            Some(&chunked(payload.as_bytes(), 512)),
        )
        .expect("chunked POST");
    assert_error(&r, 413, "PAYLOAD_TOO_LARGE");
    if !client.server_will_close() {
        let r = client
            .send("GET", "/healthz", &[], None)
            .expect("next request");
        assert_eq!(
            r.status, 200,
            "the next request on the connection was garbled"
        );
    }
}

#[test]

fn a_request_hidden_in_a_refused_chunked_body_is_not_served() {
    let (_dir, server) = start(&["--max-body", "1024"], &[]);
    // 1024 bytes of body, then a chunk whose first byte crosses the limit and whose rest is a
    // request: a proxy in front sees one POST, the server must not see a second request.
    let hidden = b"xGET /healthz HTTP/1.1\r\nHost: x\r\nX-Request-ID: smuggled\r\n\r\n";
    let mut bytes = CHUNKED_POST.as_bytes().to_vec();
    for _ in 0..2 {
        bytes.extend_from_slice(b"200\r\n");
        bytes.extend_from_slice(&[b'a'; 512]);
        bytes.extend_from_slice(b"\r\n");
    }
    bytes.extend_from_slice(format!("{:x}\r\n", hidden.len()).as_bytes());
    bytes.extend_from_slice(hidden);
    bytes.extend_from_slice(b"\r\n0\r\n\r\n");
    let out = raw(server.addr(), &bytes).expect("raw request");
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(
        !text.contains("smuggled"),
        "the hidden request was served:\n{text}"
    );
    let logged = server.stderr_lines();
    assert!(!logged.iter().any(|l| l.contains("smuggled")), "{logged:?}");
}

#[test]

fn an_unread_chunked_body_does_not_break_the_next_request() {
    let (_dir, server) = start(&[], &[("CONDUCTOR_API_KEY", "secret")]);
    // /metrics refuses POST after the body was read; /api/v1/runs refuses
    // the missing key on the head, without reading the body, and closes.
    for (path, status) in [("/metrics", 405), ("/api/v1/runs", 401)] {
        let mut client = Client::connect(server.addr()).expect("connect");
        let headers = [("Transfer-Encoding", "chunked")];
        let r = client
            .send("POST", path, &headers, Some(&chunked(b"{}", 2)))
            .expect("chunked POST");
        assert_eq!(r.status, status, "{path}");
        assert_eq!(client.server_will_close(), status == 401, "{path}");
        if !client.server_will_close() {
            let r = client
                .send("GET", "/healthz", &[], None)
                .expect("next request");
            assert_eq!(r.status, 200, "{path}: the next request was garbled");
        }
    }
}

/// A 2^64-1 Content-Length is refused from the head, before any body is read: 413 with the JSON
/// error, and the server goes on.
#[test]
fn absurd_content_length_is_refused_with_413() {
    let (_dir, mut server) = start(&["--max-body", "1024"], &[]);
    let bytes = format!(
        "POST /api/v1/messages HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
         Content-Length: 18446744073709551615\r\n\r\n{{\"type\":\"t\",\"body\":1}}",
        server.addr()
    );
    let mut client = Client::connect(server.addr()).expect("connect");
    client
        .write_raw(bytes.as_bytes())
        .expect("send the request");
    let r = client.read_response(false).expect("an answer to the head");
    assert_eq!(r.status, 413, "{}", r.text());
    assert_eq!(
        r.json()["error"]["code"],
        "PAYLOAD_TOO_LARGE",
        "{}",
        r.text()
    );
    assert!(server.is_running(), "the server died");
    let r = get(server.addr(), "/healthz");
    assert_eq!(r.json(), json!({"status": "ok"}));
    assert!(!scrape(&server).is_empty());
}

// ---------------------------------------------------------------------------------------------
// Auth

#[track_caller]
fn check_auth(server: &ServerProc, key: &str) {
    let addr = server.addr();
    for path in ["/api/v1/status", "/api/v1/runs", "/api/v1/messages"] {
        let r = get_json(addr, path);
        assert_error(&r, 401, "UNAUTHORIZED");
        assert_eq!(
            r.header("www-authenticate"),
            Some("Bearer realm=\"conductor\""),
            "{path}"
        );
        let bearer = format!("Bearer {key}");
        let ok = get_json_with(addr, path, &[("Authorization", bearer.as_str())]);
        assert_eq!(ok.status, 200, "{path} with Bearer");
        let ok = get_json_with(addr, path, &[("X-API-Key", key)]);
        assert_eq!(ok.status, 200, "{path} with X-API-Key");
        let wrong = format!("{key}x");
        for header in [
            ("Authorization", format!("Bearer {wrong}")),
            ("Authorization", format!("Basic {key}")),
            ("Authorization", key.to_string()),
            ("X-API-Key", wrong.clone()),
            ("X-API-Key", String::new()),
        ] {
            let r = get_json_with(addr, path, &[(header.0, header.1.as_str())]);
            assert_error(&r, 401, "UNAUTHORIZED");
        }
    }
    let r = post_json(addr, "/api/v1/runs", &json!({"run_id": "denied"}));
    assert_error(&r, 401, "UNAUTHORIZED");
    let r = post_json_with(
        addr,
        "/api/v1/runs",
        &[("X-API-Key", key)],
        &json!({"run_id": "allowed"}),
    );
    assert_eq!(r.status, 201);
    let r = get_json_with(addr, "/api/v1/runs/denied", &[("X-API-Key", key)]);
    assert_error(&r, 404, "NOT_FOUND");
    assert_eq!(get(addr, "/healthz").status, 200, "/healthz stays open");
    assert_eq!(get(addr, "/metrics").status, 200, "/metrics stays open");
}

#[test]
fn api_key_from_the_environment_guards_the_api() {
    let (_dir, server) = start(&[], &[("CONDUCTOR_API_KEY", "secret")]);
    check_auth(&server, "secret");
}

#[test]
fn api_key_from_a_file_guards_the_api() {
    let keys = TempDir::new();
    let file = keys.join("key");
    std::fs::write(&file, "from-file-key\n").expect("write key file");
    let file = file.to_str().expect("UTF-8 path");
    let (_dir, server) = start(&["--api-key-file", file], &[]);
    check_auth(&server, "from-file-key");
}

// ---------------------------------------------------------------------------------------------
// Request ids

#[test]
fn request_ids_are_kept_when_valid_and_replaced_otherwise() {
    let (_dir, server) = start(&[], &[]);
    let addr = server.addr();
    let id_for = |id: &str| {
        let r = request(addr, "GET", "/healthz", &[("X-Request-ID", id)], None).expect("GET");
        assert_eq!(r.status, 200);
        let echoed = r.header_all("x-request-id");
        assert_eq!(echoed.len(), 1, "{echoed:?}");
        echoed[0].to_string()
    };
    let max = "a".repeat(64);
    for kept in ["abc", "A-z_0.9:x", "7", max.as_str()] {
        assert_eq!(id_for(kept), kept);
    }
    let over = "a".repeat(65);
    for replaced in [
        over.as_str(),
        "has space",
        "\"quoted\"",
        "semi;colon",
        "a/b",
        "abc%0d%0a",
    ] {
        let got = id_for(replaced);
        assert!(is_hex16(&got), "{replaced:?} became {got:?}");
    }

    let plain = get(addr, "/nope");
    let a = plain.header("x-request-id").expect("id on an error answer");
    let b = get(addr, "/nope");
    let b = b.header("x-request-id").expect("id");
    assert!(is_hex16(a) && is_hex16(b) && a != b, "{a} {b}");
}

#[test]
fn hostile_request_ids_never_reach_the_response_headers() {
    let (_dir, server) = start(&[], &[]);
    let addr = server.addr();
    let cases: [&[u8]; 4] = [
        // Non-ASCII bytes.
        b"X-Request-ID: caf\xc3\xa9\r\n",
        // A bare CR, which does not end the header line.
        b"X-Request-ID: abc\rX-Evil: 1\r\n",
        // An obsolete line fold.
        b"X-Request-ID: abc\r\n X-Evil: 1\r\n",
        // A second header the client hopes to see echoed.
        b"X-Request-ID: abc\r\nX-Evil: 1\r\n",
    ];
    for case in cases {
        let mut bytes = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n".to_vec();
        bytes.extend_from_slice(case);
        bytes.extend_from_slice(b"\r\n");
        let out = raw(addr, &bytes).expect("raw request");
        let shown = String::from_utf8_lossy(case);
        if out.is_empty() {
            eprintln!("{shown:?}: connection closed without an answer");
            continue;
        }
        let r = parse_response(&out, false).expect("a well-formed response");
        assert!(r.header("x-evil").is_none(), "{shown:?}: {:?}", r.headers);
        for (name, value) in &r.headers {
            assert!(
                value
                    .bytes()
                    .all(|b| (0x20..0x7f).contains(&b) || b == b'\t'),
                "{shown:?}: header {name} has a raw control or non-ASCII byte: {value:?}"
            );
        }
        let id = r.header("x-request-id").expect("an id");
        assert!(id == "abc" || is_hex16(id), "{shown:?} gave id {id:?}");
        // The front guard refuses malformed heads (non-ASCII, bare CR,
        // obsolete folding) with a JSON 400; clean ones reach the handler.
        assert!(
            r.status == 200 || r.status == 400,
            "{shown:?}: {}",
            r.status
        );
        if r.status == 400 {
            assert_eq!(r.json()["error"]["code"], "BAD_REQUEST", "{shown:?}");
        }
    }
    assert_eq!(get(addr, "/healthz").status, 200);
}

// ---------------------------------------------------------------------------------------------
// Logs

#[test]
fn each_request_logs_one_json_line() {
    let (_dir, server) = start(&[], &[]);
    let addr = server.addr();
    let sent = [
        ("GET", "/healthz", "log-a", 200),
        ("GET", "/missing", "log-b", 404),
        ("POST", "/metrics", "log-c", 405),
        ("HEAD", "/metrics", "log-d", 200),
    ];
    for (method, path, id, status) in sent {
        let r = request(addr, method, path, &[("X-Request-ID", id)], None).expect(method);
        assert_eq!(r.status, status);
    }
    for (method, path, id, status) in sent {
        let needle = format!("\"request_id\":\"{id}\"");
        server.wait_for_stderr(POLL, |l| l.contains(&needle));
        let lines: Vec<Value> = server
            .stderr_json()
            .into_iter()
            .filter(|v| v["request_id"] == id)
            .collect();
        assert_eq!(lines.len(), 1, "{id}: {lines:?}");
        let line = &lines[0];
        assert_eq!(line["msg"], "request");
        assert_eq!(line["level"], "info");
        assert_eq!(line["method"], method);
        assert_eq!(line["path"], path);
        assert_eq!(line["status"], status);
        assert!(
            line["ts"].as_str().is_some_and(|t| t.ends_with('Z')),
            "{line}"
        );
        assert!(line["bytes"].as_u64().is_some(), "{line}");
        assert!(
            line["duration_ms"].as_f64().is_some_and(|d| d >= 0.0),
            "{line}"
        );
    }
    let r = get(addr, "/healthz?probe=1");
    let id = r.header("x-request-id").expect("id").to_string();
    let line = server.wait_for_stderr(POLL, |l| l.contains(&id));
    let line: Value = serde_json::from_str(&line).expect("JSON");
    assert_eq!(line["path"], "/healthz", "the query is not logged as path");
    assert_eq!(line["bytes"], r.body.len());
}

// ---------------------------------------------------------------------------------------------
// Durability

#[test]
fn state_survives_sigkill_and_restart() {
    let dir = TempDir::new();
    let data = dir.join("data");
    let mut first = ServerProc::start(&data, &[], &[]);
    start_run(
        &first,
        json!({"run_id": "d-active", "agent": "a1", "goal": "g1"}),
    );
    for id in ["d-done", "d-failed", "d-cancelled"] {
        start_run(&first, json!({"run_id": id}));
    }
    assert_eq!(finish(&first, "d-done", "complete", json!({})).status, 200);
    let r = finish(&first, "d-failed", "fail", json!({"error": "boom"}));
    assert_eq!(r.status, 200);
    assert_eq!(
        finish(&first, "d-cancelled", "cancel", json!({})).status,
        200
    );
    let m1 = append(
        &first,
        json!({"type": "a", "body": {"n": 1}, "run_id": "d-active"}),
    );
    let m2 = append(&first, json!({"type": "b", "body": "two"}));
    let m3 = append(&first, json!({"type": "c", "body": [3]}));
    let before = read_messages(&first, "");
    first.kill();
    assert!(!first.is_running());

    let second = ServerProc::start(&data, &[], &[]);
    let addr = second.addr();
    let run = |id: &str| get_json(addr, &format!("/api/v1/runs/{id}")).json();
    let active = run("d-active");
    assert_eq!(active["status"], "running");
    assert_eq!(active["agent"], "a1");
    assert_eq!(active["goal"], "g1");
    assert_eq!(run("d-done")["status"], "completed");
    assert_eq!(run("d-failed")["status"], "failed");
    assert_eq!(run("d-failed")["error"], "boom");
    assert_eq!(run("d-cancelled")["status"], "cancelled");

    let text = scrape(&second);
    assert_eq!(value(&text, "conductor_active_runs"), 1.0);
    assert_eq!(
        value(&text, r#"agent_cycles_total{outcome="completed"}"#),
        1.0
    );
    assert_eq!(value(&text, r#"agent_cycles_total{outcome="failed"}"#), 1.0);
    assert_eq!(
        value(&text, r#"agent_cycles_total{outcome="cancelled"}"#),
        1.0
    );
    assert_eq!(value(&text, "conductor_messagebus_appends_total"), 3.0);
    let status = get_json(addr, "/api/v1/status").json();
    assert_eq!(status["active_runs_count"], 1);
    assert_eq!(status["messagebus_appends"], 3);
    assert_eq!(status["runs"][0]["run_id"], "d-active");

    let after = read_messages(&second, "");
    assert_eq!(after, before, "messages read the same after the restart");
    assert_eq!(ids(&after), [m1.clone(), m2.clone(), m3.clone()]);
    assert_eq!(
        ids(&read_messages(&second, &format!("?after={m1}"))),
        [m2, m3.clone()]
    );

    let done = finish(&second, "d-active", "complete", json!({}));
    assert_eq!(done.status, 200);
    assert_eq!(done.json()["status"], "completed");
    let dup = post_json(addr, "/api/v1/runs", &json!({"run_id": "d-done"}));
    assert_error(&dup, 409, "CONFLICT");
    let m4 = append(&second, json!({"type": "d", "body": 4}));
    assert!(
        m4 > m3,
        "new ids continue after the replayed ones: {m3} then {m4}"
    );
    let text = scrape(&second);
    assert_eq!(value(&text, "conductor_active_runs"), 0.0);
    assert_eq!(
        value(&text, r#"agent_cycles_total{outcome="completed"}"#),
        2.0
    );
    assert_eq!(value(&text, "conductor_messagebus_appends_total"), 4.0);
    // The bus's first segment: its header, then the four messages.
    let segment = data.join("messages").join("0000000001.jsonl");
    assert_eq!(assert_clean_journal(&segment), 5);
    let runs = data.join("runs").join("0000000001.jsonl");
    assert!(assert_clean_journal(&runs) > 0);
}

#[test]
fn a_torn_journal_tail_is_cut_on_start() {
    let dir = TempDir::new();
    let data = dir.join("data");
    let mut first = ServerProc::start(&data, &[], &[]);
    let m1 = append(&first, json!({"type": "ok", "body": 1}));
    let m2 = append(&first, json!({"type": "ok", "body": 2}));
    first.kill();

    let journal = data.join("messages").join("0000000001.jsonl");
    let fragment = b"{\"seq\":3,\"type\":\"torn\",\"bo";
    let mut bytes = std::fs::read(&journal).expect("read journal");
    assert_eq!(bytes.last(), Some(&b'\n'));
    let clean_len = bytes.len();
    bytes.extend_from_slice(fragment);
    std::fs::write(&journal, &bytes).expect("write torn tail");

    let second = ServerProc::start(&data, &[], &[]);
    let got = read_messages(&second, "");
    assert_eq!(ids(&got), [m1, m2.clone()]);
    let on_disk = std::fs::read(&journal).expect("read journal");
    assert_eq!(on_disk.len(), clean_len, "the fragment is cut off");
    assert_eq!(on_disk.last(), Some(&b'\n'));

    let m3 = append(&second, json!({"type": "after", "body": 3}));
    assert!(m3 > m2);
    // The header, then the three messages.
    assert_eq!(assert_clean_journal(&journal), 4);
    let last = read_messages(&second, &format!("?after={m2}"));
    assert_eq!(last.len(), 1);
    assert_eq!(last[0]["type"], "after");
    let text = scrape(&second);
    assert_eq!(value(&text, "conductor_messagebus_appends_total"), 3.0);
}

/// Past retention, old segments go from disk and old messages from memory, but the appends
/// counter and the ids go on from every append ever made, across restarts.
#[test]
fn retention_drops_old_segments_while_the_appends_counter_stays_exact() {
    let dir = TempDir::new();
    let data = dir.join("data");
    let keep = ["--retain-messages", "40"];
    let mut first = ServerProc::start(&data, &keep, &[]);
    for i in 1..=200 {
        append(&first, json!({"type": "r", "body": i}));
    }
    let text = scrape(&first);
    assert_eq!(value(&text, "conductor_messagebus_appends_total"), 200.0);
    first.kill();

    let second = ServerProc::start(&data, &keep, &[]);
    let text = scrape(&second);
    assert_eq!(value(&text, "conductor_messagebus_appends_total"), 200.0);
    let kept = read_messages(&second, "?limit=1000");
    let want: Vec<String> = (161..=200).map(|n| format!("MSG-{n:012}")).collect();
    assert_eq!(ids(&kept), want, "the newest 40, in order");
    assert_eq!(kept[0]["body"], 161);
    // Five messages to a segment (40 / 8): what is on disk is what is kept, and one segment.
    let on_disk: usize = std::fs::read_dir(data.join("messages"))
        .expect("the segments")
        .map(|e| assert_clean_journal(&e.expect("entry").path()))
        .sum();
    assert!(
        (41..=40 + 10 + 2).contains(&on_disk),
        "{on_disk} lines on disk"
    );
    assert_eq!(
        append(&second, json!({"type": "r", "body": 201})),
        "MSG-000000000201"
    );
    assert_eq!(
        value(&scrape(&second), "conductor_messagebus_appends_total"),
        201.0
    );
}

/// `GET /api/v1/runs` pages: `limit` (100 by default, at most 1000), `after` a run id and
/// `status`, in start order, each run once, with `next_after` naming the next page.
#[test]
fn the_run_listing_pages_in_start_order() {
    let (_dir, server) = start(&["--daily-budget", "1000"], &[]);
    let addr = server.addr();
    let mut started = Vec::new();
    for i in 0..250 {
        let id = format!("page-{i:03}");
        start_run(&server, json!({ "run_id": id }));
        if i % 5 == 0 {
            assert_eq!(finish(&server, &id, "complete", json!({})).status, 200);
        }
        started.push(id);
    }
    let page = |query: &str| {
        let r = get_json(addr, &format!("/api/v1/runs{query}"));
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        r.json()
    };
    let ids = |v: &Value| -> Vec<String> {
        v["runs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["run_id"].as_str().unwrap().to_string())
            .collect()
    };
    let first = page("");
    assert_eq!(ids(&first), started[..100]);
    assert_eq!(first["next_after"], "page-099");
    let mut seen = Vec::new();
    let mut query = "?limit=70".to_string();
    loop {
        let p = page(&query);
        seen.extend(ids(&p));
        match p["next_after"].as_str() {
            Some(after) => query = format!("?limit=70&after={after}"),
            None => break,
        }
    }
    assert_eq!(seen, started, "every run once, in start order");
    let completed = page("?status=completed&limit=1000");
    let want: Vec<String> = started.iter().step_by(5).cloned().collect();
    assert_eq!(ids(&completed), want);
    assert!(completed["next_after"].is_null());
    let running = page("?status=running&after=page-247");
    assert_eq!(ids(&running), ["page-248", "page-249"]);
    assert_bad_field(&get_json(addr, "/api/v1/runs?limit=1001"), "limit");
    assert_bad_field(&get_json(addr, "/api/v1/runs?limit=0"), "limit");
    assert_error(&get_json(addr, "/api/v1/runs?after=nope"), 404, "NOT_FOUND");
}

// ---------------------------------------------------------------------------------------------
// Command line

#[test]
fn help_and_version_exit_zero() {
    // The program's help lists the commands; serve's own lists its options.
    let out = run_cli(&["--help"], &[], None, CLI_TIMEOUT);
    assert!(out.status.success(), "{out:?}");
    assert!(out.stdout.contains("Usage"), "{}", out.stdout);
    assert!(out.stdout.contains("\n  serve "), "{}", out.stdout);
    let out = run_cli(&["serve", "--help"], &[], None, CLI_TIMEOUT);
    assert!(out.status.success(), "{out:?}");
    assert!(out.stdout.contains("--api-key-file"), "{}", out.stdout);
    let out = run_cli(&["--version"], &[], None, CLI_TIMEOUT);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        out.stdout.trim_end(),
        format!("conductor-metrics {VERSION}")
    );
}

#[test]
fn bad_flags_exit_2_with_one_line() {
    for args in [
        &["--bogus"][..],
        &["serve", "--workers", "0"],
        &["--max-body", "lots"],
        &["status", "--addr", "x"],
        &["stray"],
    ] {
        let out = run_cli(args, &[], None, CLI_TIMEOUT);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        let err = out.stderr.trim_end();
        assert!(!err.is_empty() && !err.contains('\n'), "{args:?}: {err:?}");
        assert!(out.stdout.is_empty(), "{args:?}: {out:?}");
    }
}

#[test]
fn status_command_prints_a_summary() {
    let (_dir, server) = start(&[], &[("CONDUCTOR_API_KEY", "k3y")]);
    let key = [("X-API-Key", "k3y")];
    let r = post_json_with(
        server.addr(),
        "/api/v1/runs",
        &key,
        &json!({"run_id": "cli-run-7", "agent": "cli-agent"}),
    );
    assert_eq!(r.status, 201);
    let url = server.url("");
    let out = run_cli(
        &["status", "--url", &url],
        &[("CONDUCTOR_API_KEY", "k3y")],
        None,
        CLI_TIMEOUT,
    );
    assert!(out.status.success(), "{out:?}");
    assert!(out.stdout.contains("cli-run-7"), "{}", out.stdout);
    assert!(out.stdout.contains("cli-agent"), "{}", out.stdout);
    assert!(out.stdout.contains(VERSION), "{}", out.stdout);

    let out = run_cli(&["status", "--url", &url], &[], None, CLI_TIMEOUT);
    assert_eq!(out.status.code(), Some(1), "without the key: {out:?}");
    assert!(!out.stderr.is_empty());
}
