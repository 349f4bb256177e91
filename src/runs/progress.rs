//! Progress events as an AgentGate-style emitter sends them (`ProgressEvent`, camelCase
//! or our snake_case), each naming its run: lifecycle types start and end runs.

use serde_json::{Map, Value};

use super::event::{self, bad, parse_at, EventFields, FieldError, Timed, MAX_BATCH};
use super::{text_too_long, valid_run_id, Finish, NewRun, MAX_TEXT_BYTES, RUN_ID_RULE};
use crate::error::Error;

#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    Start(NewRun),
    /// Any other type: an event inside the run.
    Event(Timed),
    /// `run_completed`, `run_failed` or `run_canceled`.
    Finish {
        how: Finish,
        /// The cancel reason, for `run_canceled`.
        reason: Option<String>,
        /// The run's duration as the emitter measured it.
        duration_ms: Option<f64>,
        /// The `metrics` object of `run_completed`, its JSON text as sent, on one line.
        metrics: Option<String>,
    },
}

/// The longest `metrics` text, in bytes: what an event carries inline.
pub const MAX_METRICS_BYTES: usize = 4096;

#[derive(Clone, Debug, PartialEq)]
pub struct Progress {
    /// In the batch, for error messages.
    pub index: usize,
    pub run_id: String,
    /// Its `timestamp`, or when it was received.
    pub at: f64,
    pub step: Step,
}

/// camelCase names as the emitter sends them, and ours.
const ALIASES: [(&str, &str); 12] = [
    ("runId", "run_id"),
    ("workOrderId", "work_order_id"),
    ("correlationId", "correlation_id"),
    ("maxIterations", "max_iterations"),
    ("durationMs", "duration_ms"),
    ("phaseTimings", "phase_timings"),
    ("gateResults", "gate_results"),
    ("taskSpec", "task_spec"),
    ("prUrl", "pr_url"),
    ("ciStatus", "ci_status"),
    ("inputTokens", "input_tokens"),
    ("outputTokens", "output_tokens"),
];

/// Parses one progress event or an array, all or nothing; `value` is `body` parsed.
/// `runId` may be left out only under `path_run`. Errors: `events[2].taskSpec.goal`.
pub fn parse_batch(
    value: &Value,
    body: &[u8],
    now: f64,
    path_run: Option<&str>,
) -> Result<Vec<Progress>, Error> {
    // Only a batch with metrics pays for reading the body a second time.
    let mut texts = None;
    crate::batch::parse(value, "event", MAX_BATCH, |i, v| {
        let text = v.get("metrics").and_then(|_| {
            let texts = texts.get_or_insert_with(|| member_texts(body, "metrics"));
            texts.get(i).copied().flatten()
        });
        parse_one(i, v, text, now, path_run)
    })
}

/// The text of member `key` of each event in `body`, as it was sent.
fn member_texts<'a>(body: &'a [u8], key: &str) -> Vec<Option<&'a str>> {
    use serde_json::value::RawValue;
    let Ok(top) = serde_json::from_slice::<&RawValue>(body) else {
        return Vec::new();
    };
    let items: Vec<&RawValue> = if top.get().starts_with('[') {
        serde_json::from_str(top.get()).unwrap_or_default()
    } else {
        vec![top]
    };
    items
        .iter()
        .map(|item| {
            // Keys unescaped and the last of a repeated key, as in the parsed value.
            let members: std::collections::BTreeMap<String, &RawValue> =
                serde_json::from_str(item.get()).ok()?;
            members.get(key).map(|v| v.get())
        })
        .collect()
}

/// The `metrics` of a `run_completed`: `text` as sent (else `value`), bounded.
fn metrics_text(value: &Value, text: Option<&str>) -> Result<String, FieldError> {
    let text = match text {
        Some(t) => crate::json_text::one_line(t).into_owned(),
        None => value.to_string(),
    };
    let n = text.len();
    if n > MAX_METRICS_BYTES {
        return bad(
            "metrics",
            &format!("is {n} bytes of JSON; the limit is {MAX_METRICS_BYTES}"),
        );
    }
    let depth = crate::bus::MAX_BODY_DEPTH;
    if crate::bus::too_deep(value, depth) {
        let why = format!("must not nest arrays and objects more than {depth} deep");
        return bad("metrics", &why);
    }
    Ok(text)
}

