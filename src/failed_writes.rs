//! Every route that writes, with its journal write made to fail: the answer
//! is a 500 that names no path, nothing it would change has changed (runs,
//! budget, messages, declared series, metrics), and the same request then
//! succeeds. Run in process, since the failures come from the journal's
//! test seam ([`crate::journal::faults`]).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::app::App;
use crate::client;
use crate::config::Config;
use crate::http::{Limits, Server};
use crate::journal::faults;
use crate::testing::TempDir;

struct Harness {
    dir: PathBuf,
    server: Server,
    _app: Arc<App>,
}

impl Harness {
    fn open(dir: &Path) -> Harness {
        Harness::open_with(dir, None)
    }

    fn open_with(dir: &Path, run_timeout: Option<Duration>) -> Harness {
        let declared = crate::declared::spec::parse(
            r#"[{"name": "git_merge_total", "type": "counter", "help": "Merges.", "labels": ["result"]}]"#,
        )
        .unwrap();
        let config = Config {
            declared,
            run_timeout,
            ..Config::for_data_dir(dir)
        };
        let app = App::open(config, crate::testing::quiet()).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let server = Server::start(app.clone(), listener, Limits::default()).unwrap();
        Harness {
            dir: dir.to_path_buf(),
            server,
            _app: app,
        }
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let authority = self.server.addr().to_string();
        let headers = [("Content-Type", "application/json")];
        let r = client::exchange(
            &authority,
            method,
            path,
            &headers,
            body.as_bytes(),
            Duration::from_secs(30),
        )
        .unwrap();
        let value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
        (r.status, value)
    }

    /// Everything a write could change, as clients see it.
    fn seen(&self) -> Value {
        let (_, runs) = self.call("GET", "/api/v1/runs?limit=1000", None);
        let (_, mut budget) = self.call("GET", "/api/v1/budget", None);
        // The forecast moves with the clock: a spend rate over a window
        // that slides, and when the budget runs out at that rate.
        if let Some(b) = budget.as_object_mut() {
            for moving in ["reset_unix", "exhausts_at", "spend_rate_dollars_per_hour"] {
                b.remove(moving);
            }
        }
        let (_, messages) = self.call("GET", "/api/v1/messages?limit=1000", None);
        let authority = self.server.addr().to_string();
        let metrics = client::exchange(
            &authority,
            "GET",
            "/metrics",
            &[],
            b"",
            Duration::from_secs(30),
        )
        .unwrap();
        // Requests, connections and the clock move with every call.
        let moving = [
            "conductor_api_requests",
            "conductor_http_",
            "conductor_uptime",
            "agent_budget_exhausted_in_seconds",
        ];
        let metrics: Vec<String> = String::from_utf8_lossy(&metrics.body)
            .lines()
            .filter(|l| !l.starts_with('#') && !moving.iter().any(|m| l.starts_with(m)))
            .filter(|l| !l.starts_with("process_"))
            .map(str::to_string)
            .collect();
        json!({"runs": runs, "budget": budget, "messages": messages, "metrics": metrics})
    }

    /// Sends the request with the next write under the data dir failing
    /// and checks it changed nothing; then sends it again and returns that
    /// answer.
    fn fails_then_succeeds(&self, method: &str, path: &str, body: Value) -> (u16, Value) {
        let before = self.seen();
        faults::fail_writes(&self.dir, 0, 1);
        let (status, answer) = self.call(method, path, Some(body.clone()));
        faults::fail_writes(&self.dir, 0, 0);
        assert_eq!(status, 500, "{method} {path}: {answer}");
        assert_eq!(answer["error"]["message"], "storage write failed");
        assert!(answer["error"]["request_id"].is_string(), "{answer}");
        let text = answer.to_string();
        assert!(!text.contains(self.dir.to_str().unwrap()), "{answer}");
        assert_eq!(self.seen(), before, "{method} {path} changed something");
        let (status, answer) = self.call(method, path, Some(body));
        assert!((200..300).contains(&status), "{method} {path}: {answer}");
        (status, answer)
    }
}

fn temp_dir(name: &str) -> TempDir {
    TempDir::new(&format!("failed-writes-{name}"))
}

