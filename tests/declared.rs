//! Declared metrics through the real binary: a file of families checked at
//! start, `POST /api/v1/metrics` updates that are typed and all or nothing,
//! and counters that come back exact after a `kill -9`.

mod common;

use std::time::Duration;

use common::{get, post_json, run_cli, sample, ServerProc, TempDir};
use serde_json::{json, Value};

const FAMILIES: &str = r#"[
  {"name": "git_merge_total", "type": "counter", "help": "Merges, by result.", "labels": ["result"]},
  {"name": "git_active_merges", "type": "gauge", "help": "Merges under way."},
  {"name": "llm_cost_dollars_total", "type": "counter", "help": "LLM spend.", "labels": ["model"]},
  {"name": "llm_request_duration_seconds", "type": "histogram", "help": "LLM latency.",
   "labels": ["model", "provider"], "buckets": [0.5, 1, 5]}
]"#;

fn start(dir: &TempDir) -> ServerProc {
    let file = dir.join("families.json");
    std::fs::write(&file, FAMILIES).unwrap();
    ServerProc::start(
        &dir.join("data"),
        &["--metrics-file", file.to_str().unwrap()],
        &[],
    )
}

#[test]
fn declared_families_show_from_the_start_and_take_typed_updates() {
    let dir = TempDir::new();
    let server = start(&dir);
    let addr = server.addr();
    let text = get(addr, "/metrics").text();
    assert!(text.contains("# TYPE git_merge_total counter"), "{text}");
    assert!(
        text.contains("# TYPE llm_request_duration_seconds histogram"),
        "{text}"
    );
    assert_eq!(sample(&text, "git_active_merges"), Some(0.0));

    let batch = json!([
        {"name": "git_merge_total", "labels": {"result": "conflict"}, "inc": 1},
        {"name": "git_merge_total", "labels": {"result": "success"}, "inc": 2},
        {"name": "git_active_merges", "set": 3},
        {"name": "git_active_merges", "add": -1},
        {"name": "llm_cost_dollars_total", "labels": {"model": "m"}, "add": 0.1},
        {"name": "llm_cost_dollars_total", "labels": {"model": "m"}, "add": 0.2},
        {"name": "llm_request_duration_seconds", "labels": {"model": "m", "provider": "p"}, "observe": 0.75},
    ]);
    let r = post_json(addr, "/api/v1/metrics", &batch);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["accepted"], 7);
    let text = get(addr, "/metrics").text();
    assert_eq!(
        sample(&text, r#"git_merge_total{result="conflict"}"#),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, r#"git_merge_total{result="success"}"#),
        Some(2.0)
    );
    assert_eq!(sample(&text, "git_active_merges"), Some(2.0));
    assert_eq!(
        sample(&text, r#"llm_cost_dollars_total{model="m"}"#),
        Some(0.1 + 0.2)
    );
    let bucket = r#"llm_request_duration_seconds_bucket{model="m",provider="p",le="1"}"#;
    assert_eq!(sample(&text, bucket), Some(1.0));
    let one = post_json(
        addr,
        "/api/v1/metrics",
        &json!({"name": "git_active_merges", "set": 9}),
    );
    assert_eq!(one.status, 200);
    assert_eq!(
        sample(&get(addr, "/metrics").text(), "git_active_merges"),
        Some(9.0)
    );
}

#[test]
fn a_bad_update_anywhere_refuses_the_batch_and_names_the_field() {
    let dir = TempDir::new();
    let server = start(&dir);
    let addr = server.addr();
    let before = get(addr, "/metrics").text();
    let ok = json!({"name": "git_active_merges", "set": 5});
    let cases = [
        (
            json!([ok, {"name": "nope_total", "inc": 1}]),
            "updates[1].name",
        ),
        (
            json!([ok, {"name": "git_merge_total", "inc": 1}]),
            "updates[1].labels.result",
        ),
        (
            json!([ok, {"name": "git_merge_total", "labels": {"result": "x", "extra": "y"}, "inc": 1}]),
            "updates[1].labels.extra",
        ),
        (
            json!([ok, {"name": "git_merge_total", "labels": {"result": "x"}, "set": 1}]),
            "updates[1].set",
        ),
        (
            json!([ok, {"name": "git_merge_total", "labels": {"result": "x"}, "inc": -2}]),
            "updates[1].inc",
        ),
        (
            json!([ok, {"name": "git_active_merges", "observe": 1}]),
            "updates[1].observe",
        ),
        (
            json!([ok, {"name": "git_active_merges", "set": "Infinity"}]),
            "updates[1].set",
        ),
    ];
    for (body, field) in cases {
        let r = post_json(addr, "/api/v1/metrics", &body);
        assert_eq!(r.status, 400, "{body}");
        assert_eq!(r.json()["error"]["field"], field, "{body}");
    }
    let too_many = Value::Array((0..1001).map(|_| ok.clone()).collect());
    assert_eq!(post_json(addr, "/api/v1/metrics", &too_many).status, 400);
    let mut after = get(addr, "/metrics").text();
    // Only the request counter may move.
    let keep = |t: &str| -> Vec<String> {
        t.lines()
            .filter(|l| !l.starts_with("conductor_") && !l.starts_with("process_"))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(keep(&after), keep(&before));
    after.clear();
    let delete_is_405 = common::request(addr, "DELETE", "/api/v1/metrics", &[], None).unwrap();
    assert_eq!(delete_is_405.status, 405);
    assert_eq!(delete_is_405.header("Allow"), Some("GET, POST"));
}

#[test]
fn get_lists_the_declared_families_in_the_files_format() {
    let dir = TempDir::new();
    let server = start(&dir);
    let r = get(server.addr(), "/api/v1/metrics");
    assert_eq!(r.status, 200, "{}", r.text());
    let families = r.json()["families"].clone();
    // In file order, with the labels and buckets made explicit.
    assert_eq!(
        families[1],
        json!({"name": "git_active_merges", "type": "gauge", "help": "Merges under way.", "labels": []})
    );
    assert_eq!(families[3]["buckets"], json!([0.5, 1.0, 5.0]), "{families}");
    // What it lists is a metrics file the server takes, declaring the same families.
    let listed = dir.join("listed.json");
    std::fs::write(&listed, families.to_string()).unwrap();
    let again = ServerProc::start(
        &dir.join("again"),
        &["--metrics-file", listed.to_str().unwrap()],
        &[],
    );
    let r = get(again.addr(), "/api/v1/metrics");
    assert_eq!(r.json()["families"], families);

    // Without declarations the list is empty; asking leaves nothing refused behind.
    let bare_dir = TempDir::new();
    let bare = ServerProc::start(bare_dir.path(), &[], &[]);
    let r = get(bare.addr(), "/api/v1/metrics");
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), json!({"families": []}));
    let text = get(bare.addr(), "/metrics").text();
    assert!(
        !text.contains("status=\"4"),
        "a refusal was counted: {text}"
    );
}

