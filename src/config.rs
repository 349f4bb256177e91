//! Command-line and environment configuration: a flag wins over its
//! variable, which wins over the default. Every setting is a row of the
//! `settings` table, read by the parser, the unknown-flag check and `usage`.

use std::path::Path;
use std::time::Duration;

use crate::otlp::OtlpConfig;

mod settings;
mod usage;

pub use settings::{Client, Config};
use settings::{DEFAULT_DATA_DIR, DEFAULT_RUNS};

/// The default base URL the client commands talk to.
const DEFAULT_URL: &str = "http://127.0.0.1:14355";

type Env<'a> = dyn Fn(&str) -> Option<String> + 'a;

/// What the command line asks for.
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    /// Boxed: the settings are many, and the other commands few.
    Serve(Box<Config>),
    /// A client command, such as `status` or `demo`, and what it was given.
    Client(String, Client),
    /// `repair`, of the data dir and the ledger dir (which may lie outside it).
    Repair(Box<Config>),
    /// Print this text and exit 0.
    Help(String),
    Version,
}

/// Parses arguments (without the program name), `env` looking variables up; errors are one line.
pub fn parse(args: &[String], env: &Env) -> Result<Command, String> {
    let mut args = args.iter().map(String::as_str).peekable();
    let first = args.peek().copied().filter(|a| !a.starts_with('-'));
    // Without a command the server runs, but `--help` then means the
    // program's help, which lists the commands.
    let named = first.is_some();
    let sub = match first {
        None => "serve",
        Some("help") => {
            args.next();
            return match args.next() {
                None | Some("-h" | "--help") => Ok(Command::Help(usage::program_help())),
                Some(topic) => usage::command_help(topic)
                    .map(Command::Help)
                    .ok_or_else(|| unknown_command(topic)),
            };
        }
        Some(first) if usage::commands().any(|c| c == first) => {
            args.next();
            first
        }
        Some(first) => return Err(unknown_command(first)),
    };
    let allowed: Vec<&str> = settings::settings_of(sub)
        .map(|o| o.names.0)
        .filter(|f| !f.is_empty())
        .collect();
    let mut flags = Vec::new();
    let mut positional = Vec::new();
    while let Some(arg) = args.next() {
        match arg {
            "-h" | "--help" if named => {
                let help = usage::command_help(sub).unwrap_or_else(usage::program_help);
                return Ok(Command::Help(help));
            }
            "-h" | "--help" => return Ok(Command::Help(usage::program_help())),
            "-V" | "--version" => return Ok(Command::Version),
            _ => {}
        }
        let Some(name) = arg.strip_prefix("--") else {
            positional.push(arg);
            continue;
        };
        let (name, inline) = name
            .split_once('=')
            .map_or((name, None), |(n, v)| (n, Some(v)));
        // Known before its value is looked for: `--bogus` is not a flag,
        // whatever follows it.
        if !allowed.contains(&name) {
            let hint = usage::nearest(name, allowed.iter().copied())
                .map(|near| format!("; did you mean --{near}?"))
                .unwrap_or_default();
            return Err(format!(
                "--{name} is not a flag of `{sub}`{hint} (see conductor-metrics {sub} --help)"
            ));
        }
        let value = match inline {
            Some(v) => v,
            None => args.next().ok_or_else(|| {
                format!("--{name} needs a value (see conductor-metrics {sub} --help)")
            })?,
        };
        flags.push((name, value));
    }
    command(sub, &flags, &positional, env)
}

