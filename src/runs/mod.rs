//! Agent runs: started, then completed, failed or cancelled, with the
//! events of their inside in between; each change journaled before it is
//! acknowledged.

pub mod detail;
pub mod event;
pub mod metrics;
pub mod progress;
pub mod trace;

pub use detail::Detail;
pub use event::{Event, Timed};
pub use metrics::RunMetrics;
pub use progress::{Progress, Step};

use std::collections::{BinaryHeap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{json, Value};

use crate::budget::{Budget, Recorded, SpendInput};
use crate::commit_queue::CommitQueue;
use crate::error::Error;
use crate::journal::Journal;
use crate::time;

/// Where a run is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Started and not finished.
    Running,
    /// Finished successfully.
    Completed,
    /// Finished with an error.
    Failed,
    /// Stopped before finishing.
    Cancelled,
}

impl Status {
    /// The lower-case name used in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Running => "running",
            Status::Completed => "completed",
            Status::Failed => "failed",
            Status::Cancelled => "cancelled",
        }
    }

    /// Parses a name from [`Status::as_str`] (`canceled` is accepted too).
    pub fn parse(s: &str) -> Option<Status> {
        match s {
            "running" => Some(Status::Running),
            "completed" => Some(Status::Completed),
            "failed" => Some(Status::Failed),
            "cancelled" | "canceled" => Some(Status::Cancelled),
            _ => None,
        }
    }
}

/// A run as callers see it.
#[derive(Clone, Debug, PartialEq)]
pub struct Run {
    /// The run's id, unique within the data dir.
    pub run_id: String,
    /// Which agent runs it, when given.
    pub agent: Option<String>,
    /// What it is for, when given.
    pub goal: Option<String>,
    /// Its status.
    pub status: Status,
    /// Unix seconds when it started.
    pub started_at: f64,
    /// Unix seconds when it finished.
    pub ended_at: Option<f64>,
    /// The error a failed run reported.
    pub error: Option<String>,
    /// The work order it serves, when given.
    pub work_order_id: Option<String>,
    /// The id that ties its logs and events together (its run id when not given).
    pub correlation_id: Option<String>,
    /// The orchestrator's strategy, when given.
    pub strategy: Option<String>,
    /// The iteration budget, when given.
    pub max_iterations: Option<u64>,
    /// The W3C `traceparent` it was started with, when valid.
    pub traceparent: Option<String>,
    /// What its events add up to.
    pub detail: Detail,
}

impl Run {
    /// The correlation id: the one given at start, or the run id.
    pub fn correlation(&self) -> &str {
        self.correlation_id.as_deref().unwrap_or(&self.run_id)
    }

    /// A copy of the ids that tie events and log lines to the run.
    pub fn ids(&self) -> RunIds {
        RunIds {
            run_id: self.run_id.clone(),
            correlation_id: self.correlation_id.clone(),
            work_order_id: self.work_order_id.clone(),
        }
    }

    /// The run as a JSON object.
    pub fn to_json(&self) -> Value {
        json!({
            "run_id": self.run_id,
            "agent": self.agent,
            "goal": self.goal,
            "status": self.status.as_str(),
            "started_at": time::rfc3339(self.started_at),
            "ended_at": self.ended_at.map(time::rfc3339),
            "error": self.error,
            "work_order_id": self.work_order_id,
            "correlation_id": self.correlation(),
            "strategy": self.strategy,
            "max_iterations": self.max_iterations,
            "detail": self.detail.to_json(),
        })
    }
}

/// The ids that tie events and log lines to a run, copied out of it so a
/// caller need not copy the whole run. Plain data; safe to send across
/// threads.
#[derive(Clone, Debug, PartialEq)]
pub struct RunIds {
    /// The run's id.
    pub run_id: String,
    /// The correlation id given at start, if any.
    pub correlation_id: Option<String>,
    /// The work order it serves, when given.
    pub work_order_id: Option<String>,
}

