//! A whole run as a trace: the facts of a finished run in, spans out.

use super::context::TraceContext;
use super::id::new_span_id;
use super::span::{unix_nanos, AttrValue, Span, SpanEvent, SpanStatus};

/// The facts of one finished run, from which its trace is built. Plain
/// data; safe to share across threads.
#[derive(Clone, Debug, PartialEq)]
pub struct RunTrace {
    /// The trace to join: the caller's (from `traceparent`) or a new one.
    pub ctx: TraceContext,
    /// The run's id.
    pub run_id: String,
    /// The id that ties the run to its work: the correlation or work-order
    /// id, or the run id when there is none.
    pub operation_id: String,
    /// Unix seconds when the run started.
    pub started_unix: f64,
    /// Unix seconds when it ended.
    pub ended_unix: f64,
    /// The error text of a failed run; `None` when it succeeded.
    pub failed: Option<String>,
    /// Its phases, each becoming a child span of the run.
    pub phases: Vec<PhaseSpan>,
    /// Gate checks made outside any phase; they become events on the run's
    /// own span.
    pub gates: Vec<GateEvent>,
    /// Input tokens used by the whole run.
    pub input_tokens: u64,
    /// Output tokens produced by the whole run.
    pub output_tokens: u64,
    /// The model the run used, when known.
    pub model: Option<String>,
}

/// One phase of a run. Plain data; safe to share across threads.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PhaseSpan {
    /// The phase name; the span is `conductor.phase.<name>`.
    pub name: String,
    /// Unix seconds when it started.
    pub started_unix: f64,
    /// Unix seconds when it ended.
    pub ended_unix: f64,
    /// Whether it succeeded, when known.
    pub success: Option<bool>,
    /// Input tokens used in this phase.
    pub input_tokens: u64,
    /// Output tokens produced in this phase.
    pub output_tokens: u64,
    /// The model used in this phase, when known.
    pub model: Option<String>,
    /// Gate checks made during it.
    pub gates: Vec<GateEvent>,
}

/// One gate check. Plain data; safe to share across threads.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GateEvent {
    /// The gate's name.
    pub gate: String,
    /// Whether the check passed.
    pub passed: bool,
    /// Why it passed or failed, when given.
    pub reason: Option<String>,
    /// Unix seconds when it was checked.
    pub at_unix: f64,
}

/// The root span's name.
const RUN_SPAN: &str = "conductor.run";
/// The prefix of a phase span's name.
const PHASE_SPAN_PREFIX: &str = "conductor.phase.";
/// The name of a gate check event.
const GATE_EVENT: &str = "conductor.gate";

impl RunTrace {
    /// The run's spans: the root `conductor.run` first, then one
    /// `conductor.phase.<name>` child per phase, in order.
    ///
    /// Every span carries `operation.id` and `run.id`. Token usage goes on
    /// as `gen_ai.usage.input_tokens` and `gen_ai.usage.output_tokens` when
    /// either count is non-zero (a pair of zeros means no usage was
    /// reported, and claiming zero would mislead), and the model as
    /// `gen_ai.request.model` when known. The root's status is Ok, or
    /// Error with the failure text; a phase's is Ok, Error or Unset after
    /// its `success`. An end before the start is moved to the start.
    pub fn into_spans(self) -> Vec<Span> {
        let root_id = new_span_id();
        let ids = [
            (
                "operation.id".to_string(),
                AttrValue::Str(self.operation_id),
            ),
            ("run.id".to_string(), AttrValue::Str(self.run_id)),
        ];
        let mut root_attributes = ids.to_vec();
        push_usage(
            &mut root_attributes,
            self.input_tokens,
            self.output_tokens,
            self.model,
        );
        let (start, end) = times(self.started_unix, self.ended_unix);
        let mut spans = Vec::with_capacity(1 + self.phases.len());
        spans.push(Span {
            trace_id: self.ctx.trace_id,
            span_id: root_id,
            parent_span_id: self.ctx.parent_span_id,
            name: RUN_SPAN.to_string(),
            start_unix_nanos: start,
            end_unix_nanos: end,
            attributes: root_attributes,
            events: self.gates.into_iter().map(gate_event).collect(),
            status: self.failed.map_or(SpanStatus::Ok, SpanStatus::Error),
        });
        for phase in self.phases {
            let mut attributes = ids.to_vec();
            push_usage(
                &mut attributes,
                phase.input_tokens,
                phase.output_tokens,
                phase.model,
            );
            let (start, end) = times(phase.started_unix, phase.ended_unix);
            let status = match phase.success {
                Some(true) => SpanStatus::Ok,
                Some(false) => SpanStatus::Error(format!("phase {} failed", phase.name)),
                None => SpanStatus::Unset,
            };
            spans.push(Span {
                trace_id: self.ctx.trace_id,
                span_id: new_span_id(),
                parent_span_id: Some(root_id),
                name: format!("{PHASE_SPAN_PREFIX}{}", phase.name),
                start_unix_nanos: start,
                end_unix_nanos: end,
                attributes,
                events: phase.gates.into_iter().map(gate_event).collect(),
                status,
            });
        }
        spans
    }
}

