//! The fast path of event batches: the common shape parsed straight from the bytes;
//! 1.36-1.43x the events per second of [`super::event::parse_batch`] alone (`bench-http`
//! `events_ingest`, 2026-12-07). Events are built by [`super::event::build`] too.

use super::event::{allowed_fields, build, EventFields, Raw, Timed, MAX_BATCH};

/// Parses an array of plain events (no escapes, integers only, no `timestamp` but null, no
/// repeated keys) into exactly what `parse_batch` would; `None` for anything else.
pub fn parse_plain_batch(bytes: &[u8], now: f64) -> Option<Vec<Timed>> {
    // Every byte of a plain batch outside its strings is ASCII, so one check of the whole
    // stands for one per string.
    let s = std::str::from_utf8(bytes).ok()?;
    let mut p = Cursor { b: bytes, s, i: 0 };
    p.ws();
    p.eat(b'[')?;
    let mut events = Vec::with_capacity(bytes.len() / 64);
    // One for the batch: filling an array per event cost more than its fields.
    let mut fields = PlainFields {
        keys: [("", Raw::Null); PLAIN_KEYS],
        len: 0,
    };
    loop {
        p.ws();
        events.push(p.event(&mut fields, now)?);
        if events.len() > MAX_BATCH {
            return None;
        }
        p.ws();
        match p.next()? {
            b',' => continue,
            b']' => break,
            _ => return None,
        }
    }
    p.ws();
    (p.i == bytes.len()).then_some(events)
}

/// `type`, `timestamp` and the four fields of `tokens`.
const PLAIN_KEYS: usize = 6;

struct PlainFields<'a> {
    keys: [(&'a str, Raw<'a>); PLAIN_KEYS],
    len: usize,
}

impl EventFields for PlainFields<'_> {
    fn raw(&self, k: &str) -> Option<Raw<'_>> {
        self.keys[..self.len]
            .iter()
            .find(|(key, _)| same(key, k))
            .map(|(_, v)| *v)
    }
}

/// `a == b`, the lengths compared inline first: most keys differ in length, and a `str`
/// comparison is a call.
#[inline(always)]
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a == b
}

/// The cursor of [`parse_plain_batch`]; every method gives up with `None`.
struct Cursor<'a> {
    b: &'a [u8],
    /// `b` as text.
    s: &'a str,
    i: usize,
}

impl<'a> Cursor<'a> {
    // The byte steps run for nearly every byte of a batch: a call each costs more than the step.
    #[inline(always)]
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    #[inline(always)]
    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    #[inline(always)]
    fn next(&mut self) -> Option<u8> {
        let c = *self.b.get(self.i)?;
        self.i += 1;
        Some(c)
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        (self.next()? == c).then_some(())
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        let end = self.i + word.len();
        (self.b.get(self.i..end)? == word).then(|| self.i = end)
    }