impl RunIds {
    /// The correlation id: the one given at start, or the run id.
    pub fn correlation(&self) -> &str {
        self.correlation_id.as_deref().unwrap_or(&self.run_id)
    }
}

/// Which run started when. Plain data; safe to send across threads.
#[derive(Clone, Debug, PartialEq)]
pub struct RunStart {
    /// The run's id.
    pub run_id: String,
    /// Unix seconds when it started.
    pub started_at: f64,
}

/// A request to start a run.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NewRun {
    /// The id to use; one is made when absent.
    pub run_id: Option<String>,
    /// The agent.
    pub agent: Option<String>,
    /// The goal.
    pub goal: Option<String>,
    /// The work order it serves.
    pub work_order_id: Option<String>,
    /// The correlation id.
    pub correlation_id: Option<String>,
    /// The strategy.
    pub strategy: Option<String>,
    /// The iteration budget.
    pub max_iterations: Option<u64>,
    /// The caller's W3C `traceparent`, already checked.
    pub traceparent: Option<String>,
}

/// How a run ends.
#[derive(Clone, Debug, PartialEq)]
pub enum Finish {
    /// Success.
    Complete,
    /// Failure, with an optional error text.
    Fail(Option<String>),
    /// Cancellation.
    Cancel,
    /// Failure for want of news: no event within the run timeout (see
    /// [`Runs::stale`]). The run reads `failed` with the error `abandoned`,
    /// and is counted under the outcome `abandoned`.
    Abandon,
}

/// A finished run and the spend its end recorded in the budget.
#[derive(Clone, Debug, PartialEq)]
pub struct Finished {
    /// The run.
    pub run: Run,
    /// What was charged: the explicit cost, or its tokens priced by model.
    pub spend: Recorded,
}

/// What one step of [`Runs::apply_batch`] did, for the caller to publish
/// and log. Plain data; safe to send across threads.
#[derive(Clone, Debug, PartialEq)]
pub enum Applied {
    /// A run started.
    Started(Box<Run>),
    /// Events of one run, as journaled (filled in, see [`Detail::fill`]).
    Events(RunIds, Vec<Timed>),
    /// A run ended and its cost was recorded.
    Finished(Box<Finished>),
    /// A run ended; replaced by [`Applied::Finished`] before the caller
    /// sees it.
    Ended(String),
}

/// Records the cost of a run that just ended: `cost` when given, otherwise
/// its tokens priced by model.
fn settle(budget: &Budget, run: Run, cost: Option<f64>) -> Result<Finished, Error> {
    let pricing = budget.pricing();
    let phase_costs = match cost {
        Some(_) => Vec::new(),
        None => run.detail.phase_costs(|m, i, o| pricing.cost(m, i, o)),
    };
    let total = cost.unwrap_or_else(|| phase_costs.iter().map(|(_, c)| c).sum());
    match budget.settle(&run.run_id, SpendInput::Amount(total), &phase_costs) {
        Ok(spend) => Ok(Finished { run, spend }),
        Err(e) => Err(Error::Storage(format!(
            "run {} finished, but its cost was not recorded: {e}",
            run.run_id
        ))),
    }
}

/// Totals by status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Runs still running.
    pub active: u64,
    /// Runs completed.
    pub completed: u64,
    /// Runs failed.
    pub failed: u64,
    /// Runs cancelled.
    pub cancelled: u64,
}

/// How many finished runs stay in memory for lookups; older ones remain in
/// the journal and in the counts.
pub const FINISHED_RETAINED: usize = 100_000;

/// One page of [`Runs::list`].
#[derive(Clone, Debug, PartialEq)]
pub struct Page {
    /// The runs, in start order (start time, then id).
    pub runs: Vec<Run>,
    /// The id to list after for the next page; `None` on the last page.
    pub next_after: Option<String>,
}