/// Renames camelCase keys to ours; a key given both ways is an error.
fn normalize(map: &Map<String, Value>) -> Result<Map<String, Value>, FieldError> {
    let mut out = Map::new();
    for (k, v) in map {
        let name = ALIASES
            .iter()
            .find(|(camel, _)| camel == k)
            .map_or(k.as_str(), |(_, snake)| snake);
        if out.insert(name.to_string(), v.clone()).is_some() {
            let why = "is given twice, in camelCase and snake_case";
            return Err((k.clone(), why.into()));
        }
    }
    Ok(out)
}

/// The field `k` as `read` takes it, removed from `map`.
fn take<T>(
    map: &mut Map<String, Value>,
    k: &str,
    read: impl FnOnce(&Map<String, Value>, &str) -> Result<Option<T>, FieldError>,
) -> Result<Option<T>, FieldError> {
    let value = read(map, k);
    map.remove(k);
    value
}

fn opt_object(
    map: &mut Map<String, Value>,
    k: &str,
) -> Result<Option<Map<String, Value>>, FieldError> {
    match map.remove(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(o)) => Ok(Some(o)),
        Some(_) => Err((k.into(), "must be a JSON object".into())),
    }
}

/// Refuses any key left over once a type took its fields.
fn no_more(map: &Map<String, Value>, prefix: &str) -> Result<(), FieldError> {
    match map.keys().next() {
        None => Ok(()),
        Some(k) => Err((format!("{prefix}{k}"), "unknown field".into())),
    }
}

fn parse_one(
    index: usize,
    v: &Value,
    metrics: Option<&str>,
    now: f64,
    path_run: Option<&str>,
) -> Result<Progress, FieldError> {
    let Value::Object(raw) = v else {
        return bad("type", "the event must be a JSON object");
    };
    let mut map = normalize(raw)?;
    let run_id = run_id(&mut map, path_run)?;
    let work_order_id = take(&mut map, "work_order_id", Map::opt_text)?;
    let correlation_id = take(&mut map, "correlation_id", Map::opt_text)?;
    let kind = match map.get("type") {
        Some(Value::String(t)) => t.clone(),
        Some(_) => return bad("type", "must be a string"),
        None => return bad("type", "is required"),
    };
    let at = parse_at(map.get("timestamp"), now)?;
    let lifecycle = matches!(
        kind.as_str(),
        "run_started" | "run_completed" | "run_failed" | "run_canceled" | "run_cancelled"
    );
    if lifecycle {
        map.remove("type");
        map.remove("timestamp");
        // The emitter's own data: accepted, checked, and not kept.
        opt_object(&mut map, "metadata")?;
    }
    let step = match kind.as_str() {
        "run_started" => run_started(&mut map, &run_id, work_order_id, correlation_id)?,
        "run_completed" => run_completed(&mut map, metrics)?,
        "run_failed" => run_failed(&mut map)?,
        "run_canceled" | "run_cancelled" => Step::Finish {
            how: Finish::Cancel,
            reason: take(&mut map, "reason", Map::opt_text)?,
            duration_ms: take(&mut map, "duration_ms", Map::opt_ms)?,
            metrics: None,
        },
        kind => {
            if kind == "delivery_completed" {
                lift_delivery(&mut map)?;
            }
            Step::Event(event::parse_one(&Value::Object(map.clone()), now)?)
        }
    };
    if lifecycle {
        no_more(&map, "")?;
    }
    Ok(Progress {
        index,
        run_id,
        at,
        step,
    })
}

/// The event's `run_id`, which must agree with the path's run, if any.
fn run_id(map: &mut Map<String, Value>, path_run: Option<&str>) -> Result<String, FieldError> {
    match (take(map, "run_id", Map::opt_text)?, path_run) {
        (Some(id), Some(path)) if id != path => bad(
            "run_id",
            &format!("{id:?} disagrees with the path's run {path:?}"),
        ),
        (Some(id), _) if !valid_run_id(&id) => bad("run_id", RUN_ID_RULE),
        (Some(id), _) => Ok(id),
        (None, Some(path)) => Ok(path.to_string()),
        (None, None) => bad("run_id", "is required"),
    }
}

