//! What a run's events add up to. One `apply`, live and on replay, also moves
//! the metrics, so a restart rebuilds exactly what was there.

use std::collections::{BTreeMap, HashMap, VecDeque};

use serde_json::{json, Value};

use super::event::{metadata_accuracy, same_phase, Event, Timed};
use super::metrics::{RunMetrics, RunRef};

/// Distinct phase, gate or model names kept per run; more are folded into `other`.
pub const MAX_NAMES: usize = 256;
/// Gate results kept per run, newest last.
pub const MAX_GATES: usize = 100;

#[derive(Clone, Debug, Default, PartialEq)]
pub struct PhaseStats {
    pub completed: u64,
    pub successes: u64,
    pub total_seconds: f64,
    /// Of the last completion.
    pub last_seconds: f64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Gate {
    pub gate: String,
    pub passed: bool,
    pub reason: Option<String>,
    /// Unix seconds.
    pub at: f64,
}

/// The inside of a run.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Detail {
    pub iterations_started: u64,
    pub iterations_completed: u64,
    pub current_iteration: Option<u64>,
    pub(super) iteration_started_at: HashMap<u64, f64>,
    pub current_phase: Option<String>,
    pub(super) phase_started_at: HashMap<String, f64>,
    pub phases: BTreeMap<String, PhaseStats>,
    pub gates: VecDeque<Gate>,
    /// Tokens `(input, output)` by phase, and by model.
    pub tokens_by_phase: BTreeMap<String, (u64, u64)>,
    pub tokens_by_model: BTreeMap<String, (u64, u64)>,
    /// Tokens by phase and model, `(input, output)`: what a run's cost is priced from.
    pub tokens_by_phase_model: BTreeMap<(String, String), (u64, u64)>,
    /// Delivery: started at, then `(success, pr_url, ci_status, at)`.
    pub delivery_started: Option<f64>,
    pub delivery_completed: Option<(bool, Option<String>, Option<String>, f64)>,
    /// Each phase as it happened, oldest first, for tracing.
    pub spans: Vec<PhaseRecord>,
    /// Made outside any phase.
    pub root_gates: Vec<Gate>,
    /// `(input, output, model)` reported before its phase's span in this iteration began.
    pub(super) pending_tokens: BTreeMap<String, (u64, u64, Option<String>)>,
    /// The earliest and latest times of the events applied: the run's trace span.
    pub event_span: Option<(f64, f64)>,
    /// Events applied: a batch prepared against a version is right while it holds.
    pub version: u64,
    /// How long the run took once ended: the emitter's measure, else start to end.
    pub duration_seconds: Option<f64>,
    /// Leading spans all ended, which the search for an open one skips (none reopen).
    pub(super) ended_before: usize,
}

/// Names each map of a finished run's [`Detail::summary`] keeps.
pub const SUMMARY_NAMES: usize = 8;
/// Gates a finished run's summary keeps, the newest.
pub const SUMMARY_GATES: usize = 3;
/// Bytes of each text a finished run's summary keeps, cut at a character boundary.
pub const SUMMARY_TEXT: usize = 256;