#[test]
fn a_failed_write_changes_nothing_on_any_route_and_a_retry_succeeds() {
    let dir = temp_dir("routes");
    let h = Harness::open(&dir);
    let start = |id: &str| json!({"run_id": id, "agent": "a"});
    h.fails_then_succeeds("POST", "/api/v1/runs", start("r1"));
    let tokens = json!([{"type": "phase_started", "phase": "plan"},
        {"type": "tokens", "phase": "plan", "model": "m", "input_tokens": 1000, "output_tokens": 10}]);
    h.fails_then_succeeds("POST", "/api/v1/runs/r1/events", tokens);
    h.fails_then_succeeds("POST", "/api/v1/runs/r1/complete", json!({}));
    for (id, action, body) in [
        ("r2", "complete", json!({"cost": 0.25})),
        ("r3", "fail", json!({"error": "boom"})),
        ("r4", "cancel", json!({})),
    ] {
        h.call("POST", "/api/v1/runs", Some(start(id)));
        h.fails_then_succeeds("POST", &format!("/api/v1/runs/{id}/{action}"), body);
    }
    h.fails_then_succeeds("POST", "/api/v1/agent/trigger", json!({}));
    h.fails_then_succeeds("POST", "/api/v1/budget/spend", json!({"amount": 0.1}));
    h.fails_then_succeeds(
        "POST",
        "/api/v1/messages",
        json!({"type": "t", "body": {"k": 1}}),
    );
    let update = json!({"name": "git_merge_total", "labels": {"result": "ok"}, "inc": 1});
    h.fails_then_succeeds("POST", "/api/v1/metrics", update);
    let progress = json!([
        {"type": "run_started", "run_id": "g1", "work_order_id": "w"},
        {"type": "tokens", "run_id": "g1", "phase": "act", "model": "m", "input_tokens": 5, "output_tokens": 5},
        {"type": "run_completed", "run_id": "g1", "result": "succeeded"},
    ]);
    h.fails_then_succeeds("POST", "/api/v1/events", progress);
    let seen = h.seen();
    drop(h);
    // What was acknowledged is what a restart finds, counters included,
    // but for those that count since the process started.
    let again = Harness::open(&dir).seen();
    let since_start = [
        "conductor_events_published_total",
        "agent_budget_spend_total",
        "agent_cost_dollars_total",
        "conductor_pricing_unknown_models_total",
    ];
    assert_eq!(again["runs"], seen["runs"]);
    assert_eq!(again["budget"], seen["budget"]);
    assert_eq!(again["messages"], seen["messages"]);
    let lost: Vec<&Value> = seen["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| {
            !since_start
                .iter()
                .any(|m| l.as_str().unwrap().starts_with(m))
        })
        .filter(|l| !again["metrics"].as_array().unwrap().contains(l))
        .collect();
    assert_eq!(lost, Vec::<&Value>::new());
}

#[test]
fn an_end_whose_ledger_copy_fails_is_acknowledged_and_charged_once() {
    let dir = temp_dir("ledger");
    let h = Harness::open(&dir);
    h.call("POST", "/api/v1/runs", Some(json!({"run_id": "r"})));
    // The run's end is written; the ledger copy after it fails.
    faults::fail_writes(&dir, 1, 1);
    let (status, body) = h.call(
        "POST",
        "/api/v1/runs/r/complete",
        Some(json!({"cost": 0.5})),
    );
    faults::fail_writes(&dir, 0, 0);
    assert_eq!((status, body["status"].as_str()), (200, Some("completed")));
    let (_, budget) = h.call("GET", "/api/v1/budget", None);
    assert_eq!(budget["today_spend"], 0.5);
    drop(h);
    for _ in 0..2 {
        let h = Harness::open(&dir);
        let (_, budget) = h.call("GET", "/api/v1/budget", None);
        assert_eq!(
            (
                budget["today_spend"].as_f64(),
                budget["spend_events"].as_u64()
            ),
            (Some(0.5), Some(1))
        );
    }
    let ledgers: Vec<_> = std::fs::read_dir(dir.join("budget")).unwrap().collect();
    assert_eq!(ledgers.len(), 1);
    let text = std::fs::read_to_string(ledgers[0].as_ref().unwrap().path()).unwrap();
    assert_eq!(text.matches("\"run_id\":\"r\"").count(), 1, "{text}");
}

#[test]
fn the_run_timeout_gives_up_on_a_run_it_cannot_end_after_bounded_tries() {
    let dir = temp_dir("timeout");
    let timeout = Duration::from_millis(100);
    let h = Harness::open_with(&dir, Some(timeout));
    let (status, _) = h.call("POST", "/api/v1/runs", Some(json!({"run_id": "stuck"})));
    assert_eq!(status, 201);
    const ARMED: u64 = 1000;
    faults::fail_writes(&dir, 0, ARMED);
    let given_up = |h: &Harness| {
        let authority = h.server.addr().to_string();
        let r = client::exchange(
            &authority,
            "GET",
            "/metrics",
            &[],
            b"",
            Duration::from_secs(30),
        );
        let text = String::from_utf8(r.unwrap().body).unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix("conductor_run_timeout_given_up_total "))
            .map(|v| v.to_string())
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while given_up(&h).as_deref() != Some("1") {
        assert!(std::time::Instant::now() < deadline, "never gave up");
        std::thread::yield_now();
    }
    // Each try is one failed write of the run's end: five, then no more,
    // however many checks follow (a check runs every 10 ms here).
    assert_eq!(faults::armed(&dir), ARMED - 5);
    std::thread::sleep(timeout * 5);
    assert_eq!(
        faults::armed(&dir),
        ARMED - 5,
        "tried again after giving up"
    );
    assert_eq!(given_up(&h).as_deref(), Some("1"));
    faults::fail_writes(&dir, 0, 0);
    let (_, run) = h.call("GET", "/api/v1/runs/stuck", None);
    assert_eq!(run["status"], "running", "{run}");
}
