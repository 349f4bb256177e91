//! What the domain publishes: runs, their events, messages and budget alerts, as events.

use serde_json::{json, Value};

use std::sync::Arc;

use super::hub::{push_head, push_ids, Hub, NewEvent, Rendered};
use crate::bus::Message;
use crate::runs::{Event, Run, RunIds, Status, Text, Timed};
use crate::time;

/// The largest message body (bytes of JSON) `message_appended` carries; larger
/// ones are left out (readers fetch them from the bus), so retained events stay small.
pub const MAX_INLINE_BODY: usize = 4096;

fn for_run(kind: &'static str, at: f64, run: &Run) -> NewEvent {
    NewEvent::new(kind, at).run(
        &run.run_id,
        run.text(Text::CorrelationId),
        run.text(Text::WorkOrderId),
    )
}

/// Run events rendered, not yet numbered: rendering is most of the work, so any
/// thread with time does it before the batch is durable. Safe to send across threads.
pub struct PreparedEvents {
    /// The ids of the run they were rendered for.
    pub(crate) ids: RunIds,
    batch: Vec<Rendered>,
}

impl PreparedEvents {
    /// Renders `events` of `run`, skipping token counts (they only move metrics).
    pub(crate) fn new(run: &RunIds, events: &[Timed]) -> PreparedEvents {
        // The run's part of the envelope is the same for the whole batch, and mostly the time.
        let mut ids = String::with_capacity(96);
        let work_order = run.work_order_id.as_deref();
        push_ids(&mut ids, &run.run_id, Some(run.correlation()), work_order);
        let run_id: Arc<str> = Arc::from(run.run_id.as_str());
        // JSON has no NaN, so no event's time matches the first stamp's.
        let mut stamp = (f64::NAN, String::new());
        let batch = events
            .iter()
            .filter(|t| !matches!(t.event, Event::Tokens { .. }))
            .map(|timed| {
                if stamp.0.to_bits() != timed.at.to_bits() {
                    stamp = (timed.at, time::rfc3339(timed.at));
                }
                let kind = timed.kind();
                let mut tail = push_head(kind, &stamp.1, &ids, 160);
                let own = tail.len();
                tail.push(',');
                if !timed.push_fields(&mut tail) {
                    tail.truncate(own);
                }
                tail.push('}');
                Rendered {
                    kind,
                    run_id: Some(run_id.clone()),
                    tail,
                }
            })
            .collect();
        PreparedEvents {
            ids: run.clone(),
            batch,
        }
    }
}

impl Hub {
    /// Publishes `run_started` for a run whose start is durable.
    pub(crate) fn run_started(&self, run: &Run) -> u64 {
        self.publish(
            for_run("run_started", run.started_at, run)
                .field("agent", json!(run.text(Text::Agent)))
                .field("goal", json!(run.text(Text::Goal)))
                .field("strategy", json!(run.text(Text::Strategy)))
                .field("max_iterations", json!(run.max_iterations)),
        )
    }

    /// Publishes the end event of a run whose end and `cost` (dollars) are durable; none if not.
    pub(crate) fn run_finished(&self, run: &Run, cost: f64) -> Option<u64> {
        let kind = run.status.end_event()?;
        // The run's error text is a failure's `error`, a cancellation's `reason`.
        let (result, why) = match run.status {
            Status::Completed => ("succeeded", None),
            Status::Failed => ("failed", Some("error")),
            _ => ("canceled", Some("reason")),
        };
        let ended = run.ended_at.unwrap_or_else(time::now_unix);
        let seconds = run
            .detail
            .duration_seconds
            .unwrap_or((ended - run.started_at).max(0.0));
        let (input, output) = run.detail.tokens();
        let detail = run.detail.to_json();
        let mut event = for_run(kind, ended, run)
            .field("status", json!(run.status.as_str()))
            .field("result", json!(result))
            .field("iterations", json!(run.detail.iterations_started))
            .field("duration_seconds", json!(seconds))
            .field("duration_ms", json!((seconds * 1000.0).round()))
            .field(
                "summary",
                json!({
                    "tokens": {"input": input, "output": output},
                    "cost": cost,
                    "phases": detail["phases"],
                }),
            );
        if let Some(key) = why {
            event = event.field(key, json!(run.text(Text::Error)));
        }
        let metrics = run.text(Text::Metrics).unwrap_or("null");
        Some(self.publish(event.raw_field("metrics", metrics)))
    }