    /// A string without escapes or control characters.
    fn string(&mut self) -> Option<&'a str> {
        self.eat(b'"')?;
        let start = self.i;
        // One scan to the first byte that ends the string or makes it other than plain.
        let len = self.b[start..]
            .iter()
            .position(|&c| c == b'"' || c == b'\\' || c < 0x20)?;
        self.i = start + len + 1;
        (self.b[start + len] == b'"').then_some(())?;
        self.s.get(start..start + len)
    }

    fn value(&mut self) -> Option<Raw<'a>> {
        match self.peek()? {
            b'"' => self.string().map(Raw::Str),
            b't' => self.literal(b"true").map(|()| Raw::Bool(true)),
            b'f' => self.literal(b"false").map(|()| Raw::Bool(false)),
            b'n' => self.literal(b"null").map(|()| Raw::Null),
            b'0'..=b'9' => {
                let start = self.i;
                let mut n: u64 = 0;
                while let Some(c @ b'0'..=b'9') = self.peek() {
                    n = n.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
                    self.i += 1;
                }
                // JSON allows no leading zero; `0.5` and `1e1` are left to serde_json.
                let zero_led = self.b[start] == b'0' && self.i - start > 1;
                (!zero_led && !matches!(self.peek(), Some(b'.' | b'e' | b'E')))
                    .then_some(Raw::Int(n))
            }
            _ => None,
        }
    }

    fn event(&mut self, f: &mut PlainFields<'a>, now: f64) -> Option<Timed> {
        self.eat(b'{')?;
        f.len = 0;
        self.ws();
        if self.peek() == Some(b'}') {
            return None;
        }
        loop {
            self.ws();
            let key = self.string()?;
            if f.len == PLAIN_KEYS || f.raw(key).is_some() {
                return None;
            }
            self.ws();
            self.eat(b':')?;
            self.ws();
            f.keys[f.len] = (key, self.value()?);
            f.len += 1;
            self.ws();
            match self.next()? {
                b',' => continue,
                b'}' => break,
                _ => return None,
            }
        }
        let Raw::Str(kind) = f.raw("type")? else {
            return None;
        };
        let allowed = allowed_fields(kind)?;
        let known =
            |k: &str| same(k, "type") || same(k, "timestamp") || allowed.iter().any(|a| same(a, k));
        if !f.keys[..f.len].iter().all(|(k, _)| known(k)) {
            return None;
        }
        if !matches!(f.raw("timestamp"), None | Some(Raw::Null)) {
            return None;
        }
        let event = build(kind, f).ok()?;
        Some(Timed {
            at: now,
            event,
            extra: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runs::event::parse_batch;
    use serde_json::Value;

    /// What the slow path makes of `bytes`, as the handler runs it.
    fn slow(bytes: &[u8], now: f64) -> Option<Vec<Timed>> {
        let v: Value = serde_json::from_slice(bytes).ok()?;
        parse_batch(&v, now).ok()
    }

    #[test]
    fn plain_batches_parse_as_the_general_parser_does() {
        let body = r#" [{"type": "phase_started", "phase": "design"},
            {"type":"tokens","phase":"design","model":"m-1","input_tokens":100,"output_tokens":0},
            {"type": "gate_checked", "gate": "gate-0", "passed": false, "reason": null},
            {"type": "phase_completed", "phase": "design", "success": true, "duration_ms": 1500},
            {"type": "iteration_started", "iteration": 7, "timestamp": null},
            {"type": "delivery_completed", "success": true, "pr_url": "hé", "ci_status": null},
            {"type": "delivery_started"} ]
"#
        .as_bytes();
        let fast = parse_plain_batch(body, 12.5).expect("a plain batch");
        assert_eq!(Some(fast), slow(body, 12.5));
        // Every one-byte change either gives up or agrees with serde_json.
        let mut agreed = 0;
        for i in 0..body.len() {
            let mut variants: Vec<Vec<u8>> = b"0 9-.e\"{}[],:nx\\\x01\xff"
                .iter()
                .map(|&c| {
                    let mut v = body.to_vec();
                    v[i] = c;
                    v
                })
                .collect();
            let mut cut = body.to_vec();
            cut.remove(i);
            variants.push(cut);
            for v in variants {
                if let Some(fast) = parse_plain_batch(&v, 3.0) {
                    assert_eq!(Some(fast), slow(&v, 3.0), "{}", String::from_utf8_lossy(&v));
                    agreed += 1;
                }
            }
        }
        assert!(agreed > 100, "{agreed}");
        let give_up: [&[u8]; 12] = [
            b"[]",
            b"{\"type\": \"delivery_started\"}",
            b"[{\"type\": \"delivery_started\", \"type\": \"delivery_started\"}]",
            b"[{\"type\": \"delivery_started\", \"timestamp\": 5}]",
            b"[{\"type\": \"iteration_started\", \"iteration\": 01}]",
            b"[{\"type\": \"iteration_started\", \"iteration\": 1.0}]",
            b"[{\"type\": \"iteration_started\", \"iteration\": 18446744073709551616}]",
            b"[{\"type\": \"phase_started\", \"phase\": \"a\\u0062\"}]",
            b"[{\"type\": \"phase_started\", \"phase\": \"has space\"}]",
            b"[{\"type\": \"delivery_started\"}] x",
            b"[{}]",
            b"[{\"type\": \"delivery_started\", \"extra\": 1}]",
        ];
        for body in give_up {
            assert!(
                parse_plain_batch(body, 0.0).is_none(),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        let max = format!(
            "[{}]",
            vec![r#"{"type":"delivery_started"}"#; MAX_BATCH].join(",")
        );
        assert_eq!(
            parse_plain_batch(max.as_bytes(), 0.0).map(|e| e.len()),
            Some(MAX_BATCH)
        );
        let over = format!(
            "[{}]",
            vec![r#"{"type":"delivery_started"}"#; MAX_BATCH + 1].join(",")
        );
        assert!(parse_plain_batch(over.as_bytes(), 0.0).is_none());
    }
}
