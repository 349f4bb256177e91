//! A whole run as a trace: the facts of a finished run in, spans out. The
//! names and attributes follow the ktrdr research agent's tracing, so its
//! searches work unchanged.

use super::context::TraceContext;
use super::gate::GateEvent;
use super::id::new_span_id;
use super::span::{unix_nanos, AttrValue, Span, SpanEvent, SpanStatus};
use crate::runs::event::short_phase;

/// The facts of one finished run, from which its trace is built.
#[derive(Clone, Debug, PartialEq)]
pub struct RunTrace {
    /// The trace to join: the caller's (from `traceparent`) or a new one.
    pub ctx: TraceContext,
    pub run_id: String,
    /// The id `POST /api/v1/agent/trigger` answers with: the run id.
    pub operation_id: String,
    pub work_order_id: Option<String>,
    pub correlation_id: Option<String>,
    pub strategy: Option<String>,
    pub started_unix: f64,
    pub ended_unix: f64,
    pub outcome: RunEnd,
    pub phases: Vec<PhaseSpan>,
    /// Gate checks made outside any phase, events on the run's own span.
    pub gates: Vec<GateEvent>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub model: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RunEnd {
    Completed,
    Failed(String),
    Cancelled,
}

impl RunEnd {
    fn as_str(&self) -> &'static str {
        match self {
            RunEnd::Completed => "completed",
            RunEnd::Failed(_) => "failed",
            RunEnd::Cancelled => "cancelled",
        }
    }
}

/// One phase of a run, a child span of the run's.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PhaseSpan {
    pub name: String,
    pub iteration: Option<u64>,
    pub started_unix: f64,
    pub ended_unix: f64,
    pub success: Option<bool>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub model: Option<String>,
    /// Gate checks made during it, oldest first.
    pub gates: Vec<GateEvent>,
    pub accuracy: Option<f64>,
}

/// ktrdr's span of a whole research cycle.
const RUN_SPAN: &str = "agent.research_cycle";
const PHASE_SPAN_PREFIX: &str = "agent.phase.";
/// The short names of the phases whose spans carry `strategy_name`: the
/// one that designs the strategy and the one that assesses it, as ktrdr's
/// do.
const STRATEGY_PHASES: [&str; 2] = ["design", "assessment"];
const OPERATION_TYPE: &str = "agent_research";
const EXCEPTION_EVENT: &str = "exception";

impl RunTrace {
    /// The run's spans: the root `agent.research_cycle` first, then one
    /// `agent.phase.<short>` child per phase, in order (the attributes are
    /// listed in docs/api-reference.md). The root spans from the earliest
    /// start to the latest end among the run and its phases, so each phase
    /// lies inside it whatever clock its times came from. A cancelled run's
    /// status is Unset: it neither succeeded nor failed.
    pub fn into_spans(mut self) -> Vec<Span> {
        let root_id = new_span_id();
        let ids = [
            text("operation.id", std::mem::take(&mut self.operation_id)),
            text("run.id", std::mem::take(&mut self.run_id)),
        ];
        let phases: Vec<Span> = std::mem::take(&mut self.phases)
            .into_iter()
            .map(|phase| self.phase_span(phase, &ids, root_id))
            .collect();
        let (start, end) = times(self.started_unix, self.ended_unix);
        let start = phases
            .iter()
            .map(|s| s.start_unix_nanos)
            .fold(start, u64::min);
        let end = phases.iter().map(|s| s.end_unix_nanos).fold(end, u64::max);
        let mut spans = Vec::with_capacity(1 + phases.len());
        spans.push(self.run_span(root_id, &ids, start, end));
        spans.extend(phases);
        spans
    }

