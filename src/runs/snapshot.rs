//! The run store's snapshot as of one journal record, so a start reads only the records after it.
//! `runs/snapshot`, in the journal's line format: `{"snapshot":{...}}`; a `{"run":{...}}` per run,
//! running ones first, then finished ones oldest first; `{"metric":[...]}` per series; `{"end":N}`.
//! A run holds every field exactly, so a start rebuilds the run a replay would.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::Path;
use std::sync::Arc;

use serde_json::{json, Value};

use crate::budget::{AgentCosts, Budget, Settlement};
use crate::journal::{self, Printable};

use super::detail::{Detail, Gate, LazyDetail, PhaseRecord, PhaseStats};
use super::metrics::{RunMetrics, Values};
use super::{Counts, Run, State, Status, Text};

pub const FILE: &str = "snapshot";

/// The header line of a snapshot covering the journal's first `records` records.
pub fn head(records: u64, state: &State, learned: &[AgentCosts]) -> Value {
    let c = &state.counts;
    let settlement = |s: &Settlement| {
        let spend = s.to_json();
        json!({"run_id": s.run_id, "ts": s.ts, "started_at": s.started_at, "spend": spend})
    };
    let published = state.published.iter();
    let published = published.map(|(kind, n)| (kind.to_string(), Value::from(*n)));
    json!({"snapshot": {
        "records": records,
        "counts": [c.active, c.completed, c.failed, c.cancelled],
        "unledgered": state.unledgered.iter().map(settlement).collect::<Vec<_>>(),
        "learned": learned.iter().map(AgentCosts::to_json).collect::<Vec<_>>(),
        "published": crate::ordered::object(published),
    }})
}

/// Writes the snapshot at `path`, crash-only, letting go of each run once written.
pub fn write(path: &Path, head: Value, runs: Vec<Arc<Run>>, metrics: Values) -> io::Result<u64> {
    let lines = std::iter::once(Line::Json(head))
        .chain(runs.into_iter().map(Line::Run))
        .chain(
            std::iter::once_with(|| metrics.into_series())
                .flatten()
                .map(|m| Line::Json(json!({"metric": m}))),
        );
    journal::write_snapshot(path, lines)
}

/// Reads the snapshot at `path`, if any, into `state`, `metrics` and `budget` a line at a
/// time: the records it covers (0 without one) and every settlement the ledger misses.
pub fn read(
    path: &Path,
    state: &mut State,
    metrics: &RunMetrics,
    budget: &Budget,
) -> Result<(u64, Vec<Settlement>), String> {
    let mut covered = (0, Vec::new());
    let found = journal::read_snapshot(path, |v| {
        if let Some(h) = v.get("snapshot") {
            covered = restore_head(h, state, budget).ok_or("not a snapshot header")?;
        } else if let Some(r) = v.get("run") {
            state.restore(run_from_json(r).ok_or("not a run")?);
        } else if let Some(m) = v.get("metric") {
            metrics.restore(m).ok_or("not a metric series")?;
        } else {
            return Err("not a snapshot line".into());
        }
        Ok(())
    })?;
    if found {
        metrics.active.set(state.counts.active as f64);
        state.trim();
    }
    Ok(covered)
}

/// Restores a header's counts, published totals and learned costs; returns the records
/// it covers and its unledgered settlements.
fn restore_head(h: &Value, state: &mut State, budget: &Budget) -> Option<(u64, Vec<Settlement>)> {
    let c = &h["counts"];
    let unledgered = h["unledgered"].as_array()?.iter();
    let unledgered = unledgered.map(|s| super::settlement_of(s, s["started_at"].as_f64()));
    let unledgered = unledgered.collect::<Option<_>>()?;
    let learned = match &h["learned"] {
        Value::Null => Vec::new(),
        l => l
            .as_array()?
            .iter()
            .map(AgentCosts::from_json)
            .collect::<Option<_>>()?,
    };
    let published = match &h["published"] {
        Value::Null => BTreeMap::new(),
        p => p
            .as_object()?
            .iter()
            .map(|(kind, n)| Some((kind.as_str().into(), n.as_u64()?)))
            .collect::<Option<_>>()?,
    };
    let records = h["records"].as_u64()?;
    state.counts = Counts {
        active: c[0].as_u64()?,
        completed: c[1].as_u64()?,
        failed: c[2].as_u64()?,
        cancelled: c[3].as_u64()?,
    };
    state.published = published;
    budget.restore_learned(learned);
    Some((records, unledgered))
}

enum Line {
    Json(Value),
    Run(Arc<Run>),
}

impl Printable for Line {
    fn print(&self, out: &mut dyn Write) -> io::Result<()> {
        match self {
            Line::Json(v) => v.print(out),
            Line::Run(run) => {
                out.write_all(b"{\"run\":")?;
                print_run(run, out)?;
                out.write_all(b"}")
            }
        }
    }
}

