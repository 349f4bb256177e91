//! The research agent's contract through the real binary: its budget,
//! trigger and status routes, its `budget` table, and its `agent_*` metric
//! names, visible from the first scrape.

mod common;

use std::time::Duration;

use common::{get, get_json, post_json, run_cli, sample, ServerProc, TempDir};
use serde_json::{json, Value};

const CLI_TIMEOUT: Duration = Duration::from_secs(20);

/// The names the agent's dashboard and verification script query, with
/// their TYPE.
const AGENT_FAMILIES: [(&str, &str); 7] = [
    ("agent_cycles_total", "counter"),
    ("agent_cycle_duration_seconds", "histogram"),
    ("agent_phase_duration_seconds", "histogram"),
    ("agent_gate_results_total", "counter"),
    ("agent_tokens_total", "counter"),
    ("agent_budget_spend_total", "counter"),
    ("agent_budget_remaining_dollars", "gauge"),
];

/// Names this server once served and serves no more.
const RETIRED: [&str; 6] = [
    "conductor_cancelled_runs_total",
    "conductor_phase_duration_seconds",
    "conductor_gate_results_total",
    "conductor_budget_spend_dollars_total",
    "conductor_budget_remaining_dollars",
    "conductor_cost_dollars_total",
];

#[test]
fn every_agent_family_shows_from_the_first_scrape() {
    let dir = TempDir::new();
    let server = ServerProc::start(dir.path(), &[], &[]);
    let text = get(server.addr(), "/metrics").text();
    for (name, kind) in AGENT_FAMILIES {
        let type_line = format!("# TYPE {name} {kind}");
        assert!(
            text.lines().any(|l| l == type_line),
            "{type_line} in\n{text}"
        );
        assert!(
            text.lines()
                .any(|l| l.starts_with(&format!("# HELP {name} "))),
            "HELP of {name}"
        );
    }
    for outcome in ["completed", "failed", "cancelled"] {
        let series = format!("agent_cycles_total{{outcome=\"{outcome}\"}}");
        assert_eq!(sample(&text, &series), Some(0.0), "{series} in\n{text}");
    }
    assert_eq!(sample(&text, "agent_budget_spend_total"), Some(0.0));
    assert_eq!(sample(&text, "agent_budget_remaining_dollars"), Some(5.0));
    for old in RETIRED {
        assert!(!text.contains(old), "{old} is still served");
    }
}

#[test]
fn the_agent_budget_is_the_budget_and_carries_its_reset() {
    let dir = TempDir::new();
    let server = ServerProc::start(dir.path(), &["--daily-budget", "2"], &[]);
    let agent = get_json(server.addr(), "/api/v1/agent/budget");
    assert_eq!(agent.status, 200);
    let ours = get_json(server.addr(), "/api/v1/budget").json();
    assert_eq!(agent.json(), ours);
    let b = agent.json();
    for key in [
        "date",
        "daily_limit",
        "today_spend",
        "remaining",
        "cycles_affordable",
        "reset_at",
        "reset_unix",
    ] {
        assert!(!b[key].is_null(), "{key} in {b}");
    }
    let reset = b["reset_unix"].as_f64().unwrap();
    assert_eq!(reset % 86_400.0, 0.0, "UTC midnight: {b}");
    assert_eq!(b["cycles_affordable"], 13);
    // Nothing spent yet: no rate, and the budget lasts to the reset; the
    // estimate is the research agent's $0.15 until real costs are known.
    assert_eq!(b["spend_rate_dollars_per_hour"], 0.0);
    assert_eq!(b["exhausts_at"], Value::Null);
    assert_eq!(b["run_estimate"], 0.15);
    assert_eq!(b["run_estimate_mode"], "auto");
    let post = post_json(server.addr(), "/api/v1/agent/budget", &json!({}));
    assert_eq!(post.status, 405);
    assert_eq!(post.header("Allow"), Some("GET"));
}

