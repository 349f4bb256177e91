//! The application: the registry, core metrics and domain stores, wired together for HTTP.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::budget::{Budget, Imported, Recorded, SystemClock};
use crate::bus::Bus;
use crate::config::Config;
use crate::error::Error;
use crate::events::{Hub, PreparedEvents};
use crate::log::{Level, Logger};
use crate::metrics::{ByteCeiling, Counter, CounterFamily, Gauge, ProcessCollector, Registry};
use crate::otlp::{Exporter, OtlpConfig};
use crate::runs::{Applied, RunIds, RunMetrics, Runs, Text, Timed};

/// The version reported by `--version`, `/api/v1/status` and `conductor_build_info`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The metrics the HTTP layer records.
pub struct HttpMetrics {
    pub requests: CounterFamily,
    pub connections: Gauge,
    pub connections_rejected: CounterFamily,
}

/// Everything the server serves. Safe to share across threads.
pub struct App {
    pub registry: Registry,
    pub runs: Runs,
    pub bus: Bus,
    pub budget: Arc<Budget>,
    pub events: Arc<Hub>,
    pub http: HttpMetrics,
    pub log: Logger,
    pub config: Config,
    /// When `OTEL_EXPORTER_OTLP_ENDPOINT` is set.
    pub tracer: Option<Exporter>,
    pub declared: crate::declared::Declared,
    started: Instant,
    /// The run timeout's failed attempts to end a run, by run id, so that a run it cannot end
    /// costs a bounded number of tries and log lines, not one at every check for ever.
    abandon_failures: std::sync::Mutex<std::collections::HashMap<String, u32>>,
    /// Runs the run timeout gave up on.
    given_up: Counter,
}

/// Threads that end stale runs at once, so that their ends share syncs.
const STALE_ENDERS: usize = 8;

/// How many times the run timeout tries to end one run before it gives up.
const ABANDON_TRIES: u32 = 5;

fn registration(e: crate::metrics::Error) -> Error {
    Error::Storage(format!("metric registration failed: {e}"))
}

fn register_core(
    r: &Registry,
    started: Instant,
) -> Result<(RunMetrics, Counter, HttpMetrics), crate::metrics::Error> {
    r.gauge_fn(
        "conductor_uptime_seconds",
        "Seconds since the server started.",
        move || started.elapsed().as_secs_f64(),
    )?;
    let build = r.gauge_family(
        "conductor_build_info",
        "Build information; the value is always 1.",
        &["version"],
    )?;
    build.set(&[VERSION], 1.0);
    let run_metrics = RunMetrics::register(r)?;
    let appends = r.counter(
        "conductor_messagebus_appends_total",
        "Messages appended to the message bus and acknowledged.",
    )?;
    let http = HttpMetrics {
        requests: r.counter_family(
            "conductor_api_requests_total",
            "HTTP requests answered, by method and status code.",
            &["method", "status"],
        )?,
        connections: r.gauge("conductor_http_connections", "Client connections open.")?,
        connections_rejected: r.counter_family(
            "conductor_http_connections_rejected_total",
            "Client connections closed or refused by a limit, by reason.",
            &["reason"],
        )?,
    };
    // Every reason is visible at 0 from the start, so an alert can rate() it.
    for reason in [
        "limit",
        "evicted",
        "idle_timeout",
        "header_timeout",
        "body_timeout",
        "write_timeout",
        "accept_error",
    ] {
        http.connections_rejected.inc_by(&[reason], 0);
    }
    r.register_collector(Arc::new(ProcessCollector::new()))?;
    Ok((run_metrics, appends, http))
}

fn tracer(otlp: Option<OtlpConfig>, r: &Registry, log: Logger) -> Result<Option<Exporter>, Error> {
    let dropped = r
        .counter(
            "conductor_trace_spans_dropped_total",
            "Trace spans dropped: queue full, collector failing, or retries exhausted.",
        )
        .map_err(registration)?;
    otlp.map(|otlp| Exporter::start(otlp, dropped, log))
        .transpose()
        .map_err(|e| Error::Storage(format!("trace exporter: {e}")))
}

fn open_declared(
    config: &Config,
    registry: &Registry,
    log: Logger,
) -> Result<crate::declared::Declared, Error> {
    crate::declared::Declared::open(
        &config.data_dir,
        config.declared.clone(),
        registry,
        &ByteCeiling::new(
            config.declared_label_bytes,
            config.declared_exposition_bytes,
        ),
        config.snapshot_bytes,
        log,
    )
    .map_err(|e| match e {
        // A declared family the registry refuses is the file's fault.
        Error::Invalid { field, message } => Error::Invalid {
            field: format!("--metrics-file: {field}"),
            message,
        },
        e => e,
    })
}

