//! `conductor-metrics demo` through the real binary: its summary agrees with the server's
//! counters, the same seed gives the same summary, budget refusals are counted, the example
//! declarations get updates for every family without a refusal, and its exit codes.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{get, get_json, run_cli, CliOutput, ServerProc, TempDir};

const DEMO_TIMEOUT: Duration = Duration::from_secs(60);
/// A daily budget no demo here comes near, so every run is admitted.
const AMPLE_BUDGET: [&str; 2] = ["--daily-budget", "100000"];

fn demo(server: &ServerProc, extra: &[&str]) -> CliOutput {
    let url = server.url("");
    let mut args = vec!["demo", "--url", &url];
    args.extend_from_slice(extra);
    let out = run_cli(&args, &[], None, DEMO_TIMEOUT);
    assert!(
        out.status.success(),
        "demo failed: {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        out.stdout,
        out.stderr
    );
    out
}

/// The numbers of the summary line `demo: 5 runs, 3 completed, ...`, by the word after each.
fn summary(stdout: &str) -> (String, BTreeMap<String, u64>) {
    let line = stdout
        .lines()
        .last()
        .unwrap_or_else(|| panic!("no output"))
        .to_string();
    let body = line
        .strip_prefix("demo: ")
        .unwrap_or_else(|| panic!("not a summary line: {line:?}"));
    let counts = body
        .split(", ")
        .map(|part| {
            let (n, what) = part.split_once(' ').unwrap();
            let word = what.split_whitespace().next().unwrap().to_string();
            (word, n.parse().unwrap_or_else(|_| panic!("{line:?}")))
        })
        .collect();
    (line, counts)
}

/// The sum of every sample of family `name` (its labelled series included), or
/// the one series `name` when it carries labels.
fn total(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, v) = l.rsplit_once(' ')?;
            // A name with labels matches that one series; a bare name, every
            // series of the family.
            let family = series.split('{').next()?;
            let matched = if name.contains('{') {
                series == name
            } else {
                family == name
            };
            matched.then(|| v.parse::<f64>().unwrap())
        })
        .sum()
}

