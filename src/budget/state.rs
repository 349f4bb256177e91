//! The budget's books, all behind the one lock. A day's book stays loaded while current, while a
//! reservation on it is out, or while an append to its ledger is in flight.

use std::collections::btree_map::Entry as Slot;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use crate::error::Error;
use crate::time;

use super::forecast::{self, RATE_WINDOW_SECONDS};
use super::learn::Learned;
use super::ledger::{self, Entry, OpKey, Summed};
use super::money::dollars;
use super::report::BudgetStatus;

#[derive(Default)]
pub(crate) struct DayBook {
    /// What the day's ledger holds, plus appends in flight.
    pub ledger: Summed,
    /// Reserved by runs that started on this day.
    reserved: i64,
    holds: u32,
    inflight: u32,
    /// Direct spends being appended: in the sums for admission and alerts, reported as reserved.
    unsettled: i64,
    unsettled_events: u64,
    /// Opened on the first append, so quiet days leave no file.
    journal: Option<Arc<ledger::Writer>>,
    pending: HashSet<OpKey>,
}

/// A reservation: micro-dollars held on the run's start day, which its cost is charged to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Hold {
    pub day: i64,
    pub micros: i64,
}

/// The books, with the fixed settings (money in micro-dollars).
#[derive(Default)]
pub(crate) struct State {
    pub limit: i64,
    pub estimate: i64,
    pub learn: bool,
    /// The current UTC day. It never moves backwards.
    pub today: i64,
    pub(super) books: BTreeMap<i64, DayBook>,
    /// By run id; a boxed str, as every running run has one.
    pub(super) holds: HashMap<Box<str>, Hold>,
    /// Micro-dollars recorded, ever: `agent_budget_spend_total`.
    pub recorded: i64,
    pub rejections: u64,
    /// `budget_alert` events published ever, as the server starts: the ledgers' and reconcile's.
    pub alerts: u64,
    /// Lines of settlements whose append failed, by day, written before that day's next one.
    pub owed: BTreeMap<i64, Vec<Vec<u8>>>,
    pub learned: Learned,
}

impl State {
    /// Moves to the clock's day if later (a clock stepping back resets nothing twice); the new
    /// day starts empty: no ledger file is newer than today.
    pub fn roll(&mut self, now: f64) {
        let day = time::day_of(now);
        if day > self.today {
            self.today = day;
            self.books.entry(day).or_default();
            self.prune();
        }
    }

    /// Loads `day`'s book if needed, summing its ledger in `dir`.
    pub fn load(&mut self, dir: &Path, day: i64) -> Result<(), Error> {
        if let Slot::Vacant(vacant) = self.books.entry(day) {
            let mut book = DayBook::default();
            if let Some((journal, summed)) = ledger::open(dir, day, false)? {
                (book.journal, book.ledger) = (Some(journal), summed);
            }
            vacant.insert(book);
        }
        Ok(())
    }

    /// The book of `day`: today, or a day pinned by a hold or an append.
    pub fn book(&mut self, day: i64) -> &mut DayBook {
        self.books.entry(day).or_default()
    }

    /// The journal of `day`'s ledger in `dir`, created on first use.
    pub fn journal(&mut self, dir: &Path, day: i64) -> Result<Arc<ledger::Writer>, Error> {
        if let Some(journal) = &self.book(day).journal {
            return Ok(journal.clone());
        }
        // Nothing on disk is expected, but whatever is there still counts.
        let opened = ledger::open(dir, day, true)?;
        let (journal, summed) = opened.ok_or_else(|| Error::Storage("ledger vanished".into()))?;
        let book = self.book(day);
        book.ledger.merge(summed);
        book.journal = Some(journal.clone());
        Ok(journal)
    }

    /// What a start of a run of `agent` reserves now: with `learn`, at least its learned cost.
    pub fn estimate(&self, agent: Option<&str>) -> i64 {
        let learned = self.learn.then(|| self.learned.percentile(agent));
        self.estimate.max(learned.flatten().unwrap_or(0))
    }

    pub fn durable_len(&self, day: i64) -> u64 {
        let journal = self.books.get(&day).and_then(|b| b.journal.as_ref());
        journal.map_or(0, |j| j.durable_len())
    }

