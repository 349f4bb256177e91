//! Routing and the handlers, which translate between an [`Exchange`] and the domain.

use std::io::Write;
use std::sync::Arc;

use serde_json::{json, Value};

use super::exchange::Exchange;
use super::json::Body;
use super::response::{Response, JSON};
use super::streams::{self, Wire};
use super::{Answer, Request};
use crate::app::{App, VERSION};
use crate::budget::{SpendInput, Spent};
use crate::bus;
use crate::error::Error;
use crate::json_text;
use crate::metrics::Format;
use crate::runs::{Finish, NewRun, Prepared, Status, Step, Timed};
use crate::time;

/// What a handler gives: its answer, or the error to answer with.
type Handled = Result<Answer, Response>;

/// Dispatches one request; the API key was checked on the head.
pub fn route(ex: &mut Exchange) -> Answer {
    let path = ex.path().to_string();
    let method = ex.method();
    if path == "*" {
        // `OPTIONS *` asks what the server as a whole supports (RFC 9110 9.3.7).
        let r = Response::json_text(204, Vec::new()).with_header("Allow", "GET, HEAD, POST");
        return ex.send(r);
    }
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    let Some(allow) = allowed(&segments) else {
        let r = Response::error(404, "NOT_FOUND", &format!("no route for {path}"));
        return ex.send(r);
    };
    if !allow.split(", ").any(|m| m == method) {
        let message = format!("allowed methods: {allow}");
        let r = Response::error(405, "METHOD_NOT_ALLOWED", &message).with_header("Allow", allow);
        return ex.send(r);
    }
    let handled = match (segments.as_slice(), method) {
        (["metrics"], _) => metrics(ex),
        (["healthz"], _) => Ok(ex.send(Response::json(200, &json!({"status": "ok"})))),
        (["api", "v1", "status"], _) => Ok(status(ex)),
        (["api", "v1", "runs"], "POST") => begin(ex, false),
        (["api", "v1", "runs"], _) => list_runs(ex),
        (["api", "v1", "runs", id], _) => get_run(ex, id),
        (["api", "v1", "runs", id, "events"], _) => record_events(ex, Some(id)),
        (["api", "v1", "runs", id, action], _) => finish_run(ex, id, action),
        (["api", "v1", "budget"] | ["api", "v1", "agent", "budget"], _) => {
            let status = ex.app().budget.status();
            Ok(ex.send(Response::json(200, &status.to_json())))
        }
        (["api", "v1", "budget", "history"], _) => match ex.app().budget.history() {
            Ok(history) => Ok(ex.send(Response::json(200, &history))),
            Err(e) => Err(e.into()),
        },
        (["api", "v1", "agent", "trigger"], _) => begin(ex, true),
        (["api", "v1", "agent", "status"], _) => Ok(agent_status(ex)),
        (["api", "v1", "budget", "spend"], _) => spend(ex),
        (["api", "v1", "metrics"], "POST") => update_metrics(ex),
        (["api", "v1", "metrics"], _) => Ok(declared_families(ex)),
        (["api", "v1", "messages"], "POST") => append_message(ex),
        (["api", "v1", "messages"], _) => read_messages(ex),
        (["api", "v1", "events"], "POST") => record_events(ex, None),
        (["api", "v1", "events"], _) => Ok(streams::events(ex)),
        (["api", "v1", "ws"], _) => Ok(streams::websocket(ex, Wire::Ours)),
        (["ws"], _) => Ok(streams::websocket(ex, Wire::AgentGate)),
        _ => Ok(streams::page(ex)),
    };
    handled.unwrap_or_else(|e| ex.send(e))
}

/// The methods a route allows, as its `Allow` header lists them; `None` for no route.
fn allowed(segments: &[&str]) -> Option<&'static str> {
    Some(match segments {
        [] | ["metrics" | "healthz"] => "GET, HEAD",
        ["api", "v1", "runs" | "metrics" | "messages" | "events"] => "GET, POST",
        ["api", "v1", "status" | "budget" | "ws"]
        | ["api", "v1", "runs", _]
        | ["api", "v1", "agent", "budget" | "status"]
        | ["api", "v1", "budget", "history"]
        | ["ws"] => "GET",
        ["api", "v1", "runs", _, "events" | "complete" | "fail" | "cancel"]
        | ["api", "v1", "agent", "trigger"]
        | ["api", "v1", "budget", "spend"] => "POST",
        _ => return None,
    })
}

