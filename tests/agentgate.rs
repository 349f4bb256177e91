//! An AgentGate-style emitter through the real binary: `ProgressEvent`
//! objects posted to `POST /api/v1/events` (camelCase as the TypeScript
//! emitter builds them) start, fill and finish runs, all or nothing, and
//! what goes out on the stream carries what the emitter knew.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::{get, get_json, post_json, sample, ServerProc, TempDir};
use serde_json::{json, Value};

const DEADLINE: Duration = Duration::from_secs(10);

/// Every event the SSE stream has for `run`, from the start of what the
/// server retains, up to and including one of type `last`.
fn streamed(addr: SocketAddr, run: &str, last: &str) -> Vec<Value> {
    let stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let head =
        format!("GET /api/v1/events?run_id={run}&last_event_id=0 HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    (&stream).write_all(head.as_bytes()).unwrap();
    let mut reader = BufReader::new(stream);
    let started = Instant::now();
    let mut events = Vec::new();
    let mut line = String::new();
    while started.elapsed() < DEADLINE {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) => break,
            Ok(_) => {}
            // The read timeout: poll again until the deadline.
            Err(_) => continue,
        }
        if let Some(data) = line.trim_end().strip_prefix("data: ") {
            let event: Value = serde_json::from_str(data).unwrap();
            let done = event["type"] == last;
            events.push(event);
            if done {
                return events;
            }
        }
    }
    panic!("no {last} for {run} within {DEADLINE:?}; got {events:#?}");
}

/// A whole run as the emitter sends it: two iterations, the second phase
/// of each reported without a start, gates, and a delivery.
fn agentgate_run(run: &str) -> Vec<Value> {
    let t = |s: u32| format!("2026-12-03T10:{:02}:{:02}.000Z", s / 60, s % 60);
    let mut events = vec![json!({
        "type": "run_started", "runId": run, "workOrderId": "wo-9", "correlationId": "corr-9",
        "timestamp": t(0), "metadata": {"source": "agentgate"},
        "taskSpec": {"goal": "fix the build", "strategy": "iterative", "maxIterations": 3},
    })];
    for iteration in 1..=2u32 {
        let base = iteration * 100;
        events.extend([
            json!({"type": "iteration_started", "runId": run, "iteration": iteration,
                   "maxIterations": 3, "feedback": "try again", "timestamp": t(base)}),
            json!({"type": "phase_started", "runId": run, "phase": "build", "iteration": iteration,
                   "timestamp": t(base + 1)}),
            // No duration: the server measures 9 s from the start.
            json!({"type": "phase_completed", "runId": run, "phase": "build", "success": true,
                   "timestamp": t(base + 10)}),
            // No iteration: the run's current one.
            json!({"type": "gate_checked", "runId": run, "gate": "tests", "passed": iteration == 2,
                   "timestamp": t(base + 11)}),
            json!({"type": "phase_completed", "runId": run, "phase": "verify", "success": true,
                   "durationMs": 2500, "iteration": iteration, "timestamp": t(base + 14)}),
            json!({"type": "iteration_completed", "runId": run, "iteration": iteration,
                   "success": iteration == 2, "phaseTimings": {"build": 9000, "verify": 2500},
                   "gateResults": [{"gate": "tests", "passed": iteration == 2}],
                   "timestamp": t(base + 15)}),
        ]);
    }
    events.extend([
        json!({"type": "delivery_completed", "runId": run, "timestamp": t(230),
               "metadata": {"success": true, "prUrl": "https://git.example/pr/9", "ciStatus": "passed"}}),
        json!({"type": "run_completed", "runId": run, "result": "succeeded", "iterations": 2,
               "durationMs": 240000, "metrics": {"totalTokens": 0}, "timestamp": t(240)}),
    ]);
    events
}

