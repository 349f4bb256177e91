//! Declared metrics: families declared in `--metrics-file` and updated over HTTP, each batch
//! checked all or nothing ([`update`]), journalled as one record (`DATA_DIR/metrics/`) and applied
//! once synced, in journal order, so a replay restores every value exactly. Records and
//! snapshot series are self-contained: after a declarations change a start takes what fits by
//! label name and bucket bound and keeps the rest as it was. Bounded per family by the series
//! cap, in total by a [`Ceiling`]; past either, label sets go to overflow.

mod families;
#[cfg(test)]
mod restart_tests;
pub mod spec;
pub mod update;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{json, Value};

pub use spec::Declaration;
pub use update::Update;

use crate::commit_queue::CommitQueue;
use crate::error::Error;
use crate::log::Logger;
use crate::metrics::{ByteCeiling, Registry};
use crate::segments::{self, Segments};
use families::{with_family, Families, Handle};
use update::Positional;

/// The unsegmented journal's file name, moved into [`STORE`] at first start.
pub const JOURNAL: &str = "metrics.jsonl";

/// The store's directory in the data dir: journal segments and snapshot.
pub const STORE: &str = "metrics";

/// How far the journal is applied and when the next snapshot is due.
#[derive(Default)]
struct Order {
    /// Journal records applied, ever.
    durable: u64,
    due: segments::SnapshotDue,
}

/// The declared families and their journal.
pub struct Declared {
    families: Arc<Families>,
    queue: Option<CommitQueue>,
    order: Arc<Mutex<Order>>,
    snapshots: Arc<Snapshots>,
    /// Updates and snapshot series replay left out: their family changed.
    pub skipped_on_replay: u64,
}

/// Where snapshots go and when, and what they carry as it was.
struct Snapshots {
    dir: PathBuf,
    /// The journal growth after which one is due; 0: none.
    every: u64,
    /// What the declarations did not take at start, as it was.
    kept: Arc<Vec<Value>>,
    log: Logger,
}

impl Declared {
    /// Registers `declared` under `ceiling` (a refused family: [`Error::Invalid`] naming it),
    /// reads the snapshot under `dir` and replays the later journal (nothing declared: no
    /// journal, no thread); snapshots each `snapshot_bytes` of journal (0: never). A store without
    /// label names is read by position once, then snapshotted with names at once, so no later
    /// start reads a position.
    pub fn open(
        dir: &Path,
        declared: Vec<Declaration>,
        registry: &Registry,
        ceiling: &ByteCeiling,
        snapshot_bytes: u64,
        log: Logger,
    ) -> Result<Declared, Error> {
        let families = Arc::new(Families::register(declared, &registry.within(ceiling))?);
        let mut order = Order::default();
        let mut snapshots = Snapshots {
            dir: dir.join(STORE),
            every: snapshot_bytes,
            kept: Arc::default(),
            log,
        };
        let queue = if families.declared.is_empty() {
            None
        } else {
            let (journal, by_position) = snapshots.replay(&dir.join(JOURNAL), &families)?;
            order.durable = journal.appended();
            if by_position {
                let taken = Taken::take(order.durable, &families, &snapshots.kept);
                let message = "declared metrics rewritten with their label names";
                snapshots.write(taken, message).map_err(|e| {
                    Error::Storage(format!(
                        "cannot rewrite the declared metrics with their label names: {e}"
                    ))
                })?;
            }
            let queue = CommitQueue::start(journal, "metrics")
                .map_err(|e| Error::Storage(e.to_string()))?;
            Some(queue)
        };
        let skipped_on_replay = snapshots
            .kept
            .iter()
            .map(|k| k["u"].as_array().map_or(1, Vec::len) as u64)
            .sum();
        Ok(Declared {
            families,
            queue,
            order: Arc::new(Mutex::new(order)),
            snapshots: Arc::new(snapshots),
            skipped_on_replay,
        })
    }

