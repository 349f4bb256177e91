//! The settings, one row each: flag, variable, reader, and help with default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{parse_duration, parse_size, Env};
use crate::budget::{BudgetConfig, DEFAULT_RUN_ESTIMATE, LEDGER_DIR};
use crate::declared::Declaration;
use crate::http::Limits;
use crate::log::{Level, LogFormat};
use crate::otlp::OtlpConfig;
use crate::{bus, runs};

/// The default listen address: loopback, so nothing is exposed by accident.
pub(super) const DEFAULT_ADDR: &str = "127.0.0.1:14355";

/// The data dir, relative to the working directory, when none is given.
pub(super) const DEFAULT_DATA_DIR: &str = "data";

/// A run silent this long is abandoned: longer than any research cycle we know.
pub(super) const DEFAULT_RUN_TIMEOUT: Duration = Duration::from_secs(6 * 3600);

/// What the server runs with: `serve`'s settings, and the files they name.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub addr: String,
    pub data_dir: PathBuf,
    /// The key `/api/v1/*` requires, if any.
    pub api_key: Option<String>,
    pub log_level: Level,
    pub log_format: LogFormat,
    pub limits: Limits,
    /// How long a graceful stop waits for the requests in flight.
    pub shutdown_timeout: Duration,
    /// The daily budget, with the prices of `pricing_file` once read.
    pub budget: BudgetConfig,
    /// The model prices the start reads into `budget.pricing`.
    pub pricing_file: Option<PathBuf>,
    /// The declared families the start reads into `declared`.
    pub metrics_file: Option<PathBuf>,
    /// The declared families, checked; none before the start reads them.
    pub declared: Vec<Declaration>,
    /// The declared series' label bytes as a scrape writes them; 0 is no bound.
    pub declared_label_bytes: u64,
    /// The most a scrape of the declared families writes; 0 is no bound.
    pub declared_exposition_bytes: u64,
    pub message_retention: bus::MessageRetention,
    pub run_retention: runs::RunRetention,
    /// The journal growth after which the run store writes a snapshot.
    pub snapshot_bytes: u64,
    /// How long a run may go without news; `None` never ends one.
    pub run_timeout: Option<Duration>,
    /// Where traces go, from the `OTEL_*` variables; `None` traces nothing.
    pub otlp: Option<OtlpConfig>,
}

impl Config {
    /// `serve --data-dir DIR`: the owning modules' defaults, as each row's help says.
    pub fn for_data_dir(dir: &Path) -> Config {
        Config {
            addr: DEFAULT_ADDR.to_string(),
            data_dir: dir.to_path_buf(),
            api_key: None,
            log_level: Level::Info,
            log_format: LogFormat::Json,
            limits: Limits::default(),
            shutdown_timeout: Duration::from_secs(10),
            budget: BudgetConfig::new(dir),
            pricing_file: None,
            metrics_file: None,
            declared: Vec::new(),
            // These keep `/metrics` under 64 MiB at worst (`docs/operations.md`, "Series bound").
            declared_label_bytes: 4 << 20,
            declared_exposition_bytes: 16 << 20,
            message_retention: bus::MessageRetention::default(),
            run_retention: runs::RunRetention::default(),
            snapshot_bytes: crate::segments::DEFAULT_SNAPSHOT_BYTES,
            run_timeout: Some(DEFAULT_RUN_TIMEOUT),
            otlp: None,
        }
    }

    /// Whether anyone who reaches `addr` may write: not loopback, no API key.
    pub fn open_to_the_network(&self, addr: SocketAddr) -> bool {
        self.api_key.is_none() && !addr.ip().is_loopback()
    }
}

