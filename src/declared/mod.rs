//! Declared metrics: families an orchestrator declares in a file at start
//! (`--metrics-file`) and updates over HTTP, typed, durable and bounded.
//!
//! - **Typed.** Every update is checked against its declaration: the name,
//!   exactly the declared labels, an operation its type allows, a finite
//!   value, and no negative counter increment. A batch is all or nothing.
//! - **Durable before visible.** A batch is one journal record
//!   (`DATA_DIR/metrics.jsonl`, group commit), and moves the metrics only
//!   once it is synced, in journal order, so a gauge's value is always the
//!   last one written. A restart replays the journal: counters and
//!   histograms come back exact, gauges with their last value.
//! - **Ready for snapshots.** Each record is self-contained (names, label
//!   values, operation, value), so the state it adds up to is the series'
//!   values alone: a snapshot can write those and let the journal restart
//!   after it.
//! - **Bounded.** Each family is capped by the registry's series cap, past
//!   which new label sets go to its overflow series.

pub mod spec;
pub mod update;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::Value;

pub use spec::{Declaration, Type};
pub use update::{Op, Update, MAX_BATCH};

use crate::commit_queue::{Acks, CommitQueue};
use crate::error::Error;
use crate::journal::Journal;
use crate::metrics::{CounterFamily, GaugeFamily, HistogramFamily, Registry};

/// The journal's file name in the data dir.
pub const JOURNAL: &str = "metrics.jsonl";

/// A registered family's handle.
enum Handle {
    Counter(CounterFamily),
    Gauge(GaugeFamily),
    Histogram(HistogramFamily),
}

type Done = Box<dyn FnOnce(Result<usize, Error>) + Send>;

/// Batches that are durable (or failed) but wait for an earlier one: the
/// commit queue may run callbacks out of order, and gauges need the order.
#[derive(Default)]
struct Order {
    submitted: u64,
    applied: u64,
    waiting: BTreeMap<u64, (Result<Vec<Update>, Error>, Done)>,
}

/// The declared families and their journal. Safe to share across threads.
pub struct Declared {
    families: Arc<Families>,
    queue: Option<CommitQueue>,
    order: Arc<Mutex<Order>>,
    /// Journal updates left out on replay because their family is no
    /// longer declared as it was.
    pub skipped_on_replay: u64,
}

struct Families {
    declared: Vec<Declaration>,
    handles: Vec<Handle>,
    index: HashMap<String, usize>,
}

impl Families {
    fn apply(&self, updates: &[Update]) {
        for u in updates {
            let labels: Vec<&str> = u.labels.iter().map(String::as_str).collect();
            match (&self.handles[u.family], u.op) {
                (Handle::Counter(c), Op::Inc(v) | Op::Add(v)) => c.add(&labels, v),
                (Handle::Gauge(g), Op::Set(v)) => g.set(&labels, v),
                (Handle::Gauge(g), Op::Add(v)) => g.add(&labels, v),
                (Handle::Histogram(h), Op::Observe(v)) => h.observe(&labels, v),
                // Parsing pairs every operation with its type.
                _ => {}
            }
        }
    }
}

impl Declared {
    /// Registers `declared` in `registry` and replays the journal under
    /// `dir`. With nothing declared there is no journal and no thread.
    /// A family the registry refuses (a clash with a built-in family, say)
    /// is [`Error::Invalid`] naming it.
    pub fn open(
        dir: &Path,
        declared: Vec<Declaration>,
        registry: &Registry,
    ) -> Result<Declared, Error> {
        let mut handles = Vec::with_capacity(declared.len());
        for d in &declared {
            let labels: Vec<&str> = d.labels.iter().map(String::as_str).collect();
            let refused = |e: crate::metrics::Error| {
                Error::invalid(&format!("family {:?}", d.name), e.to_string())
            };
            let handle = match d.kind {
                Type::Counter => {
                    let f = registry
                        .counter_family(&d.name, &d.help, &labels)
                        .map_err(refused)?;
                    // An unlabelled family has its one series from the start.
                    if labels.is_empty() {
                        f.inc_by(&[], 0);
                    }
                    Handle::Counter(f)
                }
                Type::Gauge => {
                    let f = registry
                        .gauge_family(&d.name, &d.help, &labels)
                        .map_err(refused)?;
                    if labels.is_empty() {
                        f.add(&[], 0.0);
                    }
                    Handle::Gauge(f)
                }
                Type::Histogram => {
                    let f = registry
                        .histogram_family(&d.name, &d.help, &labels, &d.buckets)
                        .map_err(refused)?;
                    if labels.is_empty() {
                        f.get(&[]);
                    }
                    Handle::Histogram(f)
                }
            };
            handles.push(handle);
        }
        let index = declared
            .iter()
            .enumerate()
            .map(|(i, d)| (d.name.clone(), i))
            .collect();
        let families = Arc::new(Families {
            declared,
            handles,
            index,
        });
        let mut skipped = 0;
        let queue = if families.declared.is_empty() {
            None
        } else {
            // A record at a time: a start holds the series, not their history.
            let f = &families;
            let (journal, _) = Journal::open_each(dir.join(JOURNAL), |record| {
                let updates = update::from_record(record, &f.declared, &f.index, &mut skipped);
                f.apply(&updates);
                Ok(())
            })
            .map_err(|e| Error::Storage(e.to_string()))?;
            let queue = CommitQueue::start(Arc::new(journal), "metrics", Acks::Spread(1))
                .map_err(|e| Error::Storage(e.to_string()))?;
            Some(queue)
        };
        Ok(Declared {
            families,
            queue,
            order: Arc::new(Mutex::new(Order::default())),
            skipped_on_replay: skipped,
        })
    }

