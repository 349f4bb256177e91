//! The `conductor-metrics` binary: parse the command line, then either run
//! the server or a client subcommand.

use std::net::TcpListener;
use std::process::ExitCode;

use conductor_metrics::app::{App, AppConfig, VERSION};
use conductor_metrics::budget::{BudgetConfig, Pricing};
use conductor_metrics::cli;
use conductor_metrics::config::{self, Command, ServeConfig};
use conductor_metrics::demo;
use conductor_metrics::http::{Limits, Server};
use conductor_metrics::log::Logger;
use conductor_metrics::otlp::OtlpConfig;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let command = match config::parse(&args, &|k| std::env::var(k).ok()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("conductor-metrics: {e}");
            return ExitCode::from(2);
        }
    };
    match command {
        Command::Help(text) => print!("{text}"),
        Command::Version => println!("conductor-metrics {VERSION}"),
        Command::Status { url } => return ExitCode::from(cli::status(&url) as u8),
        Command::Budget { url } => return ExitCode::from(cli::budget(&url) as u8),
        Command::Trigger { url } => return ExitCode::from(cli::trigger(&url) as u8),
        Command::Demo(options) => return ExitCode::from(demo::command(&options) as u8),
        Command::Serve(c) => return serve(c),
    }
    ExitCode::SUCCESS
}

fn serve(c: ServeConfig) -> ExitCode {
    conductor_metrics::sys::limit_malloc_arenas(2);
    let log = Logger::new(c.log_level, c.log_format);
    std::panic::set_hook(Box::new(move |info| {
        log.error("panic", &[("error", serde_json::json!(info.to_string()))]);
    }));
    // Every connection costs descriptors; the soft limit is often far below what is allowed.
    match conductor_metrics::sys::raise_fd_limit() {
        Ok(limits) => log.info(
            "descriptor limit",
            &[("nofile", serde_json::json!(limits.soft))],
        ),
        Err(e) => log.warn(
            "cannot raise the descriptor limit",
            &[("error", serde_json::json!(e.to_string()))],
        ),
    }
    let pricing = match &c.pricing {
        None => Pricing::default_table(),
        Some(path) => match Pricing::read(path) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("conductor-metrics: --pricing: {e}");
                return ExitCode::from(2);
            }
        },
    };
    let budget = BudgetConfig {
        daily_limit: c.daily_budget,
        run_estimate: c.run_estimate,
        dir: c.budget_dir.clone(),
        pricing,
    };
    let app = match App::open(
        AppConfig {
            data_dir: c.data_dir.clone(),
            api_key: c.api_key.clone(),
            max_body: c.max_body,
            budget,
            otlp: OtlpConfig::from_env(&|k| std::env::var(k).ok()),
        },
        log,
    ) {
        Ok(app) => app,
        Err(e) => {
            log.error(
                "cannot start",
                &[("error", serde_json::json!(e.to_string()))],
            );
            return ExitCode::from(1);
        }
    };
    let listener = match TcpListener::bind(&c.addr) {
        Ok(l) => l,
        Err(e) => {
            log.error(
                "cannot listen",
                &[
                    ("addr", serde_json::json!(c.addr)),
                    ("error", serde_json::json!(e.to_string())),
                ],
            );
            return ExitCode::from(1);
        }
    };
    let limits = Limits {
        max_connections: c.max_connections,
        header_timeout: c.header_timeout,
        idle_timeout: c.idle_timeout,
        max_body: c.max_body,
        ..Limits::default()
    };
    let server = match Server::start(app, listener, limits) {
        Ok(s) => s,
        Err(e) => {
            log.error(
                "cannot serve",
                &[("error", serde_json::json!(e.to_string()))],
            );
            return ExitCode::from(1);
        }
    };
    println!("conductor-metrics listening on http://{}", server.addr());
    log.info(
        "listening",
        &[
            ("addr", serde_json::json!(server.addr().to_string())),
            (
                "data_dir",
                serde_json::json!(c.data_dir.display().to_string()),
            ),
        ],
    );
    server.join();
    ExitCode::SUCCESS
}
