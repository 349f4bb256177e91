//! The daily budget: runs reserve an estimate at start and record their cost at the end;
//! reservations plus spend never pass the daily limit at admission. Money is whole micro-dollars;
//! the day is the UTC day of a [`Clock`] and never moves back. See `docs/budget.md`.

mod agent_file;
mod forecast;
mod learn;
mod ledger;
mod metrics;
mod money;
mod record;
mod report;
mod settlement;
mod state;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};

use crate::error::Error;
use crate::metrics::CounterFamily;
use crate::time;

pub(crate) use agent_file::Imported;
pub(crate) use learn::AgentCosts;
#[cfg(test)]
pub(crate) use manual::ManualClock;
pub use money::Pricing;
pub(crate) use money::{dollars, SpendInput, MAX_AMOUNT};
pub use report::Recorded;
pub(crate) use report::Spent;
pub(crate) use settlement::{LedgerLines, Settlement};

use state::State;

/// The least a start reserves, in dollars.
pub(crate) const DEFAULT_RUN_ESTIMATE: f64 = 0.15;
pub(crate) const LEDGER_DIR: &str = "budget";

/// Settings of a [`Budget`].
#[derive(Clone, Debug, PartialEq)]
pub struct BudgetConfig {
    /// The daily limit in dollars; 0 refuses every run.
    pub daily_limit: f64,
    /// The estimate a run reserves when it starts, in dollars; above 0.
    pub run_estimate: f64,
    /// Whether a start reserves at least its agent's learned cost (`--run-estimate auto`).
    pub learn: bool,
    /// The ledger directory, holding one `YYYY-MM-DD.jsonl` per day.
    pub dir: PathBuf,
    pub pricing: Pricing,
}

impl BudgetConfig {
    /// The defaults for a data directory (see `docs/budget.md`).
    pub fn new(data_dir: &Path) -> BudgetConfig {
        BudgetConfig {
            daily_limit: 5.0,
            run_estimate: DEFAULT_RUN_ESTIMATE,
            learn: true,
            dir: data_dir.join(LEDGER_DIR),
            pricing: Pricing::default_table(),
        }
    }
}

/// The daily budget. One lock guards all books, so checking the limit and reserving is one step;
/// ledger appends happen outside it. One per ledger directory: a second opens its journals twice.
pub struct Budget {
    dir: PathBuf,
    pricing: Pricing,
    clock: Arc<dyn Clock>,
    state: Mutex<State>,
    /// Signalled when an append of an operation's spend ends, for repeats waiting on it.
    appended: Condvar,
    /// `agent_cost_dollars_total{phase}`, once metrics are registered.
    phases: OnceLock<CounterFamily>,
    unknown_models: money::UnknownModels,
    tail: Mutex<report::Tail>,
    /// What the ledgers held when the budget opened, for the counters.
    opened: ledger::Totals,
}

impl Budget {
    /// Opens the budget, summing every ledger for the counters. The day is the clock's or the
    /// newest ledger's, whichever is later, so a clock behind never reopens an earlier day.
    pub(crate) fn open(config: BudgetConfig, clock: Arc<dyn Clock>) -> Result<Budget, Error> {
        let limit = money::to_micros(config.daily_limit, "daily_limit")?;
        let estimate = money::to_micros(config.run_estimate, "run_estimate")?;
        if estimate == 0 {
            return Err(Error::invalid("run_estimate", "must be above 0"));
        }
        let dir = config.dir;
        fs::create_dir_all(&dir).map_err(|e| ledger::storage(&dir, e))?;
        let clock_day = time::day_of(clock.now_unix());
        let newest = ledger::days(&dir)?.last().copied();
        let today = newest.map_or(clock_day, |d| d.max(clock_day));
        let opened = ledger::totals(&dir)?;
        let mut state = State {
            limit,
            estimate,
            learn: config.learn,
            today,
            recorded: opened.spent,
            alerts: opened.alerts,
            ..State::default()
        };
        state.load(&dir, today)?;
        Ok(Budget {
            dir,
            pricing: config.pricing,
            clock,
            state: Mutex::new(state),
            appended: Condvar::new(),
            phases: OnceLock::new(),
            unknown_models: money::UnknownModels::default(),
            tail: Mutex::new(report::Tail::default()),
            opened,
        })
    }