/// The budget ledger, then the run store, whose replay settles into it.
fn open_budget_and_runs(
    config: &Config,
    registry: &Registry,
    run_metrics: RunMetrics,
    log: Logger,
) -> Result<(Arc<Budget>, Runs), Error> {
    let budget = Arc::new(Budget::open(config.budget.clone(), Arc::new(SystemClock))?);
    budget.register_metrics(registry).map_err(registration)?;
    budget.log_to(log);
    let runs = Runs::open(
        &config.data_dir,
        run_metrics,
        budget.clone(),
        config.run_retention,
        config.snapshot_bytes,
        log,
    )?;
    Ok((budget, runs))
}

/// Makes the data dir, and logs each torn tail cut and each journal `repair` moved lines from.
fn prepare_dirs(config: &Config, log: Logger) -> Result<(), Error> {
    std::fs::create_dir_all(&config.data_dir).map_err(|e| {
        Error::Storage(format!(
            "cannot create data dir {}: {e}",
            config.data_dir.display()
        ))
    })?;
    // Opening a journal cuts a torn tail without a word; cut here first, to say each.
    let dirs = [config.data_dir.as_path(), config.budget.dir.as_path()];
    let cuts = crate::repair::cut_torn_tails(&dirs)
        .map_err(|e| Error::Storage(format!("cannot cut a torn tail: {e}")))?;
    for (file, bytes) in cuts {
        log.warn(
            "cut the torn tail of a journal: its last write was interrupted",
            &[
                ("file", json!(file.display().to_string())),
                ("bytes", json!(bytes)),
            ],
        );
    }
    let aside = crate::repair::set_aside(&dirs)
        .map_err(|e| Error::Storage(format!("cannot read the data dir: {e}")))?;
    for (file, lines) in aside {
        log.warn(
            "journal records moved aside by repair are not in the store",
            &[
                ("file", json!(file.display().to_string())),
                ("records", json!(lines)),
                ("moved_to", json!(format!("{}.corrupt", file.display()))),
            ],
        );
    }
    Ok(())
}

impl App {
    /// Registers the metric set, opens and replays the journals, and counts the research
    /// agent's budget file of the day. Fails with [`Error::Invalid`] for bad input, its field
    /// naming the input, and [`Error::Storage`] for what the environment refuses.
    pub fn open(config: Config, log: Logger) -> Result<Arc<App>, Error> {
        prepare_dirs(&config, log)?;
        let registry = Registry::new();
        let started = Instant::now();
        let (run_metrics, appends, http) =
            register_core(&registry, started).map_err(registration)?;
        let tracer = tracer(config.otlp.clone(), &registry, log)?;
        // The message bus replays on its own thread beside the budget and the runs, which the
        // runs' settlements tie together: a start is mostly replay, and the stores share nothing.
        let (bus, budget, runs) = std::thread::scope(|scope| {
            let bus =
                scope.spawn(|| Bus::open(&config.data_dir, appends, config.message_retention));
            let opened = open_budget_and_runs(&config, &registry, run_metrics, log);
            let bus = bus
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            opened.and_then(|(budget, runs)| Ok((bus?, budget, runs)))
        })?;
        let events = Hub::open(&config.data_dir, &registry, log)
            .map_err(|e| Error::Storage(e.to_string()))?;
        // Events are not journaled, but each stands for a durable run, message or ledger alert.
        let mut published = runs.published();
        published.push(("message_appended".to_string(), bus.appended()));
        published.push(("budget_alert".to_string(), budget.alerts_recorded()));
        events.restore_published(&published);
        let declared = open_declared(&config, &registry, log)?;
        // After the run journal's settlements, which never name an operation.
        let imported = budget.import_agent_file()?;
        if declared.skipped_on_replay > 0 {
            log.warn(
                "declared metric updates skipped on replay: their family is no longer declared as it was",
                &[("updates", json!(declared.skipped_on_replay))],
            );
        }
        let given_up = registry
            .counter(
                "conductor_run_timeout_given_up_total",
                "Runs the run timeout failed to end after 5 tries; they stay running until a restart.",
            )
            .map_err(registration)?;
        let app = Arc::new(App {
            registry,
            runs,
            bus,
            budget,
            events: Arc::new(events),
            http,
            log,
            config,
            tracer,
            declared,
            started,
            abandon_failures: Default::default(),
            given_up,
        });
        wire_events(&app);
        if let Some(imported) = &imported {
            app.announce_import(imported);
        }
        // The run timeout first ends the runs a dead orchestrator left.
        if let Some(timeout) = app.config.run_timeout {
            app.end_stale_runs(timeout);
            app.start_run_timeout(timeout)
                .map_err(|e| Error::Storage(format!("cannot start the run timeout: {e}")))?;
        }
        Ok(app)
    }