/// The run a `run_started` event begins, with what its `task_spec` says.
fn run_started(
    map: &mut Map<String, Value>,
    run_id: &str,
    work_order_id: Option<String>,
    correlation_id: Option<String>,
) -> Result<Step, FieldError> {
    let nested = |(k, m): FieldError| (format!("task_spec.{k}"), m);
    let mut spec = match opt_object(map, "task_spec")? {
        Some(spec) => normalize(&spec).map_err(nested)?,
        None => Map::new(),
    };
    let new = NewRun {
        run_id: Some(run_id.to_string()),
        agent: take(map, "agent", Map::opt_text)?,
        goal: take(&mut spec, "goal", Map::opt_text).map_err(nested)?,
        work_order_id,
        correlation_id,
        strategy: take(&mut spec, "strategy", Map::opt_text).map_err(nested)?,
        max_iterations: take(&mut spec, "max_iterations", |m, k| m.opt(k, Map::u64))
            .map_err(nested)?,
        traceparent: None,
    };
    no_more(&spec, "task_spec.")?;
    Ok(Step::Start(new))
}

/// How a `run_completed` event ends its run, with `text` its `metrics` as sent.
fn run_completed(map: &mut Map<String, Value>, text: Option<&str>) -> Result<Step, FieldError> {
    let how = match take(map, "result", Map::opt_text)?.as_deref() {
        Some("succeeded" | "success" | "completed") => Finish::Complete,
        Some("failed" | "failure") => {
            Finish::Fail(Some("the run completed with result failed".into()))
        }
        Some("canceled" | "cancelled") => Finish::Cancel,
        Some(_) => return bad("result", "must be succeeded, failed or canceled"),
        None => return bad("result", "is required"),
    };
    take(map, "iterations", |m, k| m.opt(k, Map::u64))?;
    let metrics = match opt_object(map, "metrics")? {
        Some(object) => Some(metrics_text(&Value::Object(object), text)?),
        None => None,
    };
    Ok(Step::Finish {
        how,
        reason: None,
        duration_ms: take(map, "duration_ms", Map::opt_ms)?,
        metrics,
    })
}

fn run_failed(map: &mut Map<String, Value>) -> Result<Step, FieldError> {
    let error = match map.remove("error") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        // An Error object as TypeScript serialises it.
        Some(Value::Object(o)) => Some(match o.get("message") {
            Some(Value::String(m)) => m.clone(),
            _ => Value::Object(o).to_string(),
        }),
        Some(_) => return bad("error", "must be a string or an object"),
    };
    if error.as_ref().is_some_and(|e| e.len() > MAX_TEXT_BYTES) {
        return bad("error", &text_too_long());
    }
    Ok(Step::Finish {
        how: Finish::Fail(error),
        reason: None,
        duration_ms: take(map, "duration_ms", Map::opt_ms)?,
        metrics: None,
    })
}

