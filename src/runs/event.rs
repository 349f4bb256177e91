//! Run events: what an orchestrator reports about the inside of a run.

use serde_json::{json, Map, Value};

use crate::error::Error;
use crate::time;

/// The most events one batch may carry.
pub const MAX_BATCH: usize = 1000;

/// One event inside a run.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    IterationStarted {
        iteration: u64,
    },
    IterationCompleted {
        iteration: u64,
        success: bool,
    },
    PhaseStarted {
        phase: String,
        iteration: Option<u64>,
    },
    PhaseCompleted {
        phase: String,
        success: bool,
        /// As the orchestrator measured it, else as the server did.
        duration_ms: Option<f64>,
        /// The run's current one when not sent, here and below.
        iteration: Option<u64>,
    },
    /// A quality gate was checked.
    GateChecked {
        gate: String,
        passed: bool,
        reason: Option<String>,
        iteration: Option<u64>,
    },
    Tokens {
        phase: String,
        model: Option<String>,
        input_tokens: u64,
        output_tokens: u64,
    },
    /// Delivery (a PR, a deploy) began.
    DeliveryStarted,
    DeliveryCompleted {
        success: bool,
        pr_url: Option<String>,
        ci_status: Option<String>,
    },
}

/// An event with the time it happened.
#[derive(Clone, Debug, PartialEq)]
pub struct Timed {
    /// Unix seconds.
    pub at: f64,
    pub event: Event,
    /// What the emitter sent beside the typed fields (`metadata`, ...), moving no metric;
    /// `None` for nearly every event, which keeps them small.
    pub extra: Option<Box<Map<String, Value>>>,
}

/// True for phase, gate and model names: `[A-Za-z0-9_.:-]{1,64}`.
pub fn valid_name(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
}

/// The research agent's name for `phase` in phase spans: it reports `designing` and
/// `assessing` but counts their tokens as `design` and `assessment`.
pub fn short_phase(phase: &str) -> &str {
    match phase {
        "designing" => "design",
        "assessing" => "assessment",
        other => other,
    }
}

/// Whether `a` and `b` name the same phase ([`short_phase`]).
pub fn same_phase(a: &str, b: &str) -> bool {
    short_phase(a) == short_phase(b)
}

/// The `accuracy` in an event's `metadata`, when a JSON number.
pub fn metadata_accuracy(e: &Timed) -> Option<f64> {
    e.extra.as_ref()?.get("metadata")?.get("accuracy")?.as_f64()
}

/// Parses one event object or an array, all or nothing; errors name e.g. `events[3].phase`.
pub fn parse_batch(value: &Value, now: f64) -> Result<Vec<Timed>, Error> {
    crate::batch::parse(value, "event", MAX_BATCH, |_, v| parse_one(v, now))
}

/// The fields of type `kind` besides `type` and `timestamp`; `None` for an unknown type.
pub(super) fn allowed_fields(kind: &str) -> Option<&'static [&'static str]> {
    Some(match kind {
        "iteration_started" => &["iteration"],
        "iteration_completed" => &["iteration", "success"],
        "phase_started" => &["phase", "iteration"],
        "phase_completed" => &["phase", "success", "duration_ms", "iteration"],
        "gate_checked" => &["gate", "passed", "reason", "iteration"],
        "tokens" => &["phase", "model", "input_tokens", "output_tokens"],
        "delivery_started" => &[],
        "delivery_completed" => &["success", "pr_url", "ci_status"],
        _ => return None,
    })
}

/// The emitter's own fields an event may carry through, as sent, moving no metric.
fn extra_fields(kind: &str) -> &'static [&'static str] {
    match kind {
        "iteration_started" => &["metadata", "max_iterations", "feedback"],
        "iteration_completed" => &["metadata", "phase_timings", "gate_results"],
        _ => &["metadata"],
    }
}

