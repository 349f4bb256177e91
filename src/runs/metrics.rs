//! The run metric set, registered in one place.

use serde_json::{json, Value};

use crate::metrics::{Counter, CounterFamily, Error, Gauge, Histogram, HistogramFamily, Registry};

/// Buckets for run and iteration durations, in seconds.
pub const RUN_BUCKETS: [f64; 12] = [
    1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1200.0, 1800.0, 3600.0,
];
/// Buckets for phase durations, in seconds.
pub const PHASE_BUCKETS: [f64; 10] = [0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0];

/// Handles to every run metric. Cheap to clone; safe to share across threads.
///
/// Each source system's names are served as it wrote them, and a fact two
/// systems name is served under both (docs/api-reference.md, "Source
/// names"): the research agent's `agent_*`, conductor-loop's `conductor_*`
/// and AgentGate's `agentgate_*`. Where both name one series, the second
/// name is a registry alias of the first, so it costs nothing; where the
/// label sets differ, the source's family is kept beside ours and fed by the
/// same call ([`RunMetrics::finished`], [`RunMetrics::tokens`]). Our own
/// breakdowns (by outcome, by token type) have names of our own.
#[derive(Clone)]
pub struct RunMetrics {
    /// `conductor_active_runs`, also served as conductor-loop's
    /// `conductor_active_runs_total` and AgentGate's `agentgate_active_runs`.
    pub active: Gauge,
    /// `agent_runs_started_total`, also `agentgate_runs_started_total`.
    pub started: Counter,
    /// `agent_iterations_total`, also `agentgate_iterations_total`.
    pub iterations: Counter,
    /// `agent_iteration_duration_seconds`, also
    /// `agentgate_iteration_duration_seconds`.
    pub iteration_duration: Histogram,
    /// `agent_phase_duration_seconds{phase}`, also
    /// `agentgate_phase_duration_seconds{phase}`.
    pub phase_duration: HistogramFamily,
    /// `agent_phases_total{phase,result}`.
    pub phases: CounterFamily,
    /// `agent_gate_results_total{gate,result}`.
    pub gates: CounterFamily,
    /// `agent_deliveries_total{result}`.
    pub deliveries: CounterFamily,
    /// `agent_cycles_total{outcome}`: completed, failed, cancelled or abandoned.
    cycles: CounterFamily,
    /// `conductor_completed_runs_total`: outcome completed.
    completed: Counter,
    /// `conductor_failed_runs_total`: outcomes failed and abandoned.
    failed: Counter,
    /// `agentgate_runs_completed_total{result}`: succeeded, failed or canceled.
    agentgate_results: CounterFamily,
    /// `agent_cycle_duration_seconds`, unlabelled, also
    /// `agentgate_run_duration_seconds`.
    cycle_duration: Histogram,
    /// `conductor_run_duration_seconds{outcome}`, our breakdown of it.
    duration_by_outcome: HistogramFamily,
    /// `agent_tokens_total{phase}`: input and output together.
    tokens: CounterFamily,
    /// `conductor_tokens_total{phase,type}`, our breakdown of it.
    tokens_by_type: CounterFamily,
}

/// The outcomes a finished run is counted under, each visible at 0 from the
/// first scrape so that `rate()` sees the first increment.
pub const OUTCOMES: [&str; 4] = ["completed", "failed", "cancelled", "abandoned"];

/// AgentGate's `result` for one of our outcomes: an abandoned run (no event
/// within the run timeout) is a failed one to AgentGate.
fn agentgate_result(outcome: &str) -> &'static str {
    match outcome {
        "completed" => "succeeded",
        "cancelled" => "canceled",
        _ => "failed",
    }
}