    pub fn admits(&mut self, estimate: i64) -> bool {
        let limit = self.limit;
        let book = self.book(self.today);
        let spent = book.ledger.spent.saturating_add(book.reserved);
        spent.saturating_add(estimate) <= limit
    }

    /// Charges `entry` to `day`, pushing its line and alert markers onto `lines`.
    pub fn charge(
        &mut self,
        (day, now): (i64, f64),
        entry: &Entry,
        lines: &mut Vec<Vec<u8>>,
    ) -> Vec<u8> {
        let (micros, limit) = (entry.micros, self.limit);
        let book = &mut self.book(day).ledger;
        book.recent.push(entry.ts, micros);
        let alerts = book.charge(micros, limit);
        let spent = book.spent;
        lines.push(entry.line());
        let alert = |&a| ledger::alert_line(a, now, day, spent, limit);
        lines.extend(alerts.iter().map(alert));
        alerts
    }

    /// Charges `spends` to `day` as their append starts, pushing their lines onto `lines`; returns
    /// their alerts. They count now, so a concurrent reserve cannot take their money.
    pub fn begin_spends(
        &mut self,
        (day, now): (i64, f64),
        spends: &[Entry],
        lines: &mut Vec<Vec<u8>>,
    ) -> Vec<Vec<u8>> {
        let mut fired = Vec::with_capacity(spends.len());
        for s in spends {
            fired.push(self.charge((day, now), s, lines));
            let book = self.book(day);
            book.unsettled += s.micros;
            book.unsettled_events += 1;
            book.pending.extend(s.key());
        }
        self.book(day).inflight += 1;
        fired
    }