/// Checks the shape of an extra field.
fn check_extra(k: &str, v: &Value) -> Result<(), FieldError> {
    match (k, v) {
        ("metadata", Value::Object(_)) => Ok(()),
        ("metadata", _) => bad(k, "must be a JSON object"),
        ("max_iterations", Value::Number(n)) if n.is_u64() => Ok(()),
        ("max_iterations", _) => bad(k, "must be a non-negative integer"),
        ("feedback", Value::String(_)) => Ok(()),
        ("feedback", _) => bad(k, "must be a string"),
        ("gate_results", Value::Array(_)) => Ok(()),
        ("gate_results", _) => bad(k, "must be an array"),
        ("phase_timings", Value::Object(m)) => {
            let ms = |v: &Value| v.as_f64().is_some_and(|x| x >= 0.0 && x.is_finite());
            let why = "must map phase names to non-negative milliseconds";
            let wrong = m.iter().find(|(p, v)| !valid_name(p) || !ms(v));
            wrong.map_or(Ok(()), |(p, _)| bad(&format!("{k}.{p}"), why))
        }
        _ => bad(k, "must be an object of phase names to milliseconds"),
    }
}

/// A field at fault and what is wrong with it.
pub(super) type FieldError = (String, String);

pub(super) fn bad<T>(k: &str, why: &str) -> Result<T, FieldError> {
    Err((k.to_string(), why.to_string()))
}

/// A field's value as either parser reads it.
#[derive(Clone, Copy)]
pub(super) enum Raw<'a> {
    Str(&'a str),
    /// A non-negative integer.
    Int(u64),
    /// Any other number.
    Num(f64),
    Bool(bool),
    Null,
    /// An array or an object.
    Other,
}

/// An event's fields as either parser reads them, checked by the same methods: the
/// parsers differ only in what a bad field costs (an error, or leaving the fast path).
pub(super) trait EventFields {
    /// The field `k`, when present.
    fn raw(&self, k: &str) -> Option<Raw<'_>>;

    fn u64(&self, k: &str) -> Result<u64, FieldError> {
        match self.raw(k) {
            Some(Raw::Int(n)) => Ok(n),
            Some(_) => bad(k, "must be a non-negative integer"),
            None => bad(k, "is required"),
        }
    }

    /// `read(k)`, or `None` when `k` is absent or null.
    fn opt<T>(
        &self,
        k: &str,
        read: impl FnOnce(&Self, &str) -> Result<T, FieldError>,
    ) -> Result<Option<T>, FieldError> {
        match self.raw(k) {
            None | Some(Raw::Null) => Ok(None),
            Some(_) => read(self, k).map(Some),
        }
    }

    fn bool(&self, k: &str) -> Result<bool, FieldError> {
        match self.raw(k) {
            Some(Raw::Bool(b)) => Ok(b),
            Some(_) => bad(k, "must be true or false"),
            None => bad(k, "is required"),
        }
    }

    fn name(&self, k: &str) -> Result<String, FieldError> {
        match self.raw(k) {
            Some(Raw::Str(s)) if valid_name(s) => Ok(s.to_string()),
            Some(Raw::Str(_)) => bad(k, "must be 1-64 characters of A-Z a-z 0-9 _ . : -"),
            Some(_) => bad(k, "must be a string"),
            None => bad(k, "is required"),
        }
    }

    fn opt_text(&self, k: &str) -> Result<Option<String>, FieldError> {
        match self.raw(k) {
            None | Some(Raw::Null) => Ok(None),
            Some(Raw::Str(s)) if s.len() <= super::MAX_TEXT_BYTES => Ok(Some(s.to_string())),
            Some(Raw::Str(_)) => bad(k, &super::text_too_long()),
            Some(_) => bad(k, "must be a string"),
        }
    }

    fn opt_ms(&self, k: &str) -> Result<Option<f64>, FieldError> {
        let ms = match self.raw(k) {
            None | Some(Raw::Null) => return Ok(None),
            Some(Raw::Int(n)) => n as f64,
            Some(Raw::Num(x)) => x,
            Some(_) => -1.0,
        };
        match ms >= 0.0 && ms.is_finite() {
            true => Ok(Some(ms)),
            false => bad(k, "must be a non-negative number"),
        }
    }
}

