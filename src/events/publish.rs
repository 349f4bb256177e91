//! What the domain publishes: runs, their events, messages and budget
//! alerts turned into [`NewEvent`]s.

use serde_json::{json, Value};

use super::hub::{Hub, NewEvent};
use crate::bus::Message;
use crate::runs::{Event, Run, Status, Timed};
use crate::time;

/// The largest message body carried inline by `message_appended`, in bytes
/// of JSON. Larger ones are left out (readers fetch them from the bus), so
/// the retained events stay small whatever the bus holds.
pub const MAX_INLINE_BODY: usize = 4096;

fn for_run(kind: &'static str, at: f64, run: &Run) -> NewEvent {
    NewEvent::new(kind, at).run(
        &run.run_id,
        run.correlation_id.as_deref(),
        run.work_order_id.as_deref(),
    )
}

/// The event for a run's inside, or `None` for token counts, which only
/// move metrics.
pub fn run_event(run: &Run, timed: &Timed) -> Option<NewEvent> {
    if matches!(timed.event, Event::Tokens { .. }) {
        return None;
    }
    let Value::Object(fields) = timed.to_json() else {
        return None;
    };
    let event = for_run(timed.kind(), timed.at, run);
    Some(
        fields
            .into_iter()
            .fold(event, |event, (k, v)| event.field(&k, v)),
    )
}

impl Hub {
    /// Publishes `run_started` for a run whose start is durable.
    pub fn run_started(&self, run: &Run) -> u64 {
        self.publish(
            for_run("run_started", run.started_at, run)
                .field("agent", json!(run.agent))
                .field("goal", json!(run.goal))
                .field("strategy", json!(run.strategy))
                .field("max_iterations", json!(run.max_iterations)),
        )
    }

    /// Publishes `run_completed`, `run_failed` or `run_canceled` for a run
    /// whose end is durable; nothing for a run still running.
    pub fn run_finished(&self, run: &Run) -> Option<u64> {
        let kind = match run.status {
            Status::Running => return None,
            Status::Completed => "run_completed",
            Status::Failed => "run_failed",
            Status::Cancelled => "run_canceled",
        };
        let ended = run.ended_at.unwrap_or_else(time::now_unix);
        let mut event = for_run(kind, ended, run)
            .field("status", json!(run.status.as_str()))
            .field("duration_seconds", json!((ended - run.started_at).max(0.0)));
        if run.status == Status::Failed {
            event = event.field("error", json!(run.error));
        }
        Some(self.publish(event))
    }

    /// Publishes each event of a durable batch, in order, skipping token
    /// counts. `run` is the run as it stands after the batch, or `None` if
    /// it is no longer known, when nothing is published.
    pub fn run_events(&self, run: Option<&Run>, events: &[Timed]) {
        let Some(run) = run else {
            return;
        };
        for timed in events {
            if let Some(event) = run_event(run, timed) {
                self.publish(event);
            }
        }
    }

    /// Publishes `message_appended` for a message now visible on the bus;
    /// `run` is the run it names, when that run is known. The body is
    /// included up to [`MAX_INLINE_BODY`] bytes; `body_bytes` is its size.
    pub fn message_appended(&self, message: &Message, run: Option<&Run>) -> u64 {
        let mut event = NewEvent::new("message_appended", message.timestamp);
        match (run, &message.run_id) {
            (Some(run), _) => {
                event = event.run(
                    &run.run_id,
                    run.correlation_id.as_deref(),
                    run.work_order_id.as_deref(),
                )
            }
            (None, Some(id)) => event = event.run(id, None, None),
            (None, None) => {}
        }
        let size = message.body.to_string().len();
        event = event
            .field("msg_id", json!(message.msg_id))
            .field("message_type", json!(message.kind))
            .field("body_bytes", json!(size));
        if size <= MAX_INLINE_BODY {
            event = event.field("body", message.body.clone());
        }
        self.publish(event)
    }

    /// Publishes `budget_alert`: the daily spend reached `threshold` percent
    /// of the limit; `status` is the budget status at that moment, as
    /// `GET /api/v1/budget` shows it.
    pub fn publish_budget_alert(&self, threshold: u8, status: &Value) -> u64 {
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
    use crate::log::{Level, LogFormat, Logger};
    use crate::metrics::Registry;
    use crate::runs::Detail;
    use std::sync::Arc;
    use std::time::Duration;

    fn run() -> Run {
        Run {
            run_id: "r1".into(),
            agent: Some("coder".into()),
            goal: None,
            status: Status::Failed,
            started_at: 10.0,
            ended_at: Some(12.5),
            error: Some("boom".into()),
            work_order_id: Some("wo-7".into()),
            correlation_id: None,
            strategy: None,
            max_iterations: Some(3),
            traceparent: None,
            detail: Detail::default(),
        }
    }

    #[test]
    fn run_events_keep_their_fields_and_skip_tokens() {
        let r = run();
        let phase = Timed {
            at: 11.0,
            event: Event::PhaseCompleted {
                phase: "plan".into(),
                success: true,
                duration_ms: Some(5.0),
            },
        };
        let e = run_event(&r, &phase).unwrap();
        assert_eq!(e.kind(), "phase_completed");
        let expected = NewEvent::new("phase_completed", 11.0)
            .run("r1", None, Some("wo-7"))
            .field("phase", json!("plan"))
            .field("success", json!(true))
            .field("duration_ms", json!(5.0));
        assert_eq!(e, expected);
        let tokens = Timed {
            at: 11.0,
            event: Event::Tokens {
                phase: "plan".into(),
                model: None,
                input_tokens: 1,
                output_tokens: 2,
            },
        };
        assert!(run_event(&r, &tokens).is_none());
    }

    #[test]
    fn large_message_bodies_are_left_out() {
        let dir = std::env::temp_dir().join(format!(
            "events-publish-{}-{:?}",
            std::process::id(),
            std::time::SystemTime::now()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let log = Logger::new(Level::Error, LogFormat::Json);
        let hub = Arc::new(Hub::open(&dir, &Registry::new(), log).unwrap());
        let mut sub = hub.subscribe(Filter::all(), Start::Live, Transport::Sse);
        for body in [json!({"k": "small"}), json!("x".repeat(MAX_INLINE_BODY))] {
            let m = Message {
                msg_id: "MSG-000000000001".into(),
                seq: 1,
                kind: "note".into(),
                body: body.clone(),
                run_id: Some("r1".into()),
                timestamp: 5.0,
            };
            hub.message_appended(&m, Some(&run()));
            let Next::Event(e) = sub.next(Duration::ZERO) else {
                panic!("no event");
            };
            let v: Value = serde_json::from_str(e.json()).unwrap();
            assert_eq!(v["work_order_id"], "wo-7");
            assert_eq!(v["body_bytes"], body.to_string().len());
            let inline = body.to_string().len() <= MAX_INLINE_BODY;
            assert_eq!(v.get("body"), inline.then_some(&body));
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
