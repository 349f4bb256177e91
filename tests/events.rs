//! The run event API through the real binary: every event type, the
//! metrics it moves, the run detail, all-or-nothing batches, and replay.

mod common;

use common::{get, get_json, post_json, ServerProc, TempDir};
use serde_json::{json, Value};

fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no series {series}"))
        .parse()
        .unwrap()
}

fn full_run() -> Value {
    json!([
        {"type": "iteration_started", "iteration": 1, "timestamp": 1000.0},
        {"type": "phase_started", "phase": "design", "iteration": 1, "timestamp": 1000.0},
        {"type": "tokens", "phase": "design", "model": "claude-x", "input_tokens": 1200, "output_tokens": 300},
        {"type": "phase_completed", "phase": "design", "success": true, "timestamp": 1002.5},
        {"type": "phase_started", "phase": "test", "timestamp": 1003.0},
        {"type": "phase_completed", "phase": "test", "success": false, "duration_ms": 40000},
        {"type": "gate_checked", "gate": "lint", "passed": true},
        {"type": "gate_checked", "gate": "unit-tests", "passed": false, "reason": "2 failures"},
        {"type": "iteration_completed", "iteration": 1, "success": false, "timestamp": 1045.0},
        {"type": "delivery_started"},
        {"type": "delivery_completed", "success": true, "pr_url": "https://example.test/pr/7", "ci_status": "green"}
    ])
}

#[test]
fn events_move_metrics_and_show_in_the_run() {
    let dir = TempDir::new();
    let server = ServerProc::start(dir.path(), &[], &[]);
    let addr = server.addr();
    let start = post_json(
        addr,
        "/api/v1/runs",
        &json!({"run_id": "r1", "work_order_id": "wo-9", "correlation_id": "c-1", "strategy": "tdd", "max_iterations": 5}),
    );
    assert_eq!(start.status, 201);
    let r = post_json(addr, "/api/v1/runs/r1/events", &full_run());
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["accepted"], 11);
    let one = post_json(
        addr,
        "/api/v1/runs/r1/events",
        &json!({"type": "phase_started", "phase": "review"}),
    );
    assert_eq!(one.status, 200);

    let run = get_json(addr, "/api/v1/runs/r1").json();
    assert_eq!(run["work_order_id"], "wo-9");
    assert_eq!(run["correlation_id"], "c-1");
    assert_eq!(run["strategy"], "tdd");
    assert_eq!(run["max_iterations"], 5);
    let d = &run["detail"];
    assert_eq!(d["iterations"]["started"], 1);
    assert_eq!(d["iterations"]["completed"], 1);
    assert_eq!(d["current_phase"], "review");
    assert_eq!(d["phases"]["design"]["last_seconds"], 2.5);
    assert_eq!(d["phases"]["test"]["failures"], 1);
    assert_eq!(d["phases"]["test"]["last_seconds"], 40.0);
    assert_eq!(d["gates"][1]["reason"], "2 failures");
    assert_eq!(d["tokens"]["input"], 1200);
    assert_eq!(d["tokens"]["by_model"]["claude-x"]["output"], 300);
    assert_eq!(d["delivery"]["status"], "completed");
    assert_eq!(d["delivery"]["pr_url"], "https://example.test/pr/7");

    assert_eq!(
        post_json(addr, "/api/v1/runs/r1/fail", &json!({"error": "tests"})).status,
        200
    );
    let text = get(addr, "/metrics").text();
    assert_eq!(metric(&text, "agent_runs_started_total"), 1.0);
    assert_eq!(metric(&text, "agent_iterations_total"), 1.0);
    assert_eq!(metric(&text, "agent_iteration_duration_seconds_sum"), 45.0);
    assert_eq!(
        metric(&text, "agent_phase_duration_seconds_sum{phase=\"design\"}"),
        2.5
    );
    assert_eq!(
        metric(
            &text,
            "agent_phase_duration_seconds_bucket{phase=\"test\",le=\"30\"}"
        ),
        0.0
    );
    assert_eq!(
        metric(
            &text,
            "agent_phase_duration_seconds_bucket{phase=\"test\",le=\"60\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(
            &text,
            "agent_phases_total{phase=\"design\",result=\"success\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(
            &text,
            "agent_phases_total{phase=\"test\",result=\"failure\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(
            &text,
            "agent_gate_results_total{gate=\"lint\",result=\"pass\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(
            &text,
            "agent_gate_results_total{gate=\"unit-tests\",result=\"fail\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(
            &text,
            "conductor_tokens_total{phase=\"design\",type=\"input\"}"
        ),
        1200.0
    );
    assert_eq!(
        metric(
            &text,
            "conductor_tokens_total{phase=\"design\",type=\"output\"}"
        ),
        300.0
    );
    assert_eq!(
        metric(&text, "agent_deliveries_total{result=\"success\"}"),
        1.0
    );
    assert_eq!(
        metric(
            &text,
            "conductor_run_duration_seconds_count{outcome=\"failed\"}"
        ),
        1.0
    );
    assert!(!text.contains("r1"), "a run id is never a label");

    let late = post_json(
        addr,
        "/api/v1/runs/r1/events",
        &json!({"type": "delivery_started"}),
    );
    assert_eq!(late.status, 409);
    let unknown = post_json(
        addr,
        "/api/v1/runs/nope/events",
        &json!({"type": "delivery_started"}),
    );
    assert_eq!(unknown.status, 404);
}

