//! `repair` never reports success while a record it could not read stays
//! out of the store, and a start after it never skips records silently.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const TIMEOUT: Duration = Duration::from_secs(20);
/// Small enough that 20 messages fill several segments (an eighth each).
const RETAIN: [&str; 2] = ["--retain-messages", "16"];

/// Writes 20 messages with bodies 1 to 20 and stops the server.
fn fill(dir: &Path) {
    let mut server = ServerProc::start(dir, &RETAIN, &[]);
    for i in 1..=20 {
        let r = post_json(
            server.addr(),
            "/api/v1/messages",
            &json!({"type": "t", "body": i}),
        );
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    }
    server.kill();
}

/// The bus's segments, oldest first.
fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut all: Vec<PathBuf> = std::fs::read_dir(dir.join("messages"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    all.sort();
    all
}

/// Flips one byte inside line `line` (1-based) of `path`.
fn flip(path: &Path, line: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    let start: usize = bytes
        .split(|&b| b == b'\n')
        .take(line - 1)
        .map(|l| l.len() + 1)
        .sum();
    bytes[start + 5] ^= 0x01;
    std::fs::write(path, bytes).unwrap();
}

fn bodies_and_appends(server: &ServerProc) -> (Vec<Value>, String) {
    let r = get_json(server.addr(), "/api/v1/messages?limit=1000");
    let bodies = r.json()["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["body"].clone())
        .collect();
    let metrics = String::from_utf8(get(server.addr(), "/metrics").body).unwrap();
    let appends = metrics
        .lines()
        .find(|l| l.starts_with("conductor_messagebus_appends_total "))
        .unwrap()
        .to_string();
    (bodies, appends)
}

#[test]
fn a_damaged_header_of_the_oldest_segment_is_written_again_and_no_record_is_lost() {
    let dir = TempDir::new();
    fill(dir.path());
    let before = {
        let server = ServerProc::start(dir.path(), &RETAIN, &[]);
        bodies_and_appends(&server)
    };
    let oldest = segments(dir.path())[0].clone();
    flip(&oldest, 1);
    let data = dir.path().to_str().unwrap();
    let repaired = run_cli(&["repair", "--data-dir", data], &[], None, TIMEOUT);
    assert_eq!(
        repaired.status.code(),
        Some(0),
        "{}{}",
        repaired.stdout,
        repaired.stderr
    );
    assert!(
        repaired
            .stdout
            .contains("moved 0 damaged lines aside; rebuilt 1 segment headers"),
        "{}",
        repaired.stdout
    );
    let server = ServerProc::start(dir.path(), &RETAIN, &[]);
    assert_eq!(bodies_and_appends(&server), before);
}

#[test]
fn a_record_that_stays_out_fails_the_repair_and_every_start_says_so() {
    let dir = TempDir::new();
    fill(dir.path());
    let oldest = segments(dir.path())[0].clone();
    let first: u64 = {
        let text = std::fs::read_to_string(&oldest).unwrap();
        let header: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        header["segment"]["appended_before"].as_u64().unwrap()
    };
    // The segment's second record.
    flip(&oldest, 3);
    let data = dir.path().to_str().unwrap();
    let repaired = run_cli(&["repair", "--data-dir", data], &[], None, TIMEOUT);
    assert_eq!(
        repaired.status.code(),
        Some(3),
        "{}{}",
        repaired.stdout,
        repaired.stderr
    );
    let name = oldest.display().to_string();
    let want = format!(
        "record {}, line 3: could not be read and stays out of the store",
        first + 1
    );
    assert!(
        repaired.stderr.contains(&name) && repaired.stderr.contains(&want),
        "{want} in {}",
        repaired.stderr
    );
    let server = ServerProc::start(dir.path(), &RETAIN, &[]);
    let line = server.wait_for_stderr(Duration::from_secs(5), |l| {
        l.contains("journal records moved aside by repair are not in the store")
    });
    assert!(
        line.contains(&name) && line.contains("\"records\":1"),
        "{line}"
    );
    let (bodies, appends) = bodies_and_appends(&server);
    assert!(!bodies.contains(&json!(first + 2)), "{bodies:?}");
    assert_eq!(appends, "conductor_messagebus_appends_total 20");
}
