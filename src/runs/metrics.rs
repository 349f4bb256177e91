//! The run metric set, registered in one place.

use serde_json::{json, Value};

use std::collections::BTreeMap;

use crate::metrics::{
    Counter, CounterFamily, Error, Exemplar, Gauge, Histogram, HistogramFamily, Labelled, Registry,
};
use crate::otlp::TraceContext;

/// Buckets for run and iteration durations, in seconds.
pub const RUN_BUCKETS: [f64; 12] = [
    1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1200.0, 1800.0, 3600.0,
];
/// Buckets for phase durations, in seconds.
pub const PHASE_BUCKETS: [f64; 10] = [0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0];

/// Every run metric, under each source system's names as written (docs/api-reference.md,
/// "Source names"): an alias when the series is the same, else a family fed by the same call.
#[derive(Clone)]
pub struct RunMetrics {
    // Each field's metric names are in `families` and `ALIASES`.
    pub active: Gauge,
    pub started: Counter,
    pub iterations: Counter,
    pub iteration_duration: Histogram,
    phase_duration: HistogramFamily,
    pub phases: CounterFamily,
    pub gates: CounterFamily,
    pub deliveries: CounterFamily,
    cycles: CounterFamily,
    completed: Counter,
    failed: Counter,
    agentgate_results: CounterFamily,
    /// Unlabelled, yet a family: exemplars are kept by families.
    cycle_duration: HistogramFamily,
    duration_by_outcome: HistogramFamily,
    tokens: CounterFamily,
    tokens_by_type: CounterFamily,
}

/// A finished run's outcomes, each at 0 from the first scrape so `rate()` sees the first.
pub const OUTCOMES: [&str; 4] = ["completed", "failed", "cancelled", "abandoned"];

/// AgentGate's `result` for one of our outcomes: abandoned is failed to AgentGate.
fn agentgate_result(outcome: &str) -> &'static str {
    match outcome {
        "completed" => "succeeded",
        "cancelled" => "canceled",
        _ => "failed",
    }
}

/// Second names of a family another system names too: (name, help, family served).
const ALIASES: [(&str, &str, &str); 7] = [
    (
        "conductor_active_runs_total",
        "Runs currently running, under conductor-loop's name: a gauge, though its name ends in _total.",
        "conductor_active_runs",
    ),
    (
        "agentgate_active_runs",
        "Runs currently running, under AgentGate's name.",
        "conductor_active_runs",
    ),
    (
        "agentgate_runs_started_total",
        "Runs started, under AgentGate's name.",
        "agent_runs_started_total",
    ),
    (
        "agentgate_iterations_total",
        "Iterations started, under AgentGate's name.",
        "agent_iterations_total",
    ),
    (
        "agentgate_run_duration_seconds",
        "Run duration from start to finish, under AgentGate's name.",
        "agent_cycle_duration_seconds",
    ),
    (
        "agentgate_iteration_duration_seconds",
        "Iteration duration, under AgentGate's name.",
        "agent_iteration_duration_seconds",
    ),
    (
        "agentgate_phase_duration_seconds",
        "Phase duration by phase, under AgentGate's name.",
        "agent_phase_duration_seconds",
    ),
];

impl RunMetrics {
    pub fn register(r: &Registry) -> Result<RunMetrics, Error> {
        let m = RunMetrics::families(r)?;
        for (name, help, of) in ALIASES {
            r.alias(name, help, of)?;
        }
        // Its one series, empty, from the first scrape, as an unlabelled histogram's.
        m.cycle_duration.get(&[]);
        for outcome in OUTCOMES {
            m.cycles.inc_by(&[outcome], 0);
            m.agentgate_results.inc_by(&[agentgate_result(outcome)], 0);
        }
        for result in ["success", "failure"] {
            m.deliveries.inc_by(&[result], 0);
        }
        Ok(m)
    }

