//! Wall-clock helpers (Unix seconds, RFC 3339 UTC text, UTC days): std has no calendar.

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch, with the fraction.
pub fn now_unix() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The civil date `(year, month, day)` of a day from 1970-01-01 (Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// The day number (days since 1970-01-01) of a civil date; the inverse of [`civil_from_days`].
pub(crate) fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Unix seconds of RFC 3339 text (`2026-11-23T13:14:38.5Z`, `...+02:00`); `None` for other shapes.
pub fn parse_rfc3339(s: &str) -> Option<f64> {
    let b = s.as_bytes();
    let separators = b.len() >= 20 && b[4] == b'-' && b[7] == b'-' && b[13] == b':';
    if !separators || b[16] != b':' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let num = |t: Option<&str>| -> Option<i64> {
        t.filter(|t| t.bytes().all(|c| c.is_ascii_digit()))?
            .parse()
            .ok()
    };
    let (y, mo, d) = (num(s.get(0..4))?, num(s.get(5..7))?, num(s.get(8..10))?);
    let (h, mi) = (num(s.get(11..13))?, num(s.get(14..16))?);
    let sec = num(s.get(17..19))?;
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let rest = s.get(19..)?;
    let (frac, zone) = match rest.strip_prefix('.') {
        None => (0.0, rest),
        Some(r) => {
            let digits = r.find(|c: char| !c.is_ascii_digit()).unwrap_or(r.len());
            let frac = (digits > 0).then(|| format!("0.{}", &r[..digits]).parse().ok());
            (frac.flatten()?, &r[digits..])
        }
    };
    let offset = match zone {
        "Z" | "z" => 0,
        _ if zone.len() == 6 && zone.get(3..4) == Some(":") => {
            let minutes = num(zone.get(1..3))? * 60 + num(zone.get(4..6))?;
            match zone.as_bytes()[0] {
                b'+' => 60 * minutes,
                b'-' => -60 * minutes,
                _ => return None,
            }
        }
        _ => return None,
    };
    let days = days_from_civil(y, mo as u32, d as u32);
    Some((days * 86_400 + h * 3600 + mi * 60 + sec - offset) as f64 + frac)
}

/// The UTC day number (days since 1970-01-01) of a Unix time.
pub fn day_of(unix: f64) -> i64 {
    (unix / 86_400.0).floor() as i64
}

/// `YYYY-MM-DD` for a UTC day number.
pub fn date_string(day: i64) -> String {
    let (y, m, d) = civil_from_days(day);
    format!("{y:04}-{m:02}-{d:02}")
}

/// RFC 3339 UTC text with milliseconds, e.g. `2026-11-23T13:14:38.123Z`.
pub(crate) fn rfc3339(unix: f64) -> String {
    let mut out = String::with_capacity(24);
    push_rfc3339(&mut out, unix);
    out
}

/// Appends [`rfc3339`] text for `unix` to `out`, its digits set in a fixed template: this runs
/// for every event and log line, where the formatting machinery showed in profiles.
pub(crate) fn push_rfc3339(out: &mut String, unix: f64) {
    let millis = (unix * 1000.0).round() as i64;
    let secs = millis.div_euclid(1000);
    let tod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let mut text = *b"0000-00-00T00:00:00.000Z";
    let fields = [
        (0..4, y.rem_euclid(10_000)),
        (5..7, i64::from(m)),
        (8..10, i64::from(d)),
        (11..13, tod / 3600),
        (14..16, tod / 60 % 60),
        (17..19, tod % 60),
        (20..23, millis.rem_euclid(1000)),
    ];
    for (at, mut n) in fields {
        for digit in text[at].iter_mut().rev() {
            *digit = b'0' + (n % 10) as u8;
            n /= 10;
        }
    }
    // Digits and separators: always ASCII.
    let text = std::str::from_utf8(&text).unwrap_or_default();
    if (0..=9999).contains(&y) {
        out.push_str(text);
    } else {
        use std::fmt::Write;
        // Writing into a String cannot fail.
        let _ = write!(out, "{y:04}{}", &text[4..]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(rfc3339(0.0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_795_439_678.123), "2026-11-23T13:14:38.123Z");
        assert_eq!(rfc3339(951_782_400.0), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339(-1.0), "1969-12-31T23:59:59.000Z");
        assert_eq!(rfc3339(253_402_300_800.0), "10000-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(-62_167_219_201.0), "-001-12-31T23:59:59.000Z");
        assert_eq!(date_string(day_of(1_795_439_678.0)), "2026-11-23");
        assert_eq!(date_string(day_of(1_795_391_999.999)), "2026-11-22");
        assert_eq!(date_string(day_of(1_795_392_000.0)), "2026-11-23");
    }

    #[test]
    fn parses_rfc3339() {
        assert_eq!(
            parse_rfc3339("2026-11-23T13:14:38.123Z"),
            Some(1_795_439_678.123)
        );
        assert_eq!(
            parse_rfc3339("2026-11-23T15:14:38+02:00"),
            Some(1_795_439_678.0)
        );
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0.0));
        for bad in [
            "",
            "2026-11-23",
            "2026-13-01T00:00:00Z",
            "2026-11-23T13:14:38",
            "2026-11-23T13:14:38.Z",
            "2026-11-23T13:14:38+0200",
            "x026-11-23T13:14:38Z",
            "2026-11-23T13:14:38+0\u{e9}00",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
        for day in [-1000, 0, 20_000, 20_780] {
            let (y, m, d) = civil_from_days(day);
            assert_eq!(days_from_civil(y, m, d), day);
        }
    }
}
