//! The ledger: one append-only JSON Lines file per UTC day, `YYYY-MM-DD.jsonl`, of spends and
//! alert markers, appended through a [`Journal`] and [`CommitQueue`] that sync before they
//! acknowledge; a torn last line is cut at open, so a day's sum is that of its complete lines.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Display;
use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde_json::Value;

use crate::commit_queue::{CommitQueue, Sink};
use crate::error::Error;
use crate::journal::{self, Journal, Tail};
use crate::json_text::{push_key, push_value};
use crate::time;

use super::forecast::Recent;
use super::money::{self, Pricing, SpendInput};

/// The phase label of costs no phase was given for.
pub(crate) const UNKNOWN_PHASE: &str = "unknown";

/// The alert thresholds, in percent of the daily limit, lowest first.
pub const ALERT_THRESHOLDS: [u8; 3] = [50, 80, 100];

/// The `kind` of a ledger line imported from the research agent's file.
pub(crate) const IMPORT_KIND: &str = "import";

/// What a day counts once: an operation id, or an id-less entry's index in that day's agent file.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum OpKey {
    Id(Box<str>),
    Position(u64),
}

/// A day's ledger summed: micro-dollars, spend lines, bit `i` of `alerts` per threshold fired,
/// each counted operation's first micro-dollars, its spends by `ts`.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Summed {
    pub spent: i64,
    pub events: u64,
    alerts: u8,
    pub operations: HashMap<OpKey, i64>,
    pub recent: Recent,
}

impl Summed {
    fn add(&mut self, micros: i64) {
        self.spent = self.spent.saturating_add(micros);
        self.events += 1;
    }

    /// Counts a spend and returns the thresholds it newly fires.
    pub fn charge(&mut self, micros: i64, limit: i64) -> Vec<u8> {
        self.add(micros);
        let mut fired = Vec::new();
        for (i, &threshold) in ALERT_THRESHOLDS.iter().enumerate() {
            let reached = i128::from(self.spent) * 100 >= i128::from(limit) * i128::from(threshold);
            if self.alerts & (1 << i) == 0 && self.spent > 0 && reached {
                self.alerts |= 1 << i;
                fired.push(threshold);
            }
        }
        fired
    }

    /// Undoes a [`Summed::charge`] whose lines never became durable.
    pub fn uncharge(&mut self, micros: i64, fired: &[u8]) {
        self.spent = self.spent.saturating_sub(micros);
        self.events -= 1;
        for (i, threshold) in ALERT_THRESHOLDS.iter().enumerate() {
            if fired.contains(threshold) {
                self.alerts &= !(1 << i);
            }
        }
    }

    /// Adds one ledger line: a spend or an alert marker.
    fn apply(&mut self, record: &[u8]) -> Result<(), String> {
        let Some((value, micros)) = read_line(record)? else {
            return Ok(());
        };
        let Some(micros) = micros else {
            let alert = &value["alert"];
            let at = ALERT_THRESHOLDS
                .iter()
                .position(|&t| alert.as_u64() == Some(t.into()));
            let i = at.ok_or_else(|| format!("unknown alert threshold {alert}"))?;
            self.alerts |= 1 << i;
            return Ok(());
        };
        self.add(micros);
        if let Some(at) = spend_time(&value) {
            self.recent.push(at, micros);
        }
        let key = match value.get("operation_id").and_then(Value::as_str) {
            Some(id) => Some(OpKey::Id(id.into())),
            None if value["kind"] == IMPORT_KIND => {
                value["source_index"].as_u64().map(OpKey::Position)
            }
            None => None,
        };
        if let Some(key) = key {
            // Held twice, an operation's first amount is reported for repeats.
            self.operations.entry(key).or_insert(micros);
        }
        Ok(())
    }

    /// Adds what a file holds to the book of the same day.
    pub fn merge(&mut self, other: Summed) {
        self.spent = self.spent.saturating_add(other.spent);
        self.events += other.events;
        self.alerts |= other.alerts;
        self.recent.merge(other.recent);
        for (key, micros) in other.operations {
            self.operations.entry(key).or_insert(micros);
        }
    }
}

/// What every ledger of a directory adds up to: ledgers are never pruned, so a start derives
/// `agent_budget_spend_total`, `agent_cost_dollars_total` and `budget_alert` counts from them.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Totals {
    pub spent: i64,
    /// By phase label, split as the live counter splits them.
    pub phases: BTreeMap<String, i64>,
    pub alerts: u64,
}

