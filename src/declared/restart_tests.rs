//! Declared data across restarts with a changed declarations file: every
//! way a file can change, through the journal and through a snapshot.

use std::path::Path;

use serde_json::{json, Value};

use super::*;
use crate::metrics::Format;
use crate::testing::{quiet, TempDir};

fn open(dir: &Path, file: &str) -> (Declared, Registry) {
    let registry = Registry::new();
    let d = Declared::open(
        dir,
        spec::parse(file).unwrap(),
        &registry,
        &ByteCeiling::new(4 << 20, 16 << 20),
        0,
        quiet(),
    );
    (d.unwrap(), registry)
}

fn post(d: &Declared, body: Value) -> Result<usize, Error> {
    d.update(d.parse(&body)?)
}

/// The scrape's lines of families other than the registry's own.
fn declared_lines(r: &Registry) -> Vec<String> {
    let mut out = Vec::new();
    r.render(&mut out, Format::Text);
    String::from_utf8(out)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with("conductor_"))
        .map(str::to_string)
        .collect()
}

/// Writes a snapshot of everything applied so far and deletes the segments
/// it covers, as a due snapshot would.
pub(super) fn snapshot_now(d: &Declared) {
    let o = lock(&d.order);
    let taken = Taken::take(o.durable, &d.families, &d.snapshots.kept);
    let records = taken.records;
    taken.write(&d.snapshots.dir.join(SNAPSHOT_FILE)).unwrap();
    segments::drop_covered(&d.snapshots.dir, records).unwrap();
}

/// How the data reaches the next start.
#[derive(Clone, Copy, Debug)]
enum Via {
    Journal,
    Snapshot,
}

/// Declares `before`, applies `updates`, then starts with `after` (which
/// takes one more update and, via a snapshot, writes one of its own), and
/// finally with `before` again. Returns the declared lines of the start
/// with `after`, of the last start, and the lines before the change.
fn change(
    via: Via,
    before: &str,
    updates: Value,
    after: &str,
    after_update: Value,
) -> (Vec<String>, Vec<String>, Vec<String>) {
    let dir = TempDir::new(
        &format!("{via:?}-{}", std::thread::current().name().unwrap_or("t")).replace("::", "-"),
    );
    let original = {
        let (d, r) = open(&dir, before);
        post(&d, updates).unwrap();
        if let Via::Snapshot = via {
            snapshot_now(&d);
        }
        declared_lines(&r)
    };
    let changed = {
        let (d, r) = open(&dir, after);
        post(&d, after_update).unwrap();
        if let Via::Snapshot = via {
            snapshot_now(&d);
        }
        declared_lines(&r)
    };
    let (_, r) = open(&dir, before);
    (changed, declared_lines(&r), original)
}

const COUNTER_MODEL: &str =
    r#"[{"name": "c_total", "type": "counter", "help": "h", "labels": ["model"]}]"#;

#[test]
fn a_renamed_label_keeps_its_data_aside_and_gives_it_back() {
    for via in [Via::Journal, Via::Snapshot] {
        let renamed =
            r#"[{"name": "c_total", "type": "counter", "help": "h", "labels": ["result"]}]"#;
        let (changed, back, original) = change(
            via,
            COUNTER_MODEL,
            json!({"name": "c_total", "labels": {"model": "gpt"}, "inc": 50}),
            renamed,
            json!({"name": "c_total", "labels": {"result": "ok"}, "inc": 1}),
        );
        assert_eq!(original, ["c_total{model=\"gpt\"} 50"], "{via:?}");
        assert_eq!(changed, ["c_total{result=\"ok\"} 1"], "{via:?}");
        assert_eq!(back, original, "{via:?}");
    }
}

