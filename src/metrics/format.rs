//! Number formatting and escaping for the text formats. Values are written as Go's
//! `strconv.AppendFloat(f, 'g', -1, 64)` does, as every consumer was tested against client_golang:
//! shortest round-trip digits, an exponent below 1e-4 or from 1e6 (`1e+06`), `+Inf`, `-Inf`, `NaN`.
//! `le` uses the same string, where another spelling would be another series.

use std::io::Write;

/// Appends `v` as the Go client writes a float in text format 0.0.4.
pub fn write_float(out: &mut Vec<u8>, v: f64) {
    // Whole numbers below 1e6 (counts), by far the commonest, skip digit generation; the i64
    // round trip skips `trunc`.
    if v.abs() < 1e6 && v as i64 as f64 == v {
        if v < 0.0 {
            out.push(b'-');
        }
        write_uint(out, (v as i64).unsigned_abs());
        return;
    }
    if write_micros(out, v) {
        return;
    }
    if v.is_nan() {
        out.extend_from_slice(b"NaN");
    } else if v.is_infinite() {
        out.extend_from_slice(if v > 0.0 { b"+Inf" } else { b"-Inf" });
    } else {
        write_general(out, v);
    }
}

/// Appends `v` as the Go OpenMetrics writer does: [`write_float`], `.0` added to a whole number.
pub fn write_float_openmetrics(out: &mut Vec<u8>, v: f64) {
    let start = out.len();
    write_float(out, v);
    if out[start..]
        .iter()
        .all(|b| b.is_ascii_digit() || *b == b'-')
    {
        out.extend_from_slice(b".0");
    }
}

/// Appends an unsigned integer in decimal, without going through `fmt`.
#[inline]
pub fn write_uint(out: &mut Vec<u8>, mut v: u64) {
    if let Some(v) = u32::try_from(v).ok().filter(|&v| v < 100_000_000) {
        write_small_uint(out, v);
        return;
    }
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

/// [`write_uint`] below 10^8, inlined: the digits are made in a register and stored as one 8-byte
/// word, then the buffer cut back to their length, cheaper than copying an exact length.
#[inline(always)]
pub(crate) fn write_small_uint(out: &mut Vec<u8>, mut v: u32) {
    // Little-endian, the first character lowest: each step shifts the digits so far up and puts
    // the ones before below. The bound on `n`, never reached below 10^8, unrolls the loop.
    let (mut word, mut n) = (0u64, 0);
    while v >= 10 && n < 8 {
        let pair = (v % 100) as usize * 2;
        v /= 100;
        let pair = u16::from_le_bytes([DIGIT_PAIRS[pair], DIGIT_PAIRS[pair + 1]]);
        word = word << 16 | u64::from(pair);
        n += 2;
    }
    if v > 0 || n == 0 {
        word = word << 8 | u64::from(b'0' + v as u8);
        n += 1;
    }
    let len = out.len() + n;
    out.extend_from_slice(&word.to_le_bytes());
    out.truncate(len);
}

/// `"00"` to `"99"`, so that digits are produced two at a time.
const DIGIT_PAIRS: &[u8; 200] = b"\
    0001020304050607080910111213141516171819\
    2021222324252627282930313233343536373839\
    4041424344454647484950515253545556575859\
    6061626364656667686970717273747576777879\
    8081828384858687888990919293949596979899";

/// Writes `v` if it is a whole number of millionths in `[1e-4, 1e6)` (micro-dollars, microseconds),
/// where Go's `%g` is fixed; the general path costs several times more. The digits are shortest:
/// `n / 1e6 == v` proves the decimal parses back to `v`, and below 1e6 doubles are closer than a
/// millionth, so no shorter decimal is `v`.
#[inline]
fn write_micros(out: &mut Vec<u8>, v: f64) -> bool {
    let a = v.abs();
    if !(1e-4..1e6).contains(&a) {
        return false;
    }
    let n = (a * 1e6).round();
    if n / 1e6 != a {
        return false;
    }
    let n = n as u64;
    if v < 0.0 {
        out.push(b'-');
    }
    write_uint(out, n / 1_000_000);
    let frac = (n % 1_000_000) as u32;
    if frac > 0 {
        // `1dddddd` with its `1` made the point and its trailing zeros cut.
        let point = out.len();
        write_small_uint(out, frac + 1_000_000);
        out[point] = b'.';
        while out.last() == Some(&b'0') {
            out.pop();
        }
    }
    true
}

/// Rust's `{:e}` and `{}` give the shortest digits; `%g` picks by the exponent, signed, 2 digits.
fn write_general(out: &mut Vec<u8>, v: f64) {
    let sci = format!("{v:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    // Writing to a Vec cannot fail.
    let _ = if (-4..6).contains(&exp) {
        write!(out, "{v}")
    } else {
        let sign = if exp < 0 { '-' } else { '+' };
        write!(out, "{mantissa}e{sign}{:02}", exp.unsigned_abs())
    };
}

/// Appends `a="x",b="y"`, each value escaped.
pub(crate) fn write_labels<'a>(
    out: &mut Vec<u8>,
    labels: impl Iterator<Item = (&'a str, &'a str)>,
) {
    for (i, (name, value)) in labels.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b"=\"");
        write_label_value(out, value);
        out.push(b'"');
    }
}

/// Appends a label value, or OpenMetrics HELP text, with `\`, `"` and newline escaped.
pub fn write_label_value(out: &mut Vec<u8>, value: &str) {
    escape(out, value, true)
}

