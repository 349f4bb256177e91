//! The command line: `serve` (in `serve.rs`), the client subcommands and
//! `repair`, which works on the data dir itself.

use std::process::ExitCode;

use serde_json::{json, Value};

use crate::app::VERSION;
use crate::client::{self, Received};
use crate::config::{self, Client, Command};
use crate::demo;

/// Runs the command line `args` (without the program name).
pub fn run(args: &[String]) -> ExitCode {
    let command = match config::parse(args, &|k| std::env::var(k).ok()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("conductor-metrics: {e}");
            return ExitCode::from(2);
        }
    };
    let code = match command {
        Command::Help(text) => {
            print!("{text}");
            0
        }
        Command::Version => {
            println!("conductor-metrics {VERSION}");
            0
        }
        Command::Client(sub, c) if sub == "demo" => demo::command(&c),
        Command::Client(sub, c) => send(&sub, &c),
        Command::Repair(c) => repair(&c.data_dir, &c.budget.dir),
        Command::Serve(c) => return crate::serve::serve(*c),
    };
    ExitCode::from(code)
}

/// Sends `command`'s request and prints a 200 answer (exit 0), else why
/// (exit 1). A finish prints the run with its cost; a `trigger` the budget
/// refused prints the JSON answer and exits 3.
fn send(command: &str, c: &Client) -> u8 {
    let (path, mut body, format): (_, _, fn(&Value) -> String) = match command {
        "status" => ("/api/v1/status".into(), Value::Null, format_status),
        "budget" => ("/api/v1/agent/budget".into(), Value::Null, format_budget),
        "trigger" => (
            "/api/v1/agent/trigger".into(),
            json!({"agent": "cli"}),
            pretty,
        ),
        action => {
            let body = json!({"error": c.error, "cost": c.cost});
            (format!("/api/v1/runs/{}/{action}", c.run_id), body, pretty)
        }
    };
    if let Some(members) = body.as_object_mut() {
        members.retain(|_, v| !v.is_null());
    }
    let (method, body) = match body {
        Value::Null => ("GET", None),
        _ => ("POST", Some(&body)),
    };
    match client::request(method, &c.url, &path, body) {
        Ok(a) if a.status == 200 => {
            print!("{}", format(&a.json()));
            0
        }
        Ok(a) if a.status == 429 && command == "trigger" => {
            let mut json = a.json();
            if let Some(o) = json.as_object_mut() {
                o.remove("error");
            }
            print!("{}", pretty(&json));
            3
        }
        Ok(a) => refused(command, &a),
        Err(e) => {
            eprintln!("{command}: {e}");
            1
        }
    }
}

/// Says why the server refused, and what to do about a missing key: exit 1.
fn refused(command: &str, a: &Received) -> u8 {
    let json = a.json();
    let message = json["error"]["message"].as_str();
    let message = message.unwrap_or("no reason given");
    if a.status == 401 {
        let hint = if std::env::var_os("CONDUCTOR_API_KEY").is_some() {
            "the key in CONDUCTOR_API_KEY was refused"
        } else {
            "set CONDUCTOR_API_KEY to the server's API key"
        };
        eprintln!("{command}: the server requires an API key ({message}): {hint}");
    } else {
        eprintln!("{command}: the server answered {}: {message}", a.status);
    }
    1
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default() + "\n"
}

/// The budget table as the research agent's `budget` prints it, then, from
/// a forecasting server, the estimate, last hour's rate and forecast.
fn format_budget(b: &Value) -> String {
    let money = |k: &str| format!("${:.2}", b[k].as_f64().unwrap_or(0.0));
    let mut rows = vec![
        ("Date", b["date"].as_str().unwrap_or("?").to_string()),
        ("Daily Limit", money("daily_limit")),
        ("Today's Spend", money("today_spend")),
        ("Remaining", money("remaining")),
        ("Cycles Affordable", format!("~{}", b["cycles_affordable"])),
    ];
    if let Some(rate) = b["spend_rate_dollars_per_hour"].as_f64() {
        let mode = b["run_estimate_mode"].as_str().unwrap_or("?");
        rows.push((
            "Run Estimate",
            format!("{} ({mode})", money("run_estimate")),
        ));
        rows.push(("Spend Rate", format!("${rate:.2}/hour over the last hour")));
        rows.push(("Forecast", forecast(b)));
    }
    let mut out = String::from("Agent Budget Status\n");
    for (label, value) in rows {
        out.push_str(&format!("{:<19}{value}\n", format!("{label}:")));
    }
    out
}

/// When the budget runs out at the last hour's rate, or that it lasts.
fn forecast(b: &Value) -> String {
    // `HH:MM` of an RFC 3339 time in UTC, as the server writes them.
    let clock = |k: &str| b[k].as_str().and_then(|t| t.get(11..16)).unwrap_or("?");
    let reset = clock("reset_at");
    match b["exhausts_at"].as_str() {
        _ if b["remaining"].as_f64() == Some(0.0) => {
            format!("exhausted; the budget resets at {reset} UTC")
        }
        Some(_) => format!("at this rate, exhausted at {} UTC", clock("exhausts_at")),
        None => format!("at this rate, it lasts to the reset at {reset} UTC"),
    }
}

