//! Updates to declared families: checked against the declarations, all or nothing, and
//! written to and read from the journal.

use std::collections::HashMap;

use serde_json::Value;

use super::spec::{fail, Declaration, FieldError, Type};
use crate::error::Error;
use crate::json_text;

/// The most updates one request may carry.
pub const MAX_BATCH: usize = 1000;
/// The longest label value, in bytes: values are stored once per series.
pub const MAX_LABEL_VALUE: usize = 256;

/// The operations each type takes, by their names in an update and in the journal.
const OPS: [(Type, &str); 5] = [
    (Type::Counter, "inc"),
    (Type::Counter, "add"),
    (Type::Gauge, "set"),
    (Type::Gauge, "add"),
    (Type::Histogram, "observe"),
];

fn op(kind: Type, key: &str) -> Option<&'static str> {
    OPS.iter().find(|o| o == &&(kind, key)).map(|o| o.1)
}

/// One checked update.
#[derive(Clone, Debug, PartialEq)]
pub struct Update {
    /// The family's index among the declarations.
    pub family: usize,
    /// In the family's label order.
    pub labels: Vec<String>,
    /// One of [`OPS`]'s names for the family's type.
    pub op: &'static str,
    pub value: f64,
}

/// Parses one update object or an array of at most [`MAX_BATCH`], all or nothing; errors
/// name the index and field, e.g. `updates[2].labels.model`.
pub fn parse_batch(
    value: &Value,
    declared: &[Declaration],
    index: &HashMap<String, usize>,
) -> Result<Vec<Update>, Error> {
    crate::batch::parse(value, "update", MAX_BATCH, |_, v| {
        parse_one(v, declared, index)
    })
}

fn parse_one(
    v: &Value,
    declared: &[Declaration],
    index: &HashMap<String, usize>,
) -> Result<Update, FieldError> {
    let Value::Object(map) = v else {
        return fail("name", "the update must be a JSON object");
    };
    let known = ["name", "labels", "inc", "add", "set", "observe"];
    if let Some(k) = map.keys().find(|k| !known.contains(&k.as_str())) {
        return fail(k, "unknown field");
    }
    let name = match map.get("name") {
        Some(Value::String(s)) => s,
        Some(_) => return fail("name", "must be a string"),
        None => return fail("name", "is required"),
    };
    let Some(&family) = index.get(name.as_str()) else {
        return Err((
            "name".into(),
            format!("{name:?} is not declared (see --metrics-file)"),
        ));
    };
    let d = &declared[family];
    let labels = labels(map.get("labels"), d)?;
    let mut given = known[2..].iter().filter(|k| map.contains_key(**k));
    let (Some(&key), None) = (given.next(), given.next()) else {
        return fail("name", "give exactly one of inc, add, set or observe");
    };
    let value = match map.get(key).and_then(Value::as_f64) {
        Some(v) if v.is_finite() => v,
        _ => return fail(key, "must be a finite number"),
    };
    if d.kind == Type::Counter && matches!(key, "inc" | "add") && value < 0.0 {
        return fail(key, "must not be negative: a counter only goes up");
    }
    let Some(op) = op(d.kind, key) else {
        let allowed: Vec<&str> = OPS.iter().filter(|o| o.0 == d.kind).map(|o| o.1).collect();
        let (kind, allowed) = (d.kind.as_str(), allowed.join(" or "));
        let why = format!("is not an operation on a {kind}; use {allowed}");
        return Err((key.into(), why));
    };
    Ok(Update {
        family,
        labels,
        op,
        value,
    })
}

/// The label values of `v`, in the declared order; exactly the declared names.
fn labels(v: Option<&Value>, d: &Declaration) -> Result<Vec<String>, FieldError> {
    let empty = serde_json::Map::new();
    let map = match v {
        None | Some(Value::Null) => &empty,
        Some(Value::Object(m)) => m,
        Some(_) => return Err(("labels".into(), "must be an object of label values".into())),
    };
    if let Some(k) = map.keys().find(|k| !d.labels.contains(k)) {
        let declared = d.labels.join(", ");
        return Err((
            format!("labels.{k}"),
            format!("is not a label of {} (its labels: {declared})", d.name),
        ));
    }
    d.labels
        .iter()
        .map(|l| match map.get(l) {
            Some(Value::String(s)) if s.len() <= MAX_LABEL_VALUE => Ok(s.clone()),
            Some(Value::String(_)) => Err((
                format!("labels.{l}"),
                format!("must be at most {MAX_LABEL_VALUE} bytes"),
            )),
            Some(_) => Err((format!("labels.{l}"), "must be a string".into())),
            None => Err((format!("labels.{l}"), "is required".into())),
        })
        .collect()
}

/// How a start reads label values by position (and counts without bounds), as old stores hold
/// them: `allowed` only on the first start on such a store, which rewrites it with names; `seen`
/// counts those met, taken or not.
#[derive(Debug, Default)]
pub struct Positional {
    pub allowed: bool,
    pub seen: u64,
}

