//! What a run's events add up to: iterations, phases, gates, tokens and
//! delivery. The same `apply` runs live and on replay, and also moves the
//! metrics, so a restart rebuilds exactly what was there.

use std::collections::{BTreeMap, HashMap, VecDeque};

use serde_json::{json, Value};

use super::event::{Event, Timed};
use super::metrics::RunMetrics;

/// Distinct phase, gate or model names kept per run; more are folded into
/// `other`, so one run cannot grow without bound.
pub const MAX_NAMES: usize = 256;
/// Gate results kept per run, newest last.
pub const MAX_GATES: usize = 100;

/// Totals for one phase of one run.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PhaseStats {
    /// Times completed.
    pub completed: u64,
    /// Completions that succeeded.
    pub successes: u64,
    /// Seconds spent in total.
    pub total_seconds: f64,
    /// Seconds of the last completion.
    pub last_seconds: f64,
}

/// One gate check.
#[derive(Clone, Debug, PartialEq)]
pub struct Gate {
    /// The gate.
    pub gate: String,
    /// Whether it passed.
    pub passed: bool,
    /// Why, when given.
    pub reason: Option<String>,
    /// When, in Unix seconds.
    pub at: f64,
}

/// The inside of a run.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Detail {
    /// Iterations started.
    pub iterations_started: u64,
    /// Iterations completed.
    pub iterations_completed: u64,
    /// The iteration under way.
    pub current_iteration: Option<u64>,
    iteration_started_at: HashMap<u64, f64>,
    /// The phase under way.
    pub current_phase: Option<String>,
    phase_started_at: HashMap<String, f64>,
    /// Per-phase totals.
    pub phases: BTreeMap<String, PhaseStats>,
    /// The newest gate results.
    pub gates: VecDeque<Gate>,
    /// Tokens by phase, `(input, output)`.
    pub tokens_by_phase: BTreeMap<String, (u64, u64)>,
    /// Tokens by model, `(input, output)`.
    pub tokens_by_model: BTreeMap<String, (u64, u64)>,
    /// Tokens by phase and model, `(input, output)`: what a run's cost is
    /// priced from.
    pub tokens_by_phase_model: BTreeMap<(String, String), (u64, u64)>,
    /// Delivery: started at, then `(success, pr_url, ci_status, at)`.
    pub delivery_started: Option<f64>,
    /// How delivery ended.
    pub delivery_completed: Option<(bool, Option<String>, Option<String>, f64)>,
    /// Each phase as it happened, oldest first, for tracing.
    pub spans: Vec<PhaseRecord>,
    /// Gate checks made outside any phase.
    pub root_gates: Vec<Gate>,
    /// How many spans at the front have all ended: spans only ever end,
    /// so the search for an open one (every phase end and gate check)
    /// need not look at them again.
    ended_before: usize,
}

/// One occurrence of a phase: when it ran and what happened in it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PhaseRecord {
    /// The phase name.
    pub name: String,
    /// Unix seconds it started.
    pub started: f64,
    /// Unix seconds it ended, once completed.
    pub ended: Option<f64>,
    /// Whether it succeeded, once completed.
    pub success: Option<bool>,
    /// Input tokens used in it.
    pub input_tokens: u64,
    /// Output tokens used in it.
    pub output_tokens: u64,
    /// The last model that used tokens in it.
    pub model: Option<String>,
    /// Gate checks made while it ran.
    pub gates: Vec<Gate>,
}

/// Phase occurrences kept per run for its trace.
pub const MAX_SPANS: usize = 256;

/// Runs `f` on the entry for `name`, made when absent; past
/// [`MAX_NAMES`] names a new one goes to `other`. The name is copied only
/// when an entry is made: this runs for nearly every event.
fn bump<V: Default>(map: &mut BTreeMap<String, V>, name: &str, f: impl FnOnce(&mut V)) {
    let key = if map.len() < MAX_NAMES || map.contains_key(name) {
        name
    } else {
        "other"
    };
    match map.get_mut(key) {
        Some(v) => f(v),
        None => f(map.entry(key.to_string()).or_default()),
    }
}

impl Detail {
    /// The index of the newest occurrence of `phase` that has not completed.
    fn open_span(&self, phase: &str) -> Option<usize> {
        let from = self.ended_before.min(self.spans.len());
        // The cheap test first: names are compared for open spans only.
        self.spans[from..]
            .iter()
            .rposition(|s| s.ended.is_none() && s.name == phase)
            .map(|i| from + i)
    }