    fn families(r: &Registry) -> Result<RunMetrics, Error> {
        Ok(RunMetrics {
            active: r.gauge("conductor_active_runs", "Runs currently running.")?,
            started: r.counter("agent_runs_started_total", "Agent cycles (runs) started.")?,
            iterations: r.counter("agent_iterations_total", "Iterations started.")?,
            iteration_duration: r.histogram(
                "agent_iteration_duration_seconds",
                "Iteration duration from iteration_started to iteration_completed.",
                &RUN_BUCKETS,
            )?,
            phase_duration: r.histogram_family(
                "agent_phase_duration_seconds",
                "Phase duration, reported or measured from phase_started.",
                &["phase"],
                &PHASE_BUCKETS,
            )?,
            phases: r.counter_family(
                "agent_phases_total",
                "Phases completed, by phase and result (success or failure).",
                &["phase", "result"],
            )?,
            gates: r.counter_family(
                "agent_gate_results_total",
                "Quality gate checks, by gate and result (pass or fail).",
                &["gate", "result"],
            )?,
            deliveries: r.counter_family(
                "agent_deliveries_total",
                "Deliveries completed, by result (success or failure).",
                &["result"],
            )?,
            cycles: r.counter_family(
                "agent_cycles_total",
                "Agent cycles (runs) finished, by outcome: completed, failed, cancelled or abandoned (no event within the run timeout).",
                &["outcome"],
            )?,
            completed: r.counter(
                "conductor_completed_runs_total",
                "Runs completed (conductor-loop's name).",
            )?,
            failed: r.counter(
                "conductor_failed_runs_total",
                "Runs failed, abandoned ones included (conductor-loop's name).",
            )?,
            agentgate_results: r.counter_family(
                "agentgate_runs_completed_total",
                "Runs finished, by AgentGate's result: succeeded, failed (abandoned included) or canceled.",
                &["result"],
            )?,
            cycle_duration: r.histogram_family(
                "agent_cycle_duration_seconds",
                "Agent cycle (run) duration from start to finish.",
                &[],
                &RUN_BUCKETS,
            )?,
            duration_by_outcome: r.histogram_family(
                "conductor_run_duration_seconds",
                "Run duration from start to finish, by outcome: agent_cycle_duration_seconds broken down.",
                &["outcome"],
                &RUN_BUCKETS,
            )?,
            tokens: r.counter_family(
                "agent_tokens_total",
                "Tokens used, input and output, by phase as the tokens event names it.",
                &["phase"],
            )?,
            tokens_by_type: r.counter_family(
                "conductor_tokens_total",
                "Tokens used, by phase and type (input or output): agent_tokens_total broken down.",
                &["phase", "type"],
            )?,
        })
    }

    /// Counts `run`, finished with `outcome` at `at` after `seconds`, under every name;
    /// the cycle counter and durations keep it as their exemplar.
    pub fn finished(&self, run: RunRef, outcome: &str, seconds: f64, at: f64) {
        run.exemplar_labels(|labels| {
            self.cycles.inc_with_exemplar(&[outcome], labels, at);
            self.cycle_duration
                .observe_with_exemplar(&[], seconds, labels, at);
            self.duration_by_outcome
                .observe_with_exemplar(&[outcome], seconds, labels, at);
        });
        self.count_outcome(outcome, |c| c.inc());
    }

    /// Counts a phase of `run` that took `seconds`, ended at `at`, the run its exemplar.
    pub fn phase_completed(&self, run: RunRef, phase: &str, seconds: f64, at: f64) {
        run.exemplar_labels(|labels| {
            self.phase_duration
                .observe_with_exemplar(&[phase], seconds, labels, at)
        });
    }

    pub fn tokens(&self, phase: &str, input: u64, output: u64) {
        self.tokens.inc_by(&[phase], input.saturating_add(output));
        self.tokens_by_type.inc_by(&[phase, "input"], input);
        self.tokens_by_type.inc_by(&[phase, "output"], output);
    }

    /// Applies `f` to the source-named counters of `outcome` beside `agent_cycles_total`.
    fn count_outcome(&self, outcome: &str, f: impl Fn(&Counter)) {
        match outcome {
            "completed" => f(&self.completed),
            "failed" | "abandoned" => f(&self.failed),
            _ => {}
        }
        f(&self.agentgate_results.get(&[agentgate_result(outcome)]));
    }
}

