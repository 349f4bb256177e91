//! The command line as a new user meets it: start errors that say what is
//! wrong in one plain line with the right exit code, help per subcommand,
//! finishing from the CLI a run that `trigger` started, and log lines that
//! say what happened (lost spans, a torn tail cut, an unknown model).

mod common;

use std::net::TcpListener;
use std::time::Duration;

use common::{get, get_json, post_json, run_cli, sample, ServerProc, TempDir};
use serde_json::{json, Value};

const TIMEOUT: Duration = Duration::from_secs(20);

/// Runs the binary, which must fail with `code` and one plain stderr line
/// containing each of `want`; returns that line.
fn refused(args: &[&str], envs: &[(&str, &str)], code: i32, want: &[&str]) -> String {
    let out = run_cli(args, envs, None, TIMEOUT);
    assert_eq!(out.status.code(), Some(code), "{args:?}: {out:?}");
    let plain: Vec<&str> = out.stderr.lines().filter(|l| !l.starts_with('{')).collect();
    assert_eq!(
        plain.len(),
        1,
        "{args:?}: one plain line in {:?}",
        out.stderr
    );
    assert!(plain[0].starts_with("conductor-metrics: "), "{}", plain[0]);
    for w in want {
        assert!(plain[0].contains(w), "{args:?}: {w:?} in {:?}", plain[0]);
    }
    assert!(out.stdout.is_empty(), "{args:?}: {:?}", out.stdout);
    plain[0].to_string()
}

