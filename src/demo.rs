//! `demo`: a seeded, synthetic orchestrator workload for a running server.
//! Runs are planned in full on a simulated clock whose timeline ends as they
//! are sent: minutes long without sleeping, one summary per seed. Only each
//! work order's triage is spent directly (the server prices token events).
//! Other figures go only to the families of `docs/examples/orchestrator-
//! metrics.json` the server declares (asked once), so none is refused.

use std::collections::HashMap;
use std::fmt;
use std::io::Write;

use serde_json::{json, Value};

use crate::client::{self, Received};
use crate::config::Client;
use crate::declared::{spec, update, Declaration};
use crate::otlp::id::{splitmix64, GAMMA};
use crate::time;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Summary {
    runs: u64,
    completed: u64,
    failed: u64,
    cancelled: u64,
    refused: u64,
    events: u64,
    messages: u64,
    spends: u64,
    metric_updates: u64,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "demo: {} runs, {} completed, {} failed, {} cancelled, {} events, {} messages",
            self.runs, self.completed, self.failed, self.cancelled, self.events, self.messages
        )?;
        let extras = [
            (self.refused, "refused (budget exhausted)"),
            (self.spends, "budget spends"),
            (self.metric_updates, "metric updates"),
        ];
        for (n, what) in extras.into_iter().filter(|&(n, _)| n > 0) {
            write!(f, ", {n} {what}")?;
        }
        Ok(())
    }
}

/// Prints a line per run and the summary; 1 when the server failed the demo.
pub fn command(options: &Client) -> u8 {
    match run(options, &mut std::io::stdout().lock()) {
        Ok(_) => 0,
        Err(e) => {
            eprintln!("demo: {e}");
            1
        }
    }
}

/// Sends the planned runs. A start refused with 429 is counted, not fatal;
/// the triage spends stop, with one line saying why, at the first refusal.
fn run(options: &Client, out: &mut dyn Write) -> Result<Summary, String> {
    let answer = call(&options.url, "GET", "/api/v1/metrics", None, 200)?;
    let families = spec::parse_value(&answer["families"]).map_err(|e| {
        format!(
            "GET /api/v1/metrics: the server answered 200: the families listed cannot be read: {e}"
        )
    })?;
    let mut sender = Sender {
        url: &options.url,
        summary: Summary::default(),
        spending: true,
        declared: Declared::new(families),
        total: options.runs,
    };
    // Named per invocation, so a seed can be replayed against the same data dir.
    let loop_run = format!(
        "demo-s{}-{:x}{:x}",
        options.seed,
        (time::now_unix() * 1000.0) as u64,
        std::process::id()
    );
    let mut rng = Rng(options.seed);
    for index in 1..=options.runs {
        let plan = plan_run(&mut rng, index, &loop_run);
        let line = sender.send(&format!("{loop_run}-{index:04}"), &plan)?;
        // The report is secondary: a closed stdout must not stop the workload.
        let _ = writeln!(out, "{line}");
    }
    let _ = writeln!(out, "{}", sender.summary);
    Ok(sender.summary)
}

/// The families the server declares, and their index, as it checks updates.
struct Declared(Vec<Declaration>, HashMap<String, usize>);

impl Declared {
    fn new(families: Vec<Declaration>) -> Declared {
        let index = families.iter().enumerate();
        let index = index.map(|(i, d)| (d.name.clone(), i)).collect();
        Declared(families, index)
    }

    /// Whether the server takes `update`, by the server's own check.
    fn takes(&self, update: &Value) -> bool {
        update::parse_batch(update, &self.0, &self.1).is_ok()
    }
}

/// Sends `method path`; the answer's JSON when its status is `want`, else an error.
fn call(
    url: &str,
    method: &str,
    path: &str,
    body: Option<&Value>,
    want: u16,
) -> Result<Value, String> {
    let answer = client::request(method, url, path, body)?;
    match answer.status == want {
        true => Ok(answer.json()),
        false => Err(rejected(&format!("{method} {path}"), &answer)),
    }
}

