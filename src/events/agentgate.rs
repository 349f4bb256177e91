//! AgentGate's dashboard frames (`GET /ws`, listed in docs/api-reference.md): four of our event
//! types as AgentGate's WebSocket broadcaster builds them, exactly its keys in its order, as
//! `JSON.stringify` prints them. Each value's text is taken from the event's JSON as it is, so what
//! a client sent (the metrics) goes out unchanged.

use std::collections::BTreeMap;

use serde_json::value::RawValue;

use crate::json_text::{push_key, push_str};

/// Our event types that have a frame.
pub const KINDS: [&str; 6] = [
    "iteration_started",
    "iteration_completed",
    "phase_completed",
    "run_completed",
    "run_failed",
    "run_canceled",
];

/// A frame's type and its own fields, each with the event field it takes.
fn shape(kind: &str) -> Option<(&'static str, &'static [(&'static str, &'static str)])> {
    Some(match kind {
        "iteration_started" => ("iteration:started", &[("iteration", "iteration")]),
        "iteration_completed" => (
            "iteration:completed",
            &[("iteration", "iteration"), ("success", "success")],
        ),
        "phase_completed" => (
            "phase:completed",
            &[("phase", "phase"), ("durationMs", "duration_ms")],
        ),
        "run_completed" | "run_failed" | "run_canceled" => (
            "run:completed",
            &[("result", "result"), ("metrics", "metrics")],
        ),
        _ => return None,
    })
}

/// The frame of an event; `None` for a type without one, or without a run.
pub fn frame(kind: &str, json: &str) -> Option<String> {
    let (frame_type, fields) = shape(kind)?;
    // Our events' keys are our own names, never escaped, so they borrow.
    let members: BTreeMap<&str, &RawValue> = serde_json::from_str(json).ok()?;
    let member = |k: &str| members.get(k).map(|v| v.get());
    let run_id = member("run_id")?;
    let work_order = member("work_order_id").or(member("correlation_id"))?;
    let mut out = String::with_capacity(json.len().min(256));
    out.push_str("{\"type\":");
    push_str(&mut out, frame_type);
    let ids = [("workOrderId", work_order), ("runId", run_id)];
    let own = fields
        .iter()
        .map(|(name, ours)| (*name, member(ours).unwrap_or("null")));
    for (name, value) in ids.into_iter().chain(own) {
        out.push(',');
        push_key(&mut out, name);
        if name == "durationMs" {
            push_js_number(&mut out, value);
        } else {
            out.push_str(value);
        }
    }
    out.push('}');
    Some(out)
}

/// Appends the number `text` as JavaScript prints it: `9000`, not `9000.0`.
fn push_js_number(out: &mut String, text: &str) {
    match text.parse::<f64>() {
        // Below 1e21 JavaScript prints whole numbers in full, as `{:.0}` does; + 0.0 makes -0 `0`.
        Ok(x) if x.is_finite() && x.fract() == 0.0 && x.abs() < 1e21 => {
            out.push_str(&format!("{:.0}", x + 0.0));
        }
        _ => out.push_str(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn keys(frame: &str) -> Vec<String> {
        let members: BTreeMap<&str, &RawValue> = serde_json::from_str(frame).unwrap();
        // Key order as printed, which a map would lose.
        let mut at: Vec<(usize, String)> = members
            .keys()
            .map(|k| (frame.find(&format!("\"{k}\":")).unwrap(), k.to_string()))
            .collect();
        at.sort();
        at.into_iter().map(|(_, k)| k).collect()
    }

    #[test]
    fn each_kind_has_a_frame_with_exactly_its_keys() {
        let envelope = r#"{"seq":4,"received_at":"x","type":"T","timestamp":"t","run_id":"r1","correlation_id":"c1","work_order_id":"wo-1""#;
        let cases = [
            (
                "iteration_started",
                r#","iteration":2,"max_iterations":3,"metadata":{"a":1}}"#,
                json!({"type": "iteration:started", "workOrderId": "wo-1", "runId": "r1", "iteration": 2}),
            ),
            (
                "iteration_completed",
                r#","iteration":2,"success":false,"phase_timings":{"b":1}}"#,
                json!({"type": "iteration:completed", "workOrderId": "wo-1", "runId": "r1",
                       "iteration": 2, "success": false}),
            ),
            (
                "phase_completed",
                r#","duration_ms":9000.0,"iteration":1,"phase":"build","success":true}"#,
                json!({"type": "phase:completed", "workOrderId": "wo-1", "runId": "r1",
                       "phase": "build", "durationMs": 9000}),
            ),
            (
                "run_failed",
                r#","result":"failed","status":"failed","metrics":null}"#,
                json!({"type": "run:completed", "workOrderId": "wo-1", "runId": "r1",
                       "result": "failed", "metrics": null}),
            ),
        ];
        for (kind, own, want) in cases {
            let json = format!("{envelope}{own}");
            let frame = frame(kind, &json).unwrap();
            assert_eq!(
                serde_json::from_str::<Value>(&frame).unwrap(),
                want,
                "{frame}"
            );
            let order: Vec<&str> = ["type", "workOrderId", "runId"]
                .into_iter()
                .chain(shape(kind).unwrap().1.iter().map(|(name, _)| *name))
                .collect();
            assert_eq!(keys(&frame), order);
        }
        for kind in KINDS {
            assert!(shape(kind).is_some(), "{kind}");
        }
        assert_eq!(frame("phase_started", &format!("{envelope}}}")), None);
    }

    #[test]
    fn metrics_go_out_byte_for_byte_and_the_correlation_stands_in_for_a_work_order() {
        let metrics = r#"{"totalDurationMs":1.50,"b": [1e3, "\u00e9"],"a":{}}"#;
        let json = format!(
            r#"{{"seq":1,"type":"run_completed","run_id":"r2","correlation_id":"r2","result":"succeeded","metrics":{metrics}}}"#
        );
        assert_eq!(
            frame("run_completed", &json).unwrap(),
            format!(
                r#"{{"type":"run:completed","workOrderId":"r2","runId":"r2","result":"succeeded","metrics":{metrics}}}"#
            )
        );
    }

    #[test]
    fn durations_print_as_javascript_prints_them() {
        for (text, js) in [
            ("9000.0", "9000"),
            ("0.0", "0"),
            ("-0.0", "0"),
            ("2.5", "2.5"),
            ("1e21", "1e21"),
            ("1e20", "100000000000000000000"),
            ("null", "null"),
        ] {
            let mut out = String::new();
            push_js_number(&mut out, text);
            assert_eq!(out, js, "{text}");
        }
    }
}
