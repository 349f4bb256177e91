//! Today's spend over the day, for a burn-down: one point per spend line of
//! today's ledger, with the day's spend after it. The points are read from
//! the file itself, up to the journal's durable length, so they are exactly
//! the ledger's lines; each call reads only what was appended since.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

use serde_json::{json, Value};

use crate::error::Error;
use crate::journal;

use super::ledger;
use super::money::dollars;
use super::Budget;

/// What has been read of one day's ledger, behind its own lock so that
/// reading the file never holds the budget's.
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
        let (values, read) = read_records(&path, self.read, durable)
            .map_err(|e| Error::Storage(format!("ledger {}: {e}", path.display())))?;
        let mut total = self.points.last().map_or(0, |p| p.1);
        let mut at = self.points.last().map_or(day as f64 * 86_400.0, |p| p.0);
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

/// The records of the ledger at `path` from byte `from` up to `until`, and
/// the bytes of the whole lines among them: a short read leaves the rest
/// for later. The budget refuses to open a ledger with a damaged line, so
/// one here is a line it already did not count, and is skipped.
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
    /// The body of `GET /api/v1/budget/history`: a point per spend line of
    /// today's ledger; a line without a readable `ts` takes the time of the
    /// line before it (midnight for the first).
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
        Ok(json!({
            "date": s["date"],
            "daily_limit": s["daily_limit"],
            "reset_at": s["reset_at"],
            "points": points,
            "reserved": s["reserved"],
            "exhausts_at": s["exhausts_at"],
            "spend_rate_dollars_per_hour": s["spend_rate_dollars_per_hour"],
        }))
    }
}

#[cfg(test)]
mod tests {
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