/// The run an observation belongs to, which its exemplar names.
#[derive(Clone, Copy, Debug)]
pub struct RunRef<'a> {
    run_id: &'a str,
    traceparent: Option<&'a str>,
}

impl<'a> RunRef<'a> {
    pub fn new(run_id: &'a str, traceparent: Option<&'a str>) -> RunRef<'a> {
        RunRef {
            run_id,
            traceparent,
        }
    }

    /// The trace id of the run's `traceparent`, when valid: where its spans are exported.
    fn trace_id(&self) -> Option<&'a str> {
        let header = self.traceparent?.trim_matches([' ', '\t']);
        TraceContext::parse_traceparent(header)?;
        header.get(3..35)
    }

    /// Calls `f` with the run's exemplar labels: `trace_id` if traced, then `run_id`.
    fn exemplar_labels<R>(&self, f: impl FnOnce(&[(&str, &str)]) -> R) -> R {
        match self.trace_id() {
            Some(trace_id) => f(&[("trace_id", trace_id), ("run_id", self.run_id)]),
            None => f(&[("run_id", self.run_id)]),
        }
    }
}

type HistogramValue = (Vec<u64>, f64);

fn histogram_value(h: &Histogram) -> HistogramValue {
    let mut counts = Vec::new();
    let (sum, _) = h.snapshot(&mut counts);
    (counts, sum)
}

/// One family's values, by series number, and its exemplars.
struct FamilyValues<M, V, E> {
    name: &'static str,
    family: Labelled<M>,
    values: Vec<(u32, V)>,
    exemplars: BTreeMap<u32, E>,
}

impl<M: Clone, V, E> FamilyValues<M, V, E> {
    fn take(
        name: &'static str,
        f: &Labelled<M>,
        value: impl Fn(&M) -> V,
        exemplars: BTreeMap<u32, E>,
    ) -> Self {
        let mut values = Vec::new();
        f.each(|i, m| values.push((i, value(m))));
        FamilyValues {
            name,
            family: f.clone(),
            values,
            exemplars,
        }
    }

    fn into_series(
        self,
        value: fn(V) -> Value,
        exemplars: fn(&E) -> Value,
    ) -> impl Iterator<Item = Value> {
        self.values.into_iter().filter_map(move |(i, v)| {
            let (name, labels) = (self.name, self.family.label_values(i)?);
            // Exemplars, when any, as a fourth member.
            Some(match self.exemplars.get(&i).map(exemplars) {
                Some(e) => json!([name, labels, value(v), e]),
                None => json!([name, labels, value(v)]),
            })
        })
    }
}

/// The run metrics' values at one moment, taken quickly, printed later by `into_series`.
pub struct Values {
    started: (u64, f64),
    iterations: (u64, f64),
    iteration_duration: HistogramValue,
    counters: Vec<FamilyValues<Counter, (u64, f64), Exemplar>>,
    histograms: Vec<FamilyValues<Histogram, HistogramValue, Vec<Option<Exemplar>>>>,
}

/// An exemplar as a snapshot holds it: `[[[name, value], ...], value, timestamp]`.
fn exemplar_to_json(e: &Exemplar) -> Value {
    json!([e.labels(), e.value(), e.timestamp()])
}

impl Values {
    /// A snapshot line per series, `[name, [label values], value]` and any exemplars, in
    /// the order that remakes each family.
    pub fn into_series(self) -> impl Iterator<Item = Value> {
        let single = [
            json!(["started", [], self.started]),
            json!(["iterations", [], self.iterations]),
            json!(["iteration_duration", [], self.iteration_duration]),
        ];
        // A histogram's exemplars: one per bucket, each `null` or one.
        let slots = |slots: &Vec<Option<Exemplar>>| {
            Value::from_iter(slots.iter().map(|e| e.as_ref().map(exemplar_to_json)))
        };
        let counters = self.counters.into_iter();
        let histograms = self.histograms.into_iter();
        single
            .into_iter()
            .chain(counters.flat_map(|c| c.into_series(|v| json!(v), exemplar_to_json)))
            .chain(histograms.flat_map(move |h| h.into_series(|v| json!(v), slots)))
    }
}