fn cut(s: &str) -> String {
    let mut end = s.len().min(SUMMARY_TEXT);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

fn add_pair(sum: &mut (u64, u64), t: &(u64, u64)) {
    sum.0 = sum.0.saturating_add(t.0);
    sum.1 = sum.1.saturating_add(t.1);
}

/// The [`SUMMARY_NAMES`] heaviest entries of `map`, the rest folded under `other`.
fn top<V: Clone + Default>(
    map: &BTreeMap<String, V>,
    weight: impl Fn(&V) -> u64,
    fold: impl Fn(&mut V, &V),
) -> BTreeMap<String, V> {
    if map.len() <= SUMMARY_NAMES {
        return crate::ordered::map(map.iter().map(|(k, v)| (cut(k), v.clone())));
    }
    let mut order: Vec<(u64, &str)> = map.iter().map(|(k, v)| (weight(v), k.as_str())).collect();
    heaviest_first(&mut order);
    let keep = SUMMARY_NAMES - 1;
    let mut out: BTreeMap<String, V> = BTreeMap::new();
    let mut other = V::default();
    for (i, (_, k)) in order.into_iter().enumerate() {
        if i < keep && k != "other" {
            out.insert(cut(k), map[k].clone());
        } else {
            fold(&mut other, &map[k]);
        }
    }
    out.insert("other".to_string(), other);
    out
}

/// Heaviest first, then by name; not generic, so all of [`top`] share one sort's code.
fn heaviest_first(order: &mut [(u64, &str)]) {
    order.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
}

/// A run's [`Detail`], made on its first change: an empty one costs more than the rest
/// of a run, and many runs have reported nothing yet.
#[derive(Clone, Debug, Default)]
pub struct LazyDetail(pub(super) Option<Box<Detail>>);

impl std::ops::Deref for LazyDetail {
    type Target = Detail;

    fn deref(&self) -> &Detail {
        static EMPTY: std::sync::OnceLock<Detail> = std::sync::OnceLock::new();
        self.0
            .as_deref()
            .unwrap_or_else(|| EMPTY.get_or_init(Detail::default))
    }
}

impl std::ops::DerefMut for LazyDetail {
    fn deref_mut(&mut self) -> &mut Detail {
        self.0.get_or_insert_with(Box::default)
    }
}

impl LazyDetail {
    pub fn summary(&self) -> LazyDetail {
        LazyDetail(self.0.as_ref().map(|d| Box::new(d.summary())))
    }

    pub fn approx_bytes(&self) -> u64 {
        self.0.as_ref().map_or(0, |d| d.approx_bytes())
    }
}

impl From<Detail> for LazyDetail {
    fn from(detail: Detail) -> LazyDetail {
        LazyDetail(Some(Box::new(detail)))
    }
}

impl PartialEq for LazyDetail {
    fn eq(&self, other: &LazyDetail) -> bool {
        **self == **other
    }
}

/// One occurrence of a phase: when it ran and what happened in it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PhaseRecord {
    pub name: String,
    /// Unix seconds; `ended` and `success` once completed.
    pub started: f64,
    pub ended: Option<f64>,
    pub success: Option<bool>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// The last model that used tokens in it.
    pub model: Option<String>,
    pub iteration: Option<u64>,
    pub gates: Vec<Gate>,
    /// The accuracy last reported in the `metadata` of its start, end or gate checks.
    pub accuracy: Option<f64>,
}

/// Phase occurrences kept per run for its trace.
pub const MAX_SPANS: usize = 256;

/// Runs `f` on `name`'s entry (past [`MAX_NAMES`], `other`'s), copying the name only if new.
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

impl PhaseRecord {
    /// Adds tokens, and `model`, if given, as the last one that used any.
    fn add_tokens(&mut self, input: u64, output: u64, model: &Option<String>) {
        self.input_tokens = self.input_tokens.saturating_add(input);
        self.output_tokens = self.output_tokens.saturating_add(output);
        if model.is_some() {
            self.model.clone_from(model);
        }
    }
}

/// Adds tokens to the pricing table: no model as `""` (default price); past [`MAX_NAMES`], `other`.
fn add_priced_tokens(
    table: &mut BTreeMap<(String, String), (u64, u64)>,
    phase: &str,
    model: &Option<String>,
    input: u64,
    output: u64,
) {
    let pair = (phase.to_string(), model.clone().unwrap_or_default());
    let pair = if table.len() < MAX_NAMES || table.contains_key(&pair) {
        pair
    } else {
        ("other".to_string(), String::new())
    };
    add_pair(table.entry(pair).or_default(), &(input, output));
}

impl Detail {
    /// The index of the newest open span whose name `named` accepts.
    fn open_span_where(&self, named: impl Fn(&str) -> bool) -> Option<usize> {
        let from = self.ended_before.min(self.spans.len());
        // The cheap test first: names are compared for open spans only.
        self.spans[from..]
            .iter()
            .rposition(|s| s.ended.is_none() && named(&s.name))
            .map(|i| from + i)
    }

    pub fn saw(&mut self, at: f64) {
        if !at.is_finite() {
            return;
        }
        self.event_span = Some(match self.event_span {
            None => (at, at),
            Some((first, last)) => (first.min(at), last.max(at)),
        });
    }