    pub(crate) fn status(&self) -> report::BudgetStatus {
        let (mut state, now) = self.lock();
        state.status(now)
    }

    /// Learns the cost of a run of `agent` that ended at `at`, live or on replay.
    pub(crate) fn learn(&self, agent: Option<&str>, micros: i64, at: f64) {
        self.state().learned.observe(agent, micros, at);
    }

    pub(crate) fn learned(&self) -> Vec<AgentCosts> {
        self.state().learned.export()
    }

    pub(crate) fn restore_learned(&self, all: Vec<AgentCosts>) {
        self.state().learned.restore(all);
    }

    pub(crate) fn alerts_recorded(&self) -> u64 {
        self.state().alerts
    }

    pub(crate) fn pricing(&self) -> &Pricing {
        &self.pricing
    }

    /// Locks the books and rolls them to the clock's day, read under the lock so that the day
    /// each operation sees only moves forward.
    fn lock(&self) -> (MutexGuard<'_, State>, f64) {
        let mut state = self.state();
        let now = self.clock.now_unix();
        state.roll(now);
        (state, now)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Sections under this lock return errors, not panic: a poisoned lock guards whole books.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Wall-clock time, read on every operation so the UTC day rolls at midnight; settable in tests.
/// It may jump either way; the budget copes.
pub(crate) trait Clock: Send + Sync {
    /// Seconds since the Unix epoch, with the fraction.
    fn now_unix(&self) -> f64;
}

/// The system wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_unix(&self) -> f64 {
        time::now_unix()
    }
}

/// A clock that shows whatever it was last set to.
#[cfg(test)]
pub(crate) mod manual {
    use std::sync::atomic::{AtomicU64, Ordering};

    #[derive(Debug)]
    pub struct ManualClock {
        // f64 bits; Relaxed is enough because the time is one independent
        // value that publishes no other memory.
        bits: AtomicU64,
    }

    impl ManualClock {
        pub fn new(unix: f64) -> ManualClock {
            ManualClock {
                bits: AtomicU64::new(unix.to_bits()),
            }
        }

        pub fn set(&self, unix: f64) {
            self.bits.store(unix.to_bits(), Ordering::Relaxed);
        }