/// Second names for a family that another system names too: (name, help,
/// the family served).
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
    /// Registers the run metric set in `r`.
    pub fn register(r: &Registry) -> Result<RunMetrics, Error> {
        let m = RunMetrics {
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
            cycle_duration: r.histogram(
                "agent_cycle_duration_seconds",
                "Agent cycle (run) duration from start to finish.",
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
        };
        for (name, help, of) in ALIASES {
            r.alias(name, help, of)?;
        }
        for outcome in OUTCOMES {
            m.cycles.inc_by(&[outcome], 0);
            m.agentgate_results.inc_by(&[agentgate_result(outcome)], 0);
        }
        for result in ["success", "failure"] {
            m.deliveries.inc_by(&[result], 0);
        }
        Ok(m)
    }

    /// Counts a run that finished with `outcome` (one of [`OUTCOMES`])
    /// after `seconds`, under every name that counts it.
    pub fn finished(&self, outcome: &str, seconds: f64) {
        self.cycles.inc(&[outcome]);
        self.count_outcome(outcome, |c| c.inc());
        self.cycle_duration.observe(seconds);
        self.duration_by_outcome.observe(&[outcome], seconds);
    }

    /// Counts the tokens of one tokens event of `phase`.
    pub fn tokens(&self, phase: &str, input: u64, output: u64) {
        self.tokens.inc_by(&[phase], input.saturating_add(output));
        self.tokens_by_type.inc_by(&[phase, "input"], input);
        self.tokens_by_type.inc_by(&[phase, "output"], output);
    }

    /// Applies `f` to the source-named counters of `outcome` that
    /// `agent_cycles_total{outcome}` does not serve itself.
    fn count_outcome(&self, outcome: &str, f: impl Fn(&Counter)) {
        match outcome {
            "completed" => f(&self.completed),
            "failed" | "abandoned" => f(&self.failed),
            _ => {}
        }
        f(&self.agentgate_results.get(&[agentgate_result(outcome)]));
    }
}

/// A histogram's cumulative counts and sum.
type HistogramValue = (Vec<u64>, f64);

/// The run metrics' values at one moment, as numbers: taken quickly, and
/// spelled out later and elsewhere, label values and all, by
/// [`Values::into_series`]. Plain data; safe to send across threads.
pub struct Values {
    started: (u64, f64),
    iterations: (u64, f64),
    iteration_duration: HistogramValue,
    /// By series number: cycles, phases, gates, tokens, deliveries.
    counters: [Vec<(u32, (u64, f64))>; 5],
    /// By series number: cycle_duration, phase_duration.
    histograms: [Vec<(u32, HistogramValue)>; 2],
}

/// The snapshot names of the counter families in [`Values::counters`]
/// and of the histogram families in [`Values::histograms`], in order.
const COUNTER_FAMILIES: [&str; 5] = ["cycles", "phases", "gates", "tokens", "deliveries"];
const HISTOGRAM_FAMILIES: [&str; 2] = ["cycle_duration", "phase_duration"];

fn histogram_value(h: &Histogram) -> HistogramValue {
    let mut counts = Vec::new();
    let (sum, _) = h.snapshot(&mut counts);
    (counts, sum)
}

fn counter_values(f: &CounterFamily) -> Vec<(u32, (u64, f64))> {
    let mut values = Vec::new();
    f.each(|i, c| values.push((i, c.parts())));
    values
}

fn histogram_values(f: &HistogramFamily) -> Vec<(u32, HistogramValue)> {
    let mut values = Vec::new();
    f.each(|i, h| values.push((i, histogram_value(h))));
    values
}

fn counter_to_json(&(int, fraction): &(u64, f64)) -> Value {
    json!([int, fraction])
}

fn histogram_to_json((counts, sum): &HistogramValue) -> Value {
    json!([counts, sum])
}

impl Values {
    /// The values as a snapshot holds them, a series each, `[name, [label
    /// values], value]`, in the order that remakes each family; read back
    /// by [`RunMetrics::restore`]. `m` spells out the label values. One
    /// small line a series keeps the writer's memory small however many
    /// series there are.
    pub fn into_series(self, m: &RunMetrics) -> impl Iterator<Item = Value> + '_ {
        let [cycles, phases, gates, tokens, deliveries] = self.counters;
        let [cycle_duration, phase_duration] = self.histograms;
        let counter_families = [
            &m.cycles,
            &m.phases,
            &m.gates,
            &m.tokens_by_type,
            &m.deliveries,
        ];
        let counters = [cycles, phases, gates, tokens, deliveries]
            .into_iter()
            .zip(COUNTER_FAMILIES.into_iter().zip(counter_families))
            .flat_map(|(values, (name, f))| {
                values.into_iter().filter_map(move |(i, v)| {
                    Some(json!([name, f.label_values(i)?, counter_to_json(&v)]))
                })
            });
        let histogram_families = [&m.duration_by_outcome, &m.phase_duration];
        let histograms = [cycle_duration, phase_duration]
            .into_iter()
            .zip(HISTOGRAM_FAMILIES.into_iter().zip(histogram_families))
            .flat_map(|(values, (name, f))| {
                values.into_iter().filter_map(move |(i, v)| {
                    Some(json!([name, f.label_values(i)?, histogram_to_json(&v)]))
                })
            });
        let single = [
            json!(["started", [], counter_to_json(&self.started)]),
            json!(["iterations", [], counter_to_json(&self.iterations)]),
            json!([
                "iteration_duration",
                [],
                histogram_to_json(&self.iteration_duration)
            ]),
        ];
        single.into_iter().chain(counters).chain(histograms)
    }
}