#[test]
fn an_added_or_removed_label_keeps_the_data_aside() {
    let two =
        r#"[{"name": "c_total", "type": "counter", "help": "h", "labels": ["model", "provider"]}]"#;
    for via in [Via::Journal, Via::Snapshot] {
        let (changed, back, original) = change(
            via,
            COUNTER_MODEL,
            json!({"name": "c_total", "labels": {"model": "gpt"}, "inc": 50}),
            two,
            json!({"name": "c_total", "labels": {"model": "m", "provider": "p"}, "inc": 1}),
        );
        assert_eq!(
            changed,
            ["c_total{model=\"m\",provider=\"p\"} 1"],
            "{via:?}"
        );
        assert_eq!(back, original, "{via:?}");
        let (changed, back, original) = change(
            via,
            two,
            json!({"name": "c_total", "labels": {"model": "gpt", "provider": "p"}, "inc": 50}),
            COUNTER_MODEL,
            json!({"name": "c_total", "labels": {"model": "m"}, "inc": 1}),
        );
        assert_eq!(changed, ["c_total{model=\"m\"} 1"], "{via:?}");
        assert_eq!(back, original, "{via:?}");
    }
}

#[test]
fn labels_declared_in_another_order_still_find_their_data() {
    let swapped =
        r#"[{"name": "c_total", "type": "counter", "help": "h", "labels": ["provider", "model"]}]"#;
    let two =
        r#"[{"name": "c_total", "type": "counter", "help": "h", "labels": ["model", "provider"]}]"#;
    for via in [Via::Journal, Via::Snapshot] {
        let (changed, back, original) = change(
            via,
            two,
            json!({"name": "c_total", "labels": {"model": "gpt", "provider": "p"}, "inc": 50}),
            swapped,
            json!({"name": "c_total", "labels": {"model": "gpt", "provider": "p"}, "inc": 1}),
        );
        assert_eq!(
            changed,
            ["c_total{provider=\"p\",model=\"gpt\"} 51"],
            "{via:?}"
        );
        assert_eq!(
            back,
            ["c_total{model=\"gpt\",provider=\"p\"} 51"],
            "{via:?}"
        );
        assert_eq!(original, ["c_total{model=\"gpt\",provider=\"p\"} 50"]);
    }
}