    /// Publishes a durable batch's [`PreparedEvents`] with consecutive seqs.
    pub(crate) fn publish_prepared(&self, prepared: PreparedEvents) {
        if !prepared.batch.is_empty() {
            self.publish_all(prepared.batch);
        }
    }

    /// Publishes `message_appended` for a message now on the bus; `run` is its run, if known.
    pub(crate) fn message_appended(&self, message: &Message, run: Option<&RunIds>) -> u64 {
        let mut event = NewEvent::new("message_appended", message.timestamp);
        event = match (run, &message.run_id) {
            (Some(run), _) => event.run(
                &run.run_id,
                Some(run.correlation()),
                run.work_order_id.as_deref(),
            ),
            (None, Some(id)) => event.run(id, None, None),
            (None, None) => event,
        };
        // The body is JSON text already and goes out as it is; keys in the order `field`s print.
        let body = &message.body;
        if body.len() <= MAX_INLINE_BODY {
            event = event.raw_field("body", body);
        }
        let text = |s: &str| {
            let mut json = String::with_capacity(s.len() + 2);
            crate::json_text::push_str(&mut json, s);
            json
        };
        self.publish(
            event
                .raw_field("body_bytes", &body.len().to_string())
                .raw_field("message_type", &text(&message.kind))
                .raw_field("msg_id", &text(&message.msg_id)),
        )
    }

