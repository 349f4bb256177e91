//! A finished run as the facts its trace is built from.

use super::{Run, Status};
use crate::otlp::{GateEvent, PhaseSpan, RunTrace, TraceContext};

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
    let ended = run.ended_at?;
    let ctx = run
        .traceparent
        .as_deref()
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
    let phases = run
        .detail
        .spans
        .iter()
        .map(|p| PhaseSpan {
            name: p.name.clone(),
            started_unix: p.started,
            ended_unix: p.ended.unwrap_or(ended),
            success: p.success,
            input_tokens: p.input_tokens,
            output_tokens: p.output_tokens,
            model: p.model.clone(),
            gates: p.gates.iter().map(gate_event).collect(),
        })
        .collect();
    Some(RunTrace {
        ctx,
        run_id: run.run_id.clone(),
        operation_id: run
            .work_order_id
            .clone()
            .unwrap_or_else(|| run.correlation().to_string()),
        started_unix: run.started_at,
        ended_unix: ended,
        failed: match run.status {
            Status::Failed => Some(
                run.error
                    .clone()
                    .unwrap_or_else(|| "run failed".to_string()),
            ),
            _ => None,
        },
        phases,
        gates: run.detail.root_gates.iter().map(gate_event).collect(),
        input_tokens,
        output_tokens,
        model,
    })
}