impl Totals {
    fn add(&mut self, record: &[u8]) -> Result<(), String> {
        let Some((micros, phase, phases)) = quick_spend(record) else {
            return self.add_parsed(record);
        };
        self.count(micros, &phases, phase);
        Ok(())
    }

    /// [`Totals::add`] through a JSON tree, for any line.
    fn add_parsed(&mut self, record: &[u8]) -> Result<(), String> {
        let Some((value, micros)) = read_line(record)? else {
            return Ok(());
        };
        let Some(micros) = micros else {
            self.alerts += 1;
            return Ok(());
        };
        // A settled run's phases, in dollars as the line prints them.
        let phases: Vec<(String, i64)> = value["phases"].as_object().map_or_else(Vec::new, |m| {
            m.iter()
                .filter_map(|(p, v)| Some((p.clone(), money::to_micros(v.as_f64()?, "").ok()?)))
                .collect()
        });
        self.count(micros, &phases, value["phase"].as_str());
        Ok(())
    }

    fn count(&mut self, micros: i64, phases: &[(String, i64)], phase: Option<&str>) {
        self.spent = self.spent.saturating_add(micros);
        split_phases(phases, phase, micros, |label, m| {
            if let Some(sum) = self.phases.get_mut(label) {
                *sum = sum.saturating_add(m);
            } else {
                self.phases.insert(label.to_string(), m);
            }
        });
    }
}

type QuickSpend<'a> = (i64, Option<&'a str>, Vec<(String, i64)>);

/// Reads micro-dollars, `phase` and `phases` of a spend line this server wrote without a JSON
/// tree: a start sums every ledger ever, 2.8 s per million lines with a tree, 1.6 s without
/// (release). `None` for anything else (an alert, a hand-written line, an escape), parsed whole
/// then. A member name matches only outside strings: inside one, a quote is escaped.
fn quick_spend(record: &[u8]) -> Option<QuickSpend<'_>> {
    if !record.starts_with(b"{\"ts\":\"") || record.contains(&b'\\') {
        return None;
    }
    let after = |name: &[u8]| {
        let at = record.windows(name.len()).position(|w| w == name)?;
        Some(&record[at + name.len()..])
    };
    let micros = after(b",\"amount_micros\":")?;
    let digits = micros.iter().take_while(|b| b.is_ascii_digit()).count();
    let micros: i64 = std::str::from_utf8(&micros[..digits]).ok()?.parse().ok()?;
    let phase = match after(b",\"phase\":\"") {
        None => None,
        Some(rest) => {
            let end = rest.iter().position(|&b| b == b'"')?;
            Some(std::str::from_utf8(&rest[..end]).ok()?)
        }
    };
    let mut phases = Vec::new();
    if let Some(rest) = after(b",\"phases\":{") {
        let end = rest.iter().position(|&b| b == b'}')?;
        for member in rest[..end].split(|&b| b == b',').filter(|m| !m.is_empty()) {
            let name = member.strip_prefix(b"\"")?;
            let close = name.iter().position(|&b| b == b'"')?;
            let value = name[close + 1..].strip_prefix(b":")?;
            let dollars: f64 = std::str::from_utf8(value).ok()?.parse().ok()?;
            let name = std::str::from_utf8(&name[..close]).ok()?.to_string();
            phases.push((name, money::to_micros(dollars, "").ok()?));
        }
    }
    Some((micros, phase, phases))
}

/// Sums every ledger in `dir`, cutting a torn last line. A damaged line is an error: a counter
/// that skipped it would count less than was recorded.
pub(crate) fn totals(dir: &Path) -> Result<Totals, Error> {
    let mut totals = Totals::default();
    for day in days(dir)? {
        Journal::open_each(&path(dir, day), Tail::Cut, |record| totals.add(record))
            .map_err(|e| Error::Storage(e.to_string()))?;
    }
    Ok(totals)
}

/// The days with a ledger file in `dir`, oldest first.
pub(crate) fn days(dir: &Path) -> Result<Vec<i64>, Error> {
    let entries = match fs::read_dir(dir) {
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        entries => entries.map_err(|e| storage(dir, e))?,
    };
    let mut days = Vec::new();
    for entry in entries {
        let name = entry.map_err(|e| storage(dir, e))?.file_name();
        let name = name.to_str().and_then(|n| n.strip_suffix(".jsonl"));
        days.extend(name.and_then(parse_date));
    }
    days.sort_unstable();
    Ok(days)
}