#[test]
fn an_emitters_events_forwarded_one_by_one_run_the_whole_lifecycle() {
    let dir = TempDir::new();
    let server = ServerProc::start(dir.path(), &[], &[]);
    let addr = server.addr();
    for event in agentgate_run("ag-1") {
        let r = post_json(addr, "/api/v1/events", &event);
        assert_eq!(r.status, 200, "{event}: {}", r.text());
        assert_eq!(r.json()["accepted"], 1);
    }
    let run = get_json(addr, "/api/v1/runs/ag-1").json();
    assert_eq!(run["status"], "completed");
    assert_eq!(run["work_order_id"], "wo-9");
    assert_eq!(run["correlation_id"], "corr-9");
    assert_eq!(run["goal"], "fix the build");
    assert_eq!(run["max_iterations"], 3);

    let events = streamed(addr, "ag-1", "run_completed");
    let of = |kind: &str| -> Vec<&Value> { events.iter().filter(|e| e["type"] == kind).collect() };
    for e in of("phase_completed").iter().chain(&of("gate_checked")) {
        assert!(e["iteration"].as_u64().is_some(), "{e}");
    }
    let builds: Vec<(u64, f64)> = of("phase_completed")
        .iter()
        .filter(|e| e["phase"] == "build")
        .map(|e| {
            (
                e["iteration"].as_u64().unwrap(),
                e["duration_ms"].as_f64().unwrap(),
            )
        })
        .collect();
    assert_eq!(builds, vec![(1, 9000.0), (2, 9000.0)]);
    let gates: Vec<u64> = of("gate_checked")
        .iter()
        .map(|e| e["iteration"].as_u64().unwrap())
        .collect();
    assert_eq!(gates, vec![1, 2]);
    let first = of("iteration_started")[0];
    assert_eq!(
        (first["max_iterations"].as_u64(), first["feedback"].as_str()),
        (Some(3), Some("try again"))
    );
    assert_eq!(of("iteration_completed")[0]["phase_timings"]["build"], 9000);
    let delivery = of("delivery_completed")[0];
    assert_eq!(delivery["success"], true);
    assert_eq!(delivery["pr_url"], "https://git.example/pr/9");
    let done = of("run_completed")[0];
    assert_eq!(done["result"], "succeeded");
    assert_eq!(done["iterations"], 2);
    assert_eq!(done["duration_ms"], 240_000.0);
    assert!(done["summary"]["cost"].as_f64().is_some(), "{done}");
    assert_eq!(done["summary"]["phases"]["build"]["completed"], 2, "{done}");
    assert_eq!(done["correlation_id"], "corr-9");

    let text = get(addr, "/metrics").text();
    assert_eq!(
        sample(&text, r#"agent_cycles_total{outcome="completed"}"#),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "agent_cycle_duration_seconds_sum"),
        Some(240.0)
    );
    assert_eq!(
        sample(
            &text,
            r#"agent_gate_results_total{gate="tests",result="pass"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            r#"agent_gate_results_total{gate="tests",result="fail"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, r#"agent_phase_duration_seconds_sum{phase="build"}"#),
        Some(18.0)
    );
    assert_eq!(
        sample(&text, r#"agent_deliveries_total{result="success"}"#),
        Some(1.0)
    );
    assert_eq!(sample(&text, "agent_iterations_total"), Some(2.0));
}

#[test]
fn a_whole_run_in_one_snake_case_batch_is_one_step() {
    let dir = TempDir::new();
    let server = ServerProc::start(dir.path(), &[], &[]);
    let addr = server.addr();
    let snake: Vec<Value> = agentgate_run("ag-2")
        .into_iter()
        .map(|e| {
            let text = e.to_string();
            let text = [
                ("runId", "run_id"),
                ("workOrderId", "work_order_id"),
                ("correlationId", "correlation_id"),
                ("taskSpec", "task_spec"),
                ("maxIterations", "max_iterations"),
                ("durationMs", "duration_ms"),
                ("phaseTimings", "phase_timings"),
                ("gateResults", "gate_results"),
                ("prUrl", "pr_url"),
                ("ciStatus", "ci_status"),
            ]
            .iter()
            .fold(text, |t, (camel, snake)| {
                t.replace(&format!("\"{camel}\""), &format!("\"{snake}\""))
            });
            serde_json::from_str(&text).unwrap()
        })
        .collect();
    let n = snake.len();
    let r = post_json(addr, "/api/v1/events", &Value::Array(snake));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["accepted"], n);
    assert_eq!(
        get_json(addr, "/api/v1/runs/ag-2").json()["status"],
        "completed"
    );
    let text = get(addr, "/metrics").text();
    assert_eq!(
        sample(&text, r#"agent_phase_duration_seconds_sum{phase="build"}"#),
        Some(18.0)
    );
}

#[test]
fn a_bad_event_anywhere_in_a_batch_changes_nothing() {
    let dir = TempDir::new();
    let server = ServerProc::start(dir.path(), &[], &[]);
    let addr = server.addr();
    let before = get(addr, "/metrics").text();
    let cases = [
        (
            json!([
                {"type": "run_started", "runId": "x1"},
                {"type": "phase_started", "runId": "x1", "phase": "build"},
                {"type": "phase_completed", "runId": "x1", "phase": "build", "success": true, "colour": "red"},
            ]),
            400,
            "events[2].colour",
        ),
        (
            json!([
                {"type": "run_started", "runId": "x1"},
                {"type": "phase_started", "runId": "nobody", "phase": "build"},
            ]),
            404,
            "",
        ),
        (
            json!([
                {"type": "run_started", "runId": "x1"},
                {"type": "run_canceled", "runId": "x1"},
                {"type": "phase_started", "runId": "x1", "phase": "build"},
            ]),
            409,
            "",
        ),
        (
            json!({"type": "phase_started", "phase": "build"}),
            400,
            "events[0].run_id",
        ),
        (
            json!({"type": "run_started", "runId": "x1", "taskSpec": {"maxIterations": -1}}),
            400,
            "events[0].task_spec.max_iterations",
        ),
    ];
    for (body, status, field) in cases {
        let r = post_json(addr, "/api/v1/events", &body);
        assert_eq!(r.status, status, "{body}: {}", r.text());
        if !field.is_empty() {
            assert_eq!(r.json()["error"]["field"], field, "{body}");
        }
        assert_eq!(get_json(addr, "/api/v1/runs/x1").status, 404, "{body}");
    }
    assert_eq!(get_json(addr, "/api/v1/budget").json()["reserved"], 0.0);
    let after = get(addr, "/metrics").text();
    for series in [
        "agent_runs_started_total",
        "conductor_active_runs",
        "agent_phases_total",
    ] {
        assert_eq!(sample(&after, series), sample(&before, series), "{series}");
    }
    let segment = dir.join("runs").join("0000000001.jsonl");
    let journal = std::fs::read_to_string(segment).expect("the run journal's first segment");
    assert!(journal.is_empty(), "{journal}");
}

#[test]
fn run_started_takes_the_budget_and_is_refused_with_429() {
    let dir = TempDir::new();
    let server = ServerProc::start(dir.path(), &[], &[("AGENT_DAILY_BUDGET", "0.20")]);
    let addr = server.addr();
    let first = post_json(
        addr,
        "/api/v1/events",
        &json!({"type": "run_started", "runId": "b1"}),
    );
    assert_eq!(first.status, 200);
    // The second start is refused, and with it the whole batch.
    let batch = json!([
        {"type": "run_completed", "runId": "b1", "result": "succeeded"},
        {"type": "run_started", "runId": "b2"},
        {"type": "run_started", "runId": "b3"},
    ]);
    let r = post_json(addr, "/api/v1/events", &batch);
    assert_eq!(r.status, 429, "{}", r.text());
    assert!(r.header("Retry-After").is_some());
    let body = r.json();
    assert_eq!(
        (body["triggered"].as_bool(), body["reason"].as_str()),
        (Some(false), Some("budget_exhausted"))
    );
    assert_eq!(
        get_json(addr, "/api/v1/runs/b1").json()["status"],
        "running"
    );
    assert_eq!(get_json(addr, "/api/v1/runs/b2").status, 404);
    assert_eq!(get_json(addr, "/api/v1/budget").json()["reserved"], 0.15);
}

#[test]
fn the_run_route_takes_the_same_fields_and_checks_the_run_id() {
    let dir = TempDir::new();
    let server = ServerProc::start(dir.path(), &[], &[]);
    let addr = server.addr();
    assert_eq!(
        post_json(addr, "/api/v1/runs", &json!({"run_id": "p1"})).status,
        201
    );
    let path = "/api/v1/runs/p1/events";
    // The emitter's envelope, which was refused as "unknown field".
    let camel = json!([{"type": "phase_started", "runId": "p1", "correlationId": "c",
                        "workOrderId": "w", "phase": "plan", "iteration": 1, "metadata": {"a": 1}}]);
    let r = post_json(addr, path, &camel);
    assert_eq!(r.status, 200, "{}", r.text());
    let snake = json!([{"type": "phase_completed", "run_id": "p1", "phase": "plan", "success": true,
                        "duration_ms": 5}]);
    assert_eq!(post_json(addr, path, &snake).status, 200);
    let other = post_json(
        addr,
        path,
        &json!({"type": "phase_started", "runId": "p2", "phase": "x"}),
    );
    assert_eq!(other.status, 400);
    assert_eq!(other.json()["error"]["field"], "events[0].run_id");
    let unknown = post_json(
        addr,
        path,
        &json!({"type": "phase_started", "phase": "x", "colour": 1}),
    );
    assert_eq!(unknown.status, 400);
    assert_eq!(unknown.json()["error"]["field"], "events[0].colour");
    let end = post_json(
        addr,
        path,
        &json!({"type": "run_canceled", "reason": "user asked"}),
    );
    assert_eq!(end.status, 200, "{}", end.text());
    let run = get_json(addr, "/api/v1/runs/p1").json();
    assert_eq!(run["status"], "cancelled");
    assert_eq!(run["error"], "user asked");
}

#[test]
fn a_batch_survives_a_restart_whole() {
    let dir = TempDir::new();
    let events = Value::Array(agentgate_run("ag-3"));
    let text = {
        let server = ServerProc::start(dir.path(), &[], &[]);
        assert_eq!(
            post_json(server.addr(), "/api/v1/events", &events).status,
            200
        );
        get(server.addr(), "/metrics").text()
    };
    let server = ServerProc::start(dir.path(), &[], &[]);
    let again = get(server.addr(), "/metrics").text();
    for series in [
        r#"agent_cycles_total{outcome="completed"}"#,
        "agent_cycle_duration_seconds_sum",
        r#"agent_phase_duration_seconds_sum{phase="build"}"#,
        "agent_iterations_total",
    ] {
        assert_eq!(sample(&again, series), sample(&text, series), "{series}");
    }
    assert_eq!(
        get_json(server.addr(), "/api/v1/runs/ag-3").json()["status"],
        "completed"
    );
}

/// A run's free texts have one limit on every route that takes them.
#[test]
fn a_text_has_the_same_limit_on_every_route() {
    let dir = TempDir::new();
    let server = ServerProc::start(dir.path(), &[], &[]);
    let addr = server.addr();
    let at_limit = "g".repeat(2048);
    let over = "g".repeat(2049);
    let ours = |id: &str, goal: &str| {
        post_json(addr, "/api/v1/runs", &json!({"run_id": id, "goal": goal}))
    };
    let theirs = |id: &str, goal: &str| {
        let event = json!({"type": "run_started", "runId": id, "taskSpec": {"goal": goal}});
        post_json(addr, "/api/v1/events", &event)
    };
    assert_eq!(ours("a1", &at_limit).status, 201);
    assert_eq!(theirs("b1", &at_limit).status, 200);
    for (route, r) in [("runs", ours("a2", &over)), ("events", theirs("b2", &over))] {
        assert_eq!(r.status, 400, "{route}: {}", r.text());
        assert!(r.text().contains("goal"), "{route}: {}", r.text());
        assert!(
            r.text().contains("at most 2048 bytes"),
            "{route}: {}",
            r.text()
        );
    }
    for id in ["a2", "b2"] {
        assert_eq!(get(addr, &format!("/api/v1/runs/{id}")).status, 404);
    }
    let r = post_json(addr, "/api/v1/runs/a1/fail", &json!({"error": over}));
    assert_eq!(r.status, 400, "{}", r.text());
}