    /// Applies one event and moves the metrics it concerns.
    pub fn apply(&mut self, e: &Timed, m: &RunMetrics) {
        match &e.event {
            Event::IterationStarted { iteration } => {
                self.iterations_started += 1;
                self.current_iteration = Some(*iteration);
                if self.iteration_started_at.len() < MAX_NAMES {
                    self.iteration_started_at.insert(*iteration, e.at);
                }
                m.iterations.inc();
            }
            Event::IterationCompleted { iteration, .. } => {
                self.iterations_completed += 1;
                if let Some(start) = self.iteration_started_at.remove(iteration) {
                    m.iteration_duration.observe((e.at - start).max(0.0));
                }
                if self.current_iteration == Some(*iteration) {
                    self.current_iteration = None;
                }
            }
            Event::PhaseStarted { phase, .. } => {
                if self.spans.len() < MAX_SPANS {
                    self.spans.push(PhaseRecord {
                        name: phase.clone(),
                        started: e.at,
                        ..PhaseRecord::default()
                    });
                }
                self.current_phase = Some(phase.clone());
                if self.phase_started_at.len() < MAX_NAMES
                    || self.phase_started_at.contains_key(phase)
                {
                    self.phase_started_at.insert(phase.clone(), e.at);
                }
            }
            Event::PhaseCompleted {
                phase,
                success,
                duration_ms,
            } => {
                let started = self.phase_started_at.remove(phase);
                let seconds = duration_ms
                    .map(|ms| ms / 1000.0)
                    .or(started.map(|s| (e.at - s).max(0.0)));
                match self.open_span(phase) {
                    Some(i) => {
                        let span = &mut self.spans[i];
                        span.ended = Some(seconds.map_or(e.at, |s| span.started + s));
                        span.success = Some(*success);
                    }
                    None if self.spans.len() < MAX_SPANS => self.spans.push(PhaseRecord {
                        name: phase.clone(),
                        started: e.at - seconds.unwrap_or(0.0),
                        ended: Some(e.at),
                        success: Some(*success),
                        ..PhaseRecord::default()
                    }),
                    None => {}
                }
                while self
                    .spans
                    .get(self.ended_before)
                    .is_some_and(|s| s.ended.is_some())
                {
                    self.ended_before += 1;
                }
                bump(&mut self.phases, phase, |stats| {
                    stats.completed += 1;
                    stats.successes += u64::from(*success);
                    if let Some(s) = seconds {
                        stats.total_seconds += s;
                        stats.last_seconds = s;
                    }
                });
                if let Some(s) = seconds {
                    m.phase_duration.observe(&[phase], s);
                }
                m.phases
                    .inc(&[phase, if *success { "success" } else { "failure" }]);
                if self.current_phase.as_deref() == Some(phase) {
                    self.current_phase = None;
                }
            }
            Event::GateChecked {
                gate,
                passed,
                reason,
            } => {
                let check = Gate {
                    gate: gate.clone(),
                    passed: *passed,
                    reason: reason.clone(),
                    at: e.at,
                };
                let open = self
                    .current_phase
                    .as_deref()
                    .and_then(|p| self.open_span(p));
                match open {
                    Some(i) if self.spans[i].gates.len() < MAX_GATES => {
                        self.spans[i].gates.push(check.clone())
                    }
                    Some(_) => {}
                    None if self.root_gates.len() < MAX_GATES => {
                        self.root_gates.push(check.clone())
                    }
                    None => {}
                }
                self.gates.push_back(check);
                while self.gates.len() > MAX_GATES {
                    self.gates.pop_front();
                }
                m.gates.inc(&[gate, if *passed { "pass" } else { "fail" }]);
            }
            Event::Tokens {
                phase,
                model,
                input_tokens,
                output_tokens,
            } => {
                bump(&mut self.tokens_by_phase, phase, |t| {
                    t.0 += input_tokens;
                    t.1 += output_tokens;
                });
                let model_name = model.as_deref().unwrap_or("unknown");
                bump(&mut self.tokens_by_model, model_name, |t| {
                    t.0 += input_tokens;
                    t.1 += output_tokens;
                });
                // An absent model is kept as the empty name and priced at
                // the default price.
                let pair = (phase.clone(), model.clone().unwrap_or_default());
                let pair = if self.tokens_by_phase_model.len() < MAX_NAMES
                    || self.tokens_by_phase_model.contains_key(&pair)
                {
                    pair
                } else {
                    ("other".to_string(), String::new())
                };
                let t = self.tokens_by_phase_model.entry(pair).or_default();
                t.0 += input_tokens;
                t.1 += output_tokens;
                if let Some(span) = self.spans.iter_mut().rev().find(|s| s.name == *phase) {
                    span.input_tokens += input_tokens;
                    span.output_tokens += output_tokens;
                    if model.is_some() {
                        span.model = model.clone();
                    }
                }
                m.tokens.inc_by(&[phase, "input"], *input_tokens);
                m.tokens.inc_by(&[phase, "output"], *output_tokens);
            }
            Event::DeliveryStarted => self.delivery_started = Some(e.at),
            Event::DeliveryCompleted {
                success,
                pr_url,
                ci_status,
            } => {
                self.delivery_completed = Some((*success, pr_url.clone(), ci_status.clone(), e.at));
                m.deliveries
                    .inc(&[if *success { "success" } else { "failure" }]);
            }
        }
    }

