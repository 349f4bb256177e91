//! Declarations: the families of the metrics file, checked before anything is registered.

use serde_json::{json, Value};

use crate::metrics::{valid_label_name, valid_metric_name};

/// The prefixes of the server's own families; a declared name may not take one.
pub const RESERVED_PREFIXES: [&str; 3] = ["conductor_", "agent_", "process_"];

/// Buckets for a histogram declared without any: the Prometheus client libraries' defaults.
pub const DEFAULT_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The most families one file may declare, bounding the work of a start and of every update.
pub const MAX_FAMILIES: usize = 1000;
/// The most labels one family may have, bounding the same work.
pub const MAX_LABELS: usize = 16;

/// A declared family's type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Type {
    Counter,
    Gauge,
    Histogram,
}

impl Type {
    pub fn as_str(self) -> &'static str {
        match self {
            Type::Counter => "counter",
            Type::Gauge => "gauge",
            Type::Histogram => "histogram",
        }
    }
}

/// One declared family.
#[derive(Clone, Debug, PartialEq)]
pub struct Declaration {
    pub name: String,
    pub kind: Type,
    pub help: String,
    /// In the order their values are stored.
    pub labels: Vec<String>,
    /// A histogram's upper bucket bounds.
    pub buckets: Vec<f64>,
}

impl Declaration {
    /// The declaration in the metrics file's form, `labels` and a histogram's `buckets`
    /// explicit; [`parse_value`] reads it back as the same declaration.
    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "name": self.name,
            "type": self.kind.as_str(),
            "help": self.help,
            "labels": self.labels,
        });
        if self.kind == Type::Histogram {
            v["buckets"] = json!(self.buckets);
        }
        v
    }
}

/// Parses the metrics file. Errors name the family (or its index) and field:
/// `family "git_merge_total": labels[1]: "2x" is not a valid label name`.
pub fn parse(text: &str) -> Result<Vec<Declaration>, String> {
    let value: Value = serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
    parse_value(&value)
}

/// Parses declarations read as JSON (the file, or `families` of `GET /api/v1/metrics`).
pub fn parse_value(value: &Value) -> Result<Vec<Declaration>, String> {
    let Value::Array(items) = value else {
        return Err("must be a JSON array of family declarations".to_string());
    };
    if items.len() > MAX_FAMILIES {
        return Err(format!(
            "declares {} families; at most {MAX_FAMILIES}",
            items.len()
        ));
    }
    let mut out: Vec<Declaration> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let who = match item.get("name").and_then(Value::as_str) {
            Some(name) if !name.is_empty() => format!("family {name:?}"),
            _ => format!("family [{i}]"),
        };
        let d = declaration(item).map_err(|(field, why)| format!("{who}: {field}: {why}"))?;
        if out.iter().any(|o| o.name == d.name) {
            return Err(format!("{who}: name: declared twice"));
        }
        out.push(d);
    }
    Ok(out)
}

pub(super) type FieldError = (String, String);

pub(super) fn fail<T>(field: &str, why: &str) -> Result<T, FieldError> {
    Err((field.to_string(), why.to_string()))
}

fn declaration(item: &Value) -> Result<Declaration, FieldError> {
    let Value::Object(map) = item else {
        return fail("declaration", "must be a JSON object");
    };
    let allowed = ["name", "type", "help", "labels", "buckets"];
    if let Some(k) = map.keys().find(|k| !allowed.contains(&k.as_str())) {
        return fail(k, "unknown field");
    }
    let name = name(map.get("name"))?;
    let given = map.get("type").and_then(Value::as_str);
    let types = [Type::Counter, Type::Gauge, Type::Histogram];
    let Some(kind) = types.into_iter().find(|t| given == Some(t.as_str())) else {
        return fail("type", "must be counter, gauge or histogram");
    };
    if (kind == Type::Counter) != name.ends_with("_total") {
        return fail(
            "name",
            "a counter's name, and only a counter's, ends in _total",
        );
    }
    let help = match map.get("help") {
        Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
        Some(Value::String(_)) | None => return fail("help", "is required: say what it counts"),
        Some(_) => return fail("help", "must be a string"),
    };
    Ok(Declaration {
        name,
        kind,
        help,
        labels: labels(map.get("labels"))?,
        buckets: buckets(kind, map.get("buckets"))?,
    })
}

/// A family's `name`, outside the server's own prefixes.
fn name(value: Option<&Value>) -> Result<String, FieldError> {
    let name = match value {
        Some(Value::String(s)) => s.clone(),
        Some(_) => return fail("name", "must be a string"),
        None => return fail("name", "is required"),
    };
    if !valid_metric_name(&name) || name.contains(':') {
        return fail(
            "name",
            "must match [a-zA-Z_][a-zA-Z0-9_]* (colons are for recording rules)",
        );
    }
    if let Some(p) = RESERVED_PREFIXES.iter().find(|p| name.starts_with(*p)) {
        return Err((
            "name".into(),
            format!("the prefix {p} is reserved for the server's own families"),
        ));
    }
    Ok(name)
}

/// A family's `labels`: at most [`MAX_LABELS`] distinct, unreserved names.
fn labels(value: Option<&Value>) -> Result<Vec<String>, FieldError> {
    let items = match value {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(_) => return fail("labels", "must be an array of label names"),
    };
    let mut labels: Vec<String> = Vec::with_capacity(items.len());
    for (j, l) in items.iter().enumerate() {
        let field = format!("labels[{j}]");
        let Some(l) = l.as_str() else {
            return Err((field, "must be a string".into()));
        };
        if !valid_label_name(l) || l.starts_with("__") {
            return Err((field, format!("{l:?} is not a valid label name")));
        }
        if l == "le" || l == "quantile" {
            return Err((
                field,
                format!("{l:?} is reserved for histograms and summaries"),
            ));
        }
        if labels.iter().any(|o| o == l) {
            return Err((field, format!("{l:?} is given twice")));
        }
        labels.push(l.to_string());
    }
    if labels.len() > MAX_LABELS {
        return fail("labels", "at most 16 labels");
    }
    Ok(labels)
}

