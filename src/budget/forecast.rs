//! The budget forecast: today's recent spend rate, and when today's budget runs out at it.

use std::collections::VecDeque;

use super::money::dollars;

pub(crate) const RATE_WINDOW_SECONDS: f64 = 3_600.0;
/// The shortest span a rate is taken over, so the first spend after midnight is no huge rate.
pub(crate) const MIN_RATE_SPAN_SECONDS: f64 = 300.0;

/// Spends charged to one day, by ledger time, for the rate window.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Recent {
    /// `(unix seconds, micro-dollars)` in ledger order, a little out of time order: the front
    /// drops once out of the window, the rest is checked.
    spends: VecDeque<(f64, i64)>,
}

impl Recent {
    pub fn push(&mut self, at: f64, micros: i64) {
        self.spends.push_back((at, micros));
    }

    pub fn remove(&mut self, at: f64, micros: i64) {
        let same = |s: &(f64, i64)| s.0.to_bits() == at.to_bits() && s.1 == micros;
        if let Some(i) = self.spends.iter().rposition(same) {
            self.spends.remove(i);
        }
    }

    pub fn merge(&mut self, other: Recent) {
        self.spends.extend(other.spends);
    }

    /// The micro-dollars spent after `since`, dropping older ones in front.
    pub fn since(&mut self, since: f64) -> i64 {
        while self.spends.front().is_some_and(|s| s.0 <= since) {
            self.spends.pop_front();
        }
        self.spends
            .iter()
            .filter(|s| s.0 > since)
            .map(|s| s.1)
            .sum()
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Forecast {
    pub rate_per_hour: f64,
    /// When the remaining budget runs out, if before the reset.
    pub exhausts_unix: Option<f64>,
    pub exhausted_in_seconds: f64,
}

/// The forecast at `now`, with `window_spend` spent over the last [`RATE_WINDOW_SECONDS`].
pub(crate) fn forecast(
    now: f64,
    day_start: f64,
    reset: f64,
    remaining: i64,
    window_spend: i64,
) -> Forecast {
    let span = (now - day_start).clamp(MIN_RATE_SPAN_SECONDS, RATE_WINDOW_SECONDS);
    let per_second = dollars(window_spend.max(0)) / span;
    let remaining = dollars(remaining.max(0));
    let in_seconds = if remaining == 0.0 {
        0.0
    } else if per_second > 0.0 {
        remaining / per_second
    } else {
        f64::INFINITY
    };
    let exhausts_unix = Some(now + in_seconds).filter(|&at| at < reset);
    Forecast {
        rate_per_hour: per_second * 3_600.0,
        exhausts_unix,
        exhausted_in_seconds: exhausts_unix.map_or(f64::INFINITY, |_| in_seconds),
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{Fixture, DAY};
    use super::super::{Clock, SpendInput};
    use super::*;

    const MIDNIGHT: f64 = DAY as f64 * 86_400.0;

    #[test]
    fn no_spend_lasts_the_day_and_nothing_left_is_now() {
        let f = forecast(
            MIDNIGHT + 3_600.0,
            MIDNIGHT,
            MIDNIGHT + 86_400.0,
            5_000_000,
            0,
        );
        assert_eq!(
            (f.rate_per_hour, f.exhausts_unix, f.exhausted_in_seconds),
            (0.0, None, f64::INFINITY)
        );
        let now = MIDNIGHT + 7_200.0;
        let f = forecast(now, MIDNIGHT, MIDNIGHT + 86_400.0, 0, 0);
        assert_eq!((f.exhausts_unix, f.exhausted_in_seconds), (Some(now), 0.0));
    }

    #[test]
    fn the_rate_is_the_last_hour_or_since_midnight_but_at_least_five_minutes() {
        let reset = MIDNIGHT + 86_400.0;
        // $6 in the last hour at noon: $6 an hour, $60 left lasts 10 hours.
        let f = forecast(MIDNIGHT + 43_200.0, MIDNIGHT, reset, 60_000_000, 6_000_000);
        assert!((f.rate_per_hour - 6.0).abs() < 1e-9, "{f:?}");
        assert!((f.exhausted_in_seconds - 36_000.0).abs() < 1e-6, "{f:?}");
        // $1 in the first 30 minutes: $2 an hour.
        let f = forecast(MIDNIGHT + 1_800.0, MIDNIGHT, reset, 60_000_000, 1_000_000);
        assert!((f.rate_per_hour - 2.0).abs() < 1e-9, "{f:?}");
        // $1 in the first 10 seconds counts as over 5 minutes: $12 an hour.
        let f = forecast(MIDNIGHT + 10.0, MIDNIGHT, reset, 60_000_000, 1_000_000);
        assert!((f.rate_per_hour - 12.0).abs() < 1e-9, "{f:?}");
        // Not before the reset: 30 hours at $2 an hour.
        let f = forecast(MIDNIGHT + 43_200.0, MIDNIGHT, reset, 60_000_000, 2_000_000);
        assert_eq!(
            (f.exhausts_unix, f.exhausted_in_seconds),
            (None, f64::INFINITY)
        );
    }

    #[test]
    fn the_window_drops_what_is_older_than_the_hour() {
        let mut r = Recent::default();
        for (at, micros) in [(10.0, 1), (20.0, 2), (3_650.0, 4), (15.0, 8)] {
            r.push(at, micros);
        }
        r.remove(20.0, 3);
        r.remove(20.0, 2);
        assert_eq!(r.since(0.0), 13);
        // 10 is dropped from the front; 15, out of place, stays but is not counted.
        assert_eq!(r.since(16.0), 4);
        assert_eq!(r.spends.len(), 2);
        let mut other = Recent::default();
        other.push(3_700.0, 16);
        r.merge(other);
        assert_eq!(r.since(3_600.0), 20);
    }

    /// A steady synthetic day against a $100 limit: a spend every 5
    /// minutes from midnight, of $0.25, $0.55, $0.35 and $0.45 in turn
    /// ($4.80 an hour), so the limit is reached with the 250th spend, at
    /// 20:50. Every 47 minutes from 01:00 the forecast is compared with the
    /// moment the spend then actually exhausts the budget; the worst error,
    /// as a share of the time that was left, is printed as
    /// `forecast_error_percent` (`scripts/budget_figures.sh` quotes it)
    /// and must stay under 10%.
    #[test]
    fn a_steady_spend_is_forecast_within_ten_percent() {
        let f = Fixture::new("forecast-accuracy");
        f.at(DAY, 0.0);
        let budget = f.open(100.0, 0.15);
        let amounts = [0.25, 0.55, 0.35, 0.45];
        let mut forecasts = Vec::new();
        let mut exhausted_at = None;
        for minute in 1..=1_400 {
            let t = f64::from(minute) * 60.0;
            f.at(DAY, t);
            if minute % 5 == 0 {
                let amount = amounts[(minute / 5 - 1) as usize % amounts.len()];
                budget
                    .spend(SpendInput::Amount(amount), None, None)
                    .unwrap();
            }
            let s = budget.status();
            if s.remaining == 0.0 && exhausted_at.is_none() {
                exhausted_at = Some(MIDNIGHT + t);
            }
            if minute >= 60 && minute % 47 == 0 && s.remaining > 0.0 {
                let at = s.forecast.exhausts_unix;
                let at = at.expect("a steady spend of $4.80 an hour runs out today");
                forecasts.push((MIDNIGHT + t, at));
            }
        }
        let actual = exhausted_at.expect("the steady spend exhausts the budget");
        assert_eq!(actual, MIDNIGHT + 250.0 * 300.0);
        assert!(forecasts.len() >= 20, "{forecasts:?}");
        let worst = forecasts
            .iter()
            .map(|(now, at)| (at - actual).abs() / (actual - now) * 100.0)
            .fold(0.0, f64::max);
        println!("forecast_error_percent {worst:.2} %");
        assert!(worst < 10.0, "{worst}% off: {forecasts:?}");
        let now = f.clock.now_unix();
        assert_eq!(
            budget.status().forecast.exhausts_unix,
            Some(now),
            "exhausted now"
        );
    }
}
