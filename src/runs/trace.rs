//! A finished run as its trace: the run's span and a child span per phase. Names and
//! attributes follow the ktrdr research agent's tracing (docs/api-reference.md).
//! Start and end use the server's clock, events the emitter's (which may be far off),
//! so the run span covers its start, end, events and phases.

use super::detail::{Gate, PhaseRecord};
use super::event::short_phase;
use super::{Run, Status, Text};
use crate::otlp::id::new_span_id;
use crate::otlp::span::{unix_nanos, AttrValue, Span, SpanEvent, SpanStatus};
use crate::otlp::TraceContext;

/// Short names of the phases whose spans carry `strategy_name`, as ktrdr's do.
const STRATEGY_PHASES: [&str; 2] = ["design", "assessment"];

/// A finished run's spans: `agent.research_cycle` (in the `traceparent`'s trace if valid),
/// then an `agent.phase.<short>` per phase. `None` while running.
pub fn run_trace(run: &Run) -> Option<Vec<Span>> {
    if run.status == Status::Running {
        return None;
    }
    let ended = run.ended_at?;
    let (first, last) = run.detail.event_span.unwrap_or((run.started_at, ended));
    let (started, ended) = (run.started_at.min(first), ended.max(last));
    let ctx = run
        .text(Text::Traceparent)
        .and_then(TraceContext::parse_traceparent)
        .unwrap_or_else(TraceContext::new_root);
    let root_id = new_span_id();
    // Research-agent clients know a cycle by its operation id: the run id.
    let ids = [
        text("operation.id", &run.run_id),
        text("run.id", &run.run_id),
    ];
    let parent = (ctx.trace_id, root_id);
    let strategy = run.text(Text::Strategy);
    let phases: Vec<Span> = run
        .detail
        .spans
        .iter()
        .map(|phase| phase_span(phase, ended, strategy, &ids, parent))
        .collect();
    let (start, end) = times(started, ended);
    let start = phases
        .iter()
        .map(|s| s.start_unix_nanos)
        .fold(start, u64::min);
    let end = phases.iter().map(|s| s.end_unix_nanos).fold(end, u64::max);
    let mut spans = Vec::with_capacity(1 + phases.len());
    spans.push(run_span(run, ctx, root_id, ids.to_vec(), (start, end)));
    spans.extend(phases);
    Some(spans)
}

/// The child span of one phase; one still open ends with the run, at `run_end`.
fn phase_span(
    phase: &PhaseRecord,
    run_end: f64,
    strategy: Option<&str>,
    ids: &[(String, AttrValue)],
    (trace_id, root_id): ([u8; 16], [u8; 8]),
) -> Span {
    let short = short_phase(&phase.name);
    let mut attributes = ids.to_vec();
    attributes.push(text("phase", &phase.name));
    if let Some(n) = phase.iteration {
        attributes.push(("iteration".to_string(), int(n)));
    }
    if let Some(strategy) = strategy.filter(|_| STRATEGY_PHASES.contains(&short)) {
        attributes.push(text("strategy_name", strategy));
    }
    // Each record holds its own iteration's tokens; like the gen_ai pair, only if any.
    let tokens = phase.input_tokens.saturating_add(phase.output_tokens);
    if tokens > 0 {
        attributes.push(("tokens".to_string(), int(tokens)));
    }
    if let Some(accuracy) = phase.accuracy {
        attributes.push(("accuracy".to_string(), AttrValue::Double(accuracy)));
    }
    let (input, output) = (phase.input_tokens, phase.output_tokens);
    push_usage(&mut attributes, input, output, phase.model.as_deref());
    // ktrdr gives a phase one gate result: the last check's; every check is an event.
    if let Some(last) = phase.gates.last() {
        attributes.extend(gate_attributes(last));
    }
    let (start, end) = times(phase.started, phase.ended.unwrap_or(run_end));
    let status = match phase.success {
        Some(true) => SpanStatus::Ok,
        Some(false) => SpanStatus::Error(format!("phase {} failed", phase.name)),
        None => SpanStatus::Unset,
    };
    Span {
        trace_id,
        span_id: new_span_id(),
        parent_span_id: Some(root_id),
        name: format!("agent.phase.{short}"),
        start_unix_nanos: start,
        end_unix_nanos: end,
        attributes,
        events: phase.gates.iter().map(gate_event).collect(),
        status,
    }
}