    fn phase_span(&self, phase: PhaseSpan, ids: &[(String, AttrValue)], root_id: [u8; 8]) -> Span {
        let short = short_phase(&phase.name);
        let mut attributes = ids.to_vec();
        attributes.push(text("phase", phase.name.clone()));
        if let Some(n) = phase.iteration {
            attributes.push(("iteration".to_string(), int(n)));
        }
        if let Some(strategy) = self
            .strategy
            .as_ref()
            .filter(|_| STRATEGY_PHASES.contains(&short))
        {
            attributes.push(text("strategy_name", strategy.clone()));
        }
        // Like the gen_ai pair, only when usage was reported.
        let tokens = phase.input_tokens.saturating_add(phase.output_tokens);
        if tokens > 0 {
            attributes.push(("tokens".to_string(), int(tokens)));
        }
        if let Some(accuracy) = phase.accuracy {
            attributes.push(("accuracy".to_string(), AttrValue::Double(accuracy)));
        }
        push_usage(
            &mut attributes,
            phase.input_tokens,
            phase.output_tokens,
            phase.model,
        );
        // ktrdr gives a phase one gate result. When several checks were
        // made the last one wins: a later check (a retry, or the next
        // gate) supersedes what came before. Every check stays an event.
        if let Some(last) = phase.gates.last() {
            attributes.extend(last.attributes());
        }
        let (start, end) = times(phase.started_unix, phase.ended_unix);
        let status = match phase.success {
            Some(true) => SpanStatus::Ok,
            Some(false) => SpanStatus::Error(format!("phase {} failed", phase.name)),
            None => SpanStatus::Unset,
        };
        Span {
            trace_id: self.ctx.trace_id,
            span_id: new_span_id(),
            parent_span_id: Some(root_id),
            name: format!("{PHASE_SPAN_PREFIX}{short}"),
            start_unix_nanos: start,
            end_unix_nanos: end,
            attributes,
            events: phase.gates.into_iter().map(GateEvent::into_event).collect(),
            status,
        }
    }

    fn run_span(self, root_id: [u8; 8], ids: &[(String, AttrValue)], start: u64, end: u64) -> Span {
        let mut attributes = ids.to_vec();
        for (key, id) in [
            ("work_order.id", self.work_order_id),
            ("correlation.id", self.correlation_id),
        ] {
            if let Some(id) = id {
                attributes.push(text(key, id));
            }
        }
        attributes.push(text("operation.type", OPERATION_TYPE.to_string()));
        attributes.push(text("outcome", self.outcome.as_str().to_string()));
        push_usage(
            &mut attributes,
            self.input_tokens,
            self.output_tokens,
            self.model,
        );
        let mut events: Vec<SpanEvent> =
            self.gates.into_iter().map(GateEvent::into_event).collect();
        let status = match self.outcome {
            RunEnd::Completed => SpanStatus::Ok,
            RunEnd::Cancelled => SpanStatus::Unset,
            RunEnd::Failed(error) => {
                attributes.push(text("error", error.clone()));
                // The OpenTelemetry exception convention, which trace UIs
                // show as the span's error, at the end of the run.
                events.push(SpanEvent {
                    name: EXCEPTION_EVENT.to_string(),
                    time_unix_nanos: end,
                    attributes: vec![text("exception.message", error.clone())],
                });
                SpanStatus::Error(error)
            }
        };
        Span {
            trace_id: self.ctx.trace_id,
            span_id: root_id,
            parent_span_id: self.ctx.parent_span_id,
            name: RUN_SPAN.to_string(),
            start_unix_nanos: start,
            end_unix_nanos: end,
            attributes,
            events,
            status,
        }
    }
}

fn text(key: &str, value: String) -> (String, AttrValue) {
    (key.to_string(), AttrValue::Str(value))
}

fn times(started: f64, ended: f64) -> (u64, u64) {
    let start = unix_nanos(started);
    (start, unix_nanos(ended).max(start))
}

/// An integer attribute; past `i64::MAX` it saturates, as OTLP has no
/// unsigned integers.
fn int(n: u64) -> AttrValue {
    AttrValue::Int(i64::try_from(n).unwrap_or(i64::MAX))
}

