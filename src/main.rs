//! The `conductor-metrics` binary. The command line is the library's,
//! [`conductor_metrics::run`], so that everything but the metrics registry
//! can stay private to the crate. The house, from the top:
//!
//! - `cli.rs` reads the command line through `config/` (one table of
//!   settings) and runs a command: `serve`, a client subcommand, `demo` or
//!   `repair`.
//! - `serve.rs` takes the data dir's lock, opens the app, listens, and stops
//!   gracefully on SIGTERM or SIGINT.
//! - `app.rs` opens the stores in order and holds them: `runs/`, `bus.rs`,
//!   `declared/`, `budget/` and the event hub in `events/`.
//! - `http/` translates requests into calls on those stores (`routes.rs`),
//!   and `ws/` and `http/streams.rs` carry the live streams.
//! - `journal.rs`, `segments.rs` and `commit_queue.rs` make every store's
//!   records durable; `docs/design.md` follows one write to the disk and back.
//! - `metrics/` is the std-only registry the rest reports through.

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    conductor_metrics::run(&args)
}