/// The readable status text.
fn format_status(s: &Value) -> String {
    let mut out = format!(
        "conductor-metrics {}\nuptime        {:.0}s\nactive runs   {}\ncompleted     {}\nfailed        {}\ncancelled     {}\nbus appends   {}\n",
        s["version"].as_str().unwrap_or("?"),
        s["uptime_seconds"].as_f64().unwrap_or(0.0),
        s["active_runs_count"],
        s["completed_runs"],
        s["failed_runs"],
        s["cancelled_runs"],
        s["messagebus_appends"],
    );
    if let Some(runs) = s["runs"].as_array().filter(|runs| !runs.is_empty()) {
        out.push_str("\nRUN ID                           AGENT            STARTED\n");
        for r in runs {
            out.push_str(&format!(
                "{:<32} {:<16} {}\n",
                r["run_id"].as_str().unwrap_or(""),
                r["agent"].as_str().unwrap_or("-"),
                r["started_at"].as_str().unwrap_or("")
            ));
        }
    }
    out
}

/// Moves damaged journal lines aside, printing each and a summary.
fn repair(data_dir: &std::path::Path, budget_dir: &std::path::Path) -> u8 {
    if let Err(e) = crate::repair::check_data_dir(data_dir) {
        eprintln!("repair: {e}");
        return 2;
    }
    // Locked throughout: a server writing the journals meanwhile would lose
    // what it appends to a file being replaced.
    let repaired = crate::lock::lock(data_dir).and_then(|_lock| {
        crate::repair::repair(&[data_dir, budget_dir]).map_err(|e| e.to_string())
    });
    let report = match repaired {
        Ok(report) => report,
        Err(e) => {
            eprintln!("repair: {e}");
            return 1;
        }
    };
    for m in &report.moved {
        let (f, line) = (m.file.display(), m.line);
        let record = m.record.map_or(String::new(), |r| format!(", record {r}"));
        let why = format!("(byte {}{record}): {}", m.offset, m.why);
        println!("repair: {f} line {line} {why}; moved to {f}.corrupt");
    }
    for r in &report.rebuilt {
        let (f, before) = (r.file.display(), r.appended_before);
        println!(
            "repair: {f} line 1: its header was damaged; written again from the segments beside it (records before it: {before}); the damaged line is in {f}.corrupt-header"
        );
    }
    let (moved, rebuilt) = (report.moved.len(), report.rebuilt.len());
    println!(
        "repair: checked {} journals; moved {moved} damaged lines aside; rebuilt {rebuilt} segment headers; cut {} bytes of torn tail",
        report.files, report.torn_bytes
    );
    if report.complete() {
        return 0;
    }
    // Not a success: the store starts without these records.
    for m in &report.moved {
        let (f, line) = (m.file.display(), m.line);
        let record = m.record.map_or(String::new(), |r| format!("record {r}, "));
        eprintln!(
            "repair: {f} {record}line {line}: could not be read and stays out of the store (kept in {f}.corrupt)"
        );
    }
    for u in &report.unnumbered {
        let (f, records) = (u.file.display(), u.records);
        eprintln!(
            "repair: {f}: its header is damaged and no segment beside it numbers it, so its {records} records stay out of the store and a start refuses it; restore it from a backup"
        );
    }
    3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_forecast_reads_as_a_time_or_the_reset() {
        let mut b = json!({
            "date": "2026-11-23", "daily_limit": 100.0, "today_spend": 40.0, "remaining": 52.5,
            "cycles_affordable": 15, "run_estimate": 3.5, "run_estimate_mode": "auto",
            "spend_rate_dollars_per_hour": 12.5, "exhausts_at": "2026-11-23T15:40:12.345Z",
            "reset_at": "2026-11-24T00:00:00.000Z",
        });
        let table = format_budget(&b);
        let tail: Vec<&str> = table.lines().skip(6).collect();
        assert_eq!(
            tail,
            [
                "Run Estimate:      $3.50 (auto)",
                "Spend Rate:        $12.50/hour over the last hour",
                "Forecast:          at this rate, exhausted at 15:40 UTC",
            ]
        );
        b["exhausts_at"] = Value::Null;
        let lasting = "Forecast:          at this rate, it lasts to the reset at 00:00 UTC";
        assert_eq!(format_budget(&b).lines().last(), Some(lasting));
        b["remaining"] = json!(0.0);
        let exhausted = "Forecast:          exhausted; the budget resets at 00:00 UTC";
        assert_eq!(format_budget(&b).lines().last(), Some(exhausted));
        // An older server's answer has no forecast, and no rows for one.
        let old = json!({"date": "2026-11-23", "cycles_affordable": 3});
        assert_eq!(format_budget(&old).lines().count(), 6);
    }
}
