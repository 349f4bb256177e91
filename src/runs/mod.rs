//! Agent runs: started, then completed, failed or cancelled, with events in
//! between; each change journaled before it is acknowledged.

pub mod detail;
pub mod event;
pub mod metrics;
pub mod plain_batch;
pub mod progress;
mod snapshot;
pub mod texts;
pub mod trace;

pub use detail::{Detail, LazyDetail};
pub use event::{Event, Timed};
pub use metrics::{RunMetrics, RunRef};
pub use progress::{Progress, Step};
pub use texts::{Text, Texts};

use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::budget::{dollars, Budget, LedgerLines, Recorded, Settlement, SpendInput, MAX_AMOUNT};
use crate::commit_queue::{self, CommitQueue};
use crate::error::Error;
use crate::log::Logger;
use crate::segments::{self, Segments};
use crate::time;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Running,
    Completed,
    Failed,
    Cancelled,
}

/// Each status in declaration order: its JSON name, the event type of a run ending with it.
const STATUSES: [(Status, &str, Option<&str>); 4] = [
    (Status::Running, "running", None),
    (Status::Completed, "completed", Some("run_completed")),
    (Status::Failed, "failed", Some("run_failed")),
    (Status::Cancelled, "cancelled", Some("run_canceled")),
];

impl Status {
    pub fn as_str(self) -> &'static str {
        STATUSES[self as usize].1
    }

    /// The type of the event published when a run ends with this status.
    pub fn end_event(self) -> Option<&'static str> {
        STATUSES[self as usize].2
    }

    /// Parses a name from [`Status::as_str`] (`canceled` is accepted too).
    pub fn parse(s: &str) -> Option<Status> {
        let s = if s == "canceled" { "cancelled" } else { s };
        STATUSES.iter().find(|(_, name, _)| *name == s).map(|t| t.0)
    }

    /// The status an end record's `op` ends its run with.
    fn of_end(op: &str) -> Status {
        match op {
            "complete" => Status::Completed,
            "fail" | "abandon" => Status::Failed,
            _ => Status::Cancelled,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Run {
    /// Shared with the store's table, which is keyed by it.
    pub run_id: Arc<str>,
    pub texts: Texts,
    pub status: Status,
    pub started_at: f64,
    pub ended_at: Option<f64>,
    pub max_iterations: Option<u64>,
    /// Micro-dollars held while it runs: its start's reservation, or its tokens' cost if more.
    pub reserved: Option<i64>,
    /// Micro-dollars its end charged.
    pub cost: Option<i64>,
    pub detail: LazyDetail,
}

impl Run {
    /// A run from the members its start record and snapshot line share.
    fn from_members(v: &Value, id: Arc<str>, status: Status, started_at: f64) -> Run {
        Run {
            run_id: id,
            texts: Texts::from_json(v),
            status,
            started_at,
            ended_at: v["ended_at"].as_f64(),
            max_iterations: v["max_iterations"].as_u64(),
            reserved: v["reserved_micros"].as_i64(),
            cost: v["cost_micros"].as_i64(),
            detail: LazyDetail::default(),
        }
    }

    pub fn text(&self, which: Text) -> Option<&str> {
        self.texts.get(which)
    }

    /// The correlation id: the one given at start, or the run id.
    pub fn correlation(&self) -> &str {
        self.text(Text::CorrelationId).unwrap_or(&self.run_id)
    }

    /// A copy of the ids that tie events and log lines to the run.
    pub fn ids(&self) -> RunIds {
        RunIds {
            run_id: self.run_id.to_string(),
            correlation_id: self.text(Text::CorrelationId).map(str::to_string),
            work_order_id: self.text(Text::WorkOrderId).map(str::to_string),
        }
    }

    /// The run as JSON text, `metrics` last.
    pub fn to_json_text(&self) -> String {
        let mut text = self.to_json().to_string();
        // Last, and byte for byte as the emitter sent it.
        crate::json_text::push_raw_member(
            &mut text,
            "metrics",
            self.text(Text::Metrics).unwrap_or("null"),
        );
        text
    }

    /// Every member of the run's JSON but `metrics`, which [`Run::to_json_text`] adds.
    pub fn to_json(&self) -> Value {
        json!({
            "run_id": &*self.run_id,
            "agent": self.text(Text::Agent),
            "goal": self.text(Text::Goal),
            "status": self.status.as_str(),
            "started_at": time::rfc3339(self.started_at),
            "ended_at": self.ended_at.map(time::rfc3339),
            "error": self.text(Text::Error),
            "work_order_id": self.text(Text::WorkOrderId),
            "correlation_id": self.correlation(),
            "strategy": self.text(Text::Strategy),
            "max_iterations": self.max_iterations,
            "cost": self.cost.map(dollars),
            "reserved": self.reserved.map(dollars),
            "detail": self.detail.to_json(),
        })
    }

    /// About how many bytes of memory the run holds in the store.
    fn approx_bytes(&self) -> u64 {
        let text = |s: &str| (s.len() as u64).next_multiple_of(16) + 16;
        let own = match self.texts.stored_bytes() {
            0 => 0,
            n => (n as u64).next_multiple_of(16) + 16,
        };
        // The run, its box, its table slot, its id twice (the run's, shared as the
        // table's key, and the finished order's).
        std::mem::size_of::<Run>() as u64
            + 64
            + 2 * text(&self.run_id)
            + own
            + self.detail.approx_bytes()
    }
}

/// The ids that tie events and log lines to a run, copied out of it.
#[derive(Clone, Debug, PartialEq)]
pub struct RunIds {
    pub run_id: String,
    pub correlation_id: Option<String>,
    pub work_order_id: Option<String>,
}

impl RunIds {
    /// The correlation id: the one given at start, or the run id.
    pub fn correlation(&self) -> &str {
        self.correlation_id.as_deref().unwrap_or(&self.run_id)
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct NewRun {
    /// The id to use; one is made when absent.
    pub run_id: Option<String>,
    pub agent: Option<String>,
    pub goal: Option<String>,
    pub work_order_id: Option<String>,
    pub correlation_id: Option<String>,
    pub strategy: Option<String>,
    pub max_iterations: Option<u64>,
    /// The caller's W3C `traceparent`, already checked.
    pub traceparent: Option<String>,
}

impl NewRun {
    /// The journal record of its start as `id` at `ts`, holding `reserved` micro-dollars.
    fn start_record(&self, id: &str, ts: f64, reserved: Option<i64>) -> Value {
        json!({
            "op": "start", "run_id": id, "ts": ts,
            "agent": self.agent, "goal": self.goal, "work_order_id": self.work_order_id,
            "correlation_id": self.correlation_id, "strategy": self.strategy,
            "max_iterations": self.max_iterations, "traceparent": self.traceparent,
            "reserved_micros": reserved,
        })
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Finish {
    Complete,
    Fail(Option<String>),
    Cancel,
    /// No event within the run timeout: `failed`, error and outcome `abandoned`.
    Abandon,
}

impl Finish {
    fn op(&self) -> &'static str {
        match self {
            Finish::Complete => "complete",
            Finish::Fail(_) => "fail",
            Finish::Cancel => "cancel",
            Finish::Abandon => "abandon",
        }
    }

    /// The journal record of the end of run `id` at `ts`, without its cost.
    fn record(&self, id: &str, ts: f64) -> Value {
        let mut record = json!({"op": self.op(), "run_id": id, "ts": ts});
        match self {
            Finish::Fail(error) => record["error"] = json!(error),
            Finish::Abandon => record["error"] = json!(ABANDONED),
            _ => {}
        }
        record
    }
}

/// A finished run and the spend its end recorded in the budget.
#[derive(Clone, Debug, PartialEq)]
pub struct Finished {
    pub run: Run,
    /// What was charged: the explicit cost, or its tokens priced by model.
    pub spend: Recorded,
    /// Why the cost's ledger copy failed, if it did: the end is durable; the line is retried.
    pub ledger_error: Option<String>,
}

/// What one durable step did: for the hook, in journal order, then the caller.
pub enum Applied {
    Started(Box<Run>),
    /// Events of one run, as journaled, with what their caller rendered.
    Events(RunIds, Arc<[Timed]>, Option<Prepared>),
    Finished(Box<Finished>),
}

/// Events rendered for publishing by the layer above, opaque to the store.
pub type Prepared = Box<dyn std::any::Any + Send>;

/// Runs after each durable step, in journal order, before its caller's answer.
pub type AfterCommit = Box<dyn Fn(&mut Applied) + Send + Sync>;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub active: u64,
    pub completed: u64,
    pub failed: u64,
    pub cancelled: u64,
}

/// How many finished runs (the newest) stay in memory, by count and ~bytes; 0: no bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunRetention {
    pub runs: u64,
    pub bytes: u64,
}

impl Default for RunRetention {
    fn default() -> RunRetention {
        RunRetention {
            runs: 100_000,
            bytes: 64 * 1024 * 1024,
        }
    }
}

/// The ids of one page of [`Runs::listing`], in start order (start time, then id).
#[derive(Clone, Debug, PartialEq)]
pub struct Listing {
    pub ids: Vec<Arc<str>>,
    /// The id to list after for the next page; `None` on the last page.
    pub next_after: Option<String>,
}

/// A run's listing order: start time ([`f64::total_cmp`]'s, on its bits), then id.
fn list_key(run: &Run) -> (i64, &str) {
    let bits = run.started_at.to_bits() as i64;
    (bits ^ (((bits >> 63) as u64) >> 1) as i64, &run.run_id)
}

/// The most bytes of free text a run keeps in any one field, on every route.
pub const MAX_TEXT_BYTES: usize = 2048;

pub fn text_too_long() -> String {
    format!("must be at most {MAX_TEXT_BYTES} bytes")
}

pub(crate) const RUN_ID_RULE: &str = "must be 1-128 characters of A-Z a-z 0-9 . _ : -";

/// True when `id` is 1–128 characters of `[A-Za-z0-9._:-]`.
pub fn valid_run_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

const RECORD_OPS: [&str; 7] = [
    "start", "events", "complete", "fail", "cancel", "abandon", "batch",
];

/// The error of a run ended by the run timeout.
pub const ABANDONED: &str = "abandoned";

/// The run store: a change is checked, journaled, applied once durable in journal order (a
/// failed write changes nothing); a start or end in flight counts as applied for checks.
pub struct Runs {
    shared: Arc<Shared>,
    queue: CommitQueue,
    next_id: AtomicU64,
}

struct Shared {
    state: Mutex<State>,
    metrics: RunMetrics,
    budget: Arc<Budget>,
    after_commit: OnceLock<AfterCommit>,
    snapshot_dir: PathBuf,
    snapshot_every: u64,
    snapshots: Mutex<SnapshotProgress>,
    log: Logger,
}

#[derive(Default)]
struct SnapshotProgress {
    /// Journal records applied ever.
    applied: u64,
    due: segments::SnapshotDue,
}

#[derive(Default)]
struct State {
    retention: RunRetention,
    /// Finished runs held, oldest first, with their approximate bytes.
    finished: VecDeque<(String, u64)>,
    finished_bytes: u64,
    /// Shared, so a snapshot takes them at once and writes while the store goes on (a run
    /// changed meanwhile is copied first); a free slot costs a pointer.
    runs: HashMap<Arc<str>, Arc<Run>>,
    counts: Counts,
    /// By run, its records on their way to the journal, in journal order.
    pending: HashMap<String, VecDeque<InFlight>>,
    /// Not yet in the budget ledger: a snapshot carries them to the next start.
    unledgered: Vec<Settlement>,
    /// By type, progress events published ever (`conductor_events_published_total`).
    published: BTreeMap<Box<str>, u64>,
}

/// What a record on its way to the journal will do to one run.
enum InFlight {
    Start,
    /// Its events, which the price of an end after them counts.
    Events(Arc<[Timed]>),
    End(Status),
}

/// One step of a change, applied once durable.
enum Planned {
    Start(String, Value),
    Events(String, Arc<[Timed]>, Option<Prepared>),
    End(String, Value, Box<Settlement>),
}

impl Planned {
    fn run_id(&self) -> &str {
        match self {
            Planned::Start(id, _) | Planned::Events(id, ..) | Planned::End(id, ..) => id,
        }
    }

    fn in_flight(&self) -> InFlight {
        match self {
            Planned::Start(..) => InFlight::Start,
            Planned::Events(_, events, _) => InFlight::Events(events.clone()),
            Planned::End(_, op, _) => {
                InFlight::End(Status::of_end(op["op"].as_str().unwrap_or("")))
            }
        }
    }
}

/// An end's index among the steps applied, its ledger lines and settlement.
type Charged = (usize, LedgerLines, Settlement);

/// The bytes `json!` prints for `{"op": "batch", "ts": ts, "ops": steps}`, keys sorted.
fn batch_record(steps: &[Planned], ts: f64) -> Vec<u8> {
    let mut out = b"{\"op\":\"batch\",\"ops\":[".to_vec();
    for (i, step) in steps.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        match step {
            Planned::Start(_, op) | Planned::End(_, op, _) => {
                out.extend_from_slice(op.to_string().as_bytes())
            }
            Planned::Events(id, events, _) => out.extend(events_record(id, events)),
        }
    }
    out.extend_from_slice(format!("],\"ts\":{}}}", Value::from(ts)).as_bytes());
    out
}

fn events_of<'a>(steps: impl Iterator<Item = &'a Progress>, id: &'a str) -> Vec<&'a Timed> {
    steps
        .filter(|q| q.run_id == id)
        .filter_map(|q| match &q.step {
            Step::Event(e) => Some(e),
            _ => None,
        })
        .collect()
}

/// Fills in a batch's events, each run's together against its durable records.
fn fill_batch(state: &State, mut steps: Vec<Progress>) -> Vec<Progress> {
    let mut by_run: HashMap<String, Vec<usize>> = HashMap::new();
    for (i, p) in steps.iter().enumerate() {
        if matches!(p.step, Step::Event(_)) {
            by_run.entry(p.run_id.clone()).or_default().push(i);
        }
    }
    let new = Detail::default();
    for (id, at) in by_run {
        let mut events: Vec<Timed> = events_of(steps.iter(), &id).into_iter().cloned().collect();
        let run = state.runs.get(id.as_str());
        run.map_or(&new, |r| &r.detail).fill(&mut events);
        for (i, e) in at.into_iter().zip(events) {
            steps[i].step = Step::Event(e);
        }
    }
    steps
}

/// Teaches the budget an end record's cost, live and on replay alike, so restarts agree.
fn learn(budget: &Budget, end: &Value, run: &Run) {
    if let (Some(micros), Some(at)) = (end["spend"]["micros"].as_i64(), run.ended_at) {
        budget.learn(run.text(Text::Agent), micros, at);
    }
}

/// What the tokens of `run` have cost so far, in micro-dollars.
fn accrued(budget: &Budget, run: &Run) -> i64 {
    let pricing = budget.pricing();
    let costs = run.detail.phase_costs([], |m, i, o| pricing.cost(m, i, o));
    let total = costs.iter().map(|(_, c)| c).sum::<f64>().min(MAX_AMOUNT);
    (total * 1e6).round() as i64
}

/// Grows a reservation to its tokens' cost so starts cannot overdraw; from records, as replay.
fn cover(budget: &Budget, run: &mut Run, events: &[Timed]) {
    if !events.iter().any(Timed::is_tokens) {
        return;
    }
    let spent = accrued(budget, run);
    if run.reserved.is_some_and(|held| spent > held) {
        run.reserved = Some(spent);
        budget.cover(&run.run_id, spent);
    }
}

/// A change to a run whose start was never written: replay ignores it too.
fn start_lost(id: &str) -> Error {
    Error::Storage(format!("run {id} has no durable start"))
}

fn storage(e: impl std::fmt::Display) -> Error {
    Error::Storage(e.to_string())
}

/// Refuses a change to run `id` unless `status` is running; `at` (`events[2]: `) prefixes errors.
fn check_running(id: &str, status: Option<Status>, at: &str) -> Result<(), Error> {
    match status {
        None => Err(Error::NotFound(format!("{at}run {id} not found"))),
        Some(Status::Running) => Ok(()),
        Some(s) => Err(Error::Conflict(format!(
            "{at}run {id} is already {}",
            s.as_str()
        ))),
    }
}

/// The settlement in an end record or a snapshot, of the run started at `started_at`.
fn settlement_of(v: &Value, started_at: Option<f64>) -> Option<Settlement> {
    let mut s = Settlement::from_record(v["run_id"].as_str()?, v["ts"].as_f64()?, &v["spend"])?;
    s.started_at = started_at;
    Some(s)
}

impl Runs {
    /// Opens the store under `dir`: `runs/snapshot`, then the records after it (an old
    /// `runs.jsonl` first). Running runs get their reservation back; recent and unledgered
    /// costs go into the budget ledger ([`Budget::reconcile`]). Snapshots each `snapshot_bytes`.
    pub fn open(
        dir: &Path,
        metrics: RunMetrics,
        budget: Arc<Budget>,
        retention: RunRetention,
        snapshot_bytes: u64,
        log: Logger,
    ) -> Result<Runs, Error> {
        let store = dir.join("runs");
        std::fs::create_dir_all(&store)
            .map_err(|e| storage(format!("{}: {e}", store.display())))?;
        let mut state = State {
            retention,
            ..State::default()
        };
        let snapshot = snapshot::read(&store.join(snapshot::FILE), &mut state, &metrics, &budget);
        let snapshot = snapshot.map_err(|e| storage(format!("cannot read the run snapshot: {e}")));
        // Every day's: known to be missing from the ledger.
        let (covered, mut settlements) = snapshot?;
        let sizes = segments::SegmentRetention::snapshotted(snapshot_bytes);
        let since = time::day_of(time::now_unix()) - 1;
        // Read a record at a time: a start holds the runs, not their history.
        let old = dir.join("runs.jsonl");
        let journal = Segments::open(&store, Some(&old), sizes, Some(covered), |record| {
            // Checksums passed, so a record not ours is another version's:
            // skipping it would lose a change and make counters jump.
            let v = serde_json::from_slice::<Value>(record).unwrap_or(Value::Null);
            if !RECORD_OPS.contains(&v["op"].as_str().unwrap_or_default()) {
                return Err("not a run record".to_string());
            }
            state.apply(&v, &metrics, &mut |end, run, _| {
                learn(&budget, end, run);
                let settled = settlement_of(end, Some(run.started_at));
                settlements.extend(settled.filter(|s| s.day >= since));
            });
            Ok(())
        })
        .map_err(Error::Storage)?;
        state.restore_reservations(&budget)?;
        state.unledgered = budget.reconcile(&settlements)?;
        let progress = SnapshotProgress {
            applied: journal.appended(),
            ..SnapshotProgress::default()
        };
        Ok(Runs {
            queue: CommitQueue::start(journal, "runs").map_err(storage)?,
            shared: Arc::new(Shared {
                state: Mutex::new(state),
                metrics,
                budget,
                after_commit: OnceLock::new(),
                snapshot_dir: store,
                snapshot_every: snapshot_bytes,
                snapshots: Mutex::new(progress),
                log,
            }),
            next_id: AtomicU64::new(0),
        })
    }

    /// Submits `record` under `state`'s lock, so the journal holds changes in checked order.
    /// Once durable: the plan is applied, a due snapshot taken, ledger copies written,
    /// the hook called. Every record passes here, so the applied count is exact.
    fn commit(
        &self,
        mut state: MutexGuard<'_, State>,
        plan: Vec<Planned>,
        record: Vec<u8>,
    ) -> Result<Vec<Applied>, Error> {
        for step in &plan {
            let flights = state.pending.entry(step.run_id().to_string());
            flights.or_default().push_back(step.in_flight());
        }
        let (promise, waiting) = commit_queue::promise();
        let bytes = record.len() as u64 + 1;
        let shared = self.shared.clone();
        self.queue.submit_in_order(record, move |o| {
            let mut state = shared.lock();
            for step in &plan {
                state.landed(step.run_id());
            }
            if let Err(e) = o {
                drop(state);
                for step in &plan {
                    if let Planned::Start(id, _) = step {
                        shared.budget.release(id);
                    }
                }
                return Box::new(move || promise.keep(Err(storage(e))));
            }
            let (mut applied, charged) = shared.apply_plan(&mut state, plan);
            drop(state);
            shared.applied(bytes);
            Box::new(move || {
                shared.write_ledger(charged, &mut applied);
                if let Some(hook) = shared.after_commit.get() {
                    applied.iter_mut().for_each(hook);
                }
                promise.keep(Ok(applied))
            })
        });
        drop(state);
        // Dropped unanswered only when a stage panicked.
        waiting
            .wait()
            .unwrap_or_else(|| Err(storage("the run journal's committer failed")))
    }

    /// Sets the hook; once, before the first change.
    pub fn after_commit(&self, hook: AfterCommit) {
        let _ = self.shared.after_commit.set(hook);
    }

    /// Starts a run, and returns it once the start is durable.
    pub fn start(&self, mut new: NewRun) -> Result<Run, Error> {
        let id = match new.run_id.take() {
            Some(id) if !valid_run_id(&id) => return Err(Error::invalid("run_id", RUN_ID_RULE)),
            Some(id) => id,
            None => self.make_id(),
        };
        let state = self.shared.lock();
        if state.status_of(&id).is_some() {
            return Err(Error::Conflict(format!("run {id} already exists")));
        }
        // Checked and reserved at once, and held while the start is written, so
        // concurrent starts cannot overdraw the day.
        let reserved = self.shared.budget.reserve(&id, new.agent.as_deref());
        let reserved = reserved.map_err(Error::Exhausted)?;
        let op = new.start_record(&id, time::now_unix(), Some(reserved));
        let record = op.to_string().into_bytes();
        let plan = vec![Planned::Start(id.clone(), op)];
        match self.commit(state, plan, record)?.pop() {
            Some(Applied::Started(run)) => Ok(*run),
            _ => Err(start_lost(&id)),
        }
    }

    /// Finishes a running run once its end and cost are durable, charged, and ledgered.
    pub fn finish(&self, id: &str, how: Finish, cost: Option<f64>) -> Result<Finished, Error> {
        let state = self.shared.lock();
        let now = time::now_unix();
        check_running(id, state.status_of(id), "")?;
        let settlement = self.price_end(&state, id, cost, &[], now)?;
        let mut op = how.record(id, now);
        op["spend"] = settlement.to_json();
        let record = op.to_string().into_bytes();
        let plan = vec![Planned::End(id.to_string(), op, Box::new(settlement))];
        match self.commit(state, plan, record)?.pop() {
            Some(Applied::Finished(f)) => Ok(*f),
            _ => Err(start_lost(id)),
        }
    }

    /// The end of `id` at `now`: `cost`, or its tokens (in flight and `later` too) priced,
    /// capped at [`MAX_AMOUNT`]: binding only if pricing changed under the run, which still ends.
    fn price_end(
        &self,
        state: &State,
        id: &str,
        cost: Option<f64>,
        later: &[&Timed],
        now: f64,
    ) -> Result<Settlement, Error> {
        let budget = &self.shared.budget;
        if let Some(c) = cost {
            if !(c.is_finite() && c >= 0.0) {
                return Err(Error::invalid("cost", "must be a non-negative number"));
            }
            return budget.price(id, SpendInput::Amount(c), &[], now);
        }
        let (mut phase_costs, models) = self.token_costs(state, id, later.iter().copied());
        for (_, c) in &mut phase_costs {
            *c = c.min(MAX_AMOUNT);
        }
        let total = phase_costs.iter().map(|(_, c)| c).sum::<f64>();
        let total = SpendInput::Amount(total.min(MAX_AMOUNT));
        let mut settlement = budget.price(id, total, &phase_costs, now)?;
        // So a model the pricing table lacks is reported once the end is durable.
        settlement.models = models;
        Ok(settlement)
    }

    /// The cost by phase of the tokens of `id` (applied, in flight, `later`), and their models.
    fn token_costs<'a>(
        &self,
        state: &'a State,
        id: &str,
        later: impl Iterator<Item = &'a Timed>,
    ) -> (Vec<(String, f64)>, Vec<String>) {
        let pricing = self.shared.budget.pricing();
        let empty = Detail::default();
        let detail = state.runs.get(id).map_or(&empty, |r| &r.detail);
        let in_flight = state.in_flight(id).flat_map(|f| match f {
            InFlight::Events(events) => &events[..],
            _ => &[],
        });
        let models = std::cell::RefCell::new(std::collections::BTreeSet::new());
        let costs = detail.phase_costs(in_flight.chain(later), |m, i, o| {
            models.borrow_mut().extend(m.map(str::to_string));
            pricing.cost(m, i, o)
        });
        (costs, models.into_inner().into_iter().collect())
    }

    /// Refuses tokens pricing `id` past [`MAX_AMOUNT`], so every run can be priced and ended.
    fn check_token_cost<'a>(
        &self,
        state: &'a State,
        id: &str,
        later: impl Iterator<Item = &'a Timed>,
        field: &str,
    ) -> Result<(), Error> {
        let (costs, _) = self.token_costs(state, id, later);
        if costs.iter().map(|(_, c)| c).sum::<f64>() <= MAX_AMOUNT {
            return Ok(());
        }
        let message = format!("would price run {id} above {MAX_AMOUNT} dollars of tokens");
        Err(Error::invalid(field, message))
    }

    /// Applies progress events of any runs, all or nothing, as one journal record; returns
    /// each step's outcome once durable. A refused step gives back the batch's reservations.
    pub fn apply_batch(&self, steps: Vec<Progress>) -> Result<Vec<Applied>, Error> {
        let state = self.shared.lock();
        let now = time::now_unix();
        self.check_batch(&state, &steps)?;
        let mut reserved = HashMap::new();
        let plan = self
            .reserve_starts(&steps, &mut reserved)
            .and_then(|()| self.plan_batch(&state, steps, &reserved, now));
        if plan.is_err() {
            // Every start of the batch reserved, not only those before the failed step.
            for id in reserved.keys() {
                self.shared.budget.release(id);
            }
        }
        let plan = plan?;
        let record = batch_record(&plan, now);
        self.commit(state, plan, record)
    }

    fn reserve_starts(
        &self,
        steps: &[Progress],
        reserved: &mut HashMap<String, i64>,
    ) -> Result<(), Error> {
        for p in steps {
            let Step::Start(new) = &p.step else { continue };
            let micros = self.shared.budget.reserve(&p.run_id, new.agent.as_deref());
            let micros = micros.map_err(Error::Exhausted)?;
            reserved.insert(p.run_id.clone(), micros);
        }
        Ok(())
    }

    /// The plan of a checked batch: consecutive events of one run in one op.
    fn plan_batch(
        &self,
        state: &State,
        steps: Vec<Progress>,
        reserved: &HashMap<String, i64>,
        now: f64,
    ) -> Result<Vec<Planned>, Error> {
        let steps = fill_batch(state, steps);
        let mut plan = Vec::new();
        let mut i = 0;
        while i < steps.len() {
            let (p, id) = (&steps[i], &steps[i].run_id);
            match &p.step {
                Step::Start(new) => {
                    let mut op = new.start_record(id, now, reserved.get(id).copied());
                    op["at"] = json!(p.at);
                    plan.push(Planned::Start(id.clone(), op));
                }
                Step::Event(_) => {
                    let same = |q: &Progress| match &q.step {
                        Step::Event(e) if q.run_id == *id => Some(e.clone()),
                        _ => None,
                    };
                    let events: Vec<Timed> = steps[i..].iter().map_while(same).collect();
                    i += events.len();
                    plan.push(Planned::Events(id.clone(), events.into(), None));
                    continue;
                }
                Step::Finish {
                    how,
                    reason,
                    duration_ms,
                    metrics,
                } => {
                    // The run's events earlier in this batch count too.
                    let later = events_of(steps[..i].iter(), id);
                    let settlement = self.price_end(state, id, None, &later, now)?;
                    let mut op = how.record(id, now);
                    // A batch's end always carries `error`: a cancel's reason.
                    match how {
                        Finish::Complete => op["error"] = Value::Null,
                        Finish::Cancel => op["error"] = json!(reason),
                        _ => {}
                    }
                    op["at"] = json!(p.at);
                    op["duration_ms"] = json!(duration_ms);
                    op["spend"] = settlement.to_json();
                    // As a string: the text as sent, which an object would reorder.
                    if let Some(text) = metrics {
                        op["metrics"] = json!(text);
                    }
                    plan.push(Planned::End(id.clone(), op, Box::new(settlement)));
                }
            }
            i += 1;
        }
        Ok(plan)
    }

    /// Checks a batch's steps in order against the runs and earlier steps, changing nothing.
    fn check_batch(&self, state: &State, steps: &[Progress]) -> Result<(), Error> {
        let mut now: HashMap<&str, Status> = HashMap::new();
        for p in steps {
            let (id, at) = (p.run_id.as_str(), p.index);
            let status = now.get(id).copied().or_else(|| state.status_of(id));
            if let Step::Start(_) = p.step {
                if status.is_some() {
                    let message = format!("events[{at}]: run {id} already exists");
                    return Err(Error::Conflict(message));
                }
                now.insert(id, Status::Running);
                continue;
            }
            check_running(id, status, &format!("events[{at}]: "))?;
            match &p.step {
                Step::Finish { how, .. } => {
                    now.insert(id, Status::of_end(how.op()));
                }
                Step::Event(e) if e.is_tokens() => {
                    let batch = steps.iter().take_while(|q| q.index <= at);
                    let events = events_of(batch, id);
                    let field = format!("events[{at}].input_tokens");
                    self.check_token_cost(state, id, events.into_iter(), &field)?;
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Fills in `events` from run `id`; returns the run's version they were filled against.
    pub fn fill_events(&self, id: &str, events: &mut [Timed]) -> Option<u64> {
        let state = self.shared.lock();
        let run = state.runs.get(id)?;
        run.detail.fill(events);
        Some(run.detail.version)
    }

    /// Records events for a running run, all or nothing, once durable; `prepared` goes to the
    /// hook. If the run moved past `version`, they are refilled and `prepared` dropped.
    pub fn record_events(
        &self,
        id: &str,
        mut events: Arc<[Timed]>,
        version: Option<u64>,
        mut prepared: Option<Prepared>,
    ) -> Result<RunIds, Error> {
        // Built before the lock, submitted under it.
        let mut record = events_record(id, &events);
        let state = self.shared.lock();
        check_running(id, state.status_of(id), "")?;
        // Only tokens change a run's price.
        if events.iter().any(Timed::is_tokens) {
            self.check_token_cost(&state, id, events.iter(), "input_tokens")?;
        }
        let current = state.runs.get(id).map(|r| &r.detail);
        if version.is_none() || version != current.map(|d| d.version) {
            let mut again = events.to_vec();
            current.unwrap_or(&LazyDetail::default()).fill(&mut again);
            events = again.into();
            record = events_record(id, &events);
            prepared = None;
        }
        let plan = vec![Planned::Events(id.to_string(), events, prepared)];
        match self.commit(state, plan, record)?.pop() {
            Some(Applied::Events(ids, ..)) => Ok(ids),
            _ => Err(start_lost(id)),
        }
    }

    /// Running runs with no start or event in the `timeout` seconds before `now`.
    pub fn stale(&self, now: f64, timeout: f64) -> Vec<String> {
        let state = self.shared.lock();
        state
            .runs
            .values()
            .filter(|r| r.status == Status::Running)
            .filter(|r| {
                let last = r.detail.event_span.map_or(r.started_at, |(_, l)| l);
                last.max(r.started_at) + timeout <= now
            })
            .map(|r| r.run_id.to_string())
            .collect()
    }

    pub fn get(&self, id: &str) -> Option<Run> {
        self.shared.lock().runs.get(id).map(|r| Run::clone(r))
    }

    /// What `f` makes of run `id`, under the lock: cheaper than [`Runs::get`]'s copy.
    pub fn with_run<R>(&self, id: &str, f: impl FnOnce(&Run) -> R) -> Option<R> {
        self.shared.lock().runs.get(id).map(|r| f(r))
    }

    /// Ids of up to `limit` runs with `status` in start order after the held run `after`.
    pub fn listing(
        &self,
        status: Option<Status>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Listing, Error> {
        let state = self.shared.lock();
        let from = after.map(|id| match state.runs.get(id) {
            Some(run) => Ok(list_key(run)),
            None => Err(Error::NotFound(format!("run {id} not found"))),
        });
        let from = from.transpose()?;
        // The `limit + 1` first, in a max-heap: one pass, and only the page cloned.
        let mut first: BinaryHeap<(i64, &str)> = BinaryHeap::with_capacity(limit + 2);
        for run in state.runs.values() {
            let key = list_key(run);
            if status.is_some_and(|s| run.status != s) || from.is_some_and(|f| key <= f) {
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
        let ids = keys
            .iter()
            .filter_map(|(_, id)| state.runs.get_key_value(*id).map(|(id, _)| id.clone()))
            .collect();
        let next_after = more
            .then(|| keys.last().map(|(_, id)| id.to_string()))
            .flatten();
        Ok(Listing { ids, next_after })
    }

    /// The runs of `ids` still held, with `status` if given: shared, not copied.
    pub fn runs_of(&self, ids: &[Arc<str>], status: Option<Status>) -> Vec<Arc<Run>> {
        let state = self.shared.lock();
        ids.iter()
            .filter_map(|id| state.runs.get(id))
            .filter(|run| status.is_none_or(|s| run.status == s))
            .cloned()
            .collect()
    }

    /// The newest running run and how many runs are running.
    pub fn newest_running(&self) -> Option<(Arc<Run>, u64)> {
        let state = self.shared.lock();
        let running = state.runs.values().filter(|r| r.status == Status::Running);
        let newest = running.max_by_key(|r| list_key(r))?;
        Some((newest.clone(), state.counts.active))
    }

    pub fn counts(&self) -> Counts {
        self.shared.lock().counts
    }

    /// By type, the progress events the records applied ever published.
    pub fn published(&self) -> Vec<(String, u64)> {
        let state = self.shared.lock();
        let all = state.published.iter();
        all.map(|(kind, n)| (kind.to_string(), *n)).collect()
    }

    fn make_id(&self) -> String {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        let ms = (time::now_unix() * 1000.0) as u64;
        format!("run-{ms}-{:x}-{n}", std::process::id())
    }
}

/// The journal record of an events batch: the bytes `json!` prints, written directly.
fn events_record(id: &str, events: &[Timed]) -> Vec<u8> {
    let mut out = String::with_capacity(64 + events.len() * 112);
    out.push_str("{\"events\":[");
    // Events of a batch nearly always share one time: printed once.
    let mut at: Option<(u64, String)> = None;
    for (i, e) in events.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        if at.as_ref().map(|(bits, _)| *bits) != Some(e.at.to_bits()) {
            let mut text = String::new();
            crate::json_text::push_f64(&mut text, e.at);
            at = Some((e.at.to_bits(), text));
        }
        e.push_json_at(&mut out, at.as_ref().map_or("", |(_, text)| text));
    }
    out.push_str("],\"op\":\"events\",\"run_id\":");
    crate::json_text::push_str(&mut out, id);
    out.push('}');
    out.into_bytes()
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Updates are applied whole under the lock and do not panic midway.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn snapshots(&self) -> MutexGuard<'_, SnapshotProgress> {
        self.snapshots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies a durable plan: what each step did, and what its ends charged.
    fn apply_plan(&self, state: &mut State, plan: Vec<Planned>) -> (Vec<Applied>, Vec<Charged>) {
        let mut applied = Vec::with_capacity(plan.len());
        let mut charged = Vec::new();
        for step in plan {
            match step {
                Planned::Start(id, op) => {
                    state.apply(&op, &self.metrics, &mut |_, _, _| {});
                    if let Some(run) = state.runs.get(id.as_str()) {
                        applied.push(Applied::Started(Box::new(Run::clone(run))));
                    }
                }
                Planned::Events(id, events, prepared) => {
                    if let Some(run) = state.apply_events(&id, &events, &self.metrics) {
                        cover(&self.budget, run, &events);
                        applied.push(Applied::Events(run.ids(), events, prepared));
                    }
                }
                Planned::End(id, op, mut settlement) => {
                    let mut whole = None;
                    state.apply(&op, &self.metrics, &mut |end, run, d| {
                        learn(&self.budget, end, run);
                        // Known only now: the start may have been in flight at pricing.
                        settlement.started_at = Some(run.started_at);
                        whole = Some(d);
                    });
                    let (Some(run), Some(detail)) = (state.runs.get(id.as_str()), whole) else {
                        continue;
                    };
                    let run = Run {
                        detail,
                        ..Run::clone(run)
                    };
                    let (spend, lines) = self.budget.charge(&settlement);
                    // Until its ledger lines are written.
                    state.unledgered.push(Settlement::clone(&settlement));
                    charged.push((applied.len(), lines, *settlement));
                    let finished = Finished {
                        run,
                        spend,
                        ledger_error: None,
                    };
                    applied.push(Applied::Finished(Box::new(finished)));
                }
            }
        }
        (applied, charged)
    }

    fn write_ledger(&self, charged: Vec<Charged>, applied: &mut [Applied]) {
        for (i, lines, settlement) in charged {
            match self.budget.write_settlement(lines) {
                Ok(()) => self.lock().ledgered(&settlement),
                Err(e) => {
                    if let Some(Applied::Finished(f)) = applied.get_mut(i) {
                        f.ledger_error = Some(e.to_string());
                    }
                }
            }
        }
    }

    /// Counts a durable record of `bytes`; snapshots when due, on the applying thread, so
    /// state and metrics are exactly those of the records so far.
    fn applied(self: &Arc<Self>, bytes: u64) {
        let mut p = self.snapshots();
        p.applied += 1;
        if !p.due.grew(bytes, self.snapshot_every) {
            return;
        }
        let taken = Instant::now();
        let state = self.lock();
        let records = p.applied;
        let head = snapshot::head(records, &state, &self.budget.learned());
        let values = self.metrics.values();
        let finished = state.finished.iter();
        let finished = finished.filter_map(|(id, _)| state.runs.get(id.as_str()));
        let running = state.runs.values().filter(|r| r.status == Status::Running);
        let runs: Vec<Arc<Run>> = running.chain(finished).cloned().collect();
        drop(state);
        drop(p);
        let me = self.clone();
        let paused = taken.elapsed();
        let spawned = std::thread::Builder::new()
            .name("runs-snapshot".into())
            .spawn(move || me.write_snapshot(records, head, runs, values, paused));
        if spawned.is_err() {
            self.snapshots().due.done(None);
        }
    }

    /// Writes a snapshot, then deletes the segments it covers; a failure is logged.
    fn write_snapshot(
        &self,
        records: u64,
        head: Value,
        runs: Vec<Arc<Run>>,
        metrics: metrics::Values,
        paused: Duration,
    ) {
        let began = Instant::now();
        let path = self.snapshot_dir.join(snapshot::FILE);
        let n = runs.len();
        let written = snapshot::write(&path, head, runs, metrics)
            .map_err(|e| format!("{}: {e}", path.display()))
            .and_then(|size| {
                let dropped = segments::drop_covered(&self.snapshot_dir, records);
                dropped.map(|dropped| (size, dropped))
            });
        let size = written.as_ref().ok().map(|&(size, _)| size);
        self.snapshots().due.done(size);
        let ms = |d: Duration| (d.as_secs_f64() * 1000.0).into();
        match written {
            Ok((size, dropped)) => self.log.info(
                "run snapshot written",
                &[
                    ("records", records.into()),
                    ("runs", n.into()),
                    ("bytes", size.into()),
                    ("segments_deleted", dropped.into()),
                    ("taking_ms", ms(paused)),
                    ("writing_ms", ms(began.elapsed())),
                ],
            ),
            Err(e) => self.log.warn("run snapshot failed", &[("error", e.into())]),
        }
    }
}

fn publish(published: &mut BTreeMap<Box<str>, u64>, kind: &str) {
    if let Some(n) = published.get_mut(kind) {
        *n += 1;
    } else {
        published.insert(kind.into(), 1);
    }
}

impl State {
    /// Gives each running run its budget reservation back after a start.
    fn restore_reservations(&mut self, budget: &Budget) -> Result<(), Error> {
        for run in self.runs.values_mut() {
            if run.status != Status::Running {
                continue;
            }
            // An older start record without a reservation gets what a start reserves now.
            let estimate = || budget.run_estimate(run.text(Text::Agent));
            let started = run.reserved.unwrap_or_else(estimate);
            let micros = started.max(accrued(budget, run));
            budget.restore_reservation(&run.run_id, run.started_at, micros)?;
            if run.reserved != Some(micros) {
                Arc::make_mut(run).reserved = Some(micros);
            }
        }
        Ok(())
    }

    /// Adds a run read from a snapshot, in its order.
    fn restore(&mut self, run: Run) {
        if run.status != Status::Running {
            let bytes = run.approx_bytes();
            self.finished.push_back((run.run_id.to_string(), bytes));
            self.finished_bytes += bytes;
        }
        self.runs.insert(run.run_id.clone(), Arc::new(run));
    }

    /// Notes `s` and every earlier settlement of its day ledgered (the ledger appends those owed).
    fn ledgered(&mut self, s: &Settlement) {
        let same = |u: &Settlement| u.run_id == s.run_id && u.started_at == s.started_at;
        if let Some(i) = self.unledgered.iter().position(same) {
            let mut at = 0;
            self.unledgered.retain(|u| {
                at += 1;
                at > i + 1 || u.day != s.day
            });
        }
    }

    /// Forgets the oldest finished runs past the retention.
    fn trim(&mut self) {
        let RunRetention { runs, bytes: most } = self.retention;
        while self.finished.len() > 1
            && ((runs > 0 && self.finished.len() as u64 > runs)
                || (most > 0 && self.finished_bytes > most))
        {
            if let Some((old, bytes)) = self.finished.pop_front() {
                self.runs.remove(old.as_str());
                self.finished_bytes -= bytes;
            }
        }
    }

    fn in_flight(&self, id: &str) -> impl Iterator<Item = &InFlight> {
        self.pending.get(id).into_iter().flatten()
    }

    /// Notes the oldest record of run `id` in flight durable or failed.
    fn landed(&mut self, id: &str) {
        if let Some(flights) = self.pending.get_mut(id) {
            flights.pop_front();
            if flights.is_empty() {
                self.pending.remove(id);
            }
        }
    }

    /// Where a run stands once the records in flight are durable.
    fn status_of(&self, id: &str) -> Option<Status> {
        let durable = self.runs.get(id).map(|r| r.status);
        self.in_flight(id).fold(durable, |status, f| match f {
            InFlight::Start => Some(Status::Running),
            InFlight::Events(_) => status,
            InFlight::End(to) => Some(*to),
        })
    }

    /// Applies one journal record, live and on replay alike; `ended` sees the whole detail.
    fn apply(
        &mut self,
        v: &Value,
        m: &RunMetrics,
        ended: &mut dyn FnMut(&Value, &Run, LazyDetail),
    ) {
        if v["op"] == "batch" {
            for op in v["ops"].as_array().into_iter().flatten() {
                self.apply(op, m, ended);
            }
            return;
        }
        let (Some(op), Some(id)) = (v["op"].as_str(), v["run_id"].as_str()) else {
            return;
        };
        let ts = v["ts"].as_f64().unwrap_or(0.0);
        match op {
            "start" => self.start(id, v, ts, m),
            "events" => {
                if let Ok(events) = event::parse_batch(&v["events"], ts) {
                    self.apply_events(id, &events, m);
                }
            }
            "complete" | "fail" | "cancel" | "abandon" => {
                let whole = self.finish(id, op, ts, v, m);
                if let (Some(whole), Some(run)) = (whole, self.runs.get(id)) {
                    ended(v, run, whole);
                }
            }
            _ => {}
        }
        // A lifecycle event's own time widens the run's span of events.
        if let (Some(at), Some(run)) = (v["at"].as_f64(), self.runs.get_mut(id)) {
            Arc::make_mut(run).detail.saw(at);
        }
    }

    /// Applies `events` to run `id`; counts all but `tokens` published, as `PreparedEvents` does.
    fn apply_events(&mut self, id: &str, events: &[Timed], m: &RunMetrics) -> Option<&mut Run> {
        let run = Arc::make_mut(self.runs.get_mut(id)?);
        for e in events {
            let who = RunRef::new(&run.run_id, run.texts.get(Text::Traceparent));
            run.detail.apply(e, m, who);
            if !e.is_tokens() {
                publish(&mut self.published, e.kind());
            }
        }
        Some(run)
    }

    fn start(&mut self, id: &str, v: &Value, ts: f64, m: &RunMetrics) {
        if self.runs.contains_key(id) {
            return;
        }
        self.counts.active += 1;
        m.active.inc();
        m.started.inc();
        publish(&mut self.published, "run_started");
        let key: Arc<str> = id.into();
        let run = Run::from_members(v, key.clone(), Status::Running, ts);
        self.runs.insert(key, Arc::new(run));
    }

    /// Ends running run `id` by its end record `v`; returns its whole detail.
    fn finish(
        &mut self,
        id: &str,
        op: &str,
        ts: f64,
        v: &Value,
        m: &RunMetrics,
    ) -> Option<LazyDetail> {
        // Checked first: a finished run a snapshot shares is not copied.
        if self.runs.get(id)?.status != Status::Running {
            return None;
        }
        let run = Arc::make_mut(self.runs.get_mut(id)?);
        let status = Status::of_end(op);
        let count = match status {
            Status::Completed => &mut self.counts.completed,
            Status::Failed => &mut self.counts.failed,
            _ => &mut self.counts.cancelled,
        };
        // Abandoned runs are failed ones, counted apart so that dead orchestrators show.
        let outcome = match op {
            "abandon" => "abandoned",
            _ => status.as_str(),
        };
        run.status = status;
        run.ended_at = Some(ts);
        run.texts.set(Text::Error, v["error"].as_str());
        run.texts.set(Text::Metrics, v["metrics"].as_str());
        run.cost = v["spend"]["micros"].as_i64();
        // Released: a start regrows only running runs' reservations (`Runs::open`).
        run.reserved = None;
        *count += 1;
        self.counts.active -= 1;
        m.active.dec();
        if let Some(kind) = status.end_event() {
            publish(&mut self.published, kind);
        }
        // The emitter's measure when sent: its clock saw the whole run.
        let seconds = v["duration_ms"]
            .as_f64()
            .map_or((ts - run.started_at).max(0.0), |ms| ms / 1000.0);
        let who = RunRef::new(&run.run_id, run.text(Text::Traceparent));
        m.finished(who, outcome, seconds, ts);
        let summary = run.detail.summary();
        let mut whole = std::mem::replace(&mut run.detail, summary);
        whole.duration_seconds = Some(seconds);
        let bytes = run.approx_bytes();
        self.finished.push_back((id.to_string(), bytes));
        self.finished_bytes += bytes;
        self.trim();
        Some(whole)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::segments::DEFAULT_SNAPSHOT_BYTES;
    use crate::testing::{quiet, TempDir};

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

    #[test]
    fn batch_records_are_the_bytes_json_prints() {
        let batch = json!([{"type": "delivery_started"}, {"type": "delivery_started"}]);
        let events: Arc<[Timed]> = event::parse_batch(&batch, 12.5).unwrap().into();
        let list: Vec<Value> = events.iter().map(Timed::to_json).collect();
        let start = NewRun::default().start_record("a", 1.5, Some(3));
        let end = Finish::Fail(Some("x \"y\"".into())).record("b", 2.25);
        let plan = vec![
            Planned::Start("a".into(), start.clone()),
            Planned::Events("a".into(), events, None),
            Planned::Start("b".into(), end.clone()),
        ];
        let ops = json!([start, {"op": "events", "run_id": "a", "events": list}, end]);
        let old = json!({"op": "batch", "ts": 1_795_439_678.125, "ops": ops});
        let record = batch_record(&plan, 1_795_439_678.125);
        assert_eq!(String::from_utf8(record).unwrap(), old.to_string());
    }

    fn open(dir: &Path) -> Runs {
        let budget = crate::budget::BudgetConfig::new(dir);
        let clock = Arc::new(crate::budget::SystemClock);
        let budget = Arc::new(Budget::open(budget, clock).unwrap());
        let metrics = RunMetrics::register(&crate::metrics::Registry::new()).unwrap();
        Runs::open(
            dir,
            metrics,
            budget,
            RunRetention::default(),
            DEFAULT_SNAPSHOT_BYTES,
            quiet(),
        )
        .unwrap()
    }

    #[test]
    fn changes_in_flight_count_for_later_checks_and_prices() {
        let dir = TempDir::new("runs-pending");
        let runs = open(&dir);
        // The committer waits in this record's first stage until released,
        // so everything submitted meanwhile stays in flight.
        let (release, released) = std::sync::mpsc::channel::<()>();
        let (holding, held) = std::sync::mpsc::channel::<()>();
        let noop = br#"{"events":[],"op":"events","run_id":"none"}"#.to_vec();
        runs.queue.submit_in_order(noop, move |_| {
            holding.send(()).unwrap();
            released.recv().unwrap();
            Box::new(|| {})
        });
        held.recv().unwrap();
        let new = NewRun {
            run_id: Some("r".into()),
            ..NewRun::default()
        };
        // Each call waits for its record on a thread of its own; the next
        // is made once the store counts the one before it in flight.
        let deadline = Instant::now() + Duration::from_secs(30);
        let in_flight = |records: usize| {
            while runs.shared.lock().pending.get("r").map_or(0, VecDeque::len) < records {
                assert!(Instant::now() < deadline, "never in flight");
                std::thread::yield_now();
            }
        };
        let finished = std::thread::scope(|scope| {
            let first = new.clone();
            let started = scope.spawn(|| runs.start(first));
            in_flight(1);
            assert!(runs.get("r").is_none(), "not visible before it is durable");
            let again = runs.start(new);
            assert!(matches!(again, Err(Error::Conflict(_))), "{again:?}");
            let tokens = json!([{"type": "tokens", "phase": "plan", "model": "m",
            "input_tokens": 1_000_000, "output_tokens": 0}]);
            let events: Arc<[Timed]> = event::parse_batch(&tokens, time::now_unix())
                .unwrap()
                .into();
            let recorded = scope.spawn(|| runs.record_events("r", events, None, None));
            in_flight(2);
            let finished = scope.spawn(|| runs.finish("r", Finish::Complete, None));
            in_flight(3);
            let twice = runs.finish("r", Finish::Cancel, None);
            assert!(matches!(twice, Err(Error::Conflict(_))), "{twice:?}");
            let late = runs.record_events("r", Arc::from(Vec::new()), None, None);
            assert!(matches!(late, Err(Error::Conflict(_))), "{late:?}");
            assert_eq!(runs.counts(), Counts::default());
            release.send(()).unwrap();
            assert_eq!(started.join().unwrap().unwrap().status, Status::Running);
            assert_eq!(recorded.join().unwrap().unwrap().run_id, "r");
            finished.join().unwrap().unwrap()
        });
        let price = runs.shared.budget.pricing().cost(Some("m"), 1_000_000, 0);
        assert!(price > 0.0);
        assert_eq!(finished.spend.amount, (price * 1e6).round() / 1e6);
        assert_eq!(finished.run.status, Status::Completed);
        assert_eq!(runs.counts().completed, 1);
        // The store keeps the finished run's summary; its answer had all.
        let kept = runs.get("r").unwrap();
        assert_eq!(kept.detail.tokens(), finished.run.detail.tokens());
        assert!(kept.detail.tokens_by_phase_model.is_empty());
        drop(runs);
        let reopened = open(&dir);
        assert_eq!(reopened.get("r").unwrap(), kept);
        assert_eq!(
            reopened.shared.budget.status().today_spend,
            finished.spend.amount
        );
    }

    /// A run with 250 distinct 64-character phase, gate and model names and
    /// 2,048-byte gate reasons, as JSON events.
    fn heavy_events() -> Value {
        let name = |kind: &str, i: usize| format!("{kind}-{i:0>58}");
        let events: Vec<Value> = (0..250)
            .flat_map(|i| {
                [
                    json!({"type": "phase_started", "phase": name("phase", i)}),
                    json!({"type": "tokens", "phase": name("phase", i), "model": name("model", i),
                        "input_tokens": 10 + i, "output_tokens": 1}),
                    json!({"type": "gate_checked", "gate": name("gate-", i), "passed": i % 2 == 0,
                        "reason": "r".repeat(2048)}),
                    json!({"type": "phase_completed", "phase": name("phase", i), "success": true}),
                ]
            })
            .collect();
        Value::Array(events)
    }

    #[test]
    fn a_finished_run_keeps_a_summary_and_retention_bounds_bytes() {
        let dir = TempDir::new("runs-summary");
        let runs = open(&dir);
        let events: Arc<[Timed]> = event::parse_batch(&heavy_events(), time::now_unix())
            .unwrap()
            .into();
        let new = |id: &str| NewRun {
            run_id: Some(id.into()),
            ..NewRun::default()
        };
        runs.start(new("heavy")).unwrap();
        runs.record_events("heavy", events, None, None).unwrap();
        let running = runs.get("heavy").unwrap();
        let finished = runs.finish("heavy", Finish::Complete, None).unwrap();
        assert_eq!(finished.run.detail.phases.len(), 250, "the answer has all");
        let kept = runs.get("heavy").unwrap();
        let d = &kept.detail;
        assert_eq!(d.phases.len(), detail::SUMMARY_NAMES);
        assert_eq!(d.phases["other"].completed, 250 - 7);
        assert_eq!(d.tokens(), running.detail.tokens(), "totals are whole");
        assert_eq!(d.tokens_by_model.len(), detail::SUMMARY_NAMES);
        assert_eq!(d.gates.len(), detail::SUMMARY_GATES);
        let reason = d.gates[0].reason.as_deref().unwrap();
        assert_eq!(reason.len(), detail::SUMMARY_TEXT);
        assert!(d.spans.is_empty() && d.tokens_by_phase_model.is_empty());
        let before = running.detail.approx_bytes();
        let after = kept.detail.approx_bytes();
        assert!(before > 500_000 && after < 8_192, "{before} then {after}");
        drop(runs);
        // Reopened with room for about three such summaries: the oldest
        // go first, and the counts stay whole.
        let budget = crate::budget::BudgetConfig::new(&dir);
        let budget = Arc::new(Budget::open(budget, Arc::new(crate::budget::SystemClock)).unwrap());
        let metrics = RunMetrics::register(&crate::metrics::Registry::new()).unwrap();
        let retention = RunRetention {
            runs: 0,
            bytes: Run::clone(&kept).approx_bytes() * 3 + 100,
        };
        let runs = Runs::open(
            &dir,
            metrics,
            budget,
            retention,
            DEFAULT_SNAPSHOT_BYTES,
            quiet(),
        )
        .unwrap();
        assert_eq!(runs.get("heavy").unwrap(), kept);
        for i in 0..5 {
            let id = format!("h{i}");
            runs.start(new(&id)).unwrap();
            let events: Arc<[Timed]> = event::parse_batch(&heavy_events(), time::now_unix())
                .unwrap()
                .into();
            runs.record_events(&id, events, None, None).unwrap();
            runs.finish(&id, Finish::Cancel, None).unwrap();
        }
        let held: Vec<bool> = ["heavy", "h0", "h1", "h2", "h3", "h4"]
            .iter()
            .map(|id| runs.get(id).is_some())
            .collect();
        assert_eq!(held, [false, false, false, true, true, true]);
        assert_eq!((runs.counts().completed, runs.counts().cancelled), (1, 5));
    }

    #[test]
    fn a_batch_fills_each_event_in_its_place_between_lifecycle_steps() {
        let dir = TempDir::new("runs-batch-fill");
        let runs = open(&dir);
        let batch = json!([
            {"type": "run_started", "run_id": "a"},
            {"type": "phase_started", "run_id": "a", "phase": "p", "timestamp": 10.0},
            {"type": "run_started", "run_id": "b"},
            {"type": "phase_completed", "run_id": "a", "phase": "p", "success": true,
                "timestamp": 12.5},
        ]);
        let body = batch.to_string();
        let steps = progress::parse_batch(&batch, body.as_bytes(), time::now_unix(), None).unwrap();
        let applied = runs.apply_batch(steps).unwrap();
        let events: Vec<&Timed> = applied
            .iter()
            .flat_map(|a| match a {
                Applied::Events(_, events, _) => events.iter().collect(),
                _ => Vec::new(),
            })
            .collect();
        let kinds: Vec<&str> = events.iter().map(|e| e.kind()).collect();
        assert_eq!(kinds, ["phase_started", "phase_completed"]);
        let Event::PhaseCompleted { duration_ms, .. } = &events[1].event else {
            unreachable!()
        };
        assert_eq!(*duration_ms, Some(2500.0));
    }

    #[test]
    fn a_batch_refused_for_its_price_keeps_no_reservation() {
        let dir = TempDir::new("runs-batch-price");
        let runs = open(&dir);
        // An end priced past the largest amount is refused, after the
        // batch's first start and before its second.
        let batch = json!([
            {"type": "run_started", "run_id": "a"},
            {"type": "tokens", "run_id": "a", "phase": "p", "model": "m",
                "input_tokens": 1_000_000_000_000_000_u64, "output_tokens": 0},
            {"type": "run_completed", "run_id": "a", "result": "succeeded"},
            {"type": "run_started", "run_id": "b"},
        ]);
        let body = batch.to_string();
        let steps = progress::parse_batch(&batch, body.as_bytes(), time::now_unix(), None).unwrap();
        let refused = runs.apply_batch(steps);
        assert!(
            matches!(refused, Err(Error::Invalid { .. })),
            "{:?}",
            refused.err()
        );
        assert_eq!(runs.shared.budget.status().reserved, 0.0);
        assert!(runs.get("a").is_none() && runs.get("b").is_none());
    }

    /// Opens the store in `dir` with a snapshot after every `every` bytes
    /// of journal, and its own registry.
    fn open_snapshotting(dir: &Path, every: u64) -> (Runs, crate::metrics::Registry) {
        let mut budget = crate::budget::BudgetConfig::new(dir);
        budget.daily_limit = 1000.0;
        let budget = Arc::new(Budget::open(budget, Arc::new(crate::budget::SystemClock)).unwrap());
        let registry = crate::metrics::Registry::new();
        let metrics = RunMetrics::register(&registry).unwrap();
        let runs = Runs::open(
            dir,
            metrics,
            budget,
            RunRetention::default(),
            every,
            quiet(),
        )
        .unwrap();
        (runs, registry)
    }

    /// Everything a start must rebuild: every run, the counts, the budget's
    /// spend, reservations and learned costs, and every metric line,
    /// exemplars included.
    fn everything(runs: &Runs, registry: &crate::metrics::Registry) -> Everything {
        let mut text = Vec::new();
        registry.render(&mut text, crate::metrics::Format::OpenMetrics);
        let page = runs.listing(None, None, 1000).unwrap();
        let status = runs.shared.budget.status();
        (
            runs.runs_of(&page.ids, None)
                .iter()
                .map(|r| Run::clone(r))
                .collect(),
            runs.counts(),
            (status.today_spend, status.reserved),
            runs.shared.budget.learned(),
            String::from_utf8(text).unwrap(),
        )
    }

    type Everything = (
        Vec<Run>,
        Counts,
        (f64, f64),
        Vec<crate::budget::AgentCosts>,
        String,
    );

    /// Waits until no snapshot is being written.
    fn settled(runs: &Runs) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while runs.shared.snapshots.lock().unwrap().due.busy() {
            assert!(
                std::time::Instant::now() < deadline,
                "a snapshot never ended"
            );
            std::thread::yield_now();
        }
    }

    /// Copies the tree at `from` to `to`: what a kill at this moment leaves on disk.
    fn image(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            let target = to.join(entry.file_name());
            if entry.file_type().unwrap().is_dir() {
                image(&entry.path(), &target);
            } else {
                std::fs::copy(entry.path(), target).unwrap();
            }
        }
    }

    /// A kill while a snapshot is written, made certain: the writer is held
    /// at each point a kill can find it (the new snapshot whole in its
    /// `.tmp` file; in place, with the segments it covers still there), the
    /// data dir is copied as the kill would leave it, and a store opened on
    /// the copy has everything that was acknowledged, exactly.
    #[test]
    fn a_kill_at_each_point_of_a_snapshot_loses_nothing_acknowledged() {
        use crate::journal::faults::{self, Stage};
        for stage in [Stage::BeforeRename, Stage::BeforeDrop] {
            let dir = TempDir::new("runs-kill-in-snapshot");
            let (runs, registry) = open_snapshotting(&dir, 2048);
            faults::halt_at(&dir, stage);
            let mut n = 0;
            while !faults::halted(&dir) {
                assert!(n < 10_000, "{stage:?}: no snapshot was taken");
                let id = format!("run-{n}");
                let new = NewRun {
                    run_id: Some(id.clone()),
                    agent: Some("a".into()),
                    ..NewRun::default()
                };
                runs.start(new).unwrap();
                if n % 3 != 0 {
                    let cost = Some(0.01 * (n % 7) as f64);
                    runs.finish(&id, Finish::Complete, cost).unwrap();
                }
                n += 1;
            }
            let store = dir.join("runs");
            match stage {
                Stage::BeforeRename => assert!(store.join("snapshot.tmp").is_file()),
                Stage::BeforeDrop => assert!(store.join("0000000001.jsonl").is_file()),
            }
            let killed = TempDir::new("runs-kill-in-snapshot-image");
            image(&dir, &killed);
            let before = everything(&runs, &registry);
            faults::resume(&dir);
            drop(runs);
            let (reopened, registry) = open_snapshotting(&killed, 2048);
            assert_eq!(everything(&reopened, &registry), before, "{stage:?}");
            assert_eq!(before.0.len(), n, "{stage:?}");
        }
    }

    #[test]
    fn a_start_from_a_snapshot_rebuilds_what_the_journal_did() {
        let dir = TempDir::new("runs-snapshot");
        let (runs, registry) = open_snapshotting(&dir, 4096);
        let now = time::now_unix();
        // A run ended with the emitter's metrics early, so that a snapshot
        // covers it, and another at the end, which the journal's tail holds.
        let with_metrics = |id: &str, metrics: &str| {
            let body = format!(
                r#"[{{"type":"run_started","runId":"{id}"}},
                    {{"type":"run_completed","runId":"{id}","result":"succeeded","metrics":{metrics}}}]"#
            );
            let value: Value = serde_json::from_str(&body).unwrap();
            let steps = progress::parse_batch(&value, body.as_bytes(), now, None).unwrap();
            runs.apply_batch(steps).unwrap();
        };
        let early = r#"{"z": 1.50, "a": [1e3, "\u00e9"]}"#;
        with_metrics("early", early);
        for i in 0..60u64 {
            let id = format!("run-{i}");
            // Every other run is in a trace, which its exemplars name.
            let traceparent =
                (i % 2 == 0).then(|| format!("00-{:032x}-00f067aa0ba902b7-01", i + 1));
            let new = NewRun {
                run_id: Some(id.clone()),
                agent: Some(format!("agent-{}", i % 3)),
                max_iterations: Some(i),
                traceparent,
                ..NewRun::default()
            };
            runs.start(new).unwrap();
            let phase = format!("phase-{}", i % 5);
            let batch = json!([
                {"type": "iteration_started", "iteration": 1},
                {"type": "phase_started", "phase": phase},
                {"type": "tokens", "phase": phase, "model": format!("model-{}", i % 2),
                    "input_tokens": 1000 * i, "output_tokens": 7 * i},
                {"type": "gate_checked", "gate": "tests", "passed": i % 2 == 0, "reason": "why \"not\""},
                {"type": "phase_completed", "phase": phase, "success": i % 3 != 0, "duration_ms": 1500.5,
                    "metadata": {"accuracy": i as f64 / 64.0}},
                {"type": "iteration_completed", "iteration": 1, "success": true},
                {"type": "phase_started", "phase": "open"},
                {"type": "delivery_started"},
            ]);
            let events: Arc<[Timed]> = event::parse_batch(&batch, now + i as f64).unwrap().into();
            runs.record_events(&id, events, None, None).unwrap();
            let how = match i % 4 {
                0 => Finish::Complete,
                1 => Finish::Fail(Some("broke".into())),
                2 => Finish::Cancel,
                _ => continue,
            };
            let cost = (i % 8 == 0).then_some(0.25);
            runs.finish(&id, how, cost).unwrap();
        }
        let batch = json!([
            {"type": "run_started", "run_id": "batched"},
            {"type": "tokens", "run_id": "batched", "phase": "p", "model": "m",
                "input_tokens": 5, "output_tokens": 5},
            {"type": "run_completed", "run_id": "batched", "result": "succeeded"},
        ]);
        let body = batch.to_string();
        let steps = progress::parse_batch(&batch, body.as_bytes(), now, None).unwrap();
        runs.apply_batch(steps).unwrap();
        let late = r#"{"totalDurationMs":9000,"phaseBreakdown":{"build":1}}"#;
        with_metrics("late", late);
        settled(&runs);
        let store = dir.join("runs");
        assert!(store.join(snapshot::FILE).is_file());
        assert!(
            !store.join("0000000001.jsonl").exists(),
            "covered segments go"
        );
        let before = everything(&runs, &registry);
        assert_eq!(before.0.len(), 63);
        // The exemplars of runs the snapshot covers and of the tail's, on
        // every family that has them, are rebuilt with the rest.
        for line in [
            "agent_cycles_total{outcome=\"cancelled\"} 15.0 # {trace_id=\"0000000000000000000000000000003b\",run_id=\"run-58\"} 1.0 ",
            "agent_cycle_duration_seconds_bucket{le=\"1\"} 48 # {run_id=\"late\"} 0.0 ",
            "conductor_run_duration_seconds_bucket{outcome=\"cancelled\",le=\"1\"} 15 # {trace_id=\"0000000000000000000000000000003b\",run_id=\"run-58\"} ",
            "agent_phase_duration_seconds_bucket{phase=\"phase-1\",le=\"5\"} 12 # {trace_id=\"00000000000000000000000000000039\",run_id=\"run-56\"} 1.5005 ",
        ] {
            assert!(before.4.contains(line), "{line} in {}", before.4);
        }
        assert_eq!(before.1.completed, 18);
        // Three agents and the runs without one learned their costs, and
        // the 15 runs still running hold what their agent's start reserved.
        let learned: Vec<usize> = before.3.iter().map(|a| a.costs.len()).collect();
        assert_eq!(learned.iter().sum::<usize>(), 48, "{:?}", before.3);
        assert_eq!(learned.len(), 4);
        let running = before.0.iter().filter(|r| r.status == Status::Running);
        let held: i64 = running.map(|r| r.reserved.unwrap()).sum();
        assert_eq!(crate::budget::dollars(held), before.2 .1);
        let ended = before.0.iter().filter(|r| r.status != Status::Running);
        assert!(ended.clone().all(|r| r.cost.is_some()));
        assert!(ended.clone().any(|r| r.cost == Some(250_000)));
        let metrics = |runs: &[Run], id: &str| {
            let run = runs.iter().find(|r| &*r.run_id == id).unwrap();
            run.text(Text::Metrics).map(str::to_string)
        };
        assert_eq!(metrics(&before.0, "early").as_deref(), Some(early));
        assert_eq!(metrics(&before.0, "late").as_deref(), Some(late));
        assert_eq!(metrics(&before.0, "batched"), None);
        let published = runs.published();
        let kinds: Vec<&str> = published.iter().map(|(k, _)| k.as_str()).collect();
        assert!(kinds.contains(&"gate_checked") && !kinds.contains(&"tokens"));
        drop(runs);
        // Twice: the second start reads the snapshot the first one's
        // journal tail did not change.
        for _ in 0..2 {
            let (runs, registry) = open_snapshotting(&dir, 4096);
            assert_eq!(everything(&runs, &registry), before);
            assert_eq!(runs.published(), published);
        }
        // With snapshots off the same snapshot is read, and nothing is lost.
        let (runs, registry) = open_snapshotting(&dir, 0);
        assert_eq!(everything(&runs, &registry), before);
        drop(runs);
        // A flipped byte in the snapshot refuses the start, pointing at a
        // backup: repair cannot mend what no journal holds any more.
        let path = store.join(snapshot::FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        let at = bytes.iter().position(|&b| b == b'a').unwrap() + 1000;
        bytes[at] ^= 0x01;
        std::fs::write(&path, bytes).unwrap();
        let budget = crate::budget::BudgetConfig::new(&dir);
        let budget = Arc::new(Budget::open(budget, Arc::new(crate::budget::SystemClock)).unwrap());
        let metrics = RunMetrics::register(&crate::metrics::Registry::new()).unwrap();
        let refused = Runs::open(
            &dir,
            metrics,
            budget,
            RunRetention::default(),
            4096,
            quiet(),
        );
        let Err(Error::Storage(why)) = refused else {
            panic!("a damaged snapshot was read");
        };
        assert!(
            why.contains("runs/snapshot: line") && why.contains("from a backup"),
            "{why}"
        );
    }

    #[test]
    fn counts_and_counters_come_from_the_snapshot_not_from_the_runs_kept() {
        let dir = TempDir::new("runs-counted");
        let open = |dir: &Path| {
            let mut budget = crate::budget::BudgetConfig::new(dir);
            budget.daily_limit = 1000.0;
            let clock = Arc::new(crate::budget::SystemClock);
            let budget = Arc::new(Budget::open(budget, clock).unwrap());
            let registry = crate::metrics::Registry::new();
            let metrics = RunMetrics::register(&registry).unwrap();
            let retention = RunRetention { runs: 3, bytes: 0 };
            let runs = Runs::open(dir, metrics, budget, retention, 1024, quiet()).unwrap();
            (runs, registry)
        };
        let (runs, _) = open(&dir);
        for i in 0..40 {
            let new = NewRun {
                run_id: Some(format!("r{i}")),
                ..NewRun::default()
            };
            runs.start(new).unwrap();
            runs.finish(&format!("r{i}"), Finish::Complete, None)
                .unwrap();
        }
        settled(&runs);
        drop(runs);
        let first = dir.join("runs").join("0000000001.jsonl");
        assert!(!first.exists(), "the journal of the first runs is gone");
        let (runs, registry) = open(&dir);
        assert_eq!(runs.counts().completed, 40);
        assert_eq!(runs.listing(None, None, 100).unwrap().ids.len(), 3);
        let mut text = Vec::new();
        registry.render(&mut text, crate::metrics::Format::Text);
        let text = String::from_utf8(text).unwrap();
        assert!(
            text.contains("agent_cycles_total{outcome=\"completed\"} 40\n"),
            "{text}"
        );
        assert!(text.contains("agent_runs_started_total 40\n"), "{text}");
    }

    #[test]
    fn a_reused_run_id_whose_ledger_copy_failed_is_charged_at_the_next_start() {
        // Without snapshots the journal holds both ends at the restart;
        // with one after every record, the snapshot may hold either.
        for every in [0, 1] {
            let dir = TempDir::new(&format!("runs-reused-id-{every}"));
            let open = |dir: &Path| {
                let mut budget = crate::budget::BudgetConfig::new(dir);
                budget.daily_limit = 1000.0;
                let clock = Arc::new(crate::budget::SystemClock);
                let budget = Arc::new(Budget::open(budget, clock).unwrap());
                let metrics = RunMetrics::register(&crate::metrics::Registry::new()).unwrap();
                let retention = RunRetention { runs: 1, bytes: 0 };
                Runs::open(dir, metrics, budget, retention, every, quiet()).unwrap()
            };
            let runs = open(&dir);
            let run = |runs: &Runs, id: &str, cost: f64| {
                let new = NewRun {
                    run_id: Some(id.into()),
                    ..NewRun::default()
                };
                runs.start(new).unwrap();
                runs.finish(id, Finish::Complete, Some(cost)).unwrap()
            };
            run(&runs, "x", 0.125);
            // Ending y makes retention forget x, so x can start again.
            run(&runs, "y", 0.25);
            assert!(runs.get("x").is_none());
            crate::journal::faults::fail_writes(&dir.join("budget"), 0, 1);
            let again = run(&runs, "x", 0.5);
            assert!(again.ledger_error.is_some(), "the ledger copy failed");
            assert_eq!(crate::journal::faults::armed(&dir.join("budget")), 0);
            settled(&runs);
            let live = runs.shared.budget.status().today_spend;
            assert_eq!(live, 0.875);
            drop(runs);
            let reopened = open(&dir);
            assert_eq!(
                reopened.shared.budget.status().today_spend,
                live,
                "every={every}"
            );
            drop(reopened);
            // Written by the first reopen: the next one charges nothing more.
            assert_eq!(open(&dir).shared.budget.status().today_spend, live);
        }
    }

    #[test]
    fn an_unledgered_settlement_of_an_older_day_in_the_snapshot_is_charged_at_start() {
        let dir = TempDir::new("runs-old-day");
        // The budget's clock three days back: the run is charged to that day.
        let clock = Arc::new(crate::budget::ManualClock::new(
            time::now_unix() - 3.0 * 86_400.0,
        ));
        let open = |dir: &Path| {
            let mut config = crate::budget::BudgetConfig::new(dir);
            config.daily_limit = 1000.0;
            let budget = Arc::new(Budget::open(config, clock.clone()).unwrap());
            let registry = crate::metrics::Registry::new();
            budget.register_metrics(&registry).unwrap();
            let metrics = RunMetrics::register(&registry).unwrap();
            let runs =
                Runs::open(dir, metrics, budget, RunRetention::default(), 1, quiet()).unwrap();
            (runs, registry)
        };
        let spend_total = |registry: &crate::metrics::Registry| {
            let mut text = Vec::new();
            registry.render(&mut text, crate::metrics::Format::Text);
            let text = String::from_utf8(text).unwrap();
            let line = text
                .lines()
                .find(|l| l.starts_with("agent_budget_spend_total "));
            line.unwrap().to_string()
        };
        let (runs, registry) = open(&dir);
        let new = |id: &str| NewRun {
            run_id: Some(id.into()),
            ..NewRun::default()
        };
        runs.start(new("x")).unwrap();
        crate::journal::faults::fail_writes(&dir.join("budget"), 0, 1);
        let ended = runs.finish("x", Finish::Complete, Some(0.5)).unwrap();
        assert!(ended.ledger_error.is_some());
        // Records until a snapshot covers the end: it carries the end's
        // settlement as unledgered, and the end's segment goes.
        let snapshot = dir.join("runs").join(snapshot::FILE);
        let covers = |records: u64| {
            let mut covered = 0;
            let read = crate::journal::read_snapshot(&snapshot, |v| {
                covered = covered.max(v["snapshot"]["records"].as_u64().unwrap_or(0));
                Ok(())
            });
            read.unwrap_or(false) && covered >= records
        };
        for i in 0.. {
            settled(&runs);
            if covers(2) {
                break;
            }
            assert!(i < 1000, "no snapshot covers the end");
            runs.start(new(&format!("y{i}"))).unwrap();
        }
        let before = spend_total(&registry);
        assert_eq!(before, "agent_budget_spend_total 0.5");
        drop(runs);
        let (runs, registry) = open(&dir);
        assert_eq!(spend_total(&registry), before);
        let day = time::day_of(crate::budget::Clock::now_unix(&*clock));
        let ledger = dir
            .join("budget")
            .join(format!("{}.jsonl", time::date_string(day)));
        let text = std::fs::read_to_string(ledger).unwrap();
        assert!(text.contains(r#""run_id":"x""#), "{text}");
        drop(runs);
    }
}