/// Whether a request for `target` needs the API key, when one is set: the
/// API's routes and `/ws`, which carries what `/api/v1/ws` does.
pub fn needs_key(target: &str) -> bool {
    let path = target.split_once('?').map_or(target, |(path, _)| path);
    path.starts_with("/api/") || path.trim_end_matches('/') == "/ws"
}

/// Checks `Authorization: Bearer KEY` (the scheme in any case, RFC 9110
/// section 11.1) or `X-API-Key: KEY` in constant time; true when no key is set.
pub fn authorized(app: &App, request: &Request) -> bool {
    let Some(key) = app.config.api_key.as_deref() else {
        return true;
    };
    let bearer = request.header("Authorization").and_then(|v| {
        let (scheme, token) = v.trim().split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then_some(token)
    });
    [bearer, request.header("X-API-Key")]
        .into_iter()
        .flatten()
        .any(|k| constant_time_eq(k.trim().as_bytes(), key.as_bytes()))
}

/// Compares without an early exit, so timing reveals nothing but length.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

fn metrics(ex: &mut Exchange) -> Handled {
    // An empty `?format=` is no choice, as an empty `?status=` is.
    let chosen = ex.query("format").filter(|f| !f.is_empty());
    let format = match chosen.map(|f| f.to_ascii_lowercase()).as_deref() {
        None => Format::negotiate(ex.header("Accept").as_deref()),
        Some("openmetrics") => Format::OpenMetrics,
        Some("text" | "prometheus") => Format::Text,
        Some(_) => {
            let why = "must be text, prometheus or openmetrics";
            return Err(Error::invalid("format", why).into());
        }
    };
    // Rendered as it is sent: a scrape of any size costs a piece of memory.
    let app = ex.app().clone();
    Ok(ex.stream(format.content_type(), move |out| {
        app.registry.render_to(out, format)
    }))
}

/// The most items of a listing read at once, so it holds one page however slowly it is read.
const LIST_PAGE: usize = 64;

/// The most bytes of message bodies in a listing's page, past its first message.
const LIST_PAGE_BYTES: usize = 256 * 1024;

/// The most running runs `GET /api/v1/status` lists.
const STATUS_RUNS: usize = 100;

fn status(ex: &mut Exchange) -> Answer {
    let app = ex.app();
    let counts = app.runs.counts();
    // The oldest running runs; `active_runs_count` has them all.
    let (runs, running) = (&app.runs, Some(Status::Running));
    let page = runs.listing(running, None, STATUS_RUNS);
    let running = page
        .map(|p| runs.runs_of(&p.ids, running))
        .unwrap_or_default();
    let runs: Vec<Value> = running
        .iter()
        .map(|r| {
            let v = r.to_json();
            json!({"run_id": v["run_id"], "agent": v["agent"], "started_at": v["started_at"]})
        })
        .collect();
    let body = json!({
        "version": VERSION,
        "uptime_seconds": app.uptime_seconds(),
        "active_runs_count": counts.active,
        "completed_runs": counts.completed,
        "failed_runs": counts.failed,
        "cancelled_runs": counts.cancelled,
        "messagebus_appends": app.bus.appended(),
        "runs": runs,
    });
    ex.send(Response::json(200, &body))
}