    /// Announces each alert threshold a spend crossed: a warning line and a `BUDGET_ALERT`.
    pub fn budget_alerts(&self, recorded: &Recorded, run_id: Option<&str>) {
        for threshold in &recorded.alerts {
            let status = recorded.status.to_json();
            self.log.warn(
                "budget threshold crossed",
                &[
                    ("threshold_percent", json!(threshold)),
                    ("day", json!(recorded.day)),
                    ("today_spend", status["today_spend"].clone()),
                    ("daily_limit", status["daily_limit"].clone()),
                    ("run_id", json!(run_id)),
                ],
            );
            self.events.publish_budget_alert(*threshold, &status);
            let body = json!({
                "threshold_percent": threshold,
                "day": recorded.day,
                "status": status,
            });
            // Waits for the bus's write: a threshold is crossed once a day.
            let posted =
                self.bus
                    .append("BUDGET_ALERT".to_string(), body, run_id.map(str::to_string));
            if let Err(e) = posted {
                self.log.error(
                    "budget alert not posted",
                    &[("error", json!(e.to_string()))],
                );
            }
        }
    }

    /// Says what counting the research agent's budget file did, and its budget alerts.
    fn announce_import(&self, imported: &Imported) {
        let file = json!(imported.file.display().to_string());
        self.log.info(
            "research agent budget file read",
            &[
                ("file", file.clone()),
                ("entries", json!(imported.entries)),
                ("counted", json!(imported.counted)),
                ("already_recorded", json!(imported.already_recorded)),
                ("repeated", json!(imported.repeated)),
                ("amount", json!(imported.recorded.amount)),
                ("today_spend", json!(imported.recorded.status.today_spend)),
            ],
        );
        if imported.total_disagrees {
            self.log.warn(
                "research agent budget file: total_spend is not the sum of its entries; the entries are counted",
                &[
                    ("file", file),
                    ("total_spend", json!(imported.total_spend)),
                    ("entries_total", json!(imported.entries_total)),
                ],
            );
        }
        self.budget_alerts(&imported.recorded, None);
    }

    /// What follows a run store's durable step, in journal order: [`crate::runs::AfterCommit`].
    fn after_commit(&self, applied: &mut Applied) {
        match applied {
            Applied::Started(run) => {
                let ids = run.ids();
                self.log.info("run started", &run_fields(&ids));
                self.events.run_started(run);
            }
            Applied::Events(ids, events, prepared) => {
                let prepared = prepared
                    .take()
                    .and_then(|p| p.downcast::<PreparedEvents>().ok());
                // Rendered ahead with the ids the run had then: used only if it still has them.
                match prepared.filter(|p| &p.ids == ids) {
                    Some(p) => self.events.publish_prepared(*p),
                    None => self
                        .events
                        .publish_prepared(PreparedEvents::new(ids, events)),
                }
                if self.log.enabled(Level::Debug) {
                    self.log_events(ids, events);
                }
            }
            Applied::Finished(finished) => self.announce_finished(finished),
        }
    }

    /// One debug line per event, with its iteration and phase, or the run's now when it had none.
    fn log_events(&self, ids: &RunIds, events: &[Timed]) {
        let now = self.runs.with_run(&ids.run_id, |run| {
            (
                run.detail.current_iteration,
                run.detail.current_phase.clone(),
            )
        });
        let (iteration, phase) = now.unwrap_or_default();
        let or = |own: &Value, current: Value| match own.is_null() {
            true => current,
            false => own.clone(),
        };
        for e in events {
            let mut fields = run_fields(ids);
            let v = e.to_json();
            fields.push(("type", v["type"].clone()));
            fields.push(("iteration", or(&v["iteration"], json!(iteration))));
            fields.push(("phase", or(&v["phase"], json!(phase))));
            if let Some(ms) = v.get("duration_ms").filter(|d| !d.is_null()) {
                fields.push(("duration_ms", ms.clone()));
            }
            self.log.log(Level::Debug, "run event", &fields);
        }
    }