/// One setting, a row of [`SETTINGS`].
pub(super) struct Setting {
    /// The flag without its `--` (`""` for none), its value's placeholder in
    /// the help, and the variable that sets it when the flag is not given.
    pub(super) names: (&'static str, &'static str, &'static str),
    /// What it sets, with its default in parentheses.
    pub(super) help: &'static str,
    /// What a value must be, for the message that refuses another.
    must: &'static str,
    set: Target,
}

/// What a row sets: `serve`'s (and `repair`'s) [`Config`], or a [`Client`].
enum Target {
    Serve(fn(&mut Config, &Given) -> Result<(), String>),
    Call(fn(&mut Client, &Given) -> Result<(), String>),
}
use Target::{Call, Serve};

/// A value as given, and where it came from, which its error names.
pub(super) struct Given {
    text: String,
    from: String,
    must: &'static str,
}

impl Given {
    fn read<T>(&self, parse: impl Fn(&str) -> Option<T>) -> Result<T, String> {
        let (from, must, text) = (&self.from, self.must, &self.text);
        parse(text).ok_or_else(|| format!("{from} must {must}, not {text:?}"))
    }
}

const DURATION: &str = "be a duration such as 30, 30s or 500ms";
const NO_BOUND: &str = "be a size in bytes such as 16MiB (0 for no bound)";

/// What a client command was given (the RUN_ID of the finishes among it).
#[derive(Clone, Debug, PartialEq)]
pub struct Client {
    pub url: String,
    pub run_id: String,
    /// `--runs` and `--seed`, for `demo`.
    pub runs: u64,
    pub seed: u64,
    /// `--cost` in dollars, and `fail`'s `--error`.
    pub cost: Option<f64>,
    pub error: Option<String>,
}

/// The runs `demo` sends by default, and the most it may.
pub(super) const DEFAULT_RUNS: u64 = 20;
const MAX_RUNS: u64 = 10_000;

/// Every command's settings, in help order, which is the order they apply:
/// `AGENT_BUDGET_DIR` follows the data dir, whose row puts the ledger in it.
pub(super) const SETTINGS: &[Setting] = &[
    Setting {
        names: ("addr", "HOST:PORT", "CONDUCTOR_ADDR"),
        help: "listen address (127.0.0.1:14355)",
        must: "be HOST:PORT, such as 127.0.0.1:14355 or 0.0.0.0:14355",
        set: Serve(|c, v| v.read(host_port).map(|a| c.addr = a)),
    },
    Setting {
        names: ("data-dir", "DIR", "CONDUCTOR_DATA_DIR"),
        help: "journals and ledgers (./data)",
        must: "",
        set: Serve(data_dir),
    },
    Setting {
        names: ("max-body", "BYTES", "CONDUCTOR_MAX_BODY"),
        help: "request body limit (1MiB)",
        must: "be a size in bytes such as 1MiB or 65536",
        set: Serve(|c, v| v.read(parse_size).map(|b| c.limits.max_body = b)),
    },
    Setting {
        names: ("api-key-file", "FILE", "CONDUCTOR_API_KEY"),
        help: "require the key in FILE on /api/v1/* (none)",
        must: "",
        set: Serve(api_key),
    },
    Setting {
        names: ("log-level", "LEVEL", "CONDUCTOR_LOG"),
        help: "error, warn, info or debug (info)",
        must: "be error, warn, info or debug",
        set: Serve(|c, v| v.read(Level::parse).map(|l| c.log_level = l)),
    },
    Setting {
        names: ("log-format", "FORMAT", ""),
        help: "json or text (json)",
        must: "be json or text",
        set: Serve(|c, v| v.read(log_format).map(|f| c.log_format = f)),
    },
    Setting {
        names: ("idle-timeout", "DUR", "CONDUCTOR_IDLE_TIMEOUT"),
        help: "close keep-alive connections idle this long (30s)",
        must: DURATION,
        set: Serve(|c, v| v.read(parse_duration).map(|d| c.limits.idle_timeout = d)),
    },
    Setting {
        names: ("header-timeout", "DUR", "CONDUCTOR_HEADER_TIMEOUT"),
        help: "time allowed to send a request head (10s)",
        must: DURATION,
        set: Serve(|c, v| v.read(parse_duration).map(|d| c.limits.header_timeout = d)),
    },
    Setting {
        names: ("write-timeout", "DUR", "CONDUCTOR_WRITE_TIMEOUT"),
        help: "time a client has to take each 64 KiB of an answer (10s)",
        must: DURATION,
        set: Serve(|c, v| v.read(parse_duration).map(|d| c.limits.write_timeout = d)),
    },
    Setting {
        names: ("max-connections", "N", "CONDUCTOR_MAX_CONNECTIONS"),
        help: "open connection cap (4096)",
        must: "be an integer from 1 to 1000000",
        set: Serve(|c, v| v.read(connections).map(|n| c.limits.max_connections = n)),
    },
    Setting {
        names: ("shutdown-timeout", "DUR", "CONDUCTOR_SHUTDOWN_TIMEOUT"),
        help: "time to finish requests on SIGTERM (10s)",
        must: DURATION,
        set: Serve(|c, v| v.read(parse_duration).map(|d| c.shutdown_timeout = d)),
    },
    Setting {
        names: ("daily-budget", "DOLLARS", "AGENT_DAILY_BUDGET"),
        help: "daily spend limit (5.00)",
        must: "be an amount in dollars such as 5 or 0.15",
        set: Serve(|c, v| v.read(dollars).map(|d| c.budget.daily_limit = d)),
    },
    Setting {
        names: ("run-estimate", "DOLLARS|auto", "AGENT_RUN_ESTIMATE"),
        help: "reserved per run start (auto: p90 of the agent's last 50 runs)",
        must: "be auto or an amount in dollars above 0 such as 0.15",
        set: Serve(run_estimate),
    },
    Setting {
        names: ("pricing", "FILE", ""),
        help: "model prices, JSON (every model $15 in, $75 out per 1M tokens)",
        must: "",
        set: Serve(|c, v| v.read(path).map(|p| c.pricing_file = Some(p))),
    },
    Setting {
        names: ("", "", "AGENT_BUDGET_DIR"),
        help: "ledger directory (DATA_DIR/budget)",
        must: "",
        set: Serve(|c, v| v.read(path).map(|p| c.budget.dir = p)),
    },
    Setting {
        names: ("metrics-file", "FILE", "CONDUCTOR_METRICS_FILE"),
        help: "declared metric families, JSON (none)",
        must: "",
        set: Serve(|c, v| v.read(path).map(|p| c.metrics_file = Some(p))),
    },
    Setting {
        names: (
            "declared-label-bytes",
            "BYTES",
            "CONDUCTOR_DECLARED_LABEL_BYTES",
        ),
        help: "label bytes of all declared series (4MiB; 0: no bound)",
        must: NO_BOUND,
        set: Serve(|c, v| v.read(parse_bound).map(|b| c.declared_label_bytes = b)),
    },
    Setting {
        names: (
            "declared-exposition-bytes",
            "BYTES",
            "CONDUCTOR_DECLARED_EXPOSITION_BYTES",
        ),
        help: "most the declared families write in a scrape (16MiB; 0: no bound)",
        must: NO_BOUND,
        set: Serve(|c, v| v.read(parse_bound).map(|b| c.declared_exposition_bytes = b)),
    },
    Setting {
        names: ("run-timeout", "DUR", "CONDUCTOR_RUN_TIMEOUT"),
        help: "end a run silent this long as abandoned (6h; 0: never)",
        must: "be a duration such as 6h, 90m or 3600s (0 turns it off)",
        set: Serve(|c, v| v.read(run_timeout).map(|t| c.run_timeout = t)),
    },
    Setting {
        names: ("retain-messages", "N", "CONDUCTOR_RETAIN_MESSAGES"),
        help: "newest bus messages kept (100000; 0: no bound)",
        must: "be a number of messages (0 keeps every one)",
        set: Serve(|c, v| v.read(count).map(|n| c.message_retention.messages = n)),
    },
    Setting {
        names: (
            "retain-message-bytes",
            "BYTES",
            "CONDUCTOR_RETAIN_MESSAGE_BYTES",
        ),
        help: "bytes of them kept (64MiB; 0: no bound)",
        must: "be a size in bytes such as 64MiB (0 for no bound)",
        set: Serve(|c, v| v.read(parse_bound).map(|b| c.message_retention.bytes = b)),
    },
    Setting {
        names: ("retain-runs", "N", "CONDUCTOR_RETAIN_RUNS"),
        help: "newest finished runs kept (100000; 0: no bound)",
        must: "be a number of finished runs (0 keeps every one)",
        set: Serve(|c, v| v.read(count).map(|n| c.run_retention.runs = n)),
    },
    Setting {
        names: ("retain-run-bytes", "BYTES", "CONDUCTOR_RETAIN_RUN_BYTES"),
        help: "bytes of them kept (64MiB; 0: no bound)",
        must: "be a size in bytes such as 128MiB (0 for no bound)",
        set: Serve(|c, v| v.read(parse_bound).map(|b| c.run_retention.bytes = b)),
    },
    Setting {
        names: ("snapshot-bytes", "BYTES", "CONDUCTOR_SNAPSHOT_BYTES"),
        help: "run journal growth between snapshots (16MiB; 0: none)",
        must: "be a size in bytes such as 16MiB (0 for no snapshots)",
        set: Serve(|c, v| v.read(parse_bound).map(|b| c.snapshot_bytes = b)),
    },
    Setting {
        names: ("error", "TEXT", ""),
        help: "what went wrong",
        must: "",
        set: Call(|c, v| v.read(|s| Some(s.to_string())).map(|e| c.error = Some(e))),
    },
    Setting {
        names: ("cost", "DOLLARS", ""),
        help: "the run's cost (priced from its token events)",
        must: "be an amount in dollars",
        set: Call(|c, v| v.read(dollars).map(|d| c.cost = Some(d))),
    },
    Setting {
        names: ("runs", "N", ""),
        help: "runs to send, 1 to 10000 (20)",
        must: "be an integer from 1 to 10000",
        set: Call(|c, v| v.read(demo_runs).map(|n| c.runs = n)),
    },
    Setting {
        names: ("seed", "S", ""),
        help: "workload seed; one seed, one workload (1)",
        must: "be a non-negative integer",
        set: Call(|c, v| v.read(count).map(|n| c.seed = n)),
    },
    Setting {
        names: ("url", "URL", "CONDUCTOR_URL"),
        help: "server base URL (http://127.0.0.1:14355)",
        must: "start with http://",
        set: Call(|c, v| v.read(http_url).map(|u| c.url = u)),
    },
    // `client` reads it at each request; the row is for the help.
    Setting {
        names: ("", "", "CONDUCTOR_API_KEY"),
        help: "sent as a bearer token when set",
        must: "",
        set: Call(|_, _| Ok(())),
    },
];

/// The rows `command` takes (`repair`: where the journals are; `help`: none).
pub(super) fn settings_of(command: &str) -> impl Iterator<Item = &'static Setting> + '_ {
    let client = !matches!(command, "serve" | "repair" | "help");
    SETTINGS.iter().filter(move |s| match (&s.set, s.names.0) {
        (Serve(_), flag) if command == "repair" => {
            flag == "data-dir" || s.names.2 == "AGENT_BUDGET_DIR"
        }
        (Serve(_), _) => command == "serve",
        (Call(_), "error") => command == "fail",
        (Call(_), "cost") => matches!(command, "complete" | "fail" | "cancel"),
        (Call(_), "runs" | "seed") => command == "demo",
        (Call(_), _) => client,
    })
}

/// Reads `command`'s rows from their flag (the last given), else variable.
pub(super) fn apply(
    command: &str,
    (config, client): (&mut Config, &mut Client),
    flags: &[(&str, &str)],
    env: &Env,
) -> Result<(), String> {
    for row in settings_of(command) {
        let (flag, var) = (row.names.0, row.names.2);
        let given = flags.iter().rev().find(|(name, _)| *name == flag);
        let (text, from) = match given {
            Some((_, text)) if !flag.is_empty() => (text.to_string(), format!("--{flag}")),
            _ if var.is_empty() => continue,
            _ => match env(var) {
                Some(text) => (text, var.to_string()),
                None => continue,
            },
        };
        let given = Given {
            text,
            from,
            must: row.must,
        };
        match row.set {
            Serve(set) => set(config, &given)?,
            Call(set) => set(client, &given)?,
        }
    }
    Ok(())
}

/// The data dir, and the ledger inside it unless `AGENT_BUDGET_DIR` (later).
fn data_dir(c: &mut Config, v: &Given) -> Result<(), String> {
    c.data_dir = PathBuf::from(&v.text);
    c.budget.dir = c.data_dir.join(LEDGER_DIR);
    Ok(())
}

/// `--api-key-file` names a file holding the key; `CONDUCTOR_API_KEY` is
/// the key itself. Either way an empty key is refused.
fn api_key(c: &mut Config, v: &Given) -> Result<(), String> {
    let key = match v.from.starts_with("--") {
        true => std::fs::read_to_string(&v.text)
            .map_err(|e| format!("cannot read --api-key-file {}: {e}", v.text))?,
        false => v.text.clone(),
    };
    if key.trim().is_empty() {
        return Err("the API key is empty".to_string());
    }
    c.api_key = Some(key.trim().to_string());
    Ok(())
}

/// `auto` learns from the agent's runs (from [`DEFAULT_RUN_ESTIMATE`]), or fixed.
fn run_estimate(c: &mut Config, v: &Given) -> Result<(), String> {
    let fixed = v.read(|s| match s.trim() {
        "auto" => Some(None),
        s => dollars(s).filter(|d| *d > 0.0).map(Some),
    })?;
    c.budget.learn = fixed.is_none();
    c.budget.run_estimate = fixed.unwrap_or(DEFAULT_RUN_ESTIMATE);
    Ok(())
}

/// `HOST:PORT`; the host is resolved when the server binds.
fn host_port(s: &str) -> Option<String> {
    let (host, port) = s.rsplit_once(':')?;
    (!host.is_empty() && port.parse::<u16>().is_ok()).then(|| s.to_string())
}

fn log_format(s: &str) -> Option<LogFormat> {
    match s {
        "json" => Some(LogFormat::Json),
        "text" => Some(LogFormat::Text),
        _ => None,
    }
}

fn path(s: &str) -> Option<PathBuf> {
    Some(PathBuf::from(s))
}

fn http_url(s: &str) -> Option<String> {
    s.starts_with("http://").then(|| s.to_string())
}

fn demo_runs(s: &str) -> Option<u64> {
    s.parse().ok().filter(|n| (1..=MAX_RUNS).contains(n))
}

fn count(s: &str) -> Option<u64> {
    s.parse().ok()
}

fn connections(s: &str) -> Option<usize> {
    s.parse().ok().filter(|n| (1..=1_000_000).contains(n))
}

/// A duration, or `0` for none.
fn run_timeout(s: &str) -> Option<Option<Duration>> {
    match s.trim() {
        "0" => Some(None),
        s => parse_duration(s).map(Some),
    }
}

/// An amount in dollars, `$` allowed, finite and not negative.
fn dollars(s: &str) -> Option<f64> {
    let d: f64 = s.trim().trim_start_matches('$').parse().ok()?;
    (d.is_finite() && d >= 0.0).then_some(d)
}

/// A size as [`parse_size`] reads it, or `0`: for a bound that 0 turns off.
fn parse_bound(s: &str) -> Option<u64> {
    match s.trim() {
        "0" => Some(0),
        s => parse_size(s),
    }
}

#[cfg(test)]
mod tests {
    use super::super::{parse, Command};
    use super::*;