fn counter_parts(v: &Value) -> Option<(u64, f64)> {
    Some((v[0].as_u64()?, v[1].as_f64()?))
}

fn counter_from_json(c: &Counter, v: &Value) -> Option<()> {
    let (int, fraction) = counter_parts(v)?;
    c.add_parts(int, fraction);
    Some(())
}

fn histogram_from_json(h: &Histogram, v: &Value) -> Option<()> {
    let counts: Vec<u64> = v[0]
        .as_array()?
        .iter()
        .map(Value::as_u64)
        .collect::<Option<_>>()?;
    h.add_counts(&counts, v[1].as_f64()?).then_some(())
}

impl RunMetrics {
    /// The run metrics' values now, for a snapshot of the run store: every
    /// counter and histogram, by series. `conductor_active_runs` is left
    /// out: it follows the running runs.
    pub fn values(&self) -> Values {
        Values {
            started: self.started.parts(),
            iterations: self.iterations.parts(),
            iteration_duration: histogram_value(&self.iteration_duration),
            counters: [
                counter_values(&self.cycles),
                counter_values(&self.phases),
                counter_values(&self.gates),
                counter_values(&self.tokens_by_type),
                counter_values(&self.deliveries),
            ],
            histograms: [
                histogram_values(&self.duration_by_outcome),
                histogram_values(&self.phase_duration),
            ],
        }
    }

    /// Adds one series of [`Values::into_series`] to these metrics, which
    /// are new but for the series added before it. `None` when `v` is not
    /// one.
    ///
    /// A snapshot holds the breakdowns (by outcome, by token type), and the
    /// families that sum them are rebuilt from those here, so that every
    /// name of a fact restarts from one value.
    pub fn restore(&self, v: &Value) -> Option<()> {
        let labels: Vec<&str> = v[1]
            .as_array()?
            .iter()
            .map(Value::as_str)
            .collect::<Option<_>>()?;
        let value = &v[2];
        match (v[0].as_str()?, labels.as_slice()) {
            ("cycles", [outcome]) => {
                let (int, fraction) = counter_parts(value)?;
                self.cycles.get(&labels).add_parts(int, fraction);
                self.count_outcome(outcome, |c| c.add_parts(int, fraction));
                Some(())
            }
            ("tokens", [phase, _]) => {
                let (int, fraction) = counter_parts(value)?;
                self.tokens_by_type.get(&labels).add_parts(int, fraction);
                self.tokens.get(&[phase]).add_parts(int, fraction);
                Some(())
            }
            ("cycle_duration", [_]) => {
                histogram_from_json(&self.duration_by_outcome.get(&labels), value)?;
                histogram_from_json(&self.cycle_duration, value)
            }
            ("phases", _) => counter_from_json(&self.phases.get(&labels), value),
            ("gates", _) => counter_from_json(&self.gates.get(&labels), value),
            ("deliveries", _) => counter_from_json(&self.deliveries.get(&labels), value),
            ("phase_duration", _) => histogram_from_json(&self.phase_duration.get(&labels), value),
            ("started", []) => counter_from_json(&self.started, value),
            ("iterations", []) => counter_from_json(&self.iterations, value),
            ("iteration_duration", []) => histogram_from_json(&self.iteration_duration, value),
            _ => None,
        }
    }
}
