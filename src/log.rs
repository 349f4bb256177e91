//! Structured logging: one JSON object per line on stderr, or readable
//! text for a terminal. No global logger: whoever logs holds a `Logger`.

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

impl Level {
    /// Parses `error`, `warn`, `info` or `debug`.
    pub fn parse(s: &str) -> Option<Level> {
        match s.to_ascii_lowercase().as_str() {
            "error" => Some(Level::Error),
            "warn" | "warning" => Some(Level::Warn),
            "info" => Some(Level::Info),
            "debug" => Some(Level::Debug),
            _ => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Level::Error => "error",
            Level::Warn => "warn",
            Level::Info => "info",
            Level::Debug => "debug",
        }
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

/// A logger writing to stderr. Cheap to clone; safe to share across threads
/// (each line is written with one locked write, so lines never interleave).
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

    /// Whether a line at `level` would be written.
    pub fn enabled(&self, level: Level) -> bool {
        level <= self.level
    }

    /// Writes one line with `msg` and extra fields.
    pub fn log(&self, level: Level, msg: &str, fields: &[(&str, Value)]) {
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
                    match v {
                        Value::String(s) => line.push_str(&format!(" {k}={s:?}")),
                        other => line.push_str(&format!(" {k}={other}")),
                    }
                }
                line.push('\n');
                line
            }
        }
    }

    /// Logs at error level.
    pub fn error(&self, msg: &str, fields: &[(&str, Value)]) {
        self.log(Level::Error, msg, fields)
    }

    /// Logs at warn level.
    pub fn warn(&self, msg: &str, fields: &[(&str, Value)]) {
        self.log(Level::Warn, msg, fields)
    }

    /// Logs at info level.
    pub fn info(&self, msg: &str, fields: &[(&str, Value)]) {
        self.log(Level::Info, msg, fields)
    }
}

/// A value of a log line: our own text, or a caller's field.
enum Piece<'a> {
    Text(&'a str),
    Value(&'a Value),
}

/// One JSON log line, printed as a serde_json object of `ts`, `level`,
/// `msg` and `fields` would be (keys sorted, a later duplicate winning),
/// but written straight into the line: one runs for every request.
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
            Piece::Value(value) => json_text::push_value(&mut line, value),
        }
    }
    line.push_str("}\n");
    line
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