/// Where a run stands in a listing: by start time, then id, so that the
/// order is total and a cursor resumes exactly.
#[derive(Debug, Clone, Copy)]
struct ListKey<'a> {
    started_at: f64,
    id: &'a str,
}

impl<'a> ListKey<'a> {
    fn of(run: &'a Run) -> ListKey<'a> {
        ListKey {
            started_at: run.started_at,
            id: &run.run_id,
        }
    }
}

impl PartialEq for ListKey<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
    }
}

impl Eq for ListKey<'_> {}

impl PartialOrd for ListKey<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ListKey<'_> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.started_at
            .total_cmp(&other.started_at)
            .then(self.id.cmp(other.id))
    }
}

/// The run store. Safe to share across threads.
pub struct Runs {
    state: Mutex<State>,
    queue: CommitQueue,
    metrics: RunMetrics,
    budget: Arc<Budget>,
    next_id: AtomicU64,
}

#[derive(Default)]
struct State {
    runs: HashMap<String, Run>,
    finished_order: std::collections::VecDeque<String>,
    counts: Counts,
}

/// True when `id` is 1–128 characters of `[A-Za-z0-9._:-]`.
pub fn valid_run_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// The `op` of every record the run journal holds.
const RECORD_OPS: [&str; 7] = [
    "start", "events", "complete", "fail", "cancel", "abandon", "batch",
];

/// The error of a run ended by the run timeout.
pub const ABANDONED: &str = "abandoned";