/// A family's `buckets`: a histogram's bounds; none for another type.
fn buckets(kind: Type, value: Option<&Value>) -> Result<Vec<f64>, FieldError> {
    match (kind, value) {
        (Type::Histogram, None | Some(Value::Null)) => Ok(DEFAULT_BUCKETS.to_vec()),
        (Type::Histogram, Some(Value::Array(items))) => {
            let bounds: Option<Vec<f64>> = items.iter().map(Value::as_f64).collect();
            let Some(bounds) = bounds.filter(|b| !b.is_empty() && b.len() <= 64) else {
                return fail("buckets", "must be 1 to 64 numbers");
            };
            if bounds.windows(2).any(|w| w[0] >= w[1]) {
                return fail("buckets", "must be strictly increasing");
            }
            Ok(bounds)
        }
        (Type::Histogram, Some(_)) => fail("buckets", "must be an array of numbers"),
        (_, None | Some(Value::Null)) => Ok(Vec::new()),
        (_, Some(_)) => fail("buckets", "only a histogram has buckets"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(text: &str) -> String {
        parse(text).unwrap_err()
    }

    #[test]
    fn reads_every_type_with_defaults() {
        let d = parse(
            r#"[{"name": "a_total", "type": "counter", "help": "h", "labels": ["x", "y"]},
                {"name": "b", "type": "gauge", "help": "h"},
                {"name": "c_seconds", "type": "histogram", "help": "h"},
                {"name": "d", "type": "histogram", "help": "h", "buckets": [1, 2.5]}]"#,
        )
        .unwrap();
        assert_eq!(d[0].labels, ["x", "y"]);
        assert_eq!(d[1].kind, Type::Gauge);
        assert_eq!(d[2].buckets, DEFAULT_BUCKETS);
        assert_eq!(d[3].buckets, [1.0, 2.5]);
    }

    #[test]
    fn to_json_reads_back_as_the_same_declarations() {
        let d = parse(
            r#"[{"name": "a_total", "type": "counter", "help": "h", "labels": ["x", "y"]},
                {"name": "b", "type": "gauge", "help": "h"},
                {"name": "c_seconds", "type": "histogram", "help": "h"},
                {"name": "d", "type": "histogram", "help": "h", "buckets": [0, 2.5]}]"#,
        )
        .unwrap();
        let written: Vec<Value> = d.iter().map(Declaration::to_json).collect();
        assert_eq!(parse_value(&Value::Array(written.clone())).unwrap(), d);
        // What the file left out is explicit: no labels, and the default buckets.
        assert_eq!(
            written[1],
            json!({"name": "b", "type": "gauge", "help": "h", "labels": []})
        );
        assert_eq!(written[2]["buckets"], json!(DEFAULT_BUCKETS));
    }

    #[test]
    fn errors_name_the_family_and_the_field() {
        let cases = [
            (r#"{}"#, "must be a JSON array"),
            (
                r#"[{"name": "conductor_x_total", "type": "counter", "help": "h"}]"#,
                r#"family "conductor_x_total": name: the prefix conductor_ is reserved"#,
            ),
            (
                r#"[{"name": "agent_x", "type": "gauge", "help": "h"}]"#,
                "prefix agent_",
            ),
            (
                r#"[{"name": "process_x", "type": "gauge", "help": "h"}]"#,
                "prefix process_",
            ),
            (
                r#"[{"name": "x", "type": "counter", "help": "h"}]"#,
                r#"family "x": name: a counter's name"#,
            ),
            (
                r#"[{"name": "x_total", "type": "gauge", "help": "h"}]"#,
                "only a counter's",
            ),
            (
                r#"[{"name": "x", "type": "summary", "help": "h"}]"#,
                r#"family "x": type:"#,
            ),
            (
                r#"[{"name": "x", "type": "gauge"}]"#,
                r#"family "x": help: is required"#,
            ),
            (
                r#"[{"name": "x", "type": "gauge", "help": "h", "labels": ["ok", "2x"]}]"#,
                r#"family "x": labels[1]: "2x" is not a valid label name"#,
            ),
            (
                r#"[{"name": "x", "type": "gauge", "help": "h", "labels": ["le"]}]"#,
                "labels[0]",
            ),
            (
                r#"[{"name": "x", "type": "gauge", "help": "h", "labels": ["a", "a"]}]"#,
                "given twice",
            ),
            (
                r#"[{"name": "x", "type": "histogram", "help": "h", "buckets": [2, 1]}]"#,
                r#"family "x": buckets: must be strictly increasing"#,
            ),
            (
                r#"[{"name": "x", "type": "gauge", "help": "h", "buckets": [1]}]"#,
                "only a histogram",
            ),
            (
                r#"[{"name": "x", "type": "gauge", "help": "h", "unit": "s"}]"#,
                r#"family "x": unit: unknown field"#,
            ),
            (
                r#"[{"type": "gauge", "help": "h"}]"#,
                "family [0]: name: is required",
            ),
            (
                r#"[{"name": "a:b", "type": "gauge", "help": "h"}]"#,
                "colons",
            ),
            (
                r#"[{"name": "x", "type": "gauge", "help": "h"}, {"name": "x", "type": "gauge", "help": "h"}]"#,
                "declared twice",
            ),
        ];
        for (text, want) in cases {
            let got = error(text);
            assert!(got.contains(want), "{text}: {got}");
        }
    }
}