fn rejected(what: &str, answer: &Received) -> String {
    let json = answer.json();
    let message = json["error"]["message"]
        .as_str()
        .unwrap_or("no error message");
    format!("{what}: the server answered {}: {message}", answer.status)
}

struct Sender<'a> {
    url: &'a str,
    summary: Summary,
    /// False once a spend was refused: spends are an extra.
    spending: bool,
    declared: Declared,
    total: u64,
}

impl Sender<'_> {
    /// Sends a planned run and returns its report line.
    fn send(&mut self, run_id: &str, plan: &RunPlan) -> Result<String, String> {
        self.summary.runs += 1;
        let text = |key: &str| plan.start[key].as_str().unwrap_or_default();
        let (order, strategy) = (text("work_order_id"), text("strategy"));
        let head = format!("{run_id}  {order}  {strategy:<14}");
        let mut start = plan.start.clone();
        start["run_id"] = json!(run_id);
        let answer = client::request("POST", self.url, "/api/v1/runs", Some(&start))?;
        match answer.status {
            201 => {}
            429 => {
                self.summary.refused += 1;
                return Ok(format!("{head}  refused: budget exhausted (429)"));
            }
            _ => return Err(rejected("POST /api/v1/runs", &answer)),
        }
        self.triage(run_id, plan)?;
        // The simulated timeline ends now, so every timestamp lies in the past.
        let base = time::now_unix() - plan.duration;
        for step in &plan.steps {
            let mut step = step.clone();
            if let Value::Array(events) = &mut step {
                for event in events {
                    let at = base + event["timestamp"].as_f64().unwrap_or(0.0);
                    // Whole milliseconds keep the JSON short and the durations exact.
                    event["timestamp"] = json!((at * 1000.0).round() / 1000.0);
                }
                let path = format!("/api/v1/runs/{run_id}/events");
                let answer = call(self.url, "POST", &path, Some(&step), 200)?;
                self.summary.events += answer["accepted"].as_u64().unwrap_or(0);
            } else {
                step["run_id"] = json!(run_id);
                call(self.url, "POST", "/api/v1/messages", Some(&step), 201)?;
                self.summary.messages += 1;
            }
        }
        let s = &mut self.summary;
        let (action, body, count, shown) = match &plan.outcome {
            PlannedEnd::Complete => ("complete", json!({}), &mut s.completed, "completed".into()),
            PlannedEnd::Fail(e) => (
                "fail",
                json!({"error": e}),
                &mut s.failed,
                format!("failed: {e}"),
            ),
            PlannedEnd::Cancel => ("cancel", json!({}), &mut s.cancelled, "cancelled".into()),
        };
        let path = format!("/api/v1/runs/{run_id}/{action}");
        let ended = call(self.url, "POST", &path, Some(&body), 200)?;
        *count += 1;
        let cost = ended["cost"].as_f64().map(|c| format!("  ${c:.2}"));
        // The run's updates and the work orders by state, as far as the server takes them.
        let mut updates = plan.updates.clone();
        updates.extend(work_order_states(&self.summary, self.total));
        updates.retain(|u| self.declared.takes(u));
        for batch in updates.chunks(update::MAX_BATCH) {
            let body = Value::Array(batch.to_vec());
            let answer = call(self.url, "POST", "/api/v1/metrics", Some(&body), 200)?;
            self.summary.metric_updates += answer["accepted"].as_u64().unwrap_or(0);
        }
        let iterations = match plan.iterations {
            1 => "1 iteration ".to_string(),
            n => format!("{n} iterations"),
        };
        let (minutes, cost) = (plan.duration / 60.0, cost.unwrap_or_default());
        let pr = plan.pr_url.as_deref().unwrap_or("");
        let line = format!("{head}  {iterations}  {minutes:5.1} min{cost}  {shown}  {pr}");
        Ok(line.trim_end().to_string())
    }

    /// Posts the work order's triage as a direct budget spend.
    fn triage(&mut self, run_id: &str, plan: &RunPlan) -> Result<(), String> {
        if !self.spending {
            return Ok(());
        }
        let (input, output) = plan.triage_tokens;
        let body = json!({
            "run_id": run_id, "phase": "triage", "model": "claude-haiku",
            "input_tokens": input, "output_tokens": output,
        });
        const PATH: &str = "/api/v1/budget/spend";
        let answer = client::request("POST", self.url, PATH, Some(&body))?;
        if (200..300).contains(&answer.status) {
            self.summary.spends += 1;
        } else {
            let why = rejected(&format!("POST {PATH}"), &answer);
            eprintln!("demo: budget spends stopped: {why}");
            self.spending = false;
        }
        Ok(())
    }
}

