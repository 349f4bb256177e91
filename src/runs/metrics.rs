//! The run metric set, registered in one place.

use crate::metrics::{Counter, CounterFamily, Error, Gauge, Histogram, HistogramFamily, Registry};

/// Buckets for run and iteration durations, in seconds.
pub const RUN_BUCKETS: [f64; 12] = [
    1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1200.0, 1800.0, 3600.0,
];
/// Buckets for phase durations, in seconds.
pub const PHASE_BUCKETS: [f64; 10] = [0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0];

/// Handles to every run metric. Cheap to clone; safe to share across threads.
#[derive(Clone)]
pub struct RunMetrics {
    /// `conductor_active_runs`.
    pub active: Gauge,
    /// `conductor_runs_started_total`.
    pub started: Counter,
    /// `conductor_completed_runs_total`.
    pub completed: Counter,
    /// `conductor_failed_runs_total`.
    pub failed: Counter,
    /// `conductor_cancelled_runs_total`.
    pub cancelled: Counter,
    /// `conductor_run_duration_seconds{outcome}`.
    pub run_duration: HistogramFamily,
    /// `conductor_iterations_total`.
    pub iterations: Counter,
    /// `conductor_iteration_duration_seconds`.
    pub iteration_duration: Histogram,
    /// `conductor_phase_duration_seconds{phase}`.
    pub phase_duration: HistogramFamily,
    /// `conductor_phases_total{phase,result}`.
    pub phases: CounterFamily,
    /// `conductor_gate_results_total{gate,result}`.
    pub gates: CounterFamily,
    /// `conductor_tokens_total{phase,type}`.
    pub tokens: CounterFamily,
    /// `conductor_deliveries_total{result}`.
    pub deliveries: CounterFamily,
}

impl RunMetrics {
    /// Registers the run metric set in `r`.
    pub fn register(r: &Registry) -> Result<RunMetrics, Error> {
        Ok(RunMetrics {
            active: r.gauge(
                "conductor_active_runs",
                "Runs currently running (conductor-loop's conductor_active_runs_total, renamed because only counters may end in _total).",
            )?,
            started: r.counter("conductor_runs_started_total", "Runs started.")?,
            completed: r.counter("conductor_completed_runs_total", "Runs completed successfully.")?,
            failed: r.counter("conductor_failed_runs_total", "Runs that failed.")?,
            cancelled: r.counter("conductor_cancelled_runs_total", "Runs cancelled before finishing.")?,
            run_duration: r.histogram_family(
                "conductor_run_duration_seconds",
                "Run duration from start to finish, by outcome.",
                &["outcome"],
                &RUN_BUCKETS,
            )?,
            iterations: r.counter("conductor_iterations_total", "Iterations started.")?,
            iteration_duration: r.histogram(
                "conductor_iteration_duration_seconds",
                "Iteration duration from iteration_started to iteration_completed.",
                &RUN_BUCKETS,
            )?,
            phase_duration: r.histogram_family(
                "conductor_phase_duration_seconds",
                "Phase duration, reported or measured from phase_started.",
                &["phase"],
                &PHASE_BUCKETS,
            )?,
            phases: r.counter_family(
                "conductor_phases_total",
                "Phases completed, by phase and result (success or failure).",
                &["phase", "result"],
            )?,
            gates: r.counter_family(
                "conductor_gate_results_total",
                "Quality gate checks, by gate and result (pass or fail).",
                &["gate", "result"],
            )?,
            tokens: r.counter_family(
                "conductor_tokens_total",
                "Tokens used, by phase and type (input or output).",
                &["phase", "type"],
            )?,
            deliveries: r.counter_family(
                "conductor_deliveries_total",
                "Deliveries completed, by result (success or failure).",
                &["result"],
            )?,
        })
    }
}