#[test]
fn counters_and_histograms_survive_a_kill_exactly_and_gauges_keep_their_last_value() {
    let dir = TempDir::new();
    let mut server = start(&dir);
    for i in 0..50 {
        let batch = json!([
            {"name": "git_merge_total", "labels": {"result": format!("r{}", i % 3)}, "inc": 1},
            {"name": "llm_cost_dollars_total", "labels": {"model": "m"}, "add": 0.01},
            {"name": "llm_request_duration_seconds", "labels": {"model": "m", "provider": "p"}, "observe": i as f64 / 10.0},
            {"name": "git_active_merges", "set": i},
        ]);
        assert_eq!(
            post_json(server.addr(), "/api/v1/metrics", &batch).status,
            200
        );
    }
    let keep = |t: &str| -> Vec<String> {
        let ours = ["git_", "llm_"];
        t.lines()
            .filter(|l| ours.iter().any(|p| l.starts_with(p)))
            .map(str::to_string)
            .collect()
    };
    let text = keep(&get(server.addr(), "/metrics").text());
    server.kill();
    let server = start(&dir);
    assert_eq!(keep(&get(server.addr(), "/metrics").text()), text);
    assert!(
        text.contains(&"git_active_merges 49".to_string()),
        "{text:?}"
    );
}

#[test]
fn a_bad_metrics_file_stops_the_start_and_names_the_family_and_field() {
    let dir = TempDir::new();
    let cases = [
        (
            r#"[{"name": "git_merge_total", "type": "counter", "help": "h", "labels": ["ok", "2bad"]}]"#,
            r#"family "git_merge_total": labels[1]"#,
        ),
        (
            r#"[{"name": "agent_cycles_total", "type": "counter", "help": "h"}]"#,
            "the prefix agent_ is reserved",
        ),
        (
            r#"[{"name": "x_seconds", "type": "histogram", "help": "h", "buckets": [1, 1]}]"#,
            r#"family "x_seconds": buckets"#,
        ),
        (
            r#"[{"name": "up_total", "type": "counter", "help": "h"}, {"name": "up", "type": "gauge", "help": "h"}]"#,
            r#"family "up""#,
        ),
        ("not json", "not valid JSON"),
    ];
    for (i, (text, want)) in cases.iter().enumerate() {
        let file = dir.join(format!("bad-{i}.json"));
        std::fs::write(&file, text).unwrap();
        let data = dir.join(format!("data-{i}"));
        let out = run_cli(
            &[
                "serve",
                "--addr",
                "127.0.0.1:0",
                "--data-dir",
                data.to_str().unwrap(),
                "--metrics-file",
                file.to_str().unwrap(),
            ],
            &[],
            None,
            Duration::from_secs(20),
        );
        assert_eq!(out.status.code(), Some(2), "{text}: {}", out.stderr);
        assert!(out.stderr.contains(want), "{text}: {}", out.stderr);
        assert!(out.stderr.contains("--metrics-file"), "{}", out.stderr);
    }
    let missing = run_cli(
        &[
            "serve",
            "--addr",
            "127.0.0.1:0",
            "--metrics-file",
            dir.join("nope.json").to_str().unwrap(),
        ],
        &[],
        None,
        Duration::from_secs(20),
    );
    assert_eq!(missing.status.code(), Some(2), "{}", missing.stderr);
}

#[test]
fn without_declarations_every_update_is_refused() {
    let dir = TempDir::new();
    let server = ServerProc::start(dir.path(), &[], &[]);
    let r = post_json(
        server.addr(),
        "/api/v1/metrics",
        &json!({"name": "x_total", "inc": 1}),
    );
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["field"], "updates[0].name");
    assert!(
        !dir.join("metrics.jsonl").exists() && !dir.join("metrics").exists(),
        "no journal without declarations"
    );
}