const PROVIDER: &str = "anthropic";
/// Run N's pull request is number `FIRST_PR + N`.
const FIRST_PR: u64 = 800;

/// Run `index`'s worktree creation: every seventh fails once, then succeeds.
fn worktree_created(index: u64, updates: &mut Vec<Value>) {
    if index.is_multiple_of(7) {
        updates.extend([
            json!({"name": "git_worktree_creation_duration_seconds", "observe": 0.05}),
            json!({"name": "git_worktree_operations_total", "labels": {"operation": "create", "result": "error"}, "inc": 1}),
        ]);
    }
    updates.extend([
        json!({"name": "git_worktree_creation_duration_seconds", "observe": 0.3 + (index % 25) as f64 / 10.0}),
        json!({"name": "git_worktree_operations_total", "labels": {"operation": "create", "result": "success"}, "inc": 1}),
    ]);
}

/// A run's LLM call number `call`: every fifth is rate-limited once first.
fn llm_call(model: &str, (input, output): (u64, u64), call: u64, updates: &mut Vec<Value>) {
    let labels = json!({"model": model, "provider": PROVIDER});
    if call.is_multiple_of(5) {
        updates.push(json!({"name": "llm_requests_total", "labels": {"model": model, "provider": PROVIDER, "result": "rate_limit"}, "inc": 1}));
        updates.push(json!({"name": "llm_rate_limit_events_total", "labels": labels, "inc": 1}));
    }
    // Per million tokens, in and out.
    let haiku = model == "claude-haiku";
    let (price_in, price_out) = if haiku { (0.8, 4.0) } else { (3.0, 15.0) };
    let cost = (input as f64 * price_in + output as f64 * price_out) / 1e6;
    updates.extend([
        json!({"name": "llm_requests_total", "labels": {"model": model, "provider": PROVIDER, "result": "success"}, "inc": 1}),
        json!({"name": "llm_tokens_total", "labels": {"model": model, "type": "prompt"}, "inc": input}),
        json!({"name": "llm_tokens_total", "labels": {"model": model, "type": "completion"}, "inc": output}),
        json!({"name": "llm_cost_dollars_total", "labels": {"model": model}, "add": (cost * 1e6).round() / 1e6}),
        // About 50 output tokens a second, plus a second to the first one.
        json!({"name": "llm_request_duration_seconds", "labels": labels, "observe": 1.0 + output as f64 / 50.0}),
    ]);
}

/// Checkout and merge of PR `number`: every third conflicts, every ninth unresolved.
fn merge(number: u64, updates: &mut Vec<Value>) {
    let conflicting = number.is_multiple_of(3);
    let conflicts = if conflicting { 1 + number % 4 } else { 0 };
    let result = if conflicts > 0 { "conflict" } else { "success" };
    updates.extend([
        json!({"name": "git_checkout_duration_seconds", "observe": 0.02 + (number % 25) as f64 / 20.0}),
        json!({"name": "git_active_merges", "set": 1}),
        json!({"name": "git_merge_total", "labels": {"result": result}, "inc": 1}),
        json!({"name": "git_merge_duration_seconds", "observe": 2.0 + (number % 40) as f64}),
        json!({"name": "git_conflicts_per_merge", "observe": conflicts}),
    ]);
    if conflicts > 0 {
        let unresolved = number.is_multiple_of(9);
        let resolved = if unresolved { "failure" } else { "success" };
        updates.extend([
            json!({"name": "git_conflict_resolution_duration_seconds", "observe": 5.0 + 2.0 * (number % 60) as f64}),
            json!({"name": "git_conflict_resolution_total", "labels": {"result": resolved, "method": "llm"}, "inc": 1}),
        ]);
    }
    updates.push(json!({"name": "git_active_merges", "set": 0}));
}