/// Appends 0.0.4 HELP text, escaping only `\` and newline (`"` would break older promtool).
pub fn write_help(out: &mut Vec<u8>, help: &str) {
    escape(out, help, false)
}

fn escape(out: &mut Vec<u8>, text: &str, quote: bool) {
    // Plain runs copied whole, not a push per byte.
    let mut rest = text.as_bytes();
    let special = |&b: &u8| b == b'\\' || b == b'\n' || (quote && b == b'"');
    while let Some(i) = rest.iter().position(special) {
        out.extend_from_slice(&rest[..i]);
        out.extend_from_slice(match rest[i] {
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            _ => b"\\\"",
        });
        rest = &rest[i + 1..];
    }
    out.extend_from_slice(rest);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn go(v: f64) -> String {
        let mut out = Vec::new();
        write_float(&mut out, v);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn floats_match_go_strconv_g() {
        let cases: &[(f64, &str)] = &[
            (0.0, "0"),
            (-0.0, "0"),
            (1.0, "1"),
            (-1.0, "-1"),
            (0.1, "0.1"),
            (0.5, "0.5"),
            (2.5, "2.5"),
            (3600.0, "3600"),
            (999_999.0, "999999"),
            (1e6, "1e+06"),
            (1_234_567.0, "1.234567e+06"),
            (123_456.7, "123456.7"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1.5e-7, "1.5e-07"),
            (1e21, "1e+21"),
            (1e100, "1e+100"),
            (-2.5e-300, "-2.5e-300"),
            (f64::MAX, "1.7976931348623157e+308"),
            (f64::MIN_POSITIVE, "2.2250738585072014e-308"),
            (5e-324, "5e-324"),
            (0.1 + 0.2, "0.30000000000000004"),
            (f64::INFINITY, "+Inf"),
            (f64::NEG_INFINITY, "-Inf"),
            (f64::NAN, "NaN"),
            (18_446_744_073_709_551_615.0, "1.8446744073709552e+19"),
        ];
        for (v, want) in cases {
            assert_eq!(go(*v), *want, "{v:?}");
        }
    }

    #[test]
    fn the_millionths_path_writes_what_the_general_path_does() {
        let general = |v: f64| {
            let mut out = Vec::new();
            write_general(&mut out, v);
            String::from_utf8(out).unwrap()
        };
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut taken = 0;
        for i in 0..200_000u64 {
            let v = match i % 4 {
                // Decimals of up to six places, across the range.
                0 => (next() % 1_000_000_000_000) as f64 / 1e6,
                1 => (next() % 1_000_000) as f64 / 1e6 * if i % 8 == 1 { -1.0 } else { 1.0 },
                // Sums that drift off the grid, and arbitrary doubles.
                2 => (next() % 1000) as f64 * 0.1 + 0.2,
                _ => f64::from_bits(next() >> 2),
            };
            let mut fast = Vec::new();
            if write_micros(&mut fast, v) {
                taken += 1;
                assert_eq!(String::from_utf8(fast).unwrap(), general(v), "{v:?}");
            }
        }
        assert!(taken > 100_000, "{taken}");
        let mut out = Vec::new();
        assert!(write_micros(&mut out, 5.70372));
        assert_eq!(out, b"5.70372");
        for v in [5.703720000000001, 0.00001, 1e6, 0.1 + 0.2] {
            assert!(!write_micros(&mut Vec::new(), v), "{v}");
        }
    }

    #[test]
    fn floats_round_trip() {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let v = f64::from_bits(x);
            let s = go(v);
            if v.is_nan() {
                assert_eq!(s, "NaN");
                continue;
            }
            let parsed: f64 = s
                .replace("+Inf", "inf")
                .replace("-Inf", "-inf")
                .parse()
                .unwrap();
            assert_eq!(parsed, v, "{s}");
        }
    }

    #[test]
    fn openmetrics_floats_keep_a_point() {
        let om = |v: f64| {
            let mut out = Vec::new();
            write_float_openmetrics(&mut out, v);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(om(1.0), "1.0");
        assert_eq!(om(-3.0), "-3.0");
        assert_eq!(om(0.25), "0.25");
        assert_eq!(om(1e6), "1e+06");
        assert_eq!(om(f64::INFINITY), "+Inf");
        assert_eq!(om(f64::NAN), "NaN");
    }

    #[test]
    fn escaping_is_exact() {
        let mut out = Vec::new();
        write_label_value(&mut out, "a\\b\"c\nd}\t{é\r");
        assert_eq!(out, b"a\\\\b\\\"c\\nd}\t{\xc3\xa9\r");
        out.clear();
        write_help(&mut out, "a\\b\"c\nd");
        assert_eq!(out, b"a\\\\b\"c\\nd");
        out.clear();
        write_label_value(&mut out, "a\\b\"c\nd");
        assert_eq!(out, b"a\\\\b\\\"c\\nd");
    }

    #[test]
    fn integers() {
        let mut out = Vec::new();
        write_uint(&mut out, u64::MAX);
        assert_eq!(out, b"18446744073709551615");
        let mut n = 1u64;
        while let Some(next) = n.checked_mul(3) {
            for v in [n - 1, n, n + 1] {
                out.clear();
                write_uint(&mut out, v);
                assert_eq!(out, v.to_string().as_bytes());
            }
            n = next;
        }
    }
}
