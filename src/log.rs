//! Structured logging: a JSON object per line on stderr, or text for a terminal. No global logger.

use std::io::Write;

use serde_json::Value;

use crate::json_text;
use crate::time;

/// A log level, most severe first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Something failed.
    Error,
    /// Something needs attention.
    Warn,
    /// Normal operation, including one line per request.
    Info,
    /// Detail for debugging.
    Debug,
}

/// Each level's name, in the order of the variants.
const LEVELS: [(Level, &str); 4] = [
    (Level::Error, "error"),
    (Level::Warn, "warn"),
    (Level::Info, "info"),
    (Level::Debug, "debug"),
];

impl Level {
    /// Parses `error`, `warn` (or `warning`), `info` or `debug`.
    pub(crate) fn parse(s: &str) -> Option<Level> {
        let s = s.to_ascii_lowercase();
        let s = if s == "warning" { "warn" } else { &s };
        LEVELS.iter().find(|(_, name)| *name == s).map(|(l, _)| *l)
    }

    fn as_str(self) -> &'static str {
        LEVELS[self as usize].1
    }
}

/// How lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// `ts level msg key=value ...`, for a terminal.
    Text,
}

/// A logger writing to stderr, cheap to clone and shared across threads: each line is one locked
/// write, so lines never interleave.
#[derive(Clone, Copy, Debug)]
pub struct Logger {
    level: Level,
    format: LogFormat,
}

impl Logger {
    /// A logger that drops lines less severe than `level`.
    pub fn new(level: Level, format: LogFormat) -> Logger {
        Logger { level, format }
    }

    pub(crate) fn enabled(&self, level: Level) -> bool {
        level <= self.level
    }

    pub(crate) fn log(&self, level: Level, msg: &str, fields: &[(&str, Value)]) {
        if !self.enabled(level) {
            return;
        }
        let line = self.render(level, msg, fields);
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn render(&self, level: Level, msg: &str, fields: &[(&str, Value)]) -> String {
        let ts = time::rfc3339(time::now_unix());
        match self.format {
            LogFormat::Json => json_line(&ts, level, msg, fields),
            LogFormat::Text => {
                let mut line = format!("{ts} {:5} {msg}", level.as_str().to_uppercase());
                for (k, v) in fields {
                    line.push_str(&format!(" {k}="));
                    match v {
                        Value::String(s) => line.push_str(&format!("{s:?}")),
                        other => push_rounded(&mut line, other),
                    }
                }
                line.push('\n');
                line
            }
        }
    }

    pub(crate) fn error(&self, msg: &str, fields: &[(&str, Value)]) {
        self.log(Level::Error, msg, fields)
    }

    pub(crate) fn warn(&self, msg: &str, fields: &[(&str, Value)]) {
        self.log(Level::Warn, msg, fields)
    }

    pub(crate) fn info(&self, msg: &str, fields: &[(&str, Value)]) {
        self.log(Level::Info, msg, fields)
    }
}

enum Piece<'a> {
    Text(&'a str),
    Value(&'a Value),
}

/// One JSON log line, as serde_json prints `ts`, `level`, `msg` and `fields` (keys sorted, a later
/// duplicate winning), but written straight into the line: one runs for every request.
fn json_line(ts: &str, level: Level, msg: &str, fields: &[(&str, Value)]) -> String {
    let mut pairs: Vec<(&str, Piece)> = Vec::with_capacity(fields.len() + 3);
    pairs.extend([
        ("ts", Piece::Text(ts)),
        ("level", Piece::Text(level.as_str())),
        ("msg", Piece::Text(msg)),
    ]);
    pairs.extend(fields.iter().map(|(k, v)| (*k, Piece::Value(v))));
    // A stable sort keeps duplicates in insertion order; the last wins.
    pairs.sort_by(|a, b| a.0.cmp(b.0));
    let mut line = String::with_capacity(256);
    line.push('{');
    for (i, (k, v)) in pairs.iter().enumerate() {
        if pairs.get(i + 1).is_some_and(|next| next.0 == *k) {
            continue;
        }
        if line.len() > 1 {
            line.push(',');
        }
        json_text::push_str(&mut line, k);
        line.push(':');
        match v {
            Piece::Text(text) => json_text::push_str(&mut line, text),
            Piece::Value(value) => push_rounded(&mut line, value),
        }
    }
    line.push_str("}\n");
    line
}

/// Appends `v` as compact JSON, every float rounded to three decimals: people read log lines, and
/// `0.126` says all that `0.12595499999999998` does.
fn push_rounded(out: &mut String, v: &Value) {
    match v {
        Value::Number(n) if n.is_f64() => {
            json_text::push_f64(out, round3(n.as_f64().unwrap_or(f64::NAN)))
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                push_rounded(out, item);
            }
            out.push(']');
        }
        Value::Object(members) => {
            out.push('{');
            for (i, (k, item)) in members.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                json_text::push_str(out, k);
                out.push(':');
                push_rounded(out, item);
            }
            out.push('}');
        }
        other => json_text::push_value(out, other),
    }
}