    /// The declarations, in file order.
    pub fn declarations(&self) -> &[Declaration] {
        &self.families.declared
    }

    /// Checks a request body (one update or an array) against the
    /// declarations, all or nothing.
    pub fn parse(&self, body: &Value) -> Result<Vec<Update>, Error> {
        update::parse_batch(body, &self.families.declared, &self.families.index)
    }

    /// Journals `updates` as one record and, once it is durable and every
    /// batch before it has been applied, applies them and calls `done` with
    /// their count. A failed write applies nothing and gets
    /// [`Error::Storage`].
    pub fn update(
        &self,
        updates: Vec<Update>,
        done: impl FnOnce(Result<usize, Error>) + Send + 'static,
    ) {
        let Some(queue) = &self.queue else {
            return done(Err(Error::invalid(
                "updates[0].name",
                "no metrics are declared (see --metrics-file)",
            )));
        };
        let record = update::record(&updates, &self.families.declared);
        let (families, order) = (self.families.clone(), self.order.clone());
        // Submitted under the lock, so that sequence order is journal order.
        let mut o = lock(&self.order);
        let seq = o.submitted;
        o.submitted += 1;
        queue.submit(record, move |outcome| {
            let result = outcome
                .map(|()| updates)
                .map_err(|e| Error::Storage(e.to_string()));
            let mut ready = Vec::new();
            {
                let mut o = lock(&order);
                o.waiting.insert(seq, (result, Box::new(done)));
                loop {
                    let next = o.applied;
                    let Some((result, done)) = o.waiting.remove(&next) else {
                        break;
                    };
                    o.applied += 1;
                    let result = result.map(|updates| {
                        families.apply(&updates);
                        updates.len()
                    });
                    ready.push((result, done));
                }
            }
            // Answered outside the lock: an answer may write to a socket.
            for (result, done) in ready {
                done(result);
            }
        });
    }
}

fn lock(order: &Mutex<Order>) -> MutexGuard<'_, Order> {
    // Each step under this lock completes or panics before changing
    // anything, so a poisoned lock still guards a consistent state.
    order.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Format;
    use serde_json::json;
    use std::sync::mpsc;

    const FILE: &str = r#"[
        {"name": "llm_cost_dollars_total", "type": "counter", "help": "Dollars.", "labels": ["model"]},
        {"name": "git_active_merges", "type": "gauge", "help": "Merges under way."},
        {"name": "task_retry_count", "type": "histogram", "help": "Retries.", "buckets": [0, 1, 2, 3]}
    ]"#;

    fn dir(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("declared-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn scrape(r: &Registry) -> String {
        let mut out = Vec::new();
        r.render(&mut out, Format::Text);
        String::from_utf8(out).unwrap()
    }

    fn post(d: &Declared, body: Value) -> Result<usize, Error> {
        let updates = d.parse(&body)?;
        let (tx, rx) = mpsc::channel();
        d.update(updates, move |r| tx.send(r).unwrap());
        rx.recv().unwrap()
    }

    #[test]
    fn updates_are_visible_once_durable_and_come_back_after_a_restart() {
        let dir = dir("restart");
        let text = {
            let registry = Registry::new();
            let d = Declared::open(&dir, spec::parse(FILE).unwrap(), &registry).unwrap();
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
        let d = Declared::open(&dir, spec::parse(FILE).unwrap(), &registry).unwrap();
        assert_eq!(scrape(&registry), text);
        assert_eq!(d.skipped_on_replay, 0);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_refused_batch_changes_nothing_and_a_clash_is_refused_at_start() {
        let dir = dir("refused");
        let registry = Registry::new();
        let d = Declared::open(&dir, spec::parse(FILE).unwrap(), &registry).unwrap();
        let before = scrape(&registry);
        let batch = json!([
            {"name": "git_active_merges", "set": 5},
            {"name": "llm_cost_dollars_total", "labels": {"model": "m"}, "inc": -1},
        ]);
        assert!(matches!(post(&d, batch), Err(Error::Invalid { .. })));
        assert_eq!(scrape(&registry), before);
        let clash = spec::parse(r#"[{"name": "git_active_merges", "type": "gauge", "help": "h"}]"#);
        let again = Declared::open(&dir, clash.unwrap(), &registry);
        assert!(
            matches!(again, Err(Error::Invalid { ref field, .. }) if field.contains("git_active_merges"))
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn concurrent_gauge_sets_end_on_the_last_journaled_value() {
        let dir = dir("order");
        let registry = Registry::new();
        let d = Arc::new(Declared::open(&dir, spec::parse(FILE).unwrap(), &registry).unwrap());
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
        Declared::open(&dir, spec::parse(FILE).unwrap(), &replayed).unwrap();
        assert_eq!(scrape(&replayed), live);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