/// Work orders by state: those to send are `ready`, the rest ended, none `active`.
fn work_order_states(summary: &Summary, total: u64) -> Vec<Value> {
    let states = [
        ("ready", total.saturating_sub(summary.runs)),
        ("active", 0),
        ("complete", summary.completed),
        ("failed", summary.failed),
        ("cancelled", summary.cancelled),
    ];
    states
        .iter()
        .map(
            |(status, n)| json!({"name": "tasks_by_state", "labels": {"status": status}, "set": n}),
        )
        .collect()
}

/// SplitMix64: the same seed gives the same workload on every platform,
/// which no std source of randomness does.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(GAMMA);
        splitmix64(self.0)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// Uniform in `lo..=hi`.
    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }

    /// In [lo, hi], bunched towards the middle as real durations are.
    fn around(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * (self.unit() + self.unit()) / 2.0
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.next_u64() as usize % items.len()]
    }
}

/// A phase's ranges (of input and output tokens too), failure, and gate.
struct PhaseSpec {
    name: &'static str,
    seconds: (f64, f64),
    tokens: [(u64, u64); 2],
    failure: (f64, &'static str),
    gate: Option<(&'static str, f64, [&'static str; 3])>,
}

const PHASES: [PhaseSpec; 4] = [
    PhaseSpec {
        name: "design",
        seconds: (20.0, 180.0),
        tokens: [(3_000, 12_000), (400, 2_500)],
        failure: (0.02, "design phase gave up: the work order is ambiguous"),
        gate: None,
    },
    PhaseSpec {
        name: "implement",
        seconds: (90.0, 900.0),
        tokens: [(8_000, 40_000), (1_500, 9_000)],
        failure: (0.04, "implement phase hit the context limit"),
        gate: Some(("lint", 0.92, LINT_FAILURES)),
    },
    PhaseSpec {
        name: "test",
        seconds: (30.0, 420.0),
        tokens: [(2_000, 15_000), (300, 3_000)],
        failure: (0.03, "test phase: the test runner crashed"),
        gate: Some(("unit-tests", 0.78, TEST_FAILURES)),
    },
    PhaseSpec {
        name: "review",
        seconds: (20.0, 240.0),
        tokens: [(4_000, 20_000), (300, 2_000)],
        failure: (0.01, "review phase: the reviewer timed out"),
        gate: Some(("review", 0.88, REVIEW_FAILURES)),
    },
];

const LINT_FAILURES: [&str; 3] = [
    "3 clippy warnings",
    "unused import in src/auth.rs",
    "formatting differs in 2 files",
];
const TEST_FAILURES: [&str; 3] = [
    "2 tests failing",
    "test_login_redirect timed out",
    "1 test failing: checkout::totals",
];
const REVIEW_FAILURES: [&str; 3] = [
    "missing error handling in the handler",
    "needs a test for the empty cart",
    "public API change without docs",
];
const AGENTS: [&str; 3] = ["coder", "fixer", "feature-builder"];
const STRATEGIES: [&str; 3] = ["plan-code-test", "test-first", "review-heavy"];
const GOALS: [&str; 6] = [
    "Fix the login redirect",
    "Add pagination to the orders API",
    "Cache product thumbnails",
    "Make checkout totals round correctly",
    "Retry webhook deliveries with backoff",
    "Remove the legacy session store",
];

#[derive(Clone, Debug, Default, PartialEq)]
enum PlannedEnd {
    Complete,
    Fail(String),
    /// What a run that neither fails its last iteration nor delivers is.
    #[default]
    Cancel,
}