    /// Tells everyone who follows runs that one ended.
    fn announce_finished(&self, finished: &crate::runs::Finished) {
        let run = &finished.run;
        let mut fields = run_fields(&run.ids());
        fields.extend([
            ("status", json!(run.status.as_str())),
            ("cost", json!(finished.spend.amount)),
            ("error", json!(run.text(Text::Error))),
            ("iterations", json!(run.detail.iterations_started)),
            (
                "duration_ms",
                json!(run.detail.duration_seconds.map(|s| (s * 1000.0).round())),
            ),
        ]);
        self.log.info("run finished", &fields);
        if let Some(e) = &finished.ledger_error {
            // The run journal holds the cost; the ledger gets it at its day's next settlement
            // or the next start.
            self.log.warn(
                "run cost not yet copied into the budget ledger",
                &[
                    ("run_id", json!(&*run.run_id)),
                    ("day", json!(finished.spend.day)),
                    ("error", json!(e)),
                ],
            );
        }
        self.events.run_finished(run, finished.spend.amount);
        self.budget_alerts(&finished.spend, Some(&run.run_id));
        // When tracing is on; never blocks.
        if let (Some(tracer), Some(trace)) = (&self.tracer, crate::runs::trace::run_trace(run)) {
            tracer.export(trace);
        }
    }

    /// Starts the thread that ends runs with no news for `timeout`, checking a tenth of the
    /// timeout apart (at most once a minute). It holds the app weakly, and ends with it.
    pub fn start_run_timeout(self: &Arc<App>, timeout: Duration) -> std::io::Result<()> {
        let every = (timeout / 10).clamp(Duration::from_millis(10), Duration::from_secs(60));
        let app = Arc::downgrade(self);
        std::thread::Builder::new()
            .name("run-timeout".into())
            .stack_size(64 * 1024)
            .spawn(move || loop {
                std::thread::sleep(every);
                let Some(app) = app.upgrade() else {
                    return;
                };
                app.end_stale_runs(timeout);
            })
            .map(drop)
    }

    /// Ends the runs with no news for `timeout` now. A run whose end fails is tried again at
    /// the next checks, up to [`ABANDON_TRIES`] times in all; then it is given up and counted.
    fn end_stale_runs(&self, timeout: Duration) {
        let stale = self
            .runs
            .stale(crate::time::now_unix(), timeout.as_secs_f64());
        // Each end waits for its sync: from a few threads, many abandoned runs share syncs.
        let per_thread = stale.len().div_ceil(STALE_ENDERS).max(1);
        std::thread::scope(|scope| {
            for ids in stale.chunks(per_thread) {
                scope.spawn(move || ids.iter().for_each(|id| self.end_stale_run(id)));
            }
        });
    }

    fn end_stale_run(&self, id: &str) {
        if self
            .failures()
            .get(id)
            .is_some_and(|&tries| tries >= ABANDON_TRIES)
        {
            return;
        }
        let e = match self.runs.finish(id, crate::runs::Finish::Abandon, None) {
            // Finished meanwhile by its orchestrator: nothing to do.
            Ok(_) | Err(Error::Conflict(_)) | Err(Error::NotFound(_)) => {
                self.failures().remove(id);
                return;
            }
            Err(e) => e,
        };
        let mut failures = self.failures();
        let tries = failures.entry(id.to_string()).or_default();
        *tries += 1;
        let fields = [
            ("run_id", json!(id)),
            ("tries", json!(*tries)),
            ("error", json!(e.to_string())),
        ];
        if *tries < ABANDON_TRIES {
            self.log.warn(
                "cannot end an abandoned run; retrying at the next check",
                &fields,
            );
        } else {
            self.given_up.inc();
            self.log.error(
                "cannot end an abandoned run; giving up until a restart",
                &fields,
            );
        }
    }

    fn failures(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, u32>> {
        // Counts only: a panic while it was held leaves a usable map.
        let failures = self.abandon_failures.lock();
        failures.unwrap_or_else(|e| e.into_inner())
    }

    /// Seconds since start.
    pub fn uptime_seconds(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }
}

/// The fields every log line about a run carries.
fn run_fields(ids: &RunIds) -> Vec<(&'static str, Value)> {
    vec![
        ("run_id", json!(ids.run_id)),
        ("correlation_id", json!(ids.correlation())),
        ("work_order_id", json!(ids.work_order_id)),
    ]
}

/// Connects the bus's visible messages and the run store's durable steps to `app`'s hub: here, in
/// the composition root, as it reaches into the bus, the runs and the hub at once.
fn wire_events(app: &Arc<App>) {
    let weak = Arc::downgrade(app);
    app.runs.after_commit(Box::new(move |applied| {
        if let Some(app) = weak.upgrade() {
            app.after_commit(applied);
        }
    }));
    let weak = Arc::downgrade(app);
    app.bus.on_visible(Box::new(move |message| {
        let Some(app) = weak.upgrade() else {
            return;
        };
        let run = message
            .run_id
            .as_deref()
            .and_then(|id| app.runs.with_run(id, |run| run.ids()));
        app.events.message_appended(message, run.as_ref());
    }));
}
