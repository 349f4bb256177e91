//! The daily budget through the real binary: exact admission under
//! concurrency, the 429 answer, run costs, the CLI, no acknowledged spend
//! lost to `kill -9`, the research agent's budget file counted once, and
//! spends of an `operation_id` counted once.

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

/// Today's UTC day, as the server's budget sees it on a fresh data dir.
fn today() -> i64 {
    conductor_metrics::time::day_of(conductor_metrics::time::now_unix())
}

/// `YYYY-MM-DD` of `day`.
fn date(day: i64) -> String {
    conductor_metrics::time::date_string(day)
}

/// The research agent's budget file of `day` as its `BudgetTracker` writes
/// it (indented, `isoformat()` timestamps, a float `total_spend`): 30
/// cycles of $0.15 and one entry of $0.40 without an operation id, $4.90.
fn research_agent_file(day: i64) -> String {
    let mut spend: Vec<serde_json::Value> = (0..30)
        .map(|i| {
            json!({
                "amount": 0.15,
                "operation_id": format!("op_agent_research_{i:03}"),
                "timestamp": format!("{}T08:{:02}:00.123456+00:00", date(day), i),
            })
        })
        .collect();
    spend.push(json!({"amount": 0.40, "timestamp": format!("{}T09:00:00+00:00", date(day))}));
    let total: f64 = spend.iter().map(|s| s["amount"].as_f64().unwrap()).sum();
    let doc = json!({"date": date(day), "limit": 5.0, "spend": spend, "total_spend": total});
    serde_json::to_string_pretty(&doc).unwrap()
}