/// `x` rounded to three decimals, a negative that rounds to zero made plain `0.0`. Past 2^53 / 1000
/// a float has no decimals to round, and the arithmetic would only add error.
fn round3(x: f64) -> f64 {
    if x.abs() < 9.0e12 {
        (x * 1000.0).round() / 1000.0 + 0.0
    } else {
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_lines_carry_ts_level_msg_and_fields() {
        let l = Logger::new(Level::Info, LogFormat::Json);
        let line = l.render(
            Level::Warn,
            "hi \"there\"",
            &[("run_id", json!("r1")), ("n", json!(3))],
        );
        let v: Value = serde_json::from_str(line.trim_end()).unwrap();
        assert_eq!(v["level"], "warn");
        assert_eq!(v["msg"], "hi \"there\"");
        assert_eq!(v["run_id"], "r1");
        assert_eq!(v["n"], 3);
        assert!(v["ts"].as_str().unwrap().ends_with('Z'));
        assert!(!l.enabled(Level::Debug));
        assert!(l.enabled(Level::Error));
    }

    #[test]
    fn json_lines_print_as_a_serde_json_object_would() {
        let fields = [
            ("path", json!("/x \"y\"")),
            ("status", json!(200)),
            ("msg", json!("overridden")),
            ("a", json!({"z": 1, "b": [null, 2.5]})),
            ("status", json!(201)),
            ("duration_ms", json!(0.125)),
        ];
        let line = json_line("2026-11-23T13:14:38.123Z", Level::Info, "request", &fields);
        let mut obj = serde_json::Map::new();
        obj.insert("ts".into(), json!("2026-11-23T13:14:38.123Z"));
        obj.insert("level".into(), json!("info"));
        obj.insert("msg".into(), json!("request"));
        for (k, v) in &fields {
            obj.insert((*k).into(), v.clone());
        }
        assert_eq!(line, format!("{}\n", Value::Object(obj)));
    }

    #[test]
    fn floats_are_rounded_for_people_and_integers_and_text_are_not() {
        let fields = [
            ("duration_ms", json!(0.12595499999999998)),
            ("grace_seconds", json!(10.0)),
            ("nested", json!({"cost": [1.23456, 7], "id": "0.123456"})),
            ("big", json!(u64::MAX)),
            ("huge", json!(1.5e300)),
            ("small", json!(-0.0004)),
        ];
        let line = json_line("t", Level::Info, "stopped", &fields);
        let v: Value = serde_json::from_str(line.trim_end()).unwrap();
        assert_eq!(v["duration_ms"], json!(0.126));
        assert_eq!(v["nested"], json!({"cost": [1.235, 7], "id": "0.123456"}));
        assert_eq!(v["big"], json!(u64::MAX));
        assert_eq!(v["huge"], json!(1.5e300));
        assert!(line.contains(r#""grace_seconds":10.0"#), "{line}");
        assert!(line.contains(r#""small":0.0"#), "{line}");
        let l = Logger::new(Level::Info, LogFormat::Text);
        let text = l.render(Level::Info, "stopped", &fields);
        assert!(text.contains(" duration_ms=0.126 "), "{text}");
        assert!(
            text.contains(r#" nested={"cost":[1.235,7],"id":"0.123456"}"#),
            "{text}"
        );
    }

    #[test]
    fn text_lines_are_readable() {
        let l = Logger::new(Level::Debug, LogFormat::Text);
        let line = l.render(
            Level::Info,
            "request",
            &[("path", json!("/x")), ("status", json!(200))],
        );
        assert!(
            line.contains("INFO  request path=\"/x\" status=200"),
            "{line}"
        );
        assert_eq!(Level::parse("WARN"), Some(Level::Warn));
        assert_eq!(Level::parse("loud"), None);
    }
}