impl EventFields for Map<String, Value> {
    fn raw(&self, k: &str) -> Option<Raw<'_>> {
        Some(match self.get(k)? {
            Value::String(s) => Raw::Str(s),
            Value::Number(n) => n
                .as_u64()
                .map_or(Raw::Num(n.as_f64().unwrap_or(f64::NAN)), Raw::Int),
            Value::Bool(b) => Raw::Bool(*b),
            Value::Null => Raw::Null,
            _ => Raw::Other,
        })
    }
}

/// The event of type `kind` (one [`allowed_fields`] knows) from its fields.
pub(super) fn build<F: EventFields>(kind: &str, f: &F) -> Result<Event, FieldError> {
    Ok(match kind {
        "iteration_started" => Event::IterationStarted {
            iteration: f.u64("iteration")?,
        },
        "iteration_completed" => Event::IterationCompleted {
            iteration: f.u64("iteration")?,
            success: f.bool("success")?,
        },
        "phase_started" => Event::PhaseStarted {
            phase: f.name("phase")?,
            iteration: f.opt("iteration", F::u64)?,
        },
        "phase_completed" => Event::PhaseCompleted {
            phase: f.name("phase")?,
            success: f.bool("success")?,
            duration_ms: f.opt_ms("duration_ms")?,
            iteration: f.opt("iteration", F::u64)?,
        },
        "gate_checked" => Event::GateChecked {
            gate: f.name("gate")?,
            passed: f.bool("passed")?,
            reason: f.opt_text("reason")?,
            iteration: f.opt("iteration", F::u64)?,
        },
        "tokens" => Event::Tokens {
            phase: f.name("phase")?,
            model: f.opt("model", F::name)?,
            input_tokens: f.u64("input_tokens")?,
            output_tokens: f.u64("output_tokens")?,
        },
        "delivery_started" => Event::DeliveryStarted,
        _ => Event::DeliveryCompleted {
            success: f.bool("success")?,
            pr_url: f.opt_text("pr_url")?,
            ci_status: f.opt_text("ci_status")?,
        },
    })
}

/// Parses one event object; errors name the field.
pub(super) fn parse_one(v: &Value, now: f64) -> Result<Timed, FieldError> {
    let Value::Object(map) = v else {
        return bad("type", "the event must be a JSON object");
    };
    let kind = match map.raw("type") {
        Some(Raw::Str(t)) => t,
        Some(_) => return bad("type", "must be a string"),
        None => return bad("type", "is required"),
    };
    let Some(allowed) = allowed_fields(kind) else {
        return Err(("type".to_string(), format!("unknown event type {kind:?}")));
    };
    let extras = extra_fields(kind);
    let own = |k: &str| ["type", "timestamp"].contains(&k) || allowed.contains(&k);
    if let Some(k) = map
        .keys()
        .find(|k| !own(k) && !extras.contains(&k.as_str()))
    {
        return bad(k, "unknown field");
    }
    let event = build(kind, map)?;
    let mut extra = Map::new();
    for k in extras {
        if let Some(v) = map.get(*k).filter(|v| !v.is_null()) {
            check_extra(k, v)?;
            extra.insert(k.to_string(), v.clone());
        }
    }
    let at = parse_at(map.get("timestamp"), now)?;
    Ok(Timed {
        at,
        event,
        extra: (!extra.is_empty()).then(|| Box::new(extra)),
    })
}

/// An event's `timestamp` (Unix seconds or RFC 3339), or `now` without one.
pub(super) fn parse_at(timestamp: Option<&Value>, now: f64) -> Result<f64, FieldError> {
    let at = match timestamp {
        None | Some(Value::Null) => return Ok(now),
        Some(Value::Number(n)) => n.as_f64().filter(|t| t.is_finite() && *t >= 0.0),
        Some(Value::String(s)) => time::parse_rfc3339(s),
        Some(_) => None,
    };
    at.ok_or((
        "timestamp".to_string(),
        "must be Unix seconds or RFC 3339 text".to_string(),
    ))
}