/// What `sub` asks for; the only plain argument taken is a finish's RUN_ID.
fn command(
    sub: &str,
    flags: &[(&str, &str)],
    positional: &[&str],
    env: &Env,
) -> Result<Command, String> {
    let takes_run = matches!(sub, "complete" | "fail" | "cancel");
    let see = format!("(see conductor-metrics {sub} --help)");
    if let Some(arg) = positional.get(usize::from(takes_run)) {
        return Err(format!("unexpected argument {arg:?} {see}"));
    }
    if takes_run && positional.is_empty() {
        return Err(format!("`{sub}` needs a RUN_ID {see}"));
    }
    let mut config = Config::for_data_dir(Path::new(DEFAULT_DATA_DIR));
    let mut c = Client {
        url: DEFAULT_URL.to_string(),
        run_id: positional.first().unwrap_or(&"").to_string(),
        runs: DEFAULT_RUNS,
        seed: 1,
        cost: None,
        error: None,
    };
    settings::apply(sub, (&mut config, &mut c), flags, env)?;
    Ok(match sub {
        "serve" => {
            config.otlp = OtlpConfig::from_env(env);
            Command::Serve(Box::new(config))
        }
        "repair" => Command::Repair(Box::new(config)),
        _ if takes_run && !crate::runs::valid_run_id(&c.run_id) => {
            let must = "must be 1-128 characters of A-Z a-z 0-9 . _ : -";
            return Err(format!("RUN_ID {must}, not {:?}", c.run_id));
        }
        _ => Command::Client(sub.to_string(), c),
    })
}

fn unknown_command(word: &str) -> String {
    let hint = usage::nearest(word, usage::commands())
        .map(|near| format!("; did you mean `{near}`?"))
        .unwrap_or_default();
    format!("unknown command {word:?}{hint} (see conductor-metrics help)")
}

/// Parses `30`, `30s`, `500ms`, `90m` or `6h`: non-zero, at most a year.
fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let units = [("ms", 1), ("h", 3_600_000), ("m", 60_000), ("s", 1000)];
    let (digits, unit_ms) = units
        .iter()
        .find_map(|&(unit, ms)| Some((s.strip_suffix(unit)?, ms)))
        .unwrap_or((s, 1000));
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    let d = Duration::from_millis(n.checked_mul(unit_ms)?);
    (!d.is_zero() && d <= Duration::from_secs(86_400 * 365)).then_some(d)
}

