//! Answers written as they are made, end to end in process: a scrape sent in
//! chunks reads as the whole render does, and a listing written a page at a
//! time reads as the one answer it replaces, wherever its pages and pieces
//! fall. Run in process, to compare with the render and the store.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::app::App;
use crate::client::{self, Received};
use crate::config::Config;
use crate::http::{Limits, Server};
use crate::metrics::Format;
use crate::runs::Status;
use crate::testing::TempDir;

struct Harness {
    server: Server,
    app: Arc<App>,
    _dir: TempDir,
}

impl Harness {
    fn open(name: &str) -> Harness {
        let dir = TempDir::new(name);
        let mut config = Config::for_data_dir(&dir);
        // Room for every run the tests start.
        config.budget.daily_limit = 1e6;
        config.run_timeout = None;
        let app = App::open(config, crate::testing::quiet()).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let server = Server::start(app.clone(), listener, Limits::default()).unwrap();
        Harness {
            server,
            app,
            _dir: dir,
        }
    }

    fn call(&self, method: &str, target: &str, headers: &[(&str, &str)], body: &str) -> Received {
        let authority = self.server.addr().to_string();
        let timeout = Duration::from_secs(60);
        client::exchange(
            &authority,
            method,
            target,
            headers,
            body.as_bytes(),
            timeout,
        )
        .unwrap_or_else(|e| panic!("{method} {target}: {e:?}"))
    }

    fn post(&self, target: &str, body: &Value) -> Value {
        let r = self.call("POST", target, &[], &body.to_string());
        assert!((200..300).contains(&r.status), "{target}: {}", r.status);
        serde_json::from_slice(&r.body).unwrap()
    }
}

/// A scrape with every sample value blanked, except those of the families
/// the test made: the process, the clock and the server's own requests
/// move between two renders.
fn steady(text: &[u8]) -> Vec<String> {
    String::from_utf8(text.to_vec())
        .unwrap()
        .lines()
        .map(|line| match line.rsplit_once(' ') {
            Some((series, _)) if !line.starts_with('#') && !line.starts_with("streamed_") => {
                format!("{series} _")
            }
            _ => line.to_string(),
        })
        .collect()
}

#[test]
fn a_scrape_sent_in_chunks_reads_as_the_whole_render() {
    let h = Harness::open("scrape");
    let registry = &h.app.registry;
    let labels = registry
        .gauge_family("streamed_label_bytes", "Long labels.", &["k"])
        .unwrap();
    let seconds = registry
        .histogram_family(
            "streamed_seconds",
            "Many buckets.",
            &["k"],
            &[0.1, 1.0, 10.0],
        )
        .unwrap();
    for i in 0..4000 {
        let k = format!("{i:05}-{}", "x".repeat(64));
        labels.set(&[&k], f64::from(i) / 3.0);
        seconds.observe(&[&k], f64::from(i % 20));
    }
    // Once, so that the series of a GET answered 200 exist in both.
    assert_eq!(h.call("GET", "/metrics", &[], "").status, 200);
    let om = "application/openmetrics-text; version=1.0.0";
    for (accept, fmt) in [(None, Format::Text), (Some(om), Format::OpenMetrics)] {
        let headers: Vec<_> = accept.map(|a| ("Accept", a)).into_iter().collect();
        let r = h.call("GET", "/metrics", &headers, "");
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-type"), Some(fmt.content_type()));
        assert_eq!(r.header("transfer-encoding"), Some("chunked"));
        assert!(r.header("content-length").is_none());
        assert!(r.header("x-request-id").is_some());
        assert!(r.body.len() > 1 << 20, "{} bytes", r.body.len());
        let mut whole = Vec::new();
        registry.render(&mut whole, fmt);
        let (got, want) = (steady(&r.body), steady(&whole));
        let differ: Vec<_> = got
            .iter()
            .zip(&want)
            .filter(|(a, b)| a != b)
            .take(3)
            .collect();
        assert!(got == want, "{fmt:?} differs: {differ:?}");

        // HEAD: the head alone, with the length the body would have had.
        let head = h.call("HEAD", "/metrics", &headers, "");
        let length: usize = head.header("content-length").unwrap().parse().unwrap();
        assert!(head.header("transfer-encoding").is_none());
        assert!(head.body.is_empty());
        assert!(
            length.abs_diff(r.body.len()) < 1024,
            "{length} for {}",
            r.body.len()
        );
    }
}