#[test]
fn a_bad_event_rejects_the_whole_batch_and_names_it() {
    let dir = TempDir::new();
    let server = ServerProc::start(dir.path(), &[], &[]);
    let addr = server.addr();
    assert_eq!(
        post_json(addr, "/api/v1/runs", &json!({"run_id": "r"})).status,
        201
    );
    let cases = [
        (
            json!([{"type": "iteration_started", "iteration": 1}, {"type": "tokens", "phase": "p", "input_tokens": -3, "output_tokens": 1}]),
            "events[1].input_tokens",
        ),
        (
            json!([{"type": "phase_started", "phase": "a b"}]),
            "events[0].phase",
        ),
        (
            json!([{"type": "gate_checked", "gate": "g", "passed": "yes"}]),
            "events[0].passed",
        ),
        (json!([{"type": "teleport"}]), "events[0].type"),
        (
            json!([{"type": "tokens", "phase": "p", "model": "x".repeat(65), "input_tokens": 1, "output_tokens": 1}]),
            "events[0].model",
        ),
        (
            json!([{"type": "delivery_started", "surprise": true}]),
            "events[0].surprise",
        ),
        (json!("not events"), "body"),
    ];
    for (body, field) in cases {
        let r = post_json(addr, "/api/v1/runs/r/events", &body);
        assert_eq!(r.status, 400, "{body}");
        assert_eq!(r.json()["error"]["field"], field, "{body}");
    }
    let too_many: Vec<Value> = (0..1001)
        .map(|_| json!({"type": "delivery_started"}))
        .collect();
    assert_eq!(
        post_json(addr, "/api/v1/runs/r/events", &Value::Array(too_many)).status,
        400
    );
    let text = get(addr, "/metrics").text();
    assert_eq!(
        metric(&text, "agent_iterations_total"),
        0.0,
        "nothing from a rejected batch"
    );
    assert!(!text.contains("agent_tokens_total{"));
    let run = get_json(addr, "/api/v1/runs/r").json();
    assert_eq!(run["detail"]["iterations"]["started"], 0);
}

#[test]
fn events_and_their_metrics_survive_a_restart() {
    let dir = TempDir::new();
    {
        let mut server = ServerProc::start(dir.path(), &[], &[]);
        let addr = server.addr();
        assert_eq!(
            post_json(addr, "/api/v1/runs", &json!({"run_id": "r"})).status,
            201
        );
        assert_eq!(
            post_json(addr, "/api/v1/runs/r/events", &full_run()).status,
            200
        );
        server.kill();
    }
    let server = ServerProc::start(dir.path(), &[], &[]);
    let addr = server.addr();
    let run = get_json(addr, "/api/v1/runs/r").json();
    assert_eq!(run["status"], "running");
    assert_eq!(run["detail"]["tokens"]["input"], 1200);
    let text = get(addr, "/metrics").text();
    assert_eq!(
        metric(
            &text,
            "conductor_tokens_total{phase=\"design\",type=\"input\"}"
        ),
        1200.0
    );
    assert_eq!(
        metric(&text, "agent_phase_duration_seconds_sum{phase=\"design\"}"),
        2.5
    );
    assert_eq!(
        post_json(addr, "/api/v1/runs/r/complete", &json!({})).status,
        200
    );
}

