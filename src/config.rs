//! Command-line and environment configuration, parsed with std only. A
//! flag wins over its environment variable, which wins over the default.

use std::path::PathBuf;
use std::time::Duration;

use crate::demo::{self, Options as DemoOptions};
use crate::log::{Level, LogFormat};

/// The default listen address: loopback, so nothing is exposed by accident.
pub const DEFAULT_ADDR: &str = "127.0.0.1:14355";
/// The default base URL the client commands talk to.
pub const DEFAULT_URL: &str = "http://127.0.0.1:14355";
/// The default body limit: 1 MiB.
pub const DEFAULT_MAX_BODY: u64 = 1024 * 1024;

/// Settings of `serve`.
#[derive(Clone, Debug, PartialEq)]
pub struct ServeConfig {
    /// `--addr` / `CONDUCTOR_ADDR`.
    pub addr: String,
    /// `--data-dir` / `CONDUCTOR_DATA_DIR`.
    pub data_dir: PathBuf,
    /// `--max-body` / `CONDUCTOR_MAX_BODY`, in bytes.
    pub max_body: u64,
    /// From `--api-key-file`, or `CONDUCTOR_API_KEY`.
    pub api_key: Option<String>,
    /// `--log-level` / `CONDUCTOR_LOG`.
    pub log_level: Level,
    /// `--log-format`.
    pub log_format: LogFormat,
    /// `--idle-timeout` / `CONDUCTOR_IDLE_TIMEOUT`: keep-alive connections idle this long are closed.
    pub idle_timeout: Duration,
    /// `--header-timeout` / `CONDUCTOR_HEADER_TIMEOUT`: a request head must arrive within this.
    pub header_timeout: Duration,
    /// `--max-connections` / `CONDUCTOR_MAX_CONNECTIONS`: past it the oldest idle connection is closed.
    pub max_connections: usize,
    /// `--daily-budget` / `AGENT_DAILY_BUDGET`, dollars.
    pub daily_budget: f64,
    /// `--run-estimate` / `AGENT_RUN_ESTIMATE`, dollars reserved per run start.
    pub run_estimate: f64,
    /// `AGENT_BUDGET_DIR`; `<data-dir>/budget` when unset.
    pub budget_dir: PathBuf,
    /// `--pricing FILE`: model prices; the built-in default when unset.
    pub pricing: Option<PathBuf>,
}

/// What the command line asks for.
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    /// Run the server.
    Serve(ServeConfig),
    /// Print a summary from a running server.
    Status {
        /// Base URL of the server.
        url: String,
    },
    /// Print the day's budget from a running server.
    Budget {
        /// Base URL of the server.
        url: String,
    },
    /// Start a run on a running server, if the budget allows.
    Trigger {
        /// Base URL of the server.
        url: String,
    },
    /// Send a seeded synthetic workload to a running server.
    Demo(DemoOptions),
    /// Print this text and exit 0.
    Help(String),
    /// Print the version and exit 0.
    Version,
}

/// The `--help` text.
pub const HELP: &str = "\
conductor-metrics: Prometheus metrics, a durable message bus and run tracking for AI-agent orchestration

Usage:
  conductor-metrics [serve] [OPTIONS]    run the server (the default)
  conductor-metrics status [--url URL]   print a summary from a running server
  conductor-metrics budget [--url URL]   print the day's budget
  conductor-metrics trigger [--url URL]  start a run if the budget allows (exit 3 when exhausted)
  conductor-metrics demo [--url URL] [--runs N] [--seed S]
                                         send a seeded synthetic workload to a running server
  conductor-metrics --help | --version