fn histogram(bounds: &str) -> String {
    format!(r#"[{{"name": "h_seconds", "type": "histogram", "help": "h", "buckets": {bounds}}}]"#)
}

/// Three observations of 0.5 and ten of 50.
fn observations() -> Value {
    let mut v: Vec<Value> = (0..3)
        .map(|_| json!({"name": "h_seconds", "observe": 0.5}))
        .collect();
    v.extend((0..10).map(|_| json!({"name": "h_seconds", "observe": 50})));
    Value::Array(v)
}

#[test]
fn changed_bounds_never_apply_counts_by_position() {
    let one_more = json!({"name": "h_seconds", "observe": 0.5});
    for via in [Via::Journal, Via::Snapshot] {
        let (changed, back, original) = change(
            via,
            &histogram("[1, 10]"),
            observations(),
            &histogram("[1, 100]"),
            one_more.clone(),
        );
        // The journal keeps each observation, so they fall into the new
        // buckets exactly; a snapshot's counts at 10 say nothing of 100,
        // so they are kept aside and the series starts again.
        let want = match via {
            Via::Journal => [
                "h_seconds_bucket{le=\"1\"} 4",
                "h_seconds_bucket{le=\"100\"} 14",
                "h_seconds_bucket{le=\"+Inf\"} 14",
                "h_seconds_sum 502",
                "h_seconds_count 14",
            ],
            Via::Snapshot => [
                "h_seconds_bucket{le=\"1\"} 1",
                "h_seconds_bucket{le=\"100\"} 1",
                "h_seconds_bucket{le=\"+Inf\"} 1",
                "h_seconds_sum 0.5",
                "h_seconds_count 1",
            ],
        };
        assert_eq!(changed, want, "{via:?}");
        // Back under the first bounds: from the journal every observation
        // again; from a snapshot the counts kept aside, while those taken
        // under [1, 100] are kept aside in turn.
        let (le10, count) = match via {
            Via::Journal => ("h_seconds_bucket{le=\"10\"} 4", "h_seconds_count 14"),
            Via::Snapshot => ("h_seconds_bucket{le=\"10\"} 3", "h_seconds_count 13"),
        };
        assert!(back.contains(&le10.to_string()), "{via:?} {back:?}");
        assert!(back.contains(&count.to_string()), "{via:?} {back:?}");
        assert!(original.contains(&"h_seconds_bucket{le=\"10\"} 3".to_string()));
    }
}

#[test]
fn bounds_that_were_bounds_before_take_a_snapshots_counts_exactly() {
    for via in [Via::Journal, Via::Snapshot] {
        let (changed, _, _) = change(
            via,
            &histogram("[1, 10, 100]"),
            observations(),
            &histogram("[1, 100]"),
            json!({"name": "h_seconds", "observe": 5}),
        );
        let want = [
            "h_seconds_bucket{le=\"1\"} 3",
            "h_seconds_bucket{le=\"100\"} 14",
            "h_seconds_bucket{le=\"+Inf\"} 14",
            "h_seconds_sum 506.5",
            "h_seconds_count 14",
        ];
        assert_eq!(changed, want, "{via:?}");
    }
}

#[test]
fn a_changed_type_keeps_the_data_aside() {
    let gauge = r#"[{"name": "x", "type": "gauge", "help": "h", "labels": ["a"]}]"#;
    let hist =
        r#"[{"name": "x", "type": "histogram", "help": "h", "labels": ["a"], "buckets": [1]}]"#;
    for via in [Via::Journal, Via::Snapshot] {
        let (changed, back, original) = change(
            via,
            gauge,
            json!({"name": "x", "labels": {"a": "1"}, "set": 7}),
            hist,
            json!({"name": "x", "labels": {"a": "2"}, "observe": 0.5}),
        );
        assert_eq!(original, ["x{a=\"1\"} 7"]);
        assert!(
            changed.iter().all(|l| !l.contains("a=\"1\"")),
            "{via:?} {changed:?}"
        );
        assert_eq!(back, original, "{via:?}");
    }
}

#[test]
fn a_family_removed_and_declared_again_gets_its_data_back() {
    let other = r#"[{"name": "y", "type": "gauge", "help": "h"}]"#;
    let reshaped = r#"[{"name": "c_total", "type": "counter", "help": "h", "labels": ["other"]}]"#;
    for via in [Via::Journal, Via::Snapshot] {
        let (changed, back, original) = change(
            via,
            COUNTER_MODEL,
            json!({"name": "c_total", "labels": {"model": "gpt"}, "inc": 50}),
            other,
            json!({"name": "y", "set": 1}),
        );
        assert_eq!(changed, ["y 1"], "{via:?}");
        assert_eq!(back, original, "{via:?}");
        // Declared again under the same name with another label: still aside.
        let (changed, back, _) = change(
            via,
            COUNTER_MODEL,
            json!({"name": "c_total", "labels": {"model": "gpt"}, "inc": 50}),
            reshaped,
            json!({"name": "c_total", "labels": {"other": "x"}, "inc": 2}),
        );
        assert_eq!(changed, ["c_total{other=\"x\"} 2"], "{via:?}");
        assert_eq!(back, ["c_total{model=\"gpt\"} 50"], "{via:?}: {back:?}");
    }
}

/// Reads the snapshot's header and lines.
fn snapshot_lines(dir: &Path) -> (Header, Vec<Value>) {
    let mut lines = Vec::new();
    let path = dir.join(STORE).join(SNAPSHOT_FILE);
    let header = read_snapshot(&path, |l, _| lines.push(l.clone())).unwrap();
    (header.unwrap(), lines)
}

#[test]
fn a_journal_from_before_names_is_read_by_position_once_then_by_name() {
    let dir = TempDir::new("legacy-journal");
    // A journal as the version before wrote it: label values by position.
    let legacy = [
        r#"{"u":[["c_total",["gpt"],"inc",50],["g",[],"set",3]]}"#,
        r#"{"u":[["c_total",["gpt"],"inc",1]]}"#,
    ];
    std::fs::write(dir.join(JOURNAL), legacy.join("\n") + "\n").unwrap();
    let file = r#"[{"name": "c_total", "type": "counter", "help": "h", "labels": ["model"]},
                   {"name": "g", "type": "gauge", "help": "h"}]"#;
    let first = {
        let (d, r) = open(&dir, file);
        assert_eq!(d.skipped_on_replay, 0);
        declared_lines(&r)
    };
    assert_eq!(first, ["c_total{model=\"gpt\"} 51", "g 3"]);
    // Rewritten with names at once, so that a renamed label cannot take it.
    let (header, lines) = snapshot_lines(&dir);
    assert!(header.named && header.records == 2, "{header:?}");
    assert!(
        lines.contains(&json!({"series": ["c_total", {"model": "gpt"}, "counter", [51, 0.0]]})),
        "{lines:?}"
    );
    let renamed = r#"[{"name": "c_total", "type": "counter", "help": "h", "labels": ["result"]},
                      {"name": "g", "type": "gauge", "help": "h"}]"#;
    let (d, r) = open(&dir, renamed);
    assert_eq!(declared_lines(&r), ["g 3"]);
    assert_eq!(d.skipped_on_replay, 1);
    drop(d);
    let (_, r) = open(&dir, file);
    assert_eq!(declared_lines(&r), first);
}

