//! Counters that must never go back: after a SIGKILL and a restart, the
//! spend counters and the events published read what they read before.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

/// The series of the counter families a restart must keep, sorted.
fn counters(server: &ServerProc) -> Vec<String> {
    let r = get(server.addr(), "/metrics");
    assert_eq!(r.status, 200);
    let text = String::from_utf8(r.body).expect("UTF-8 scrape");
    let families = [
        "agent_cost_dollars_total{",
        "agent_budget_spend_total ",
        "conductor_events_published_total{",
    ];
    let mut lines: Vec<String> = text
        .lines()
        .filter(|l| families.iter().any(|f| l.starts_with(f)))
        .map(str::to_string)
        .collect();
    lines.sort();
    lines
}

#[track_caller]
fn post_ok(server: &ServerProc, path: &str, body: serde_json::Value) {
    let r = post_json(server.addr(), path, &body);
    assert!(
        (200..300).contains(&r.status),
        "{path}: {} {}",
        r.status,
        String::from_utf8_lossy(&r.body)
    );
}

#[test]
fn spend_and_event_counters_read_the_same_after_a_sigkill() {
    // The second time with a snapshot of the run store after about every
    // record, so that the restart reads the event counts from it.
    for snapshot_bytes in ["0", "1"] {
        let args = [
            "--daily-budget",
            "2",
            "--run-estimate",
            "0.15",
            "--snapshot-bytes",
            snapshot_bytes,
        ];
        sigkill_and_compare(&args);
    }
}

fn sigkill_and_compare(args: &[&str]) {
    let dir = TempDir::new();
    let mut server = ServerProc::start(dir.path(), args, &[]);
    for i in 0..3 {
        let id = format!("r{i}");
        post_ok(&server, "/api/v1/runs", json!({"run_id": id}));
        let events = json!([
            {"type": "phase_started", "phase": "plan"},
            {"type": "tokens", "phase": "plan", "model": "m", "input_tokens": 1000 * (i + 1), "output_tokens": 10},
            {"type": "phase_completed", "phase": "plan", "success": true},
        ]);
        post_ok(&server, &format!("/api/v1/runs/{id}/events"), events);
        let end = match i {
            0 => json!({"cost": 0.4}),
            _ => json!({}),
        };
        post_ok(&server, &format!("/api/v1/runs/{id}/complete"), end);
    }
    // A progress batch: a run started, an event and its end in one record.
    post_ok(
        &server,
        "/api/v1/events",
        json!([
            {"type": "run_started", "run_id": "b"},
            {"type": "gate_checked", "run_id": "b", "gate": "tests", "passed": true},
            {"type": "run_completed", "run_id": "b", "result": "succeeded"},
        ]),
    );
    post_ok(
        &server,
        "/api/v1/budget/spend",
        json!({"amount": 0.75, "phase": "review"}),
    );
    post_ok(
        &server,
        "/api/v1/messages",
        json!({"type": "note", "body": {"n": 1}}),
    );
    // The alert's bus message is appended after the answer: wait for its
    // event, so that the scrape below sees it.
    let before = poll_until(Duration::from_secs(10), || {
        let now = counters(&server);
        now.iter()
            .any(|l| {
                l.starts_with(r#"conductor_events_published_total{type="message_appended"} 2"#)
            })
            .then_some(now)
    });
    for family in [
        r#"agent_cost_dollars_total{phase="review"} 0.75"#,
        r#"conductor_events_published_total{type="budget_alert"} 1"#,
        r#"conductor_events_published_total{type="run_completed"} 4"#,
        r#"conductor_events_published_total{type="gate_checked"} 1"#,
        r#"conductor_events_published_total{type="phase_started"} 3"#,
    ] {
        assert!(
            before.iter().any(|l| l == family),
            "{family} in {before:#?}"
        );
    }
    assert!(
        !before.iter().any(|l| l.contains("type=\"tokens\"")),
        "tokens are not published: {before:#?}"
    );
    server.kill();
    let server = ServerProc::start(dir.path(), args, &[]);
    assert_eq!(counters(&server), before, "{args:?}");
}