/// The value of an event's own field.
#[derive(Clone, Copy)]
enum FieldValue<'a> {
    U64(u64),
    OptU64(Option<u64>),
    OptF64(Option<f64>),
    Bool(bool),
    Str(&'a str),
    OptStr(Option<&'a str>),
}

impl FieldValue<'_> {
    fn to_json(self) -> Value {
        match self {
            FieldValue::U64(n) => json!(n),
            FieldValue::OptU64(n) => json!(n),
            FieldValue::OptF64(x) => json!(x),
            FieldValue::Bool(b) => json!(b),
            FieldValue::Str(s) => json!(s),
            FieldValue::OptStr(s) => json!(s),
        }
    }

    fn push(self, out: &mut String) {
        use crate::json_text::{
            push_bool, push_opt_f64, push_opt_str, push_opt_u64, push_str, push_u64,
        };
        match self {
            FieldValue::U64(n) => push_u64(out, n),
            FieldValue::OptU64(n) => push_opt_u64(out, n),
            FieldValue::OptF64(x) => push_opt_f64(out, x),
            FieldValue::Bool(b) => push_bool(out, b),
            FieldValue::Str(s) => push_str(out, s),
            FieldValue::OptStr(s) => push_opt_str(out, s),
        }
    }
}

impl Event {
    /// Calls `f` with each own field (not `type`, `timestamp`) in serde_json's key order.
    fn for_each_field<'a>(&'a self, mut f: impl FnMut(&'static str, FieldValue<'a>)) {
        use FieldValue::*;
        match self {
            Event::IterationStarted { iteration } => f("iteration", U64(*iteration)),
            Event::IterationCompleted { iteration, success } => {
                f("iteration", U64(*iteration));
                f("success", Bool(*success));
            }
            Event::PhaseStarted { phase, iteration } => {
                f("iteration", OptU64(*iteration));
                f("phase", Str(phase));
            }
            Event::PhaseCompleted {
                phase,
                success,
                duration_ms,
                iteration,
            } => {
                f("duration_ms", OptF64(*duration_ms));
                f("iteration", OptU64(*iteration));
                f("phase", Str(phase));
                f("success", Bool(*success));
            }
            Event::GateChecked {
                gate,
                passed,
                reason,
                iteration,
            } => {
                f("gate", Str(gate));
                f("iteration", OptU64(*iteration));
                f("passed", Bool(*passed));
                f("reason", OptStr(reason.as_deref()));
            }
            Event::Tokens {
                phase,
                model,
                input_tokens,
                output_tokens,
            } => {
                f("input_tokens", U64(*input_tokens));
                f("model", OptStr(model.as_deref()));
                f("output_tokens", U64(*output_tokens));
                f("phase", Str(phase));
            }
            Event::DeliveryStarted => {}
            Event::DeliveryCompleted {
                success,
                pr_url,
                ci_status,
            } => {
                f("ci_status", OptStr(ci_status.as_deref()));
                f("pr_url", OptStr(pr_url.as_deref()));
                f("success", Bool(*success));
            }
        }
    }
}

impl Timed {
    /// The event as stored in the journal and shown in APIs.
    pub fn to_json(&self) -> Value {
        // The extras' names are none of the typed ones (see `extra_fields`).
        let mut map = self.extra.as_deref().cloned().unwrap_or_default();
        map.insert("type".to_string(), json!(self.kind()));
        self.event.for_each_field(|key, value| {
            map.insert(key.to_string(), value.to_json());
        });
        map.insert("timestamp".to_string(), json!(self.at));
        Value::Object(map)
    }

    /// Appends the fields but `type` and `timestamp` as `to_json` prints them; true if any.
    pub fn push_fields(&self, out: &mut String) -> bool {
        if self.extra.is_some() {
            // Rare: extras interleave with the typed fields, so the value is built whole.
            let mut v = self.to_json();
            if let Some(map) = v.as_object_mut() {
                map.remove("type");
                map.remove("timestamp");
                let text = v.to_string();
                out.push_str(&text[1..text.len() - 1]);
                return text.len() > 2;
            }
        }
        let mut wrote = false;
        self.event.for_each_field(|key, value| {
            // Whole pieces, not a push per separator.
            out.push_str(if wrote { ",\"" } else { "\"" });
            out.push_str(key);
            out.push_str("\":");
            wrote = true;
            value.push(out);
        });
        wrote
    }