    pub fn declarations(&self) -> &[Declaration] {
        &self.families.declared
    }

    /// Checks a body (an update or an array) against the declarations and values, all or nothing.
    pub fn parse(&self, body: &Value) -> Result<Vec<Update>, Error> {
        let updates = update::parse_batch(body, &self.families.declared, &self.families.index)?;
        self.families.check(&updates)?;
        Ok(updates)
    }

    /// Journals `updates` as one record; once durable, applies them in journal order and
    /// returns their count. A failed write applies nothing.
    pub fn update(&self, updates: Vec<Update>) -> Result<usize, Error> {
        let Some(queue) = &self.queue else {
            return Err(Error::invalid(
                "updates[0].name",
                "no metrics are declared (see --metrics-file)",
            ));
        };
        let record = update::record(&updates, &self.families.declared);
        let bytes = record.len() as u64 + 1;
        let (families, order) = (self.families.clone(), self.order.clone());
        let snapshots = self.snapshots.clone();
        let waiting = queue.submit_waiting(vec![record], move |outcome| {
            outcome.map_err(|e| Error::Storage(e.to_string()))?;
            let mut o = lock(&order);
            families.apply(&updates);
            o.durable += 1;
            snapshots.take_if_due(&mut o, bytes, &families, &order);
            Ok(updates.len())
        });
        let failed = "the declared metrics' committer failed";
        let failed = || Err(Error::Storage(failed.into()));
        waiting.wait().unwrap_or_else(failed)
    }
}

impl Snapshots {
    /// Reads the snapshot and the later journal into `families`, keeping what they do not take;
    /// returns the journal and whether anything was read by position.
    fn replay(
        &mut self,
        old_journal: &Path,
        families: &Families,
    ) -> Result<(Segments, bool), Error> {
        // Positions are read only where no snapshot with names exists.
        let mut positional = Positional {
            allowed: true,
            seen: 0,
        };
        let mut kept = Vec::new();
        let mut skipped: Vec<Value> = Vec::new();
        let (declared, index) = (&families.declared, &families.index);
        let mut replay = |record: &[u8], positional: &mut Positional| {
            let updates = update::from_record(record, declared, index, &mut skipped, positional);
            families.apply(&updates);
        };
        let header = read_snapshot(&self.dir.join(SNAPSHOT_FILE), |line, header| {
            positional.allowed = !header.named;
            if line.get("u").is_some() {
                replay(line.to_string().as_bytes(), &mut positional);
            } else if families.restore(line, &mut positional).is_none() {
                kept.push(line.clone());
            }
        })
        .map_err(|e| Error::Storage(format!("cannot read the declared metrics' snapshot: {e}")))?;
        positional.allowed = header.is_none_or(|h| !h.named);
        let sizes = segments::SegmentRetention::snapshotted(self.every);
        let journal = Segments::open(
            &self.dir,
            Some(old_journal),
            sizes,
            Some(header.map_or(0, |h| h.records)),
            |record| {
                replay(record, &mut positional);
                Ok(())
            },
        )
        .map_err(Error::Storage)?;
        if !skipped.is_empty() {
            kept.push(serde_json::json!({ "u": skipped }));
        }
        self.kept = Arc::new(kept);
        Ok((journal, positional.allowed && positional.seen > 0))
    }

    /// Writes `taken` as the snapshot, deletes the segments it covers and logs `message`.
    fn write(&self, taken: Taken, message: &str) -> Result<u64, String> {
        let (dir, records) = (&self.dir, taken.records);
        let size = taken
            .write(&dir.join(SNAPSHOT_FILE))
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        let dropped = segments::drop_covered(dir, records)?;
        let fields = [
            ("records", records.into()),
            ("bytes", size.into()),
            ("segments_deleted", dropped.into()),
        ];
        self.log.info(message, &fields);
        Ok(size)
    }

