//! The OTLP/HTTP JSON of an `ExportTraceServiceRequest`, written into a
//! string. It is proto3 JSON but that ids are lower-case hex, not base64, and
//! enums are integers; 64-bit integers are strings, so no reader loses
//! precision in a double.

use super::span::{AttrValue, Span, SpanEvent, SpanStatus};
use crate::json_text::push_str;

pub const CONTENT_TYPE: &str = "application/json";

/// The instrumentation scope every span is reported under.
const SCOPE_NAME: &str = "conductor-metrics";

/// OTLP `SpanKind` INTERNAL: a run and its phases are work done inside this
/// service, neither serving nor making a remote call.
const KIND_INTERNAL: u8 = 1;

/// The OTLP/HTTP JSON body of `spans`, under one resource and one scope.
pub fn encode_request(service_name: &str, spans: &[Span]) -> String {
    let mut out = String::with_capacity(256 + 512 * spans.len());
    out.push_str(r#"{"resourceSpans":[{"resource":{"attributes":["#);
    push_attribute(&mut out, "service.name", |o| {
        push_string_value(o, service_name)
    });
    out.push_str(r#"]},"scopeSpans":[{"scope":{"name":"#);
    push_str(&mut out, SCOPE_NAME);
    out.push_str(r#","version":"#);
    push_str(&mut out, env!("CARGO_PKG_VERSION"));
    out.push_str(r#"},"spans":["#);
    push_list(&mut out, spans, push_span);
    out.push_str("]}]}]}");
    out
}

/// Appends `items` separated by commas, each as `push` writes it.
fn push_list<T>(out: &mut String, items: &[T], push: impl Fn(&mut String, &T)) {
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push(out, item);
    }
}

fn push_span(out: &mut String, span: &Span) {
    out.push_str(r#"{"traceId":""#);
    push_hex(out, &span.trace_id);
    out.push_str(r#"","spanId":""#);
    push_hex(out, &span.span_id);
    out.push('"');
    if let Some(parent) = &span.parent_span_id {
        out.push_str(r#","parentSpanId":""#);
        push_hex(out, parent);
        out.push('"');
    }
    out.push_str(r#","name":"#);
    push_str(out, &span.name);
    let (start, end) = (span.start_unix_nanos, span.end_unix_nanos);
    out.push_str(&format!(
        r#","kind":{KIND_INTERNAL},"startTimeUnixNano":"{start}","endTimeUnixNano":"{end}","attributes":"#
    ));
    push_attributes(out, &span.attributes);
    out.push_str(r#","events":["#);
    push_list(out, &span.events, push_event);
    out.push_str(r#"],"status":"#);
    match &span.status {
        SpanStatus::Unset => out.push_str(r#"{"code":0}"#),
        SpanStatus::Ok => out.push_str(r#"{"code":1}"#),
        SpanStatus::Error(message) => {
            out.push_str(r#"{"code":2,"message":"#);
            push_str(out, message);
            out.push('}');
        }
    }
    out.push('}');
}

fn push_event(out: &mut String, event: &SpanEvent) {
    let time = event.time_unix_nanos;
    out.push_str(&format!(r#"{{"timeUnixNano":"{time}","name":"#));
    push_str(out, &event.name);
    out.push_str(r#","attributes":"#);
    push_attributes(out, &event.attributes);
    out.push('}');
}

fn push_attributes(out: &mut String, attributes: &[(String, AttrValue)]) {
    out.push('[');
    push_list(out, attributes, |o, (key, value)| {
        push_attribute(o, key, |o| push_value(o, value))
    });
    out.push(']');
}

fn push_attribute(out: &mut String, key: &str, value: impl FnOnce(&mut String)) {
    out.push_str(r#"{"key":"#);
    push_str(out, key);
    out.push_str(r#","value":"#);
    value(out);
    out.push('}');
}

fn push_value(out: &mut String, value: &AttrValue) {
    match value {
        AttrValue::Str(s) => push_string_value(out, s),
        AttrValue::Int(n) => out.push_str(&format!(r#"{{"intValue":"{n}"}}"#)),
        AttrValue::Bool(b) => out.push_str(&format!(r#"{{"boolValue":{b}}}"#)),
        // JSON has no NaN or infinities; proto3 JSON spells them as strings.
        AttrValue::Double(d) if d.is_nan() => out.push_str(r#"{"doubleValue":"NaN"}"#),
        AttrValue::Double(d) if d.is_infinite() => {
            let sign = if *d > 0.0 { "" } else { "-" };
            out.push_str(&format!(r#"{{"doubleValue":"{sign}Infinity"}}"#));
        }
        // Debug formatting is the shortest round trip, and always a valid
        // JSON number for a finite value.
        AttrValue::Double(d) => out.push_str(&format!(r#"{{"doubleValue":{d:?}}}"#)),
    }
}

fn push_string_value(out: &mut String, s: &str) {
    out.push_str(r#"{"stringValue":"#);
    push_str(out, s);
    out.push('}');
}

fn push_hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn span() -> Span {
        Span {
            trace_id: [0x4b; 16],
            span_id: [0, 0, 0, 0, 0, 0, 0, 1],
            parent_span_id: Some([0xab; 8]),
            name: "agent.phase.plan".into(),
            start_unix_nanos: 1_795_439_678_123_456_789,
            end_unix_nanos: 1_795_439_679_000_000_000,
            attributes: vec![
                ("run.id".into(), AttrValue::Str("r-1".into())),
                ("gen_ai.usage.input_tokens".into(), AttrValue::Int(i64::MAX)),
                ("flag".into(), AttrValue::Bool(false)),
                ("ratio".into(), AttrValue::Double(0.25)),
            ],
            events: vec![SpanEvent {
                name: "conductor.gate".into(),
                time_unix_nanos: 5,
                attributes: vec![("gate.passed".into(), AttrValue::Bool(true))],
            }],
            status: SpanStatus::Error("boom \"quoted\"\n".into()),
        }
    }

    #[test]
    fn golden_request() {
        let got = encode_request("svc", &[span()]);
        let want = concat!(
            r#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"svc"}}]},"#,
            r#""scopeSpans":[{"scope":{"name":"conductor-metrics","version":""#,
            env!("CARGO_PKG_VERSION"),
            r#""},"spans":[{"traceId":"4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b","spanId":"0000000000000001","#,
            r#""parentSpanId":"abababababababab","name":"agent.phase.plan","kind":1,"#,
            r#""startTimeUnixNano":"1795439678123456789","endTimeUnixNano":"1795439679000000000","#,
            r#""attributes":[{"key":"run.id","value":{"stringValue":"r-1"}},"#,
            r#"{"key":"gen_ai.usage.input_tokens","value":{"intValue":"9223372036854775807"}},"#,
            r#"{"key":"flag","value":{"boolValue":false}},{"key":"ratio","value":{"doubleValue":0.25}}],"#,
            r#""events":[{"timeUnixNano":"5","name":"conductor.gate","attributes":[{"key":"gate.passed","value":{"boolValue":true}}]}],"#,
            r#""status":{"code":2,"message":"boom \"quoted\"\n"}}]}]}]}"#,
        );
        assert_eq!(got, want);
    }

    #[test]
    fn roots_omit_the_parent_and_statuses_are_integers() {
        let mut root = span();
        root.parent_span_id = None;
        root.status = SpanStatus::Ok;
        let mut unset = span();
        unset.status = SpanStatus::Unset;
        let v: Value = serde_json::from_str(&encode_request("s", &[root, unset])).unwrap();
        let spans = &v["resourceSpans"][0]["scopeSpans"][0]["spans"];
        assert!(spans[0].get("parentSpanId").is_none());
        assert_eq!(spans[0]["status"], serde_json::json!({"code": 1}));
        assert_eq!(spans[1]["status"], serde_json::json!({"code": 0}));
        assert_eq!(spans[1]["kind"], 1);
        for s in spans.as_array().unwrap() {
            assert_eq!(s["traceId"].as_str().unwrap().len(), 32);
            assert_eq!(s["spanId"].as_str().unwrap().len(), 16);
            assert!(s["startTimeUnixNano"].is_string());
        }
    }

    #[test]
    fn empty_batches_and_odd_values_stay_valid_json() {
        let v: Value = serde_json::from_str(&encode_request("", &[])).unwrap();
        assert_eq!(
            v["resourceSpans"][0]["scopeSpans"][0]["spans"],
            serde_json::json!([])
        );
        let mut s = span();
        s.name = "tab\t nul\u{0} bell\u{7} é \u{2028} \\".into();
        s.attributes = vec![
            ("nan".into(), AttrValue::Double(f64::NAN)),
            ("inf".into(), AttrValue::Double(f64::INFINITY)),
            ("-inf".into(), AttrValue::Double(f64::NEG_INFINITY)),
            ("big".into(), AttrValue::Double(1e300)),
            ("neg".into(), AttrValue::Int(-7)),
        ];
        s.events.clear();
        let v: Value = serde_json::from_str(&encode_request("s", &[s.clone()])).unwrap();
        let got = &v["resourceSpans"][0]["scopeSpans"][0]["spans"][0];
        assert_eq!(got["name"], s.name.as_str());
        let values: Vec<&Value> = got["attributes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| &a["value"])
            .collect();
        assert_eq!(values[0]["doubleValue"], "NaN");
        assert_eq!(values[1]["doubleValue"], "Infinity");
        assert_eq!(values[2]["doubleValue"], "-Infinity");
        assert_eq!(values[3]["doubleValue"], 1e300);
        assert_eq!(values[4]["intValue"], "-7");
        assert_eq!(got["events"], serde_json::json!([]));
    }
}