        /// Moves the time by `seconds`; a negative value steps it back.
        pub fn advance(&self, seconds: f64) {
            let step = |bits| Some((f64::from_bits(bits) + seconds).to_bits());
            // The closure always returns Some, so the update cannot fail.
            let _ = self
                .bits
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, step);
        }
    }

    impl super::Clock for ManualClock {
        fn now_unix(&self) -> f64 {
            f64::from_bits(self.bits.load(Ordering::Relaxed))
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    impl Budget {
        /// A run's end as the run store settles it: priced, charged once
        /// durable, then written to the ledger.
        pub(crate) fn settle(
            &self,
            run_id: &str,
            cost: SpendInput,
            phase_costs: &[(String, f64)],
        ) -> Result<Recorded, Error> {
            let settlement = self.price(run_id, cost, phase_costs, self.clock.now_unix())?;
            let (recorded, lines) = self.charge(&settlement);
            self.write_settlement(lines)?;
            Ok(recorded)
        }
    }

    /// 2026-11-23.
    pub const DAY: i64 = 20_780;

    /// A unique ledger dir and a clock at noon of [`DAY`].
    pub struct Fixture {
        pub dir: PathBuf,
        pub clock: Arc<ManualClock>,
        /// Removes the ledger dir's parent when the fixture goes.
        _root: crate::testing::TempDir,
    }

    impl Fixture {
        pub fn new(name: &str) -> Fixture {
            let root = crate::testing::TempDir::new(&format!("budget-{name}"));
            let dir = root.join("budget");
            let clock = Arc::new(ManualClock::new(DAY as f64 * 86_400.0 + 43_200.0));
            Fixture {
                dir,
                clock,
                _root: root,
            }
        }

        pub fn open(&self, limit: f64, estimate: f64) -> Budget {
            let config = BudgetConfig {
                daily_limit: limit,
                run_estimate: estimate,
                ..BudgetConfig::new(self.dir.parent().unwrap())
            };
            Budget::open(config, self.clock.clone()).unwrap()
        }

        /// Sets the clock to `seconds` after midnight starting `day`.
        pub fn at(&self, day: i64, seconds: f64) {
            self.clock.set(day as f64 * 86_400.0 + seconds);
        }

        pub fn file(&self, day: i64) -> PathBuf {
            ledger::path(&self.dir, day)
        }
    }

    impl Drop for Fixture {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(self.dir.parent().unwrap());
        }
    }

    #[test]
    fn midnight_resets_spend_and_yesterdays_runs_settle_into_yesterday() {
        let f = Fixture::new("rollover");
        f.at(DAY, 86_400.0 - 10.0);
        let budget = f.open(1.0, 0.15);
        budget.spend(SpendInput::Amount(0.6), None, None).unwrap();
        budget.reserve("late", None).unwrap();
        let yesterday = fs::read(f.file(DAY)).unwrap();
        f.at(DAY + 1, 5.0);
        let s = budget.status();
        assert_eq!(
            (s.date.as_str(), s.today_spend, s.reserved, s.remaining),
            ("2026-11-24", 0.0, 0.0, 1.0)
        );
        assert_eq!(s.reset_at(), "2026-11-25T00:00:00.000Z");
        let recorded = budget.settle("late", SpendInput::Amount(0.3), &[]).unwrap();
        assert_eq!(
            (recorded.day.as_str(), recorded.alerts.as_slice()),
            ("2026-11-23", &[80u8][..])
        );
        assert_eq!(
            (recorded.status.today_spend, recorded.status.remaining),
            (0.0, 1.0)
        );
        assert!(!f.file(DAY + 1).exists());
        let after = fs::read(f.file(DAY)).unwrap();
        assert!(after.starts_with(&yesterday) && after.len() > yesterday.len());
        assert_eq!(
            budget.state().loaded_days(),
            1,
            "yesterday's book was dropped"
        );
        budget.spend(SpendInput::Amount(0.2), None, None).unwrap();
        drop(budget);
        assert_eq!(f.open(1.0, 0.15).status().today_spend, 0.2);
        f.at(DAY, 100.0);
        let yesterday_total = f.open(1.0, 0.15);
        assert_eq!(
            yesterday_total.status().date,
            "2026-11-24",
            "never back to an earlier day"
        );
    }

    #[test]
    fn a_clock_stepping_back_never_doubles_or_loses_spend() {
        let f = Fixture::new("stepback");
        f.at(DAY, 86_400.0 - 1.0);
        let budget = f.open(5.0, 0.15);
        budget.spend(SpendInput::Amount(1.0), None, None).unwrap();
        f.at(DAY - 1, 86_000.0);
        budget.spend(SpendInput::Amount(0.5), None, None).unwrap();
        let s = budget.status();
        assert_eq!(
            (s.date.as_str(), s.today_spend, s.spend_events),
            ("2026-11-23", 1.5, 2)
        );
        assert!(!f.file(DAY - 1).exists());
        f.at(DAY + 1, 1.0);
        budget.spend(SpendInput::Amount(0.25), None, None).unwrap();
        f.at(DAY, 86_399.5);
        let s = budget.status();
        assert_eq!((s.date.as_str(), s.today_spend), ("2026-11-24", 0.25));
        assert_eq!(
            budget.reserve("r", None).map_err(|r| r.retry_after_seconds),
            Ok(150_000)
        );
        drop(budget);
        let reopened = f.open(5.0, 0.15).status();
        assert_eq!(
            (reopened.date.as_str(), reopened.today_spend),
            ("2026-11-24", 0.25)
        );
        f.at(DAY + 1, 2.0);
        let budget = f.open(5.0, 0.15);
        assert_eq!(budget.status().today_spend, 0.25);
        f.at(DAY + 2, 0.0);
        assert_eq!(budget.status().today_spend, 0.0);
        let totals: Vec<_> = [DAY, DAY + 1]
            .iter()
            .map(|&d| fs::read_to_string(f.file(d)).unwrap().lines().count())
            .collect();
        assert_eq!(totals, [2, 1]);
    }

    #[test]
    fn an_unwritable_ledger_records_no_spend_and_keeps_a_settlements_lines_owed() {
        let f = Fixture::new("unwritable");
        let budget = f.open(1.0, 0.15);
        budget.reserve("r", None).unwrap();
        // A directory where today's file belongs makes the journal fail to open.
        fs::create_dir(f.file(DAY)).unwrap();
        let failed = budget.spend(SpendInput::Amount(0.6), None, None);
        assert!(matches!(failed, Err(Error::Storage(_))), "{failed:?}");
        let s = budget.status();
        assert_eq!((s.today_spend, s.reserved, s.spend_events), (0.0, 0.15, 0));
        // A run's end is durable in the run journal: charged, its lines owed.
        let failed = budget.settle("r", SpendInput::Amount(0.6), &[]);
        assert!(matches!(failed, Err(Error::Storage(_))), "{failed:?}");
        let s = budget.status();
        assert_eq!((s.today_spend, s.reserved, s.spend_events), (0.6, 0.0, 1));
        fs::remove_dir(f.file(DAY)).unwrap();
        budget.reserve("r2", None).unwrap();
        let recorded = budget.settle("r2", SpendInput::Amount(0.1), &[]).unwrap();
        assert_eq!(recorded.alerts, Vec::<u8>::new(), "50 fired with r");
        let ledger = fs::read_to_string(f.file(DAY)).unwrap();
        let kinds: Vec<_> = ledger
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .map(|v| {
                (
                    v["run_id"].as_str().map(str::to_string),
                    v["alert"].as_u64(),
                )
            })
            .collect();
        let r = |id: &str| Some(id.to_string());
        assert_eq!(kinds, [(r("r"), None), (None, Some(50)), (r("r2"), None)]);
    }

    #[test]
    fn bad_settings_are_rejected() {
        let f = Fixture::new("settings");
        let clock: Arc<dyn Clock> = f.clock.clone();
        let field = |limit: f64, estimate: f64| {
            let config = BudgetConfig {
                daily_limit: limit,
                run_estimate: estimate,
                ..BudgetConfig::new(&f.dir)
            };
            match Budget::open(config, clock.clone()) {
                Err(Error::Invalid { field, .. }) => field,
                other => panic!("{:?}", other.map(|_| ())),
            }
        };
        assert_eq!(field(-1.0, 0.15), "daily_limit");
        assert_eq!(field(f64::NAN, 0.15), "daily_limit");
        assert_eq!(field(5.0, 0.0), "run_estimate");
        assert_eq!(
            BudgetConfig::new(Path::new("/d")).dir,
            Path::new("/d/budget")
        );
    }

    /// Checked when the tests compile: budget is send and sync.
    const _: () = {
        const fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Budget>();
        assert_send_sync::<BudgetConfig>();
    };
}