    /// Counts `grown` journal bytes applied; under the applying lock, takes a due snapshot for
    /// its own thread to write.
    fn take_if_due(
        self: &Arc<Self>,
        o: &mut Order,
        grown: u64,
        families: &Arc<Families>,
        order: &Arc<Mutex<Order>>,
    ) {
        if !o.due.grew(grown, self.every) {
            return;
        }
        let taken = Taken::take(o.durable, families, &self.kept);
        let (me, order) = (self.clone(), order.clone());
        let write = move || {
            let written = me.write(taken, "declared metrics snapshot written");
            if let Err(e) = &written {
                me.log.warn(
                    "declared metrics snapshot failed",
                    &[("error", e.as_str().into())],
                );
            }
            lock(&order).due.done(written.ok());
        };
        if std::thread::Builder::new()
            .name("metrics-snapshot".into())
            .spawn(write)
            .is_err()
        {
            o.due.done(None);
        }
    }
}

fn lock(order: &Mutex<Order>) -> MutexGuard<'_, Order> {
    // Each step under it completes or panics before changing anything: poison is harmless.
    order.lock().unwrap_or_else(|e| e.into_inner())
}

/// The snapshot format this version writes: label names and bucket bounds.
const FORMAT: u64 = 2;

/// The snapshot's file name, in [`STORE`].
const SNAPSHOT_FILE: &str = "snapshot";

/// The declared metrics at one journal record: taken quickly, written later by [`Taken::write`]
/// as `metrics/snapshot`, in the journal's line format: `{"snapshot":{"records":N,"format":2}}`;
/// per series `{"series":[name,{label:value,...},type,value]}` (a counter's `parts`, a gauge's
/// value, a histogram's `[cumulative counts, sum, bounds]`); then, as they were, lines of
/// families no longer declared so; and `{"end":N}`. Before format 2, labels are positional and
/// counts unbounded ([`Positional`]).
struct Taken {
    /// The journal records it covers: those numbered below this.
    records: u64,
    /// By family index: each series' number and value.
    series: Vec<(usize, u32, Value)>,
    families: Arc<Families>,
    /// What the declarations in force did not take, as it was.
    kept: Arc<Vec<Value>>,
}

impl Taken {
    fn take(records: u64, families: &Arc<Families>, kept: &Arc<Vec<Value>>) -> Taken {
        let mut series = Vec::new();
        for (i, handle) in families.handles.iter().enumerate() {
            let mut add = |n, v| series.push((i, n, v));
            match handle {
                Handle::Counter(f) => f.each(|n, c| add(n, json!(c.parts()))),
                Handle::Gauge(f) => f.each(|n, g| add(n, json!(g.get()))),
                Handle::Histogram(f) => f.each(|n, h| {
                    let mut counts = Vec::new();
                    let (sum, _) = h.snapshot(&mut counts);
                    add(n, json!([counts, sum, families.declared[i].buckets]));
                }),
            }
        }
        Taken {
            records,
            series,
            families: families.clone(),
            kept: kept.clone(),
        }
    }

    /// Writes it at `path`, crash-only; returns its bytes.
    fn write(self, path: &Path) -> std::io::Result<u64> {
        let families = &self.families;
        let series = self.series.into_iter().filter_map(|(i, n, value)| {
            let d = &families.declared[i];
            let values = with_family!(&families.handles[i], |f| f.label_values(n))?;
            let labels = d.labels.iter().cloned();
            let labels = crate::ordered::object(labels.zip(values.into_iter().map(Value::String)));
            Some(json!({"series": [d.name, labels, d.kind.as_str(), value]}))
        });
        let head = json!({"snapshot": {"records": self.records, "format": FORMAT}});
        let all = std::iter::once(head)
            .chain(series)
            .chain(self.kept.iter().cloned());
        crate::journal::write_snapshot(path, all)
    }
}

/// A snapshot's header: the journal records it covers, and whether it names labels and bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Header {
    records: u64,
    named: bool,
}