/// The root span of a finished run; a cancelled one's status is Unset.
fn run_span(
    run: &Run,
    ctx: TraceContext,
    root_id: [u8; 8],
    mut attributes: Vec<(String, AttrValue)>,
    (start, end): (u64, u64),
) -> Span {
    for (key, which) in [
        ("work_order.id", Text::WorkOrderId),
        ("correlation.id", Text::CorrelationId),
    ] {
        if let Some(id) = run.text(which) {
            attributes.push(text(key, id));
        }
    }
    attributes.push(text("operation.type", "agent_research"));
    attributes.push(text("outcome", run.status.as_str()));
    let (input, output) = run.detail.tokens();
    let model = run
        .detail
        .tokens_by_model
        .iter()
        .max_by_key(|(_, (i, o))| i + o)
        .map(|(m, _)| m.as_str())
        .filter(|m| *m != "unknown");
    push_usage(&mut attributes, input, output, model);
    let mut events: Vec<SpanEvent> = run.detail.root_gates.iter().map(gate_event).collect();
    let status = match run.status {
        Status::Completed => SpanStatus::Ok,
        Status::Failed => {
            let error = run.text(Text::Error).unwrap_or("run failed");
            attributes.push(text("error", error));
            // OpenTelemetry's exception convention, which trace UIs show as the error.
            events.push(SpanEvent {
                name: "exception".to_string(),
                time_unix_nanos: end,
                attributes: vec![text("exception.message", error)],
            });
            SpanStatus::Error(error.to_string())
        }
        Status::Running | Status::Cancelled => SpanStatus::Unset,
    };
    Span {
        trace_id: ctx.trace_id,
        span_id: root_id,
        parent_span_id: ctx.parent_span_id,
        // ktrdr's span of a whole research cycle.
        name: "agent.research_cycle".to_string(),
        start_unix_nanos: start,
        end_unix_nanos: end,
        attributes,
        events,
        status,
    }
}

/// `gate.name`, `gate.passed` and any `gate.reason` of a gate check.
fn gate_attributes(gate: &Gate) -> Vec<(String, AttrValue)> {
    let mut attributes = vec![
        text("gate.name", &gate.gate),
        ("gate.passed".to_string(), AttrValue::Bool(gate.passed)),
    ];
    if let Some(reason) = &gate.reason {
        attributes.push(text("gate.reason", reason));
    }
    attributes
}

/// The `conductor.gate` span event of a gate check, at its time.
fn gate_event(gate: &Gate) -> SpanEvent {
    SpanEvent {
        name: "conductor.gate".to_string(),
        time_unix_nanos: unix_nanos(gate.at),
        attributes: gate_attributes(gate),
    }
}

fn text(key: &str, value: &str) -> (String, AttrValue) {
    (key.to_string(), AttrValue::Str(value.to_string()))
}

fn times(started: f64, ended: f64) -> (u64, u64) {
    let start = unix_nanos(started);
    (start, unix_nanos(ended).max(start))
}

/// An integer attribute, saturating at `i64::MAX` (OTLP has no unsigned integers).
fn int(n: u64) -> AttrValue {
    AttrValue::Int(i64::try_from(n).unwrap_or(i64::MAX))
}