/// A whole run, planned before any of it is sent.
#[derive(Clone, Debug, Default, PartialEq)]
struct RunPlan {
    /// The body of `POST /api/v1/runs`, without the run id.
    start: Value,
    /// Its requests in order: an array of events, each `timestamp` an offset
    /// in seconds from the run's start; or a bus message, without its run id.
    steps: Vec<Value>,
    triage_tokens: (u64, u64),
    iterations: u64,
    pr_url: Option<String>,
    outcome: PlannedEnd,
    /// Seconds from the run's start to its end: the simulated clock.
    duration: f64,
    /// Its updates to the example families.
    updates: Vec<Value>,
    /// The LLM calls planned so far.
    calls: u64,
}

/// Plans run `index`: phases until the gates pass, then a delivery; or a cancel.
fn plan_run(rng: &mut Rng, index: u64, loop_run: &str) -> RunPlan {
    let agent = *rng.pick(&AGENTS);
    let goal = *rng.pick(&GOALS);
    let strategy = *rng.pick(&STRATEGIES);
    let work_order_id = format!("WO-{}", rng.between(100, 999));
    let correlation_id = format!("trace-{:08x}", rng.next_u64() as u32);
    let max_iterations = rng.between(2, 3);
    let triage_tokens = (rng.between(1_500, 4_000), rng.between(100, 400));
    // Some runs are cancelled by an operator, at a phase of some iteration.
    let cancel_at = rng
        .chance(0.15)
        .then(|| (rng.between(1, max_iterations), rng.between(0, 3) as usize));
    let plan_message = json!({
        "work_order_id": work_order_id, "strategy": strategy, "goal": goal,
        "phases": PHASES.iter().map(|p| p.name).collect::<Vec<_>>(),
        "max_iterations": max_iterations,
    });
    let mut plan = RunPlan {
        start: json!({
            "agent": agent, "goal": goal, "work_order_id": work_order_id,
            "correlation_id": correlation_id, "strategy": strategy,
            "max_iterations": max_iterations,
        }),
        steps: vec![json!({"type": "PLAN", "body": plan_message})],
        triage_tokens,
        ..RunPlan::default()
    };
    worktree_created(index, &mut plan.updates);
    for iteration in 1..=max_iterations {
        plan.iterations = iteration;
        let cancel = cancel_at
            .filter(|&(at, _)| at == iteration)
            .map(|(_, phase)| phase);
        match plan.iteration(rng, agent, loop_run, cancel) {
            None => break,
            Some(None) => {
                plan.delivery(rng, index);
                break;
            }
            Some(Some(problem)) if iteration == max_iterations => {
                let why = format!("{problem} (iteration {iteration} of {max_iterations})");
                plan.outcome = PlannedEnd::Fail(why);
            }
            Some(Some(_)) => {}
        }
    }
    plan.updates.extend([
        json!({"name": "git_worktree_operations_total", "labels": {"operation": "cleanup", "result": "success"}, "inc": 1}),
        json!({"name": "task_retry_count", "labels": {"worker_profile": agent}, "observe": plan.iterations - 1}),
    ]);
    plan
}

impl RunPlan {
    /// `event` at the simulated clock's time.
    fn at(&self, mut event: Value) -> Value {
        event["timestamp"] = json!(self.duration);
        event
    }

