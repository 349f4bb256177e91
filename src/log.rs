//! Structured logging: one JSON object per line on stderr, or readable
//! text for a terminal. No global logger: whoever logs holds a `Logger`.

use std::io::Write;

use serde_json::{Map, Value};

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
            LogFormat::Json => {
                let mut obj = Map::new();
                obj.insert("ts".into(), Value::String(ts));
                obj.insert("level".into(), Value::String(level.as_str().into()));
                obj.insert("msg".into(), Value::String(msg.into()));
                for (k, v) in fields {
                    obj.insert((*k).into(), v.clone());
                }
                let mut line = Value::Object(obj).to_string();
                line.push('\n');
                line
            }
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