    /// Publishes `budget_alert`: the daily spend reached `threshold` percent of the limit; `status`
    /// is `GET /api/v1/budget`'s answer then.
    pub(crate) fn publish_budget_alert(&self, threshold: u8, status: &Value) -> u64 {
        self.publish(
            NewEvent::new("budget_alert", time::now_unix())
                .field("threshold", json!(threshold))
                .field("status", status.clone()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{Filter, Next, Start, Transport};
    use crate::testing::{quiet, TempDir};

    use crate::metrics::Registry;
    use crate::runs::Detail;
    use std::sync::Arc;
    use std::time::Duration;

    fn run() -> Run {
        Run {
            run_id: "r1".into(),
            texts: crate::runs::Texts::from_json(
                &json!({"agent": "coder", "error": "boom", "work_order_id": "wo-7"}),
            ),
            status: Status::Failed,
            started_at: 10.0,
            ended_at: Some(12.5),
            max_iterations: Some(3),
            reserved: None,
            cost: None,
            detail: Detail::default().into(),
        }
    }

    fn hub(name: &str) -> (Arc<Hub>, TempDir) {
        let dir = TempDir::new(&format!("events-publish-{name}"));
        (
            Arc::new(Hub::open(&dir, &Registry::new(), quiet()).unwrap()),
            dir,
        )
    }

    /// Everything after `{"seq":N,`.
    /// Everything after `{"seq":N,"received_at":"...",`: two events
    /// published a moment apart differ in both.
    fn tail(json: &str) -> String {
        let rest = &json[json.find(',').unwrap() + 1..];
        let rest = rest
            .strip_prefix("\"received_at\":\"")
            .expect("received_at second");
        rest[rest.find("\",").unwrap() + 2..].to_string()
    }

    fn drain(sub: &mut crate::events::Subscription) -> Vec<Arc<crate::events::Published>> {
        let mut got = Vec::new();
        while let Next::Event(e) = sub.next(Duration::ZERO) {
            got.push(e);
        }
        got
    }

    /// The event as it was built before run events were rendered by hand:
    /// the envelope, then the fields of `to_json` through `NewEvent`.
    fn reference(run: &Run, timed: &Timed) -> NewEvent {
        let Value::Object(fields) = timed.to_json() else {
            unreachable!()
        };
        fields
            .into_iter()
            .fold(for_run(timed.kind(), timed.at, run), |event, (k, v)| {
                event.field(&k, v)
            })
    }

    #[test]
    fn run_events_render_as_new_events_did_and_skip_tokens() {
        let (hub, _dir) = hub("runs");
        let mut sub = hub.subscribe(Filter::all(), Start::Live, Transport::Sse);
        let batch = json!([
            {"type": "iteration_started", "iteration": 1, "timestamp": 11.0},
            {"type": "phase_started", "phase": "plan"},
            {"type": "tokens", "phase": "plan", "input_tokens": 1, "output_tokens": 2},
            {"type": "phase_completed", "phase": "plan", "success": true, "duration_ms": 5},
            {"type": "gate_checked", "gate": "lint", "passed": false, "reason": "a \"b\"\n"},
            {"type": "gate_checked", "gate": "lint", "passed": true},
            {"type": "delivery_started", "timestamp": 12.25},
            {"type": "delivery_completed", "success": true, "pr_url": "https://x/1"},
            {"type": "iteration_completed", "iteration": 1, "success": true},
        ]);
        let events = crate::runs::event::parse_batch(&batch, 1_795_439_678.123).unwrap();
        let mut runs = vec![run()];
        let mut other = run();
        other.texts.set(Text::CorrelationId, Some("c \"1\""));
        other.texts.set(Text::WorkOrderId, None);
        runs.push(other);
        for r in &runs {
            hub.publish_prepared(PreparedEvents::new(&r.ids(), &events));
            let got = drain(&mut sub);
            assert_eq!(got.len(), events.len() - 1);
            assert!(got.windows(2).all(|w| w[1].seq == w[0].seq + 1));
            for (e, timed) in got
                .iter()
                .zip(events.iter().filter(|t| t.kind() != "tokens"))
            {
                assert_eq!(e.kind, timed.kind());
                assert_eq!(e.run_id.as_deref(), Some("r1"));
                hub.publish(reference(r, timed));
                let expected = drain(&mut sub).pop().unwrap();
                assert_eq!(tail(&e.json), tail(&expected.json));
            }
        }
    }

    #[test]
    fn message_events_render_as_new_events_did() {
        let (hub, _dir) = hub("messages");
        let mut sub = hub.subscribe(Filter::all(), Start::Live, Transport::Sse);
        let bodies = [
            json!({"k": "small", "a": [1, 2.5, null]}),
            json!("x".repeat(MAX_INLINE_BODY)),
            json!("x".repeat(MAX_INLINE_BODY - 2)),
        ];
        for body in bodies {
            for (run_id, run) in [(None, None), (Some("r9"), None), (Some("r1"), Some(run()))] {
                let m = Message {
                    msg_id: "MSG-000000000001".into(),
                    seq: 1,
                    kind: "no\"te".into(),
                    body: body.to_string().into_boxed_str(),
                    run_id: run_id.map(str::to_string),
                    timestamp: 5.0,
                };
                hub.message_appended(&m, run.as_ref().map(Run::ids).as_ref());
                let got = drain(&mut sub).pop().unwrap();
                assert_eq!(got.run_id.as_deref(), run_id);
                let mut event = NewEvent::new("message_appended", m.timestamp);
                match (&run, &m.run_id) {
                    (Some(run), _) => {
                        event = event.run(
                            &run.run_id,
                            run.text(Text::CorrelationId),
                            run.text(Text::WorkOrderId),
                        )
                    }
                    (None, Some(id)) => event = event.run(id, None, None),
                    (None, None) => {}
                }
                let size = m.body.len();
                event = event
                    .field("msg_id", json!(m.msg_id))
                    .field("message_type", json!(m.kind))
                    .field("body_bytes", json!(size));
                if size <= MAX_INLINE_BODY {
                    event = event.field("body", serde_json::from_str(&m.body).unwrap());
                }
                hub.publish(event);
                let expected = drain(&mut sub).pop().unwrap();
                assert_eq!(tail(&got.json), tail(&expected.json));
            }
        }
    }

    #[test]
    fn large_message_bodies_are_left_out() {
        let (hub, _dir) = hub("large-bodies");
        let mut sub = hub.subscribe(Filter::all(), Start::Live, Transport::Sse);
        for body in [json!({"k": "small"}), json!("x".repeat(MAX_INLINE_BODY))] {
            let m = Message {
                msg_id: "MSG-000000000001".into(),
                seq: 1,
                kind: "note".into(),
                body: body.to_string().into_boxed_str(),
                run_id: Some("r1".into()),
                timestamp: 5.0,
            };
            hub.message_appended(&m, Some(&run().ids()));
            let Next::Event(e) = sub.next(Duration::ZERO) else {
                panic!("no event");
            };
            let v: Value = serde_json::from_str(&e.json).unwrap();
            assert_eq!(v["work_order_id"], "wo-7");
            assert_eq!(v["body_bytes"], body.to_string().len());
            let inline = body.to_string().len() <= MAX_INLINE_BODY;
            assert_eq!(v.get("body"), inline.then_some(&body));
        }
    }
}