    /// The cost of the run's tokens by phase, priced by `price(model,
    /// input, output)` (an empty model is unknown).
    pub fn phase_costs(&self, price: impl Fn(Option<&str>, u64, u64) -> f64) -> Vec<(String, f64)> {
        let mut costs: Vec<(String, f64)> = Vec::new();
        for ((phase, model), (input, output)) in &self.tokens_by_phase_model {
            let model = (!model.is_empty()).then_some(model.as_str());
            let cost = price(model, *input, *output);
            match costs.iter_mut().find(|(p, _)| p == phase) {
                Some((_, sum)) => *sum += cost,
                None => costs.push((phase.clone(), cost)),
            }
        }
        costs
    }

    /// Total `(input, output)` tokens.
    pub fn tokens(&self) -> (u64, u64) {
        self.tokens_by_phase
            .values()
            .fold((0, 0), |(i, o), (a, b)| (i + a, o + b))
    }

    /// The detail as JSON for `GET /api/v1/runs/{id}`.
    pub fn to_json(&self) -> Value {
        let (input, output) = self.tokens();
        let pair = |m: &BTreeMap<String, (u64, u64)>| -> Value {
            m.iter()
                .map(|(k, (i, o))| (k.clone(), json!({"input": i, "output": o})))
                .collect::<serde_json::Map<_, _>>()
                .into()
        };
        json!({
            "iterations": {
                "started": self.iterations_started,
                "completed": self.iterations_completed,
                "current": self.current_iteration,
            },
            "current_phase": self.current_phase,
            "phases": self.phases.iter().map(|(k, s)| (k.clone(), json!({
                "completed": s.completed,
                "successes": s.successes,
                "failures": s.completed - s.successes,
                "total_seconds": s.total_seconds,
                "last_seconds": s.last_seconds,
            }))).collect::<serde_json::Map<_, _>>(),
            "gates": self.gates.iter().map(|g| json!({
                "gate": g.gate, "passed": g.passed, "reason": g.reason, "at": crate::time::rfc3339(g.at),
            })).collect::<Vec<_>>(),
            "tokens": {
                "input": input,
                "output": output,
                "by_phase": pair(&self.tokens_by_phase),
                "by_model": pair(&self.tokens_by_model),
            },
            "delivery": match (&self.delivery_started, &self.delivery_completed) {
                (None, None) => Value::Null,
                (started, None) => json!({"status": "started", "started_at": started.map(crate::time::rfc3339)}),
                (started, Some((success, pr_url, ci_status, at))) => json!({
                    "status": "completed", "success": success, "pr_url": pr_url, "ci_status": ci_status,
                    "started_at": started.map(crate::time::rfc3339), "completed_at": crate::time::rfc3339(*at),
                }),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Registry;

    fn timed(at: f64, event: Event) -> Timed {
        Timed { at, event }
    }

    fn start(at: f64, phase: &str) -> Timed {
        let phase = phase.to_string();
        timed(
            at,
            Event::PhaseStarted {
                phase,
                iteration: None,
            },
        )
    }

    fn end(at: f64, phase: &str) -> Timed {
        let phase = phase.to_string();
        timed(
            at,
            Event::PhaseCompleted {
                phase,
                success: true,
                duration_ms: None,
            },
        )
    }

    fn gate(at: f64, name: &str) -> Timed {
        let gate = name.to_string();
        timed(
            at,
            Event::GateChecked {
                gate,
                passed: true,
                reason: None,
            },
        )
    }

    #[test]
    fn interleaved_phases_end_their_newest_open_span() {
        let m = RunMetrics::register(&Registry::new()).unwrap();
        let mut d = Detail::default();
        let events = [
            start(1.0, "a"),
            start(2.0, "b"),
            end(3.0, "a"),
            start(4.0, "a"),
            gate(5.0, "g1"),
            end(6.0, "b"),
            end(7.0, "a"),
            end(8.0, "c"),
            gate(9.0, "g2"),
            start(10.0, "a"),
            gate(11.0, "g3"),
        ];
        for e in &events {
            d.apply(e, &m);
        }
        let got: Vec<(&str, f64, Option<f64>, usize)> = d
            .spans
            .iter()
            .map(|s| (s.name.as_str(), s.started, s.ended, s.gates.len()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("a", 1.0, Some(3.0), 0),
                ("b", 2.0, Some(6.0), 0),
                ("a", 4.0, Some(7.0), 1),
                ("c", 8.0, Some(8.0), 0),
                ("a", 10.0, None, 1),
            ]
        );
        assert_eq!(d.spans[2].gates[0].gate, "g1");
        assert_eq!(d.root_gates.len(), 1);
        assert_eq!(d.ended_before, 4);
    }
}