#[test]
fn summary_matches_the_servers_counters_and_the_seed_fixes_it() {
    let dir = TempDir::new();
    let server = ServerProc::start(dir.path(), &AMPLE_BUDGET, &[]);
    let out = demo(&server, &["--runs", "5", "--seed", "7"]);
    let (line, n) = summary(&out.stdout);
    assert_eq!(
        out.stdout.lines().count(),
        6,
        "one line per run, then the summary"
    );
    assert_eq!(n["runs"], 5, "{line}");
    assert!(!n.contains_key("refused"), "{line}");
    assert_eq!(n["completed"] + n["failed"] + n["cancelled"], 5, "{line}");
    assert!(n["events"] > 0 && n["messages"] > 0, "{line}");
    // One triage spend per run, on a server with the budget route.
    assert_eq!(n["budget"], 5, "{line}");
    // Nothing declared, so no metric updates, and nothing was refused on the way to knowing it.
    assert!(!n.contains_key("metric"), "{line}");
    assert_eq!(refusals(&server), Vec::<serde_json::Value>::new());

    let r = get(server.addr(), "/metrics");
    assert_eq!(r.status, 200);
    let text = r.text();
    let started = total(&text, "agent_runs_started_total");
    let ended = [
        ("completed", r#"agent_cycles_total{outcome="completed"}"#),
        ("failed", r#"agent_cycles_total{outcome="failed"}"#),
        ("cancelled", r#"agent_cycles_total{outcome="cancelled"}"#),
    ];
    for (word, metric) in ended {
        assert_eq!(total(&text, metric), n[word] as f64, "{metric} vs {line}");
    }
    assert_eq!(started, 5.0, "{line}");
    assert_eq!(
        started,
        ended.iter().map(|(_, m)| total(&text, m)).sum::<f64>()
    );
    assert_eq!(total(&text, "conductor_active_runs"), 0.0);
    assert_eq!(
        total(&text, "conductor_messagebus_appends_total"),
        n["messages"] as f64
    );
    for family in [
        "agent_iterations_total",
        "agent_phases_total",
        "agent_gate_results_total",
        "agent_tokens_total",
        "agent_phase_duration_seconds_count",
    ] {
        assert!(total(&text, family) > 0.0, "{family} did not move");
    }
    // The simulated clock makes iterations last minutes, not the microseconds the demo took.
    let iterations = total(&text, "agent_iteration_duration_seconds_count");
    let seconds = total(&text, "agent_iteration_duration_seconds_sum");
    assert!(
        iterations > 0.0 && seconds / iterations > 60.0,
        "{seconds} s over {iterations} iterations"
    );

    let runs = get_json(server.addr(), "/api/v1/runs").json();
    let runs = runs["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 5);
    for run in runs {
        assert!(run["work_order_id"].as_str().unwrap().starts_with("WO-"));
        assert!(run["strategy"].is_string() && run["max_iterations"].is_u64());
    }

    // The same seed against a fresh server: the same summary, whatever the clock says.
    let again_dir = TempDir::new();
    let again = ServerProc::start(again_dir.path(), &AMPLE_BUDGET, &[]);
    let (again_line, _) = summary(&demo(&again, &["--runs", "5", "--seed", "7"]).stdout);
    assert_eq!(again_line, line);
    // And against the same server: fresh run ids, so nothing conflicts.
    let (same_server_line, _) = summary(&demo(&server, &["--runs", "5", "--seed", "7"]).stdout);
    assert!(same_server_line.starts_with("demo: 5 runs, "));
}

/// The requests the server logged as answered with a 4xx.
fn refusals(server: &ServerProc) -> Vec<serde_json::Value> {
    server
        .stderr_json()
        .into_iter()
        .filter(|l| {
            l["msg"] == "request" && (400..500).contains(&l["status"].as_u64().unwrap_or(0))
        })
        .collect()
}

#[test]
fn with_the_example_declarations_every_family_moves_and_nothing_is_refused() {
    let dir = TempDir::new();
    let file = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/examples/orchestrator-metrics.json"
    );
    let mut args = AMPLE_BUDGET.to_vec();
    args.extend(["--metrics-file", file]);
    let server = ServerProc::start(dir.path(), &args, &[]);
    let out = demo(&server, &["--runs", "20", "--seed", "1"]);
    let (line, n) = summary(&out.stdout);
    assert!(n["metric"] > 0, "{line}");
    assert_eq!(refusals(&server), Vec::<serde_json::Value>::new());

    let text = get(server.addr(), "/metrics").text();
    let declared: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
    for family in declared.as_array().unwrap() {
        let name = family["name"].as_str().unwrap();
        match family["type"].as_str().unwrap() {
            "histogram" => assert!(total(&text, &format!("{name}_count")) > 0.0, "{name}"),
            "counter" => assert!(total(&text, name) > 0.0, "{name}"),
            // A gauge may end at 0 (no merge in progress); it must have been set.
            _ => assert!(
                text.lines()
                    .any(|l| l.starts_with(name) && !l.starts_with('#')),
                "{name}"
            ),
        }
    }
    assert_eq!(total(&text, r#"tasks_by_state{status="ready"}"#), 0.0);
    assert_eq!(
        total(&text, r#"tasks_by_state{status="complete"}"#),
        n["completed"] as f64
    );
}

#[test]
fn starts_refused_by_the_budget_are_counted_not_fatal() {
    let dir = TempDir::new();
    // Room for one run's estimate; that run's token cost then exhausts the day.
    let server = ServerProc::start(dir.path(), &["--daily-budget", "0.20"], &[]);
    let out = demo(&server, &["--runs", "5", "--seed", "7"]);
    let (line, n) = summary(&out.stdout);
    let refused = n.get("refused").copied().unwrap_or(0);
    assert!(refused >= 1, "{line}");
    assert_eq!(
        n["completed"] + n["failed"] + n["cancelled"] + refused,
        5,
        "{line}"
    );
    assert_eq!(
        out.stdout.matches("refused: budget exhausted").count() as u64,
        refused
    );
    let text = get(server.addr(), "/metrics").text();
    assert_eq!(
        total(&text, "agent_budget_rejections_total"),
        refused as f64
    );
    assert_eq!(
        total(&text, "agent_runs_started_total"),
        (5 - refused) as f64
    );
}

#[test]
fn exit_codes_for_an_unreachable_server_and_bad_flags() {
    let nothing = common::RefusedAddr::new();
    let url = format!("http://{}", nothing.addr());
    let out = run_cli(&["demo", "--url", &url], &[], None, DEMO_TIMEOUT);
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    assert!(out.stderr.contains("cannot connect"), "{}", out.stderr);
    for bad in [
        &["demo", "--runs", "0"][..],
        &["demo", "--seed", "x"],
        &["demo", "--url", "https://x"],
        &["demo", "--workers", "2"],
    ] {
        let out = run_cli(bad, &[], None, DEMO_TIMEOUT);
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {}", out.stderr);
    }
}