/// Splits a spend by phase label for `agent_cost_dollars_total`: each of `phases` (an empty name is
/// `unknown`), the rest under `phase` or `unknown`. Live counting and the start's sum agree by it.
pub(crate) fn split_phases(
    phases: &[(String, i64)],
    phase: Option<&str>,
    micros: i64,
    mut each: impl FnMut(&str, i64),
) {
    let mut covered = 0i64;
    for (name, cost) in phases {
        let label = Some(name.as_str()).filter(|p| !p.is_empty());
        each(label.unwrap_or(UNKNOWN_PHASE), *cost);
        covered = covered.saturating_add(*cost);
    }
    if micros > covered {
        each(phase.unwrap_or(UNKNOWN_PHASE), micros - covered);
    }
}

/// A line and its spend's micro-dollars (`None`: an alert); `None` if blank.
fn read_line(record: &[u8]) -> Result<Option<(Value, Option<i64>)>, String> {
    if record.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let value: Value = serde_json::from_slice(record).map_err(|e| format!("not JSON: {e}"))?;
    let micros = spend_micros(&value)?;
    Ok(Some((value, micros)))
}

/// A spend line's micro-dollars (`amount_micros` or a hand-written `amount`); `None`: an alert.
pub(crate) fn spend_micros(line: &Value) -> Result<Option<i64>, String> {
    if line.get("alert").is_some() {
        return Ok(None);
    }
    let micros = match (line.get("amount_micros"), line.get("amount")) {
        (Some(m), _) => m.as_i64().filter(|m| *m >= 0),
        (None, Some(a)) => a.as_f64().and_then(|a| money::to_micros(a, "amount").ok()),
        (None, None) => return Err("neither a spend nor an alert".into()),
    };
    micros
        .map(Some)
        .ok_or_else(|| "the amount is not a non-negative number".into())
}

pub(crate) fn spend_time(line: &Value) -> Option<f64> {
    line["ts"].as_str().and_then(time::parse_rfc3339)
}

pub(crate) fn path(dir: &Path, day: i64) -> PathBuf {
    dir.join(format!("{}.jsonl", time::date_string(day)))
}

/// A failure of the ledger file or directory at `path`.
pub(crate) fn storage(path: &Path, e: impl Display) -> Error {
    Error::Storage(format!("ledger {}: {e}", path.display()))
}

/// A day's ledger file, open for appending through its committer.
pub(crate) struct Writer {
    queue: CommitQueue,
    /// The length of the file's durable part: no half-written line below it.
    durable: Arc<AtomicU64>,
}

impl Writer {
    /// Appends `lines` durably and together, or none of them.
    pub fn append(&self, lines: &[Vec<u8>]) -> Result<(), Error> {
        let records: Vec<&[u8]> = lines.iter().map(Vec::as_slice).collect();
        let appended = self.queue.append_all(&records);
        appended.map_err(|e| Error::Storage(e.to_string()))
    }

    pub fn durable_len(&self) -> u64 {
        self.durable.load(Ordering::Acquire)
    }
}

/// A ledger's journal, telling its [`Writer`] how much is durable.
struct Tracked(Journal, Arc<AtomicU64>);

impl Sink for Tracked {
    fn append_all(&mut self, records: &[&[u8]]) -> Result<(), journal::Error> {
        self.0.append_all(records)?;
        self.1.store(self.0.durable_len(), Ordering::Release);
        Ok(())
    }

    fn path(&self) -> PathBuf {
        self.0.path().to_path_buf()
    }
}

/// Opens `day`'s file (cutting a torn tail) and sums it; missing, `None` unless `create`.
pub(crate) fn open(
    dir: &Path,
    day: i64,
    create: bool,
) -> Result<Option<(Arc<Writer>, Summed)>, Error> {
    let path = path(dir, day);
    match fs::metadata(&path) {
        Err(e) if e.kind() == ErrorKind::NotFound && !create => return Ok(None),
        Err(e) if e.kind() != ErrorKind::NotFound => return Err(storage(&path, e)),
        _ => {}
    }
    let mut summed = Summed::default();
    let (journal, _) = Journal::open_each(&path, Tail::Cut, |record| summed.apply(record))
        .map_err(|e| Error::Storage(e.to_string()))?;
    let durable = Arc::new(AtomicU64::new(journal.durable_len()));
    let queue = CommitQueue::start(Tracked(journal, durable.clone()), "ledger")
        .map_err(|e| Error::Storage(e.to_string()))?;
    Ok(Some((Arc::new(Writer { queue, durable }), summed)))
}