fn push_usage(
    attributes: &mut Vec<(String, AttrValue)>,
    input: u64,
    output: u64,
    model: Option<String>,
) {
    if input > 0 || output > 0 {
        for (key, n) in [
            ("gen_ai.usage.input_tokens", input),
            ("gen_ai.usage.output_tokens", output),
        ] {
            attributes.push((key.to_string(), int(n)));
        }
    }
    if let Some(model) = model.filter(|m| !m.is_empty()) {
        attributes.push(text("gen_ai.request.model", model));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr<'a>(span: &'a Span, key: &str) -> Option<&'a AttrValue> {
        span.attributes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }

    fn run() -> RunTrace {
        RunTrace {
            ctx: TraceContext {
                trace_id: [7; 16],
                parent_span_id: Some([9; 8]),
            },
            run_id: "run-1".into(),
            operation_id: "run-1".into(),
            work_order_id: Some("wo-42".into()),
            correlation_id: None,
            strategy: Some("momentum-v2".into()),
            started_unix: 100.0,
            ended_unix: 110.5,
            outcome: RunEnd::Completed,
            phases: vec![
                PhaseSpan {
                    name: "plan".into(),
                    iteration: Some(1),
                    started_unix: 100.0,
                    ended_unix: 102.0,
                    success: Some(true),
                    input_tokens: 10,
                    output_tokens: 3,
                    model: Some("claude-x".into()),
                    gates: vec![GateEvent {
                        gate: "lint".into(),
                        passed: false,
                        reason: Some("2 errors".into()),
                        at_unix: 101.0,
                    }],
                    accuracy: None,
                },
                PhaseSpan {
                    name: "review".into(),
                    started_unix: 103.0,
                    ended_unix: 101.0,
                    ..PhaseSpan::default()
                },
            ],
            gates: vec![GateEvent {
                gate: "budget".into(),
                passed: true,
                reason: None,
                at_unix: 100.5,
            }],
            input_tokens: 10,
            output_tokens: 3,
            model: Some("claude-x".into()),
        }
    }

    #[test]
    fn builds_a_root_and_one_child_per_phase() {
        let spans = run().into_spans();
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
        let mut r = run();
        r.outcome = RunEnd::Failed("tests failed".into());
        r.phases[0].success = Some(false);
        r.input_tokens = u64::MAX;
        r.ctx = TraceContext {
            trace_id: [1; 16],
            parent_span_id: None,
        };
        let spans = r.into_spans();
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
        let spans = run().into_spans();
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

        let mut failed = run();
        failed.outcome = RunEnd::Failed("tests failed".into());
        let spans = failed.into_spans();
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

        let mut cancelled = run();
        cancelled.outcome = RunEnd::Cancelled;
        let spans = cancelled.into_spans();
        assert_eq!(
            attr(&spans[0], "outcome"),
            Some(&AttrValue::Str("cancelled".into()))
        );
        assert_eq!(spans[0].status, SpanStatus::Unset);
        assert_eq!(attr(&spans[0], "error"), None);
    }

    #[test]
    fn the_last_gate_checked_in_a_phase_is_its_gate_result() {
        let mut r = run();
        r.phases[0].gates.push(GateEvent {
            gate: "tests".into(),
            passed: true,
            reason: None,
            at_unix: 101.5,
        });
        let spans = r.into_spans();
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
        let mut r = run();
        // The run's own times come from the server's clock; its phases'
        // from the emitter's, here well before and after them.
        r.started_unix = 1000.0;
        r.ended_unix = 1010.0;
        r.phases[0].started_unix = 500.0;
        r.phases[0].ended_unix = 510.0;
        r.phases[1].started_unix = 1005.0;
        r.phases[1].ended_unix = 1020.25;
        let spans = r.into_spans();
        let root = &spans[0];
        assert_eq!(root.start_unix_nanos, 500_000_000_000);
        assert_eq!(root.end_unix_nanos, 1_020_250_000_000);
        for phase in &spans[1..] {
            assert!(phase.start_unix_nanos >= root.start_unix_nanos);
            assert!(phase.end_unix_nanos <= root.end_unix_nanos);
        }
        // Phases inside the run's own times leave them as they are.
        let mut inside = run();
        inside.started_unix = 90.0;
        inside.ended_unix = 120.0;
        let spans = inside.into_spans();
        assert_eq!(spans[0].start_unix_nanos, 90_000_000_000);
        assert_eq!(spans[0].end_unix_nanos, 120_000_000_000);
    }

    #[test]
    fn research_agent_phases_get_its_span_names_and_attributes() {
        let mut r = run();
        r.correlation_id = Some("corr-7".into());
        let phase = |name: &str, input, output, accuracy| PhaseSpan {
            name: name.into(),
            started_unix: 101.0,
            ended_unix: 102.0,
            input_tokens: input,
            output_tokens: output,
            accuracy,
            ..PhaseSpan::default()
        };
        r.phases = vec![
            phase("designing", 1200, 300, None),
            phase("training", 0, 0, Some(0.625)),
            phase("backtesting", 0, 0, None),
            phase("assessing", 800, 200, None),
            // Reported under the short name already.
            phase("design", 0, 0, None),
        ];
        let spans = r.into_spans();
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
        let str = |s: &str| AttrValue::Str(s.into());
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
        let mut bare = run();
        bare.strategy = None;
        bare.work_order_id = None;
        bare.phases[0].name = "designing".into();
        let spans = bare.into_spans();
        assert_eq!(attr(&spans[1], "strategy_name"), None);
        assert_eq!(attr(&spans[0], "work_order.id"), None);
        assert_eq!(attr(&spans[0], "correlation.id"), None);
    }

    #[test]
    fn a_phase_token_sum_saturates() {
        let mut r = run();
        r.phases[0].input_tokens = u64::MAX;
        let spans = r.into_spans();
        assert_eq!(attr(&spans[1], "tokens"), Some(&AttrValue::Int(i64::MAX)));
    }
}