#[test]
fn openmetrics_is_served_when_asked_for() {
    let dir = TempDir::new();
    let server = ServerProc::start(dir.path(), &[], &[]);
    let om = common::request(
        server.addr(),
        "GET",
        "/metrics",
        &[(
            "Accept",
            "application/openmetrics-text; version=1.0.0, text/plain; q=0.5",
        )],
        None,
    )
    .unwrap();
    assert_eq!(
        om.header("Content-Type"),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    let text = om.text();
    assert!(text.ends_with("# EOF\n"));
    assert!(text.contains("# TYPE agent_runs_started counter\n"));
    assert!(text.contains("\nagent_runs_started_total 0.0\n"));
    assert!(text.contains("# UNIT conductor_uptime_seconds seconds\n"));
    let plain = common::request(
        server.addr(),
        "GET",
        "/metrics?format=text",
        &[("Accept", "application/openmetrics-text")],
        None,
    )
    .unwrap();
    assert_eq!(
        plain.header("Content-Type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let forced = get(server.addr(), "/metrics?format=openmetrics");
    assert!(forced.text().ends_with("# EOF\n"));
    let shouted = get(server.addr(), "/metrics?format=OpenMetrics");
    assert!(shouted.text().ends_with("# EOF\n"));
    let empty = get(server.addr(), "/metrics?format=");
    assert_eq!(
        (empty.status, empty.header("Content-Type")),
        (200, Some("text/plain; version=0.0.4; charset=utf-8"))
    );
    // A format it does not have is refused, naming the ones it has.
    let xml = get(server.addr(), "/metrics?format=xml");
    assert_eq!(xml.status, 400, "{}", xml.text());
    let error: serde_json::Value = serde_json::from_str(&xml.text()).unwrap();
    assert_eq!(
        error["error"]["message"], "format: must be text, prometheus or openmetrics",
        "{error}"
    );
}

#[test]
fn logs_about_a_run_carry_its_ids_and_events_their_iteration_and_phase() {
    let dir = TempDir::new();
    let server = ServerProc::start(dir.path(), &["--log-level", "debug"], &[]);
    let addr = server.addr();
    let body = json!({"run_id": "logged", "correlation_id": "corr-9", "work_order_id": "wo-1"});
    assert_eq!(post_json(addr, "/api/v1/runs", &body).status, 201);
    let events = json!([
        {"type": "iteration_started", "iteration": 4},
        {"type": "phase_started", "phase": "test"},
        {"type": "gate_checked", "gate": "lint", "passed": true}
    ]);
    assert_eq!(
        post_json(addr, "/api/v1/runs/logged/events", &events).status,
        200
    );
    assert_eq!(
        post_json(addr, "/api/v1/runs/logged/complete", &json!({})).status,
        200
    );
    let find = |msg: &str, pred: &dyn Fn(&Value) -> bool| {
        common::poll_until(std::time::Duration::from_secs(10), || {
            server
                .stderr_json()
                .into_iter()
                .find(|l| l["msg"] == msg && pred(l))
        })
    };
    let started = find("run started", &|_| true);
    assert_eq!(started["run_id"], "logged");
    assert_eq!(started["correlation_id"], "corr-9");
    let gate = find("run event", &|l| l["type"] == "gate_checked");
    assert_eq!(gate["level"], "debug");
    assert_eq!(gate["iteration"], 4);
    assert_eq!(gate["phase"], "test");
    assert_eq!(gate["correlation_id"], "corr-9");
    let finished = find("run finished", &|_| true);
    assert_eq!(finished["status"], "completed");
    let request = find("request", &|l| l["path"] == "/api/v1/runs/logged/complete");
    assert_eq!(request["run_id"], "logged");
    assert_eq!(request["correlation_id"], "corr-9");
    assert!(request["request_id"].is_string());
}

#[test]
fn tokens_that_would_price_a_run_past_the_bound_are_refused_so_every_run_can_end() {
    let dir = TempDir::new();
    let server = ServerProc::start(dir.path(), &["--daily-budget", "1000"], &[]);
    let addr = server.addr();
    for id in ["big", "failing", "cancelling"] {
        let r = post_json(addr, "/api/v1/runs", &json!({"run_id": id}));
        assert_eq!(r.status, 201, "{}", r.text());
    }
    // The default price is $15 a million input tokens: 6e13 is $900,000,000,
    // under the $1e9 bound; twice that is over it.
    let tokens = |n: u64| json!({"type": "tokens", "phase": "design", "input_tokens": n, "output_tokens": 0});
    let r = post_json(
        addr,
        "/api/v1/runs/big/events",
        &tokens(100_000_000_000_000),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("input_tokens"), "{}", r.text());
    let r = post_json(addr, "/api/v1/runs/big/events", &tokens(60_000_000_000_000));
    assert_eq!(r.status, 200, "{}", r.text());
    let r = post_json(addr, "/api/v1/runs/big/events", &tokens(60_000_000_000_000));
    assert_eq!(
        r.status,
        400,
        "the bound is on the run's total: {}",
        r.text()
    );
    let run = get_json(addr, "/api/v1/runs/big").json();
    assert_eq!(run["detail"]["tokens"]["input"], 60_000_000_000_000u64);

    // The same bound on AgentGate's progress route, all or nothing.
    let progress = json!([
        {"type": "run_started", "runId": "p1", "workOrderId": "w", "timestamp": "2026-01-01T00:00:00Z"},
        {"type": "tokens", "runId": "p1", "workOrderId": "w", "phase": "build", "input_tokens": 100_000_000_000_000u64, "output_tokens": 0}
    ]);
    let r = post_json(addr, "/api/v1/events", &progress);
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("events[1].input_tokens"), "{}", r.text());
    assert_eq!(get(addr, "/api/v1/runs/p1").status, 404);

    for (id, end) in [
        ("big", "complete"),
        ("failing", "fail"),
        ("cancelling", "cancel"),
    ] {
        let r = post_json(addr, &format!("/api/v1/runs/{id}/{end}"), &json!({}));
        assert_eq!(r.status, 200, "{id}: {}", r.text());
    }
}

#[test]
fn token_counts_saturate_instead_of_wrapping() {
    let dir = TempDir::new();
    let pricing = dir.join("pricing.json");
    std::fs::write(
        &pricing,
        r#"{"models": {"free": {"input": 0, "output": 0}}}"#,
    )
    .unwrap();
    let args = ["--pricing", pricing.to_str().unwrap()];
    let server = ServerProc::start(&dir.join("data"), &args, &[]);
    let addr = server.addr();
    assert_eq!(
        post_json(addr, "/api/v1/runs", &json!({"run_id": "r"})).status,
        201
    );
    let huge = json!({"type": "tokens", "phase": "design", "model": "free",
        "input_tokens": 1u64 << 63, "output_tokens": 1u64 << 63});
    for _ in 0..2 {
        let r = post_json(addr, "/api/v1/runs/r/events", &huge);
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let text = get(addr, "/metrics").text();
    let max = u64::MAX as f64;
    assert_eq!(metric(&text, "agent_tokens_total{phase=\"design\"}"), max);
    assert_eq!(
        metric(
            &text,
            "conductor_tokens_total{phase=\"design\",type=\"input\"}"
        ),
        max
    );
    let run = get_json(addr, "/api/v1/runs/r").json();
    assert_eq!(run["detail"]["tokens"]["input"], u64::MAX);
    assert_eq!(run["detail"]["tokens"]["output"], u64::MAX);
}