    /// Fills in the iteration and a phase end's duration where events left them out,
    /// as [`Detail::apply`] will see them, so journal, streams and log carry whole events.
    pub fn fill(&self, events: &mut [Timed]) {
        let mut current = self.current_iteration;
        // Phases started in the batch, and those whose earlier start an end in it took.
        let mut started: Vec<(String, f64)> = Vec::new();
        let mut taken: Vec<String> = Vec::new();
        for e in events.iter_mut() {
            let at = e.at;
            match &mut e.event {
                Event::IterationStarted { iteration } => current = Some(*iteration),
                Event::IterationCompleted { iteration, .. } if current == Some(*iteration) => {
                    current = None;
                }
                Event::PhaseStarted { iteration, phase } => {
                    *iteration = iteration.or(current);
                    started.push((phase.clone(), at));
                }
                Event::PhaseCompleted {
                    iteration,
                    duration_ms,
                    phase,
                    ..
                } => {
                    *iteration = iteration.or(current);
                    let start = match started.iter().rposition(|(p, _)| p == phase) {
                        Some(i) => Some(started.remove(i).1),
                        None if taken.contains(phase) => None,
                        None => {
                            taken.push(phase.clone());
                            self.phase_started_at.get(phase.as_str()).copied()
                        }
                    };
                    if duration_ms.is_none() {
                        *duration_ms = start.map(|s| ((at - s).max(0.0) * 1000.0).round());
                    }
                }
                Event::GateChecked { iteration, .. } => *iteration = iteration.or(current),
                _ => {}
            }
        }
    }

