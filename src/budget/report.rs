//! What the budget reports (status, refusal, recorded spend, today's burn-down) and their JSON.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

use serde_json::{json, Value};

use crate::error::{Error, ExhaustedAnswer};
use crate::journal;

use super::forecast::Forecast;
use super::ledger;
use super::money::dollars;
use super::Budget;

/// The budget of the current UTC day, in dollars.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct BudgetStatus {
    pub date: String,
    pub daily_limit: f64,
    pub today_spend: f64,
    pub reserved: f64,
    pub remaining: f64,
    pub cycles_affordable: u64,
    pub spend_events: u64,
    pub reset_unix: f64,
    pub run_estimate: f64,
    pub run_estimate_mode: &'static str,
    pub forecast: Forecast,
}

impl BudgetStatus {
    /// When the day's budget resets, in RFC 3339.
    pub fn reset_at(&self) -> String {
        crate::time::rfc3339(self.reset_unix)
    }

    pub fn to_json(&self) -> Value {
        let exhausts_at = self.forecast.exhausts_unix.map(crate::time::rfc3339);
        json!({
            "date": self.date,
            "daily_limit": self.daily_limit,
            "today_spend": self.today_spend,
            "reserved": self.reserved,
            "remaining": self.remaining,
            "cycles_affordable": self.cycles_affordable,
            "spend_events": self.spend_events,
            "reset_at": self.reset_at(),
            "reset_unix": self.reset_unix,
            "run_estimate": self.run_estimate,
            "run_estimate_mode": self.run_estimate_mode,
            "spend_rate_dollars_per_hour": self.forecast.rate_per_hour,
            "exhausts_at": exhausts_at,
        })
    }
}

/// The answer to a start the day's budget cannot cover, `run_estimate` (dollars) not fitting at
/// `now`. Its message opens with "Daily budget exhausted:", the words the research agent's clients
/// look for, then says why: money can be left that is still less than one run's estimate.
pub(crate) fn refusal(s: &BudgetStatus, run_estimate: f64, now: f64) -> ExhaustedAnswer {
    let left = if s.remaining > 0.0 {
        format!("only {} of", cents(s.remaining))
    } else {
        "nothing is left of".to_string()
    };
    let message = format!(
        "Daily budget exhausted: a run reserves its estimate of {} when it starts, and {left} today's {} limit ({} spent, {} reserved by running runs); the budget resets at {}",
        cents(run_estimate),
        cents(s.daily_limit),
        cents(s.today_spend),
        cents(s.reserved),
        s.reset_at(),
    );
    let mut body = json!({
        "triggered": false,
        "reason": "budget_exhausted",
        "message": message,
        "run_estimate": run_estimate,
    });
    let keys = "daily_limit today_spend reserved remaining reset_at reset_unix";
    copy(&mut body, &s.to_json(), keys);
    ExhaustedAnswer {
        message,
        body,
        // Seconds to the reset, at least 1, for a `Retry-After` header.
        retry_after_seconds: ((s.reset_unix - now).ceil() as u64).max(1),
    }
}

/// A recorded spend: dollars, day charged (a run's start day), alerts newly reached, budget after.
#[derive(Clone, Debug, PartialEq)]
pub struct Recorded {
    pub(crate) amount: f64,
    pub(crate) day: String,
    pub(crate) alerts: Vec<u8>,
    pub(crate) status: BudgetStatus,
}

impl Recorded {
    pub(crate) fn new(micros: i64, day: i64, alerts: Vec<u8>, status: BudgetStatus) -> Recorded {
        Recorded {
            amount: dollars(micros),
            day: crate::time::date_string(day),
            alerts,
            status,
        }
    }

    pub(crate) fn to_json(&self) -> Value {
        json!({
            "amount": self.amount,
            "day": self.day,
            "alerts": self.alerts,
            "status": self.status.to_json(),
        })
    }
}

/// The outcome of a direct spend, whose operation today may have counted.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Spent {
    New(Recorded),
    /// Nothing recorded: the operation's first amount and today's budget.
    Repeat(Recorded),
}

/// Sets the members of `to` named in `keys` (space-separated) to those of `from`.
fn copy(to: &mut Value, from: &Value, keys: &str) {
    for key in keys.split(' ') {
        to[key] = from[key].clone();
    }
}

/// Dollars rounded to the cent (`$0.15`); `under $0.01` above zero, so money left never reads
/// `$0.00`.
fn cents(dollars: f64) -> String {
    let cents = (dollars * 100.0).round();
    if cents == 0.0 && dollars > 0.0 {
        return "under $0.01".to_string();
    }
    format!("${:.2}", cents / 100.0)
}

