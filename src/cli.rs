//! The client subcommands: readable summaries of a running server.

use serde_json::Value;

use crate::client;

/// Prints the `/api/v1/status` summary; returns the exit code.
pub fn status(url: &str) -> i32 {
    match client::request("GET", url, "/api/v1/status", None) {
        Ok(a) if a.status == 200 => {
            print!("{}", format_status(&a.json));
            0
        }
        Ok(a) => {
            eprintln!(
                "status: the server answered {}: {}",
                a.status, a.json["error"]["message"]
            );
            1
        }
        Err(e) => {
            eprintln!("status: {e}");
            1
        }
    }
}

/// The readable status text.
pub fn format_status(s: &Value) -> String {
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
    let runs = s["runs"].as_array().cloned().unwrap_or_default();
    if !runs.is_empty() {
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
