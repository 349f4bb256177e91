//! The daily budget through the real binary: exact admission under
//! concurrency, the 429 answer, run costs, the CLI, and no acknowledged
//! spend lost to `kill -9`.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{get_json, post_json, request, run_cli, ServerProc, TempDir};
use serde_json::json;

#[test]
fn concurrent_starts_admit_exactly_what_the_budget_covers() {
    let dir = TempDir::new();
    let server = ServerProc::start(
        dir.path(),
        &["--daily-budget", "1.50", "--run-estimate", "0.15"],
        &[],
    );
    let addr = server.addr();
    let statuses = Arc::new(Mutex::new(Vec::new()));
    let threads: Vec<_> = (0..100)
        .map(|i| {
            let statuses = statuses.clone();
            std::thread::spawn(move || {
                let r = post_json(addr, "/api/v1/runs", &json!({"run_id": format!("r{i}")}));
                statuses.lock().unwrap().push(r.status);
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let statuses = statuses.lock().unwrap();
    assert_eq!(statuses.iter().filter(|s| **s == 201).count(), 10);
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 90);
    let b = get_json(addr, "/api/v1/budget").json();
    assert_eq!(b["reserved"], 1.5);
    assert_eq!(b["remaining"], 0.0);
    assert_eq!(b["cycles_affordable"], 0);
    let runs = get_json(addr, "/api/v1/runs").json();
    assert_eq!(
        runs["runs"].as_array().unwrap().len(),
        10,
        "refused starts create no run"
    );
    let metrics = common::get(addr, "/metrics").text();
    assert!(
        metrics.contains("\nagent_budget_rejections_total 90\n"),
        "{metrics}"
    );
}

#[test]
fn an_exhausted_budget_answers_429_with_retry_after_and_the_milestone_body() {
    let dir = TempDir::new();
    let server = ServerProc::start(dir.path(), &[], &[("AGENT_DAILY_BUDGET", "0.01")]);
    let r = post_json(server.addr(), "/api/v1/runs", &json!({}));
    assert_eq!(r.status, 429);
    let retry: u64 = r.header("Retry-After").unwrap().parse().unwrap();
    assert!((1..=86_400).contains(&retry));
    let body = r.json();
    assert_eq!(body["triggered"], false);
    assert_eq!(body["reason"], "budget_exhausted");
    assert_eq!(body["daily_limit"], 0.01);
    for key in [
        "message",
        "today_spend",
        "reserved",
        "remaining",
        "reset_at",
    ] {
        assert!(!body[key].is_null(), "{key} in {body}");
    }
    assert_eq!(body["error"]["code"], "BUDGET_EXHAUSTED");
    let segment = dir.join("runs").join("0000000001.jsonl");
    let journaled = segment.metadata().expect("the run journal's first segment");
    assert_eq!(journaled.len(), 0, "nothing journaled");

    // The milestone's own check, through the CLI.
    let out = run_cli(
        &["trigger", "--url", &server.url("")],
        &[],
        None,
        Duration::from_secs(20),
    );
    assert_eq!(out.status.code(), Some(3), "{}", out.stderr);
    assert!(
        out.stdout.contains("\"triggered\": false"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("\"reason\": \"budget_exhausted\""),
        "{}",
        out.stdout
    );
    let table = run_cli(
        &["budget", "--url", &server.url("")],
        &[],
        None,
        Duration::from_secs(20),
    );
    assert_eq!(table.status.code(), Some(0));
    for row in [
        "Date",
        "Daily Limit",
        "$0.01",
        "Today's Spend",
        "Remaining",
        "Cycles Affordable",
    ] {
        assert!(table.stdout.contains(row), "{row} in {}", table.stdout);
    }
}

#[test]
fn a_run_is_charged_its_priced_tokens_or_its_explicit_cost() {
    let dir = TempDir::new();
    let pricing = dir.join("pricing.json");
    std::fs::write(
        &pricing,
        r#"{"models": {"cheap": {"input": 1.0, "output": 2.0}}}"#,
    )
    .unwrap();
    let server = ServerProc::start(
        dir.path(),
        &[
            "--pricing",
            pricing.to_str().unwrap(),
            "--daily-budget",
            "100",
        ],
        &[],
    );
    let addr = server.addr();
    assert_eq!(
        post_json(addr, "/api/v1/runs", &json!({"run_id": "a"})).status,
        201
    );
    let events = json!([
        {"type": "tokens", "phase": "design", "model": "cheap", "input_tokens": 1_000_000, "output_tokens": 500_000},
        {"type": "tokens", "phase": "test", "input_tokens": 100_000, "output_tokens": 0}
    ]);
    assert_eq!(
        post_json(addr, "/api/v1/runs/a/events", &events).status,
        200
    );
    let done = post_json(addr, "/api/v1/runs/a/complete", &json!({}));
    assert_eq!(done.status, 200);
    // cheap: $1 + $1; unknown model at $15 per million input: $1.50.
    assert_eq!(done.json()["cost"], 3.5);
    assert_eq!(
        post_json(addr, "/api/v1/runs", &json!({"run_id": "b"})).status,
        201
    );
    let failed = post_json(
        addr,
        "/api/v1/runs/b/fail",
        &json!({"error": "x", "cost": 0.25}),
    );
    assert_eq!(failed.json()["cost"], 0.25);
    let bad = post_json(addr, "/api/v1/runs/b/cancel", &json!({"cost": -1}));
    assert_eq!(bad.status, 409);
    let metrics = common::get(addr, "/metrics").text();
    assert!(
        metrics.contains("agent_cost_dollars_total{phase=\"design\"} 2\n"),
        "{metrics}"
    );
    assert!(metrics.contains("agent_cost_dollars_total{phase=\"test\"} 1.5\n"));
    assert_eq!(get_json(addr, "/api/v1/budget").json()["today_spend"], 3.75);
    let spend = post_json(
        addr,
        "/api/v1/budget/spend",
        &json!({"input_tokens": 10, "output_tokens": 10, "model": "cheap", "run_id": "a"}),
    );
    assert_eq!(spend.status, 201);
    assert_eq!(spend.json()["amount"], 0.00003);
    for bad in [
        json!({}),
        json!({"amount": -1}),
        json!({"amount": 1, "input_tokens": 1}),
        json!({"input_tokens": 5}),
    ] {
        assert_eq!(
            post_json(addr, "/api/v1/budget/spend", &bad).status,
            400,
            "{bad}"
        );
    }
}

#[test]
fn reservations_of_active_runs_survive_a_restart() {
    let dir = TempDir::new();
    {
        let mut server = ServerProc::start(dir.path(), &["--daily-budget", "0.30"], &[]);
        assert_eq!(
            post_json(server.addr(), "/api/v1/runs", &json!({"run_id": "x"})).status,
            201
        );
        server.kill();
    }
    let server = ServerProc::start(dir.path(), &["--daily-budget", "0.30"], &[]);
    let b = get_json(server.addr(), "/api/v1/budget").json();
    assert_eq!(b["reserved"], 0.15);
    assert_eq!(
        post_json(server.addr(), "/api/v1/runs", &json!({})).status,
        201
    );
    assert_eq!(
        post_json(server.addr(), "/api/v1/runs", &json!({})).status,
        429
    );
}

#[test]
fn kill_9_during_concurrent_spending_loses_no_acknowledged_spend() {
    let dir = TempDir::new();
    let args = ["--daily-budget", "1000000"];
    let mut server = ServerProc::start(dir.path(), &args, &[]);
    let addr = server.addr();
    // Micro-dollars acknowledged, and in flight when the server died.
    let acked = Arc::new(Mutex::new(0u64));
    let in_flight = Arc::new(Mutex::new(0u64));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let (acked, in_flight, stop) = (acked.clone(), in_flight.clone(), stop.clone());
            std::thread::spawn(move || {
                for i in 0..2000u64 {
                    if stop.load(std::sync::atomic::Ordering::Relaxed) {
                        return;
                    }
                    let micros = 10_000 + t * 100 + i % 7;
                    let body = json!({"amount": micros as f64 / 1e6});
                    *in_flight.lock().unwrap() += micros;
                    match request(
                        addr,
                        "POST",
                        "/api/v1/budget/spend",
                        &[],
                        Some(body.to_string().as_bytes()),
                    ) {
                        Ok(r) if r.status == 201 => {
                            *in_flight.lock().unwrap() -= micros;
                            *acked.lock().unwrap() += micros;
                        }
                        // The server died with this one sent: it may or may not be recorded.
                        _ => return,
                    }
                }
            })
        })
        .collect();
    common::poll_until(Duration::from_secs(30), || {
        (*acked.lock().unwrap() > 3_000_000).then_some(())
    });
    server.kill();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    let (acked, in_flight) = (*acked.lock().unwrap(), *in_flight.lock().unwrap());
    let server = ServerProc::start(dir.path(), &args, &[]);
    let spend = get_json(server.addr(), "/api/v1/budget").json()["today_spend"]
        .as_f64()
        .unwrap();
    let spend_micros = (spend * 1e6).round() as u64;
    assert!(
        spend_micros >= acked && spend_micros <= acked + in_flight,
        "ledger has {spend_micros} micro-dollars; {acked} acknowledged, {in_flight} in flight"
    );
    for file in std::fs::read_dir(dir.join("budget")).unwrap() {
        let text = std::fs::read_to_string(file.unwrap().path()).unwrap();
        assert!(text.is_empty() || text.ends_with('\n'));
        for line in text.lines() {
            serde_json::from_str::<serde_json::Value>(line)
                .expect("every ledger line is whole JSON");
        }
    }
}
