//! The snapshot of the run store: its runs, counts and metrics as of one
//! record of its journal, so that a start reads the snapshot and only the
//! records after it (see [`super::Runs::open`]).
//!
//! The file, `runs/snapshot`, is in the journal's line format, with
//! checksums: a header line, `{"snapshot":{...}}`, then a line
//! `{"run":{...}}` per run, finished runs oldest first, then the running
//! ones, then `{"end":N}` with the number of runs. A run holds every field
//! exactly, so that a start from the snapshot rebuilds the run a replay of
//! its records would; in arrays where a run has many entries.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::Arc;

use serde_json::{json, Map, Value};

use crate::budget::Settlement;
use crate::journal::{self, Journal};

use super::detail::{Detail, Gate, LazyDetail, PhaseRecord, PhaseStats};
use super::{Counts, Run, Status};

/// The file name of the snapshot, in the run store's directory.
pub const FILE: &str = "snapshot";

/// What a snapshot holds besides its runs. Plain data.
#[derive(Debug, Default)]
pub struct Header {
    /// The journal records it covers: those numbered below this.
    pub records: u64,
    /// The totals by status, of every run ever, not only those kept.
    pub counts: Counts,
    /// The run metrics (see [`super::RunMetrics::dump`]).
    pub metrics: Value,
    /// Settlements of ended runs whose copy in the budget ledger may not
    /// be written yet: checked against the ledger at start.
    pub unledgered: Vec<Settlement>,
}

fn settlement_to_json(s: &Settlement) -> Value {
    json!({"run_id": s.run_id, "ts": s.ts, "spend": s.to_json()})
}

/// Writes the snapshot `header` and `runs` at `path`, crash-only (see
/// [`journal::replace_with`]); returns its bytes.
pub fn write(path: &Path, header: &Header, runs: &[Arc<Run>]) -> std::io::Result<u64> {
    let c = &header.counts;
    let head = json!({"snapshot": {
        "records": header.records,
        "counts": [c.active, c.completed, c.failed, c.cancelled],
        "metrics": header.metrics,
        "unledgered": header.unledgered.iter().map(settlement_to_json).collect::<Vec<_>>(),
    }});
    let lines = std::iter::once(head)
        .chain(runs.iter().map(|r| json!({"run": run_to_json(r)})))
        .chain(std::iter::once(json!({"end": runs.len()})))
        .map(|v| v.to_string().into_bytes());
    journal::replace_with(path, lines)
}

/// Reads the snapshot at `path`, if there is one: its header to `header`,
/// then each run to `run`, a line at a time. Returns whether there was one.
///
/// # Errors
///
/// The file, line and offset of a line that is damaged or not a snapshot's,
/// and a snapshot cut short.
pub fn read(
    path: &Path,
    mut header: impl FnMut(Header),
    mut run: impl FnMut(Run),
) -> Result<bool, String> {
    if !path.is_file() {
        return Ok(false);
    }
    let (mut runs, mut ended) = (0u64, false);
    Journal::open_each(path, |record| {
        let v: Value = serde_json::from_slice(record).map_err(|e| e.to_string())?;
        if let Some(h) = v.get("snapshot") {
            header(header_from_json(h).ok_or("not a snapshot header")?);
        } else if let Some(r) = v.get("run") {
            run(run_from_json(r).ok_or("not a run")?);
            runs += 1;
        } else if v["end"].as_u64() == Some(runs) {
            ended = true;
        } else {
            return Err("not a snapshot line".into());
        }
        Ok(())
    })
    .map_err(|e| e.to_string())?;
    if !ended {
        return Err(format!(
            "snapshot {}: cut short after {runs} runs",
            path.display()
        ));
    }
    Ok(true)
}

fn header_from_json(h: &Value) -> Option<Header> {
    let c = &h["counts"];
    let unledgered = h["unledgered"]
        .as_array()?
        .iter()
        .map(|s| Settlement::from_record(s["run_id"].as_str()?, s["ts"].as_f64()?, &s["spend"]));
    Some(Header {
        records: h["records"].as_u64()?,
        counts: Counts {
            active: c[0].as_u64()?,
            completed: c[1].as_u64()?,
            failed: c[2].as_u64()?,
            cancelled: c[3].as_u64()?,
        },
        metrics: h["metrics"].clone(),
        unledgered: unledgered.collect::<Option<_>>()?,
    })
}

/// A run as its snapshot line.
pub fn run_to_json(run: &Run) -> Value {
    json!({
        "run_id": run.run_id,
        "agent": run.agent,
        "goal": run.goal,
        "status": run.status.as_str(),
        "started_at": run.started_at,
        "ended_at": run.ended_at,
        "error": run.error,
        "work_order_id": run.work_order_id,
        "correlation_id": run.correlation_id,
        "strategy": run.strategy,
        "max_iterations": run.max_iterations,
        "traceparent": run.traceparent,
        "detail": run.detail.made().map(detail_to_json),
    })
}

/// The run a snapshot line holds; `None` when it is not one.
pub fn run_from_json(v: &Value) -> Option<Run> {
    let text = |k: &str| v[k].as_str().map(Box::from);
    let detail = match &v["detail"] {
        Value::Null => LazyDetail::default(),
        d => LazyDetail::from(detail_from_json(d)?),
    };
    Some(Run {
        run_id: v["run_id"].as_str()?.to_string(),
        agent: text("agent"),
        goal: text("goal"),
        status: Status::parse(v["status"].as_str()?)?,
        started_at: v["started_at"].as_f64()?,
        ended_at: v["ended_at"].as_f64(),
        error: text("error"),
        work_order_id: text("work_order_id"),
        correlation_id: text("correlation_id"),
        strategy: text("strategy"),
        max_iterations: v["max_iterations"].as_u64(),
        traceparent: text("traceparent"),
        detail,
    })
}

