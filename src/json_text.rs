//! JSON text written straight into a `String`, for hot paths that would build a `Value` only to
//! print it. The bytes are serde_json's, so callers write keys in its order: sorted (its `Map` is
//! a `BTreeMap` in this build).

use std::fmt::Write;

use serde_json::{Number, Value};

/// Appends `s` as a quoted, escaped JSON string.
pub fn push_str(out: &mut String, s: &str) {
    // Names and ids are almost always plain: only text that needs escaping pays for serde_json's.
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.reserve(s.len() + 2);
        out.push('"');
        out.push_str(s);
        out.push('"');
    } else {
        // Serializing a str cannot fail.
        out.push_str(&serde_json::to_string(s).unwrap_or_default());
    }
}

pub fn push_opt_str(out: &mut String, s: Option<&str>) {
    push_opt(out, s, push_str)
}

fn push_opt<T>(out: &mut String, x: Option<T>, push: fn(&mut String, T)) {
    match x {
        Some(x) => push(out, x),
        None => out.push_str("null"),
    }
}

pub fn push_u64(out: &mut String, n: u64) {
    // Writing into a String cannot fail.
    let _ = write!(out, "{n}");
}

pub fn push_opt_u64(out: &mut String, n: Option<u64>) {
    push_opt(out, n, push_u64)
}

/// Appends `x` as serde_json prints an `f64` (`1500.0`, `0.1`); `null` if not finite, as `json!`.
pub fn push_f64(out: &mut String, x: f64) {
    match Number::from_f64(x) {
        // Writing into a String cannot fail.
        Some(n) => {
            let _ = write!(out, "{n}");
        }
        None => out.push_str("null"),
    }
}

pub fn push_opt_f64(out: &mut String, x: Option<f64>) {
    push_opt(out, x, push_f64)
}

pub fn push_bool(out: &mut String, b: bool) {
    out.push_str(if b { "true" } else { "false" });
}

/// Appends any value, compact.
pub fn push_value(out: &mut String, v: &Value) {
    match v {
        Value::String(s) => push_str(out, s),
        // Writing into a String cannot fail.
        other => {
            let _ = write!(out, "{other}");
        }
    }
}

/// Appends `"key":`; `key` must need no escaping (it is one of ours).
pub fn push_key(out: &mut String, key: &str) {
    out.push('"');
    out.push_str(key);
    out.push_str("\":");
}

/// Adds `"key":raw` as the last member of the object in `object` (`key` needs no escaping): `raw`
/// goes in as it is, carrying a client's text byte for byte, which a `Value` would reorder.
pub fn push_raw_member(object: &mut String, key: &str, raw: &str) {
    // serde_json prints an object without whitespace, so `{}` is the only one without a member.
    if object.ends_with('}') {
        object.pop();
    }
    if !object.ends_with('{') {
        object.push(',');
    }
    push_key(object, key);
    object.push_str(raw);
    object.push('}');
}

/// `text`, one JSON value, on one line: when it has a line break, every whitespace between tokens
/// is taken out (a line break can only be such whitespace, being escaped inside strings).
pub fn one_line(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.contains(['\n', '\r']) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let (mut in_string, mut escaped) = (false, false);
    for c in text.chars() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if !matches!(c, ' ' | '\t' | '\n' | '\r') {
            in_string = c == '"';
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn raw_members_go_last_and_as_given() {
        for (object, want) in [
            ("{}", r#"{"m":{"b": 1,"a":2.50}}"#),
            (r#"{"x":1}"#, r#"{"x":1,"m":{"b": 1,"a":2.50}}"#),
        ] {
            let mut text = object.to_string();
            push_raw_member(&mut text, "m", r#"{"b": 1,"a":2.50}"#);
            assert_eq!(text, want);
            serde_json::from_str::<serde_json::Value>(&text).unwrap();
        }
    }

    #[test]
    fn one_line_keeps_single_lines_and_strips_only_whitespace_between_tokens() {
        let single = r#"{"b": 1, "a" :[1.50, "x y"]}"#;
        assert!(matches!(one_line(single), std::borrow::Cow::Borrowed(t) if t == single));
        let multi = "{\n  \"b\": 1,\r\n\t\"s\": \"a \\\" {\\n} b\",\n  \"a\": [1e3, true]\n}";
        let flat = one_line(multi);
        assert_eq!(flat, r#"{"b":1,"s":"a \" {\n} b","a":[1e3,true]}"#);
        let (a, b): (serde_json::Value, serde_json::Value) = (
            serde_json::from_str(multi).unwrap(),
            serde_json::from_str(&flat).unwrap(),
        );
        assert_eq!(a, b);
    }

    #[test]
    fn strings_escape_like_serde_json() {
        for s in [
            "",
            "plain-id_1.2:3",
            "quote \" and \\ back",
            "ctl \u{1}\u{8}\t\n\u{c}\r\u{1f}\u{7f}",
            "ünï cødé ✓ 😀",
            "</script>",
        ] {
            let mut out = String::new();
            push_str(&mut out, s);
            assert_eq!(out, json!(s).to_string(), "{s:?}");
            let mut out = String::new();
            push_value(&mut out, &json!(s));
            assert_eq!(out, json!(s).to_string(), "{s:?}");
        }
    }

    #[test]
    fn numbers_print_like_serde_json() {
        for x in [
            0.0,
            -0.0,
            5.0,
            1500.0,
            0.1,
            1e21,
            1.5e-7,
            1_795_439_678.123_456,
            f64::NAN,
            f64::INFINITY,
        ] {
            let mut out = String::new();
            push_f64(&mut out, x);
            assert_eq!(out, json!(x).to_string(), "{x}");
        }
        for n in [0, 7, u64::MAX] {
            let mut out = String::new();
            push_u64(&mut out, n);
            assert_eq!(out, json!(n).to_string());
        }
        let mut out = String::new();
        push_opt_u64(&mut out, None);
        push_opt_f64(&mut out, None);
        push_opt_str(&mut out, None);
        push_bool(&mut out, true);
        push_key(&mut out, "k");
        push_value(&mut out, &json!({"b": [1, null], "a": "x"}));
        assert_eq!(out, "nullnullnulltrue\"k\":{\"a\":\"x\",\"b\":[1,null]}");
    }
}
