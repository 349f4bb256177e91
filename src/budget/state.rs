//! The budget's books, all behind the one lock: the current day, a tally
//! per day still in use, and the outstanding reservations.
//!
//! A day's book stays loaded while it is the current day, while a
//! reservation made on it is outstanding, or while an append to its ledger
//! is in flight; then it is dropped with its journal.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::Error;
use crate::time;

use super::forecast::{self, Recent, RATE_WINDOW_SECONDS};
use super::learn::Learned;
use super::ledger::{self, OpKey, Tally};
use super::money::dollars;
use super::report::BudgetStatus;

/// The fixed settings, in micro-dollars.
pub(crate) struct Settings {
    /// The daily limit.
    pub limit: i64,
    /// What a run reserves when it starts: always (`fixed`), or at least
    /// (`auto`, when `learn` is set).
    pub estimate: i64,
    /// Whether a start reserves the larger of `estimate` and what its
    /// agent's recent runs cost (`--run-estimate auto`).
    pub learn: bool,
    /// The ledger directory.
    pub dir: PathBuf,
}

/// One day's books.
#[derive(Default)]
pub(crate) struct DayBook {
    /// What the day's ledger holds, plus appends in flight.
    pub tally: Tally,
    /// The day's spends by ledger time, for the spend rate: those the
    /// ledger holds, and settled runs' costs from the moment they count.
    pub recent: Recent,
    /// Micro-dollars reserved by runs that started on this day.
    reserved: i64,
    /// How many reservations make up `reserved`.
    holds: u32,
    /// Appends to this day's ledger that have not finished.
    inflight: u32,
    /// Micro-dollars of direct spends whose append has not finished:
    /// counted in the tally, so admission and alerts see them, but
    /// reported as held rather than spent until they are durable.
    unsettled: i64,
    /// How many spend lines make up `unsettled`.
    unsettled_events: u64,
    /// Opened on the first append, so quiet days leave no file.
    journal: Option<Arc<ledger::Writer>>,
    /// The operations the day's ledger holds, with the micro-dollars
    /// recorded for each.
    operations: HashMap<OpKey, i64>,
    /// Operations whose append is in flight: counted in the tally, not yet
    /// in `operations`.
    pending: HashSet<OpKey>,
}

/// Where an operation stands on a day.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OpState {
    /// Not recorded.
    Absent,
    /// Its append is in flight.
    Pending,
    /// Durable, with the micro-dollars recorded for it.
    Recorded(i64),
}

/// An outstanding reservation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Hold {
    /// The day the run started, which its cost is charged to.
    pub day: i64,
    /// Micro-dollars held.
    pub micros: i64,
}

/// Everything the lock guards.
pub(crate) struct State {
    /// The current UTC day. It never moves backwards.
    pub today: i64,
    books: BTreeMap<i64, DayBook>,
    /// By run id; a boxed str, as every running run has one.
    holds: HashMap<Box<str>, Hold>,
    /// Micro-dollars recorded since the process started.
    pub recorded: i64,
    /// Reservations refused since the process started.
    pub rejections: u64,
    /// Ledger lines of settlements whose append failed, by day, to write
    /// before the next settlement of that day.
    owed: BTreeMap<i64, Vec<Vec<u8>>>,
    /// The recent costs of each agent's runs.
    pub learned: Learned,
}

impl State {
    /// Loads the books of `today` from its ledger, if it has one.
    pub fn open(dir: &Path, today: i64) -> Result<State, Error> {
        let mut state = State {
            today,
            books: BTreeMap::new(),
            holds: HashMap::new(),
            recorded: 0,
            rejections: 0,
            owed: BTreeMap::new(),
            learned: Learned::default(),
        };
        state.load(dir, today)?;
        Ok(state)
    }

    /// Moves to the clock's day if it is later. A clock that steps back
    /// leaves the day alone, so nothing is reset twice.
    ///
    /// The new day starts empty without touching the disk: no ledger file
    /// is newer than the current day (see `Budget::open`).
    pub fn roll(&mut self, now: f64) {
        let day = time::day_of(now);
        if day > self.today {
            self.today = day;
            self.books.entry(day).or_default();
            self.prune();
        }
    }