fn gate_to_json(g: &Gate) -> Value {
    json!([g.gate, g.passed, g.reason, g.at])
}

fn gate_from_json(v: &Value) -> Option<Gate> {
    Some(Gate {
        gate: v[0].as_str()?.to_string(),
        passed: v[1].as_bool()?,
        reason: v[2].as_str().map(str::to_string),
        at: number(&v[3])?,
    })
}

fn gates_from_json(v: &Value) -> Option<Vec<Gate>> {
    v.as_array()?.iter().map(gate_from_json).collect()
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

/// The entries of a JSON object, each read by `f`.
fn entries<V>(v: &Value, f: impl Fn(&Value) -> Option<V>) -> Option<Vec<(String, V)>> {
    v.as_object()?
        .iter()
        .map(|(k, v)| Some((k.clone(), f(v)?)))
        .collect()
}

fn object<V>(map: impl IntoIterator<Item = (String, V)>, f: impl Fn(V) -> Value) -> Value {
    Value::Object(
        map.into_iter()
            .map(|(k, v)| (k, f(v)))
            .collect::<Map<_, _>>(),
    )
}

fn detail_to_json(d: &Detail) -> Value {
    let spans: Vec<Value> = d
        .spans
        .iter()
        .map(|s| {
            let gates: Vec<Value> = s.gates.iter().map(gate_to_json).collect();
            json!([
                s.name,
                s.started,
                s.ended,
                s.success,
                s.input_tokens,
                s.output_tokens,
                s.model,
                s.iteration,
                gates
            ])
        })
        .collect();
    let by_pair: Vec<Value> = d
        .tokens_by_phase_model
        .iter()
        .map(|((p, m), (i, o))| json!([p, m, i, o]))
        .collect();
    let mut iterations: Vec<(&u64, &f64)> = d.iteration_started_at.iter().collect();
    iterations.sort_by_key(|(i, _)| **i);
    let tokens = |m: &std::collections::BTreeMap<String, (u64, u64)>| {
        object(m.iter().map(|(k, v)| (k.clone(), *v)), |(i, o)| {
            json!([i, o])
        })
    };
    json!({
        "iterations_started": d.iterations_started,
        "iterations_completed": d.iterations_completed,
        "current_iteration": d.current_iteration,
        "iteration_started_at": iterations,
        "current_phase": d.current_phase,
        "phase_started_at": object(d.phase_started_at.iter().map(|(k, v)| (k.clone(), *v)), Value::from),
        "phases": object(d.phases.iter().map(|(k, v)| (k.clone(), v)), |p| {
            json!([p.completed, p.successes, p.total_seconds, p.last_seconds])
        }),
        "gates": d.gates.iter().map(gate_to_json).collect::<Vec<_>>(),
        "tokens_by_phase": tokens(&d.tokens_by_phase),
        "tokens_by_model": tokens(&d.tokens_by_model),
        "tokens_by_phase_model": by_pair,
        "delivery_started": d.delivery_started,
        "delivery_completed": d.delivery_completed,
        "spans": spans,
        "root_gates": d.root_gates.iter().map(gate_to_json).collect::<Vec<_>>(),
        "pending_tokens": object(d.pending_tokens.iter().map(|(k, v)| (k.clone(), v)), |(i, o, m)| json!([i, o, m])),
        "event_span": d.event_span,
        "version": d.version,
        "duration_seconds": d.duration_seconds,
        "ended_before": d.ended_before,
    })
}

fn detail_from_json(v: &Value) -> Option<Detail> {
    let tokens = |k: &str| entries(&v[k], pair);
    let span = |s: &Value| -> Option<PhaseRecord> {
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
        })
    };
    let delivered = &v["delivery_completed"];
    let delivery_completed = match delivered {
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
    Some(Detail {
        iterations_started: v["iterations_started"].as_u64()?,
        iterations_completed: v["iterations_completed"].as_u64()?,
        current_iteration: v["current_iteration"].as_u64(),
        iteration_started_at: iterations.collect::<Option<_>>()?,
        current_phase: v["current_phase"].as_str().map(str::to_string),
        phase_started_at: entries(&v["phase_started_at"], number)?
            .into_iter()
            .collect(),
        phases: entries(&v["phases"], |p| {
            Some(PhaseStats {
                completed: p[0].as_u64()?,
                successes: p[1].as_u64()?,
                total_seconds: number(&p[2])?,
                last_seconds: number(&p[3])?,
            })
        })?
        .into_iter()
        .collect(),
        gates: gates_from_json(&v["gates"])?
            .into_iter()
            .collect::<VecDeque<_>>(),
        tokens_by_phase: tokens("tokens_by_phase")?.into_iter().collect(),
        tokens_by_model: tokens("tokens_by_model")?.into_iter().collect(),
        tokens_by_phase_model: by_pair.collect::<Option<_>>()?,
        delivery_started: v["delivery_started"].as_f64(),
        delivery_completed,
        spans: v["spans"]
            .as_array()?
            .iter()
            .map(span)
            .collect::<Option<_>>()?,
        root_gates: gates_from_json(&v["root_gates"])?,
        pending_tokens: entries(&v["pending_tokens"], |p| {
            Some((
                p[0].as_u64()?,
                p[1].as_u64()?,
                p[2].as_str().map(str::to_string),
            ))
        })?
        .into_iter()
        .collect(),
        event_span,
        version: v["version"].as_u64()?,
        duration_seconds: v["duration_seconds"].as_f64(),
        ended_before: usize::try_from(v["ended_before"].as_u64()?).ok()?,
    })
}
