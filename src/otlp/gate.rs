//! A gate check as trace data: a span event, and the attributes its phase
//! span takes from it.

use super::span::{unix_nanos, AttrValue, SpanEvent};

const GATE_EVENT: &str = "conductor.gate";

/// One gate check. Plain data; safe to share across threads.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GateEvent {
    pub gate: String,
    pub passed: bool,
    pub reason: Option<String>,
    pub at_unix: f64,
}

impl GateEvent {
    /// `gate.name`, `gate.passed` and, when given, `gate.reason`: the
    /// attributes of its event, and of its phase's span when it is the
    /// phase's last check.
    pub(super) fn attributes(&self) -> Vec<(String, AttrValue)> {
        let mut attributes = vec![
            ("gate.name".to_string(), AttrValue::Str(self.gate.clone())),
            ("gate.passed".to_string(), AttrValue::Bool(self.passed)),
        ];
        if let Some(reason) = &self.reason {
            attributes.push(("gate.reason".to_string(), AttrValue::Str(reason.clone())));
        }
        attributes
    }

    /// The `conductor.gate` span event of this check, at its time.
    pub(super) fn into_event(self) -> SpanEvent {
        SpanEvent {
            name: GATE_EVENT.to_string(),
            time_unix_nanos: unix_nanos(self.at_unix),
            attributes: self.attributes(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_check_becomes_an_event_with_its_reason_when_given() {
        let check = GateEvent {
            gate: "lint".into(),
            passed: false,
            reason: Some("2 errors".into()),
            at_unix: 101.0,
        };
        assert_eq!(
            check.clone().into_event(),
            SpanEvent {
                name: "conductor.gate".into(),
                time_unix_nanos: 101_000_000_000,
                attributes: vec![
                    ("gate.name".to_string(), AttrValue::Str("lint".into())),
                    ("gate.passed".to_string(), AttrValue::Bool(false)),
                    ("gate.reason".to_string(), AttrValue::Str("2 errors".into())),
                ],
            }
        );
        let bare = GateEvent {
            reason: None,
            passed: true,
            ..check
        };
        assert_eq!(
            bare.attributes(),
            vec![
                ("gate.name".to_string(), AttrValue::Str("lint".into())),
                ("gate.passed".to_string(), AttrValue::Bool(true)),
            ]
        );
    }
}
