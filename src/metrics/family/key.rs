//! Family keys: label values spelled as words, hashed with a per-family seed, compared, ordered.

use std::cmp::Ordering as Order;

/// The label values of a lookup, hashed by the words of `for_each_word` (which spell each value's
/// length: `["ab","c"]` and `["a","bc"]` differ), and its first words, kept for comparing.
pub(super) struct Lookup<'a> {
    pub(super) values: &'a [&'a str],
    pub(super) hash: u64,
    pub(super) len: usize,
    pub(super) words: [u64; HEAD],
}

/// How many key words a lookup and an index slot keep for comparing.
pub(super) const HEAD: usize = 4;

impl<'a> Lookup<'a> {
    #[inline(always)]
    pub(super) fn new(seed: u64, values: &'a [&'a str]) -> Lookup<'a> {
        let mut key = Lookup {
            values,
            hash: seed,
            len: 0,
            words: [0; HEAD],
        };
        for_each_word(values, |w| {
            key.hash = (key.hash.rotate_left(5) ^ w).wrapping_mul(0x517c_c1b7_2722_0a95);
            if let Some(slot) = key.words.get_mut(key.len) {
                *slot = w;
            }
            key.len += 1;
        });
        // The best-mixed (top) bits go to the bottom, where probing starts: low product bits never
        // see the last word's high bytes, where `id-0001` and `id-0002` differ.
        key.hash = key.hash.swap_bytes();
        key
    }

    /// Whether an index slot's `len` and `head` agree: for keys up to `HEAD` words, equality.
    #[inline(always)]
    pub(super) fn matches_head(&self, len: u32, head: &[u64; HEAD]) -> bool {
        // One branch for all the words: they are usually all equal.
        let differ = head
            .iter()
            .zip(&self.words)
            .fold(0, |d, (a, b)| d | (a ^ b));
        len as usize == self.len.min(HEAD + 1) && differ == 0
    }

    /// Whether a series' key spells the same values (needed past `HEAD` words).
    #[inline(always)]
    pub(super) fn matches(&self, key: &[u64]) -> bool {
        let (mut rest, mut same) = (key.iter(), key.len() == self.len);
        for_each_word(self.values, |w| same &= rest.next() == Some(&w));
        same
    }
}

/// Calls `f` on words that spell `values` unambiguously. A value under 8 bytes is one word with its
/// length in the top byte, which its bytes never reach; a longer one is its length (top byte 0),
/// its whole words, then its last 8 bytes if its length is no multiple of 8.
#[inline(always)]
pub(super) fn for_each_word(values: &[&str], mut f: impl FnMut(u64)) {
    for v in values {
        let (b, n) = (v.as_bytes(), v.len());
        if n < 8 {
            f(short_word(b) | (n as u64) << 56);
            continue;
        }
        f(n as u64);
        (0..n / 8).for_each(|i| f(word(b, 8 * i)));
        if n % 8 != 0 {
            f(word(b, n - 8));
        }
    }
}

/// Orders the values `key` spells against `values`, as lists of byte strings: the render order.
pub(super) fn order(key: &[u64], values: &[&str]) -> Order {
    spelled(key).cmp(values.iter().map(|v| v.as_bytes().to_vec()))
}

/// The values a key's words spell: `for_each_word` undone.
pub(super) fn decode(key: &[u64]) -> Vec<String> {
    let utf8 = |bytes: Vec<u8>| String::from_utf8_lossy(&bytes).into_owned();
    spelled(key).map(utf8).collect()
}

fn spelled(key: &[u64]) -> impl Iterator<Item = Vec<u8>> + '_ {
    let mut words = key.iter();
    std::iter::from_fn(move || {
        let w = *words.next()?;
        let short = (w >> 56) as usize;
        if short > 0 || w == 0 {
            return Some(w.to_le_bytes()[..short].to_vec());
        }
        let n = w as usize;
        let mut bytes = Vec::with_capacity(n);
        for (i, w) in words.by_ref().take(n.div_ceil(8)).enumerate() {
            // The last word holds bytes `n - 8..n`: skip those already had.
            bytes.extend_from_slice(&w.to_le_bytes()[8 * i - (8 * i).min(n - 8)..]);
        }
        Some(bytes)
    })
}

#[inline(always)]
fn word(s: &[u8], at: usize) -> u64 {
    let mut w = [0; 8];
    w.copy_from_slice(&s[at..at + 8]);
    u64::from_le_bytes(w)
}

/// `s` (under 8 bytes) as a little-endian number, read with fixed-size
/// loads only, whose overlaps put each byte at its own place.
#[inline(always)]
fn short_word(s: &[u8]) -> u64 {
    let n = s.len();
    let half = |at: usize| {
        let mut w = [0; 4];
        w.copy_from_slice(&s[at..at + 4]);
        u64::from(u32::from_le_bytes(w)) << (8 * at)
    };
    let byte = |at: usize| u64::from(s[at]) << (8 * at);
    match n {
        0 => 0,
        1..=3 => byte(0) | byte(n / 2) | byte(n - 1),
        _ => half(0) | half(n - 4),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_match_and_order_exactly() {
        let base: String = (0..40).map(|i| char::from(b'0' + i)).collect();
        for n in 0..base.len() {
            let (a, b) = base[..n].split_at(n / 3);
            let mut key = Vec::new();
            for_each_word(&[a, b], |w| key.push(w));
            let check = |values: &[&str]| {
                let same = Lookup::new(1, values).matches(&key);
                assert_eq!(same, values == [a, b], "{values:?}");
                let bytes =
                    |v: &[&str]| v.iter().map(|v| v.as_bytes().to_vec()).collect::<Vec<_>>();
                assert_eq!(order(&key, values), bytes(&[a, b]).cmp(&bytes(values)));
            };
            check(&[a, b]);
            assert_eq!(decode(&key), [a, b]);
            check(&[a]);
            check(&[a, b, ""]);
            check(&[a, &base[n / 3..=n]]);
            check(&[&base[..n], ""]);
            for at in 0..n {
                for by in ["#", "~"] {
                    let mut changed = base[..n].to_string();
                    changed.replace_range(at..=at, by);
                    let (c, d) = changed.split_at(n / 3);
                    check(&[c, d]);
                    assert_ne!(Lookup::new(1, &[a, b]).hash, Lookup::new(1, &[c, d]).hash);
                }
            }
        }
    }
}