fn exemplar_from_json(v: &Value) -> Option<Exemplar> {
    let labels: Vec<(&str, &str)> = v[0]
        .as_array()?
        .iter()
        .map(|l| Some((l[0].as_str()?, l[1].as_str()?)))
        .collect::<Option<_>>()?;
    Exemplar::new(&labels, v[1].as_f64()?, v[2].as_f64()?)
}

/// A series line's exemplars: a histogram's, each bucket's `null` or one; a counter's, one.
fn exemplars_from_json(v: &Value, histogram: bool) -> Option<Vec<Exemplar>> {
    match (v, histogram) {
        (Value::Null, _) => Some(Vec::new()),
        (Value::Array(slots), true) => slots
            .iter()
            .filter(|e| !e.is_null())
            .map(exemplar_from_json)
            .collect(),
        (e, false) => Some(vec![exemplar_from_json(e)?]),
        _ => None,
    }
}

impl RunMetrics {
    /// Every counter and histogram by series, for a snapshot (not the running-runs gauge).
    pub fn values(&self) -> Values {
        Values {
            started: self.started.parts(),
            iterations: self.iterations.parts(),
            iteration_duration: histogram_value(&self.iteration_duration),
            counters: [
                ("cycles", &self.cycles),
                ("phases", &self.phases),
                ("gates", &self.gates),
                ("tokens", &self.tokens_by_type),
                ("deliveries", &self.deliveries),
            ]
            .map(|(name, f)| FamilyValues::take(name, f, Counter::parts, f.exemplars()))
            .into(),
            histograms: [
                ("cycle_duration", &self.duration_by_outcome),
                ("phase_duration", &self.phase_duration),
            ]
            .map(|(name, f)| FamilyValues::take(name, f, histogram_value, f.exemplars()))
            .into(),
        }
    }

    /// Adds one series of [`Values::into_series`] to these new metrics; `None` if not one.
    /// A snapshot holds the breakdowns; the families summing them are rebuilt from them,
    /// so every name of a fact restarts from one value (exemplars: the latest outcome's).
    pub fn restore(&self, v: &Value) -> Option<()> {
        let labels: Vec<&str> = v[1]
            .as_array()?
            .iter()
            .map(Value::as_str)
            .collect::<Option<_>>()?;
        let name = v[0].as_str()?;
        let exemplars = exemplars_from_json(&v[3], name.ends_with("_duration"))?;
        if name.ends_with("_duration") {
            return self.restore_histogram(name, &labels, &v[2], exemplars);
        }
        let (int, fraction) = (v[2][0].as_u64()?, v[2][1].as_f64()?);
        let add = |c: Counter| c.add_parts(int, fraction);
        match (name, labels.as_slice()) {
            ("cycles", [outcome]) => {
                add(self.cycles.get(&labels));
                self.count_outcome(outcome, |c| c.add_parts(int, fraction));
                for e in exemplars {
                    self.cycles.add_exemplar(&labels, e);
                }
            }
            ("tokens", [phase, _]) => {
                add(self.tokens_by_type.get(&labels));
                add(self.tokens.get(&[phase]));
            }
            ("phases", _) => add(self.phases.get(&labels)),
            ("gates", _) => add(self.gates.get(&labels)),
            ("deliveries", _) => add(self.deliveries.get(&labels)),
            ("started", []) => add(self.started.clone()),
            ("iterations", []) => add(self.iterations.clone()),
            _ => return None,
        }
        Some(())
    }