/// The values of `labels` (of a record or snapshot) in `d`'s order: an object with exactly its
/// label names, or as `positional` allows an array of as many (an empty one fits no labels).
/// `None` when they do not fit: a label renamed, added or removed.
pub fn label_values(
    labels: &Value,
    d: &Declaration,
    positional: &mut Positional,
) -> Option<Vec<String>> {
    let owned = |v: &Value| v.as_str().map(str::to_string);
    match labels {
        Value::Object(map) if map.len() == d.labels.len() => d
            .labels
            .iter()
            .map(|l| map.get(l).and_then(owned))
            .collect(),
        Value::Array(values) if values.is_empty() && d.labels.is_empty() => Some(Vec::new()),
        Value::Array(values) => {
            positional.seen += 1;
            let fits = positional.allowed && values.len() == d.labels.len();
            fits.then(|| values.iter().map(owned).collect())?
        }
        _ => None,
    }
}

/// The journal record of a batch, `{"u":[["name",{"label":"value",...},"op",value],...]}`:
/// names, so a changed declarations file cannot misread it; a replay buckets observations.
pub fn record(updates: &[Update], declared: &[Declaration]) -> Vec<u8> {
    let mut out = String::with_capacity(16 + updates.len() * 48);
    out.push_str("{\"u\":[");
    for (i, u) in updates.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('[');
        let d = &declared[u.family];
        json_text::push_str(&mut out, &d.name);
        out.push_str(",{");
        for (j, (name, value)) in d.labels.iter().zip(&u.labels).enumerate() {
            if j > 0 {
                out.push(',');
            }
            json_text::push_str(&mut out, name);
            out.push(':');
            json_text::push_str(&mut out, value);
        }
        out.push_str("},\"");
        out.push_str(u.op);
        out.push_str("\",");
        json_text::push_f64(&mut out, u.value);
        out.push(']');
    }
    out.push_str("]}");
    out.into_bytes()
}