fn times(started: f64, ended: f64) -> (u64, u64) {
    let start = unix_nanos(started);
    (start, unix_nanos(ended).max(start))
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
            let n = i64::try_from(n).unwrap_or(i64::MAX);
            attributes.push((key.to_string(), AttrValue::Int(n)));
        }
    }
    if let Some(model) = model.filter(|m| !m.is_empty()) {
        attributes.push(("gen_ai.request.model".to_string(), AttrValue::Str(model)));
    }
}

fn gate_event(gate: GateEvent) -> SpanEvent {
    let mut attributes = vec![
        ("gate.name".to_string(), AttrValue::Str(gate.gate)),
        ("gate.passed".to_string(), AttrValue::Bool(gate.passed)),
    ];
    if let Some(reason) = gate.reason {
        attributes.push(("gate.reason".to_string(), AttrValue::Str(reason)));
    }
    SpanEvent {
        name: GATE_EVENT.to_string(),
        time_unix_nanos: unix_nanos(gate.at_unix),
        attributes,
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
            operation_id: "wo-42".into(),
            started_unix: 100.0,
            ended_unix: 110.5,
            failed: None,
            phases: vec![
                PhaseSpan {
                    name: "plan".into(),
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
        assert_eq!(root.name, "conductor.run");
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
                Some(&AttrValue::Str("wo-42".into()))
            );
            assert_eq!(s.trace_id, [7; 16]);
            assert_ne!(s.span_id, [0; 8]);
        }
        let plan = &spans[1];
        assert_eq!(plan.name, "conductor.phase.plan");
        assert_eq!(plan.parent_span_id, Some(root.span_id));
        assert_eq!(plan.status, SpanStatus::Ok);
        let gate = &plan.events[0];
        assert_eq!(gate.name, "conductor.gate");
        assert_eq!(gate.time_unix_nanos, 101_000_000_000);
        assert_eq!(
            gate.attributes,
            vec![
                ("gate.name".to_string(), AttrValue::Str("lint".into())),
                ("gate.passed".to_string(), AttrValue::Bool(false)),
                ("gate.reason".to_string(), AttrValue::Str("2 errors".into())),
            ]
        );
        let review = &spans[2];
        assert_eq!(review.status, SpanStatus::Unset);
        assert_eq!(review.end_unix_nanos, review.start_unix_nanos);
        assert_eq!(attr(review, "gen_ai.usage.input_tokens"), None);
        assert_eq!(attr(review, "gen_ai.request.model"), None);
        assert_ne!(review.span_id, plan.span_id);
    }

    #[test]
    fn failures_become_error_statuses() {
        let mut r = run();
        r.failed = Some("tests failed".into());
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
}
