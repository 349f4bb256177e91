//! Agent runs: started, then completed, failed or cancelled, each
//! transition journaled before it is acknowledged.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{json, Value};

use crate::commit_queue::CommitQueue;
use crate::error::Error;
use crate::journal::Journal;
use crate::metrics::{Counter, Gauge};
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
}

impl Run {
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
        })
    }
}

/// A request to start a run.
#[derive(Clone, Debug, Default)]
pub struct NewRun {
    /// The id to use; one is made when absent.
    pub run_id: Option<String>,
    /// The agent.
    pub agent: Option<String>,
    /// The goal.
    pub goal: Option<String>,
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
}

/// The run metrics this module keeps up to date.
#[derive(Clone)]
pub struct RunMetrics {
    /// `conductor_active_runs`.
    pub active: Gauge,
    /// `conductor_completed_runs_total`.
    pub completed: Counter,
    /// `conductor_failed_runs_total`.
    pub failed: Counter,
    /// `conductor_cancelled_runs_total`.
    pub cancelled: Counter,
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

/// The run store. Safe to share across threads.
pub struct Runs {
    state: Mutex<State>,
    queue: CommitQueue,
    metrics: RunMetrics,
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

impl Runs {
    /// Opens the run journal `runs.jsonl` under `dir` and replays it.
    pub fn open(dir: &Path, metrics: RunMetrics) -> Result<Runs, Error> {
        let (journal, replay) =
            Journal::open(dir.join("runs.jsonl")).map_err(|e| Error::Storage(e.to_string()))?;
        let mut state = State::default();
        for record in &replay.records {
            // A record that is not ours (edited by hand) is skipped rather
            // than refusing to start; the journal stays append-only.
            if let Ok(v) = serde_json::from_slice::<Value>(record) {
                state.apply(&v);
            }
        }
        metrics.active.set(state.counts.active as f64);
        metrics.completed.inc_by(state.counts.completed);
        metrics.failed.inc_by(state.counts.failed);
        metrics.cancelled.inc_by(state.counts.cancelled);
        let queue = CommitQueue::start(Arc::new(journal), "runs")
            .map_err(|e| Error::Storage(e.to_string()))?;
        Ok(Runs {
            state: Mutex::new(state),
            queue,
            metrics,
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
        let record =
            json!({"op": "start", "run_id": id, "agent": new.agent, "goal": new.goal, "ts": now});
        state.apply(&record);
        let run = state.runs[&id].clone();
        self.metrics.active.inc();
        self.queue
            .submit(record.to_string().into_bytes(), move |o| {
                done(o.map(|()| run).map_err(|e| Error::Storage(e.to_string())))
            });
    }

    /// Finishes a running run; `done` gets it once the transition is durable.
    pub fn finish(
        &self,
        id: &str,
        how: Finish,
        done: impl FnOnce(Result<Run, Error>) + Send + 'static,
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
        };
        state.apply(&record);
        let run = state.runs[id].clone();
        self.metrics.active.dec();
        match how {
            Finish::Complete => self.metrics.completed.inc(),
            Finish::Fail(_) => self.metrics.failed.inc(),
            Finish::Cancel => self.metrics.cancelled.inc(),
        }
        self.queue
            .submit(record.to_string().into_bytes(), move |o| {
                done(o.map(|()| run).map_err(|e| Error::Storage(e.to_string())))
            });
    }

    /// The run with `id`, if known.
    pub fn get(&self, id: &str) -> Option<Run> {
        self.lock().runs.get(id).cloned()
    }

    /// Runs with `status` (all when `None`), oldest first.
    pub fn list(&self, status: Option<Status>) -> Vec<Run> {
        let mut runs: Vec<Run> = self
            .lock()
            .runs
            .values()
            .filter(|r| status.is_none_or(|s| r.status == s))
            .cloned()
            .collect();
        runs.sort_by(|a, b| {
            a.started_at
                .total_cmp(&b.started_at)
                .then(a.run_id.cmp(&b.run_id))
        });
        runs
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

impl State {
    /// Applies one journal record; used both live and on replay, so the
    /// two can never disagree.
    fn apply(&mut self, v: &Value) {
        let (Some(op), Some(id)) = (v["op"].as_str(), v["run_id"].as_str()) else {
            return;
        };
        let ts = v["ts"].as_f64().unwrap_or(0.0);
        let text = |k: &str| v[k].as_str().map(str::to_string);
        if op == "start" {
            if self.runs.contains_key(id) {
                return;
            }
            self.counts.active += 1;
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
                },
            );
            return;
        }
        let status = match op {
            "complete" => Status::Completed,
            "fail" => Status::Failed,
            "cancel" => Status::Cancelled,
            _ => return,
        };
        let Some(run) = self.runs.get_mut(id) else {
            return;
        };
        if run.status != Status::Running {
            return;
        }
        run.status = status;
        run.ended_at = Some(ts);
        run.error = text("error");
        self.counts.active -= 1;
        match status {
            Status::Completed => self.counts.completed += 1,
            Status::Failed => self.counts.failed += 1,
            _ => self.counts.cancelled += 1,
        }
        self.finished_order.push_back(id.to_string());
        while self.finished_order.len() > FINISHED_RETAINED {
            if let Some(old) = self.finished_order.pop_front() {
                self.runs.remove(&old);
            }
        }
    }
}
