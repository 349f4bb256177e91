//! The command line's help, from the commands and the settings rows; and
//! the nearest command or flag to a mistyped one.

use super::settings;

/// The commands, in the order the help lists them, with what each does.
const COMMANDS: [[&str; 2]; 10] = [
    ["serve", "run the server (the default: no command runs it)"],
    ["status", "print a summary of a running server"],
    ["budget", "print the day's budget"],
    [
        "trigger",
        "start a run if the budget allows (exit 3 when refused)",
    ],
    [
        "complete",
        "complete the run RUN_ID, such as one `trigger` started",
    ],
    ["fail", "fail the run RUN_ID"],
    ["cancel", "cancel the run RUN_ID"],
    [
        "demo",
        "send a seeded synthetic workload to a running server",
    ],
    [
        "repair",
        "move damaged journal lines aside, so the server starts",
    ],
    ["help", "print this text, or a command's own help"],
];

/// The command, operands and flags (serve's and demo's read better fixed).
fn usage(command: &str) -> String {
    let operands = match command {
        "serve" => return "[serve] [OPTIONS]".to_string(),
        "demo" => return "demo [--url URL] [--runs N] [--seed S]".to_string(),
        "complete" | "fail" | "cancel" => " RUN_ID",
        "help" => " [COMMAND]",
        _ => "",
    };
    let mut out = format!("{command}{operands}");
    for (flag, value) in settings::settings_of(command).map(|s| (s.names.0, s.names.1)) {
        if !flag.is_empty() {
            out.push_str(&format!(" [--{flag} {value}]"));
        }
    }
    out
}

/// The subcommands, in the order the help lists them.
pub(super) fn commands() -> impl Iterator<Item = &'static str> {
    COMMANDS.iter().map(|[name, _]| *name)
}

