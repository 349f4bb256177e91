//! A JSON request body of one item or an array of them: every batch route's.

use serde_json::Value;

use crate::error::Error;

/// Each item of `value` (an object, or an array's elements) parsed by `parse(i, item)`, whose
/// `(field, message)` error is [`Error::Invalid`] on `{what}s[i].{field}`. An empty batch, one
/// over `max`, or anything but an object or an array is [`Error::Invalid`] on `body`.
pub fn parse<'a, T>(
    value: &'a Value,
    what: &str,
    max: usize,
    mut parse: impl FnMut(usize, &'a Value) -> Result<T, (String, String)>,
) -> Result<Vec<T>, Error> {
    let items: &[Value] = match value {
        Value::Array(items) => items,
        Value::Object(_) => std::slice::from_ref(value),
        _ => {
            let message = format!("must be an {what} object or an array of them");
            return Err(Error::invalid("body", message));
        }
    };
    if items.is_empty() {
        return Err(Error::invalid("body", format!("holds no {what}s")));
    }
    if items.len() > max {
        let n = items.len();
        let message = format!("holds {n} {what}s; at most {max} per batch");
        return Err(Error::invalid("body", message));
    }
    let field = |i: usize, f: String| format!("{what}s[{i}].{f}");
    items
        .iter()
        .enumerate()
        .map(|(i, v)| parse(i, v).map_err(|(f, message)| Error::invalid(&field(i, f), message)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn items<'a>(value: &'a Value, what: &str, max: usize) -> Result<Vec<&'a Value>, Error> {
        parse(value, what, max, |_, v| Ok(v))
    }

    #[test]
    fn one_item_or_a_bounded_array() {
        assert_eq!(items(&json!({"a": 1}), "event", 2).unwrap().len(), 1);
        assert_eq!(items(&json!([{}, {}]), "event", 2).unwrap().len(), 2);
        for bad in [json!([]), json!([{}, {}, {}]), json!(3), json!("x")] {
            match items(&bad, "update", 2) {
                Err(Error::Invalid { field, .. }) => assert_eq!(field, "body", "{bad}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
        let Err(e) = items(&json!([]), "update", 2) else {
            panic!()
        };
        assert_eq!(e.to_string(), "body: holds no updates");
    }
}