/// The day `YYYY-MM-DD` stands for, if it is exactly that and a real date.
pub(crate) fn parse_date(date: &str) -> Option<i64> {
    if date.len() != 10 {
        return None;
    }
    let mut parts = date.splitn(3, '-');
    let y = parts.next()?.parse::<i64>().ok()?;
    let m = parts.next()?.parse::<u32>().ok()?;
    let d = parts.next()?.parse::<u32>().ok()?;
    let day = time::days_from_civil(y, m, d);
    // Formatting back rejects `2026-02-30`, `2026-1-011` and signs.
    (time::date_string(day) == date).then_some(day)
}

impl SpendInput {
    /// Prices the input as a direct spend's entry; too large a token cost is invalid `input_tokens`.
    pub(crate) fn charge(&self, pricing: &Pricing) -> Result<Entry<'_>, Error> {
        match self {
            SpendInput::Amount(amount) => Ok(Entry::new(
                "direct",
                money::to_micros(*amount, "amount")?,
                0.0,
            )),
            SpendInput::Tokens {
                input_tokens,
                output_tokens,
                model,
            } => {
                let cost = pricing.cost(model.as_deref(), *input_tokens, *output_tokens);
                Ok(Entry {
                    model: model.as_deref(),
                    tokens: Some((*input_tokens, *output_tokens)),
                    ..Entry::new("direct", money::to_micros(cost, "input_tokens")?, 0.0)
                })
            }
        }
    }
}

/// A spend as the ledger records it.
pub(crate) struct Entry<'a> {
    /// `"run"` (a settled run), `"direct"` or [`IMPORT_KIND`].
    pub kind: &'static str,
    pub ts: f64,
    pub micros: i64,
    pub model: Option<&'a str>,
    /// `(input, output)` tokens.
    pub tokens: Option<(u64, u64)>,
    pub run_id: Option<&'a str>,
    /// A settled run's start: tells it from a later run of the same id (see `Budget::reconcile`).
    pub run_started_at: Option<f64>,
    /// A direct spend's phase; a settled run's cost by phase.
    pub phase: Option<&'a str>,
    pub phases: &'a [(String, i64)],
    /// The operation the spend belongs to, which the day counts once.
    pub operation_id: Option<&'a str>,
    /// An imported entry's file name and its index in its `spend` list.
    pub source: Option<(&'a str, u64)>,
}

