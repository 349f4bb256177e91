//! `serve`: from the settings to a listening server, and its graceful stop.

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::app::App;
use crate::budget::Pricing;
use crate::config::Config;
use crate::error::Error;
use crate::http::Server;
use crate::log::Logger;
use crate::sys;

/// Why the server did not start, with its exit code: bad input (2) or the environment (1). Said
/// once as a plain line on stderr and once logged.
type StartError = (u8, String);

fn input(message: String) -> StartError {
    (2, message)
}

fn environment(message: String) -> StartError {
    (1, message)
}

/// Runs the server until SIGTERM or SIGINT; returns the exit code.
pub(crate) fn serve(c: Config) -> ExitCode {
    // Before any thread starts, so every thread inherits the mask and the signals wait for `stop`.
    let signals = sys::block_stop_signals();
    sys::limit_malloc_arenas(2);
    let log = Logger::new(c.log_level, c.log_format);
    // Crash-only: a panic stops the server in every build, as the release profile's
    // `panic = "abort"` does. Going on could serve memory that no longer matches the journal; the
    // next start replays what is durable.
    std::panic::set_hook(Box::new(move |info| {
        log.error("panic", &[("error", json!(info.to_string()))]);
        std::process::abort();
    }));
    match start(c, log) {
        Ok((server, app, _locks)) => {
            match signals.and_then(|()| sys::wait_for_stop_signal()) {
                Ok(signal) => stop(&server, &app, signal, app.config.shutdown_timeout),
                Err(e) => {
                    log.warn(
                        "cannot wait for SIGTERM or SIGINT; they stop the server at once",
                        &[("error", json!(e.to_string()))],
                    );
                    server.join();
                }
            }
            ExitCode::SUCCESS
        }
        Err((code, message)) => {
            eprintln!("conductor-metrics: {message}");
            log.error("cannot start", &[("error", json!(message))]);
            ExitCode::from(code)
        }
    }
}

/// The graceful stop: no new connections, streams end with a final notice, requests in flight are
/// answered (each acknowledged write is durable before its answer goes out), and traces are
/// flushed, all within `grace`.
fn stop(server: &Server, app: &App, signal: &str, grace: Duration) {
    let started = Instant::now();
    let log = app.log;
    log.info(
        "stopping",
        &[
            ("signal", json!(signal)),
            ("grace_seconds", json!(grace.as_secs_f64())),
        ],
    );
    let drained = server.stop(grace);
    let flushed = app
        .tracer
        .as_ref()
        .is_none_or(|t| t.flush(grace.saturating_sub(started.elapsed())));
    let fields = [
        ("connections_cut", json!(!drained)),
        ("traces_flushed", json!(flushed)),
        (
            "duration_ms",
            json!(started.elapsed().as_secs_f64() * 1000.0),
        ),
    ];
    // One message, so a search finds every stop; one that cut connections or lost spans warns.
    match drained && flushed {
        true => log.info("stopped", &fields),
        false => log.warn("stopped", &fields),
    }
}

/// From the settings to a listening server: reads the files they name into them, for the app.
fn start(mut c: Config, log: Logger) -> Result<(Server, Arc<App>, Vec<File>), StartError> {
    // Every connection costs descriptors, and the soft limit is often far below what is allowed.
    // Said on the listening line, or as a warning.
    let nofile = match sys::raise_fd_limit() {
        Ok(limits) => Some(limits.soft),
        Err(e) => {
            log.warn(
                "cannot raise the descriptor limit",
                &[("error", json!(e.to_string()))],
            );
            None
        }
    };
    if let Some(path) = &c.pricing_file {
        c.budget.pricing = std::fs::read_to_string(path)
            .map_err(|e| e.to_string())
            .and_then(|text| Pricing::from_json(&text).map_err(|e| e.to_string()))
            .map_err(|e| input(format!("--pricing {}: {e}", path.display())))?;
    }
    if let Some(path) = &c.metrics_file {
        c.declared = std::fs::read_to_string(path)
            .map_err(|e| e.to_string())
            .and_then(|text| crate::declared::spec::parse(&text))
            .map_err(|e| input(format!("--metrics-file {}: {e}", path.display())))?;
    }
    c.data_dir = data_dir(&c.data_dir)?;
    let locks = lock_dirs(&c.data_dir, &c.budget.dir)?;
    let data_dir = c.data_dir.display().to_string();
    let app = App::open(c, log).map_err(|e| match e {
        // Its field names the input at fault: the metrics file or the agent's budget file.
        e @ Error::Invalid { .. } => input(e.to_string()),
        e => environment(format!("cannot open the data dir {data_dir}: {e}")),
    })?;
    let c = &app.config;
    let listener = TcpListener::bind(&c.addr).map_err(|e| {
        let why = match e.kind() {
            std::io::ErrorKind::AddrInUse => "the port is in use by another process".to_string(),
            std::io::ErrorKind::AddrNotAvailable => "no interface has that address".to_string(),
            std::io::ErrorKind::PermissionDenied => {
                "permission denied (ports below 1024 need privileges)".to_string()
            }
            _ => e.to_string(),
        };
        environment(format!("cannot listen on {}: {why}", c.addr))
    })?;
    let server = Server::start(app.clone(), listener, c.limits.clone())
        .map_err(|e| environment(format!("cannot serve: {e}")))?;
    println!("conductor-metrics listening on http://{}", server.addr());
    if c.open_to_the_network(server.addr()) {
        log.warn(
            "listening beyond this host without an API key: anyone who can reach the port can write; set --api-key-file or CONDUCTOR_API_KEY",
            &[("addr", json!(server.addr().to_string()))],
        );
    }
    log.info(
        "listening",
        &[
            ("addr", json!(server.addr().to_string())),
            ("data_dir", json!(data_dir)),
            ("nofile", json!(nofile)),
        ],
    );
    Ok((server, app, locks))
}

/// Locks the data dir, and the budget dir when outside it, before anything in them is read: two
/// servers on one dir would both write it.
fn lock_dirs(data_dir: &Path, budget_dir: &Path) -> Result<Vec<File>, StartError> {
    let mut locks = vec![crate::lock::lock(data_dir).map_err(environment)?];
    let budget_dir = std::fs::create_dir_all(budget_dir)
        .and_then(|()| budget_dir.canonicalize())
        .map_err(|e| {
            environment(format!(
                "cannot create the budget dir {}: {e}",
                budget_dir.display()
            ))
        })?;
    if !budget_dir.starts_with(data_dir) {
        locks.push(crate::lock::lock(&budget_dir).map_err(environment)?);
    }
    Ok(locks)
}

/// Makes the data dir when missing, and returns it as an absolute path: the default `./data`
/// depends on the working directory, and the start log should say which one it is.
fn data_dir(dir: &Path) -> Result<PathBuf, StartError> {
    if dir.exists() && !dir.is_dir() {
        return Err(input(format!(
            "the data dir {} is a file, not a directory (choose another with --data-dir)",
            dir.display()
        )));
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| environment(format!("cannot create the data dir {}: {e}", dir.display())))?;
    dir.canonicalize()
        .map_err(|e| environment(format!("cannot open the data dir {}: {e}", dir.display())))
}