    /// Makes sure `day`'s book is loaded, summing its ledger if needed.
    pub fn load(&mut self, dir: &Path, day: i64) -> Result<(), Error> {
        if let Entry::Vacant(vacant) = self.books.entry(day) {
            let mut book = DayBook::default();
            if let Some((journal, summed)) = ledger::open(dir, day, false)? {
                (book.journal, book.tally) = (Some(journal), summed.tally);
                (book.operations, book.recent) = (summed.operations, summed.recent);
            }
            vacant.insert(book);
        }
        Ok(())
    }

    /// The book of `day`, which must be today or a day loaded and pinned
    /// by a hold or an append in flight.
    pub fn book(&mut self, day: i64) -> &mut DayBook {
        self.books.entry(day).or_default()
    }

    /// The journal of `day`'s ledger, opened (and created) on first use.
    pub fn journal(&mut self, dir: &Path, day: i64) -> Result<Arc<ledger::Writer>, Error> {
        let book = self.book(day);
        if let Some(journal) = &book.journal {
            return Ok(journal.clone());
        }
        // Nothing on disk is expected, but whatever is there still counts.
        let opened = ledger::open(dir, day, true)?;
        let (journal, summed) = opened.ok_or_else(|| Error::Storage("ledger vanished".into()))?;
        book.tally.merge(summed.tally);
        book.recent.merge(summed.recent);
        for (key, micros) in summed.operations {
            book.operations.entry(key).or_insert(micros);
        }
        book.journal = Some(journal.clone());
        Ok(journal)
    }

    /// What a start of a run of `agent` reserves now: the configured
    /// estimate, or with `learn` the larger of it and the 90th percentile
    /// of the agent's recent run costs.
    pub fn estimate(&self, settings: &Settings, agent: Option<&str>) -> i64 {
        let learned = settings.learn.then(|| self.learned.percentile(agent));
        settings.estimate.max(learned.flatten().unwrap_or(0))
    }

    /// The estimate the status reports: the largest a start of any agent
    /// that ended a run in the last day would reserve now.
    fn estimate_in_force(&self, settings: &Settings, now: f64) -> i64 {
        let learned = settings.learn.then(|| self.learned.largest_recent(now));
        settings.estimate.max(learned.flatten().unwrap_or(0))
    }

    /// The durable length of `day`'s ledger; 0 when it has none yet.
    pub fn durable_len(&self, day: i64) -> u64 {
        let journal = self.books.get(&day).and_then(|b| b.journal.as_ref());
        journal.map_or(0, |j| j.durable_len())
    }

    /// Whether today can take one more reservation of `estimate`.
    pub fn admits(&self, settings: &Settings, estimate: i64) -> bool {
        let (spent, reserved) = self.today_totals();
        spent.saturating_add(reserved).saturating_add(estimate) <= settings.limit
    }

    /// Charges `micros` spent at `at` to `day`, returning the alert
    /// thresholds it newly reaches.
    pub fn charge(&mut self, day: i64, micros: i64, at: f64, limit: i64) -> Vec<u8> {
        let book = self.book(day);
        book.recent.push(at, micros);
        book.tally.charge(micros, limit)
    }

    /// Takes back a [`State::charge`] whose ledger lines never became
    /// durable.
    pub fn uncharge(&mut self, day: i64, micros: i64, at: f64, fired: &[u8]) {
        let book = self.book(day);
        book.recent.remove(at, micros);
        book.tally.uncharge(micros, fired);
    }

    /// Reserves `micros` for `run_id` on `day`. A run that already holds a
    /// reservation keeps it unchanged.
    pub fn hold(&mut self, run_id: &str, hold: Hold) {
        if self.holds.contains_key(run_id) {
            return;
        }
        let book = self.book(hold.day);
        book.reserved += hold.micros;
        book.holds += 1;
        self.holds.insert(run_id.into(), hold);
    }

    /// Grows `run_id`'s reservation to `micros`, if it holds less.
    pub fn grow(&mut self, run_id: &str, micros: i64) {
        let Some(hold) = self.holds.get_mut(run_id) else {
            return;
        };
        let more = micros - hold.micros;
        if more > 0 {
            hold.micros = micros;
            let day = hold.day;
            self.book(day).reserved += more;
        }
    }