    /// Each row's default as `set` reads it, by flag. A row missing here is
    /// unset by default, or follows another (the ledger follows the data dir).
    const DEFAULTS: &[(&str, &str)] = &[
        ("addr", DEFAULT_ADDR),
        ("data-dir", DEFAULT_DATA_DIR),
        ("max-body", "1MiB"),
        ("log-level", "info"),
        ("log-format", "json"),
        ("idle-timeout", "30s"),
        ("header-timeout", "10s"),
        ("write-timeout", "10s"),
        ("max-connections", "4096"),
        ("shutdown-timeout", "10s"),
        ("daily-budget", "5.00"),
        ("run-estimate", "auto"),
        ("declared-label-bytes", "4MiB"),
        ("declared-exposition-bytes", "16MiB"),
        ("run-timeout", "6h"),
        ("retain-messages", "100000"),
        ("retain-message-bytes", "64MiB"),
        ("retain-runs", "100000"),
        ("retain-run-bytes", "64MiB"),
        ("snapshot-bytes", "16MiB"),
    ];

    fn default_of(row: &Setting) -> &'static str {
        let found = DEFAULTS.iter().find(|(flag, _)| *flag == row.names.0);
        found.map_or("", |&(_, default)| default)
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn serve(args: &[&str], env: &dyn Fn(&str) -> Option<String>) -> Result<Config, String> {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        match parse(&args, env)? {
            Command::Serve(c) => Ok(*c),
            other => panic!("{other:?}"),
        }
    }