/// Reads the snapshot at `path`, handing each line after the header to `line` with the header;
/// returns the header, `None` without a snapshot. Refuses a line that is not a snapshot's.
fn read_snapshot(
    path: &Path,
    mut line: impl FnMut(&Value, Header),
) -> Result<Option<Header>, String> {
    let mut header = None;
    crate::journal::read_snapshot(path, |v| {
        if let Some(records) = v["snapshot"]["records"].as_u64() {
            let named = v["snapshot"]["format"]
                .as_u64()
                .is_some_and(|f| f >= FORMAT);
            header = Some(Header { records, named });
        } else if let (Some(h), true) = (header, v.get("series").is_some() || v.get("u").is_some())
        {
            line(&v, h);
        } else {
            return Err("not a snapshot line".into());
        }
        Ok(())
    })?;
    Ok(header)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Format;
    use crate::testing::{quiet, TempDir};
    use serde_json::json;

    const FILE: &str = r#"[
        {"name": "llm_cost_dollars_total", "type": "counter", "help": "Dollars.", "labels": ["model"]},
        {"name": "git_active_merges", "type": "gauge", "help": "Merges under way."},
        {"name": "task_retry_count", "type": "histogram", "help": "Retries.", "buckets": [0, 1, 2, 3]}
    ]"#;

    fn dir(name: &str) -> TempDir {
        TempDir::new(&format!("declared-{name}"))
    }

    fn scrape(r: &Registry) -> String {
        let mut out = Vec::new();
        r.render(&mut out, Format::Text);
        String::from_utf8(out).unwrap()
    }

    fn post(d: &Declared, body: Value) -> Result<usize, Error> {
        d.update(d.parse(&body)?)
    }

    #[test]
    fn updates_are_visible_once_durable_and_come_back_after_a_restart() {
        let dir = dir("restart");
        let text = {
            let registry = Registry::new();
            let d = Declared::open(
                &dir,
                spec::parse(FILE).unwrap(),
                &registry,
                &ByteCeiling::new(4 << 20, 16 << 20),
                0,
                quiet(),
            )
            .unwrap();
            let first = scrape(&registry);
            assert!(
                first.contains("# TYPE llm_cost_dollars_total counter"),
                "{first}"
            );
            assert!(first.contains("\ngit_active_merges 0\n"), "{first}");
            for i in 0..20 {
                let batch = json!([
                    {"name": "llm_cost_dollars_total", "labels": {"model": "m"}, "add": 0.1},
                    {"name": "git_active_merges", "set": i},
                    {"name": "task_retry_count", "observe": i % 4},
                ]);
                assert_eq!(post(&d, batch), Ok(3));
            }
            scrape(&registry)
        };
        assert!(text.contains("\ngit_active_merges 19\n"), "{text}");
        assert!(text.contains("task_retry_count_count 20\n"), "{text}");
        let registry = Registry::new();
        let d = Declared::open(
            &dir,
            spec::parse(FILE).unwrap(),
            &registry,
            &ByteCeiling::new(4 << 20, 16 << 20),
            0,
            quiet(),
        )
        .unwrap();
        assert_eq!(scrape(&registry), text);
        assert_eq!(d.skipped_on_replay, 0);
    }

    #[test]
    fn a_refused_batch_changes_nothing_and_a_clash_is_refused_at_start() {
        let dir = dir("refused");
        let registry = Registry::new();
        let d = Declared::open(
            &dir,
            spec::parse(FILE).unwrap(),
            &registry,
            &ByteCeiling::new(4 << 20, 16 << 20),
            0,
            quiet(),
        )
        .unwrap();
        let before = scrape(&registry);
        let batch = json!([
            {"name": "git_active_merges", "set": 5},
            {"name": "llm_cost_dollars_total", "labels": {"model": "m"}, "inc": -1},
        ]);
        assert!(matches!(post(&d, batch), Err(Error::Invalid { .. })));
        assert_eq!(scrape(&registry), before);
        let clash = spec::parse(r#"[{"name": "git_active_merges", "type": "gauge", "help": "h"}]"#);
        let again = Declared::open(
            &dir,
            clash.unwrap(),
            &registry,
            &ByteCeiling::new(4 << 20, 16 << 20),
            0,
            quiet(),
        );
        assert!(
            matches!(again, Err(Error::Invalid { ref field, .. }) if field.contains("git_active_merges"))
        );
    }

    #[test]
    fn concurrent_gauge_sets_end_on_the_last_journaled_value() {
        let dir = dir("order");
        let registry = Registry::new();
        let d = Arc::new(
            Declared::open(
                &dir,
                spec::parse(FILE).unwrap(),
                &registry,
                &ByteCeiling::new(4 << 20, 16 << 20),
                0,
                quiet(),
            )
            .unwrap(),
        );
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let d = d.clone();
                std::thread::spawn(move || {
                    for i in 0..50 {
                        let v = t * 1000 + i;
                        post(&d, json!({"name": "git_active_merges", "set": v})).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let live = scrape(&registry);
        let replayed = Registry::new();
        Declared::open(
            &dir,
            spec::parse(FILE).unwrap(),
            &replayed,
            &ByteCeiling::new(4 << 20, 16 << 20),
            0,
            quiet(),
        )
        .unwrap();
        assert_eq!(scrape(&replayed), live);
    }

    /// The field a refused post names.
    fn refused_field(d: &Declared, body: Value) -> String {
        match post(d, body) {
            Err(Error::Invalid { field, .. }) => field,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_update_that_would_make_a_value_non_finite_is_refused_naming_its_field() {
        let dir = dir("finite");
        let open = || {
            let registry = Registry::new();
            let d = Declared::open(
                &dir,
                spec::parse(FILE).unwrap(),
                &registry,
                &ByteCeiling::new(4 << 20, 16 << 20),
                0,
                quiet(),
            );
            (d.unwrap(), registry)
        };
        let (d, registry) = open();
        let cost =
            |v: f64| json!({"name": "llm_cost_dollars_total", "labels": {"model": "m"}, "add": v});
        let merges = |op: &str, v: f64| json!({"name": "git_active_merges", op: v});
        let retries = |v: f64| json!({"name": "task_retry_count", "observe": v});
        post(
            &d,
            json!([cost(1.5e308), merges("set", 1.5e308), retries(1.5e308)]),
        )
        .unwrap();
        let before = scrape(&registry);
        assert_eq!(refused_field(&d, cost(1.5e308)), "updates[0].add");
        assert_eq!(
            refused_field(&d, json!([merges("add", 1.0), merges("add", 1.5e308)])),
            "updates[1].add"
        );
        assert_eq!(refused_field(&d, retries(1.5e308)), "updates[0].observe");
        post(&d, merges("set", -1.5e308)).unwrap();
        assert_eq!(refused_field(&d, merges("add", -1.5e308)), "updates[0].add");
        // A new series adds up within its batch too.
        let fresh = |v: f64| json!({"name": "llm_cost_dollars_total", "labels": {"model": "new"}, "inc": v});
        assert_eq!(
            refused_field(&d, json!([fresh(1e308), fresh(1e308)])),
            "updates[1].inc"
        );
        post(&d, merges("set", 1.5e308)).unwrap();
        assert_eq!(scrape(&registry), before, "refused batches change nothing");
        drop(d);
        let (_, registry) = open();
        assert_eq!(scrape(&registry), before, "what was acknowledged survives");
    }

    #[test]
    fn updates_in_flight_that_add_up_past_the_largest_value_saturate() {
        let dir = dir("saturate");
        let open = || {
            let registry = Registry::new();
            let d = Declared::open(
                &dir,
                spec::parse(FILE).unwrap(),
                &registry,
                &ByteCeiling::new(4 << 20, 16 << 20),
                0,
                quiet(),
            );
            (d.unwrap(), registry)
        };
        let (d, registry) = open();
        let batch = json!([
            {"name": "llm_cost_dollars_total", "labels": {"model": "m"}, "add": 1e308},
            {"name": "git_active_merges", "add": -1e308},
            {"name": "task_retry_count", "observe": 1e308},
        ]);
        // Both are checked before either is applied, as when they are in
        // flight together.
        let first = d.parse(&batch).unwrap();
        let second = d.parse(&batch).unwrap();
        for updates in [first, second] {
            assert_eq!(d.update(updates), Ok(3));
        }
        let text = scrape(&registry);
        let max = "1.7976931348623157e+308";
        assert!(
            text.contains(&format!("llm_cost_dollars_total{{model=\"m\"}} {max}\n")),
            "{text}"
        );
        assert!(
            text.contains(&format!("\ngit_active_merges -{max}\n")),
            "{text}"
        );
        assert!(
            text.contains(&format!("\ntask_retry_count_sum {max}\n")),
            "{text}"
        );
        assert!(text.contains("\ntask_retry_count_count 2\n"), "{text}");
        drop(d);
        // From the journal, then from a snapshot.
        let (d, registry) = open();
        assert_eq!(scrape(&registry), text);
        super::restart_tests::snapshot_now(&d);
        drop(d);
        let (_, registry) = open();
        assert_eq!(scrape(&registry), text);
    }

    /// Waits until no snapshot is being written.
    fn settled(d: &Declared) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while lock(&d.order).due.busy() {
            assert!(
                std::time::Instant::now() < deadline,
                "a snapshot never ended"
            );
            std::thread::yield_now();
        }
    }

    #[test]
    fn a_start_from_a_snapshot_rebuilds_every_series_and_keeps_what_it_cannot_take() {
        let dir = dir("snapshot");
        let open = |file: &str, every: u64| {
            let registry = Registry::new();
            let d = Declared::open(
                &dir,
                spec::parse(file).unwrap(),
                &registry,
                &ByteCeiling::new(4 << 20, 16 << 20),
                every,
                quiet(),
            );
            (d.unwrap(), registry)
        };
        let (d, registry) = open(FILE, 512);
        for i in 0..200 {
            let batch = json!([
                {"name": "llm_cost_dollars_total", "labels": {"model": format!("m{}", i % 3)}, "add": 0.1},
                {"name": "git_active_merges", "set": i},
                {"name": "task_retry_count", "observe": i % 5},
            ]);
            assert_eq!(post(&d, batch), Ok(3));
        }
        settled(&d);
        let store = dir.join(STORE);
        assert!(store.join(SNAPSHOT_FILE).is_file());
        assert!(
            !store.join("0000000001.jsonl").exists(),
            "covered segments go"
        );
        let before = scrape(&registry);
        drop(d);
        for every in [512, 0] {
            let (d, registry) = open(FILE, every);
            assert_eq!(scrape(&registry), before);
            assert_eq!(d.skipped_on_replay, 0);
        }
        // Declared without the gauge, its series are kept as they were,
        // through snapshots that let the segments with its updates go.
        let without = r#"[
            {"name": "llm_cost_dollars_total", "type": "counter", "help": "Dollars.", "labels": ["model"]},
            {"name": "task_retry_count", "type": "histogram", "help": "Retries.", "buckets": [0, 1, 2, 3]}
        ]"#;
        let (d, registry) = open(without, 512);
        assert!(d.skipped_on_replay > 0);
        assert!(!scrape(&registry).contains("git_active_merges"));
        for _ in 0..50 {
            post(
                &d,
                json!({"name": "llm_cost_dollars_total", "labels": {"model": "m0"}, "add": 1}),
            )
            .unwrap();
        }
        settled(&d);
        drop(d);
        let (_, registry) = open(FILE, 512);
        let text = scrape(&registry);
        assert!(text.contains("\ngit_active_merges 199\n"), "{text}");
        assert!(text.contains("task_retry_count_count 200\n"), "{text}");
    }
}