/// Reads a journal record back; updates no longer declared so go to `skipped`, as they were.
pub fn from_record(
    bytes: &[u8],
    declared: &[Declaration],
    index: &HashMap<String, usize>,
    skipped: &mut Vec<Value>,
    positional: &mut Positional,
) -> Vec<Update> {
    let Ok(v) = serde_json::from_slice::<Value>(bytes) else {
        skipped.push(Value::String(String::from_utf8_lossy(bytes).into_owned()));
        return Vec::new();
    };
    let mut out = Vec::new();
    for item in v["u"].as_array().into_iter().flatten() {
        let parsed = (|| {
            let family = *index.get(item[0].as_str()?)?;
            let labels = label_values(&item[1], &declared[family], positional)?;
            let op = op(declared[family].kind, item[2].as_str()?)?;
            let value = item[3].as_f64()?;
            Some(Update {
                family,
                labels,
                op,
                value,
            })
        })();
        match parsed {
            Some(u) => out.push(u),
            None => skipped.push(item.clone()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::declared::spec;
    use serde_json::json;

    fn declared() -> (Vec<Declaration>, HashMap<String, usize>) {
        let d = spec::parse(
            r#"[{"name": "llm_requests_total", "type": "counter", "help": "h", "labels": ["model", "result"]},
                {"name": "git_active_merges", "type": "gauge", "help": "h"},
                {"name": "git_merge_duration_seconds", "type": "histogram", "help": "h"}]"#,
        )
        .unwrap();
        let index = d
            .iter()
            .enumerate()
            .map(|(i, d)| (d.name.clone(), i))
            .collect();
        (d, index)
    }

    fn field(v: Value) -> String {
        let (d, index) = declared();
        match parse_batch(&v, &d, &index) {
            Err(Error::Invalid { field, .. }) => field,
            other => panic!("{v}: {other:?}"),
        }
    }

    #[test]
    fn parses_each_operation_and_round_trips_through_the_journal() {
        let (d, index) = declared();
        let batch = json!([
            {"name": "llm_requests_total", "labels": {"result": "ok", "model": "m \"x\""}, "inc": 1},
            {"name": "llm_requests_total", "labels": {"model": "m", "result": "ok"}, "add": 2.5},
            {"name": "git_active_merges", "set": -3},
            {"name": "git_active_merges", "labels": {}, "add": -1.5},
            {"name": "git_merge_duration_seconds", "observe": 0.25},
        ]);
        let updates = parse_batch(&batch, &d, &index).unwrap();
        assert_eq!(updates[0].labels, ["m \"x\"", "ok"]);
        assert_eq!((updates[2].op, updates[2].value), ("set", -3.0));
        let mut skipped = Vec::new();
        let line = record(&updates, &d);
        let named: Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(
            named["u"][0][1],
            json!({"model": "m \"x\"", "result": "ok"})
        );
        let mut positional = Positional::default();
        let back = from_record(&line, &d, &index, &mut skipped, &mut positional);
        assert_eq!(back, updates);
        assert!(skipped.is_empty());
        assert_eq!(positional.seen, 0);
    }

    #[test]
    fn refusals_name_the_index_and_field() {
        let ok = json!({"name": "git_active_merges", "set": 1});
        assert_eq!(
            field(json!([ok, {"name": "nope", "inc": 1}])),
            "updates[1].name"
        );
        assert_eq!(
            field(json!({"name": "llm_requests_total", "labels": {"model": "m"}, "inc": 1})),
            "updates[0].labels.result"
        );
        assert_eq!(
            field(
                json!({"name": "llm_requests_total", "labels": {"model": "m", "result": "ok", "x": "y"}, "inc": 1})
            ),
            "updates[0].labels.x"
        );
        assert_eq!(
            field(
                json!({"name": "llm_requests_total", "labels": {"model": 1, "result": "ok"}, "inc": 1})
            ),
            "updates[0].labels.model"
        );
        assert_eq!(
            field(
                json!({"name": "llm_requests_total", "labels": {"model": "m", "result": "ok"}, "inc": -1})
            ),
            "updates[0].inc"
        );
        assert_eq!(
            field(
                json!({"name": "llm_requests_total", "labels": {"model": "m", "result": "ok"}, "set": 1})
            ),
            "updates[0].set"
        );
        assert_eq!(
            field(json!({"name": "git_active_merges", "inc": 1})),
            "updates[0].inc"
        );
        assert_eq!(
            field(json!({"name": "git_merge_duration_seconds", "add": 1})),
            "updates[0].add"
        );
        assert_eq!(
            field(json!({"name": "git_active_merges", "set": "NaN"})),
            "updates[0].set"
        );
        assert_eq!(
            field(json!({"name": "git_active_merges", "set": 1, "add": 1})),
            "updates[0].name"
        );
        assert_eq!(
            field(json!({"name": "git_active_merges"})),
            "updates[0].name"
        );
        assert_eq!(
            field(json!({"name": "git_active_merges", "set": 1, "colour": 1})),
            "updates[0].colour"
        );
        assert_eq!(field(json!([])), "body");
        let too_many: Vec<Value> = (0..=MAX_BATCH).map(|_| ok.clone()).collect();
        assert_eq!(field(Value::Array(too_many)), "body");
    }

    #[test]
    fn records_of_families_no_longer_declared_are_skipped() {
        let (d, index) = declared();
        let mut skipped = Vec::new();
        let line = br#"{"u":[["gone_total",{},"inc",1],["git_active_merges",{},"set",4],["git_active_merges",{},"observe",1]]}"#;
        let back = from_record(line, &d, &index, &mut skipped, &mut Positional::default());
        assert_eq!(back.len(), 1);
        let kept = json!([
            ["gone_total", {}, "inc", 1],
            ["git_active_merges", {}, "observe", 1]
        ]);
        assert_eq!(Value::Array(skipped), kept, "kept as they were");
    }

    #[test]
    fn labels_are_matched_by_name_and_by_position_only_in_a_store_from_before_names() {
        let (d, index) = declared();
        let read = |line: &[u8], positional: &mut Positional| {
            let mut skipped = Vec::new();
            let back = from_record(line, &d, &index, &mut skipped, positional);
            (back, skipped.len())
        };
        let mut named = Positional::default();
        let other_order = br#"{"u":[["llm_requests_total",{"result":"ok","model":"m"},"inc",1]]}"#;
        let (back, skipped) = read(other_order, &mut named);
        assert_eq!(
            (back[0].labels.clone(), skipped),
            (vec!["m".into(), "ok".into()], 0)
        );
        for renamed in [
            br#"{"u":[["llm_requests_total",{"model":"m","outcome":"ok"},"inc",1]]}"#.as_slice(),
            br#"{"u":[["llm_requests_total",{"model":"m"},"inc",1]]}"#,
            br#"{"u":[["llm_requests_total",{"model":"m","result":"ok","x":"y"},"inc",1]]}"#,
            br#"{"u":[["llm_requests_total",{"model":"m","result":1},"inc",1]]}"#,
        ] {
            assert_eq!(read(renamed, &mut named), (Vec::new(), 1));
        }
        let by_position = br#"{"u":[["llm_requests_total",["m","ok"],"inc",1],["git_active_merges",[],"set",2]]}"#;
        let (back, skipped) = read(by_position, &mut named);
        assert_eq!((back.len(), skipped, named.seen), (1, 1, 1), "kept aside");
        let mut legacy = Positional {
            allowed: true,
            seen: 0,
        };
        let (back, skipped) = read(by_position, &mut legacy);
        assert_eq!((back.len(), skipped, legacy.seen), (2, 0, 1));
        assert_eq!(back[0].labels, ["m", "ok"]);
    }
}