/// The server's log lines with `msg`.
/// The log lines with message `msg` among those the server wrote before it listened. Its
/// stderr is read on a thread of its own, which may lag behind the listening line on stdout,
/// so this waits for the log's own listening line first.
fn logged(server: &ServerProc, msg: &str) -> Vec<serde_json::Value> {
    server.wait_for_stderr(Duration::from_secs(30), |l| {
        l.contains(r#""msg":"listening""#)
    });
    let lines = server.stderr_json().into_iter();
    lines.filter(|l| l["msg"] == msg).collect()
}

#[test]
fn a_research_agent_budget_file_is_counted_once_across_two_restarts() {
    let dir = TempDir::new();
    let budget_dir = dir.join("agent-budget");
    std::fs::create_dir(&budget_dir).unwrap();
    // Today's file, and tomorrow's, in case the UTC day rolls while the test
    // runs: whichever is the server's day is counted, and only it.
    let today = today();
    for day in [today, today + 1] {
        let file = budget_dir.join(format!("{}.json", date(day)));
        std::fs::write(file, research_agent_file(day)).unwrap();
    }
    let env = [("AGENT_BUDGET_DIR", budget_dir.to_str().unwrap())];
    let args = ["--daily-budget", "5", "--run-estimate", "0.15"];
    for start in 0..3 {
        let mut server = ServerProc::start(dir.path(), &args, &env);
        let addr = server.addr();
        let b = get_json(addr, "/api/v1/budget").json();
        assert_eq!(b["today_spend"], 4.9, "start {start}: {b}");
        assert_eq!(b["spend_events"], 31, "start {start}: {b}");
        assert!([date(today), date(today + 1)].contains(&b["date"].as_str().unwrap().into()));
        let metrics = common::get(addr, "/metrics").text();
        assert_eq!(
            common::sample(&metrics, "agent_budget_today_spend_dollars"),
            Some(4.9)
        );
        // $4.90 spent and $0.15 to reserve is past the $5.00 limit.
        let refused = post_json(addr, "/api/v1/runs", &json!({}));
        assert_eq!(refused.status, 429, "start {start}");
        let trigger = post_json(addr, "/api/v1/agent/trigger", &json!({}));
        assert_eq!(
            trigger.json()["reason"],
            "budget_exhausted",
            "start {start}"
        );
        let read = logged(&server, "research agent budget file read");
        assert_eq!(read.len(), 1, "start {start}");
        let counted = if start == 0 { 31 } else { 0 };
        assert_eq!(read[0]["counted"], counted, "start {start}: {}", read[0]);
        assert_eq!(read[0]["already_recorded"], 31 - counted);
        assert!(
            read[0]["file"]
                .as_str()
                .unwrap()
                .ends_with(&format!("{}.json", b["date"].as_str().unwrap())),
            "{}",
            read[0]
        );
        assert!(logged(&server, "research agent budget file: total_spend is not the sum of its entries; the entries are counted").is_empty());
        if start == 0 {
            // The import crossed 50% and 80% of the limit, once; the bus
            // messages are posted as the server starts.
            let thresholds = common::poll_until(Duration::from_secs(10), || {
                let messages = get_json(addr, "/api/v1/messages").json();
                let alerts: Vec<_> = messages["messages"]
                    .as_array()?
                    .iter()
                    .filter(|m| m["type"] == "BUDGET_ALERT")
                    .map(|m| m["body"]["threshold_percent"].clone())
                    .collect();
                (alerts.len() >= 2).then_some(alerts)
            });
            assert_eq!(thresholds, [json!(50), json!(80)]);
        }
        server.kill();
    }
}

#[test]
fn a_research_agent_budget_file_for_another_day_is_ignored() {
    let dir = TempDir::new();
    let budget_dir = dir.join("budget");
    std::fs::create_dir(&budget_dir).unwrap();
    let today = today();
    for day in [today - 1, today + 2] {
        let file = budget_dir.join(format!("{}.json", date(day)));
        std::fs::write(file, research_agent_file(day)).unwrap();
    }
    let broken = budget_dir.join(format!("{}.json", date(today - 3)));
    std::fs::write(&broken, "{\"date\": ").unwrap();
    let server = ServerProc::start(dir.path(), &["--daily-budget", "5"], &[]);
    let b = get_json(server.addr(), "/api/v1/budget").json();
    assert_eq!(
        (b["today_spend"].as_f64(), b["spend_events"].as_u64()),
        (Some(0.0), Some(0))
    );
    assert_eq!(
        post_json(server.addr(), "/api/v1/runs", &json!({})).status,
        201
    );
    assert!(logged(&server, "research agent budget file read").is_empty());
    assert_eq!(std::fs::read_to_string(&broken).unwrap(), "{\"date\": ");
}

#[test]
fn a_malformed_research_agent_budget_file_stops_the_start_naming_the_file() {
    let today = today();
    let cut = &research_agent_file(today)[..60];
    let no_spend = format!(
        r#"{{"date": "{}", "limit": 5.0, "total_spend": 4.9}}"#,
        date(today)
    );
    let bad_amount = research_agent_file(today).replacen("0.15", "-0.15", 1);
    let cases = [
        (
            cut.to_string(),
            "not JSON: EOF while parsing an object at line 5 column 5",
        ),
        (no_spend, r#"no "spend" list"#),
        (
            bad_amount,
            "spend[0].amount must be a finite, non-negative number",
        ),
    ];
    for (text, why) in cases {
        let dir = TempDir::new();
        let budget_dir = dir.join("budget");
        std::fs::create_dir(&budget_dir).unwrap();
        // Today's and tomorrow's, in case the UTC day rolls meanwhile.
        for day in [today, today + 1] {
            let text = text.replace(&date(today), &date(day));
            std::fs::write(budget_dir.join(format!("{}.json", date(day))), text).unwrap();
        }
        let data = dir.path().to_str().unwrap();
        let out = run_cli(
            &["serve", "--addr", "127.0.0.1:0", "--data-dir", data],
            &[],
            None,
            Duration::from_secs(20),
        );
        assert_eq!(out.status.code(), Some(2), "{why}: {out:?}");
        let plain: Vec<&str> = out.stderr.lines().filter(|l| !l.starts_with('{')).collect();
        assert_eq!(plain.len(), 1, "{:?}", out.stderr);
        let named = [today, today + 1].iter().any(|&d| {
            let file = budget_dir.join(format!("{}.json", date(d)));
            let file = file.canonicalize().unwrap();
            plain[0].starts_with(&format!(
                "conductor-metrics: research agent budget file {}: ",
                file.display()
            ))
        });
        assert!(named, "{}", plain[0]);
        assert!(plain[0].contains(why), "{why} in {}", plain[0]);
        assert!(!out.stdout.contains("listening"), "{}", out.stdout);
        let ledgers = std::fs::read_dir(&budget_dir).unwrap().filter(|e| {
            let name = e.as_ref().unwrap().file_name();
            name.to_str().unwrap().ends_with(".jsonl")
        });
        assert_eq!(ledgers.count(), 0, "nothing counted");
    }
}

#[test]
fn a_spend_with_an_operation_id_is_counted_once() {
    let dir = TempDir::new();
    let args = ["--daily-budget", "5"];
    let mut server = ServerProc::start(dir.path(), &args, &[]);
    let addr = server.addr();
    let spend = |body: serde_json::Value| post_json(addr, "/api/v1/budget/spend", &body);
    let first = spend(json!({"amount": 0.5, "operation_id": "op_1"}));
    assert_eq!(first.status, 201);
    let first = first.json();
    assert_eq!(
        (
            &first["operation_id"],
            &first["already_recorded"],
            &first["amount"]
        ),
        (&json!("op_1"), &json!(false), &json!(0.5))
    );
    let again = spend(json!({"amount": 0.7, "operation_id": "op_1", "run_id": "r"}));
    assert_eq!(again.status, 200);
    let again = again.json();
    assert_eq!(
        (
            &again["already_recorded"],
            &again["amount"],
            &again["alerts"]
        ),
        (&json!(true), &json!(0.5), &json!([]))
    );
    assert_eq!(again["status"]["today_spend"], 0.5);
    // Without an operation id, every spend counts, and the answer is as before.
    let plain = spend(json!({"amount": 0.25}));
    assert_eq!(plain.status, 201);
    assert!(plain.json().get("operation_id").is_none());
    for bad in [
        json!({"amount": 0.1, "operation_id": "op 1"}),
        json!({"amount": 0.1, "operation_id": ""}),
        json!({"amount": 0.1, "operation_id": "x".repeat(129)}),
        json!({"amount": 0.1, "operation_id": 7}),
    ] {
        let r = spend(bad.clone());
        assert_eq!(r.status, 400, "{bad}");
        assert_eq!(r.json()["error"]["field"], "operation_id", "{bad}");
    }
    let invalid_repeat = spend(json!({"amount": -1, "operation_id": "op_1"}));
    assert_eq!(
        invalid_repeat.status, 400,
        "input is checked before the repeat"
    );

    // Concurrent sends of one operation: one is recorded, the rest repeat it.
    let statuses: Vec<u16> = (0..8)
        .map(|_| {
            std::thread::spawn(move || {
                let body = json!({"amount": 1.0, "operation_id": "op_2"});
                post_json(addr, "/api/v1/budget/spend", &body).status
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        7,
        "{statuses:?}"
    );
    let b = get_json(addr, "/api/v1/budget").json();
    assert_eq!(
        (b["today_spend"].as_f64(), b["spend_events"].as_u64()),
        (Some(1.75), Some(3))
    );
    server.kill();

    // After a restart the ledger still knows both, and so does the import
    // of a research agent file that names them.
    let today = today();
    for day in [today, today + 1] {
        let doc = json!({"date": date(day), "limit": 5.0, "total_spend": 1.75, "spend": [
            {"amount": 0.5, "operation_id": "op_1", "timestamp": "x"},
            {"amount": 1.0, "operation_id": "op_2"},
            {"amount": 0.25, "operation_id": "op_3"},
        ]});
        let file = dir.join("budget").join(format!("{}.json", date(day)));
        std::fs::write(file, doc.to_string()).unwrap();
    }
    let server = ServerProc::start(dir.path(), &args, &[]);
    let addr = server.addr();
    let b = get_json(addr, "/api/v1/budget").json();
    if b["date"] == date(today) {
        assert_eq!(b["today_spend"], 2.0, "only op_3 is new: {b}");
        let read = &logged(&server, "research agent budget file read")[0];
        assert_eq!(
            (&read["counted"], &read["already_recorded"]),
            (&json!(1), &json!(2))
        );
        assert_eq!(spend_status(addr, "op_1"), 200);
        assert_eq!(spend_status(addr, "op_3"), 200);
    } else {
        // The UTC day rolled during the test: the new day has its own file.
        assert_eq!(b["today_spend"], 1.75, "{b}");
    }
}

/// The status of a $0.10 spend of `operation_id`.
fn spend_status(addr: std::net::SocketAddr, operation_id: &str) -> u16 {
    let body = json!({"amount": 0.1, "operation_id": operation_id});
    post_json(addr, "/api/v1/budget/spend", &body).status
}

/// The dollars of a JSON number, to the cent, for comparing sums.
fn cents(v: &serde_json::Value) -> i64 {
    (v.as_f64().expect("a number") * 100.0).round() as i64
}

/// `--run-estimate auto`, the default: a start reserves the larger of $0.15 and the 90th
/// percentile of its agent's last 50 run costs; the status, `cycles_affordable`, the gauge and
/// the refusal use it; it is learned again after a restart (from a snapshot and the journal
/// after it); `--run-estimate 0.15` reserves the fixed amount.
#[test]
fn a_start_reserves_what_its_agents_recent_runs_cost_and_a_restart_keeps_it() {
    let dir = TempDir::new();
    // Small snapshots, so the restart reads one and the journal's records after it.
    let args = ["--daily-budget", "20", "--snapshot-bytes", "2KiB"];
    let mut server = ServerProc::start(dir.path(), &args, &[]);
    let addr = server.addr();
    let b = get_json(addr, "/api/v1/budget").json();
    assert_eq!(
        (&b["run_estimate"], &b["run_estimate_mode"]),
        (&json!(0.15), &json!("auto"))
    );
    // Ten runs of the coder costing $1.00 to $1.90: their 90th percentile is $1.80.
    for i in 0..10 {
        let id = format!("c{i}");
        let start = post_json(
            addr,
            "/api/v1/runs",
            &json!({"run_id": id, "agent": "coder"}),
        );
        assert_eq!(start.status, 201);
        let cost = 1.0 + f64::from(i) / 10.0;
        let done = post_json(
            addr,
            &format!("/api/v1/runs/{id}/complete"),
            &json!({"cost": cost}),
        );
        assert_eq!(done.json()["cost"], cost);
    }
    let b = get_json(addr, "/api/v1/budget").json();
    assert_eq!(b["run_estimate"], 1.8);
    // $20 less $14.50 spent leaves $5.50: three runs of $1.80.
    assert_eq!(b["cycles_affordable"], 3);
    let metrics = common::get(addr, "/metrics").text();
    assert_eq!(
        common::sample(&metrics, "agent_budget_run_estimate_dollars"),
        Some(1.8)
    );
    for (id, agent) in [("next", "coder"), ("other", "tester")] {
        let r = post_json(addr, "/api/v1/runs", &json!({"run_id": id, "agent": agent}));
        assert_eq!(r.status, 201);
    }
    let reserved =
        |addr, id: &str| get_json(addr, &format!("/api/v1/runs/{id}")).json()["reserved"].clone();
    assert_eq!(
        (reserved(addr, "next"), reserved(addr, "other")),
        (json!(1.8), json!(0.15))
    );
    assert_eq!(get_json(addr, "/api/v1/budget").json()["reserved"], 1.95);
    server.kill();

    let server = ServerProc::start(dir.path(), &args, &[]);
    let addr = server.addr();
    let store = dir.join("runs").join("snapshot");
    assert!(store.is_file(), "the restart read a snapshot");
    let b = get_json(addr, "/api/v1/budget").json();
    assert_eq!(
        (&b["run_estimate"], &b["reserved"]),
        (&json!(1.8), &json!(1.95))
    );
    assert_eq!(
        (reserved(addr, "next"), reserved(addr, "other")),
        (json!(1.8), json!(0.15))
    );
    // $3.55 left: one more coder run fits, then its estimate does not.
    let fits = post_json(
        addr,
        "/api/v1/runs",
        &json!({"run_id": "c10", "agent": "coder"}),
    );
    assert_eq!(fits.status, 201);
    let refused = post_json(addr, "/api/v1/runs", &json!({"agent": "coder"}));
    assert_eq!(refused.status, 429);
    let body = refused.json();
    assert_eq!(body["run_estimate"], 1.8);
    let message = body["message"].as_str().unwrap();
    assert!(message.contains("estimate of $1.80"), "{message}");
    assert!(
        message.contains("only $1.75 of today's $20.00 limit"),
        "{message}"
    );
    // Another agent's run still fits at its own estimate.
    let small = post_json(addr, "/api/v1/runs", &json!({"agent": "tester"}));
    assert_eq!(small.status, 201);
    drop(server);

    let fixed = ["--daily-budget", "20", "--run-estimate", "0.15"];
    let server = ServerProc::start(dir.path(), &fixed, &[]);
    let addr = server.addr();
    let b = get_json(addr, "/api/v1/budget").json();
    assert_eq!(
        (&b["run_estimate"], &b["run_estimate_mode"]),
        (&json!(0.15), &json!("fixed"))
    );
    let r = post_json(
        addr,
        "/api/v1/runs",
        &json!({"run_id": "f", "agent": "coder"}),
    );
    assert_eq!(r.status, 201);
    assert_eq!(reserved(addr, "f"), json!(0.15));
}

/// The forecast and the day's history: the spend rate of the last hour, when the budget runs
/// out at it (API, gauge, CLI), and the ledger as cumulative points, the same after a restart.
#[test]
fn the_forecast_and_the_history_follow_the_ledger() {
    let dir = TempDir::new();
    // Small enough that what is left lasts minutes, before the reset but
    // in the day's last minutes.
    let args = ["--daily-budget", "3.5"];
    let mut server = ServerProc::start(dir.path(), &args, &[]);
    let addr = server.addr();
    let b = get_json(addr, "/api/v1/budget").json();
    assert_eq!(
        (&b["spend_rate_dollars_per_hour"], &b["exhausts_at"]),
        (&json!(0.0), &json!(null))
    );
    let metrics = common::get(addr, "/metrics").text();
    assert!(
        metrics.contains("\nagent_budget_exhausted_in_seconds +Inf\n"),
        "{metrics}"
    );
    let h = get_json(addr, "/api/v1/budget/history").json();
    assert_eq!((&h["points"], &h["daily_limit"]), (&json!([]), &json!(3.5)));
    assert_eq!(
        post_json(addr, "/api/v1/budget/history", &json!({})).status,
        405
    );

    for amount in [0.5, 0.25] {
        let r = post_json(addr, "/api/v1/budget/spend", &json!({"amount": amount}));
        assert_eq!(r.status, 201);
    }
    assert_eq!(
        post_json(addr, "/api/v1/runs", &json!({"run_id": "r"})).status,
        201
    );
    let done = post_json(addr, "/api/v1/runs/r/complete", &json!({"cost": 0.75}));
    assert_eq!(done.status, 200);
    assert_eq!(
        post_json(addr, "/api/v1/runs", &json!({"run_id": "held"})).status,
        201
    );
    let spent = post_json(addr, "/api/v1/budget/spend", &json!({"amount": 1.0}));
    assert_eq!(spent.status, 201);

    // The points are the ledger's spend lines, in its order, summed.
    let h = get_json(addr, "/api/v1/budget/history").json();
    let ledger = dir
        .join("budget")
        .join(format!("{}.jsonl", h["date"].as_str().unwrap()));
    let text = std::fs::read_to_string(&ledger).unwrap();
    let mut total = 0i64;
    let mut expected = Vec::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        if let Some(micros) = v["amount_micros"].as_i64() {
            total += micros;
            let t = conductor_metrics::time::parse_rfc3339(v["ts"].as_str().unwrap()).unwrap();
            expected.push(json!({"t": t, "spend": total as f64 / 1e6}));
        }
    }
    assert_eq!(h["points"], json!(expected));
    assert_eq!(cents(&h["points"][3]["spend"]), 250);
    // The held run reserves what the last run without an agent cost.
    assert_eq!(h["reserved"], 0.75);

    // $2.50 in the last hour (or since midnight, but at least five minutes).
    let now = conductor_metrics::time::now_unix();
    let midnight = h["reset_at"]
        .as_str()
        .and_then(conductor_metrics::time::parse_rfc3339)
        .unwrap()
        - 86_400.0;
    let span = (now - midnight).clamp(300.0, 3_600.0);
    let rate = h["spend_rate_dollars_per_hour"].as_f64().unwrap();
    assert!(
        (rate - 2.5 * 3_600.0 / span).abs() / rate < 0.01,
        "{rate} over {span} s"
    );
    // $0.25 left at that rate.
    let left = 0.25 / rate * 3_600.0;
    let b = get_json(addr, "/api/v1/budget").json();
    let metrics = common::get(addr, "/metrics").text();
    let gauge = common::sample(&metrics, "agent_budget_exhausted_in_seconds").unwrap();
    let table = run_cli(
        &["budget", "--url", &server.url("")],
        &[],
        None,
        Duration::from_secs(20),
    );
    let forecast = table.stdout.lines().last().unwrap().to_string();
    if now + left < midnight + 86_400.0 - 60.0 {
        let at =
            conductor_metrics::time::parse_rfc3339(b["exhausts_at"].as_str().unwrap()).unwrap();
        assert!((at - (now + left)).abs() < 60.0, "{b}");
        assert!((gauge - left).abs() < 60.0, "{gauge} against {left}");
        let hhmm = &b["exhausts_at"].as_str().unwrap()[11..16];
        assert_eq!(
            forecast,
            format!("Forecast:          at this rate, exhausted at {hhmm} UTC")
        );
    } else if now + left > midnight + 86_400.0 + 60.0 {
        assert_eq!(b["exhausts_at"], json!(null));
        assert_eq!(gauge, f64::INFINITY);
        assert_eq!(
            forecast,
            "Forecast:          at this rate, it lasts to the reset at 00:00 UTC"
        );
    }
    server.kill();

    // The ledger is the history, and its times are the rate, after a restart too.
    let server = ServerProc::start(dir.path(), &args, &[]);
    let again = get_json(server.addr(), "/api/v1/budget/history").json();
    assert_eq!(again["points"], h["points"]);
    let rate_again = again["spend_rate_dollars_per_hour"].as_f64().unwrap();
    assert!(
        (rate_again - rate).abs() / rate < 0.01,
        "{rate_again} then {rate}"
    );
}

/// A running run whose tokens cost more than its estimate holds what they cost, so later starts
/// see it; a restart holds the same, and the end charges the cost and frees the rest.
#[test]
fn a_running_runs_reservation_grows_to_what_its_tokens_cost() {
    let dir = TempDir::new();
    let pricing = dir.join("pricing.json");
    std::fs::write(&pricing, r#"{"cheap": {"input": 1.0, "output": 2.0}}"#).unwrap();
    let args = [
        "--pricing",
        pricing.to_str().unwrap(),
        "--daily-budget",
        "3",
    ];
    let mut server = ServerProc::start(dir.path(), &args, &[]);
    let addr = server.addr();
    assert_eq!(
        post_json(addr, "/api/v1/runs", &json!({"run_id": "a"})).status,
        201
    );
    // $1 of input and $1 of output.
    let tokens = json!([{"type": "tokens", "phase": "p", "model": "cheap",
        "input_tokens": 1_000_000, "output_tokens": 500_000}]);
    assert_eq!(
        post_json(addr, "/api/v1/runs/a/events", &tokens).status,
        200
    );
    let run = get_json(addr, "/api/v1/runs/a").json();
    assert_eq!(
        (&run["reserved"], &run["cost"]),
        (&json!(2.0), &json!(null))
    );
    let b = get_json(addr, "/api/v1/budget").json();
    assert_eq!(
        (&b["reserved"], &b["remaining"]),
        (&json!(2.0), &json!(1.0))
    );
    server.kill();

    let server = ServerProc::start(dir.path(), &args, &[]);
    let addr = server.addr();
    assert_eq!(get_json(addr, "/api/v1/runs/a").json()["reserved"], 2.0);
    assert_eq!(get_json(addr, "/api/v1/budget").json()["reserved"], 2.0);
    let done = post_json(addr, "/api/v1/runs/a/complete", &json!({})).json();
    assert_eq!(
        (&done["cost"], &done["reserved"]),
        (&json!(2.0), &json!(null))
    );
    let b = get_json(addr, "/api/v1/budget").json();
    assert_eq!(
        (&b["reserved"], &b["today_spend"]),
        (&json!(0.0), &json!(2.0))
    );
}