Serve options (each has an environment variable; the flag wins):
  --addr ADDR            listen address            CONDUCTOR_ADDR      (127.0.0.1:14355)
  --data-dir DIR         journals and ledgers      CONDUCTOR_DATA_DIR  (./data)
  --max-body BYTES       request body limit        CONDUCTOR_MAX_BODY  (1MiB; K, M, KiB, MiB suffixes)
  --api-key-file FILE    require this key on /api/v1/*  (or CONDUCTOR_API_KEY)
  --log-level LEVEL      error, warn, info, debug  CONDUCTOR_LOG       (info)
  --log-format FORMAT    json or text                                  (json)
  --idle-timeout DUR     close idle keep-alive connections  CONDUCTOR_IDLE_TIMEOUT    (30s)
  --header-timeout DUR   time allowed to send a request head CONDUCTOR_HEADER_TIMEOUT (10s)
  --max-connections N    open connection cap            CONDUCTOR_MAX_CONNECTIONS (4096)
                         (DUR: seconds, or a number with ms or s)
  --daily-budget DOLLARS daily spend limit         AGENT_DAILY_BUDGET  (5.00)
  --run-estimate DOLLARS reserved per run start    AGENT_RUN_ESTIMATE  (0.15)
  --pricing FILE         model prices, JSON        (default $15 in / $75 out per 1M tokens)
                         ledger directory          AGENT_BUDGET_DIR    (DATA_DIR/budget)

Client options:
  --url URL              server base URL           CONDUCTOR_URL       (http://127.0.0.1:14355)
  --runs N               demo: runs to send (1-10000)                  (20)
  --seed S               demo: workload seed; one seed, one workload   (1)
";

/// Parses arguments (without the program name). `env` looks variables up.
/// The error is a one-line message for exit code 2.
pub fn parse(args: &[String], env: &dyn Fn(&str) -> Option<String>) -> Result<Command, String> {
    let mut args = args.iter().map(String::as_str).peekable();
    let sub = match args.peek() {
        Some(&"serve") | Some(&"status") | Some(&"budget") | Some(&"trigger") | Some(&"demo") => {
            args.next()
        }
        _ => None,
    };
    let mut flags: Vec<(&str, &str)> = Vec::new();
    while let Some(arg) = args.next() {
        match arg {
            "-h" | "--help" => return Ok(Command::Help(HELP.to_string())),
            "-V" | "--version" => return Ok(Command::Version),
            _ => {}
        }
        let Some(name) = arg.strip_prefix("--") else {
            return Err(format!("unexpected argument {arg:?} (see --help)"));
        };
        let (name, value) = match name.split_once('=') {
            Some((n, v)) => (n, v),
            None => (
                name,
                args.next()
                    .ok_or_else(|| format!("--{name} needs a value"))?,
            ),
        };
        flags.push((name, value));
    }
    let flag = |name: &str| {
        flags
            .iter()
            .rev()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.to_string())
    };
    let allowed: &[&str] = match sub {
        Some("status" | "budget" | "trigger") => &["url"],
        Some("demo") => &["url", "runs", "seed"],
        _ => &[
            "addr",
            "data-dir",
            "max-body",
            "api-key-file",
            "log-level",
            "log-format",
            "idle-timeout",
            "header-timeout",
            "max-connections",
            "daily-budget",
            "run-estimate",
            "pricing",
        ],
    };
    if let Some((name, _)) = flags.iter().find(|(n, _)| !allowed.contains(n)) {
        return Err(format!("unknown flag --{name} (see --help)"));
    }
    let setting = |name: &str, var: &str| flag(name).or_else(|| env(var));
    if let Some(client @ ("status" | "budget" | "trigger")) = sub {
        let url = setting("url", "CONDUCTOR_URL").unwrap_or_else(|| DEFAULT_URL.to_string());
        return Ok(match client {
            "status" => Command::Status { url },
            "budget" => Command::Budget { url },
            _ => Command::Trigger { url },
        });
    }
    if sub == Some("demo") {
        return parse_demo(setting("url", "CONDUCTOR_URL"), flag("runs"), flag("seed"));
    }
    let max_body = match setting("max-body", "CONDUCTOR_MAX_BODY") {
        None => DEFAULT_MAX_BODY,
        Some(b) => parse_size(&b)
            .ok_or_else(|| format!("--max-body must be a size in bytes, not {b:?}"))?,
    };
    let api_key = match flag("api-key-file") {
        Some(path) => {
            let key = std::fs::read_to_string(&path)
                .map_err(|e| format!("cannot read --api-key-file {path}: {e}"))?;
            Some(key.trim().to_string())
        }
        None => env("CONDUCTOR_API_KEY").map(|k| k.trim().to_string()),
    };
    if api_key.as_deref() == Some("") {
        return Err("the API key is empty".to_string());
    }
    let log_level = match setting("log-level", "CONDUCTOR_LOG") {
        None => Level::Info,
        Some(l) => Level::parse(&l)
            .ok_or_else(|| format!("--log-level must be error, warn, info or debug, not {l:?}"))?,
    };
    let log_format = match flag("log-format").as_deref() {
        None | Some("json") => LogFormat::Json,
        Some("text") => LogFormat::Text,
        Some(other) => return Err(format!("--log-format must be json or text, not {other:?}")),
    };
    let duration = |name: &str, var: &str, default: u64| match setting(name, var) {
        None => Ok(Duration::from_secs(default)),
        Some(v) => parse_duration(&v).ok_or_else(|| {
            format!("--{name} must be a duration such as 30, 30s or 500ms, not {v:?}")
        }),
    };
    let idle_timeout = duration("idle-timeout", "CONDUCTOR_IDLE_TIMEOUT", 30)?;
    let header_timeout = duration("header-timeout", "CONDUCTOR_HEADER_TIMEOUT", 10)?;
    let max_connections = match setting("max-connections", "CONDUCTOR_MAX_CONNECTIONS") {
        None => 4096,
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=1_000_000).contains(&n) => n,
            _ => {
                return Err(format!(
                    "--max-connections must be an integer from 1 to 1000000, not {v:?}"
                ))
            }
        },
    };
    let dollars = |name: &str, var: &str, default: f64| match setting(name, var) {
        None => Ok(default),
        Some(v) => match v.trim().trim_start_matches('$').parse::<f64>() {
            Ok(d) if d.is_finite() && d >= 0.0 => Ok(d),
            _ => Err(format!("--{name} must be an amount in dollars, not {v:?}")),
        },
    };
    let daily_budget = dollars("daily-budget", "AGENT_DAILY_BUDGET", 5.0)?;
    let run_estimate = dollars("run-estimate", "AGENT_RUN_ESTIMATE", 0.15)?;
    if run_estimate <= 0.0 {
        return Err("--run-estimate must be above 0".to_string());
    }
    let data_dir = PathBuf::from(
        setting("data-dir", "CONDUCTOR_DATA_DIR").unwrap_or_else(|| "data".to_string()),
    );
    let budget_dir = env("AGENT_BUDGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| data_dir.join("budget"));
    Ok(Command::Serve(ServeConfig {
        addr: setting("addr", "CONDUCTOR_ADDR").unwrap_or_else(|| DEFAULT_ADDR.to_string()),
        data_dir: PathBuf::from(
            setting("data-dir", "CONDUCTOR_DATA_DIR").unwrap_or_else(|| "data".to_string()),
        ),
        max_body,
        api_key,
        log_level,
        log_format,
        idle_timeout,
        header_timeout,
        max_connections,
        daily_budget,
        run_estimate,
        budget_dir,
        pricing: flag("pricing").map(PathBuf::from),
    }))
}

/// Parses `30`, `30s` or `500ms` into a non-zero duration.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (digits, millis) = match s.strip_suffix("ms") {
        Some(d) => (d, true),
        None => (s.strip_suffix('s').unwrap_or(s), false),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    let d = if millis {
        Duration::from_millis(n)
    } else {
        Duration::from_secs(n)
    };
    (!d.is_zero() && d <= Duration::from_secs(86_400 * 365)).then_some(d)
}

/// Checks the `demo` settings; absent ones take their defaults.
fn parse_demo(
    url: Option<String>,
    runs: Option<String>,
    seed: Option<String>,
) -> Result<Command, String> {
    let url = url.unwrap_or_else(|| DEFAULT_URL.to_string());
    if !url.starts_with("http://") {
        return Err(format!("--url must start with http://, not {url:?}"));
    }
    let runs = match runs {
        None => demo::DEFAULT_RUNS,
        Some(r) => r
            .parse::<u64>()
            .ok()
            .filter(|n| (1..=demo::MAX_RUNS).contains(n))
            .ok_or_else(|| {
                format!(
                    "--runs must be an integer from 1 to {}, not {r:?}",
                    demo::MAX_RUNS
                )
            })?,
    };
    let seed = match seed {
        None => demo::DEFAULT_SEED,
        Some(s) => s
            .parse::<u64>()
            .map_err(|_| format!("--seed must be a non-negative integer, not {s:?}"))?,
    };
    Ok(Command::Demo(DemoOptions { url, runs, seed }))
}

/// Parses `1048576`, `64K`, `64KiB`, `1M` or `1MiB` (binary multiples).
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits.parse().ok()?;
    let mult = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1024,
        "m" | "mb" | "mib" => 1024 * 1024,
        "g" | "gb" | "gib" => 1024 * 1024 * 1024,
        _ => return None,
    };
    n.checked_mul(mult).filter(|n| *n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn defaults_and_flags() {
        let Command::Serve(c) = parse(&[], &no_env).unwrap() else {
            panic!()
        };
        assert_eq!((c.addr.as_str(), c.max_body), (DEFAULT_ADDR, 1 << 20));
        let env = |k: &str| (k == "CONDUCTOR_MAX_BODY").then(|| "9".to_string());
        let Command::Serve(c) = parse(&args("serve --addr 127.0.0.1:0"), &env).unwrap() else {
            panic!()
        };
        assert_eq!((c.addr.as_str(), c.max_body), ("127.0.0.1:0", 9));
        let Command::Serve(c) = parse(&args("--max-body=2KiB"), &env).unwrap() else {
            panic!()
        };
        assert_eq!(c.max_body, 2048);
    }

    #[test]
    fn bad_input_is_one_line() {
        for bad in [
            "--nope 1",
            "--workers 4",
            "--max-body 1X",
            "--addr",
            "stray",
            "--log-format xml",
            "status --addr x",
            "demo --runs 0",
            "demo --runs x",
            "demo --seed -1",
            "demo --url https://x",
            "demo --addr x",
        ] {
            let e = parse(&args(bad), &no_env).unwrap_err();
            assert!(!e.contains('\n'), "{bad}: {e}");
        }
    }

    #[test]
    fn help_version_status() {
        assert!(matches!(
            parse(&args("--help"), &no_env),
            Ok(Command::Help(_))
        ));
        assert_eq!(
            parse(&args("serve --version"), &no_env),
            Ok(Command::Version)
        );
        assert_eq!(
            parse(&args("status --url http://x:1"), &no_env),
            Ok(Command::Status {
                url: "http://x:1".into()
            })
        );
    }

    #[test]
    fn demo_defaults_and_flags() {
        let url = |k: &str| (k == "CONDUCTOR_URL").then(|| "http://h:1".to_string());
        assert_eq!(
            parse(&args("demo"), &url),
            Ok(Command::Demo(DemoOptions {
                url: "http://h:1".into(),
                runs: 20,
                seed: 1
            }))
        );
        assert_eq!(
            parse(&args("demo --url http://x:2 --runs 5 --seed=7"), &no_env),
            Ok(Command::Demo(DemoOptions {
                url: "http://x:2".into(),
                runs: 5,
                seed: 7
            }))
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("2s"), Some(Duration::from_secs(2)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        for bad in ["", "0", "-1", "1m", "s", "1.5s"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1MiB"), Some(1 << 20));
        assert_eq!(parse_size("64k"), Some(65536));
        assert_eq!(parse_size("0"), None);
        assert_eq!(parse_size("-1"), None);
        assert_eq!(parse_size("99999999999999999999"), None);
    }
}