#[cfg(test)]
mod clock_tests {
    use super::manual::ManualClock;
    use super::*;
    use std::sync::Arc;

    #[test]
    fn manual_clock_moves_both_ways() {
        let clock = ManualClock::new(86_400.0 * 3.0 - 30.0);
        assert_eq!(clock.now_unix(), 259_170.0);
        clock.advance(45.5);
        assert_eq!(clock.now_unix(), 259_215.5);
        clock.advance(-100.0);
        assert_eq!(clock.now_unix(), 259_115.5);
        clock.set(1.0);
        assert_eq!(clock.now_unix(), 1.0);
    }

    #[test]
    fn concurrent_advances_all_land() {
        let clock = Arc::new(ManualClock::new(0.0));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let clock = clock.clone();
                std::thread::spawn(move || (0..1000).for_each(|_| clock.advance(1.0)))
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        assert_eq!(clock.now_unix(), 4000.0);
    }

    #[test]
    fn system_clock_reads_the_wall_clock() {
        let (before, now) = (time::now_unix(), SystemClock.now_unix());
        assert!(now >= before && now - before < 60.0);
    }

    /// Checked when the tests compile: clocks are send and sync.
    const _: () = {
        const fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<SystemClock>();
        assert_send_sync::<ManualClock>();
        assert_send_sync::<Arc<dyn Clock>>();
    };
}