impl<'a> Entry<'a> {
    pub(crate) fn new(kind: &'static str, micros: i64, ts: f64) -> Entry<'a> {
        Entry {
            kind,
            ts,
            micros,
            model: None,
            tokens: None,
            run_id: None,
            run_started_at: None,
            phase: None,
            phases: &[],
            operation_id: None,
            source: None,
        }
    }

    /// The operation the day counts it as once, as [`Summed::apply`] reads it.
    pub(crate) fn key(&self) -> Option<OpKey> {
        match (self.operation_id, self.source) {
            (Some(id), _) => Some(OpKey::Id(id.into())),
            (None, Some((_, index))) => Some(OpKey::Position(index)),
            (None, None) => None,
        }
    }

    /// The ledger line: its members in this order, absent ones left out.
    pub(crate) fn line(&self) -> Vec<u8> {
        let text = |s: Option<&str>| s.map(Value::from);
        let phases = self.phases.iter();
        let phases = phases.map(|(p, m)| (p.clone(), Value::from(money::dollars(*m))));
        let members = [
            ("ts", Some(Value::from(time::rfc3339(self.ts)))),
            ("kind", Some(Value::from(self.kind))),
            ("amount", Some(Value::from(money::dollars(self.micros)))),
            ("amount_micros", Some(Value::from(self.micros))),
            ("run_id", text(self.run_id)),
            ("model", text(self.model)),
            ("phase", text(self.phase)),
            ("operation_id", text(self.operation_id)),
            ("run_started_at", self.run_started_at.map(Value::from)),
            ("source", self.source.map(|(file, _)| Value::from(file))),
            ("source_index", self.source.map(|(_, i)| Value::from(i))),
            ("input_tokens", self.tokens.map(|t| Value::from(t.0))),
            ("output_tokens", self.tokens.map(|t| Value::from(t.1))),
            (
                "phases",
                (!self.phases.is_empty()).then(|| crate::ordered::object(phases)),
            ),
        ];
        let mut line = String::new();
        for (key, value) in members {
            if let Some(value) = value {
                line.push(if line.is_empty() { '{' } else { ',' });
                push_key(&mut line, key);
                push_value(&mut line, &value);
            }
        }
        line.push('}');
        line.into_bytes()
    }
}

/// The ledger line that marks `threshold` fired for `day`.
pub(crate) fn alert_line(threshold: u8, ts: f64, day: i64, spent: i64, limit: i64) -> Vec<u8> {
    format!(
        "{{\"alert\":{threshold},\"ts\":{},\"date\":\"{}\",\"today_spend\":{},\"daily_limit\":{}}}",
        Value::from(time::rfc3339(ts)),
        time::date_string(day),
        Value::from(money::dollars(spent)),
        Value::from(money::dollars(limit)),
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summed(lines: &[&str]) -> Result<Summed, String> {
        let mut s = Summed::default();
        lines.iter().try_for_each(|l| s.apply(l.as_bytes()))?;
        Ok(s)
    }

    #[test]
    fn file_names_round_trip_and_reject_non_dates() {
        let dir = crate::testing::TempDir::new("ledger-days");
        for day in [0, 19_000, 20_780, -1] {
            fs::write(path(&dir, day), "").unwrap();
        }
        for name in [
            "2024-02-29.jsonl",
            "2026-02-30.jsonl",
            "2026-1-01.jsonl",
            "x.jsonl",
            "2026-01-01.json",
        ] {
            fs::write(dir.join(name), "").unwrap();
        }
        assert_eq!(days(&dir).unwrap(), [-1, 0, 19_000, 19_782, 20_780]);
        let file = path(Path::new("d"), 19_782);
        assert_eq!(file, Path::new("d/2024-02-29.jsonl"));
    }

    #[test]
    fn charging_fires_each_threshold_once() {
        let mut t = Summed::default();
        assert_eq!(t.charge(400_000, 1_000_000), Vec::<u8>::new());
        assert_eq!(t.charge(100_000, 1_000_000), vec![50]);
        assert_eq!(t.charge(100_000, 1_000_000), Vec::<u8>::new());
        assert_eq!(t.charge(900_000, 1_000_000), vec![80, 100]);
        assert_eq!(t.charge(1, 1_000_000), Vec::<u8>::new());
        t.uncharge(1, &[]);
        t.uncharge(900_000, &[80, 100]);
        assert_eq!((t.spent, t.events), (600_000, 3));
        assert_eq!(t.charge(200_000, 1_000_000), vec![80]);
        let mut zero_limit = Summed::default();
        assert_eq!(zero_limit.charge(0, 0), Vec::<u8>::new());
        assert_eq!(zero_limit.charge(1, 0), vec![50, 80, 100]);
    }

    #[test]
    fn lines_written_are_lines_replayed() {
        let phases = [("plan".to_string(), 20_000), ("act".to_string(), 2_500)];
        let entry = Entry {
            model: Some("m\"x"),
            tokens: Some((1000, 100)),
            run_id: Some("r1"),
            phases: &phases,
            ..Entry::new("run", 22_500, 86_400.5)
        };
        let line = entry.line();
        let value: Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(value["ts"], "1970-01-02T00:00:00.500Z");
        assert_eq!(
            (value["amount"].as_f64(), value["kind"].as_str()),
            (Some(0.0225), Some("run"))
        );
        assert_eq!(
            (value["model"].as_str(), value["input_tokens"].as_u64()),
            (Some("m\"x"), Some(1000))
        );
        assert_eq!(value["phases"]["plan"], 0.02);
        let alert = alert_line(80, 0.0, 0, 800_000, 1_000_000);
        let alert = String::from_utf8(alert).unwrap();
        assert!(
            alert.starts_with(r#"{"alert":80,"ts":"1970-01-01T00:00:00.000Z","date":"1970-01-01""#)
        );
        let t = summed(&[std::str::from_utf8(&line).unwrap(), &alert, ""]).unwrap();
        assert_eq!((t.spent, t.events, t.alerts), (22_500, 1, 0b010));
    }

    #[test]
    fn replay_accepts_hand_written_amounts_and_rejects_garbage() {
        let t = summed(&[
            r#"{"amount": 0.25}"#,
            r#"{"amount_micros": 5, "amount": 9}"#,
        ])
        .unwrap();
        assert_eq!((t.spent, t.events), (250_005, 2));
        assert!(summed(&["{"]).unwrap_err().starts_with("not JSON"));
        assert!(summed(&[r#"{"x":1}"#]).unwrap_err().contains("neither"));
        assert!(summed(&[r#"{"amount_micros":-5}"#])
            .unwrap_err()
            .contains("non-negative"));
        assert!(summed(&[r#"{"alert":70}"#])
            .unwrap_err()
            .contains("threshold 70"));
    }

    #[test]
    fn operations_are_replayed_by_id_or_by_position_in_the_agent_file() {
        let line = |micros, kind, operation_id, source| {
            let entry = Entry {
                operation_id,
                source,
                ..Entry::new(kind, micros, 0.0)
            };
            String::from_utf8(entry.line()).unwrap()
        };
        let direct = line(500_000, "direct", Some("op_1"), None);
        assert!(direct.ends_with(r#","operation_id":"op_1"}"#), "{direct}");
        let imported = line(150_000, IMPORT_KIND, Some("op_2"), Some(("x.json", 0)));
        assert!(
            imported.ends_with(r#""operation_id":"op_2","source":"x.json","source_index":0}"#),
            "{imported}"
        );
        let anonymous = line(100_000, IMPORT_KIND, None, Some(("x.json", 1)));
        let again = line(7, "direct", Some("op_1"), None);
        let plain = line(1, "direct", None, None);
        let s = summed(&[&direct, &imported, &anonymous, &again, &plain]).unwrap();
        assert_eq!((s.spent, s.events), (750_008, 5));
        let expected: HashMap<OpKey, i64> = [
            (OpKey::Id("op_1".into()), 500_000),
            (OpKey::Id("op_2".into()), 150_000),
            (OpKey::Position(1), 100_000),
        ]
        .into();
        assert_eq!(s.operations, expected, "the first amount of an id stands");
    }

    #[test]
    fn dates_parse_only_when_exact_and_real() {
        assert_eq!(parse_date("2026-11-23"), Some(20_780));
        for bad in ["2026-11-31", "2026-11-3", "+2026-11-2", "2026/11/23", ""] {
            assert_eq!(parse_date(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_quick_read_of_a_spend_line_adds_what_the_json_tree_does() {
        let charge = |micros: i64, model: Option<&'static str>| (micros, model);
        let phases = [
            ("plan".to_string(), 200_000),
            (String::new(), 50_000),
            ("a:b.c-d_e".to_string(), 1),
        ];
        let line = |c: &(i64, Option<&str>), kind, phase, phases: &[(String, i64)], source| {
            let entry = Entry {
                model: c.1,
                tokens: Some((10, 1)),
                run_id: Some("r-1"),
                run_started_at: Some(1_795_960_921.443_738_5),
                phase,
                phases,
                operation_id: Some("op:1"),
                source,
                ..Entry::new(kind, c.0, 0.0)
            };
            entry.line()
        };
        let lines = [
            line(&charge(300_001, Some("m")), "run", None, &phases, None),
            line(&charge(7, None), "direct", Some("phase"), &[], None),
            line(
                &charge(9, None),
                IMPORT_KIND,
                None,
                &[],
                Some(("f.json", 3)),
            ),
            // An escape in a text: read through the tree only.
            line(&charge(5, Some("m\"x")), "direct", Some("act"), &[], None),
            br#"{"amount": 0.25, "phase": "hand"}"#.to_vec(),
            alert_line(50, 0.0, 0, 1, 2),
        ];
        let (mut quick, mut tree) = (Totals::default(), Totals::default());
        for l in &lines {
            quick.add(l).unwrap();
            tree.add_parsed(l).unwrap();
        }
        assert_eq!(quick, tree);
        assert_eq!(
            (quick.spent, quick.alerts),
            (300_001 + 7 + 9 + 5 + 250_000, 1)
        );
        assert_eq!(quick.phases["unknown"], 50_000 + 50_000 + 9);
        assert_eq!(quick.phases["phase"], 7);
        assert!(quick_spend(&lines[0]).is_some() && quick_spend(&lines[3]).is_none());
    }
}