    /// A dir holding an API key in its file `key`, removed when dropped.
    fn key_dir(name: &str) -> crate::testing::TempDir {
        let dir = crate::testing::TempDir::new(&format!("settings-key-{name}"));
        std::fs::write(dir.join("key"), "k\n").unwrap();
        dir
    }

    #[test]
    fn every_row_is_in_the_help_and_taken_by_its_flag_and_its_variable() {
        let args = ["serve".to_string(), "--help".to_string()];
        let Ok(Command::Help(help)) = parse(&args, &no_env) else {
            panic!("serve --help prints no help");
        };
        let dir = key_dir("rows");
        let key = dir.join("key");
        let key = key.to_str().unwrap();
        for row in settings_of("serve") {
            // One line each, with its flag, its help and its variable.
            let (name, placeholder, _) = row.names;
            let line = match name {
                "" => help
                    .lines()
                    .find(|l| l.ends_with(&format!("  {}", row.names.2))),
                flag => help
                    .lines()
                    .find(|l| l.starts_with(&format!("  --{flag} "))),
            };
            let line = line.unwrap_or_else(|| panic!("{} in {help}", row.help));
            assert!(line.contains(&format!("  {}", row.help)), "{line}");
            assert!(line.ends_with(row.names.2), "{line}");
            // A value each row takes; those without a default take a path.
            let value = match (name, default_of(row)) {
                ("api-key-file", _) => key,
                (_, "") => "some/file",
                (_, default) => default,
            };
            if !name.is_empty() {
                let flag = format!("--{name} {placeholder}");
                assert!(line.starts_with(&format!("  {flag} ")), "{line}");
                let given = serve(&[&format!("--{name}"), value], &no_env);
                assert!(given.is_ok(), "--{name}: {given:?}");
                let inline = serve(&[&format!("--{name}={value}")], &no_env);
                assert_eq!(inline, given, "--{name}=");
            }
            if !row.names.2.is_empty() {
                let env = |k: &str| (k == row.names.2).then(|| value.to_string());
                let given = serve(&[], &env);
                assert!(given.is_ok(), "{}: {given:?}", row.names.2);
            }
        }
    }