    fn restore_histogram(
        &self,
        name: &str,
        labels: &[&str],
        value: &Value,
        exemplars: Vec<Exemplar>,
    ) -> Option<()> {
        let counts: Vec<u64> = value[0]
            .as_array()?
            .iter()
            .map(Value::as_u64)
            .collect::<Option<_>>()?;
        let sum = value[1].as_f64()?;
        let add = |h: Histogram| h.add_counts(&counts, sum).then_some(());
        match (name, labels) {
            ("cycle_duration", [_]) => {
                add(self.duration_by_outcome.get(labels))?;
                add(self.cycle_duration.get(&[]))?;
                for e in exemplars {
                    self.duration_by_outcome.add_exemplar(labels, e.clone());
                    self.cycle_duration.add_exemplar(&[], e);
                }
            }
            ("phase_duration", _) => {
                add(self.phase_duration.get(labels))?;
                for e in exemplars {
                    self.phase_duration.add_exemplar(labels, e);
                }
            }
            ("iteration_duration", []) => add(self.iteration_duration.clone())?,
            _ => return None,
        }
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Format;

    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

    fn openmetrics(r: &Registry) -> String {
        let mut out = Vec::new();
        r.render(&mut out, Format::OpenMetrics);
        String::from_utf8(out).unwrap()
    }

    /// A registry whose run metrics counted runs in and out of traces.
    fn recorded() -> (Registry, RunMetrics) {
        let r = Registry::new();
        let m = RunMetrics::register(&r).unwrap();
        let traced = format!("00-{TRACE}-00f067aa0ba902b7-01");
        let runs = [
            ("r-1", Some(traced.as_str()), "completed", 3.0, 100.0),
            ("r-2", None, "completed", 2.0, 101.0),
            ("r-3", Some(traced.as_str()), "failed", 700.0, 102.0),
            ("r-4", None, "abandoned", 4000.0, 103.0),
        ];
        for (id, traceparent, outcome, seconds, at) in runs {
            let run = RunRef::new(id, traceparent);
            m.phase_completed(run, "design", seconds / 10.0, at - 1.0);
            m.finished(run, outcome, seconds, at);
        }
        (r, m)
    }

    #[test]
    fn a_finished_run_is_the_exemplar_of_what_it_was_counted_in() {
        let (r, _) = recorded();
        let om = openmetrics(&r);
        let ex = |labels: &str, value: &str, at: &str| format!(" # {{{labels}}} {value} {at}\n");
        let traced = |id: &str| format!("trace_id=\"{TRACE}\",run_id=\"{id}\"");
        for want in [
            format!(
                "agent_cycles_total{{outcome=\"completed\"}} 2.0{}",
                ex("run_id=\"r-2\"", "1.0", "101")
            ),
            format!(
                "agent_cycles_total{{outcome=\"failed\"}} 1.0{}",
                ex(&traced("r-3"), "1.0", "102")
            ),
            // r-2 (2 s) is later than r-1 (3 s) in the same bucket.
            format!(
                "agent_cycle_duration_seconds_bucket{{le=\"5\"}} 2{}",
                ex("run_id=\"r-2\"", "2.0", "101")
            ),
            format!(
                "agentgate_run_duration_seconds_bucket{{le=\"900\"}} 3{}",
                ex(&traced("r-3"), "700.0", "102")
            ),
            format!(
                "conductor_run_duration_seconds_bucket{{outcome=\"completed\",le=\"5\"}} 2{}",
                ex("run_id=\"r-2\"", "2.0", "101")
            ),
            format!(
                "agent_phase_duration_seconds_bucket{{phase=\"design\",le=\"600\"}} 4{}",
                ex("run_id=\"r-4\"", "400.0", "102")
            ),
            format!(
                "agentgate_phase_duration_seconds_bucket{{phase=\"design\",le=\"120\"}} 3{}",
                ex(&traced("r-3"), "70.0", "101")
            ),
        ] {
            assert!(om.contains(&want), "{want}");
        }
        // Counters of other names, and the iteration histogram, have none.
        assert!(om.contains("\nagent_cycles_total{outcome=\"cancelled\"} 0.0\n"));
        assert!(om.contains("\nconductor_completed_runs_total 2.0\n"));
        assert!(om.contains("\nagentgate_runs_completed_total{result=\"failed\"} 2.0\n"));
    }

    #[test]
    fn the_unlabelled_cycle_histogram_shows_from_the_first_scrape() {
        let r = Registry::new();
        RunMetrics::register(&r).unwrap();
        let om = openmetrics(&r);
        for name in [
            "agent_cycle_duration_seconds",
            "agentgate_run_duration_seconds",
        ] {
            assert!(
                om.contains(&format!("\n{name}_bucket{{le=\"1\"}} 0\n")),
                "{name}"
            );
            assert!(om.contains(&format!("\n{name}_count 0\n")), "{name}");
        }
    }

    #[test]
    fn a_trace_id_needs_a_valid_traceparent_and_a_long_run_id_is_left_out() {
        let label = |run: RunRef| run.exemplar_labels(|l| Exemplar::new(l, 1.0, 0.0).unwrap());
        let long = "r".repeat(100);
        let traced = format!("00-{TRACE}-00f067aa0ba902b7-01");
        let e = label(RunRef::new(&long, Some(&traced)));
        assert_eq!(e.labels(), [("trace_id".to_string(), TRACE.to_string())]);
        let e = label(RunRef::new(
            &long,
            Some("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
        ));
        assert_eq!(e.labels(), [("run_id".to_string(), long.clone())]);
        let e = label(RunRef::new("r-1", Some(&format!(" {traced}"))));
        assert_eq!(e.labels()[0], ("trace_id".to_string(), TRACE.to_string()));
    }

    /// The snapshot lines of `m`'s values.
    fn lines(m: &RunMetrics) -> Vec<Value> {
        m.values().into_series().collect()
    }

    #[test]
    fn exemplars_survive_a_snapshot_and_old_snapshots_still_load() {
        let (r, m) = recorded();
        let taken = openmetrics(&r);
        let lines = lines(&m);
        let with_exemplars = lines.iter().filter(|l| !l[3].is_null()).count();
        // cycles: 3 outcomes; cycle_duration: 3 outcomes; phase_duration: 1.
        assert_eq!(with_exemplars, 7);
        let again = Registry::new();
        let restored = RunMetrics::register(&again).unwrap();
        for line in &lines {
            restored.restore(line).unwrap();
        }
        assert_eq!(openmetrics(&again), taken);
        // Observed again after the restart, as a replay of the journal
        // does: the later exemplar wins in each, as it did before it.
        for metrics in [&m, &restored] {
            metrics.finished(RunRef::new("r-5", None), "completed", 2.5, 200.0);
            metrics.finished(RunRef::new("r-0", None), "completed", 2.5, 50.0);
        }
        assert_eq!(openmetrics(&again), openmetrics(&r));
        // A snapshot written before exemplars has three members a line.
        let old = Registry::new();
        let from_old = RunMetrics::register(&old).unwrap();
        for line in &lines {
            let mut line = line.clone();
            line.as_array_mut().unwrap().truncate(3);
            from_old.restore(&line).unwrap();
        }
        let stripped: String = taken
            .lines()
            .map(|l| l.split(" # {").next().unwrap_or(l).to_string() + "\n")
            .collect();
        assert_eq!(openmetrics(&old), stripped);
    }

    #[test]
    fn a_malformed_exemplar_is_not_a_metric_series() {
        let m = RunMetrics::register(&Registry::new()).unwrap();
        let labels = json!([["run_id", "r-1"]]);
        for bad in [
            json!(["cycles", ["completed"], [1, 0.0], [labels, "one", 5.0]]),
            json!(["cycles", ["completed"], [1, 0.0], [[["1x", "r"]], 1.0, 5.0]]),
            json!(["phase_duration", ["p"], [[0, 1], 2.0], {"not": "a list"}]),
            json!(["phase_duration", ["p"], [[0, 1], 2.0], [[labels, 2.0]]]),
        ] {
            assert_eq!(m.restore(&bad), None, "{bad}");
        }
        let good = json!([
            "phase_duration",
            ["p"],
            [[0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1], 2.0],
            [null, null, null, null, [labels, 2.0, 5.0]]
        ]);
        assert_eq!(m.restore(&good), Some(()));
    }
}