    /// Applies one event of `run`, moving its metrics with `run` as their exemplar.
    pub fn apply(&mut self, e: &Timed, m: &RunMetrics, run: RunRef) {
        self.version += 1;
        self.saw(e.at);
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
            Event::PhaseStarted { phase, iteration } => self.start_phase(e, phase, *iteration),
            Event::PhaseCompleted {
                phase,
                success,
                duration_ms,
                iteration,
            } => {
                let seconds = self.complete_phase(e, phase, *success, *duration_ms, *iteration);
                if let Some(s) = seconds {
                    m.phase_completed(run, phase, s, e.at);
                }
                m.phases
                    .inc(&[phase, if *success { "success" } else { "failure" }]);
            }
            Event::GateChecked {
                gate,
                passed,
                reason,
                ..
            } => {
                self.check_gate(e, gate, *passed, reason);
                m.gates.inc(&[gate, if *passed { "pass" } else { "fail" }]);
            }
            Event::Tokens {
                phase,
                model,
                input_tokens,
                output_tokens,
            } => {
                self.count_tokens(phase, model, *input_tokens, *output_tokens);
                m.tokens(phase, *input_tokens, *output_tokens);
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

    fn start_phase(&mut self, e: &Timed, phase: &str, iteration: Option<u64>) {
        self.push_span(PhaseRecord {
            name: phase.to_string(),
            started: e.at,
            iteration: iteration.or(self.current_iteration),
            accuracy: metadata_accuracy(e),
            ..PhaseRecord::default()
        });
        self.current_phase = Some(phase.to_string());
        if self.phase_started_at.len() < MAX_NAMES || self.phase_started_at.contains_key(phase) {
            self.phase_started_at.insert(phase.to_string(), e.at);
        }
    }

    /// Ends `phase`, its span and totals; returns how long it took, when known.
    fn complete_phase(
        &mut self,
        e: &Timed,
        phase: &str,
        success: bool,
        duration_ms: Option<f64>,
        iteration: Option<u64>,
    ) -> Option<f64> {
        let started = self.phase_started_at.remove(phase);
        let seconds = duration_ms
            .map(|ms| ms / 1000.0)
            .or(started.map(|s| (e.at - s).max(0.0)));
        // Its open span ends, or an ended one is added if its start was not seen.
        match self.open_span_where(|name| name == phase) {
            Some(i) => {
                let span = &mut self.spans[i];
                span.ended = Some(seconds.map_or(e.at, |s| span.started + s));
                span.success = Some(success);
                span.accuracy = metadata_accuracy(e).or(span.accuracy);
            }
            None => self.push_span(PhaseRecord {
                name: phase.to_string(),
                started: e.at - seconds.unwrap_or(0.0),
                ended: Some(e.at),
                success: Some(success),
                iteration: iteration.or(self.current_iteration),
                accuracy: metadata_accuracy(e),
                ..PhaseRecord::default()
            }),
        }
        let after = self.spans.iter().skip(self.ended_before);
        self.ended_before += after.take_while(|s| s.ended.is_some()).count();
        bump(&mut self.phases, phase, |stats| {
            stats.completed += 1;
            stats.successes += u64::from(success);
            if let Some(s) = seconds {
                stats.total_seconds += s;
                stats.last_seconds = s;
            }
        });
        if self.current_phase.as_deref() == Some(phase) {
            self.current_phase = None;
        }
        seconds
    }

    /// Records a gate check on the open phase's span (else the run's).
    fn check_gate(&mut self, e: &Timed, gate: &str, passed: bool, reason: &Option<String>) {
        let check = Gate {
            gate: gate.to_string(),
            passed,
            reason: reason.clone(),
            at: e.at,
        };
        let open = self
            .current_phase
            .as_deref()
            .and_then(|p| self.open_span_where(|name| name == p));
        // A gate judges the phase it ran in (the research agent's training gate, the
        // model trained), so its accuracy is that phase's, even past MAX_GATES checks.
        if let (Some(i), Some(accuracy)) = (open, metadata_accuracy(e)) {
            self.spans[i].accuracy = Some(accuracy);
        }
        match open {
            Some(i) if self.spans[i].gates.len() < MAX_GATES => {
                self.spans[i].gates.push(check.clone())
            }
            Some(_) => {}
            None if self.root_gates.len() < MAX_GATES => self.root_gates.push(check.clone()),
            None => {}
        }
        self.gates.push_back(check);
        while self.gates.len() > MAX_GATES {
            self.gates.pop_front();
        }
    }

    /// Adds tokens to the run's totals and to the span they belong to.
    fn count_tokens(&mut self, phase: &str, model: &Option<String>, input: u64, output: u64) {
        let used = (input, output);
        bump(&mut self.tokens_by_phase, phase, |t| add_pair(t, &used));
        let model_name = model.as_deref().unwrap_or("unknown");
        bump(&mut self.tokens_by_model, model_name, |t| {
            add_pair(t, &used)
        });
        add_priced_tokens(&mut self.tokens_by_phase_model, phase, model, input, output);
        self.attribute_tokens(phase, model, input, output);
    }

    /// Adds tokens to `phase`'s span ([`same_phase`]): the open one, or the newest if of
    /// this iteration (tokens sent just after its end); else they wait for this iteration's.
    fn attribute_tokens(&mut self, phase: &str, model: &Option<String>, input: u64, output: u64) {
        let current = self.current_iteration;
        let newest = || {
            let newest = self.spans.iter().rposition(|s| same_phase(&s.name, phase));
            newest.filter(|&i| current.is_none() || self.spans[i].iteration == current)
        };
        let target = self.open_span_where(|name| same_phase(name, phase));
        if let Some(i) = target.or_else(newest) {
            return self.spans[i].add_tokens(input, output, model);
        }
        if self.pending_tokens.len() >= MAX_NAMES && !self.pending_tokens.contains_key(phase) {
            return;
        }
        let (i, o, m) = self.pending_tokens.entry(phase.to_string()).or_default();
        (*i, *o) = (i.saturating_add(input), o.saturating_add(output));
        *m = model.clone().or(m.take());
    }

    /// Adds a span (below [`MAX_SPANS`]) with the tokens waiting for its phase.
    fn push_span(&mut self, mut span: PhaseRecord) {
        if self.spans.len() >= MAX_SPANS {
            return;
        }
        self.pending_tokens.retain(|phase, (input, output, model)| {
            if !same_phase(phase, &span.name) {
                return true;
            }
            span.add_tokens(*input, *output, model);
            false
        });
        self.spans.push(span);
    }

    /// The cost by phase of the run's tokens and those of `later` events (still on their
    /// way), priced by `price(model, input, output)`.
    pub fn phase_costs<'a>(
        &self,
        later: impl IntoIterator<Item = &'a Timed>,
        price: impl Fn(Option<&str>, u64, u64) -> f64,
    ) -> Vec<(String, f64)> {
        let mut table = std::borrow::Cow::Borrowed(&self.tokens_by_phase_model);
        for e in later {
            if let Event::Tokens {
                phase,
                model,
                input_tokens,
                output_tokens,
            } = &e.event
            {
                add_priced_tokens(table.to_mut(), phase, model, *input_tokens, *output_tokens);
            }
        }
        let mut costs: Vec<(String, f64)> = Vec::new();
        for ((phase, model), (input, output)) in table.iter() {
            let model = (!model.is_empty()).then_some(model.as_str());
            let cost = price(model, *input, *output);
            // The table is in phase order, so a phase's rows are adjacent: only the last
            // cost can be its own (a search of them all was quadratic in the phases).
            match costs.last_mut().filter(|(p, _)| p == phase) {
                Some((_, sum)) => *sum += cost,
                None => costs.push((phase.clone(), cost)),
            }
        }
        costs
    }

    /// What a finished run keeps: counts, totals, the top names, the last gates, delivery.
    /// Spans and the pricing table go: trace and cost were taken from the whole detail.
    pub fn summary(&self) -> Detail {
        let gates = self.gates.iter().rev().take(SUMMARY_GATES).rev();
        let gates = gates.map(|g| Gate {
            gate: cut(&g.gate),
            passed: g.passed,
            reason: g.reason.as_deref().map(cut),
            at: g.at,
        });
        let delivery = self.delivery_completed.as_ref();
        Detail {
            iterations_started: self.iterations_started,
            iterations_completed: self.iterations_completed,
            current_iteration: self.current_iteration,
            current_phase: self.current_phase.as_deref().map(cut),
            phases: top(
                &self.phases,
                |s| s.completed,
                |sum, s| {
                    sum.completed += s.completed;
                    sum.successes += s.successes;
                    sum.total_seconds += s.total_seconds;
                    sum.last_seconds = s.last_seconds;
                },
            ),
            gates: gates.collect(),
            tokens_by_phase: top(&self.tokens_by_phase, |t| t.0.saturating_add(t.1), add_pair),
            tokens_by_model: top(&self.tokens_by_model, |t| t.0.saturating_add(t.1), add_pair),
            delivery_started: self.delivery_started,
            delivery_completed: delivery
                .map(|(ok, pr, ci, at)| (*ok, pr.as_deref().map(cut), ci.as_deref().map(cut), *at)),
            event_span: self.event_span,
            version: self.version,
            duration_seconds: self.duration_seconds,
            ..Detail::default()
        }
    }

    /// About how many bytes the detail holds, allocator overhead included.
    pub fn approx_bytes(&self) -> u64 {
        let text = |s: &str| (s.len() as u64).next_multiple_of(16) + 16;
        let opt = |s: &Option<String>| s.as_deref().map_or(0, text);
        // Map entries: each key, its share of a node, and the value.
        let entries = |keys: &mut dyn Iterator<Item = &String>, value: u64| {
            keys.map(|k| text(k) + 32 + value).sum::<u64>()
        };
        let mut n = std::mem::size_of::<Detail>() as u64 + 16;
        n += self.iteration_started_at.len() as u64 * 32;
        n += entries(&mut self.phase_started_at.keys(), 8);
        n += entries(&mut self.phases.keys(), 32);
        let gate = |g: &Gate| text(&g.gate) + opt(&g.reason) + std::mem::size_of::<Gate>() as u64;
        let gates = self.gates.iter().chain(&self.root_gates);
        n += gates.map(gate).sum::<u64>();
        n += entries(&mut self.tokens_by_phase.keys(), 16);
        n += entries(&mut self.tokens_by_model.keys(), 16);
        let pairs = self.tokens_by_phase_model.keys();
        n += pairs.map(|(p, m)| text(p) + 48 + text(m)).sum::<u64>();
        n += entries(&mut self.pending_tokens.keys(), 40);
        for s in &self.spans {
            n += std::mem::size_of::<PhaseRecord>() as u64 + text(&s.name) + opt(&s.model);
            n += s.gates.iter().map(gate).sum::<u64>();
        }
        n += opt(&self.current_phase);
        if let Some((_, pr, ci, _)) = &self.delivery_completed {
            n += opt(pr) + opt(ci);
        }
        n
    }

    pub fn tokens(&self) -> (u64, u64) {
        let mut sum = (0, 0);
        self.tokens_by_phase
            .values()
            .for_each(|t| add_pair(&mut sum, t));
        sum
    }

    /// As `GET /api/v1/runs/{id}` shows it.
    pub fn to_json(&self) -> Value {
        let (input, output) = self.tokens();
        let pair = |m: &BTreeMap<String, (u64, u64)>| -> Value {
            let pairs = m
                .iter()
                .map(|(k, (i, o))| (k.clone(), json!({"input": i, "output": o})));
            crate::ordered::object(pairs)
        };
        json!({
            "iterations": {
                "started": self.iterations_started,
                "completed": self.iterations_completed,
                "current": self.current_iteration,
            },
            "current_phase": self.current_phase,
            "phases": crate::ordered::object(self.phases.iter().map(|(k, s)| (k.clone(), json!({
                "completed": s.completed,
                "successes": s.successes,
                "failures": s.completed - s.successes,
                "total_seconds": s.total_seconds,
                "last_seconds": s.last_seconds,
            })))),
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
        Timed {
            at,
            event,
            extra: None,
        }
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
                iteration: None,
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
                iteration: None,
            },
        )
    }

    #[test]
    fn a_phase_priced_for_two_models_costs_their_sum_once() {
        let mut d = Detail::default();
        for (phase, model) in [
            ("b", None),
            ("a", Some("m2")),
            ("a", Some("m1")),
            ("a", None),
        ] {
            let table = &mut d.tokens_by_phase_model;
            add_priced_tokens(table, phase, &model.map(str::to_string), 1, 0);
        }
        let price =
            |model: Option<&str>, i, _| i as f64 * if model == Some("m2") { 2.0 } else { 1.0 };
        let costs = d.phase_costs([], price);
        assert_eq!(costs, [("a".to_string(), 4.0), ("b".to_string(), 1.0)]);
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
            d.apply(e, &m, RunRef::new("r", None));
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

    fn iteration(at: f64, n: u64) -> Timed {
        timed(at, Event::IterationStarted { iteration: n })
    }

    fn tokens(at: f64, phase: &str, input: u64) -> Timed {
        let phase = phase.to_string();
        timed(
            at,
            Event::Tokens {
                phase,
                model: None,
                input_tokens: input,
                output_tokens: 1,
            },
        )
    }

    #[test]
    fn fill_gives_phase_and_gate_events_the_iteration_and_measured_durations() {
        let m = RunMetrics::register(&Registry::new()).unwrap();
        let mut d = Detail::default();
        d.apply(&iteration(1.0, 4), &m, RunRef::new("r", None));
        d.apply(&start(2.0, "before"), &m, RunRef::new("r", None));
        let mut batch = vec![
            end(2.5, "before"),
            start(3.0, "a"),
            gate(3.5, "g"),
            end(4.25, "a"),
            end(5.0, "a"),
            iteration(6.0, 5),
            end(7.0, "c"),
        ];
        d.fill(&mut batch);
        let got: Vec<(Option<u64>, Option<f64>)> = batch
            .iter()
            .filter_map(|e| match &e.event {
                Event::PhaseCompleted {
                    iteration,
                    duration_ms,
                    ..
                } => Some((*iteration, *duration_ms)),
                Event::GateChecked { iteration, .. } => Some((*iteration, None)),
                _ => None,
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (Some(4), Some(500.0)),
                (Some(4), None),
                (Some(4), Some(1250.0)),
                // A second end with no start of its own measures nothing.
                (Some(4), None),
                (Some(5), None),
            ]
        );
        // A value the emitter sent is kept.
        let mut own = vec![timed(
            9.0,
            Event::GateChecked {
                gate: "g".into(),
                passed: false,
                reason: None,
                iteration: Some(2),
            },
        )];
        d.fill(&mut own);
        assert!(matches!(
            own[0].event,
            Event::GateChecked {
                iteration: Some(2),
                ..
            }
        ));
    }

    #[test]
    fn tokens_go_to_the_span_of_their_own_iteration() {
        let m = RunMetrics::register(&Registry::new()).unwrap();
        let mut d = Detail::default();
        let events = [
            iteration(1.0, 1),
            start(1.0, "code"),
            tokens(2.0, "code", 10),
            end(3.0, "code"),
            // Just after the end, still iteration 1's.
            tokens(3.5, "code", 1),
            iteration(4.0, 2),
            // Before iteration 2's span began: it waits for that span.
            tokens(4.5, "code", 200),
            end(6.0, "code"),
        ];
        for e in &events {
            d.apply(e, &m, RunRef::new("r", None));
        }
        let got: Vec<(Option<u64>, u64)> = d
            .spans
            .iter()
            .map(|s| (s.iteration, s.input_tokens))
            .collect();
        assert_eq!(got, vec![(Some(1), 11), (Some(2), 200)]);
        assert_eq!(d.event_span, Some((1.0, 6.0)));
        assert_eq!(d.version, events.len() as u64);
    }
}