/// Lifts the delivery outcome AgentGate sends in `metadata` to the top, unless there.
fn lift_delivery(map: &mut Map<String, Value>) -> Result<(), FieldError> {
    let Some(Value::Object(meta)) = map.get("metadata") else {
        return Ok(());
    };
    let meta = normalize(meta).map_err(|(k, m)| (format!("metadata.{k}"), m))?;
    for k in ["success", "pr_url", "ci_status"] {
        if let Some(v) = meta.get(k).filter(|_| !map.contains_key(k)) {
            map.insert(k.to_string(), v.clone());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runs::Event;
    use serde_json::json;

    fn one(v: Value) -> Result<Progress, Error> {
        parse_batch(&v, v.to_string().as_bytes(), 100.0, None).map(|mut p| p.remove(0))
    }

    fn field(v: Value, path: Option<&str>) -> String {
        match parse_batch(&v, v.to_string().as_bytes(), 0.0, path) {
            Err(Error::Invalid { field, .. }) => field,
            other => panic!("{v}: {other:?}"),
        }
    }

    #[test]
    fn camel_case_and_snake_case_parse_alike() {
        let camel = json!({"type": "phase_completed", "runId": "r1", "workOrderId": "wo",
            "correlationId": "c", "iteration": 2, "phase": "build", "success": true,
            "durationMs": 1500, "timestamp": "2026-12-03T10:00:00Z", "metadata": {"k": 1}});
        let snake = json!({"type": "phase_completed", "run_id": "r1", "work_order_id": "wo",
            "correlation_id": "c", "iteration": 2, "phase": "build", "success": true,
            "duration_ms": 1500, "timestamp": "2026-12-03T10:00:00Z", "metadata": {"k": 1}});
        let (a, b) = (one(camel).unwrap(), one(snake).unwrap());
        assert_eq!(a, b);
        let Step::Event(e) = &a.step else {
            panic!("{a:?}")
        };
        assert_eq!(
            e.event,
            Event::PhaseCompleted {
                phase: "build".into(),
                success: true,
                duration_ms: Some(1500.0),
                iteration: Some(2),
            }
        );
        assert_eq!(
            e.extra.as_deref(),
            json!({"metadata": {"k": 1}}).as_object()
        );
        assert_eq!(a.run_id, "r1");
    }

    #[test]
    fn lifecycle_types_start_and_finish_runs() {
        let start = one(
            json!({"type": "run_started", "runId": "r", "workOrderId": "wo-1",
            "timestamp": 50.0, "taskSpec": {"goal": "g", "strategy": "s", "maxIterations": 3}}),
        )
        .unwrap();
        assert_eq!(start.at, 50.0);
        let Step::Start(new) = start.step else {
            panic!()
        };
        assert_eq!(
            (
                new.goal.as_deref(),
                new.strategy.as_deref(),
                new.max_iterations
            ),
            (Some("g"), Some("s"), Some(3))
        );
        assert_eq!(new.work_order_id.as_deref(), Some("wo-1"));
        let cases = [
            (
                json!({"type": "run_completed", "runId": "r", "result": "succeeded", "iterations": 2, "durationMs": 90, "metrics": {}}),
                Finish::Complete,
            ),
            (
                json!({"type": "run_completed", "runId": "r", "result": "failed"}),
                Finish::Fail(Some("the run completed with result failed".into())),
            ),
            (
                json!({"type": "run_failed", "runId": "r", "error": "boom"}),
                Finish::Fail(Some("boom".into())),
            ),
            (
                json!({"type": "run_failed", "runId": "r", "error": {"message": "bang", "stack": "x"}}),
                Finish::Fail(Some("bang".into())),
            ),
            (
                json!({"type": "run_canceled", "runId": "r", "reason": "user"}),
                Finish::Cancel,
            ),
        ];
        for (v, want) in cases {
            match one(v.clone()).unwrap().step {
                Step::Finish { how, .. } => assert_eq!(how, want, "{v}"),
                other => panic!("{v}: {other:?}"),
            }
        }
    }

    /// The `metrics` each event of `body` ends its run with.
    fn metrics_of(body: &str) -> Result<Vec<Option<String>>, Error> {
        let value: Value = serde_json::from_str(body).unwrap();
        let steps = parse_batch(&value, body.as_bytes(), 0.0, None)?;
        Ok(steps
            .into_iter()
            .map(|p| match p.step {
                Step::Finish { metrics, .. } => metrics,
                _ => None,
            })
            .collect())
    }

    #[test]
    fn run_completed_keeps_its_metrics_as_sent() {
        // Key order, spacing, number spelling and escapes survive; the
        // events around it take nothing.
        let sent = r#"{"totalDurationMs": 9000, "a":[1.50, 1e3, "\u00e9 \" }"], "z" : {}}"#;
        let body = format!(
            r#"  [{{"type":"run_started","runId":"r"}},
               {{"type":"run_completed","runId":"r","result":"succeeded","metrics":{sent}}},
               {{"type":"run_completed","runId":"s","result":"failed","metrics":null}}]  "#
        );
        assert_eq!(
            metrics_of(&body).unwrap(),
            [None, Some(sent.to_string()), None]
        );
        // One event, not an array; the member given twice is the last one.
        let body = r#"{"type":"run_completed","runId":"r","result":"canceled","metrics":{"x":1},"metrics":{"b":2,"a":1}}"#;
        assert_eq!(
            metrics_of(body).unwrap(),
            [Some(r#"{"b":2,"a":1}"#.to_string())]
        );
        // Spread over lines, it is put on one, with nothing else changed.
        let body = "{\"type\":\"run_completed\",\"runId\":\"r\",\"result\":\"succeeded\",\n\
            \"metrics\": {\n  \"b\": \"x y\",\n  \"a\": 1.0\n}}";
        assert_eq!(
            metrics_of(body).unwrap(),
            [Some(r#"{"b":"x y","a":1.0}"#.to_string())]
        );
    }

    #[test]
    fn oversized_or_deep_metrics_are_refused_naming_the_field() {
        let padding = "x".repeat(MAX_METRICS_BYTES - 8);
        let fits = format!(r#"{{"p":"{padding}"}}"#);
        assert_eq!(fits.len(), MAX_METRICS_BYTES);
        let event = |metrics: &str| {
            format!(
                r#"[{{"type":"run_started","runId":"r"}},{{"type":"run_completed","runId":"r","result":"succeeded","metrics":{metrics}}}]"#
            )
        };
        assert_eq!(
            metrics_of(&event(&fits)).unwrap()[1].as_deref(),
            Some(&*fits)
        );
        let over = format!(r#"{{"p":"{padding}x"}}"#);
        let Err(e) = metrics_of(&event(&over)) else {
            panic!("oversized metrics were kept");
        };
        assert_eq!(
            e.to_string(),
            format!(
                "events[1].metrics: is {} bytes of JSON; the limit is 4096",
                MAX_METRICS_BYTES + 1
            )
        );
        let depth = crate::bus::MAX_BODY_DEPTH;
        let nest = |n: usize| format!("{{\"a\":{}1{}}}", "[".repeat(n - 1), "]".repeat(n - 1));
        assert!(metrics_of(&event(&nest(depth))).is_ok());
        let Err(Error::Invalid { field, message }) = metrics_of(&event(&nest(depth + 1))) else {
            panic!("deep metrics were kept");
        };
        assert_eq!(field, "events[1].metrics");
        assert!(message.contains("64 deep"), "{message}");
        assert_eq!(field_of(&event("[1]")), "events[1].metrics");
    }

    fn field_of(body: &str) -> String {
        match metrics_of(body) {
            Err(Error::Invalid { field, .. }) => field,
            other => panic!("{body}: {other:?}"),
        }
    }

    #[test]
    fn a_delivery_outcome_in_metadata_is_lifted() {
        let p = one(json!({"type": "delivery_completed", "runId": "r",
            "metadata": {"success": true, "prUrl": "https://x/pr/1", "ciStatus": "passed"}}))
        .unwrap();
        let Step::Event(e) = p.step else { panic!() };
        assert_eq!(
            e.event,
            Event::DeliveryCompleted {
                success: true,
                pr_url: Some("https://x/pr/1".into()),
                ci_status: Some("passed".into()),
            }
        );
    }

    #[test]
    fn refusals_name_the_index_and_field() {
        let ok = json!({"type": "iteration_started", "runId": "r", "iteration": 1});
        assert_eq!(
            field(
                json!([ok, {"type": "gate_checked", "gate": "g", "passed": true}]),
                None
            ),
            "events[1].run_id"
        );
        assert_eq!(
            field(
                json!({"type": "phase_started", "phase": "p", "bogus": 1}),
                Some("r")
            ),
            "events[0].bogus"
        );
        assert_eq!(
            field(
                json!({"type": "phase_started", "phase": "p", "runId": "other"}),
                Some("r")
            ),
            "events[0].run_id"
        );
        assert_eq!(
            field(
                json!({"type": "phase_started", "phase": "p", "runId": "r", "run_id": "r"}),
                None
            ),
            "events[0].run_id"
        );
        assert_eq!(
            field(
                json!({"type": "run_started", "runId": "r", "taskSpec": {"goal": 1}}),
                None
            ),
            "events[0].task_spec.goal"
        );
        assert_eq!(
            field(
                json!({"type": "run_started", "runId": "r", "taskSpec": {"x": 1}}),
                None
            ),
            "events[0].task_spec.x"
        );
        assert_eq!(
            field(
                json!({"type": "run_completed", "runId": "r", "result": "maybe"}),
                None
            ),
            "events[0].result"
        );
        assert_eq!(
            field(
                json!({"type": "run_canceled", "runId": "r", "why": "x"}),
                None
            ),
            "events[0].why"
        );
        assert_eq!(
            field(
                json!({"type": "phase_started", "phase": "p", "runId": "r", "metadata": 3}),
                None
            ),
            "events[0].metadata"
        );
        assert_eq!(
            field(
                json!({"type": "iteration_completed", "runId": "r", "iteration": 1, "success": true, "phaseTimings": {"a": -1}}),
                None
            ),
            "events[0].phase_timings.a"
        );
        assert_eq!(
            field(json!({"type": "nope", "runId": "r"}), None),
            "events[0].type"
        );
        assert_eq!(field(json!([]), None), "body");
    }
}