/// The environment variables of traces, with what each sets.
const TRACE_VARIABLES: [[&str; 2]; 6] = [
    [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "http:// OTLP/HTTP collector (unset: no tracing)",
    ],
    ["OTEL_SERVICE_NAME", "service.name (conductor-metrics)"],
    ["OTEL_BSP_MAX_QUEUE_SIZE", "spans waiting for export (2048)"],
    ["OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "spans per request (512)"],
    ["OTEL_BSP_SCHEDULE_DELAY", "ms a partial batch waits (1000)"],
    ["OTEL_EXPORTER_OTLP_TIMEOUT", "ms per export request (5000)"],
];

/// The `--help` text of the whole program.
pub(super) fn program_help() -> String {
    let mut out = String::from(
        "conductor-metrics: Prometheus metrics, a durable message bus and run tracking for AI-agent orchestration\n\n\
         Usage: conductor-metrics [COMMAND] [OPTIONS]\n\nCommands:\n",
    );
    columns(&mut out, &COMMANDS);
    out.push_str(
        "\nRun `conductor-metrics help COMMAND` or `conductor-metrics COMMAND --help` for a command's\n\
         options; `conductor-metrics --version` prints the version.\n",
    );
    out
}

/// The help text of `command`, or `None` for a word that is not one.
pub(super) fn command_help(command: &str) -> Option<String> {
    let [_, what] = COMMANDS.iter().find(|[name, _]| *name == command)?;
    if command == "help" {
        return Some(program_help());
    }
    let usage = usage(command);
    let mut out =
        format!("conductor-metrics {command}: {what}\n\nUsage: conductor-metrics {usage}\n");
    let (about, exits) = about(command);
    if !about.is_empty() {
        out.push('\n');
        out.push_str(about);
    }
    out.push_str("\nOptions (a flag wins over its environment variable):\n");
    let flags: Vec<(String, &settings::Setting)> = settings::settings_of(command)
        .map(|o| match o.names {
            ("", ..) => (String::new(), o),
            (flag, value, _) => (format!("--{flag} {value}"), o),
        })
        .collect();
    let rows: Vec<[&str; 3]> = flags
        .iter()
        .map(|(flag, o)| [flag.as_str(), o.help, o.names.2])
        .collect();
    columns(&mut out, &rows);
    if command == "serve" {
        out.push_str(
            "\nDUR is whole seconds, or a number with ms, s, m or h. BYTES is a number with\n\
             K, M, G, KiB, MiB or GiB, or none. CONDUCTOR_API_KEY holds the key itself.\n\n\
             Traces (OpenTelemetry), by environment variable only:\n",
        );
        columns(&mut out, &TRACE_VARIABLES);
    }
    out.push_str(exits);
    Some(out)
}

/// What a command's help says between its usage and its options, and last.
fn about(command: &str) -> (&'static str, &'static str) {
    const EXITS: &str =
        "\nExit codes: 0 done, 1 the server could not be reached or refused, 2 bad input.\n";
    match command {
        "serve" => (
            "",
            "\nSIGTERM or SIGINT stops the server gracefully: it stops accepting, answers\n\
             the requests in flight, closes the streams and exits 0.\n",
        ),
        "repair" => (
            "A server refuses to start on a journal with a damaged line (a checksum that\n\
             does not match, or a line that is not JSON), naming the file, the line and\n\
             the byte offset. This checks every journal (*.jsonl) under the data dir and\n\
             the budget ledger dir, appends each damaged line to FILE.corrupt beside it,\n\
             rewrites the journal without it, and prints what it moved. A torn last line\n\
             is cut, as a start would. Stop the server first.\n",
            "\nExit codes: 0 done (whether or not anything was moved), 1 a file could not be\n\
             read or written, 2 bad input.\n",
        ),
        "complete" | "fail" | "cancel" => (
            "Prints the run as the server answers it, with the cost recorded.\n",
            EXITS,
        ),
        "trigger" => (
            "Posts to /api/v1/agent/trigger and prints the JSON answer.\n",
            "\nExit codes: 0 done, 1 the server could not be reached or refused, 2 bad input,\n\
             3 the budget refused the run.\n",
        ),
        _ => ("", EXITS),
    }
}

/// Appends aligned columns, two spaces in and apart; a last cell sets no width.
fn columns<const N: usize>(out: &mut String, rows: &[[&str; N]]) {
    let mut widths = [0; N];
    for row in rows {
        let filled = row.iter().rposition(|c| !c.is_empty()).unwrap_or(0);
        for (w, cell) in widths.iter_mut().zip(&row[..filled]) {
            *w = (*w).max(cell.len());
        }
    }
    for row in rows {
        let mut line = String::from("  ");
        for (i, cell) in row.iter().enumerate() {
            if i + 1 < N {
                line.push_str(&format!("{cell:<width$}  ", width = widths[i]));
            } else {
                line.push_str(cell);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
}

/// The candidate within two edits (and fewer than its length) of `word`.
pub(super) fn nearest<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (distance(word, c), c))
        .filter(|(d, _)| *d <= 2 && *d < word.len())
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
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
    fn every_command_has_its_own_help_and_the_program_help_lists_them() {
        let program = program_help();
        for sub in commands() {
            let text = command_help(sub).unwrap();
            assert!(text.contains(&format!("conductor-metrics {sub}")), "{sub}");
            assert!(
                program.contains(&format!("\n  {sub} ")),
                "{sub} in {program}"
            );
        }
        assert_eq!(command_help("help"), Some(program));
        assert!(command_help("nope").is_none());
        assert!(command_help("serve")
            .unwrap()
            .contains("OTEL_EXPORTER_OTLP_ENDPOINT"));
    }

    /// The column each line's cells start at, after the two-space indent.
    fn starts(line: &str) -> Vec<usize> {
        let bytes = line.as_bytes();
        (2..bytes.len())
            .filter(|&i| bytes[i] != b' ' && (i == 2 || bytes[i - 2..i] == *b"  "))
            .collect()
    }

    #[test]
    fn every_option_line_is_aligned() {
        for sub in commands() {
            let text = command_help(sub).unwrap();
            let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("  --")).collect();
            assert_eq!(
                lines.len(),
                settings::settings_of(sub)
                    .filter(|o| !o.names.0.is_empty())
                    .count(),
                "{sub}: {text}"
            );
            // The description column is the same for every flag; so is the
            // variable column for every flag that has one.
            let description: Vec<usize> = lines.iter().map(|l| starts(l)[1]).collect();
            assert!(
                description.windows(2).all(|w| w[0] == w[1]),
                "{sub}: {text}"
            );
            let variables: Vec<usize> = lines
                .iter()
                .filter(|l| starts(l).len() == 3)
                .map(|l| starts(l)[2])
                .collect();
            assert!(variables.windows(2).all(|w| w[0] == w[1]), "{sub}: {text}");
            for o in settings::settings_of(sub).filter(|o| !o.names.2.is_empty()) {
                let line = text.lines().find(|l| l.ends_with(o.names.2)).unwrap();
                if !o.names.0.is_empty() {
                    assert!(line.starts_with(&format!("  --{} ", o.names.0)), "{line}");
                }
                assert_eq!(starts(line).last(), variables.first(), "{sub}: {line}");
            }
        }
        let program = program_help();
        let commands: Vec<usize> = program
            .lines()
            .filter(|l| commands().any(|s| l.starts_with(&format!("  {s} "))))
            .map(|l| starts(l)[1])
            .collect();
        assert_eq!(commands.len(), COMMANDS.len(), "{program}");
        assert!(commands.windows(2).all(|w| w[0] == w[1]), "{program}");
    }

    #[test]
    fn near_misses_are_suggested() {
        assert_eq!(nearest("stauts", commands()), Some("status"));
        assert_eq!(nearest("serv", commands()), Some("serve"));
        assert_eq!(nearest("tigger", commands()), Some("trigger"));
        assert_eq!(nearest("xyzzy", commands()), None);
        assert_eq!(nearest("a", commands()), None);
        let flags = || settings::SETTINGS.iter().map(|s| s.names.0);
        assert_eq!(nearest("adr", flags()), Some("addr"));
        assert_eq!(nearest("data-dri", flags()), Some("data-dir"));
        assert_eq!(nearest("workers", flags()), None);
        assert_eq!(distance("kitten", "sitting"), 3);
    }
}