    #[test]
    fn each_default_is_what_the_config_starts_with_and_what_the_help_says() {
        let defaults = Config::for_data_dir(Path::new(DEFAULT_DATA_DIR));
        assert_eq!(serve(&[], &no_env), Ok(defaults.clone()));
        for (flag, _) in DEFAULTS {
            assert!(SETTINGS.iter().any(|r| r.names.0 == *flag), "{flag}");
        }
        for row in settings_of("serve").filter(|r| !default_of(r).is_empty()) {
            assert!(row.help.contains(default_of(row)), "{}", row.help);
            let mut config = defaults.clone();
            let given = Given {
                text: default_of(row).to_string(),
                from: "the default".to_string(),
                must: row.must,
            };
            let Serve(set) = row.set else {
                unreachable!("{}", row.help)
            };
            assert_eq!(set(&mut config, &given), Ok(()), "{}", row.help);
            assert_eq!(config, defaults, "{}", row.help);
        }
    }

    #[test]
    fn a_flag_not_in_the_table_gets_the_nearest_row_suggested() {
        let err = serve(&["--max-conections", "5"], &no_env).unwrap_err();
        assert_eq!(
            err,
            "--max-conections is not a flag of `serve`; did you mean --max-connections? \
             (see conductor-metrics serve --help)"
        );
        let err = serve(&["--retain-run", "5"], &no_env).unwrap_err();
        assert!(err.contains("did you mean --retain-runs?"), "{err}");
        let args = ["repair".to_string(), "--data-dri".into(), "d".into()];
        let err = parse(&args, &no_env).unwrap_err();
        assert!(err.contains("did you mean --data-dir?"), "{err}");
        // A row of `serve` is not a flag of `repair`.
        let args = ["repair".to_string(), "--addr".into(), "127.0.0.1:1".into()];
        assert!(parse(&args, &no_env)
            .unwrap_err()
            .contains("not a flag of `repair`"));
    }