    /// Plans the current iteration: `None` when an operator cancels it at
    /// phase `cancel`, else the problem when a phase or a gate failed.
    fn iteration(
        &mut self,
        rng: &mut Rng,
        profile: &str,
        loop_run: &str,
        cancel: Option<usize>,
    ) -> Option<Option<String>> {
        let iteration = self.iterations;
        self.duration += rng.around(1.0, 6.0);
        let started = json!({"type": "iteration_started", "iteration": iteration});
        let mut batch = vec![self.at(started)];
        let mut problem: Option<String> = None;
        let mut dispatched = 0u64;
        let mut cancelled = false;
        for (i, spec) in PHASES.iter().enumerate() {
            cancelled = cancel == Some(i);
            if cancelled {
                break;
            }
            dispatched += 1;
            match self.phase(rng, spec, profile, &mut batch) {
                Ok(gate_problem) => problem = problem.or(gate_problem),
                // A phase that fails ends its iteration; the next one starts over.
                Err(failure) => {
                    problem = Some(failure);
                    break;
                }
            }
        }
        let status = if cancelled {
            json!({"iteration": iteration, "state": "cancelled"})
        } else {
            let success = problem.is_none();
            let completed =
                json!({"type": "iteration_completed", "iteration": iteration, "success": success});
            batch.push(self.at(completed));
            json!({"iteration": iteration, "success": success, "problem": problem})
        };
        self.steps.push(Value::Array(batch));
        self.steps.push(json!({"type": "STATUS", "body": status}));
        // The loop's own work: a fixed cost, and a little per task handed out.
        let seconds = 0.2 + 0.3 * dispatched as f64;
        self.updates.extend([
            json!({"name": "dispatch_loop_iterations_total", "labels": {"run_id": loop_run}, "inc": 1}),
            json!({"name": "dispatch_loop_cycle_duration_seconds", "observe": seconds}),
            json!({"name": "dispatch_tasks_dispatched_per_cycle", "observe": dispatched}),
            json!({"name": "dispatch_worker_completions_per_cycle", "observe": dispatched}),
        ]);
        (!cancelled).then_some(problem)
    }

    /// Plans a phase into `batch`: `Err` why it failed, or its gate's problem.
    fn phase(
        &mut self,
        rng: &mut Rng,
        spec: &PhaseSpec,
        profile: &str,
        batch: &mut Vec<Value>,
    ) -> Result<Option<String>, String> {
        let phase = spec.name;
        let started =
            json!({"type": "phase_started", "phase": phase, "iteration": self.iterations});
        batch.push(self.at(started));
        let seconds = rng.around(spec.seconds.0, spec.seconds.1);
        let model = match phase == "test" || rng.chance(0.1) {
            true => "claude-haiku",
            false => "claude-sonnet",
        };
        let [(input_lo, input_hi), (output_lo, output_hi)] = spec.tokens;
        let input = rng.between(input_lo, input_hi);
        let output = rng.between(output_lo, output_hi);
        self.duration += seconds;
        let success = !rng.chance(spec.failure.0);
        // Whole milliseconds, as the server reads the phase's duration.
        let ms = (seconds * 1000.0).round();
        let tokens = json!({"type": "tokens", "phase": phase, "model": model,
            "input_tokens": input, "output_tokens": output});
        let completed = json!({"type": "phase_completed", "phase": phase, "success": success,
            "duration_ms": ms});
        batch.extend([self.at(tokens), self.at(completed)]);
        self.calls += 1;
        llm_call(model, (input, output), self.calls, &mut self.updates);
        let status = if success { "success" } else { "failed" };
        self.updates.extend([
            json!({"name": "task_execution_duration_seconds", "labels": {"phase": phase, "worker_profile": profile}, "observe": ms / 1000.0}),
            json!({"name": "task_completion_total", "labels": {"status": status, "worker_profile": profile}, "inc": 1}),
        ]);
        if !success {
            return Err(spec.failure.1.to_string());
        }
        let mut problem = None;
        if let Some((gate, pass, reasons)) = spec.gate {
            let passed = rng.chance(pass);
            let mut event = json!({"type": "gate_checked", "gate": gate, "passed": passed});
            if !passed {
                event["reason"] = json!(*rng.pick(&reasons));
                problem = Some(format!("{gate} still failing"));
            }
            self.duration += rng.around(2.0, 30.0);
            batch.push(self.at(event));
        }
        self.duration += rng.around(0.5, 4.0);
        Ok(problem)
    }

