//! The command line's help: one text for the whole program and one per
//! subcommand, and the nearest subcommand to a mistyped one.

/// The subcommands, in the order the help lists them.
pub const SUBCOMMANDS: [&str; 10] = [
    "serve", "status", "budget", "trigger", "complete", "fail", "cancel", "demo", "repair", "help",
];

/// The `--help` text of the whole program.
pub const HELP: &str = "\
conductor-metrics: Prometheus metrics, a durable message bus and run tracking for AI-agent orchestration

Usage:
  conductor-metrics [serve] [OPTIONS]      run the server (the default)
  conductor-metrics status [--url URL]     print a summary from a running server
  conductor-metrics budget [--url URL]     print the day's budget
  conductor-metrics trigger [--url URL]    start a run if the budget allows (exit 3 when refused)
  conductor-metrics complete RUN_ID [--cost DOLLARS]
  conductor-metrics fail RUN_ID [--error TEXT] [--cost DOLLARS]
  conductor-metrics cancel RUN_ID [--cost DOLLARS]
                                           finish a run, such as one `trigger` started
  conductor-metrics demo [--url URL] [--runs N] [--seed S]
                                           send a seeded synthetic workload to a running server
  conductor-metrics repair [--data-dir DIR]
                                           move damaged journal lines aside, so the server starts
  conductor-metrics help [SUBCOMMAND]      this text, or a subcommand's own
  conductor-metrics --version

Run `conductor-metrics SUBCOMMAND --help` for a subcommand's options.
";

/// `serve --help`.
pub const SERVE: &str = "\
conductor-metrics serve: run the server (the default subcommand)

Usage: conductor-metrics [serve] [OPTIONS]