/// Prints one JSON object a member at a time: no tree, as a detail can be a MiB.
struct Members<'a> {
    out: &'a mut dyn Write,
    first: bool,
}

impl<'a> Members<'a> {
    fn new(out: &'a mut dyn Write) -> Members<'a> {
        Members { out, first: true }
    }

    /// Begins the member `name`, which needs no escaping.
    fn key(&mut self, name: &str) -> io::Result<&mut dyn Write> {
        let sep = if self.first { '{' } else { ',' };
        self.first = false;
        write!(self.out, "{sep}\"{name}\":")?;
        Ok(&mut *self.out)
    }

    fn end(self) -> io::Result<()> {
        self.out.write_all(if self.first { b"{}" } else { b"}" })
    }
}

/// Gates as the tuples a snapshot prints them as: `[gate, passed, reason, at]`.
fn gate_tuples<'a>(
    gates: impl Iterator<Item = &'a Gate>,
) -> Vec<(&'a str, bool, Option<&'a str>, f64)> {
    gates
        .map(|g| (g.gate.as_str(), g.passed, g.reason.as_deref(), g.at))
        .collect()
}

fn print_run(run: &Run, out: &mut dyn Write) -> io::Result<()> {
    let mut m = Members::new(out);
    serde_json::to_writer(m.key("run_id")?, &*run.run_id)?;
    serde_json::to_writer(m.key("status")?, run.status.as_str())?;
    serde_json::to_writer(m.key("started_at")?, &run.started_at)?;
    // Members a run lacks are left out (most runs have few); read back as none.
    for which in Text::ALL {
        if let Some(text) = run.text(which) {
            serde_json::to_writer(m.key(which.key())?, text)?;
        }
    }
    let numbers = [
        ("ended_at", run.ended_at.map(Value::from)),
        ("max_iterations", run.max_iterations.map(Value::from)),
        ("reserved_micros", run.reserved.map(Value::from)),
        ("cost_micros", run.cost.map(Value::from)),
    ];
    for (key, value) in numbers {
        if let Some(value) = value {
            serde_json::to_writer(m.key(key)?, &value)?;
        }
    }
    if let Some(d) = run.detail.0.as_deref() {
        print_detail(d, m.key("detail")?)?;
    }
    m.end()
}

fn print_detail<'a>(d: &'a Detail, out: &mut dyn Write) -> io::Result<()> {
    let mut m = Members::new(out);
    let mut iterations: Vec<(&u64, &f64)> = d.iteration_started_at.iter().collect();
    iterations.sort_unstable_by_key(|(i, _)| **i);
    serde_json::to_writer(m.key("iterations_started")?, &d.iterations_started)?;
    serde_json::to_writer(m.key("iterations_completed")?, &d.iterations_completed)?;
    serde_json::to_writer(m.key("current_iteration")?, &d.current_iteration)?;
    serde_json::to_writer(m.key("iteration_started_at")?, &iterations)?;
    serde_json::to_writer(m.key("current_phase")?, &d.current_phase)?;
    serde_json::to_writer(m.key("phase_started_at")?, &d.phase_started_at)?;
    let phases = crate::ordered::map(d.phases.iter().map(|(k, p)| {
        (
            k.as_str(),
            (p.completed, p.successes, p.total_seconds, p.last_seconds),
        )
    }));
    serde_json::to_writer(m.key("phases")?, &phases)?;
    serde_json::to_writer(m.key("gates")?, &gate_tuples(d.gates.iter()))?;
    serde_json::to_writer(m.key("tokens_by_phase")?, &d.tokens_by_phase)?;
    serde_json::to_writer(m.key("tokens_by_model")?, &d.tokens_by_model)?;
    let by_pair: Vec<(&str, &str, u64, u64)> = d
        .tokens_by_phase_model
        .iter()
        .map(|((p, model), (i, o))| (p.as_str(), model.as_str(), *i, *o))
        .collect();
    serde_json::to_writer(m.key("tokens_by_phase_model")?, &by_pair)?;
    serde_json::to_writer(m.key("delivery_started")?, &d.delivery_started)?;
    serde_json::to_writer(m.key("delivery_completed")?, &d.delivery_completed)?;
    let span = |s: &'a PhaseRecord| {
        (
            s.name.as_str(),
            s.started,
            s.ended,
            s.success,
            s.input_tokens,
            s.output_tokens,
            s.model.as_deref(),
            s.iteration,
            gate_tuples(s.gates.iter()),
            s.accuracy,
        )
    };
    let spans: Vec<_> = d.spans.iter().map(span).collect();
    serde_json::to_writer(m.key("spans")?, &spans)?;
    serde_json::to_writer(m.key("root_gates")?, &gate_tuples(d.root_gates.iter()))?;
    serde_json::to_writer(m.key("pending_tokens")?, &d.pending_tokens)?;
    serde_json::to_writer(m.key("event_span")?, &d.event_span)?;
    serde_json::to_writer(m.key("version")?, &d.version)?;
    serde_json::to_writer(m.key("duration_seconds")?, &d.duration_seconds)?;
    serde_json::to_writer(m.key("ended_before")?, &d.ended_before)?;
    m.end()
}