/// Starts a run, answering once the start is durable: 201, or for `POST /api/v1/agent/trigger`
/// 200 naming the run `operation_id` too, under which the run API reports and finishes it.
fn begin(ex: &mut Exchange, trigger: bool) -> Handled {
    let fields = "run_id agent goal work_order_id correlation_id strategy max_iterations";
    let body = Body::parse(&ex.read_body()?, fields)?;
    let new = NewRun {
        run_id: body.opt_str("run_id")?,
        agent: body.opt_text("agent")?,
        goal: body.opt_text("goal")?,
        work_order_id: body.opt_text("work_order_id")?,
        correlation_id: body.opt_text("correlation_id")?,
        strategy: body.opt_text("strategy")?,
        max_iterations: body.opt_u64("max_iterations")?,
        // Kept only when valid: it is echoed into trace exports later.
        traceparent: ex
            .header("traceparent")
            .map(|t| t.trim().to_string())
            .filter(|t| crate::otlp::TraceContext::parse_traceparent(t).is_some()),
    };
    let run = ex.app().runs.start(new)?;
    annotate_run(ex, &run.run_id, run.correlation());
    let id = &*run.run_id;
    let mut body =
        json!({"run_id": id, "status": "running", "started_at": time::rfc3339(run.started_at)});
    if !trigger {
        return Ok(ex.send(Response::json(201, &body)));
    }
    body["triggered"] = json!(true);
    body["operation_id"] = json!(id);
    Ok(ex.send(Response::json(200, &body)))
}

/// `GET /api/v1/agent/status`: idle, or the newest running cycle and how many run.
fn agent_status(ex: &mut Exchange) -> Answer {
    let body = match ex.app().runs.newest_running() {
        None => json!({"status": "idle"}),
        Some((newest, active)) => json!({
            "status": "running",
            "operation_id": &*newest.run_id,
            "active_runs": active,
            "started_at": time::rfc3339(newest.started_at),
        }),
    };
    ex.send(Response::json(200, &body))
}

/// Adds the run to the request's log line.
fn annotate_run(ex: &mut Exchange, run_id: &str, correlation: &str) {
    ex.annotate("run_id", json!(run_id));
    ex.annotate("correlation_id", json!(correlation));
}

fn finish_run(ex: &mut Exchange, id: &str, action: &str) -> Handled {
    let fields = if action == "fail" {
        "error cost"
    } else {
        "cost"
    };
    let body = Body::parse(&ex.read_body()?, fields)?;
    let how = match action {
        "complete" => Finish::Complete,
        "fail" => Finish::Fail(body.opt_text("error")?),
        _ => Finish::Cancel,
    };
    let finished = ex.app().runs.finish(id, how, body.opt_f64("cost")?)?;
    let run = &finished.run;
    annotate_run(ex, &run.run_id, run.correlation());
    Ok(ex.send(Response::json_text(200, run.to_json_text().into_bytes())))
}

/// Records run `id`'s events, or for `POST /api/v1/events` an AgentGate-style
/// emitter's progress events, each naming its run; each step is announced as
/// its own route would: starts, events and ends, in order.
fn record_events(ex: &mut Exchange, id: Option<&str>) -> Handled {
    let body = ex.read_body()?;
    let now = time::now_unix();
    // Most batches of one run are plain and skip the JSON tree; the rest go the general way.
    let plain = id.and_then(|_| crate::runs::plain_batch::parse_plain_batch(&body, now));
    let n = match (id, plain) {
        (Some(id), Some(events)) => run_events(ex, id, events)?,
        _ => {
            let value = Body::parse_value(&body)?;
            let steps = crate::runs::progress::parse_batch(&value, &body, now, id)?;
            match id {
                Some(id) if steps.iter().all(|p| matches!(p.step, Step::Event(_))) => {
                    let events = steps.into_iter().filter_map(|p| match p.step {
                        Step::Event(e) => Some(e),
                        _ => None,
                    });
                    run_events(ex, id, events.collect())?
                }
                _ => {
                    let n = steps.len();
                    ex.app().runs.apply_batch(steps)?;
                    n
                }
            }
        }
    };
    Ok(ex.send(Response::json(200, &json!({ "accepted": n }))))
}

/// Records `events` of run `id`; returns how many.
fn run_events(ex: &mut Exchange, id: &str, mut events: Vec<Timed>) -> Result<usize, Error> {
    let runs = &ex.app().runs;
    let version = runs.fill_events(id, &mut events);
    let (n, events): (usize, Arc<[Timed]>) = (events.len(), events.into());
    // Rendered here, so the run journal's one applying thread only numbers and hands them out.
    let prepared = runs
        .with_run(id, |run| run.ids())
        .map(|ids| -> Prepared { Box::new(crate::events::PreparedEvents::new(&ids, &events)) });
    let ids = runs.record_events(id, events, version, prepared)?;
    annotate_run(ex, &ids.run_id, ids.correlation());
    Ok(n)
}

