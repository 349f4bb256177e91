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

/// A counter's value as a snapshot holds it: its two parts (see
/// [`Counter::parts`]).
fn counter_to_json(c: &Counter) -> Value {
    let (int, fraction) = c.parts();
    json!([int, fraction])
}

fn counter_from_json(c: &Counter, v: &Value) -> Option<()> {
    c.add_parts(v[0].as_u64()?, v[1].as_f64()?);
    Some(())
}

/// A histogram as a snapshot holds it: its cumulative counts and sum.
fn histogram_to_json(h: &Histogram) -> Value {
    let mut counts = Vec::new();
    let (sum, _) = h.snapshot(&mut counts);
    json!([counts, sum])
}

fn histogram_from_json(h: &Histogram, v: &Value) -> Option<()> {
    let counts: Vec<u64> = v[0]
        .as_array()?
        .iter()
        .map(Value::as_u64)
        .collect::<Option<_>>()?;
    h.add_counts(&counts, v[1].as_f64()?).then_some(())
}

/// A family as a snapshot holds it: `[[label values], value]` pairs, in
/// the order that remakes it.
fn family_to_json<M>(
    each: impl FnOnce(&mut dyn FnMut(&[String], &M)),
    f: fn(&M) -> Value,
) -> Value {
    let mut series = Vec::new();
    each(&mut |values, m| series.push(json!([values, f(m)])));
    Value::Array(series)
}

fn family_from_json(v: &Value, mut add: impl FnMut(&[&str], &Value) -> Option<()>) -> Option<()> {
    for s in v.as_array()? {
        let values: Vec<&str> = s[0]
            .as_array()?
            .iter()
            .map(Value::as_str)
            .collect::<Option<_>>()?;
        add(&values, &s[1])?;
    }
    Some(())
}

impl RunMetrics {
    /// The run metrics' values, for a snapshot of the run store: every
    /// counter and histogram, by label. `conductor_active_runs` is left
    /// out: it follows the running runs.
    pub fn dump(&self) -> Value {
        let counters = |f: &CounterFamily| family_to_json(|e| f.each(e), counter_to_json);
        let histograms = |f: &HistogramFamily| family_to_json(|e| f.each(e), histogram_to_json);
        json!({
            "started": counter_to_json(&self.started),
            "cycles": counters(&self.cycles),
            "cycle_duration": histograms(&self.cycle_duration),
            "iterations": counter_to_json(&self.iterations),
            "iteration_duration": histogram_to_json(&self.iteration_duration),
            "phase_duration": histograms(&self.phase_duration),
            "phases": counters(&self.phases),
            "gates": counters(&self.gates),
            "tokens": counters(&self.tokens),
            "deliveries": counters(&self.deliveries),
        })
    }

    /// Adds the values of a [`RunMetrics::dump`] to these metrics, which
    /// are new. `None` when `v` is not a dump; what was added by then stays.
    pub fn restore(&self, v: &Value) -> Option<()> {
        let counters = |f: &CounterFamily, v: &Value| {
            family_from_json(v, |values, c| counter_from_json(&f.get(values), c))
        };
        let histograms = |f: &HistogramFamily, v: &Value| {
            family_from_json(v, |values, h| histogram_from_json(&f.get(values), h))
        };
        counter_from_json(&self.started, &v["started"])?;
        counters(&self.cycles, &v["cycles"])?;
        histograms(&self.cycle_duration, &v["cycle_duration"])?;
        counter_from_json(&self.iterations, &v["iterations"])?;
        histogram_from_json(&self.iteration_duration, &v["iteration_duration"])?;
        histograms(&self.phase_duration, &v["phase_duration"])?;
        counters(&self.phases, &v["phases"])?;
        counters(&self.gates, &v["gates"])?;
        counters(&self.tokens, &v["tokens"])?;
        counters(&self.deliveries, &v["deliveries"])
    }
}
