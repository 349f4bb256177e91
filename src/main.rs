//! The `conductor-metrics` binary. The command line is the library's:
//! [`conductor_metrics::run`].

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    conductor_metrics::run(&args)
}