#[test]
fn a_trigger_starts_a_cycle_that_the_run_api_finishes() {
    let dir = TempDir::new();
    let server = ServerProc::start(dir.path(), &[], &[]);
    let addr = server.addr();
    assert_eq!(
        get_json(addr, "/api/v1/agent/status").json(),
        json!({"status": "idle"})
    );

    // No body at all, as the verification script sends it.
    let first = common::request(addr, "POST", "/api/v1/agent/trigger", &[], None).unwrap();
    assert_eq!(first.status, 200, "{}", first.text());
    let first = first.json();
    assert_eq!(first["triggered"], true);
    let id = first["operation_id"].as_str().unwrap().to_string();
    assert_eq!(first["run_id"], id.as_str());

    let body = json!({"agent": "researcher", "goal": "find a signal", "run_id": "cycle-2"});
    let second = post_json(addr, "/api/v1/agent/trigger", &body);
    assert_eq!(second.status, 200);
    assert_eq!(second.json()["operation_id"], "cycle-2");
    let run = get_json(addr, "/api/v1/runs/cycle-2").json();
    assert_eq!(
        (run["agent"].as_str(), run["goal"].as_str()),
        (Some("researcher"), Some("find a signal"))
    );

    let status = get_json(addr, "/api/v1/agent/status").json();
    assert_eq!(status["status"], "running");
    assert_eq!(status["active_runs"], 2);
    assert!(
        status["operation_id"] == "cycle-2" || status["operation_id"] == id.as_str(),
        "{status}"
    );

    let again = post_json(addr, "/api/v1/agent/trigger", &json!({"run_id": "cycle-2"}));
    assert_eq!(again.status, 409);
    let unknown = post_json(addr, "/api/v1/agent/trigger", &json!({"agnet": "x"}));
    assert_eq!(unknown.status, 400);
    assert_eq!(unknown.json()["error"]["field"], "agnet");

    for (run, action) in [(id.as_str(), "complete"), ("cycle-2", "fail")] {
        let done = post_json(addr, &format!("/api/v1/runs/{run}/{action}"), &json!({}));
        assert_eq!(done.status, 200);
    }
    assert_eq!(
        get_json(addr, "/api/v1/agent/status").json(),
        json!({"status": "idle"})
    );
    let text = get(addr, "/metrics").text();
    assert_eq!(
        sample(&text, r#"agent_cycles_total{outcome="completed"}"#),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, r#"agent_cycles_total{outcome="failed"}"#),
        Some(1.0)
    );
    assert_eq!(sample(&text, "agent_runs_started_total"), Some(2.0));
}

#[test]
fn a_refused_trigger_is_429_and_names_the_estimate_in_cents() {
    let dir = TempDir::new();
    let server = ServerProc::start(dir.path(), &[], &[("AGENT_DAILY_BUDGET", "0.01")]);
    let r = post_json(server.addr(), "/api/v1/agent/trigger", &json!({}));
    assert_eq!(r.status, 429);
    let retry: u64 = r.header("Retry-After").unwrap().parse().unwrap();
    assert!((1..=86_400).contains(&retry));
    let body = r.json();
    assert_eq!(body["triggered"], false);
    assert_eq!(body["reason"], "budget_exhausted");
    let message = body["message"].as_str().unwrap();
    assert!(message.starts_with("Daily budget exhausted: "), "{message}");
    assert!(message.contains("estimate of $0.15"), "{message}");
    assert!(
        message.contains("only $0.01 of today's $0.01 limit"),
        "{message}"
    );
    assert_eq!(body["run_estimate"], 0.15);
    let segment = dir.join("runs").join("0000000001.jsonl");
    let journaled = segment.metadata().expect("the run journal's first segment");
    assert_eq!(journaled.len(), 0, "a refused trigger journals nothing");
    assert_eq!(
        get_json(server.addr(), "/api/v1/agent/status").json(),
        json!({"status": "idle"})
    );

    let out = run_cli(
        &["trigger", "--url", &server.url("")],
        &[],
        None,
        CLI_TIMEOUT,
    );
    assert_eq!(out.status.code(), Some(3), "{}", out.stderr);
    let printed: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(printed["triggered"], false);
    assert_eq!(printed["reason"], "budget_exhausted");
    assert!(printed.get("error").is_none(), "{printed}");
}

/// A cycle's money through the research agent's routes: what its start
/// reserved while it runs, its cost once ended, on its answer and in the
/// listing; and the next cycle reserves what the last ones cost.
#[test]
fn a_cycle_shows_its_reservation_then_its_cost_and_the_next_reserves_what_it_cost() {
    let dir = TempDir::new();
    let server = ServerProc::start(dir.path(), &[], &[]);
    let addr = server.addr();
    let entry = |id: &str| {
        let list = get_json(addr, "/api/v1/runs").json();
        let runs = list["runs"].as_array().unwrap().clone();
        runs.into_iter().find(|r| r["run_id"] == id).unwrap()
    };
    let first = post_json(addr, "/api/v1/agent/trigger", &json!({})).json();
    let id = first["operation_id"].as_str().unwrap().to_string();
    let running = get_json(addr, &format!("/api/v1/runs/{id}")).json();
    assert_eq!(
        (&running["reserved"], &running["cost"]),
        (&json!(0.15), &Value::Null)
    );
    assert_eq!(entry(&id)["reserved"], 0.15);
    let done = post_json(
        addr,
        &format!("/api/v1/runs/{id}/complete"),
        &json!({"cost": 0.4}),
    );
    assert_eq!(done.status, 200);
    assert_eq!(
        (&done.json()["cost"], &done.json()["reserved"]),
        (&json!(0.4), &Value::Null)
    );
    let ended = get_json(addr, &format!("/api/v1/runs/{id}")).json();
    assert_eq!(
        (&ended["cost"], &ended["reserved"]),
        (&json!(0.4), &Value::Null)
    );
    assert_eq!(
        (&entry(&id)["cost"], &entry(&id)["reserved"]),
        (&json!(0.4), &Value::Null)
    );

    let b = get_json(addr, "/api/v1/agent/budget").json();
    assert_eq!(
        (&b["run_estimate"], &b["cycles_affordable"]),
        (&json!(0.4), &json!(11))
    );
    let second = post_json(addr, "/api/v1/agent/trigger", &json!({})).json();
    let id = second["operation_id"].as_str().unwrap();
    assert_eq!(
        get_json(addr, &format!("/api/v1/runs/{id}")).json()["reserved"],
        0.4
    );
    assert_eq!(
        get_json(addr, "/api/v1/agent/budget").json()["reserved"],
        0.4
    );
}

#[test]
fn the_cli_triggers_and_prints_the_budget_table() {
    let dir = TempDir::new();
    let server = ServerProc::start(dir.path(), &[], &[]);
    let out = run_cli(
        &["trigger", "--url", &server.url("")],
        &[],
        None,
        CLI_TIMEOUT,
    );
    assert_eq!(out.status.code(), Some(0), "{}", out.stderr);
    let printed: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(printed["triggered"], true);
    assert!(printed["operation_id"].is_string(), "{printed}");

    let table = run_cli(
        &["budget", "--url", &server.url("")],
        &[],
        None,
        CLI_TIMEOUT,
    );
    assert_eq!(table.status.code(), Some(0), "{}", table.stderr);
    let lines: Vec<&str> = table.stdout.lines().collect();
    let date = get_json(server.addr(), "/api/v1/budget").json()["date"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        lines,
        [
            "Agent Budget Status".to_string(),
            format!("Date:              {date}"),
            "Daily Limit:       $5.00".to_string(),
            "Today's Spend:     $0.00".to_string(),
            "Remaining:         $4.85".to_string(),
            "Cycles Affordable: ~32".to_string(),
            "Run Estimate:      $0.15 (auto)".to_string(),
            "Spend Rate:        $0.00/hour over the last hour".to_string(),
            "Forecast:          at this rate, it lasts to the reset at 00:00 UTC".to_string(),
        ]
    );
}

/// A run whose orchestrator died: with no news for `--run-timeout` it fails as `abandoned`,
/// durably, gives its reservation back, and counts under its own outcome; a run left over from
/// before a restart ends the same way.
#[test]
fn a_run_with_no_news_for_the_run_timeout_ends_as_abandoned() {
    let dir = TempDir::new();
    let mut first = ServerProc::start(dir.path(), &["--run-timeout", "0"], &[]);
    let r = post_json(first.addr(), "/api/v1/runs", &json!({"run_id": "before"}));
    assert_eq!(r.status, 201);
    first.kill();

    let server = ServerProc::start(dir.path(), &["--run-timeout", "1s"], &[]);
    let r = post_json(server.addr(), "/api/v1/runs", &json!({"run_id": "orphan"}));
    assert_eq!(r.status, 201);
    let reserved = |server: &ServerProc| {
        get_json(server.addr(), "/api/v1/budget").json()["reserved"]
            .as_f64()
            .expect("reserved")
    };
    assert!(reserved(&server) > 0.0);
    for id in ["before", "orphan"] {
        let run = common::poll_until(Duration::from_secs(20), || {
            let run = get_json(server.addr(), &format!("/api/v1/runs/{id}")).json();
            (run["status"] == "failed").then_some(run)
        });
        assert_eq!(run["error"], "abandoned", "{run}");
    }
    // The reservation goes back once the end is durable, just after it shows.
    common::poll_until(Duration::from_secs(20), || {
        (reserved(&server) == 0.0).then_some(())
    });
    let text = get(server.addr(), "/metrics").text();
    let abandoned = r#"agent_cycles_total{outcome="abandoned"}"#;
    assert_eq!(sample(&text, abandoned), Some(2.0));
    assert_eq!(
        sample(&text, r#"agent_cycles_total{outcome="failed"}"#),
        Some(0.0)
    );
    assert_eq!(sample(&text, "conductor_active_runs"), Some(0.0));
    drop(server);

    // Durable: a restart with the timeout off reads both as abandoned.
    let again = ServerProc::start(dir.path(), &["--run-timeout", "0"], &[]);
    let text = get(again.addr(), "/metrics").text();
    assert_eq!(sample(&text, abandoned), Some(2.0));
    let run = get_json(again.addr(), "/api/v1/runs/orphan").json();
    assert_eq!(
        (run["status"].as_str(), run["error"].as_str()),
        (Some("failed"), Some("abandoned"))
    );
}

/// The series of every source system's run families, and of our own
/// breakdowns, as a scrape shows them: the lines a restart must give back.
fn source_series(text: &str) -> Vec<&str> {
    const PREFIXES: [&str; 12] = [
        "conductor_completed_runs_total",
        "conductor_failed_runs_total",
        "conductor_active_runs_total",
        "conductor_messagebus_appends_total",
        "conductor_run_duration_seconds",
        "conductor_tokens_total",
        "agentgate_",
        "agent_cycle_duration_seconds",
        "agent_tokens_total",
        "agent_cycles_total",
        "agent_runs_started_total",
        "agent_phase_duration_seconds",
    ];
    text.lines()
        .filter(|l| !l.starts_with('#') && PREFIXES.iter().any(|p| l.starts_with(p)))
        .collect()
}

#[test]
fn every_source_name_is_served_with_its_own_label_set_and_survives_a_restart() {
    let dir = TempDir::new();
    // Small snapshots, so that the restart reads the families back from a
    // snapshot as well as from the journal after it.
    let args = ["--daily-budget", "1000", "--snapshot-bytes", "1KiB"];
    let mut server = ServerProc::start(dir.path(), &args, &[]);
    let addr = server.addr();
    let events = json!([
        {"type": "phase_started", "phase": "designing", "timestamp": 1000.0},
        {"type": "tokens", "phase": "design", "input_tokens": 1200, "output_tokens": 300},
        {"type": "tokens", "phase": "assessment", "input_tokens": 10, "output_tokens": 5},
        {"type": "phase_completed", "phase": "designing", "success": true, "timestamp": 1002.5}
    ]);
    for (id, end) in [
        ("c1", "complete"),
        ("f1", "fail"),
        ("x1", "cancel"),
        ("a1", ""),
    ] {
        let r = post_json(addr, "/api/v1/runs", &json!({"run_id": id}));
        assert_eq!(r.status, 201, "{}", r.text());
        let r = post_json(addr, &format!("/api/v1/runs/{id}/events"), &events);
        assert_eq!(r.status, 200, "{}", r.text());
        if !end.is_empty() {
            let r = post_json(addr, &format!("/api/v1/runs/{id}/{end}"), &json!({}));
            assert_eq!(r.status, 200, "{}", r.text());
        }
    }
    let m = post_json(
        addr,
        "/api/v1/messages",
        &json!({"type": "note", "body": "x"}),
    );
    assert_eq!(m.status, 201, "{}", m.text());
    let text = get(addr, "/metrics").text();

    // conductor-loop's six families, with its names and types.
    for (name, kind) in [
        ("conductor_uptime_seconds", "gauge"),
        ("conductor_active_runs_total", "gauge"),
        ("conductor_completed_runs_total", "counter"),
        ("conductor_failed_runs_total", "counter"),
        ("conductor_messagebus_appends_total", "counter"),
        ("conductor_api_requests_total", "counter"),
    ] {
        let line = format!("# TYPE {name} {kind}");
        assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
    }
    assert_eq!(sample(&text, "conductor_active_runs_total"), Some(1.0));
    assert_eq!(sample(&text, "conductor_completed_runs_total"), Some(1.0));
    assert_eq!(sample(&text, "conductor_failed_runs_total"), Some(1.0));
    assert_eq!(
        sample(&text, "conductor_messagebus_appends_total"),
        Some(1.0)
    );
    let runs_posted = r#"conductor_api_requests_total{method="POST",status="201"}"#;
    assert_eq!(sample(&text, runs_posted), Some(5.0));

    // AgentGate's families, with its names and labels.
    assert_eq!(sample(&text, "agentgate_runs_started_total"), Some(4.0));
    assert_eq!(sample(&text, "agentgate_active_runs"), Some(1.0));
    for (result, n) in [("succeeded", 1.0), ("failed", 1.0), ("canceled", 1.0)] {
        let series = format!("agentgate_runs_completed_total{{result=\"{result}\"}}");
        assert_eq!(sample(&text, &series), Some(n), "{series}");
    }
    assert_eq!(
        sample(&text, "agentgate_run_duration_seconds_count"),
        Some(3.0)
    );
    assert_eq!(sample(&text, "agentgate_iterations_total"), Some(0.0));
    assert_eq!(
        sample(&text, "agentgate_iteration_duration_seconds_count"),
        Some(0.0)
    );
    let phase = r#"agentgate_phase_duration_seconds_count{phase="designing"}"#;
    assert_eq!(sample(&text, phase), Some(4.0));

    // The research agent's label sets: no outcome on the cycle duration, and
    // tokens by phase alone; our breakdowns under names of our own.
    assert_eq!(
        sample(&text, "agent_cycle_duration_seconds_count"),
        Some(3.0)
    );
    assert!(!text.contains("agent_cycle_duration_seconds_count{"));
    assert_eq!(
        sample(&text, r#"agent_tokens_total{phase="design"}"#),
        Some(6000.0)
    );
    assert_eq!(
        sample(&text, r#"agent_tokens_total{phase="assessment"}"#),
        Some(60.0)
    );
    assert!(!text.contains("agent_tokens_total{phase=\"design\",type"));
    let by_outcome = r#"conductor_run_duration_seconds_count{outcome="failed"}"#;
    assert_eq!(sample(&text, by_outcome), Some(1.0));
    let by_type = r#"conductor_tokens_total{phase="design",type="input"}"#;
    assert_eq!(sample(&text, by_type), Some(4800.0));

    let before: Vec<String> = source_series(&text).into_iter().map(String::from).collect();
    assert!(
        dir.join("runs/snapshot").exists(),
        "no run snapshot was taken"
    );
    server.kill();
    let again = ServerProc::start(dir.path(), &args, &[]);
    let after = get(again.addr(), "/metrics").text();
    assert_eq!(source_series(&after), before, "after a restart");
}
