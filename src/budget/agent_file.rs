//! The research agent's budget file (`<budget dir>/YYYY-MM-DD.json`), counted once when a server
//! takes over from it mid-day. Each entry becomes one `import` ledger line naming its operation
//! (`operation_id`, or its index), so it was counted iff the day's ledger holds that operation.

use std::collections::HashSet;
use std::fs;
use std::io::ErrorKind;
use std::path::PathBuf;

use serde_json::Value;

use crate::error::Error;
use crate::time;

use super::ledger::{self, Entry, OpKey, IMPORT_KIND};
use super::money::{self, dollars, MAX_AMOUNT, MICROS_PER_DOLLAR};
use super::record::OPERATION_ID_RULE;
use super::report::Recorded;
use super::Budget;

#[derive(Debug, PartialEq)]
pub(crate) struct AgentSpend {
    pub micros: i64,
    pub operation_id: Option<String>,
    /// `timestamp` in Unix seconds, when it is RFC 3339 text.
    pub ts: Option<f64>,
}

/// Reads the file of `day`: its `total_spend` (dollars, unbounded: only compared) and entries.
/// The error names the wrong member (`spend[2].amount`). `date` and `spend` are required, as the
/// research agent always writes them; others are not checked.
pub(crate) fn parse(bytes: &[u8], day: i64) -> Result<(Option<f64>, Vec<AgentSpend>), String> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
    let doc = value.as_object().ok_or("not a JSON object")?;
    let date = doc.get("date").ok_or(r#"no "date""#)?;
    let date = date
        .as_str()
        .ok_or(r#""date" must be a YYYY-MM-DD string"#)?;
    let d = ledger::parse_date(date)
        .ok_or_else(|| format!(r#""date" must be a YYYY-MM-DD date, not {date:?}"#))?;
    if d != day {
        let named = time::date_string(day);
        let why = format!(r#""date" is {date}, but the file is named for {named}"#);
        return Err(why);
    }
    let spend = doc.get("spend").ok_or(r#"no "spend" list"#)?;
    let spend = spend.as_array().ok_or(r#""spend" must be a list"#)?;
    let total_spend = match doc.get("total_spend") {
        None | Some(Value::Null) => None,
        Some(total) => Some(
            total
                .as_f64()
                .filter(|t| t.is_finite() && *t >= 0.0)
                .ok_or(r#""total_spend" must be a finite, non-negative number of dollars"#)?,
        ),
    };
    let entries: Vec<AgentSpend> = spend
        .iter()
        .enumerate()
        .map(|(i, entry)| spend_entry(i, entry))
        .collect::<Result<_, _>>()?;
    // Bounding the sum as each amount keeps every sum of the import exact in micro-dollars.
    let most = money::to_micros(MAX_AMOUNT, "amount").unwrap_or(i64::MAX);
    let total = entries.iter().try_fold(0i64, |sum, e| {
        sum.checked_add(e.micros).filter(|s| *s <= most)
    });
    let why = || format!(r#"the amounts of "spend" add up to more than {MAX_AMOUNT} dollars"#);
    total.ok_or_else(why)?;
    Ok((total_spend, entries))
}

fn spend_entry(i: usize, entry: &Value) -> Result<AgentSpend, String> {
    let entry = entry
        .as_object()
        .ok_or_else(|| format!("spend[{i}] must be an object"))?;
    let amount = entry
        .get("amount")
        .ok_or_else(|| format!(r#"spend[{i}] has no "amount""#))?;
    let micros = amount
        .as_f64()
        .and_then(|a| money::to_micros(a, "amount").ok());
    let rule = "must be a finite, non-negative number of dollars up to";
    let micros = micros.ok_or_else(|| format!("spend[{i}].amount {rule} {MAX_AMOUNT}"))?;
    let operation_id = match entry.get("operation_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(id)) if crate::runs::valid_run_id(id) => Some(id.clone()),
        Some(_) => return Err(format!("spend[{i}].operation_id {OPERATION_ID_RULE}")),
    };
    let ts = entry.get("timestamp").and_then(Value::as_str);
    Ok(AgentSpend {
        micros,
        operation_id,
        ts: ts.and_then(time::parse_rfc3339),
    })
}

/// What counting the research agent's file did (see `docs/budget.md`).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Imported {
    pub file: PathBuf,
    pub entries: usize,
    pub counted: usize,
    pub already_recorded: usize,
    /// Entries repeating the `operation_id` of an earlier entry.
    pub repeated: usize,
    pub total_spend: Option<f64>,
    pub entries_total: f64,
    /// Whether `total_spend` differs from `entries_total` by more than rounding.
    pub total_disagrees: bool,
    pub recorded: Recorded,
}

impl Budget {
    /// Counts the entries of today's research agent file (append-only) the ledger does not hold
    /// yet; `None` without a file.
    pub(crate) fn import_agent_file(&self) -> Result<Option<Imported>, Error> {
        let day = self.lock().0.today;
        let name = format!("{}.json", time::date_string(day));
        let path = self.dir.join(&name);
        let what = || format!("research agent budget file {}", path.display());
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::Storage(format!("{}: {e}", what()))),
        };
        let (total_spend, listed) =
            parse(&bytes, day).map_err(|why| Error::invalid(&what(), why))?;
        let entries = listed.iter().enumerate().map(|(i, e)| Entry {
            operation_id: e.operation_id.as_deref(),
            source: Some((name.as_str(), i as u64)),
            ..Entry::new(IMPORT_KIND, e.micros, 0.0)
        });
        let entries: Vec<Entry> = entries.collect();
        // Each has a key: its operation id, or its index.
        let keys: Vec<OpKey> = entries.iter().filter_map(Entry::key).collect();
        // Appends of these operations in flight settle first, so each is counted by one side.
        let (mut state, now) = self.lock_settled(Some(day), &keys);
        state.load(&self.dir, day)?;
        // The entries to count, and how many were already recorded or repeated.
        let mut seen = HashSet::new();
        let (mut spends, mut already_recorded, mut repeated) = (Vec::new(), 0, 0);
        for ((entry, spend), key) in entries.into_iter().zip(&listed).zip(&keys) {
            if !seen.insert(key) {
                repeated += 1;
            } else if state.recorded(day, key).is_some() {
                already_recorded += 1;
            } else {
                spends.push(Entry {
                    ts: spend.ts.unwrap_or(now),
                    ..entry
                });
            }
        }
        let (alerts, status) = if spends.is_empty() {
            state.prune();
            (Vec::new(), state.status(now))
        } else {
            self.record_spends(state, (day, now), &spends)?
        };
        let counted: i64 = spends.iter().map(|s| s.micros).sum();
        // `parse` bounds the sum, so it cannot overflow.
        let entries_micros: i64 = listed.iter().map(|e| e.micros).sum();
        // Each amount rounds to whole micro-dollars by at most a half.
        let slack = i64::try_from(listed.len()).unwrap_or(i64::MAX).max(1);
        let total_disagrees = total_spend.is_some_and(|t| {
            (t * f64::from(MICROS_PER_DOLLAR) - entries_micros as f64).abs() > slack as f64
        });
        Ok(Some(Imported {
            file: path,
            entries: listed.len(),
            counted: spends.len(),
            already_recorded,
            repeated,
            total_spend,
            entries_total: dollars(entries_micros),
            total_disagrees,
            recorded: Recorded::new(counted, day, alerts, status),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{Fixture, DAY};
    use super::super::{SpendInput, Spent};
    use super::*;

    /// A file of [`DAY`] as the research agent writes it: indented, with
    /// Python's `isoformat()` timestamps and float sums.
    fn agent_file(entries: &[(f64, Option<&str>)]) -> String {
        let spend: Vec<Value> = entries
            .iter()
            .map(|(amount, id)| {
                let mut e = serde_json::json!({
                    "amount": amount,
                    "timestamp": "2026-11-23T09:00:00.250000+00:00",
                });
                if let Some(id) = id {
                    e["operation_id"] = serde_json::json!(id);
                }
                e
            })
            .collect();
        let total: f64 = entries.iter().map(|(a, _)| a).sum();
        let doc = serde_json::json!({
            "date": "2026-11-23", "limit": 5.0, "spend": spend, "total_spend": total,
        });
        serde_json::to_string_pretty(&doc).unwrap()
    }

    fn err(text: &str) -> String {
        parse(text.as_bytes(), DAY).unwrap_err()
    }

    #[test]
    fn the_research_agents_file_parses() {
        let text = agent_file(&[(0.15, Some("op_a")), (4.75, None)]);
        let file = parse(text.as_bytes(), DAY).unwrap();
        let ts = time::parse_rfc3339("2026-11-23T09:00:00.25Z");
        assert_eq!(
            file,
            (
                Some(4.9),
                vec![
                    AgentSpend {
                        micros: 150_000,
                        operation_id: Some("op_a".into()),
                        ts,
                    },
                    AgentSpend {
                        micros: 4_750_000,
                        operation_id: None,
                        ts,
                    },
                ],
            )
        );
        let minimal = r#"{"date":"2026-11-23","spend":[{"amount":1,"operation_id":null,"timestamp":"2026-11-23T09:00:00.123456"}],"extra":[]}"#;
        let (total_spend, entries) = parse(minimal.as_bytes(), DAY).unwrap();
        assert_eq!(total_spend, None);
        assert_eq!(
            (entries[0].micros, entries[0].ts),
            (1_000_000, None),
            "a timestamp without an offset is not RFC 3339, and not an error"
        );
        let empty = parse(
            br#"{"date":"2026-11-23","spend":[],"total_spend":0.0}"#,
            DAY,
        );
        assert_eq!(empty.unwrap().1, vec![]);
    }

    #[test]
    fn what_is_wrong_with_a_file_is_named() {
        // Cut short, as a crash while the research agent rewrites it leaves it.
        let cut = &agent_file(&[(0.15, Some("op_a"))])[..40];
        assert_eq!(
            err(cut),
            "not JSON: EOF while parsing an object at line 3 column 14"
        );
        assert_eq!(err("[]"), "not a JSON object");
        assert_eq!(err(r#"{"spend":[]}"#), r#"no "date""#);
        assert_eq!(
            err(r#"{"date":20780,"spend":[]}"#),
            r#""date" must be a YYYY-MM-DD string"#
        );
        assert_eq!(
            err(r#"{"date":"2026-11-31","spend":[]}"#),
            r#""date" must be a YYYY-MM-DD date, not "2026-11-31""#
        );
        assert_eq!(
            err(r#"{"date":"2026-11-22","spend":[]}"#),
            r#""date" is 2026-11-22, but the file is named for 2026-11-23"#
        );
        assert_eq!(err(r#"{"date":"2026-11-23"}"#), r#"no "spend" list"#);
        assert_eq!(
            err(r#"{"date":"2026-11-23","spend":{}}"#),
            r#""spend" must be a list"#
        );
        let entries = |spend: &str| err(&format!(r#"{{"date":"2026-11-23","spend":[{spend}]}}"#));
        assert_eq!(entries(r#"{"amount":1},3"#), "spend[1] must be an object");
        assert_eq!(
            entries(r#"{"operation_id":"op"}"#),
            r#"spend[0] has no "amount""#
        );
        for bad in [r#""1""#, "-0.5", "1e10", "null"] {
            let e = entries(&format!(r#"{{"amount":{bad}}}"#));
            assert!(
                e.starts_with("spend[0].amount must be a finite, non-negative"),
                "{bad}: {e}"
            );
        }
        for bad in [r#""""#, r#""op 1""#, "7", &format!("{:?}", "x".repeat(129))] {
            let e = entries(&format!(r#"{{"amount":1,"operation_id":{bad}}}"#));
            assert_eq!(
                e,
                format!("spend[0].operation_id {OPERATION_ID_RULE}"),
                "{bad}"
            );
        }
        let total = err(r#"{"date":"2026-11-23","spend":[],"total_spend":"4.90"}"#);
        assert!(total.starts_with(r#""total_spend" must be"#), "{total}");
    }

    #[test]
    fn a_file_is_counted_once_across_reopens() {
        let f = Fixture::new("import-once");
        let budget = f.open(5.0, 0.15);
        assert_eq!(budget.import_agent_file(), Ok(None), "no file");
        let amounts = [0.15; 30];
        let mut entries: Vec<(f64, Option<&str>)> = Vec::new();
        let ids: Vec<String> = (0..30).map(|i| format!("op_{i}")).collect();
        for (a, id) in amounts.iter().zip(&ids) {
            entries.push((*a, Some(id)));
        }
        entries.push((0.40, None));
        std::fs::write(f.dir.join("2026-11-23.json"), agent_file(&entries)).unwrap();
        let imported = budget.import_agent_file().unwrap().unwrap();
        assert_eq!(
            (
                imported.entries,
                imported.counted,
                imported.already_recorded
            ),
            (31, 31, 0)
        );
        assert_eq!(imported.recorded.amount, 4.9);
        assert_eq!(imported.recorded.alerts, vec![50, 80]);
        assert!(!imported.total_disagrees, "{imported:?}");
        assert_eq!(imported.recorded.status.today_spend, 4.9);
        assert!(
            budget.reserve("r", None).is_err(),
            "4.90 + 0.15 is past 5.00"
        );
        assert_eq!(budget.import_agent_file().unwrap().unwrap().counted, 0);
        drop(budget);
        for _ in 0..2 {
            let budget = f.open(5.0, 0.15);
            let again = budget.import_agent_file().unwrap().unwrap();
            assert_eq!((again.counted, again.already_recorded), (0, 31));
            let s = budget.status();
            assert_eq!((s.today_spend, s.spend_events), (4.9, 31));
        }
        let ledger = std::fs::read_to_string(f.file(DAY)).unwrap();
        let first: Value = serde_json::from_str(ledger.lines().next().unwrap()).unwrap();
        assert_eq!(first["kind"], "import");
        assert_eq!(first["operation_id"], "op_0");
        assert_eq!(first["source"], "2026-11-23.json");
        assert_eq!(first["ts"], "2026-11-23T09:00:00.250Z");
        assert_eq!(ledger.matches(r#""alert":"#).count(), 2);
    }

    #[test]
    fn an_import_cut_short_by_a_crash_counts_the_rest_once() {
        let f = Fixture::new("import-crash");
        let file = agent_file(&[(1.0, Some("op_a")), (0.5, None), (0.25, Some("op_c"))]);
        let budget = f.open(100.0, 0.15);
        std::fs::write(f.dir.join("2026-11-23.json"), &file).unwrap();
        budget.import_agent_file().unwrap();
        drop(budget);
        // Keep only the first line, as a crash before the rest were synced can.
        let ledger = std::fs::read_to_string(f.file(DAY)).unwrap();
        let first = ledger.split_inclusive('\n').next().unwrap().to_string();
        std::fs::write(f.file(DAY), first + r#"{"ts":"2026-11-23T09:"#).unwrap();
        let budget = f.open(100.0, 0.15);
        assert_eq!(budget.status().today_spend, 1.0);
        let rest = budget.import_agent_file().unwrap().unwrap();
        assert_eq!((rest.counted, rest.already_recorded), (2, 1));
        assert_eq!(rest.recorded.amount, 0.75);
        drop(budget);
        let budget = f.open(100.0, 0.15);
        assert_eq!(budget.import_agent_file().unwrap().unwrap().counted, 0);
        assert_eq!(budget.status().today_spend, 1.75);
    }

    #[test]
    fn operations_count_once_between_direct_spends_and_the_file() {
        let f = Fixture::new("import-ops");
        let budget = f.open(100.0, 0.15);
        let spent = budget
            .spend_once(Some("op_a"), SpendInput::Amount(1.0), None, None)
            .unwrap();
        assert!(matches!(spent, Spent::New(_)));
        let file = agent_file(&[
            (1.0, Some("op_a")),
            (0.5, Some("op_b")),
            (0.5, Some("op_b")),
            (0.25, None),
        ]);
        std::fs::write(f.dir.join("2026-11-23.json"), file).unwrap();
        let imported = budget.import_agent_file().unwrap().unwrap();
        assert_eq!(
            (
                imported.counted,
                imported.already_recorded,
                imported.repeated
            ),
            (2, 1, 1)
        );
        assert_eq!(imported.recorded.amount, 0.75);
        assert_eq!(imported.entries_total, 2.25);
        assert_eq!(budget.status().today_spend, 1.75);
        let repeat = budget.spend_once(Some("op_b"), SpendInput::Amount(9.0), None, None);
        let Ok(Spent::Repeat(r)) = repeat else {
            panic!("{repeat:?}")
        };
        assert_eq!((r.amount, r.status.today_spend), (0.5, 1.75));
    }

    #[test]
    fn total_spend_that_is_not_the_entries_sum_is_reported_and_the_entries_count() {
        let f = Fixture::new("import-total");
        let budget = f.open(100.0, 0.15);
        let text = r#"{"date":"2026-11-23","limit":5.0,"total_spend":4.9,
            "spend":[{"amount":0.1,"operation_id":"op_a"},{"amount":0.2,"operation_id":"op_b"}]}"#;
        std::fs::write(f.dir.join("2026-11-23.json"), text).unwrap();
        let imported = budget.import_agent_file().unwrap().unwrap();
        assert!(imported.total_disagrees);
        assert_eq!(
            (imported.total_spend, imported.entries_total),
            (Some(4.9), 0.3)
        );
        assert_eq!(budget.status().today_spend, 0.3);
        // Python's float sum of the same amounts is not a disagreement.
        let text = text.replace("4.9", "0.30000000000000004");
        let f = Fixture::new("import-float-sum");
        let budget = f.open(100.0, 0.15);
        std::fs::write(f.dir.join("2026-11-23.json"), text).unwrap();
        assert!(!budget.import_agent_file().unwrap().unwrap().total_disagrees);
    }

    #[test]
    fn other_days_files_are_left_alone_and_a_bad_file_counts_nothing() {
        let f = Fixture::new("import-days");
        let budget = f.open(100.0, 0.15);
        let other = agent_file(&[(1.0, Some("op_a"))]).replace("2026-11-23", "2026-11-22");
        std::fs::write(f.dir.join("2026-11-22.json"), &other).unwrap();
        std::fs::write(f.dir.join("2026-11-24.json"), "not json").unwrap();
        assert_eq!(budget.import_agent_file(), Ok(None));
        let path = f.dir.join("2026-11-23.json");
        std::fs::write(&path, &other).unwrap();
        let Err(Error::Invalid { field, message }) = budget.import_agent_file() else {
            panic!("a file of another day under today's name is refused")
        };
        assert_eq!(
            field,
            format!("research agent budget file {}", path.display())
        );
        assert!(message.contains("named for 2026-11-23"), "{message}");
        assert_eq!(budget.status().today_spend, 0.0);
        assert!(!f.file(DAY).exists(), "nothing written");
        // The day rolls: tomorrow's file is read by the next import.
        f.at(DAY + 1, 60.0);
        let Err(Error::Invalid { message, .. }) = budget.import_agent_file() else {
            panic!("tomorrow's file is not JSON")
        };
        assert!(
            message.starts_with("not JSON: expected ident at line 1 column 2"),
            "{message}"
        );
    }

    #[test]
    fn a_file_cannot_add_up_to_more_than_the_largest_amount() {
        let at_most = agent_file(&[(MAX_AMOUNT / 2.0, None), (MAX_AMOUNT / 2.0, None)]);
        assert_eq!(parse(at_most.as_bytes(), DAY).unwrap().1.len(), 2);
        let past = agent_file(&vec![(MAX_AMOUNT, None); 10_000]);
        assert_eq!(
            err(&past),
            r#"the amounts of "spend" add up to more than 1000000000 dollars"#
        );
        let text = r#"{"date":"2026-11-23","spend":[],"total_spend":1e300}"#;
        assert_eq!(parse(text.as_bytes(), DAY).unwrap().0, Some(1e300));
    }

    #[test]
    fn a_failed_ledger_write_counts_nothing_and_the_next_import_counts_it() {
        let f = Fixture::new("import-unwritable");
        let budget = f.open(100.0, 0.15);
        std::fs::write(
            f.dir.join("2026-11-23.json"),
            agent_file(&[(1.0, Some("op_a")), (2.0, None)]),
        )
        .unwrap();
        std::fs::create_dir(f.file(DAY)).unwrap();
        assert!(matches!(budget.import_agent_file(), Err(Error::Storage(_))));
        assert_eq!(budget.status().today_spend, 0.0);
        std::fs::remove_dir(f.file(DAY)).unwrap();
        let imported = budget.import_agent_file().unwrap().unwrap();
        assert_eq!((imported.counted, imported.recorded.amount), (2, 3.0));
        assert_eq!(budget.status().today_spend, 3.0);
    }
}