    #[test]
    fn the_flag_wins_over_the_variable_and_the_ledger_follows_the_data_dir() {
        let env = |k: &str| match k {
            "CONDUCTOR_DATA_DIR" => Some("from-env".to_string()),
            "CONDUCTOR_API_KEY" => Some(" secret ".to_string()),
            _ => None,
        };
        let c = serve(&[], &env).unwrap();
        assert_eq!(c.data_dir, Path::new("from-env"));
        assert_eq!(c.budget.dir, Path::new("from-env/budget"));
        assert_eq!(c.api_key.as_deref(), Some("secret"));
        let dir = key_dir("precedence");
        let key = dir.join("key");
        let key = key.to_str().unwrap();
        let c = serve(&["--data-dir", "d", "--api-key-file", key], &env).unwrap();
        assert_eq!(
            (c.data_dir.as_path(), c.budget.dir.as_path()),
            (Path::new("d"), Path::new("d/budget"))
        );
        assert_eq!(c.api_key.as_deref(), Some("k"));
        let ledger = |k: &str| (k == "AGENT_BUDGET_DIR").then(|| "elsewhere".to_string());
        let c = serve(&["--data-dir", "d"], &ledger).unwrap();
        assert_eq!(c.budget.dir, Path::new("elsewhere"));
        let empty = |k: &str| (k == "CONDUCTOR_API_KEY").then(String::new);
        assert_eq!(serve(&[], &empty), Err("the API key is empty".to_string()));
        let err = serve(&["--api-key-file", "/nonexistent/key"], &no_env).unwrap_err();
        assert!(
            err.starts_with("cannot read --api-key-file /nonexistent/key: "),
            "{err}"
        );
    }