#[test]
fn bad_input_says_what_is_wrong_and_exits_2() {
    let dir = TempDir::new();
    let file = dir.join("a-file");
    std::fs::write(&file, "x").unwrap();
    refused(
        &["serve", "--bogus"],
        &[],
        2,
        &["--bogus is not a flag", "--help"],
    );
    refused(&["--bogus", "1"], &[], 2, &["--bogus is not a flag"]);
    refused(&["--addr", "15110"], &[], 2, &["HOST:PORT", "\"15110\""]);
    refused(
        &[],
        &[("AGENT_DAILY_BUDGET", "abc")],
        2,
        &["AGENT_DAILY_BUDGET must be an amount"],
    );
    refused(
        &[],
        &[("CONDUCTOR_MAX_BODY", "lots")],
        2,
        &["CONDUCTOR_MAX_BODY must be a size"],
    );
    refused(
        &["--daily-budget", "abc"],
        &[],
        2,
        &["--daily-budget must be an amount"],
    );
    refused(
        &[
            "--data-dir",
            file.to_str().unwrap(),
            "--addr",
            "127.0.0.1:0",
        ],
        &[],
        2,
        &["is a file, not a directory", "--data-dir"],
    );
    refused(
        &["stauts"],
        &[],
        2,
        &["unknown command \"stauts\"", "did you mean `status`"],
    );
    refused(&["complete"], &[], 2, &["needs a RUN_ID"]);
    refused(&["help", "nope"], &[], 2, &["unknown command \"nope\""]);
    refused(
        &["bogus"],
        &[],
        2,
        &["unknown command \"bogus\"", "(see conductor-metrics help)"],
    );
    refused(
        &["--adr", "127.0.0.1:0"],
        &[],
        2,
        &["--adr is not a flag of `serve`; did you mean --addr?"],
    );
    // --pricing errors name the file, as --metrics-file errors do.
    let absent = dir.join("absent.json");
    let absent = absent.to_str().unwrap();
    let data = dir.join("data");
    let data = data.to_str().unwrap();
    let serve = |pricing| {
        [
            "--addr",
            "127.0.0.1:0",
            "--data-dir",
            data,
            "--pricing",
            pricing,
        ]
    };
    refused(&serve(absent), &[], 2, &[&format!("--pricing {absent}: ")]);
    let bad = dir.join("pricing.json");
    std::fs::write(&bad, r#"{"models": {"m": {"input": -1, "output": 2}}}"#).unwrap();
    let bad = bad.to_str().unwrap();
    refused(
        &serve(bad),
        &[],
        2,
        &[&format!("--pricing {bad}: pricing.models.m.input: must be")],
    );
}

#[test]
fn a_port_in_use_is_an_environment_error_and_exits_1() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = TempDir::new();
    let out = run_cli(
        &[
            "--addr",
            &addr,
            "--data-dir",
            dir.join("data").to_str().unwrap(),
        ],
        &[],
        None,
        TIMEOUT,
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let lines: Vec<&str> = out.stderr.lines().collect();
    let plain: Vec<&&str> = lines.iter().filter(|l| !l.starts_with('{')).collect();
    assert_eq!(plain.len(), 1, "{:?}", out.stderr);
    assert!(
        plain[0].contains(&format!("cannot listen on {addr}: the port is in use")),
        "{}",
        plain[0]
    );
    // The JSON log line says the same, and nothing unrelated comes first.
    let logged: Vec<Value> = lines
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert_eq!(logged.len(), 1, "{:?}", out.stderr);
    assert_eq!(logged[0]["msg"], "cannot start");
}

#[test]
fn every_subcommand_has_its_own_help() {
    for sub in [
        "serve", "status", "budget", "trigger", "complete", "fail", "cancel", "demo",
    ] {
        let a = run_cli(&[sub, "--help"], &[], None, TIMEOUT);
        let b = run_cli(&["help", sub], &[], None, TIMEOUT);
        assert!(a.status.success() && b.status.success(), "{sub}: {a:?}");
        assert_eq!(a.stdout, b.stdout, "{sub}");
        assert!(
            a.stdout.contains(&format!("conductor-metrics {sub}")),
            "{sub}: {}",
            a.stdout
        );
    }
    let serve = run_cli(&["serve", "--help"], &[], None, TIMEOUT).stdout;
    for var in [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_SERVICE_NAME",
        "CONDUCTOR_METRICS_FILE",
        "--shutdown-timeout",
    ] {
        assert!(serve.contains(var), "{var} in {serve}");
    }
    // The program's help lists the commands, whichever way it is asked for.
    let all = run_cli(&["help"], &[], None, TIMEOUT);
    assert!(all.status.success(), "{all:?}");
    for sub in [
        "serve", "status", "budget", "trigger", "complete", "fail", "cancel", "demo", "repair",
    ] {
        assert!(
            all.stdout.contains(&format!("\n  {sub} ")),
            "{sub} in {}",
            all.stdout
        );
    }
    for asked in [&["--help"][..], &["-h"], &["help", "--help"]] {
        let out = run_cli(asked, &[], None, TIMEOUT);
        assert!(out.status.success(), "{asked:?}: {out:?}");
        assert_eq!(out.stdout, all.stdout, "{asked:?}");
    }
}

/// A dead collector costs spans, and says so: a warning naming the collector with the count
/// lost (at most one a minute; a stop warns about the rest), and a `stopped` line that does not
/// claim the traces were flushed.
#[test]
fn lost_spans_are_warned_about_and_the_stop_does_not_claim_a_flush() {
    let dir = TempDir::new();
    // Nothing listens there: every export is refused at once.
    let nothing = common::RefusedAddr::new();
    let dead = nothing.addr();
    let endpoint = format!("http://{dead}");
    let envs = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "1"),
    ];
    let mut server = ServerProc::start(dir.path(), &[], &envs);
    let addr = server.addr();
    for id in ["traced-1", "traced-2"] {
        let started = post_json(addr, "/api/v1/runs", &json!({"run_id": id}));
        assert_eq!(started.status, 201);
        let path = format!("/api/v1/runs/{id}/complete");
        assert_eq!(post_json(addr, &path, &json!({})).status, 200);
    }
    // One span per run, each lost.
    common::poll_until(TIMEOUT, || {
        let text = get(addr, "/metrics").text();
        (sample(&text, "conductor_trace_spans_dropped_total") == Some(2.0)).then_some(())
    });
    let first = server.wait_for_stderr(TIMEOUT, |l| l.contains("\"trace spans dropped\""));
    let first: Value = serde_json::from_str(&first).unwrap();
    assert_eq!(first["level"], "warn");
    assert!(
        first["error"].as_str().unwrap().contains(&dead.to_string()),
        "{first}"
    );
    server.terminate();
    assert_eq!(server.wait().code(), Some(0));
    let lines = server.stderr_json();
    let warnings: Vec<&Value> = lines
        .iter()
        .filter(|l| l["msg"] == "trace spans dropped")
        .collect();
    let counted: u64 = warnings.iter().map(|w| w["spans"].as_u64().unwrap()).sum();
    assert_eq!(counted, 2, "every lost span is counted once: {warnings:?}");
    let stopped = lines
        .iter()
        .find(|l| l["msg"] == "stopped")
        .expect("a stopped line");
    assert_eq!(stopped["traces_flushed"], false, "{stopped}");
}