    /// Appends exactly `self.to_json().to_string()`, the timestamp pre-printed as `at`
    /// (a batch sharing a time prints it once): every journal record's events go here.
    pub fn push_json_at(&self, out: &mut String, at: &str) {
        if self.extra.is_some() {
            out.push_str(&self.to_json().to_string());
            return;
        }
        out.push('{');
        // Every own field name sorts before `timestamp` and `type`.
        let wrote = self.push_fields(out);
        out.push_str(if wrote {
            ",\"timestamp\":"
        } else {
            "\"timestamp\":"
        });
        out.push_str(at);
        out.push_str(",\"type\":");
        crate::json_text::push_str(out, self.kind());
        out.push('}');
    }

    /// Whether it is a `tokens` event, the only kind that moves a run's price.
    pub fn is_tokens(&self) -> bool {
        matches!(self.event, Event::Tokens { .. })
    }

    /// The event's type name.
    pub fn kind(&self) -> &'static str {
        match self.event {
            Event::IterationStarted { .. } => "iteration_started",
            Event::IterationCompleted { .. } => "iteration_completed",
            Event::PhaseStarted { .. } => "phase_started",
            Event::PhaseCompleted { .. } => "phase_completed",
            Event::GateChecked { .. } => "gate_checked",
            Event::Tokens { .. } => "tokens",
            Event::DeliveryStarted => "delivery_started",
            Event::DeliveryCompleted { .. } => "delivery_completed",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_research_agents_two_names_of_a_phase_are_one() {
        assert_eq!(short_phase("designing"), "design");
        assert_eq!(short_phase("assessing"), "assessment");
        assert_eq!(short_phase("training"), "training");
        assert_eq!(short_phase("backtesting"), "backtesting");
        assert!(same_phase("design", "designing") && same_phase("assessing", "assessment"));
        assert!(same_phase("code", "code") && !same_phase("design", "assessment"));
        // Whole names are mapped, not prefixes.
        assert!(!same_phase("designing", "designer"));
    }

    #[test]
    fn accuracy_is_a_number_in_the_metadata() {
        let accuracy = |v: Value| metadata_accuracy(&parse_one(&v, 0.0).unwrap());
        let end = |metadata: Value| json!({"type": "phase_completed", "phase": "training", "success": true, "metadata": metadata});
        assert_eq!(accuracy(end(json!({"accuracy": 0.61}))), Some(0.61));
        assert_eq!(accuracy(end(json!({"accuracy": 1}))), Some(1.0));
        assert_eq!(accuracy(end(json!({"accuracy": "0.61"}))), None);
        assert_eq!(accuracy(end(json!({"accuracy": null}))), None);
        assert_eq!(accuracy(end(json!({"metrics": {"accuracy": 0.5}}))), None);
        assert_eq!(
            accuracy(json!({"type": "phase_completed", "phase": "training", "success": true})),
            None
        );
    }

    #[test]
    fn parses_every_type_and_round_trips() {
        let batch = json!([
            {"type": "iteration_started", "iteration": 1},
            {"type": "phase_started", "phase": "design", "iteration": 1, "timestamp": "2026-11-23T13:14:38.5Z"},
            {"type": "tokens", "phase": "design", "model": "claude-x", "input_tokens": 10, "output_tokens": 5},
            {"type": "phase_completed", "phase": "design", "success": true, "duration_ms": 1500},
            {"type": "gate_checked", "gate": "lint", "passed": false, "reason": "3 errors"},
            {"type": "iteration_completed", "iteration": 1, "success": true},
            {"type": "delivery_started"},
            {"type": "delivery_completed", "success": true, "pr_url": "https://x/pr/1", "ci_status": "green", "timestamp": 5.0},
        ]);
        let events = parse_batch(&batch, 100.0).unwrap();
        assert_eq!(events.len(), 8);
        assert_eq!(events[1].at, 1_795_439_678.5);
        assert_eq!(events[0].at, 100.0);
        assert_eq!(events[7].at, 5.0);
        for e in &events {
            let again = parse_batch(&e.to_json(), 0.0).unwrap();
            assert_eq!(again, vec![e.clone()]);
        }
    }

    #[test]
    fn written_text_matches_the_json_value() {
        let batch = json!([
            {"type": "iteration_started", "iteration": 1},
            {"type": "iteration_completed", "iteration": 1, "success": false, "timestamp": 0.1},
            {"type": "phase_started", "phase": "design"},
            {"type": "phase_started", "phase": "design", "iteration": 7},
            {"type": "phase_completed", "phase": "design", "success": true},
            {"type": "phase_completed", "phase": "d", "success": false, "duration_ms": 1500},
            {"type": "phase_completed", "phase": "d", "success": true, "duration_ms": 0.25},
            {"type": "gate_checked", "gate": "lint", "passed": false, "reason": "3 \"errors\"\n"},
            {"type": "gate_checked", "gate": "lint", "passed": true},
            {"type": "tokens", "phase": "design", "input_tokens": 10, "output_tokens": 5},
            {"type": "tokens", "phase": "design", "model": "m-1", "input_tokens": 0, "output_tokens": 5},
            {"type": "delivery_started"},
            {"type": "delivery_completed", "success": true},
            {"type": "delivery_completed", "success": false, "pr_url": "https://x/pr/1", "ci_status": "grün"},
        ]);
        for e in parse_batch(&batch, 1_795_439_678.123_456).unwrap() {
            let (mut text, mut at) = (String::new(), String::new());
            crate::json_text::push_f64(&mut at, e.at);
            e.push_json_at(&mut text, &at);
            assert_eq!(text, e.to_json().to_string());
            let mut fields = String::from("{");
            e.push_fields(&mut fields);
            fields.push('}');
            let mut v = e.to_json();
            let map = v.as_object_mut().unwrap();
            map.remove("type");
            map.remove("timestamp");
            assert_eq!(fields, v.to_string());
        }
    }

    #[test]
    fn errors_name_index_and_field() {
        let cases = [
            (
                json!([{"type": "iteration_started", "iteration": 1}, {"type": "tokens", "phase": "x", "input_tokens": -1, "output_tokens": 0}]),
                "events[1].input_tokens",
            ),
            (json!({"type": "nope"}), "events[0].type"),
            (
                json!({"type": "phase_started", "phase": "has space"}),
                "events[0].phase",
            ),
            (
                json!({"type": "gate_checked", "gate": "g"}),
                "events[0].passed",
            ),
            (
                json!({"type": "tokens", "phase": "p", "model": "m/x", "input_tokens": 1, "output_tokens": 1}),
                "events[0].model",
            ),
            (
                json!({"type": "phase_completed", "phase": "p", "success": true, "duration_ms": -5}),
                "events[0].duration_ms",
            ),
            (
                json!({"type": "delivery_started", "extra": 1}),
                "events[0].extra",
            ),
            (
                json!({"type": "iteration_started", "iteration": 1, "timestamp": "yesterday"}),
                "events[0].timestamp",
            ),
            (json!([1]), "events[0].type"),
        ];
        for (v, field) in cases {
            match parse_batch(&v, 0.0) {
                Err(Error::Invalid { field: f, .. }) => assert_eq!(f, field, "{v}"),
                other => panic!("{v}: {other:?}"),
            }
        }
        assert!(parse_batch(&json!([]), 0.0).is_err());
        let too_many: Vec<Value> = (0..1001)
            .map(|_| json!({"type": "delivery_started"}))
            .collect();
        assert!(parse_batch(&Value::Array(too_many), 0.0).is_err());
        assert!(valid_name(&"a".repeat(64)) && !valid_name(&"a".repeat(65)) && !valid_name(""));
    }
}
