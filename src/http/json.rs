//! Strict JSON request bodies: known fields of known types; errors name the field.

use serde_json::{Map, Value};

use crate::error::Error;

/// A parsed JSON object body whose keys were checked against a list.
pub struct Body(Map<String, Value>);

impl Body {
    /// Parses a JSON object with only the space-separated `allowed` keys; empty is `{}`.
    pub fn parse(bytes: &[u8], allowed: &str) -> Result<Body, Error> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Body(Map::new()));
        }
        let Value::Object(map) = Body::parse_value(bytes)? else {
            return Err(Error::invalid("body", "must be a JSON object"));
        };
        if let Some(unknown) = map.keys().find(|k| !allowed.split(' ').any(|a| a == *k)) {
            return Err(Error::invalid(unknown, "unknown field"));
        }
        Ok(Body(map))
    }

    /// Parses a body that may be one object or an array of them.
    pub fn parse_value(bytes: &[u8]) -> Result<Value, Error> {
        serde_json::from_slice(bytes)
            .map_err(|e| Error::invalid("body", format!("not valid JSON: {e}")))
    }

    /// An optional field that `get` reads, or else `must`; `null` counts as absent.
    fn opt<T>(
        &self,
        field: &str,
        must: &str,
        get: fn(&Value) -> Option<T>,
    ) -> Result<Option<T>, Error> {
        match self.0.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => get(v).map(Some).ok_or_else(|| Error::invalid(field, must)),
        }
    }

    pub fn opt_str(&self, field: &str) -> Result<Option<String>, Error> {
        let text = |v: &Value| v.as_str().map(str::to_string);
        self.opt(field, "must be a string", text)
    }

    /// An optional free-text field of a run, at most `runs::MAX_TEXT_BYTES`, as on every route.
    pub fn opt_text(&self, field: &str) -> Result<Option<String>, Error> {
        match self.opt_str(field)? {
            Some(t) if t.len() > crate::runs::MAX_TEXT_BYTES => {
                Err(Error::invalid(field, crate::runs::text_too_long()))
            }
            text => Ok(text),
        }
    }

    pub fn str(&self, field: &str) -> Result<String, Error> {
        self.opt_str(field)?
            .ok_or_else(|| Error::invalid(field, "is required"))
    }

    pub fn opt_f64(&self, field: &str) -> Result<Option<f64>, Error> {
        self.opt(field, "must be a number", Value::as_f64)
    }

    pub fn opt_u64(&self, field: &str) -> Result<Option<u64>, Error> {
        self.opt(field, "must be a non-negative integer", Value::as_u64)
    }

    pub fn any(&self, field: &str) -> Option<&Value> {
        self.0.get(field)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_field_at_fault() {
        let e = Body::parse(br#"{"agent": 3}"#, "agent")
            .unwrap()
            .opt_str("agent");
        assert_eq!(e, Err(Error::invalid("agent", "must be a string")));
        let e = Body::parse(br#"{"agnet": "x"}"#, "agent").err().unwrap();
        assert_eq!(e, Error::invalid("agnet", "unknown field"));
        assert!(Body::parse(b"[1]", "").is_err());
        assert!(Body::parse(b"{", "").is_err());
        assert!(Body::parse(b"  ", "").is_ok());
        let b = Body::parse(br#"{"n": -1, "ok": true, "x": null}"#, "n ok x").unwrap();
        assert!(b.opt_u64("n").is_err());
        assert!(b.opt_str("ok").is_err());
        assert_eq!(b.opt_str("x"), Ok(None));
        assert!(b.str("missing").is_err());
    }
}