/// `POST /api/v1/budget/spend`: 201 with what was recorded; 200 with what
/// was recorded before, for an `operation_id` today's ledger already holds.
fn spend(ex: &mut Exchange) -> Handled {
    let fields = "amount input_tokens output_tokens model run_id phase operation_id";
    let body = Body::parse(&ex.read_body()?, fields)?;
    let amount = body.opt_f64("amount")?;
    let input_tokens = body.opt_u64("input_tokens")?;
    let output_tokens = body.opt_u64("output_tokens")?;
    let input = match (amount, input_tokens, output_tokens) {
        (Some(a), None, None) => SpendInput::Amount(a),
        (None, Some(i), Some(o)) => SpendInput::Tokens {
            input_tokens: i,
            output_tokens: o,
            model: body.opt_text("model")?,
        },
        wrong => {
            let either = "give either amount or input_tokens and output_tokens";
            let (field, why) = match wrong {
                (Some(_), _, _) => ("amount", either),
                (None, None, _) => ("input_tokens", "is required without amount"),
                _ => ("output_tokens", "is required with input_tokens"),
            };
            return Err(Error::invalid(field, why).into());
        }
    };
    let run_id = body.opt_text("run_id")?;
    let (run_id, phase) = (run_id.as_deref(), body.opt_str("phase")?);
    let operation_id = body.opt_str("operation_id")?;
    let app = ex.app().clone();
    let spent = app
        .budget
        .spend_once(operation_id.as_deref(), input, run_id, phase.as_deref());
    let (status, repeat, recorded) = match spent? {
        Spent::New(r) => {
            app.budget_alerts(&r, run_id);
            (201, false, r)
        }
        Spent::Repeat(r) => (200, true, r),
    };
    let mut body = recorded.to_json();
    if let Some(id) = operation_id {
        body["operation_id"] = json!(id);
        body["already_recorded"] = json!(repeat);
    }
    Ok(ex.send(Response::json(status, &body)))
}

fn list_runs(ex: &mut Exchange) -> Handled {
    let status = ex.query("status").filter(|s| !s.is_empty()).map(|s| {
        let why = "must be running, completed, failed or cancelled";
        Status::parse(&s).ok_or_else(|| Error::invalid("status", why))
    });
    let status = status.transpose()?;
    let (limit, after) = page(ex)?;
    let listing = ex.app().runs.listing(status, after.as_deref(), limit)?;
    // `{"runs": [...], "next_after": ...}` with keys in serde_json's order,
    // a page of runs at a time; a run ended or let go meanwhile is left out.
    let app = ex.app().clone();
    Ok(ex.stream(JSON, move |out| {
        out.write_all(b"{\"next_after\":")?;
        serde_json::to_writer(&mut *out, &listing.next_after)?;
        out.write_all(b",\"runs\":[")?;
        let mut first = true;
        for ids in listing.ids.chunks(LIST_PAGE) {
            for run in app.runs.runs_of(ids, status) {
                if !std::mem::take(&mut first) {
                    out.write_all(b",")?;
                }
                out.write_all(run.to_json_text().as_bytes())?;
            }
        }
        out.write_all(b"]}")
    }))
}

/// The `limit` of a listing (1 to 1000, 100 when absent) and the `after` it resumes from.
fn page(ex: &Exchange) -> Result<(usize, Option<String>), Error> {
    let after = ex.query("after").filter(|a| !a.is_empty());
    match ex.query("limit") {
        None => Ok((bus::DEFAULT_LIMIT, after)),
        Some(l) => match l.parse::<usize>() {
            Ok(n) if (1..=bus::MAX_LIMIT).contains(&n) => Ok((n, after)),
            _ => Err(Error::invalid("limit", "must be an integer from 1 to 1000")),
        },
    }
}