    /// Ends [`State::begin_spends`]: recorded when durable (`ok`), else taken back.
    pub fn end_spends(&mut self, day: i64, spends: &[Entry<'_>], fired: &[Vec<u8>], ok: bool) {
        let book = self.book(day);
        book.inflight -= 1;
        for (s, alerts) in spends.iter().zip(fired).rev() {
            let micros = s.micros;
            book.unsettled -= micros;
            book.unsettled_events -= 1;
            if let Some(key) = s.key() {
                book.pending.remove(&key);
                if ok {
                    book.ledger.operations.insert(key, micros);
                }
            }
            if !ok {
                book.ledger.recent.remove(s.ts, micros);
                book.ledger.uncharge(micros, alerts);
            }
        }
        if ok {
            let micros = spends.iter().map(|s| s.micros).sum::<i64>();
            self.recorded = self.recorded.saturating_add(micros);
        }
        self.prune();
    }

    /// Reserves for `run_id`, unless it already holds a reservation.
    pub fn hold(&mut self, run_id: &str, hold: Hold) {
        if self.holds.contains_key(run_id) {
            return;
        }
        let book = self.book(hold.day);
        book.reserved += hold.micros;
        book.holds += 1;
        self.holds.insert(run_id.into(), hold);
    }

    pub fn grow(&mut self, run_id: &str, micros: i64) {
        if let Some(hold) = self.holds.get_mut(run_id).filter(|h| h.micros < micros) {
            let more = micros - std::mem::replace(&mut hold.micros, micros);
            let day = hold.day;
            self.book(day).reserved += more;
        }
    }

    /// Removes `run_id`'s reservation; its book stays until [`State::prune`].
    pub fn unhold(&mut self, run_id: &str) -> Option<Hold> {
        let hold = self.holds.remove(run_id)?;
        let book = self.book(hold.day);
        book.reserved -= hold.micros;
        book.holds -= 1;
        Some(hold)
    }

    pub fn held(&self, run_id: &str) -> Option<Hold> {
        self.holds.get(run_id).copied()
    }

    pub fn inflight(&mut self, day: i64, delta: i32) {
        let book = self.book(day);
        book.inflight = book.inflight.saturating_add_signed(delta);
    }

    /// The micro-dollars `day`'s ledger holds for `key`, if any.
    pub fn recorded(&self, day: i64, key: &OpKey) -> Option<i64> {
        self.books.get(&day)?.ledger.operations.get(key).copied()
    }

    /// Whether an append of `key` to `day`'s ledger is in flight.
    pub fn pending(&self, day: i64, key: &OpKey) -> bool {
        self.books
            .get(&day)
            .is_some_and(|b| b.pending.contains(key))
    }

    pub fn prune(&mut self) {
        let today = self.today;
        self.books
            .retain(|&day, b| day >= today || b.holds > 0 || b.inflight > 0);
    }

    #[cfg(test)]
    pub fn loaded_days(&self) -> usize {
        self.books.len()
    }

    /// Today's status: spends whose append is in flight show as reserved.
    pub fn status(&mut self, now: f64) -> BudgetStatus {
        let (today, limit) = (self.today, self.limit);
        let day_start = today as f64 * 86_400.0;
        let book = self.book(today);
        let since = (now - RATE_WINDOW_SECONDS).max(day_start);
        let window_spend = book.ledger.recent.since(since);
        let spent = book.ledger.spent - book.unsettled;
        let reserved = book.reserved + book.unsettled;
        let events = book.ledger.events - book.unsettled_events;
        let remaining = limit.saturating_sub(spent).saturating_sub(reserved).max(0);
        let reset_unix = day_start + 86_400.0;
        // The estimate in force: the largest of any recent agent.
        let learned = self.learn.then(|| self.learned.largest_recent(now));
        let estimate = self.estimate.max(learned.flatten().unwrap_or(0));
        BudgetStatus {
            date: time::date_string(self.today),
            daily_limit: dollars(self.limit),
            today_spend: dollars(spent),
            reserved: dollars(reserved),
            remaining: dollars(remaining),
            cycles_affordable: (remaining / estimate) as u64,
            spend_events: events,
            reset_unix,
            run_estimate: dollars(estimate),
            run_estimate_mode: if self.learn { "auto" } else { "fixed" },
            forecast: forecast::forecast(now, day_start, reset_unix, remaining, window_spend),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(limit: i64, estimate: i64, today: i64) -> State {
        let dir =
            std::env::temp_dir().join(format!("budget-state-never-created-{}", std::process::id()));
        let mut state = State {
            limit,
            estimate,
            today,
            ..State::default()
        };
        state.load(&dir, today).unwrap();
        state
    }

    #[test]
    fn admission_counts_spend_and_reservations_of_today_only() {
        let mut state = state(1_500_000, 150_000, 100);
        for i in 0..10 {
            assert!(state.admits(150_000), "reservation {i}");
            state.hold(
                &format!("r{i}"),
                Hold {
                    day: 100,
                    micros: 150_000,
                },
            );
        }
        assert!(!state.admits(150_000));
        state.hold(
            "r0",
            Hold {
                day: 100,
                micros: 150_000,
            },
        );
        assert_eq!(state.status(100.5 * 86_400.0).reserved, 1.5);
        state.roll(101.0 * 86_400.0);
        assert!(
            state.admits(150_000),
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
        let mut state = state(0, 1, 100);
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
        let mut state = state(1_000_000, 150_000, 20_780);
        state.book(20_780).ledger.charge(300_000, 1_000_000);
        state.hold(
            "r",
            Hold {
                day: 20_780,
                micros: 150_000,
            },
        );
        let status = state.status(20_780.5 * 86_400.0);
        assert_eq!(status.date, "2026-11-23");
        assert_eq!(
            (status.today_spend, status.reserved, status.remaining),
            (0.3, 0.15, 0.55)
        );
        assert_eq!((status.cycles_affordable, status.spend_events), (3, 1));
        assert_eq!(status.reset_at(), "2026-11-24T00:00:00.000Z");
        assert_eq!(status.reset_unix, 20_781.0 * 86_400.0);
        assert_eq!(
            (status.run_estimate, status.run_estimate_mode),
            (0.15, "fixed")
        );
        // The charge above is not in the rate: it has no time.
        assert_eq!(status.forecast.rate_per_hour, 0.0);
        state.book(20_780).ledger.charge(5_000_000, 1_000_000);
        let status = state.status(20_780.5 * 86_400.0);
        assert_eq!((status.remaining, status.cycles_affordable), (0.0, 0));
    }
}