pub fn run_from_json(v: &Value) -> Option<Run> {
    let id = v["run_id"].as_str()?.into();
    let status = Status::parse(v["status"].as_str()?)?;
    let mut run = Run::from_members(v, id, status, v["started_at"].as_f64()?);
    if !v["detail"].is_null() {
        run.detail = LazyDetail::from(detail_from_json(&v["detail"])?);
    }
    Some(run)
}

fn gates_from_json(v: &Value) -> Option<Vec<Gate>> {
    let gate = |v: &Value| {
        Some(Gate {
            gate: v[0].as_str()?.to_string(),
            passed: v[1].as_bool()?,
            reason: v[2].as_str().map(str::to_string),
            at: number(&v[3])?,
        })
    };
    v.as_array()?.iter().map(gate).collect()
}

/// A time or a measure: JSON has no NaN, which serde_json writes as null.
fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Null => Some(f64::NAN),
        v => v.as_f64(),
    }
}

fn pair(v: &Value) -> Option<(u64, u64)> {
    Some((v[0].as_u64()?, v[1].as_u64()?))
}

fn entries<V>(v: &Value, f: impl Fn(&Value) -> Option<V>) -> Option<Vec<(String, V)>> {
    v.as_object()?
        .iter()
        .map(|(k, v)| Some((k.clone(), f(v)?)))
        .collect()
}

fn detail_from_json(v: &Value) -> Option<Detail> {
    let delivery_completed = match &v["delivery_completed"] {
        Value::Null => None,
        d => Some((
            d[0].as_bool()?,
            d[1].as_str().map(str::to_string),
            d[2].as_str().map(str::to_string),
            number(&d[3])?,
        )),
    };
    let event_span = match &v["event_span"] {
        Value::Null => None,
        s => Some((number(&s[0])?, number(&s[1])?)),
    };
    let by_pair = v["tokens_by_phase_model"].as_array()?.iter().map(|t| {
        let key = (t[0].as_str()?.to_string(), t[1].as_str()?.to_string());
        Some((key, (t[2].as_u64()?, t[3].as_u64()?)))
    });
    let iterations = v["iteration_started_at"]
        .as_array()?
        .iter()
        .map(|p| Some((p[0].as_u64()?, number(&p[1])?)));
    let pending = |p: &Value| {
        Some((
            p[0].as_u64()?,
            p[1].as_u64()?,
            p[2].as_str().map(str::to_string),
        ))
    };
    Some(Detail {
        iterations_started: v["iterations_started"].as_u64()?,
        iterations_completed: v["iterations_completed"].as_u64()?,
        current_iteration: v["current_iteration"].as_u64(),
        iteration_started_at: iterations.collect::<Option<_>>()?,
        current_phase: v["current_phase"].as_str().map(str::to_string),
        phase_started_at: entries(&v["phase_started_at"], number)?
            .into_iter()
            .collect(),
        phases: crate::ordered::map(entries(&v["phases"], phase_stats_from_json)?),
        gates: gates_from_json(&v["gates"])?.into(),
        tokens_by_phase: crate::ordered::map(entries(&v["tokens_by_phase"], pair)?),
        tokens_by_model: crate::ordered::map(entries(&v["tokens_by_model"], pair)?),
        tokens_by_phase_model: crate::ordered::map(by_pair.collect::<Option<Vec<_>>>()?),
        delivery_started: v["delivery_started"].as_f64(),
        delivery_completed,
        spans: v["spans"]
            .as_array()?
            .iter()
            .map(span_from_json)
            .collect::<Option<_>>()?,
        root_gates: gates_from_json(&v["root_gates"])?,
        pending_tokens: crate::ordered::map(entries(&v["pending_tokens"], pending)?),
        event_span,
        version: v["version"].as_u64()?,
        duration_seconds: v["duration_seconds"].as_f64(),
        ended_before: usize::try_from(v["ended_before"].as_u64()?).ok()?,
    })
}

fn phase_stats_from_json(p: &Value) -> Option<PhaseStats> {
    Some(PhaseStats {
        completed: p[0].as_u64()?,
        successes: p[1].as_u64()?,
        total_seconds: number(&p[2])?,
        last_seconds: number(&p[3])?,
    })
}

fn span_from_json(s: &Value) -> Option<PhaseRecord> {
    Some(PhaseRecord {
        name: s[0].as_str()?.to_string(),
        started: number(&s[1])?,
        ended: s[2].as_f64(),
        success: s[3].as_bool(),
        input_tokens: s[4].as_u64()?,
        output_tokens: s[5].as_u64()?,
        model: s[6].as_str().map(str::to_string),
        iteration: s[7].as_u64(),
        gates: gates_from_json(&s[8])?,
        // Absent from the snapshots of versions before it.
        accuracy: s[9].as_f64(),
    })
}