fn push_usage(
    attributes: &mut Vec<(String, AttrValue)>,
    input: u64,
    output: u64,
    model: Option<&str>,
) {
    if input > 0 || output > 0 {
        attributes.push(("gen_ai.usage.input_tokens".to_string(), int(input)));
        attributes.push(("gen_ai.usage.output_tokens".to_string(), int(output)));
    }
    if let Some(model) = model.filter(|m| !m.is_empty()) {
        attributes.push(text("gen_ai.request.model", model));
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;
    use crate::metrics::Registry;
    use crate::runs::event::parse_batch;
    use crate::runs::{Detail, RunMetrics};

    /// The server's clock while the runs below are sent.
    const NOW: f64 = 1_795_000_000.0;

    /// A run started at `NOW` and finished as `status` a second later, with
    /// `events` applied in between.
    fn run(status: Status, events: Value) -> Run {
        let m = RunMetrics::register(&Registry::new()).unwrap();
        let mut detail = Detail::default();
        let mut batch = parse_batch(&events, NOW).unwrap();
        detail.fill(&mut batch);
        for e in &batch {
            detail.apply(e, &m, crate::runs::metrics::RunRef::new("r", None));
        }
        Run {
            run_id: "r-1".into(),
            texts: crate::runs::Texts::from_json(&json!({"work_order_id": "wo-1"})),
            status,
            started_at: NOW,
            ended_at: Some(NOW + 1.0),
            max_iterations: None,
            reserved: None,
            cost: None,
            detail: detail.into(),
        }
    }

    fn str(s: &str) -> AttrValue {
        AttrValue::Str(s.into())
    }

    fn attr<'a>(span: &'a Span, key: &str) -> Option<&'a AttrValue> {
        span.attributes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }

    fn assert_nested(spans: &[Span]) {
        let root = &spans[0];
        assert!(root.start_unix_nanos <= root.end_unix_nanos);
        for phase in &spans[1..] {
            assert!(
                phase.start_unix_nanos >= root.start_unix_nanos
                    && phase.end_unix_nanos <= root.end_unix_nanos,
                "{} [{}, {}] outside the run [{}, {}]",
                phase.name,
                phase.start_unix_nanos,
                phase.end_unix_nanos,
                root.start_unix_nanos,
                root.end_unix_nanos,
            );
        }
    }

    #[test]
    fn phases_reported_in_the_past_lie_inside_the_run_span() {
        // As `demo` sends them: a timeline an hour before the server's
        // clock, with a phase end that claims more than its events span
        // and a phase never ended.
        let t = NOW - 3600.0;
        let r = run(
            Status::Completed,
            json!([
                {"type": "iteration_started", "iteration": 1, "timestamp": t},
                {"type": "phase_started", "phase": "design", "timestamp": t + 1.0},
                {"type": "phase_completed", "phase": "design", "success": true, "timestamp": t + 60.0},
                {"type": "phase_completed", "phase": "implement", "success": true,
                 "duration_ms": 7_200_000.0, "timestamp": t + 120.0},
                {"type": "phase_started", "phase": "test", "timestamp": t + 130.0},
            ]),
        );
        let spans = run_trace(&r).unwrap();
        assert_eq!(spans.len(), 4);
        assert_nested(&spans);
        let root = &spans[0];
        let nanos = |secs: u64| secs * 1_000_000_000;
        // The first event is the first phase's start; then the span widens
        // to the implement phase, which claims two hours ending at t + 120.
        assert_eq!(spans[1].start_unix_nanos, nanos(t as u64 + 1));
        assert_eq!(root.start_unix_nanos, nanos(NOW as u64 - 3600 - 7080));
        assert_eq!(root.end_unix_nanos, nanos(NOW as u64 + 1));
        // The open phase ends with the run.
        assert_eq!(spans[3].end_unix_nanos, root.end_unix_nanos);
    }

    #[test]
    fn events_after_the_run_ended_stretch_its_span() {
        let r = run(
            Status::Completed,
            json!([
                {"type": "phase_started", "phase": "review", "timestamp": NOW + 5.0},
                {"type": "gate_checked", "gate": "ci", "passed": true, "timestamp": NOW + 9.0},
            ]),
        );
        let spans = run_trace(&r).unwrap();
        let root = &spans[0];
        assert_eq!(
            (root.start_unix_nanos, root.end_unix_nanos),
            (unix_nanos(NOW), unix_nanos(NOW + 9.0))
        );
        assert_nested(&spans);
    }

    #[test]
    fn each_phase_span_carries_the_tokens_of_its_own_iteration() {
        let r = run(
            Status::Completed,
            json!([
                {"type": "iteration_started", "iteration": 1, "timestamp": 10.0},
                {"type": "phase_started", "phase": "code", "timestamp": 11.0},
                {"type": "tokens", "phase": "code", "model": "m1", "input_tokens": 100, "output_tokens": 10, "timestamp": 12.0},
                {"type": "phase_completed", "phase": "code", "success": false, "timestamp": 13.0},
                {"type": "iteration_completed", "iteration": 1, "success": false, "timestamp": 14.0},
                {"type": "iteration_started", "iteration": 2, "timestamp": 15.0},
                // Before iteration 2's span began, and after it ended: both
                // belong to it, not to iteration 1's.
                {"type": "tokens", "phase": "code", "input_tokens": 500, "output_tokens": 50, "timestamp": 15.5},
                {"type": "phase_started", "phase": "code", "timestamp": 16.0},
                {"type": "phase_completed", "phase": "code", "success": true, "timestamp": 18.0},
                {"type": "tokens", "phase": "code", "model": "m2", "input_tokens": 1500, "output_tokens": 150, "timestamp": 18.5},
            ]),
        );
        let spans = run_trace(&r).unwrap();
        let code: Vec<(Option<&AttrValue>, Option<&AttrValue>, Option<&AttrValue>)> = spans[1..]
            .iter()
            .map(|s| {
                (
                    attr(s, "iteration"),
                    attr(s, "gen_ai.usage.input_tokens"),
                    attr(s, "gen_ai.request.model"),
                )
            })
            .collect();
        assert_eq!(
            code,
            vec![
                (
                    Some(&AttrValue::Int(1)),
                    Some(&AttrValue::Int(100)),
                    Some(&AttrValue::Str("m1".into()))
                ),
                (
                    Some(&AttrValue::Int(2)),
                    Some(&AttrValue::Int(2000)),
                    Some(&AttrValue::Str("m2".into()))
                ),
            ]
        );
        assert_eq!(
            attr(&spans[0], "gen_ai.usage.input_tokens"),
            Some(&AttrValue::Int(2100))
        );
    }

    #[test]
    fn the_outcome_follows_the_status() {
        let events = json!([{"type": "phase_started", "phase": "p"}]);
        assert_eq!(run_trace(&run(Status::Running, events.clone())), None);
        let mut failed = run(Status::Failed, events.clone());
        failed.texts.set(Text::Error, Some("tests failed"));
        let root = run_trace(&failed).unwrap().swap_remove(0);
        assert_eq!(root.status, SpanStatus::Error("tests failed".into()));
        assert_eq!(attr(&root, "outcome"), Some(&str("failed")));
        failed.texts.set(Text::Error, None);
        let root = run_trace(&failed).unwrap().swap_remove(0);
        assert_eq!(root.status, SpanStatus::Error("run failed".into()));
        assert_eq!(attr(&root, "error"), Some(&str("run failed")));
        let cancelled = run_trace(&run(Status::Cancelled, events.clone())).unwrap();
        assert_eq!(attr(&cancelled[0], "outcome"), Some(&str("cancelled")));
        let done = run_trace(&run(Status::Completed, events)).unwrap();
        assert_eq!(attr(&done[0], "outcome"), Some(&str("completed")));
        // The research agent's operation id is the run id; the work order
        // keeps its own attribute.
        assert_eq!(attr(&done[0], "operation.id"), Some(&str("r-1")));
        assert_eq!(attr(&done[0], "work_order.id"), Some(&str("wo-1")));
        assert_eq!(attr(&done[0], "correlation.id"), None);
    }

    #[test]
    fn a_research_cycle_traces_as_the_research_agent_does() {
        // The agent reports its phases as `designing` and `assessing` but
        // its tokens as `design` and `assessment`; the accuracy comes in
        // the metadata of a gate check or of the phase's end.
        let mut r = run(
            Status::Completed,
            json!([
                {"type": "iteration_started", "iteration": 1, "timestamp": 10.0},
                {"type": "phase_started", "phase": "designing", "timestamp": 11.0},
                {"type": "tokens", "phase": "design", "model": "m1", "input_tokens": 1200, "output_tokens": 300, "timestamp": 12.0},
                {"type": "phase_completed", "phase": "designing", "success": true, "timestamp": 13.0},
                // Just after the end: still that occurrence's.
                {"type": "tokens", "phase": "designing", "input_tokens": 5, "output_tokens": 5, "timestamp": 13.5},
                {"type": "phase_started", "phase": "training", "timestamp": 14.0},
                {"type": "gate_checked", "gate": "training", "passed": true,
                 "metadata": {"accuracy": 0.58}, "timestamp": 15.0},
                {"type": "phase_completed", "phase": "training", "success": true,
                 "metadata": {"accuracy": 0.61, "final_loss": 0.4}, "timestamp": 16.0},
                // Before its span began: it waits for it under either name.
                {"type": "tokens", "phase": "assessment", "input_tokens": 700, "output_tokens": 100, "timestamp": 16.5},
                {"type": "phase_started", "phase": "assessing", "timestamp": 17.0},
                {"type": "phase_completed", "phase": "assessing", "success": true, "timestamp": 18.0},
            ]),
        );
        r.texts.set(Text::Strategy, Some("momentum-v2"));
        let spans = run_trace(&r).unwrap();
        let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "agent.research_cycle",
                "agent.phase.design",
                "agent.phase.training",
                "agent.phase.assessment",
            ]
        );
        let (root, design, training, assessment) = (&spans[0], &spans[1], &spans[2], &spans[3]);
        for s in &spans {
            assert_eq!(attr(s, "operation.id"), Some(&str("r-1")));
        }
        for s in &spans[1..] {
            assert_eq!(s.parent_span_id, Some(root.span_id));
        }
        assert_eq!(attr(root, "work_order.id"), Some(&str("wo-1")));
        assert_eq!(attr(design, "phase"), Some(&str("designing")));
        assert_eq!(attr(design, "strategy_name"), Some(&str("momentum-v2")));
        assert_eq!(attr(design, "tokens"), Some(&AttrValue::Int(1510)));
        assert_eq!(attr(training, "phase"), Some(&str("training")));
        // The end's accuracy, reported last.
        assert_eq!(attr(training, "accuracy"), Some(&AttrValue::Double(0.61)));
        assert_eq!(attr(training, "tokens"), None);
        assert_eq!(attr(assessment, "phase"), Some(&str("assessing")));
        assert_eq!(attr(assessment, "tokens"), Some(&AttrValue::Int(800)));
        assert_eq!(
            attr(root, "gen_ai.usage.input_tokens"),
            Some(&AttrValue::Int(1905))
        );
    }

    #[test]
    fn accuracy_comes_from_the_metadata_of_the_phases_own_events() {
        let r = run(
            Status::Completed,
            json!([
                // Outside any phase: no span to carry it.
                {"type": "gate_checked", "gate": "g", "passed": true, "metadata": {"accuracy": 0.1}},
                {"type": "phase_started", "phase": "training", "metadata": {"accuracy": 0.2}},
                {"type": "phase_completed", "phase": "training", "success": true},
                {"type": "phase_started", "phase": "training"},
                {"type": "gate_checked", "gate": "g", "passed": false, "metadata": {"accuracy": 0.3}},
                // Not a number: no accuracy, and the gate's stays.
                {"type": "phase_completed", "phase": "training", "success": false,
                 "metadata": {"accuracy": "high"}},
                {"type": "phase_started", "phase": "training"},
                // A tokens event's metadata is not the phase's result.
                {"type": "tokens", "phase": "training", "input_tokens": 1, "output_tokens": 1,
                 "metadata": {"accuracy": 0.4}},
                {"type": "phase_completed", "phase": "training", "success": true},
                // A phase end with no start of its own.
                {"type": "phase_completed", "phase": "backtesting", "success": true,
                 "metadata": {"accuracy": 0.5}},
            ]),
        );
        let spans = run_trace(&r).unwrap();
        let accuracy: Vec<Option<&AttrValue>> = spans.iter().map(|s| attr(s, "accuracy")).collect();
        assert_eq!(
            accuracy,
            [
                None,
                Some(&AttrValue::Double(0.2)),
                Some(&AttrValue::Double(0.3)),
                None,
                Some(&AttrValue::Double(0.5)),
            ]
        );
    }

    fn gate(name: &str, passed: bool, reason: Option<&str>, at: f64) -> Gate {
        Gate {
            gate: name.into(),
            passed,
            reason: reason.map(str::to_string),
            at,
        }
    }

    /// A finished run joined to a caller's trace: a phase with a gate
    /// check and tokens, a phase that claims to end before it began, and a
    /// gate check outside any phase.
    fn sample() -> Run {
        let plan = PhaseRecord {
            name: "plan".into(),
            iteration: Some(1),
            started: 100.0,
            ended: Some(102.0),
            success: Some(true),
            input_tokens: 10,
            output_tokens: 3,
            model: Some("claude-x".into()),
            gates: vec![gate("lint", false, Some("2 errors"), 101.0)],
            accuracy: None,
        };
        let review = PhaseRecord {
            name: "review".into(),
            started: 103.0,
            ended: Some(101.0),
            ..PhaseRecord::default()
        };
        let detail = Detail {
            spans: vec![plan, review],
            root_gates: vec![gate("budget", true, None, 100.5)],
            tokens_by_phase: [("plan".to_string(), (10, 3))].into(),
            tokens_by_model: [("claude-x".to_string(), (10, 3))].into(),
            ..Detail::default()
        };
        Run {
            run_id: "run-1".into(),
            texts: crate::runs::Texts::from_json(&json!({
                "work_order_id": "wo-42",
                "strategy": "momentum-v2",
                "traceparent": "00-07070707070707070707070707070707-0909090909090909-01",
            })),
            status: Status::Completed,
            started_at: 100.0,
            ended_at: Some(110.5),
            max_iterations: None,
            reserved: None,
            cost: None,
            detail: detail.into(),
        }
    }

    #[test]
    fn a_gate_check_becomes_an_event_with_its_reason_when_given() {
        let check = gate("lint", false, Some("2 errors"), 101.0);
        assert_eq!(
            gate_event(&check),
            SpanEvent {
                name: "conductor.gate".into(),
                time_unix_nanos: 101_000_000_000,
                attributes: vec![
                    text("gate.name", "lint"),
                    ("gate.passed".to_string(), AttrValue::Bool(false)),
                    text("gate.reason", "2 errors"),
                ],
            }
        );
        assert_eq!(
            gate_attributes(&gate("lint", true, None, 101.0)),
            vec![
                text("gate.name", "lint"),
                ("gate.passed".to_string(), AttrValue::Bool(true)),
            ]
        );
    }

    #[test]
    fn builds_a_root_and_one_child_per_phase() {
        let spans = run_trace(&sample()).unwrap();
        assert_eq!(spans.len(), 3);
        let root = &spans[0];
        assert_eq!(root.name, "agent.research_cycle");
        assert_eq!(root.trace_id, [7; 16]);
        assert_eq!(root.parent_span_id, Some([9; 8]));
        assert_eq!(root.start_unix_nanos, 100_000_000_000);
        assert_eq!(root.end_unix_nanos, 110_500_000_000);
        assert_eq!(root.status, SpanStatus::Ok);
        assert_eq!(
            attr(root, "gen_ai.usage.input_tokens"),
            Some(&AttrValue::Int(10))
        );
        assert_eq!(
            attr(root, "gen_ai.usage.output_tokens"),
            Some(&AttrValue::Int(3))
        );
        assert_eq!(
            attr(root, "gen_ai.request.model"),
            Some(&AttrValue::Str("claude-x".into()))
        );
        assert_eq!(root.events.len(), 1);
        assert_eq!(root.events[0].attributes.len(), 2);
        for s in &spans {
            assert_eq!(attr(s, "run.id"), Some(&AttrValue::Str("run-1".into())));
            assert_eq!(
                attr(s, "operation.id"),
                Some(&AttrValue::Str("run-1".into()))
            );
            assert_eq!(s.trace_id, [7; 16]);
            assert_ne!(s.span_id, [0; 8]);
        }
        let plan = &spans[1];
        assert_eq!(plan.name, "agent.phase.plan");
        assert_eq!(plan.parent_span_id, Some(root.span_id));
        assert_eq!(plan.status, SpanStatus::Ok);
        // Its gate check stays an event (its attributes: see `gate.rs`).
        assert_eq!(plan.events[0].name, "conductor.gate");
        assert_eq!(plan.events[0].time_unix_nanos, 101_000_000_000);
        assert_eq!(attr(plan, "phase"), Some(&AttrValue::Str("plan".into())));
        assert_eq!(attr(plan, "iteration"), Some(&AttrValue::Int(1)));
        assert_eq!(attr(plan, "tokens"), Some(&AttrValue::Int(13)));
        // Neither designs nor assesses the strategy.
        assert_eq!(attr(plan, "strategy_name"), None);
        assert_eq!(
            attr(plan, "gate.reason"),
            Some(&AttrValue::Str("2 errors".into()))
        );
        let review = &spans[2];
        assert_eq!(
            attr(review, "phase"),
            Some(&AttrValue::Str("review".into()))
        );
        assert_eq!(attr(review, "iteration"), None);
        assert_eq!(attr(review, "gate.passed"), None);
        assert_eq!(review.status, SpanStatus::Unset);
        assert_eq!(review.end_unix_nanos, review.start_unix_nanos);
        assert_eq!(attr(review, "gen_ai.usage.input_tokens"), None);
        assert_eq!(attr(review, "tokens"), None);
        assert_eq!(attr(review, "accuracy"), None);
        assert_eq!(attr(review, "gen_ai.request.model"), None);
        assert_ne!(review.span_id, plan.span_id);
    }

    #[test]
    fn failures_become_error_statuses() {
        let mut r = sample();
        r.status = Status::Failed;
        r.texts.set(Text::Error, Some("tests failed"));
        r.detail.spans[0].success = Some(false);
        r.detail
            .tokens_by_phase
            .insert("plan".into(), (u64::MAX, 3));
        r.texts.set(Text::Traceparent, None);
        let spans = run_trace(&r).unwrap();
        assert_eq!(spans[0].parent_span_id, None);
        assert_eq!(spans[0].status, SpanStatus::Error("tests failed".into()));
        assert_eq!(
            spans[1].status,
            SpanStatus::Error("phase plan failed".into())
        );
        assert_eq!(
            attr(&spans[0], "gen_ai.usage.input_tokens"),
            Some(&AttrValue::Int(i64::MAX))
        );
    }

    #[test]
    fn the_run_span_says_what_it_was_and_how_it_ended() {
        let spans = run_trace(&sample()).unwrap();
        let root = &spans[0];
        assert_eq!(
            attr(root, "operation.type"),
            Some(&AttrValue::Str("agent_research".into()))
        );
        assert_eq!(
            attr(root, "outcome"),
            Some(&AttrValue::Str("completed".into()))
        );
        assert_eq!(attr(root, "error"), None);
        assert!(root.events.iter().all(|e| e.name != "exception"));
        for s in &spans[1..] {
            assert_eq!(attr(s, "operation.type"), None);
            assert_eq!(attr(s, "outcome"), None);
        }

        let mut failed = sample();
        failed.status = Status::Failed;
        failed.texts.set(Text::Error, Some("tests failed"));
        let spans = run_trace(&failed).unwrap();
        let root = &spans[0];
        assert_eq!(
            attr(root, "outcome"),
            Some(&AttrValue::Str("failed".into()))
        );
        assert_eq!(
            attr(root, "error"),
            Some(&AttrValue::Str("tests failed".into()))
        );
        let exception: Vec<&SpanEvent> = root
            .events
            .iter()
            .filter(|e| e.name == "exception")
            .collect();
        assert_eq!(exception.len(), 1);
        assert_eq!(exception[0].time_unix_nanos, root.end_unix_nanos);
        assert_eq!(
            exception[0].attributes,
            vec![(
                "exception.message".to_string(),
                AttrValue::Str("tests failed".into())
            )]
        );
        // The gate event is still there, before the exception.
        assert_eq!(root.events[0].name, "conductor.gate");

        let mut cancelled = sample();
        cancelled.status = Status::Cancelled;
        let spans = run_trace(&cancelled).unwrap();
        assert_eq!(
            attr(&spans[0], "outcome"),
            Some(&AttrValue::Str("cancelled".into()))
        );
        assert_eq!(spans[0].status, SpanStatus::Unset);
        assert_eq!(attr(&spans[0], "error"), None);
    }

    #[test]
    fn the_last_gate_checked_in_a_phase_is_its_gate_result() {
        let mut r = sample();
        r.detail.spans[0]
            .gates
            .push(gate("tests", true, None, 101.5));
        let spans = run_trace(&r).unwrap();
        let plan = &spans[1];
        assert_eq!(
            attr(plan, "gate.name"),
            Some(&AttrValue::Str("tests".into()))
        );
        assert_eq!(attr(plan, "gate.passed"), Some(&AttrValue::Bool(true)));
        // The reason belongs to the earlier check, not to this one.
        assert_eq!(attr(plan, "gate.reason"), None);
        assert_eq!(plan.events.len(), 2);
    }

    #[test]
    fn the_run_span_encloses_phases_timed_by_another_clock() {
        let mut r = sample();
        // The run's own times come from the server's clock; its phases'
        // from the emitter's, here well before and after them.
        r.started_at = 1000.0;
        r.ended_at = Some(1010.0);
        r.detail.spans[0].started = 500.0;
        r.detail.spans[0].ended = Some(510.0);
        r.detail.spans[1].started = 1005.0;
        r.detail.spans[1].ended = Some(1020.25);
        let spans = run_trace(&r).unwrap();
        let root = &spans[0];
        assert_eq!(root.start_unix_nanos, 500_000_000_000);
        assert_eq!(root.end_unix_nanos, 1_020_250_000_000);
        for phase in &spans[1..] {
            assert!(phase.start_unix_nanos >= root.start_unix_nanos);
            assert!(phase.end_unix_nanos <= root.end_unix_nanos);
        }
        // Phases inside the run's own times leave them as they are.
        let mut inside = sample();
        inside.started_at = 90.0;
        inside.ended_at = Some(120.0);
        let spans = run_trace(&inside).unwrap();
        assert_eq!(spans[0].start_unix_nanos, 90_000_000_000);
        assert_eq!(spans[0].end_unix_nanos, 120_000_000_000);
    }

    #[test]
    fn research_agent_phases_get_its_span_names_and_attributes() {
        let mut r = sample();
        r.texts.set(Text::CorrelationId, Some("corr-7"));
        let phase = |name: &str, input, output, accuracy| PhaseRecord {
            name: name.into(),
            started: 101.0,
            ended: Some(102.0),
            input_tokens: input,
            output_tokens: output,
            accuracy,
            ..PhaseRecord::default()
        };
        r.detail.spans = vec![
            phase("designing", 1200, 300, None),
            phase("training", 0, 0, Some(0.625)),
            phase("backtesting", 0, 0, None),
            phase("assessing", 800, 200, None),
            // Reported under the short name already.
            phase("design", 0, 0, None),
        ];
        let spans = run_trace(&r).unwrap();
        let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "agent.research_cycle",
                "agent.phase.design",
                "agent.phase.training",
                "agent.phase.backtesting",
                "agent.phase.assessment",
                "agent.phase.design",
            ]
        );
        let reported: Vec<Option<&AttrValue>> =
            spans[1..].iter().map(|s| attr(s, "phase")).collect();
        assert_eq!(
            reported,
            [
                Some(&str("designing")),
                Some(&str("training")),
                Some(&str("backtesting")),
                Some(&str("assessing")),
                Some(&str("design")),
            ]
        );
        let (root, design, training, backtesting, assessment) =
            (&spans[0], &spans[1], &spans[2], &spans[3], &spans[4]);
        for s in &spans {
            assert_eq!(attr(s, "operation.id"), Some(&str("run-1")));
        }
        for s in &spans[1..] {
            assert_eq!(s.parent_span_id, Some(root.span_id));
        }
        assert_eq!(attr(root, "work_order.id"), Some(&str("wo-42")));
        assert_eq!(attr(root, "correlation.id"), Some(&str("corr-7")));
        assert_eq!(attr(design, "work_order.id"), None);
        assert_eq!(attr(design, "strategy_name"), Some(&str("momentum-v2")));
        assert_eq!(attr(design, "tokens"), Some(&AttrValue::Int(1500)));
        assert_eq!(attr(design, "accuracy"), None);
        assert_eq!(attr(training, "accuracy"), Some(&AttrValue::Double(0.625)));
        assert_eq!(attr(training, "strategy_name"), None);
        // No usage reported is no `tokens`, not a claim of zero.
        assert_eq!(attr(training, "tokens"), None);
        assert_eq!(attr(backtesting, "strategy_name"), None);
        assert_eq!(attr(assessment, "strategy_name"), Some(&str("momentum-v2")));
        assert_eq!(attr(assessment, "tokens"), Some(&AttrValue::Int(1000)));
        assert_eq!(attr(&spans[5], "strategy_name"), Some(&str("momentum-v2")));
        assert_eq!(attr(root, "strategy_name"), None);
        assert_eq!(attr(root, "tokens"), None);

        // A run without a strategy, work order or correlation id says
        // nothing of them.
        let mut bare = sample();
        bare.texts.set(Text::Strategy, None);
        bare.texts.set(Text::WorkOrderId, None);
        bare.detail.spans[0].name = "designing".into();
        let spans = run_trace(&bare).unwrap();
        assert_eq!(attr(&spans[1], "strategy_name"), None);
        assert_eq!(attr(&spans[0], "work_order.id"), None);
        assert_eq!(attr(&spans[0], "correlation.id"), None);
    }

    #[test]
    fn a_phase_token_sum_saturates() {
        let mut r = sample();
        r.detail.spans[0].input_tokens = u64::MAX;
        let spans = run_trace(&r).unwrap();
        assert_eq!(attr(&spans[1], "tokens"), Some(&AttrValue::Int(i64::MAX)));
    }
}