    /// Removes `run_id`'s reservation, if it has one. The day's book stays
    /// until [`State::prune`], so a settle can still charge it.
    pub fn unhold(&mut self, run_id: &str) -> Option<Hold> {
        let hold = self.holds.remove(run_id)?;
        let book = self.book(hold.day);
        book.reserved -= hold.micros;
        book.holds -= 1;
        Some(hold)
    }

    /// The micro-dollars `run_id` holds, if it holds a reservation.
    pub fn held(&self, run_id: &str) -> Option<i64> {
        self.holds.get(run_id).map(|h| h.micros)
    }

    /// The day of `run_id`'s reservation, if it holds one.
    pub fn hold_day(&self, run_id: &str) -> Option<i64> {
        self.holds.get(run_id).map(|h| h.day)
    }

    /// Takes the lines owed to `day`'s ledger.
    pub fn take_owed(&mut self, day: i64) -> Vec<Vec<u8>> {
        self.owed.remove(&day).unwrap_or_default()
    }

    /// Keeps `lines` owed to `day`'s ledger, ahead of any owed since.
    pub fn owe(&mut self, day: i64, mut lines: Vec<Vec<u8>>) {
        let owed = self.owed.entry(day).or_default();
        lines.append(owed);
        *owed = lines;
    }

    /// Whether `run_id` holds a reservation.
    pub fn holds(&self, run_id: &str) -> bool {
        self.holds.contains_key(run_id)
    }

    /// Marks an append to `day`'s ledger as started (`+1`) or finished (`-1`).
    pub fn inflight(&mut self, day: i64, delta: i32) {
        let book = self.book(day);
        book.inflight = book.inflight.saturating_add_signed(delta);
    }

    /// Marks a direct spend of `micros` as in flight (`+1`) or done (`-1`).
    pub fn unsettled(&mut self, day: i64, micros: i64, delta: i64) {
        let book = self.book(day);
        book.unsettled += micros * delta;
        book.unsettled_events = book.unsettled_events.saturating_add_signed(delta);
    }

    /// Where `key` stands on `day`.
    pub fn operation(&self, day: i64, key: &OpKey) -> OpState {
        let Some(book) = self.books.get(&day) else {
            return OpState::Absent;
        };
        match book.operations.get(key) {
            Some(micros) => OpState::Recorded(*micros),
            None if book.pending.contains(key) => OpState::Pending,
            None => OpState::Absent,
        }
    }

    /// Marks `key` as being appended to `day`'s ledger.
    pub fn begin_operation(&mut self, day: i64, key: OpKey) {
        self.book(day).pending.insert(key);
    }

    /// Ends `key`'s append to `day`'s ledger: recorded with `micros` when
    /// it became durable, absent again when it failed (`None`).
    pub fn end_operation(&mut self, day: i64, key: &OpKey, micros: Option<i64>) {
        let book = self.book(day);
        book.pending.remove(key);
        if let Some(micros) = micros {
            book.operations.insert(key.clone(), micros);
        }
    }

    /// Drops the books of past days nothing refers to any more.
    pub fn prune(&mut self) {
        let today = self.today;
        self.books
            .retain(|&day, b| day >= today || b.holds > 0 || b.inflight > 0);
    }

    /// How many days have books loaded.
    #[cfg(test)]
    pub fn loaded_days(&self) -> usize {
        self.books.len()
    }

    fn today_totals(&self) -> (i64, i64) {
        self.books
            .get(&self.today)
            .map_or((0, 0), |b| (b.tally.spent, b.reserved))
    }

