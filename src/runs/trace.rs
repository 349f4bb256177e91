//! A finished run as the facts its trace is built from.
//!
//! A run's own start and end are the server's clock, but its events carry
//! the times the emitter reported, which may be far from it (a replayed or
//! simulated timeline, as `demo` sends). So the run span starts at the
//! earliest of its start, its first event and its phases' starts, and ends
//! at the latest of its end, its last event and its phases' ends: every
//! phase span lies inside it.

use super::{Run, Status, Text};
use crate::otlp::{GateEvent, PhaseSpan, RunEnd, RunTrace, TraceContext};

fn gate_event(g: &super::detail::Gate) -> GateEvent {
    GateEvent {
        gate: g.gate.clone(),
        passed: g.passed,
        reason: g.reason.clone(),
        at_unix: g.at,
    }
}

/// The trace of a finished run: it joins the caller's trace when the run
/// was started with a valid `traceparent`. `None` while the run is running.
pub fn run_trace(run: &Run) -> Option<RunTrace> {
    let outcome = match run.status {
        Status::Running => return None,
        Status::Completed => RunEnd::Completed,
        Status::Failed => RunEnd::Failed(run.text(Text::Error).unwrap_or("run failed").to_string()),
        Status::Cancelled => RunEnd::Cancelled,
    };
    let (started, ended) = match (run.detail.event_span, run.ended_at?) {
        (Some((first, last)), ended) => (run.started_at.min(first), ended.max(last)),
        (None, ended) => (run.started_at, ended),
    };
    let ctx = run
        .text(Text::Traceparent)
        .and_then(TraceContext::parse_traceparent)
        .unwrap_or_else(TraceContext::new_root);
    let (input_tokens, output_tokens) = run.detail.tokens();
    let model = run
        .detail
        .tokens_by_model
        .iter()
        .max_by_key(|(_, (i, o))| i + o)
        .map(|(m, _)| m.clone())
        .filter(|m| m != "unknown");
    // Each record already holds the tokens of its own iteration (see
    // `Detail::apply`), so two occurrences of one phase stay apart here.
    let phases = run
        .detail
        .spans
        .iter()
        .map(|p| PhaseSpan {
            name: p.name.clone(),
            iteration: p.iteration,
            started_unix: p.started,
            // A phase still open when the run ended ends with the run.
            ended_unix: p.ended.unwrap_or(ended),
            success: p.success,
            input_tokens: p.input_tokens,
            output_tokens: p.output_tokens,
            model: p.model.clone(),
            gates: p.gates.iter().map(gate_event).collect(),
            accuracy: p.accuracy,
        })
        .collect();
    Some(RunTrace {
        ctx,
        run_id: run.run_id.to_string(),
        // The research agent's clients know a cycle by the operation id
        // `POST /api/v1/agent/trigger` and `GET /api/v1/agent/status`
        // answer with, which is the run id; the work order and correlation
        // ids go on as attributes of their own.
        operation_id: run.run_id.to_string(),
        work_order_id: run.text(Text::WorkOrderId).map(str::to_string),
        correlation_id: run.text(Text::CorrelationId).map(str::to_string),
        strategy: run.text(Text::Strategy).map(str::to_string),
        started_unix: started,
        ended_unix: ended,
        outcome,
        phases,
        gates: run.detail.root_gates.iter().map(gate_event).collect(),
        input_tokens,
        output_tokens,
        model,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;
    use crate::metrics::Registry;
    use crate::otlp::span::{AttrValue, Span};
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
        let trace = run_trace(&r).unwrap();
        // The first event; then the span widens to the implement phase,
        // which claims two hours ending at t + 120.
        assert_eq!(trace.started_unix, t);
        assert_eq!(trace.ended_unix, NOW + 1.0);
        let spans = trace.into_spans();
        assert_eq!(spans.len(), 4);
        assert_nested(&spans);
        let root = &spans[0];
        let nanos = |secs: u64| secs * 1_000_000_000;
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
        let trace = run_trace(&r).unwrap();
        assert_eq!((trace.started_unix, trace.ended_unix), (NOW, NOW + 9.0));
        assert_nested(&trace.into_spans());
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
        let spans = run_trace(&r).unwrap().into_spans();
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
        assert_eq!(
            run_trace(&failed).unwrap().outcome,
            RunEnd::Failed("tests failed".into())
        );
        failed.texts.set(Text::Error, None);
        assert_eq!(
            run_trace(&failed).unwrap().outcome,
            RunEnd::Failed("run failed".into())
        );
        assert_eq!(
            run_trace(&run(Status::Cancelled, events.clone()))
                .unwrap()
                .outcome,
            RunEnd::Cancelled
        );
        let done = run_trace(&run(Status::Completed, events)).unwrap();
        assert_eq!(done.outcome, RunEnd::Completed);
        // The research agent's operation id is the run id; the work order
        // keeps its own attribute.
        assert_eq!(done.operation_id, "r-1");
        assert_eq!(done.work_order_id.as_deref(), Some("wo-1"));
        assert_eq!(done.correlation_id, None);
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
        let spans = run_trace(&r).unwrap().into_spans();
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
        let str = |s: &str| AttrValue::Str(s.into());
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
        let spans = run_trace(&r).unwrap().into_spans();
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
}