/// Today's ledger read so far, for a burn-down: the spend after each spend line. Read to the
/// durable length, each call only what was appended since, behind its own lock, not the budget's.
#[derive(Debug, Default)]
pub(crate) struct Tail {
    day: i64,
    /// Bytes of the file read so far: always at a line's end.
    read: u64,
    /// `(unix seconds, cumulative micro-dollars)` per spend line.
    points: Vec<(f64, i64)>,
}

impl Tail {
    /// Reads the ledger of `day` up to `durable` bytes.
    fn catch_up(&mut self, dir: &Path, day: i64, durable: u64) -> Result<(), Error> {
        if self.day != day {
            *self = Tail {
                day,
                ..Tail::default()
            };
        }
        if durable <= self.read {
            return Ok(());
        }
        let path = ledger::path(dir, day);
        let (values, read) =
            read_records(&path, self.read, durable).map_err(|e| ledger::storage(&path, e))?;
        let last = self.points.last().copied();
        let (mut at, mut total) = last.unwrap_or((day as f64 * 86_400.0, 0));
        for value in &values {
            if let Ok(Some(micros)) = ledger::spend_micros(value) {
                at = ledger::spend_time(value).unwrap_or(at);
                total = total.saturating_add(micros);
                self.points.push((at, total));
            }
        }
        self.read += read;
        Ok(())
    }
}

/// The records of the ledger at `path` in bytes `from..until`, and the bytes of their whole
/// lines. A damaged line is skipped: it kept the ledger from opening.
pub(crate) fn read_records(path: &Path, from: u64, until: u64) -> io::Result<(Vec<Value>, u64)> {
    let mut file = File::open(path)?;
    file.seek(SeekFrom::Start(from))?;
    let mut bytes = Vec::new();
    file.take(until - from).read_to_end(&mut bytes)?;
    let (lines, torn) = journal::scan(&bytes);
    let values = lines
        .iter()
        .filter_map(|l| serde_json::from_slice(l.record.as_ref().ok()?).ok())
        .collect();
    Ok((values, (bytes.len() - torn) as u64))
}