impl Runs {
    /// Opens the run journal `runs.jsonl` under `dir` and replays it; runs
    /// still active get their budget reservation back.
    pub fn open(dir: &Path, metrics: RunMetrics, budget: Arc<Budget>) -> Result<Runs, Error> {
        let (journal, replay) =
            Journal::open(dir.join("runs.jsonl")).map_err(|e| Error::Storage(e.to_string()))?;
        let mut state = State::default();
        for (i, record) in replay.records.iter().enumerate() {
            // The journal checked each line's checksum, so a record that is
            // not one of ours was written by another version: skipping it
            // would lose a change and make the counters jump.
            let v = serde_json::from_slice::<Value>(record).unwrap_or(Value::Null);
            if !RECORD_OPS.contains(&v["op"].as_str().unwrap_or_default()) {
                let why = "not a run record";
                return Err(Error::Storage(replay.unreadable(i, why).to_string()));
            }
            state.apply(&v, &metrics);
        }
        for run in state.runs.values().filter(|r| r.status == Status::Running) {
            budget.restore_reservation(&run.run_id, run.started_at)?;
        }
        let queue = CommitQueue::start(Arc::new(journal), "runs", 1)
            .map_err(|e| Error::Storage(e.to_string()))?;
        Ok(Runs {
            state: Mutex::new(state),
            queue,
            metrics,
            budget,
            next_id: AtomicU64::new(0),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Updates are applied whole under the lock and do not panic midway.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts a run; `done` gets it once the start is durable.
    pub fn start(&self, new: NewRun, done: impl FnOnce(Result<Run, Error>) + Send + 'static) {
        let id = match new.run_id {
            Some(id) if !valid_run_id(&id) => {
                return done(Err(Error::invalid(
                    "run_id",
                    "must be 1-128 characters of A-Z a-z 0-9 . _ : -",
                )))
            }
            Some(id) => id,
            None => self.make_id(),
        };
        let mut state = self.lock();
        if state.runs.contains_key(&id) {
            drop(state);
            return done(Err(Error::Conflict(format!("run {id} already exists"))));
        }
        let now = time::now_unix();
        let record = json!({
            "op": "start", "run_id": id, "agent": new.agent, "goal": new.goal, "ts": now,
            "work_order_id": new.work_order_id, "correlation_id": new.correlation_id,
            "strategy": new.strategy, "max_iterations": new.max_iterations,
            "traceparent": new.traceparent,
        });
        // Checked and reserved in one step under the budget's lock; a
        // refused start creates nothing and journals nothing.
        if let Err(refusal) = self.budget.reserve(&id) {
            drop(state);
            return done(Err(Error::Exhausted(Box::new(refusal.into()))));
        }
        state.apply(&record, &self.metrics);
        let run = state.runs[&id].clone();
        let budget = self.budget.clone();
        self.queue
            .submit(record.to_string().into_bytes(), move |o| match o {
                Ok(()) => done(Ok(run)),
                Err(e) => {
                    budget.release(&run.run_id);
                    done(Err(Error::Storage(e.to_string())))
                }
            });
    }

    /// Finishes a running run; `done` gets it once the transition is
    /// durable and its cost is in the budget ledger. The cost is `cost`
    /// when given, otherwise its tokens priced by model.
    pub fn finish(
        &self,
        id: &str,
        how: Finish,
        cost: Option<f64>,
        done: impl FnOnce(Result<Finished, Error>) + Send + 'static,
    ) {
        let mut state = self.lock();
        let Some(run) = state.runs.get(id) else {
            drop(state);
            return done(Err(Error::NotFound(format!("run {id} not found"))));
        };
        if run.status != Status::Running {
            let status = run.status.as_str();
            drop(state);
            return done(Err(Error::Conflict(format!(
                "run {id} is already {status}"
            ))));
        }
        let now = time::now_unix();
        let record = match &how {
            Finish::Complete => json!({"op": "complete", "run_id": id, "ts": now}),
            Finish::Fail(error) => json!({"op": "fail", "run_id": id, "error": error, "ts": now}),
            Finish::Cancel => json!({"op": "cancel", "run_id": id, "ts": now}),
            Finish::Abandon => {
                json!({"op": "abandon", "run_id": id, "error": ABANDONED, "ts": now})
            }
        };
        if let Some(c) = cost {
            if !(c.is_finite() && c >= 0.0) {
                drop(state);
                return done(Err(Error::invalid("cost", "must be a non-negative number")));
            }
        }
        state.apply(&record, &self.metrics);
        let run = state.runs[id].clone();
        let budget = self.budget.clone();
        // The spend is recorded after the transition is durable: a crash in
        // between can lose the cost of an unacknowledged finish, but never
        // charge a run twice.
        self.queue
            .submit(record.to_string().into_bytes(), move |o| {
                if let Err(e) = o {
                    return done(Err(Error::Storage(e.to_string())));
                }
                done(settle(&budget, run, cost));
            });
    }

    /// Applies a batch of progress events, possibly for several runs, all
    /// or nothing: runs start (each reserving its budget), take events and
    /// end, in order, as one journal record. `done` gets what each step
    /// did, in order, once the record is durable and the costs of the runs
    /// it ended are in the budget ledger.
    ///
    /// Before anything is applied, every step is checked against the runs
    /// and the steps before it: a start of a run that exists is
    /// [`Error::Conflict`], an event for an unknown run [`Error::NotFound`],
    /// for an ended one [`Error::Conflict`], and a start the budget refuses
    /// [`Error::Exhausted`], with the reservations of earlier starts in the
    /// batch given back.
    pub fn apply_batch(
        &self,
        steps: Vec<Progress>,
        done: impl FnOnce(Result<Vec<Applied>, Error>) + Send + 'static,
    ) {
        let mut state = self.lock();
        if let Err(e) = self.check_batch(&state, &steps) {
            drop(state);
            return done(Err(e));
        }
        let mut reserved: Vec<&str> = Vec::new();
        for p in &steps {
            if let Step::Start(_) = p.step {
                if let Err(refusal) = self.budget.reserve(&p.run_id) {
                    for id in reserved {
                        self.budget.release(id);
                    }
                    drop(state);
                    return done(Err(Error::Exhausted(Box::new(refusal.into()))));
                }
                reserved.push(&p.run_id);
            }
        }
        let now = time::now_unix();
        let mut records = Vec::with_capacity(steps.len());
        let mut applied: Vec<Applied> = Vec::with_capacity(steps.len());
        let mut started: Vec<String> = Vec::new();
        for p in steps {
            let id = p.run_id;
            match p.step {
                Step::Start(new) => {
                    let record = json!({
                        "op": "start", "run_id": id, "agent": new.agent, "goal": new.goal,
                        "ts": now, "at": p.at, "work_order_id": new.work_order_id,
                        "correlation_id": new.correlation_id, "strategy": new.strategy,
                        "max_iterations": new.max_iterations,
                    });
                    state.apply(&record, &self.metrics);
                    records.push(record);
                    applied.push(Applied::Started(Box::new(state.runs[&id].clone())));
                    started.push(id);
                }
                Step::Event(e) => {
                    let Some(run) = state.runs.get_mut(&id) else {
                        continue;
                    };
                    let mut batch = [e];
                    run.detail.fill(&mut batch);
                    run.detail.apply(&batch[0], &self.metrics);
                    let [e] = batch;
                    match (applied.last_mut(), records.last_mut()) {
                        // Consecutive events of one run share a record.
                        (Some(Applied::Events(ids, list)), Some(last))
                            if ids.run_id == id && last["op"] == "events" =>
                        {
                            if let Some(events) = last["events"].as_array_mut() {
                                events.push(e.to_json());
                            }
                            list.push(e);
                        }
                        _ => {
                            records.push(
                                json!({"op": "events", "run_id": id, "events": [e.to_json()]}),
                            );
                            applied.push(Applied::Events(run.ids(), vec![e]));
                        }
                    }
                }
                Step::Finish {
                    how,
                    reason,
                    duration_ms,
                } => {
                    let (op, error) = match how {
                        Finish::Complete => ("complete", None),
                        Finish::Fail(error) => ("fail", error),
                        Finish::Cancel => ("cancel", reason),
                        Finish::Abandon => ("abandon", Some(ABANDONED.to_string())),
                    };
                    let record = json!({
                        "op": op, "run_id": id, "error": error, "ts": now, "at": p.at,
                        "duration_ms": duration_ms,
                    });
                    state.apply(&record, &self.metrics);
                    records.push(record);
                    applied.push(Applied::Ended(id));
                }
            }
        }
        let record = json!({"op": "batch", "ts": now, "ops": records});
        let budget = self.budget.clone();
        let ended: Vec<(usize, Run)> = applied
            .iter()
            .enumerate()
            .filter_map(|(i, a)| match a {
                Applied::Ended(id) => state.runs.get(id).map(|r| (i, r.clone())),
                _ => None,
            })
            .collect();
        drop(state);
        self.queue
            .submit(record.to_string().into_bytes(), move |o| {
                if let Err(e) = o {
                    for id in &started {
                        budget.release(id);
                    }
                    return done(Err(Error::Storage(e.to_string())));
                }
                for (i, run) in ended {
                    match settle(&budget, run, None) {
                        Ok(finished) => applied[i] = Applied::Finished(Box::new(finished)),
                        Err(e) => return done(Err(e)),
                    }
                }
                done(Ok(applied))
            });
    }

    /// Checks a batch's steps in order against the runs, as
    /// [`Runs::apply_batch`] describes, without changing anything.
    fn check_batch(&self, state: &State, steps: &[Progress]) -> Result<(), Error> {
        let mut now: HashMap<&str, Status> = HashMap::new();
        for p in steps {
            let id = p.run_id.as_str();
            let status = now
                .get(id)
                .copied()
                .or_else(|| state.runs.get(id).map(|r| r.status));
            let at = p.index;
            match (&p.step, status) {
                (Step::Start(_), None) => {
                    now.insert(id, Status::Running);
                }
                (Step::Start(_), Some(_)) => {
                    return Err(Error::Conflict(format!(
                        "events[{at}]: run {id} already exists"
                    )))
                }
                (_, None) => {
                    return Err(Error::NotFound(format!("events[{at}]: run {id} not found")))
                }
                (_, Some(Status::Running)) => {
                    if let Step::Finish { how, .. } = &p.step {
                        now.insert(
                            id,
                            match how {
                                Finish::Complete => Status::Completed,
                                Finish::Fail(_) | Finish::Abandon => Status::Failed,
                                Finish::Cancel => Status::Cancelled,
                            },
                        );
                    }
                }
                (_, Some(s)) => {
                    return Err(Error::Conflict(format!(
                        "events[{at}]: run {id} is already {}",
                        s.as_str()
                    )))
                }
            }
        }
        Ok(())
    }

    /// Fills in what `events` left out and the run `id` knows (see
    /// [`Detail::fill`]) and returns the run's version they were filled
    /// against, or `None` for a run not known. Takes the lock briefly, so
    /// that the batch can be rendered outside it.
    pub fn fill_events(&self, id: &str, events: &mut [Timed]) -> Option<u64> {
        let state = self.lock();
        let run = state.runs.get(id)?;
        run.detail.fill(events);
        Some(run.detail.version)
    }

    /// Records a batch of events for a running run, all or nothing;
    /// `done` gets the events as journaled once the batch is durable.
    ///
    /// `events` should come from [`Runs::fill_events`] with its `version`.
    /// When the run has moved on since, they are filled again under the
    /// lock, and `done` gets that new batch instead of the one passed in
    /// (compare with `Arc::ptr_eq`).
    pub fn record_events(
        &self,
        id: &str,
        events: Arc<[Timed]>,
        version: Option<u64>,
        done: impl FnOnce(Result<Arc<[Timed]>, Error>) + Send + 'static,
    ) {
        // The record depends on the request only, so it is written before
        // taking the lock; it is still submitted under the lock, so the
        // journal holds batches in the order they were applied.
        let mut record = events_record(id, &events);
        let mut events = events;
        let mut state = self.lock();
        let Some(run) = state.runs.get_mut(id) else {
            drop(state);
            return done(Err(Error::NotFound(format!("run {id} not found"))));
        };
        if run.status != Status::Running {
            let status = run.status.as_str();
            drop(state);
            return done(Err(Error::Conflict(format!(
                "run {id} is already {status}"
            ))));
        }
        if version != Some(run.detail.version) {
            let mut again = events.to_vec();
            run.detail.fill(&mut again);
            events = again.into();
            record = events_record(id, &events);
        }
        for e in events.iter() {
            run.detail.apply(e, &self.metrics);
        }
        self.queue.submit(record, move |o| {
            done(
                o.map(|()| events)
                    .map_err(|e| Error::Storage(e.to_string())),
            )
        });
    }

    /// The running runs with no news for `timeout` seconds at `now`: no
    /// event whose time (its own, or when it arrived) is later than that,
    /// and no start. Checked with the times the journal keeps, so a run
    /// whose orchestrator died before a restart ends too.
    pub fn stale(&self, now: f64, timeout: f64) -> Vec<String> {
        let state = self.lock();
        state
            .runs
            .values()
            .filter(|r| r.status == Status::Running)
            .filter(|r| {
                let last = r.detail.event_span.map_or(r.started_at, |(_, l)| l);
                last.max(r.started_at) + timeout <= now
            })
            .map(|r| r.run_id.clone())
            .collect()
    }

    /// The run with `id`, if known.
    pub fn get(&self, id: &str) -> Option<Run> {
        self.lock().runs.get(id).cloned()
    }

    /// What `f` makes of the run with `id`, if known. `f` runs under the
    /// store's lock, so it should only copy out the few fields it needs;
    /// that is far cheaper than [`Runs::get`] for a run with a long history.
    pub fn with_run<R>(&self, id: &str, f: impl FnOnce(&Run) -> R) -> Option<R> {
        self.lock().runs.get(id).map(f)
    }

    /// Up to `limit` runs with `status` (all when `None`) in start order,
    /// after the run `after` when given.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] when `after` is not a run held in memory.
    pub fn list(
        &self,
        status: Option<Status>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page, Error> {
        let state = self.lock();
        let from = match after {
            None => None,
            Some(id) => match state.runs.get(id) {
                Some(run) => Some(ListKey::of(run)),
                None => return Err(Error::NotFound(format!("run {id} not found"))),
            },
        };
        // The `limit + 1` first in order, kept in a max-heap so a listing of
        // a page costs one pass over the runs and clones only that page.
        let mut first: BinaryHeap<ListKey<'_>> = BinaryHeap::with_capacity(limit + 2);
        for run in state.runs.values() {
            if status.is_some_and(|s| run.status != s) {
                continue;
            }
            let key = ListKey::of(run);
            if from.as_ref().is_some_and(|f| key <= *f) {
                continue;
            }
            if first.len() <= limit {
                first.push(key);
            } else if first.peek().is_some_and(|top| key < *top) {
                first.pop();
                first.push(key);
            }
        }
        let mut keys = first.into_sorted_vec();
        let more = keys.len() > limit;
        keys.truncate(limit);
        let runs: Vec<Run> = keys.iter().map(|k| state.runs[k.id].clone()).collect();
        let next_after = more
            .then(|| keys.last().map(|k| k.id.to_string()))
            .flatten();
        Ok(Page { runs, next_after })
    }

    /// The newest running run (by start time, then id) and how many runs
    /// are running, or `None` when none is. Copies only that one run's
    /// start.
    pub fn newest_running(&self) -> Option<(RunStart, u64)> {
        let state = self.lock();
        let newest = state
            .runs
            .values()
            .filter(|r| r.status == Status::Running)
            .max_by(|a, b| {
                a.started_at
                    .total_cmp(&b.started_at)
                    .then(a.run_id.cmp(&b.run_id))
            })?;
        let start = RunStart {
            run_id: newest.run_id.clone(),
            started_at: newest.started_at,
        };
        Some((start, state.counts.active))
    }

    /// Totals by status.
    pub fn counts(&self) -> Counts {
        self.lock().counts
    }

    fn make_id(&self) -> String {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        let ms = (time::now_unix() * 1000.0) as u64;
        format!("run-{ms}-{:x}-{n}", std::process::id())
    }
}

/// The journal record of an events batch, the same bytes as
/// `json!({"op": "events", "run_id": id, "events": [each to_json()]})`
/// prints, written directly.
fn events_record(id: &str, events: &[Timed]) -> Vec<u8> {
    let mut out = String::with_capacity(64 + events.len() * 112);
    out.push_str("{\"events\":[");
    // Events of a batch nearly always share one time: printed once.
    let mut at: Option<(f64, String)> = None;
    for (i, e) in events.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        if at
            .as_ref()
            .is_none_or(|(t, _)| t.to_bits() != e.at.to_bits())
        {
            let mut text = String::new();
            crate::json_text::push_f64(&mut text, e.at);
            at = Some((e.at, text));
        }
        e.push_json_at(&mut out, at.as_ref().map_or("", |(_, text)| text));
    }
    out.push_str("],\"op\":\"events\",\"run_id\":");
    crate::json_text::push_str(&mut out, id);
    out.push('}');
    out.into_bytes()
}

impl State {
    /// Applies one journal record and moves the metrics it concerns; used
    /// both live and on replay, so the two can never disagree.
    fn apply(&mut self, v: &Value, m: &RunMetrics) {
        if v["op"] == "batch" {
            for op in v["ops"].as_array().into_iter().flatten() {
                self.apply(op, m);
            }
            return;
        }
        let (Some(op), Some(id)) = (v["op"].as_str(), v["run_id"].as_str()) else {
            return;
        };
        let ts = v["ts"].as_f64().unwrap_or(0.0);
        let text = |k: &str| v[k].as_str().map(str::to_string);
        match op {
            "start" => {
                if self.runs.contains_key(id) {
                    return;
                }
                self.counts.active += 1;
                m.active.inc();
                m.started.inc();
                self.runs.insert(
                    id.to_string(),
                    Run {
                        run_id: id.to_string(),
                        agent: text("agent"),
                        goal: text("goal"),
                        status: Status::Running,
                        started_at: ts,
                        ended_at: None,
                        error: None,
                        work_order_id: text("work_order_id"),
                        correlation_id: text("correlation_id"),
                        strategy: text("strategy"),
                        max_iterations: v["max_iterations"].as_u64(),
                        traceparent: text("traceparent"),
                        detail: Detail::default(),
                    },
                );
            }
            "events" => {
                let Some(run) = self.runs.get_mut(id) else {
                    return;
                };
                if let Ok(events) = event::parse_batch(&v["events"], ts) {
                    for e in &events {
                        run.detail.apply(e, m);
                    }
                }
            }
            "complete" | "fail" | "cancel" | "abandon" => {
                self.finish(id, op, ts, text("error"), v["duration_ms"].as_f64(), m)
            }
            _ => {}
        }
        // A lifecycle event's own time widens the run's span of events.
        if let (Some(at), Some(run)) = (v["at"].as_f64(), self.runs.get_mut(id)) {
            run.detail.saw(at);
        }
    }

    fn finish(
        &mut self,
        id: &str,
        op: &str,
        ts: f64,
        error: Option<String>,
        reported_ms: Option<f64>,
        m: &RunMetrics,
    ) {
        let Some(run) = self.runs.get_mut(id) else {
            return;
        };
        if run.status != Status::Running {
            return;
        }
        let (status, count) = match op {
            "complete" => (Status::Completed, &mut self.counts.completed),
            "fail" | "abandon" => (Status::Failed, &mut self.counts.failed),
            _ => (Status::Cancelled, &mut self.counts.cancelled),
        };
        // An abandoned run is a failed one, counted apart in the metrics so
        // that dead orchestrators show.
        let outcome = match op {
            "abandon" => "abandoned",
            _ => status.as_str(),
        };
        run.status = status;
        run.ended_at = Some(ts);
        run.error = error;
        *count += 1;
        m.cycles.inc(&[outcome]);
        self.counts.active -= 1;
        m.active.dec();
        // The emitter's own measure when it sent one: its clock saw the
        // whole run, the server only the reports.
        let seconds = reported_ms.map_or((ts - run.started_at).max(0.0), |ms| ms / 1000.0);
        run.detail.duration_seconds = Some(seconds);
        m.cycle_duration.observe(&[outcome], seconds);
        self.finished_order.push_back(id.to_string());
        while self.finished_order.len() > FINISHED_RETAINED {
            if let Some(old) = self.finished_order.pop_front() {
                self.runs.remove(&old);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_records_are_the_bytes_json_prints() {
        let batch = json!([
            {"type": "phase_started", "phase": "design"},
            {"type": "tokens", "phase": "design", "model": "m", "input_tokens": 1, "output_tokens": 2},
            {"type": "gate_checked", "gate": "g", "passed": true, "reason": "ok \"quoted\""},
            {"type": "delivery_started"},
            {"type": "delivery_started", "timestamp": 12.5},
            {"type": "delivery_started"},
        ]);
        let events = event::parse_batch(&batch, 1_795_439_678.5).unwrap();
        let list: Vec<Value> = events.iter().map(Timed::to_json).collect();
        for id in ["r-1", "odd \" id\n"] {
            let old = json!({"op": "events", "run_id": id, "events": list});
            assert_eq!(events_record(id, &events), old.to_string().into_bytes());
        }
    }
}
