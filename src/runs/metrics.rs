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
/// The names are the research agent's (`agent_*`), which its dashboard and
/// verification script query; only `conductor_active_runs` keeps
/// conductor-loop's namespace, as that server's own metric.
#[derive(Clone)]
pub struct RunMetrics {
    /// `conductor_active_runs`.
    pub active: Gauge,
    /// `agent_runs_started_total`.
    pub started: Counter,
    /// `agent_cycles_total{outcome}`: completed, failed, cancelled or abandoned.
    pub cycles: CounterFamily,
    /// `agent_cycle_duration_seconds{outcome}`.
    pub cycle_duration: HistogramFamily,
    /// `agent_iterations_total`.
    pub iterations: Counter,
    /// `agent_iteration_duration_seconds`.
    pub iteration_duration: Histogram,
    /// `agent_phase_duration_seconds{phase}`.
    pub phase_duration: HistogramFamily,
    /// `agent_phases_total{phase,result}`.
    pub phases: CounterFamily,
    /// `agent_gate_results_total{gate,result}`.
    pub gates: CounterFamily,
    /// `agent_tokens_total{phase,type}`.
    pub tokens: CounterFamily,
    /// `agent_deliveries_total{result}`.
    pub deliveries: CounterFamily,
}

/// The outcomes a finished run is counted under, each visible at 0 from the
/// first scrape so that `rate()` sees the first increment.
pub const OUTCOMES: [&str; 4] = ["completed", "failed", "cancelled", "abandoned"];

impl RunMetrics {
    /// Registers the run metric set in `r`.
    pub fn register(r: &Registry) -> Result<RunMetrics, Error> {
        let m = RunMetrics {
            active: r.gauge(
                "conductor_active_runs",
                "Runs currently running (conductor-loop's conductor_active_runs_total, renamed because only counters may end in _total).",
            )?,
            started: r.counter("agent_runs_started_total", "Agent cycles (runs) started.")?,
            cycles: r.counter_family(
                "agent_cycles_total",
                "Agent cycles (runs) finished, by outcome: completed, failed, cancelled or abandoned (no event within the run timeout).",
                &["outcome"],
            )?,
            cycle_duration: r.histogram_family(
                "agent_cycle_duration_seconds",
                "Agent cycle (run) duration from start to finish, by outcome.",
                &["outcome"],
                &RUN_BUCKETS,
            )?,
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
            tokens: r.counter_family(
                "agent_tokens_total",
                "Tokens used, by phase and type (input or output).",
                &["phase", "type"],
            )?,
            deliveries: r.counter_family(
                "agent_deliveries_total",
                "Deliveries completed, by result (success or failure).",
                &["result"],
            )?,
        };
        for outcome in OUTCOMES {
            m.cycles.inc_by(&[outcome], 0);
        }
        for result in ["success", "failure"] {
            m.deliveries.inc_by(&[result], 0);
        }
        Ok(m)
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
        let counter_families = [&m.cycles, &m.phases, &m.gates, &m.tokens, &m.deliveries];
        let counters = [cycles, phases, gates, tokens, deliveries]
            .into_iter()
            .zip(COUNTER_FAMILIES.into_iter().zip(counter_families))
            .flat_map(|(values, (name, f))| {
                values.into_iter().filter_map(move |(i, v)| {
                    Some(json!([name, f.label_values(i)?, counter_to_json(&v)]))
                })
            });
        let histogram_families = [&m.cycle_duration, &m.phase_duration];
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

fn counter_from_json(c: &Counter, v: &Value) -> Option<()> {
    c.add_parts(v[0].as_u64()?, v[1].as_f64()?);
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
                counter_values(&self.tokens),
                counter_values(&self.deliveries),
            ],
            histograms: [
                histogram_values(&self.cycle_duration),
                histogram_values(&self.phase_duration),
            ],
        }
    }

    /// Adds one series of [`Values::into_series`] to these metrics, which
    /// are new but for the series added before it. `None` when `v` is not
    /// one.
    pub fn restore(&self, v: &Value) -> Option<()> {
        let labels: Vec<&str> = v[1]
            .as_array()?
            .iter()
            .map(Value::as_str)
            .collect::<Option<_>>()?;
        let value = &v[2];
        let name = v[0].as_str()?;
        let counters = [
            &self.cycles,
            &self.phases,
            &self.gates,
            &self.tokens,
            &self.deliveries,
        ];
        if let Some(i) = COUNTER_FAMILIES.iter().position(|n| *n == name) {
            return counter_from_json(&counters[i].get(&labels), value);
        }
        if let Some(i) = HISTOGRAM_FAMILIES.iter().position(|n| *n == name) {
            let f = [&self.cycle_duration, &self.phase_duration][i];
            return histogram_from_json(&f.get(&labels), value);
        }
        match name {
            "started" => counter_from_json(&self.started, value),
            "iterations" => counter_from_json(&self.iterations, value),
            "iteration_duration" => histogram_from_json(&self.iteration_duration, value),
            _ => None,
        }
    }
}