    #[test]
    fn the_api_reference_lists_every_row() {
        let docs = include_str!("../../docs/api-reference.md");
        for row in settings_of("serve") {
            let (flag, placeholder, _) = row.names;
            if !flag.is_empty() {
                let placeholder = placeholder.replace('|', "\\|");
                let cell = format!("| `--{flag} {placeholder}` |");
                assert!(docs.contains(&cell), "{cell}");
            }
            if !row.names.2.is_empty() {
                assert!(
                    docs.contains(&format!("`{}`", row.names.2)),
                    "{}",
                    row.names.2
                );
            }
        }
    }

    #[test]
    fn with_several_bad_values_the_first_row_is_named() {
        let err = serve(&["--max-body", "x", "--addr", "y"], &no_env).unwrap_err();
        assert!(err.starts_with("--addr must be HOST:PORT"), "{err}");
    }

    #[test]
    fn only_a_keyless_server_beyond_loopback_is_open_to_the_network() {
        let mut c = Config::for_data_dir(Path::new("d"));
        let at = |a: &str| a.parse::<SocketAddr>().unwrap();
        assert!(c.open_to_the_network(at("0.0.0.0:14355")));
        assert!(c.open_to_the_network(at("[::]:14355")));
        assert!(c.open_to_the_network(at("192.168.1.5:80")));
        assert!(!c.open_to_the_network(at("127.0.0.1:14355")));
        assert!(!c.open_to_the_network(at("127.0.0.2:14355")));
        assert!(!c.open_to_the_network(at("[::1]:14355")));
        c.api_key = Some("k".into());
        assert!(!c.open_to_the_network(at("0.0.0.0:14355")));
    }
}