    /// Today's status at `now`: spends whose append is in flight show as
    /// reserved, not spent, until they are durable.
    pub fn status(&mut self, settings: &Settings, now: f64) -> BudgetStatus {
        let day_start = self.today as f64 * 86_400.0;
        let since = (now - RATE_WINDOW_SECONDS).max(day_start);
        let window_spend = self
            .books
            .get_mut(&self.today)
            .map_or(0, |b| b.recent.since(since));
        let (total, held) = self.today_totals();
        let book = self.books.get(&self.today);
        let unsettled = book.map_or(0, |b| b.unsettled);
        let (spent, reserved) = (total - unsettled, held + unsettled);
        let events = book.map_or(0, |b| b.tally.events - b.unsettled_events);
        let remaining = settings
            .limit
            .saturating_sub(spent)
            .saturating_sub(reserved)
            .max(0);
        let reset_unix = day_start + 86_400.0;
        let estimate = self.estimate_in_force(settings, now);
        BudgetStatus {
            date: time::date_string(self.today),
            daily_limit: dollars(settings.limit),
            today_spend: dollars(spent),
            reserved: dollars(reserved),
            remaining: dollars(remaining),
            cycles_affordable: (remaining / estimate) as u64,
            spend_events: events,
            reset_at: time::rfc3339(reset_unix),
            reset_unix,
            run_estimate: dollars(estimate),
            run_estimate_mode: if settings.learn { "auto" } else { "fixed" },
            forecast: forecast::forecast(now, day_start, reset_unix, remaining, window_spend),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(limit: i64, estimate: i64) -> Settings {
        let dir =
            std::env::temp_dir().join(format!("budget-state-never-created-{}", std::process::id()));
        Settings {
            limit,
            estimate,
            learn: false,
            dir,
        }
    }

    fn state(today: i64) -> State {
        State::open(&settings(0, 1).dir, today).unwrap()
    }

    #[test]
    fn admission_counts_spend_and_reservations_of_today_only() {
        let s = settings(1_500_000, 150_000);
        let mut state = state(100);
        for i in 0..10 {
            assert!(state.admits(&s, s.estimate), "reservation {i}");
            state.hold(
                &format!("r{i}"),
                Hold {
                    day: 100,
                    micros: 150_000,
                },
            );
        }
        assert!(!state.admits(&s, s.estimate));
        state.hold(
            "r0",
            Hold {
                day: 100,
                micros: 150_000,
            },
        );
        assert_eq!(state.status(&s, 100.5 * 86_400.0).reserved, 1.5);
        state.roll(101.0 * 86_400.0);
        assert!(
            state.admits(&s, s.estimate),
            "yesterday's holds do not count today"
        );
        assert_eq!(state.loaded_days(), 2, "yesterday is pinned by its holds");
        assert_eq!(
            state.unhold("r3"),
            Some(Hold {
                day: 100,
                micros: 150_000
            })
        );
        assert_eq!(state.unhold("r3"), None);
        for i in 0..10 {
            state.unhold(&format!("r{i}"));
        }
        state.prune();
        assert_eq!(state.loaded_days(), 1);
    }

    #[test]
    fn the_day_never_moves_backwards() {
        let mut state = state(100);
        state.roll(99.5 * 86_400.0);
        assert_eq!(state.today, 100);
        state.roll(101.0 * 86_400.0 - 0.001);
        assert_eq!(state.today, 100);
        state.roll(101.0 * 86_400.0);
        assert_eq!((state.today, state.loaded_days()), (101, 1));
        state.roll(100.9 * 86_400.0);
        assert_eq!(state.today, 101);
    }

    #[test]
    fn status_math_is_exact_and_never_negative() {
        let s = settings(1_000_000, 150_000);
        let mut state = state(20_780);
        state.book(20_780).tally.charge(300_000, s.limit);
        state.hold(
            "r",
            Hold {
                day: 20_780,
                micros: 150_000,
            },
        );
        let status = state.status(&s, 20_780.5 * 86_400.0);
        assert_eq!(status.date, "2026-11-23");
        assert_eq!(
            (status.today_spend, status.reserved, status.remaining),
            (0.3, 0.15, 0.55)
        );
        assert_eq!((status.cycles_affordable, status.spend_events), (3, 1));
        assert_eq!(status.reset_at, "2026-11-24T00:00:00.000Z");
        assert_eq!(status.reset_unix, 20_781.0 * 86_400.0);
        assert_eq!(
            (status.run_estimate, status.run_estimate_mode),
            (0.15, "fixed")
        );
        // The charge above is not in the rate: it has no time.
        assert_eq!(status.forecast.rate_per_hour, 0.0);
        state.book(20_780).tally.charge(5_000_000, s.limit);
        let status = state.status(&s, 20_780.5 * 86_400.0);
        assert_eq!((status.remaining, status.cycles_affordable), (0.0, 0));
    }
}