    fn delivery(&mut self, rng: &mut Rng, index: u64) {
        let url = format!("https://github.com/acme/shop/pull/{}", FIRST_PR + index);
        self.duration += rng.around(5.0, 20.0);
        let started = self.at(json!({"type": "delivery_started"}));
        self.duration += rng.around(60.0, 480.0);
        let delivered = rng.chance(0.95);
        let ci = if delivered { "passed" } else { "failed" };
        let completed = json!({"type": "delivery_completed", "success": delivered,
                               "pr_url": url, "ci_status": ci});
        self.steps.push(json!([started, self.at(completed)]));
        self.outcome = match delivered {
            true => PlannedEnd::Complete,
            false => {
                PlannedEnd::Fail("delivery failed: CI checks failed on the pull request".into())
            }
        };
        self.pr_url = Some(url);
        merge(FIRST_PR + index, &mut self.updates);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runs::event::parse_batch;

    fn plans(seed: u64, n: u64) -> Vec<RunPlan> {
        let mut rng = Rng(seed);
        (1..=n)
            .map(|i| plan_run(&mut rng, i, "demo-s1-test"))
            .collect()
    }

    #[test]
    fn the_same_seed_plans_the_same_workload() {
        assert_eq!(plans(7, 30), plans(7, 30));
        assert_ne!(plans(7, 30), plans(8, 30));
    }

    #[test]
    fn the_generator_is_fixed_across_platforms() {
        // SplitMix64's published first output for seed 0.
        assert_eq!(Rng(0).next_u64(), 0xE220_A839_7B1D_CDAF);
        let mut rng = Rng(3);
        for _ in 0..1000 {
            let u = rng.unit();
            assert!((0.0..1.0).contains(&u));
            assert!((5..=9).contains(&rng.between(5, 9)));
        }
    }

    #[test]
    fn every_planned_event_is_one_the_server_accepts() {
        for plan in plans(1, 200) {
            for step in plan.steps.iter().filter(|s| s.is_array()) {
                let parsed = parse_batch(step, 0.0);
                assert!(parsed.is_ok(), "{parsed:?}");
            }
        }
    }

    #[test]
    fn timelines_move_forward_and_last_minutes() {
        for plan in plans(2, 200) {
            let mut last = 0.0;
            for batch in plan.steps.iter().filter_map(Value::as_array) {
                for event in batch {
                    let at = event["timestamp"].as_f64().unwrap();
                    assert!(at >= last, "{plan:?}");
                    last = at;
                }
            }
            assert!(plan.duration >= last && plan.duration > 0.0);
            let max_iterations = plan.start["max_iterations"].as_u64().unwrap();
            assert!((1..=max_iterations).contains(&plan.iterations));
        }
        let long = plans(2, 200).iter().filter(|p| p.duration > 300.0).count();
        assert!(long > 100, "{long} of 200 runs last over 5 minutes");
    }

    #[test]
    fn outcomes_are_mixed_and_consistent() {
        let all = plans(1, 300);
        let count = |f: fn(&PlannedEnd) -> bool| all.iter().filter(|p| f(&p.outcome)).count();
        let completed = count(|o| *o == PlannedEnd::Complete);
        let failed = count(|o| matches!(o, PlannedEnd::Fail(_)));
        let cancelled = count(|o| *o == PlannedEnd::Cancel);
        assert_eq!(completed + failed + cancelled, 300);
        assert!(
            completed > 150 && failed > 15 && cancelled > 15,
            "{completed} {failed} {cancelled}"
        );
        for plan in &all {
            // A completed run delivered a PR; a cancelled one never got that far.
            match plan.outcome {
                PlannedEnd::Complete => assert!(plan.pr_url.is_some()),
                PlannedEnd::Cancel => assert!(plan.pr_url.is_none()),
                PlannedEnd::Fail(ref e) => assert!(!e.is_empty()),
            }
            assert_eq!(plan.steps[0]["type"], "PLAN");
        }
    }

    #[test]
    fn summary_line() {
        let mut s = Summary {
            runs: 5,
            completed: 3,
            failed: 1,
            cancelled: 1,
            events: 120,
            messages: 12,
            ..Summary::default()
        };
        assert_eq!(
            s.to_string(),
            "demo: 5 runs, 3 completed, 1 failed, 1 cancelled, 120 events, 12 messages"
        );
        s.refused = 2;
        s.spends = 9;
        s.metric_updates = 4000;
        assert!(s
            .to_string()
            .ends_with(", 2 refused (budget exhausted), 9 budget spends, 4000 metric updates"));
    }

    /// The example declarations, as a server started with them lists them.
    fn example() -> Declared {
        let text = include_str!("../docs/examples/orchestrator-metrics.json");
        Declared::new(spec::parse(text).unwrap())
    }

    #[test]
    fn the_example_declarations_take_every_update_and_every_family_gets_some() {
        let declared = example();
        let mut moved = std::collections::BTreeSet::new();
        let mut summary = Summary::default();
        for plan in plans(1, 50) {
            summary.runs += 1;
            let mut updates = plan.updates.clone();
            updates.extend(work_order_states(&summary, 50));
            // One run's updates go in one request.
            assert!(updates.len() <= update::MAX_BATCH, "{}", updates.len());
            for u in &updates {
                assert!(declared.takes(u), "refused: {u}");
                moved.insert(u["name"].as_str().unwrap().to_string());
            }
        }
        let all: std::collections::BTreeSet<String> =
            declared.0.iter().map(|d| d.name.clone()).collect();
        assert_eq!(moved, all);
    }

    #[test]
    fn only_updates_the_declarations_take_are_kept() {
        let declared = Declared::new(
            spec::parse(
                r#"[{"name": "git_merge_total", "type": "counter", "help": "h", "labels": ["result"]},
                    {"name": "llm_cost_dollars_total", "type": "counter", "help": "h", "labels": ["model", "provider"]},
                    {"name": "git_active_merges", "type": "histogram", "help": "h"}]"#,
            )
            .unwrap(),
        );
        assert!(declared
            .takes(&json!({"name": "git_merge_total", "labels": {"result": "success"}, "inc": 1})));
        // Another label set, another type, an undeclared name.
        assert!(!declared.takes(
            &json!({"name": "llm_cost_dollars_total", "labels": {"model": "m"}, "add": 0.5})
        ));
        assert!(!declared.takes(&json!({"name": "git_active_merges", "set": 1})));
        assert!(!declared.takes(&json!({"name": "llm_tokens_total", "labels": {"model": "m", "type": "prompt"}, "inc": 1})));
        let nothing = Declared::new(Vec::new());
        let plan = &plans(1, 1)[0];
        assert!(plan.updates.iter().all(|u| !nothing.takes(u)));
    }