Options (each has an environment variable; the flag wins):
  --addr HOST:PORT       listen address            CONDUCTOR_ADDR      (127.0.0.1:14355)
  --data-dir DIR         journals and ledgers      CONDUCTOR_DATA_DIR  (./data)
  --max-body BYTES       request body limit        CONDUCTOR_MAX_BODY  (1MiB; K, M, KiB, MiB suffixes)
  --api-key-file FILE    require this key on /api/v1/*  (or the key itself in CONDUCTOR_API_KEY)
  --log-level LEVEL      error, warn, info, debug  CONDUCTOR_LOG       (info)
  --log-format FORMAT    json or text                                  (json)
  --idle-timeout DUR     close idle keep-alive connections  CONDUCTOR_IDLE_TIMEOUT    (30s)
  --header-timeout DUR   time allowed to send a request head CONDUCTOR_HEADER_TIMEOUT (10s)
  --write-timeout DUR    time a client has to take each 64 KiB of an answer  CONDUCTOR_WRITE_TIMEOUT (10s)
  --max-connections N    open connection cap            CONDUCTOR_MAX_CONNECTIONS (4096)
  --shutdown-timeout DUR time to finish requests on SIGTERM CONDUCTOR_SHUTDOWN_TIMEOUT (10s)
                         (DUR: seconds, or a number with ms, s, m or h)
  --daily-budget DOLLARS daily spend limit         AGENT_DAILY_BUDGET  (5.00)
  --run-estimate DOLLARS reserved per run start    AGENT_RUN_ESTIMATE  (0.15)
  --pricing FILE         model prices, JSON        (default $15 in / $75 out per 1M tokens)
                         ledger directory          AGENT_BUDGET_DIR    (DATA_DIR/budget)
  --metrics-file FILE    declared metric families, JSON  CONDUCTOR_METRICS_FILE (none)
  --run-timeout DUR      end a run with no event this long as abandoned  CONDUCTOR_RUN_TIMEOUT (6h; 0: never)
  --retain-messages N    newest bus messages kept  CONDUCTOR_RETAIN_MESSAGES (100000; 0: no bound)
  --retain-message-bytes BYTES  bytes of them kept  CONDUCTOR_RETAIN_MESSAGE_BYTES (64MiB; 0: no bound)
  --retain-runs N        newest finished runs kept  CONDUCTOR_RETAIN_RUNS (100000; 0: no bound)
  --retain-run-bytes BYTES  bytes of them kept   CONDUCTOR_RETAIN_RUN_BYTES (64MiB; 0: no bound)
  --snapshot-bytes BYTES  run journal growth between snapshots  CONDUCTOR_SNAPSHOT_BYTES (16MiB; 0: none)

Traces (OpenTelemetry), by environment variable only:
  OTEL_EXPORTER_OTLP_ENDPOINT     http:// OTLP/HTTP collector; unset: no tracing
  OTEL_SERVICE_NAME               service.name               (conductor-metrics)
  OTEL_BSP_MAX_QUEUE_SIZE         spans waiting for export   (2048)
  OTEL_BSP_MAX_EXPORT_BATCH_SIZE  spans per request          (512)
  OTEL_BSP_SCHEDULE_DELAY         ms a partial batch waits   (1000)
  OTEL_EXPORTER_OTLP_TIMEOUT      ms per export request      (5000)

SIGTERM or SIGINT stops the server gracefully: it stops accepting, answers
the requests in flight, closes the streams and exits 0.
";

/// `repair --help`.
pub const REPAIR: &str = "\
conductor-metrics repair: move damaged journal lines aside, so the server starts

Usage: conductor-metrics repair [--data-dir DIR]

A server refuses to start on a journal with a damaged line (a checksum that
does not match, or a line that is not JSON), naming the file, the line and
the byte offset. This checks every journal (*.jsonl) under the data dir and
the budget ledger dir, appends each damaged line to FILE.corrupt beside it,
rewrites the journal without it, and prints what it moved. A torn last line
is cut, as a start would. Stop the server first.

Options:
  --data-dir DIR         journals and ledgers      CONDUCTOR_DATA_DIR  (./data)
                         ledger directory          AGENT_BUDGET_DIR    (DATA_DIR/budget)

Exit codes: 0 done (whether or not anything was moved), 1 a file could not be
read or written, 2 bad input.
";

/// The options every client subcommand shares.
const CLIENT_OPTIONS: &str = "\
  --url URL              server base URL           CONDUCTOR_URL       (http://127.0.0.1:14355)
  CONDUCTOR_API_KEY      sent as a bearer token when set
";

/// The help text of `sub`, or `None` for a name that is not a subcommand.
pub fn subcommand_help(sub: &str) -> Option<String> {
    let (usage, what, extra) = match sub {
        "serve" => return Some(SERVE.to_string()),
        "repair" => return Some(REPAIR.to_string()),
        "help" => return Some(HELP.to_string()),
        "status" => ("status [--url URL]", "print a summary of a running server: uptime, run counts, bus appends and the active runs", ""),
        "budget" => ("budget [--url URL]", "print the day's budget as the research agent's CLI does (Agent Budget Status)", ""),
        "trigger" => ("trigger [--url URL]", "trigger a cycle (POST /api/v1/agent/trigger) and print the JSON answer; exit 0 when triggered, 3 when the budget refused it, 1 otherwise", ""),
        "complete" => ("complete RUN_ID [--cost DOLLARS] [--url URL]", "complete a running run and print it with the cost recorded", "  --cost DOLLARS         the run's cost; priced from its token events when absent\n"),
        "fail" => ("fail RUN_ID [--error TEXT] [--cost DOLLARS] [--url URL]", "fail a running run and print it with the cost recorded", "  --error TEXT           what went wrong\n  --cost DOLLARS         the run's cost; priced from its token events when absent\n"),
        "cancel" => ("cancel RUN_ID [--cost DOLLARS] [--url URL]", "cancel a running run and print it with the cost recorded", "  --cost DOLLARS         the run's cost; priced from its token events when absent\n"),
        "demo" => ("demo [--url URL] [--runs N] [--seed S]", "send a seeded synthetic workload to a running server", "  --runs N               runs to send, 1 to 10000                      (20)\n  --seed S               workload seed; one seed, one workload          (1)\n"),
        _ => return None,
    };
    Some(format!(
        "conductor-metrics {sub}: {what}\n\nUsage: conductor-metrics {usage}\n\nOptions:\n{extra}{CLIENT_OPTIONS}\nExit codes: 0 done, 1 the server could not be reached or refused, 2 bad input{}.\n",
        if sub == "trigger" { ", 3 the budget refused the run" } else { "" }
    ))
}

/// The subcommand nearest to `word` by edit distance, when it is near
/// enough to be a typo (at most two edits, and fewer than its length).
pub fn nearest(word: &str) -> Option<&'static str> {
    SUBCOMMANDS
        .iter()
        .map(|s| (distance(word, s), *s))
        .filter(|(d, _)| *d <= 2 && *d < word.len())
        .min_by_key(|(d, _)| *d)
        .map(|(_, s)| s)
}

/// The Levenshtein distance, over bytes: names are ASCII.
fn distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_subcommand_has_its_own_help() {
        for sub in SUBCOMMANDS {
            let text = subcommand_help(sub).unwrap();
            assert!(
                text.contains(&format!("conductor-metrics {sub}")) || sub == "help",
                "{sub}"
            );
        }
        assert!(subcommand_help("nope").is_none());
        assert!(SERVE.contains("OTEL_EXPORTER_OTLP_ENDPOINT"));
    }

    #[test]
    fn near_misses_are_suggested() {
        assert_eq!(nearest("stauts"), Some("status"));
        assert_eq!(nearest("serv"), Some("serve"));
        assert_eq!(nearest("tigger"), Some("trigger"));
        assert_eq!(nearest("xyzzy"), None);
        assert_eq!(nearest("a"), None);
        assert_eq!(distance("kitten", "sitting"), 3);
    }
}