impl Budget {
    /// The body of `GET /api/v1/budget/history`; a line without a readable `ts` takes the time of
    /// the one before (midnight for the first).
    pub(crate) fn history(&self) -> Result<Value, Error> {
        let (mut state, now) = self.lock();
        let day = state.today;
        let durable = state.durable_len(day);
        let s = state.status(now).to_json();
        drop(state);
        // Tail's sections read a file and push points; nothing panics there.
        let mut tail = self.tail.lock().unwrap_or_else(|e| e.into_inner());
        tail.catch_up(&self.dir, day, durable)?;
        let points = tail.points.iter();
        let points: Vec<Value> = points
            .map(|&(t, m)| json!({"t": t, "spend": dollars(m)}))
            .collect();
        let mut body = json!({ "points": points });
        let keys = "date daily_limit reset_at reserved exhausts_at spend_rate_dollars_per_hour";
        copy(&mut body, &s, keys);
        Ok(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status() -> BudgetStatus {
        BudgetStatus {
            date: "2026-11-23".into(),
            daily_limit: 1.5,
            today_spend: 0.2,
            reserved: 1.2,
            remaining: 0.1,
            cycles_affordable: 0,
            spend_events: 3,
            reset_unix: 1_795_478_400.0,
            run_estimate: 0.15,
            run_estimate_mode: "auto",
            forecast: Forecast {
                rate_per_hour: 0.5,
                exhausts_unix: Some(1_795_478_400.0 - 3_600.0),
                exhausted_in_seconds: 720.0,
            },
        }
    }

    #[test]
    fn money_is_shown_in_cents() {
        assert_eq!(cents(1.5), "$1.50");
        assert_eq!(cents(0.0), "$0.00");
        assert_eq!(cents(0.1 + 0.2), "$0.30");
        assert_eq!(cents(41.797305), "$41.80");
        assert_eq!(cents(0.004), "under $0.01");
        assert_eq!(cents(0.005), "$0.01");
    }

    #[test]
    fn refusal_json_carries_the_budget() {
        let refusal = refusal(&status(), 0.15, 1_795_478_400.0 - 29.5);
        assert_eq!(refusal.retry_after_seconds, 30);
        let body = refusal.body;
        assert_eq!(body["triggered"], false);
        assert_eq!(body["reason"], "budget_exhausted");
        assert_eq!(body["daily_limit"], 1.5);
        assert_eq!(body["today_spend"], 0.2);
        assert_eq!(body["reserved"], 1.2);
        assert_eq!(body["remaining"], 0.1);
        assert_eq!(body["run_estimate"], 0.15);
        assert_eq!(body["reset_at"], "2026-11-24T00:00:00.000Z");
        assert_eq!(body["reset_unix"], 1_795_478_400.0);
        assert_eq!(
            body["message"],
            "Daily budget exhausted: a run reserves its estimate of $0.15 when it starts, \
             and only $0.10 of today's $1.50 limit ({spent} spent, $1.20 reserved by running \
             runs); the budget resets at 2026-11-24T00:00:00.000Z"
                .replace("{spent}", "$0.20")
        );
    }

    #[test]
    fn a_refusal_with_nothing_left_says_so_and_names_the_estimate() {
        let mut s = status();
        (s.today_spend, s.reserved, s.remaining, s.daily_limit) = (41.797305, 0.0, 0.0, 5.0);
        let message = refusal(&s, 0.15, 0.0).message;
        assert!(message.starts_with("Daily budget exhausted: "), "{message}");
        assert!(message.contains("estimate of $0.15"), "{message}");
        assert!(
            message.contains("nothing is left of today's $5.00 limit"),
            "{message}"
        );
        assert!(message.contains("$41.80 spent"), "{message}");
    }

    #[test]
    fn status_and_recorded_json() {
        let s = status().to_json();
        assert_eq!(s["date"], "2026-11-23");
        assert_eq!(
            (s["cycles_affordable"].as_u64(), s["spend_events"].as_u64()),
            (Some(0), Some(3))
        );
        assert_eq!(s["reset_unix"], 1_795_478_400.0);
        assert_eq!(s["reset_at"], "2026-11-24T00:00:00.000Z");
        assert_eq!(
            (&s["run_estimate"], &s["run_estimate_mode"]),
            (&json!(0.15), &json!("auto"))
        );
        assert_eq!(s["spend_rate_dollars_per_hour"], 0.5);
        assert_eq!(s["exhausts_at"], "2026-11-23T23:00:00.000Z");
        let mut lasting = status();
        lasting.forecast.exhausts_unix = None;
        assert_eq!(lasting.to_json()["exhausts_at"], Value::Null);
        let recorded = Recorded {
            amount: 0.15,
            day: "2026-11-22".into(),
            alerts: vec![50, 80],
            status: status(),
        };
        let r = recorded.to_json();
        assert_eq!(
            (r["amount"].as_f64(), r["day"].as_str()),
            (Some(0.15), Some("2026-11-22"))
        );
        assert_eq!(r["alerts"], json!([50, 80]));
        assert_eq!(r["status"]["remaining"], 0.1);
    }

    /// Checked when the tests compile: reports are send and sync.
    const _: () = {
        const fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<BudgetStatus>();
        assert_send_sync::<ExhaustedAnswer>();
        assert_send_sync::<Recorded>();
    };
}

#[cfg(test)]
mod history_tests {
    use super::super::tests::{Fixture, DAY};
    use super::super::SpendInput;
    use serde_json::json;

    #[test]
    fn points_are_the_ledgers_spend_lines_summed_in_order() {
        let f = Fixture::new("history");
        f.at(DAY, 3_600.0);
        let budget = f.open(1.0, 0.15);
        assert_eq!(budget.history().unwrap()["points"], json!([]));
        budget.spend(SpendInput::Amount(0.3), None, None).unwrap();
        f.at(DAY, 7_200.0);
        // Reaches 50%: an alert line follows it, which is not a point.
        budget.spend(SpendInput::Amount(0.25), None, None).unwrap();
        budget.reserve("r", None).unwrap();
        let json = budget.history().unwrap();
        let midnight = DAY as f64 * 86_400.0;
        assert_eq!(
            json["points"],
            json!([{"t": midnight + 3_600.0, "spend": 0.3}, {"t": midnight + 7_200.0, "spend": 0.55}])
        );
        assert_eq!(json["date"], "2026-11-23");
        assert_eq!(json["points"][1]["spend"], 0.55);
        assert_eq!(json["points"][1]["t"], midnight + 7_200.0);
        assert_eq!(json["reserved"], 0.15);
        assert_eq!(json["reset_at"], "2026-11-24T00:00:00.000Z");
        // The last hour holds the second spend only (the first is at its
        // very start): $0.25 an hour, so the $0.30 left lasts 1.2 hours.
        assert_eq!(json["spend_rate_dollars_per_hour"], 0.25);
        assert_eq!(json["exhausts_at"], "2026-11-23T03:12:00.000Z");
        // Read on from where the last call stopped.
        budget.spend(SpendInput::Amount(0.05), None, None).unwrap();
        let again = budget.history().unwrap();
        let points = again["points"].as_array().unwrap();
        assert_eq!(
            (points.len(), points.last()),
            (3, Some(&json!({"t": midnight + 7_200.0, "spend": 0.6})))
        );
        let ledger = std::fs::read_to_string(f.file(DAY)).unwrap();
        assert_eq!(ledger.lines().count(), 4, "three spends and one alert");
        f.at(DAY + 1, 10.0);
        assert_eq!(budget.history().unwrap()["points"], json!([]), "a new day");
    }
}