    #[test]
    fn work_orders_by_state_cover_every_state() {
        let summary = Summary {
            runs: 4,
            completed: 2,
            failed: 1,
            cancelled: 1,
            ..Summary::default()
        };
        let states: Vec<(String, u64)> = work_order_states(&summary, 10)
            .iter()
            .map(|u| {
                (
                    u["labels"]["status"].as_str().unwrap().to_string(),
                    u["set"].as_u64().unwrap(),
                )
            })
            .collect();
        let want = [
            ("ready", 6),
            ("active", 0),
            ("complete", 2),
            ("failed", 1),
            ("cancelled", 1),
        ];
        assert_eq!(states, want.map(|(s, n)| (s.to_string(), n)));
    }

    #[test]
    fn an_unreachable_server_is_an_error() {
        // Bind then drop, so the port is very likely closed.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let options = Client {
            url: format!("http://127.0.0.1:{port}"),
            run_id: String::new(),
            runs: 1,
            seed: 1,
            cost: None,
            error: None,
        };
        let e = run(&options, &mut Vec::new()).unwrap_err();
        assert!(e.starts_with("cannot connect to http://127.0.0.1:"), "{e}");
    }

    #[test]
    fn errors_are_shareable() {
        fn is_send_sync<T: Send + Sync>() {}
        is_send_sync::<Client>();
    }
}