/// Parses `1048576`, `64K`, `64KiB`, `1M` or `1MiB` (binary multiples).
fn parse_size(s: &str) -> Option<u64> {
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
    use super::settings::{DEFAULT_ADDR, DEFAULT_RUN_TIMEOUT};
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    /// What a client command is given with only `--url`: the defaults.
    fn client(url: &str) -> Client {
        Client {
            url: url.into(),
            run_id: String::new(),
            runs: 20,
            seed: 1,
            cost: None,
            error: None,
        }
    }

    #[test]
    fn defaults_and_flags() {
        let Command::Serve(c) = parse(&[], &no_env).unwrap() else {
            panic!()
        };
        assert_eq!(
            (c.addr.as_str(), c.limits.max_body),
            (DEFAULT_ADDR, 1 << 20)
        );
        let env = |k: &str| (k == "CONDUCTOR_MAX_BODY").then(|| "9".to_string());
        let Command::Serve(c) = parse(&args("serve --addr 127.0.0.1:0"), &env).unwrap() else {
            panic!()
        };
        assert_eq!((c.addr.as_str(), c.limits.max_body), ("127.0.0.1:0", 9));
        let Command::Serve(c) = parse(&args("--max-body=2KiB"), &env).unwrap() else {
            panic!()
        };
        assert_eq!(c.limits.max_body, 2048);
    }

    #[test]
    fn the_run_estimate_is_auto_or_dollars() {
        let estimate = |a: &str, env: &dyn Fn(&str) -> Option<String>| match parse(&args(a), env) {
            Ok(Command::Serve(c)) => Ok((!c.budget.learn).then_some(c.budget.run_estimate)),
            Ok(_) => panic!("{a}"),
            Err(e) => Err(e),
        };
        assert_eq!(estimate("", &no_env), Ok(None), "auto by default");
        assert_eq!(estimate("--run-estimate auto", &no_env), Ok(None));
        assert_eq!(estimate("--run-estimate $0.15", &no_env), Ok(Some(0.15)));
        let env = |k: &str| (k == "AGENT_RUN_ESTIMATE").then(|| "2.5".to_string());
        assert_eq!(estimate("", &env), Ok(Some(2.5)));
        assert_eq!(
            estimate("--run-estimate auto", &env),
            Ok(None),
            "the flag wins"
        );
        for bad in ["0", "-1", "abc", "AUTO"] {
            let e = estimate(&format!("--run-estimate {bad}"), &no_env).unwrap_err();
            assert!(
                e.starts_with("--run-estimate must be auto or an amount"),
                "{e}"
            );
        }
    }

    #[test]
    fn zero_turns_a_byte_bound_off_and_sizes_take_units() {
        let line = "--retain-message-bytes 0 --retain-run-bytes 0 --snapshot-bytes 0 \
                    --declared-label-bytes 0 --declared-exposition-bytes 0";
        let Command::Serve(c) = parse(&args(line), &no_env).unwrap() else {
            panic!()
        };
        let none = (c.declared_label_bytes, c.declared_exposition_bytes);
        assert_eq!(none, (0, 0));
        let bounds = (
            c.message_retention.bytes,
            c.run_retention.bytes,
            c.snapshot_bytes,
        );
        assert_eq!(bounds, (0, 0, 0));
        let env = |k: &str| (k == "CONDUCTOR_SNAPSHOT_BYTES").then(|| "2KiB".to_string());
        let Command::Serve(c) = parse(&[], &env).unwrap() else {
            panic!()
        };
        assert_eq!(c.snapshot_bytes, 2048);
        let both = (c.declared_label_bytes, c.declared_exposition_bytes);
        assert_eq!(both, (4 << 20, 16 << 20));
        let env = |k: &str| (k == "CONDUCTOR_DECLARED_EXPOSITION_BYTES").then(|| "1MiB".into());
        let Command::Serve(c) = parse(&args("--declared-label-bytes 64KiB"), &env).unwrap() else {
            panic!()
        };
        let both = (c.declared_label_bytes, c.declared_exposition_bytes);
        assert_eq!(both, (64 << 10, 1 << 20));
        let err = parse(&[], &|k: &str| {
            (k == "CONDUCTOR_DECLARED_LABEL_BYTES").then(|| "lots".into())
        });
        assert!(err
            .unwrap_err()
            .starts_with("CONDUCTOR_DECLARED_LABEL_BYTES must be a size"));
        assert!(parse(&args("--snapshot-bytes -1"), &no_env).is_err());
        assert!(parse(&args("--max-body 0"), &no_env).is_err());
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
    fn messages_name_what_was_wrong_and_where_it_came_from() {
        let err = |a: &str, env: &dyn Fn(&str) -> Option<String>| parse(&args(a), env).unwrap_err();
        assert_eq!(
            err("serve --bogus", &no_env),
            "--bogus is not a flag of `serve` (see conductor-metrics serve --help)"
        );
        assert!(err("--addr 15110", &no_env).contains("--addr must be HOST:PORT"));
        let budget = |k: &str| (k == "AGENT_DAILY_BUDGET").then(|| "abc".to_string());
        assert!(err("", &budget).starts_with("AGENT_DAILY_BUDGET must be an amount in dollars"));
        let addr = |k: &str| (k == "CONDUCTOR_ADDR").then(|| "15110".to_string());
        assert!(err("", &addr).starts_with("CONDUCTOR_ADDR must be HOST:PORT"));
        assert_eq!(
            err("stauts", &no_env),
            "unknown command \"stauts\"; did you mean `status`? (see conductor-metrics help)"
        );
        assert_eq!(
            err("--adr 127.0.0.1:1", &no_env),
            "--adr is not a flag of `serve`; did you mean --addr? (see conductor-metrics serve --help)"
        );
        assert!(err("demo --sed 3", &no_env).contains("did you mean --seed?"));
        assert_eq!(
            err("bogus", &no_env),
            "unknown command \"bogus\" (see conductor-metrics help)"
        );
        assert!(err("complete", &no_env).contains("needs a RUN_ID"));
        assert!(err("status extra", &no_env).contains("unexpected argument \"extra\""));
        assert!(err("fail r1 r2", &no_env).contains("unexpected argument \"r2\""));
    }

    #[test]
    fn each_subcommand_has_its_help() {
        for sub in [
            "serve", "status", "budget", "trigger", "complete", "fail", "cancel", "demo",
        ] {
            let Ok(Command::Help(a)) = parse(&args(&format!("{sub} --help")), &no_env) else {
                panic!("{sub}")
            };
            let Ok(Command::Help(b)) = parse(&args(&format!("help {sub}")), &no_env) else {
                panic!("{sub}")
            };
            assert_eq!(a, b);
            assert!(a.contains(&format!("conductor-metrics {sub}")), "{a}");
        }
        assert!(parse(&args("help nope"), &no_env).is_err());
    }

    #[test]
    fn the_program_help_lists_the_commands_and_help_takes_help() {
        let program = Command::Help(usage::program_help());
        for line in [
            "--help",
            "-h",
            "help",
            "help --help",
            "help help",
            "--addr x --help",
        ] {
            assert_eq!(parse(&args(line), &no_env).as_ref(), Ok(&program), "{line}");
        }
        let Command::Help(text) = program else {
            unreachable!()
        };
        for sub in usage::commands() {
            assert!(text.contains(&format!("\n  {sub} ")), "{sub} in {text}");
        }
    }

    #[test]
    fn finishing_a_run() {
        assert_eq!(
            parse(&args("fail r-1 --error boom --cost 0.5"), &no_env),
            Ok(Command::Client(
                "fail".into(),
                Client {
                    url: DEFAULT_URL.into(),
                    run_id: "r-1".into(),
                    error: Some("boom".into()),
                    cost: Some(0.5),
                    ..client("")
                }
            ))
        );
        assert!(parse(&args("cancel r --error x"), &no_env).is_err());
        assert!(parse(&args("complete r --cost -1"), &no_env).is_err());
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
            Ok(Command::Client("status".into(), client("http://x:1")))
        );
    }

    #[test]
    fn demo_defaults_and_flags() {
        let url = |k: &str| (k == "CONDUCTOR_URL").then(|| "http://h:1".to_string());
        assert_eq!(
            parse(&args("demo"), &url),
            Ok(Command::Client("demo".into(), client("http://h:1")))
        );
        assert_eq!(
            parse(&args("demo --url http://x:2 --runs 5 --seed=7"), &no_env),
            Ok(Command::Client(
                "demo".into(),
                Client {
                    runs: 5,
                    seed: 7,
                    ..client("http://x:2")
                }
            ))
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("2s"), Some(Duration::from_secs(2)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("90m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("6h"), Some(Duration::from_secs(21_600)));
        for bad in ["", "0", "-1", "1d", "s", "h", "1.5s", "9000h"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_run_timeout_defaults_to_6h_and_0_turns_it_off() {
        let no_env = |_: &str| None;
        let timeout = |line: &str| match parse(&args(line), &no_env) {
            Ok(Command::Serve(c)) => Ok(c.run_timeout),
            Ok(other) => panic!("{other:?}"),
            Err(e) => Err(e),
        };
        assert_eq!(timeout("serve"), Ok(Some(DEFAULT_RUN_TIMEOUT)));
        assert_eq!(timeout("serve --run-timeout 0"), Ok(None));
        assert_eq!(
            timeout("serve --run-timeout 45m"),
            Ok(Some(Duration::from_secs(2700)))
        );
        let err = timeout("serve --run-timeout soon").unwrap_err();
        assert!(err.contains("--run-timeout must be a duration"), "{err}");
        let env = |k: &str| (k == "CONDUCTOR_RUN_TIMEOUT").then(|| "x".to_string());
        let err = parse(&args("serve"), &env).unwrap_err();
        assert!(err.starts_with("CONDUCTOR_RUN_TIMEOUT must be"), "{err}");
    }

    #[test]
    fn the_write_timeout_defaults_to_10s_and_comes_from_a_flag_or_its_variable() {
        let write_timeout =
            |line: &str, env: &dyn Fn(&str) -> Option<String>| match parse(&args(line), env) {
                Ok(Command::Serve(c)) => Ok(c.limits.write_timeout),
                Ok(other) => panic!("{other:?}"),
                Err(e) => Err(e),
            };
        let no_env = |_: &str| None;
        let env = |k: &str| (k == "CONDUCTOR_WRITE_TIMEOUT").then(|| "750ms".to_string());
        assert_eq!(write_timeout("serve", &no_env), Ok(Duration::from_secs(10)));
        assert_eq!(write_timeout("serve", &env), Ok(Duration::from_millis(750)));
        assert_eq!(
            write_timeout("serve --write-timeout 2m", &env),
            Ok(Duration::from_secs(120))
        );
        let err = write_timeout("serve --write-timeout never", &no_env).unwrap_err();
        assert!(
            err.starts_with("--write-timeout must be a duration"),
            "{err}"
        );
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