fn get_run(ex: &mut Exchange, id: &str) -> Handled {
    let run = ex.app().runs.get(id);
    let run = run.ok_or_else(|| Error::NotFound(format!("run {id} not found")))?;
    Ok(ex.send(Response::json_text(200, run.to_json_text().into_bytes())))
}

/// `GET /api/v1/metrics`: the declared families, in the file's format, so a
/// client can send only updates they take instead of learning it from a 400.
fn declared_families(ex: &mut Exchange) -> Answer {
    let declared = ex.app().declared.declarations().iter();
    let families: Vec<Value> = declared.map(|d| d.to_json()).collect();
    ex.send(Response::json(200, &json!({ "families": families })))
}

/// `POST /api/v1/metrics`: updates to declared families, all or nothing.
fn update_metrics(ex: &mut Exchange) -> Handled {
    let value = Body::parse_value(&ex.read_body()?)?;
    let updates = ex.app().declared.parse(&value)?;
    let n = ex.app().declared.update(updates)?;
    Ok(ex.send(Response::json(200, &json!({ "accepted": n }))))
}

fn append_message(ex: &mut Exchange) -> Handled {
    let body = Body::parse(&ex.read_body()?, "type body run_id")?;
    let kind = body.str("type")?;
    let content = body.any("body").cloned();
    let content = content.ok_or_else(|| Error::invalid("body", "is required"))?;
    let m = ex
        .app()
        .bus
        .append(kind, content, body.opt_str("run_id")?)?;
    Ok(ex.send(appended(&m.msg_id, m.timestamp)))
}

/// `201 {"msg_id", "timestamp"}`, written directly: it answers every append.
fn appended(msg_id: &str, timestamp: f64) -> Response {
    let mut body = String::with_capacity(72);
    body.push_str("{\"msg_id\":");
    json_text::push_str(&mut body, msg_id);
    body.push_str(",\"timestamp\":\"");
    time::push_rfc3339(&mut body, timestamp);
    body.push_str("\"}");
    Response::json_text(201, body.into_bytes())
}

fn read_messages(ex: &mut Exchange) -> Handled {
    let (limit, after) = page(ex)?;
    let mut from = ex.app().bus.cursor(after.as_deref())?;
    // The text of `{"messages": [...]}`, a page of messages at a time.
    let app = ex.app().clone();
    Ok(ex.stream(JSON, move |out| {
        out.write_all(b"{\"messages\":[")?;
        let (bus, mut left, mut text) = (&app.bus, limit, String::new());
        while left > 0 {
            let page = bus.read_after(from, left.min(LIST_PAGE), LIST_PAGE_BYTES);
            let Some(last) = page.last() else {
                break;
            };
            from = last.seq;
            for m in &page {
                if left < limit {
                    out.write_all(b",")?;
                }
                left -= 1;
                text.clear();
                m.push_json(&mut text);
                out.write_all(text.as_bytes())?;
            }
        }
        out.write_all(b"]}")
    }))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_api_and_agentgates_stream_need_the_key() {
        for target in [
            "/api/v1/runs",
            "/api/v1/ws?run_id=r",
            "/ws",
            "/ws/",
            "/ws?tail=5",
        ] {
            assert!(super::needs_key(target), "{target}");
        }
        for target in [
            "/", "/metrics", "/healthz", "/wsx", "/ws/x", "/api", "/x?/ws",
        ] {
            assert!(!super::needs_key(target), "{target}");
        }
    }

    #[test]
    fn constant_time_eq_compares_exactly() {
        assert!(super::constant_time_eq(b"secret", b"secret"));
        assert!(!super::constant_time_eq(b"secret", b"secreT"));
        assert!(!super::constant_time_eq(b"secret", b"secret2"));
    }

    #[test]
    fn the_append_answer_is_what_json_prints() {
        let at = 1_795_000_000.123;
        let answer = super::appended("MSG-000000000007", at);
        let value = serde_json::json!({
            "msg_id": "MSG-000000000007",
            "timestamp": crate::time::rfc3339(at),
        });
        assert_eq!(answer, super::Response::json(201, &value));
    }
}