#[test]
fn listings_written_a_page_at_a_time_read_as_one_answer() {
    let h = Harness::open("listings");
    // Small messages cross pages by count, large ones by bytes.
    for i in 0..150 {
        let body = if i % 7 == 0 {
            json!({"text": "é\"".repeat(14_000), "i": i})
        } else {
            json!({"i": i, "nested": [{"b": 2.5, "a": null}], "s": "line\nbreak"})
        };
        let run_id = (i % 3 == 0).then(|| format!("r-{i}"));
        h.post(
            "/api/v1/messages",
            &json!({"type": "note", "body": body, "run_id": run_id}),
        );
    }
    let ids: Vec<u64> = h
        .app
        .bus
        .read_after(0, 1000, usize::MAX)
        .iter()
        .map(|m| m.seq)
        .collect();
    let mid = format!("MSG-{:012}", ids[9]);
    let last = format!("MSG-{:012}", ids[149]);
    for (after, limit) in [
        (None, 1000),
        (None, 63),
        (None, 64),
        (None, 65),
        (None, 129),
        (Some(mid.as_str()), 100),
        (Some(last.as_str()), 10),
    ] {
        let from = h.app.bus.cursor(after).unwrap();
        let messages: Vec<Value> = h
            .app
            .bus
            .read_after(from, limit, usize::MAX)
            .iter()
            .map(|m| m.to_json())
            .collect();
        let want = json!({ "messages": messages }).to_string();
        let target = match after {
            Some(a) => format!("/api/v1/messages?limit={limit}&after={a}"),
            None => format!("/api/v1/messages?limit={limit}"),
        };
        let r = h.call("GET", &target, &[], "");
        assert_eq!(r.status, 200, "{target}");
        assert!(r.body == want.as_bytes(), "{target} differs");
        let framing = r.header("transfer-encoding").unwrap_or("length");
        // Chunked past one piece of 64 KiB, framed by its length within it.
        let chunked = want.len() > 64 * 1024;
        assert_eq!(framing == "chunked", chunked, "{target}: {framing}");
    }

    for i in 0..150 {
        let id = format!("run-{i:03}");
        h.post(
            "/api/v1/runs",
            &json!({"run_id": id, "agent": "a", "goal": "g"}),
        );
        let events = json!([{"type": "phase_started", "phase": format!("p{}", i % 5)},
            {"type": "tokens", "phase": "p", "model": "m", "input_tokens": i, "output_tokens": 1}]);
        h.post(&format!("/api/v1/runs/{id}/events"), &events);
        if i % 3 == 0 {
            h.post(
                &format!("/api/v1/runs/{id}/complete"),
                &json!({"cost": 0.01}),
            );
        }
    }
    for (status, after, limit) in [
        (None, None, 1000),
        (None, None, 64),
        (None, None, 65),
        (None, Some("run-063"), 64),
        (Some(Status::Completed), None, 1000),
        (Some(Status::Running), Some("run-001"), 70),
    ] {
        // As the listing printed it whole: each run with its metrics as sent.
        let page = h.app.runs.listing(status, after, limit).unwrap();
        let runs = h.app.runs.runs_of(&page.ids, status);
        let runs: Vec<String> = runs.iter().map(|r| r.to_json_text()).collect();
        let next_after = serde_json::to_string(&page.next_after).unwrap();
        let want = format!(
            r#"{{"next_after":{next_after},"runs":[{}]}}"#,
            runs.join(",")
        );
        let mut target = format!("/api/v1/runs?limit={limit}");
        if let Some(s) = status {
            target.push_str(&format!("&status={}", s.as_str()));
        }
        if let Some(a) = after {
            target.push_str(&format!("&after={a}"));
        }
        let r = h.call("GET", &target, &[], "");
        assert_eq!(r.status, 200, "{target}");
        assert!(r.body == want.as_bytes(), "{target} differs");
    }
    // Refusals come before the first byte, as JSON errors.
    let r = h.call("GET", "/api/v1/messages?after=MSG-999999999999", &[], "");
    assert_eq!(r.status, 404);
    let r = h.call("GET", "/api/v1/runs?after=nobody", &[], "");
    assert_eq!(r.status, 404);
    let error: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(error["error"]["code"], "NOT_FOUND");
}