#[test]
fn a_snapshot_from_before_names_is_read_by_position_once_and_what_it_kept_stays_kept() {
    let dir = TempDir::new("legacy-snapshot");
    let store = dir.join(STORE);
    std::fs::create_dir_all(&store).unwrap();
    let lines = [
        json!({"snapshot": {"records": 0}}),
        json!({"series": ["c_total", ["gpt"], "counter", [50, 0.5]]}),
        json!({"series": ["h_seconds", [], "histogram", [[3, 3, 13], 501.5]]}),
        // Kept then, as its family was declared with two labels.
        json!({"series": ["c_total", ["a", "b"], "counter", [7, 0.0]]}),
        json!({"u": [["c_total", ["x", "y"], "inc", 2]]}),
    ];
    crate::journal::write_snapshot(&store.join(SNAPSHOT_FILE), lines).unwrap();
    let file = r#"[{"name": "c_total", "type": "counter", "help": "h", "labels": ["model"]},
                   {"name": "h_seconds", "type": "histogram", "help": "h", "buckets": [1, 10]}]"#;
    let first = {
        let (d, r) = open(&dir, file);
        assert_eq!(d.skipped_on_replay, 2);
        declared_lines(&r)
    };
    let want = [
        "c_total{model=\"gpt\"} 50.5",
        "h_seconds_bucket{le=\"1\"} 3",
        "h_seconds_bucket{le=\"10\"} 3",
        "h_seconds_bucket{le=\"+Inf\"} 13",
        "h_seconds_sum 501.5",
        "h_seconds_count 13",
    ];
    assert_eq!(first, want);
    let (header, lines) = snapshot_lines(&dir);
    assert!(header.named, "{header:?}");
    let h = json!({"series": ["h_seconds", {}, "histogram", [[3, 3, 13], 501.5, [1.0, 10.0]]]});
    assert!(lines.contains(&h), "{lines:?}");
    // What was kept by position stays as it was, and is never taken by
    // position again, even by a family with as many labels.
    let two = r#"[{"name": "c_total", "type": "counter", "help": "h", "labels": ["p", "q"]}]"#;
    let (d, r) = open(&dir, two);
    assert_eq!(declared_lines(&r), Vec::<String>::new());
    assert_eq!(d.skipped_on_replay, 4);
    drop(d);
    let (_, r) = open(&dir, file);
    assert_eq!(declared_lines(&r), want);
}
