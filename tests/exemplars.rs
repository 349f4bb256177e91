//! Exemplars through the real binary: a run sent with a `traceparent` is
//! the exemplar of the buckets and counter it was counted in, on OpenMetrics
//! scrapes only, and a restart (snapshot and journal tail) rebuilds them.

mod common;

use std::time::Duration;

use common::{poll_until, post_json, post_json_with, request, ServerProc, TempDir};
use serde_json::json;

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0";

fn scrape(server: &ServerProc, accept: Option<&str>) -> String {
    let headers: Vec<(&str, &str)> = accept.map(|a| ("Accept", a)).into_iter().collect();
    let r = request(server.addr(), "GET", "/metrics", &headers, None).unwrap();
    assert_eq!(r.status, 200);
    String::from_utf8(r.body).unwrap()
}

/// The lines of a scrape that carry an exemplar.
fn exemplar_lines(text: &str) -> Vec<String> {
    let lines = text.lines().filter(|l| l.contains(" # {"));
    lines.map(str::to_string).collect()
}

fn trace_of(i: usize) -> String {
    format!("4bf92f3577b34da6a3ce929d0e0e{i:04x}")
}

/// Sends a run: traced when `i` is odd, with one phase of `i` seconds,
/// then completes it (or fails it, every third) as half a second long.
fn send_run(server: &ServerProc, i: usize) {
    let id = format!("run-{i}");
    let traceparent = format!("00-{}-00f067aa0ba902b7-01", trace_of(i));
    let headers: Vec<(&str, &str)> = if i % 2 == 1 {
        vec![("traceparent", traceparent.as_str())]
    } else {
        Vec::new()
    };
    let start = post_json_with(
        server.addr(),
        "/api/v1/runs",
        &headers,
        &json!({"run_id": id}),
    );
    assert_eq!(
        start.status,
        201,
        "{}",
        String::from_utf8_lossy(&start.body)
    );
    // Ended as an emitter ends one, with its own measure of the run.
    let result = if i.is_multiple_of(3) {
        "failed"
    } else {
        "succeeded"
    };
    let events = json!([
        {"type": "phase_started", "phase": "design"},
        {"type": "phase_completed", "phase": "design", "success": true, "duration_ms": i * 1000},
        {"type": "run_completed", "result": result, "durationMs": 500},
    ]);
    let path = format!("/api/v1/runs/{id}/events");
    let sent = post_json(server.addr(), &path, &events);
    assert_eq!(sent.status, 200, "{}", String::from_utf8_lossy(&sent.body));
}

#[test]
fn a_traced_run_is_the_exemplar_of_its_buckets_across_restarts() {
    let dir = TempDir::new();
    let data = dir.join("data");
    // Snapshots after every 2 KiB of journal, so that a restart reads one
    // and the records after it.
    let args = ["--snapshot-bytes", "2KiB", "--daily-budget", "1000"];
    let server = ServerProc::start(&data, &args, &[]);
    for i in 0..40 {
        send_run(&server, i);
    }
    let om = scrape(&server, Some(OPENMETRICS));
    let trace = trace_of(39);
    for line in [
        // Run 39, traced and failed, is the latest in each of its buckets:
        // its phase took 39 s and the run half a second.
        format!("agent_cycles_total{{outcome=\"failed\"}} 14.0 # {{trace_id=\"{trace}\",run_id=\"run-39\"}} 1.0 "),
        format!("agent_phase_duration_seconds_bucket{{phase=\"design\",le=\"60\"}} 40 # {{trace_id=\"{trace}\",run_id=\"run-39\"}} 39.0 "),
        format!("agentgate_phase_duration_seconds_bucket{{phase=\"design\",le=\"60\"}} 40 # {{trace_id=\"{trace}\",run_id=\"run-39\"}} 39.0 "),
        format!("agent_cycle_duration_seconds_bucket{{le=\"1\"}} 40 # {{trace_id=\"{trace}\",run_id=\"run-39\"}} 0.5 "),
        format!("agentgate_run_duration_seconds_bucket{{le=\"1\"}} 40 # {{trace_id=\"{trace}\",run_id=\"run-39\"}} 0.5 "),
        format!("conductor_run_duration_seconds_bucket{{outcome=\"failed\",le=\"1\"}} 14 # {{trace_id=\"{trace}\",run_id=\"run-39\"}} 0.5 "),
        // Run 38, untraced, is the latest completed: its run id alone.
        "agent_cycles_total{outcome=\"completed\"} 26.0 # {run_id=\"run-38\"} 1.0 ".to_string(),
        "conductor_run_duration_seconds_bucket{outcome=\"completed\",le=\"1\"} 26 # {run_id=\"run-38\"} 0.5 ".to_string(),
    ] {
        assert!(om.contains(&line), "{line}\nnot in\n{om}");
    }
    // Text format 0.0.4 has none.
    let text = scrape(&server, None);
    assert!(!text.contains(" # {"), "{text}");
    assert!(text.contains("\nagent_cycle_duration_seconds_bucket{le=\"1\"} 40\n"));
    let before = exemplar_lines(&om);
    assert!(before.len() >= 10, "{before:?}");
    let snapshot = data.join("runs").join("snapshot");
    poll_until(Duration::from_secs(30), || snapshot.is_file().then_some(()));
    drop(server);
    for _ in 0..2 {
        let server = ServerProc::start(&data, &args, &[]);
        assert_eq!(exemplar_lines(&scrape(&server, Some(OPENMETRICS))), before);
    }
}