/// A torn tail that a start cuts is said, with the file and the bytes cut.
#[test]
fn a_torn_tail_cut_at_start_is_logged_with_its_file_and_bytes() {
    let dir = TempDir::new();
    let data = dir.join("data");
    let mut server = ServerProc::start(&data, &[], &[]);
    let body = json!({"type": "note", "body": "kept"});
    assert_eq!(
        post_json(server.addr(), "/api/v1/messages", &body).status,
        201
    );
    server.terminate();
    assert_eq!(server.wait().code(), Some(0));

    let journal = data.join("messages").join("0000000001.jsonl");
    let mut bytes = std::fs::read(&journal).unwrap();
    let whole = bytes.len();
    bytes.extend_from_slice(br#"{"type":"no"#);
    std::fs::write(&journal, &bytes).unwrap();

    let server = ServerProc::start(&data, &[], &[]);
    let cut = server
        .stderr_json()
        .into_iter()
        .find(|l| {
            l["msg"]
                .as_str()
                .is_some_and(|m| m.starts_with("cut the torn tail"))
        })
        .unwrap_or_else(|| panic!("no torn-tail line in {:?}", server.stderr_lines()));
    assert_eq!(cut["level"], "warn");
    let file = journal.canonicalize().unwrap();
    assert_eq!(cut["file"], file.display().to_string());
    assert_eq!(cut["bytes"], 11);
    assert_eq!(std::fs::read(&journal).unwrap().len(), whole);
    let messages = get_json(server.addr(), "/api/v1/messages").json();
    assert_eq!(messages["messages"][0]["body"], "kept", "{messages}");
}

/// Tokens of a model the pricing table does not name are charged its default price, and the
/// model is said once, in a warning, and counted, whether it comes in a spend or a run's end.
#[test]
fn an_unknown_model_is_warned_about_once_and_counted() {
    let dir = TempDir::new();
    let pricing = dir.join("pricing.json");
    std::fs::write(&pricing, r#"{"known": {"input": 1, "output": 1}}"#).unwrap();
    let args = [
        "--pricing",
        pricing.to_str().unwrap(),
        "--daily-budget",
        "100",
    ];
    let server = ServerProc::start(&dir.join("data"), &args, &[]);
    let addr = server.addr();
    for model in ["mystery", "known", "mystery"] {
        let spend = json!({"input_tokens": 1000, "output_tokens": 0, "model": model});
        assert_eq!(post_json(addr, "/api/v1/budget/spend", &spend).status, 201);
    }
    assert_eq!(
        post_json(addr, "/api/v1/runs", &json!({"run_id": "r"})).status,
        201
    );
    let tokens = json!({"type": "tokens", "phase": "plan", "model": "other",
                        "input_tokens": 10, "output_tokens": 10});
    assert_eq!(
        post_json(addr, "/api/v1/runs/r/events", &tokens).status,
        200
    );
    let ended = post_json(addr, "/api/v1/runs/r/complete", &json!({}));
    assert_eq!(ended.status, 200);
    // 10 × $15/M + 10 × $75/M, the default price.
    assert_eq!(ended.json()["cost"], 0.0009, "{}", ended.text());
    let text = get(addr, "/metrics").text();
    assert_eq!(
        sample(&text, "conductor_pricing_unknown_models_total"),
        Some(2.0)
    );
    // The warning about a run's model is logged after its end is answered.
    server.wait_for_stderr(TIMEOUT, |l| l.contains(r#""model":"other""#));
    let warned: Vec<String> = server
        .stderr_json()
        .iter()
        .filter(|l| l["level"] == "warn" && l["model"].is_string())
        .map(|l| l["model"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(warned, ["mystery", "other"]);
}

#[test]
fn the_cli_finishes_a_run_that_trigger_started() {
    let dir = TempDir::new();
    let server = ServerProc::start(dir.path(), &[], &[]);
    let url = server.url("");
    let mut ids = Vec::new();
    for _ in 0..3 {
        let out = run_cli(&["trigger", "--url", &url], &[], None, TIMEOUT);
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        let v: Value = serde_json::from_str(&out.stdout).unwrap();
        ids.push(v["operation_id"].as_str().unwrap().to_string());
    }
    let done = run_cli(
        &["complete", &ids[0], "--url", &url, "--cost", "0.25"],
        &[],
        None,
        TIMEOUT,
    );
    assert_eq!(done.status.code(), Some(0), "{done:?}");
    let v: Value = serde_json::from_str(&done.stdout).unwrap();
    assert_eq!(
        (v["status"].as_str(), v["cost"].as_f64()),
        (Some("completed"), Some(0.25))
    );
    let failed = run_cli(
        &["fail", &ids[1], "--url", &url, "--error", "out of ideas"],
        &[],
        None,
        TIMEOUT,
    );
    assert_eq!(failed.status.code(), Some(0), "{failed:?}");
    let cancelled = run_cli(&["cancel", &ids[2], "--url", &url], &[], None, TIMEOUT);
    assert_eq!(cancelled.status.code(), Some(0), "{cancelled:?}");
    let run = get_json(server.addr(), &format!("/api/v1/runs/{}", ids[1])).json();
    assert_eq!(
        (run["status"].as_str(), run["error"].as_str()),
        (Some("failed"), Some("out of ideas"))
    );
    let again = run_cli(&["cancel", &ids[2], "--url", &url], &[], None, TIMEOUT);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        again.stderr.contains("409") && again.stderr.contains("already cancelled"),
        "{}",
        again.stderr
    );
}

#[test]
fn a_401_tells_the_user_to_set_the_key_and_the_start_log_names_the_data_dir() {
    let dir = TempDir::new();
    let server = ServerProc::start(dir.path(), &[], &[("CONDUCTOR_API_KEY", "s3cret")]);
    let url = server.url("");
    let out = run_cli(&["status", "--url", &url], &[], None, TIMEOUT);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        out.stderr.contains("set CONDUCTOR_API_KEY"),
        "{}",
        out.stderr
    );
    let wrong = run_cli(
        &["budget", "--url", &url],
        &[("CONDUCTOR_API_KEY", "nope")],
        None,
        TIMEOUT,
    );
    assert!(
        wrong
            .stderr
            .contains("the key in CONDUCTOR_API_KEY was refused"),
        "{}",
        wrong.stderr
    );
    let listening = server
        .stderr_json()
        .into_iter()
        .find(|l| l["msg"] == "listening")
        .unwrap();
    let logged = listening["data_dir"].as_str().unwrap();
    assert!(std::path::Path::new(logged).is_absolute(), "{logged}");
    assert_eq!(
        std::path::Path::new(logged),
        dir.path().canonicalize().unwrap()
    );
}

/// The README's top block: a server on another port and data dir, and a client command that
/// finds it through `CONDUCTOR_URL`.
#[test]
fn a_client_finds_a_server_on_another_port_through_conductor_url() {
    let dir = TempDir::new();
    let server = ServerProc::start(&dir.join("elsewhere"), &[], &[]);
    let url = server.url("");
    let out = run_cli(
        &["status"],
        &[("CONDUCTOR_URL", url.as_str())],
        None,
        TIMEOUT,
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        out.stdout.starts_with("conductor-metrics "),
        "{}",
        out.stdout
    );
    let nothing = common::RefusedAddr::new();
    let elsewhere = format!("http://{}", nothing.addr());
    let lost = run_cli(&["status", "--url", &elsewhere], &[], None, TIMEOUT);
    assert_eq!(lost.status.code(), Some(1), "{lost:?}");
}

/// One server per data dir: a second one, or a repair, is refused with the dir and the
/// holder's pid while the first runs, and a SIGKILL leaves no stale lock behind.
#[test]
fn a_second_server_on_a_data_dir_is_refused_until_the_first_is_gone() {
    let dir = TempDir::new();
    let data = dir.join("data");
    let mut first = ServerProc::start(&data, &[], &[]);
    let data_arg = data.to_str().expect("utf-8 path");
    let second = run_cli(
        &["serve", "--addr", "127.0.0.1:0", "--data-dir", data_arg],
        &[],
        None,
        TIMEOUT,
    );
    assert_eq!(second.status.code(), Some(1), "{}", second.stderr);
    let absolute = data.canonicalize().expect("the data dir");
    let want = format!(
        "conductor-metrics: the data dir {} is in use by another conductor-metrics (pid {}); \
         stop it or choose another --data-dir",
        absolute.display(),
        first.pid()
    );
    assert_eq!(
        second.stderr.lines().next(),
        Some(want.as_str()),
        "{}",
        second.stderr
    );
    let repair = run_cli(&["repair", "--data-dir", data_arg], &[], None, TIMEOUT);
    assert_eq!(repair.status.code(), Some(1), "{}", repair.stderr);
    assert!(repair.stderr.contains("is in use"), "{}", repair.stderr);
    // A store's directory inside the data dir is not one: its repair would
    // take no lock and run beside the live server.
    let store = data.join("messages");
    let inner = run_cli(
        &["repair", "--data-dir", store.to_str().unwrap()],
        &[],
        None,
        TIMEOUT,
    );
    assert_eq!(inner.status.code(), Some(2), "{}", inner.stderr);
    assert!(
        inner.stderr.contains("is inside the data dir"),
        "{}",
        inner.stderr
    );

    first.kill();
    let third = ServerProc::start(&data, &[], &[]);
    assert_eq!(get(third.addr(), "/healthz").status, 200);
}

/// `repair` refuses a path that is no data dir rather than report that it
/// checked nothing.
#[test]
fn repair_refuses_a_path_that_is_not_a_data_dir() {
    let dir = TempDir::new();
    let file = dir.join("a-file");
    std::fs::write(&file, "x").unwrap();
    let empty = dir.join("empty");
    std::fs::create_dir(&empty).unwrap();
    for (path, why) in [
        (dir.join("missing"), "is not a directory"),
        (file, "is not a directory"),
        (empty, "is not a conductor-metrics data dir"),
    ] {
        let out = run_cli(
            &["repair", "--data-dir", path.to_str().unwrap()],
            &[],
            None,
            TIMEOUT,
        );
        assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
        assert!(out.stderr.contains(why), "{}", out.stderr);
        assert!(!out.stdout.contains("checked"), "{}", out.stdout);
    }
}
