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

/// Starts the server on `dir`'s data with `families` as its metrics file.
fn start_with(dir: &TempDir, families: &str, extra: &[&str]) -> ServerProc {
    let file = dir.join("families.json");
    std::fs::write(&file, families).unwrap();
    let mut args = vec!["--metrics-file", file.to_str().unwrap()];
    args.extend_from_slice(extra);
    ServerProc::start(&dir.join("data"), &args, &[])
}

#[test]
fn a_renamed_label_does_not_take_the_data_of_the_old_one() {
    let dir = TempDir::new();
    let model = r#"[{"name": "c_total", "type": "counter", "help": "h", "labels": ["model"]}]"#;
    let result = r#"[{"name": "c_total", "type": "counter", "help": "h", "labels": ["result"]}]"#;
    let mut server = start_with(&dir, model, &[]);
    let inc = json!({"name": "c_total", "labels": {"model": "gpt"}, "inc": 50});
    assert_eq!(
        post_json(server.addr(), "/api/v1/metrics", &inc).status,
        200
    );
    server.kill();
    let mut server = start_with(&dir, result, &[]);
    let text = get(server.addr(), "/metrics").text();
    assert_eq!(sample(&text, r#"c_total{result="gpt"}"#), None, "{text}");
    assert!(!text.contains("c_total{"), "{text}");
    server.kill();
    let server = start_with(&dir, model, &[]);
    let text = get(server.addr(), "/metrics").text();
    assert_eq!(sample(&text, r#"c_total{model="gpt"}"#), Some(50.0));
}

#[test]
fn an_update_that_would_make_a_value_infinite_is_refused_and_what_was_taken_survives() {
    let dir = TempDir::new();
    // Snapshots after every record, so a restart reads the values from one.
    let mut server = start_with(&dir, FAMILIES, &["--snapshot-bytes", "1"]);
    let addr = server.addr();
    let first = json!([
        {"name": "git_merge_total", "labels": {"result": "ok"}, "inc": 3},
        {"name": "git_merge_total", "labels": {"result": "ok"}, "inc": 1.5e308},
        {"name": "git_active_merges", "set": 1.5e308},
        {"name": "llm_request_duration_seconds", "labels": {"model": "m", "provider": "p"}, "observe": 1.5e308},
    ]);
    assert_eq!(post_json(addr, "/api/v1/metrics", &first).status, 200);
    let before = get(addr, "/metrics").text();
    let cases = [
        (
            json!({"name": "git_merge_total", "labels": {"result": "ok"}, "inc": 1.5e308}),
            "updates[0].inc",
        ),
        (
            json!([{"name": "git_active_merges", "set": 1}, {"name": "git_active_merges", "add": 1.7e308}, {"name": "git_active_merges", "add": 1.7e308}]),
            "updates[2].add",
        ),
        (
            json!({"name": "llm_request_duration_seconds", "labels": {"model": "m", "provider": "p"}, "observe": 1.5e308}),
            "updates[0].observe",
        ),
    ];
    for (body, field) in cases {
        let r = post_json(addr, "/api/v1/metrics", &body);
        assert_eq!(r.status, 400, "{body}");
        assert_eq!(r.json()["error"]["field"], field, "{body}");
    }
    let after = get(addr, "/metrics").text();
    let ours = |t: &str| -> Vec<String> {
        t.lines()
            .filter(|l| l.starts_with("git_") || l.starts_with("llm_"))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(ours(&after), ours(&before));
    let counter = sample(&before, r#"git_merge_total{result="ok"}"#);
    assert_eq!(counter, Some(1.5e308 + 3.0));
    server.kill();
    let server = start_with(&dir, FAMILIES, &["--snapshot-bytes", "1"]);
    assert_eq!(ours(&get(server.addr(), "/metrics").text()), ours(&before));
}

#[test]
fn past_the_byte_ceiling_new_series_go_to_the_overflow_series() {
    let dir = TempDir::new();
    let families = r#"[{"name": "wide", "type": "gauge", "help": "h", "labels": ["a", "b"]}]"#;
    let ceiling = [
        "--declared-exposition-bytes",
        "64KiB",
        "--declared-label-bytes",
        "32KiB",
    ];
    let server = start_with(&dir, families, &ceiling);
    let addr = server.addr();
    let value = "v".repeat(256);
    for batch in 0..10 {
        let updates: Vec<Value> = (0..100)
            .map(|i| json!({"name": "wide", "labels": {"a": format!("{batch}-{i}"), "b": value}, "set": -1.2345678901234567e-300}))
            .collect();
        let r = post_json(addr, "/api/v1/metrics", &Value::Array(updates));
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let text = get(addr, "/metrics").text();
    let declared: usize = text
        .split_inclusive('\n')
        .filter(|l| {
            l.starts_with("wide") || l.starts_with("# HELP wide") || l.starts_with("# TYPE wide")
        })
        .map(str::len)
        .sum();
    assert!(declared <= 64 << 10, "{declared}");
    let series = text.lines().filter(|l| l.starts_with("wide{")).count();
    // About 270 bytes a series: 32 KiB of labels holds about 120.
    assert!((100..130).contains(&series), "{series}");
    assert!(text.contains(r#"wide{a="other",b="other"} "#), "{text}");
    let overflowed = sample(&text, r#"conductor_series_overflow_total{metric="wide"}"#);
    assert_eq!(overflowed, Some(1000.0 - (series - 1) as f64));
}

#[test]
fn a_declaration_that_cannot_fit_under_the_ceiling_stops_the_start() {
    let dir = TempDir::new();
    let file = dir.join("families.json");
    std::fs::write(&file, FAMILIES).unwrap();
    let out = run_cli(
        &[
            "serve",
            "--addr",
            "127.0.0.1:0",
            "--data-dir",
            dir.join("data").to_str().unwrap(),
            "--metrics-file",
            file.to_str().unwrap(),
            "--declared-exposition-bytes",
            "1KiB",
        ],
        &[],
        None,
        Duration::from_secs(20),
    );
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
    assert!(out.stderr.contains("byte ceiling"), "{}", out.stderr);
    assert!(
        out.stderr.contains("--declared-exposition-bytes"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_declared_counter_never_goes_backwards() {
    let dir = TempDir::new();
    let server = start(&dir);
    let inc = json!({"name": "git_merge_total", "labels": {"result": "ok"}, "inc": 8.9e15});
    let batch = Value::Array(vec![inc; 1000]);
    let mut last = 0.0;
    for _ in 0..3 {
        assert_eq!(
            post_json(server.addr(), "/api/v1/metrics", &batch).status,
            200
        );
        let text = get(server.addr(), "/metrics").text();
        let now = sample(&text, r#"git_merge_total{result="ok"}"#).unwrap();
        assert!(now > last, "{now} after {last}");
        last = now;
    }
    assert!((last - 3000.0 * 8.9e15).abs() < 1e6, "{last}");
}
