//! RFC 3339 timestamps, written and read without a date-time crate.
//!
//! The log writes UTC with millisecond precision (`2026-11-23T14:30:36.123Z`);
//! the parser accepts any RFC 3339 date-time (`T`/`t`/space separator, any
//! number of fraction digits, `Z`/`z` or a `±HH:MM` offset). Calendar
//! arithmetic uses Howard Hinnant's days-from-civil algorithms (proleptic
//! Gregorian calendar).

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const SECS_PER_DAY: i64 = 86_400;

/// A string that is not an RFC 3339 date-time (or is outside the years 0000-9999).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidTimestamp {
    input: String,
    what: &'static str,
}

impl fmt::Display for InvalidTimestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid RFC 3339 timestamp {:?}: {} (expected e.g. 2026-11-23T14:30:36.123Z)",
            self.input, self.what
        )
    }
}

impl std::error::Error for InvalidTimestamp {}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400; // [0, 399]
    let m = i64::from(m);
    let mp = if m > 2 { m - 3 } else { m + 9 }; // March = 0
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1; // [0, 365]
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy; // [0, 146096]
    era * 146_097 + doe - 719_468
}

/// The proleptic Gregorian date of a day count since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097; // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11]
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32; // [1, 31]
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32; // [1, 12]
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn is_leap(y: i64) -> bool {
    y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if is_leap(y) => 29,
        _ => 28,
    }
}

/// Seconds (floor) and nanoseconds since the Unix epoch; works before 1970 too.
fn to_unix(t: SystemTime) -> (i64, u32) {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => (d.as_secs() as i64, d.subsec_nanos()),
        Err(e) => {
            let d = e.duration();
            let secs = -(d.as_secs() as i64);
            match d.subsec_nanos() {
                0 => (secs, 0),
                n => (secs - 1, 1_000_000_000 - n),
            }
        }
    }
}

fn from_unix(secs: i64, nanos: u32) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::new(secs as u64, nanos)
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs()) + Duration::from_nanos(nanos.into())
    }
}

/// Formats `t` as RFC 3339 in UTC with millisecond precision (truncated), e.g.
/// `2026-11-23T14:30:36.123Z`.
pub fn format_rfc3339(t: SystemTime) -> String {
    let (secs, nanos) = to_unix(t);
    let days = secs.div_euclid(SECS_PER_DAY);
    let sod = secs.rem_euclid(SECS_PER_DAY);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        sod / 3600,
        sod / 60 % 60,
        sod % 60,
        nanos / 1_000_000
    )
}

/// Parses an RFC 3339 date-time such as `2026-11-23T14:30:36.123Z` or
/// `2026-11-23T15:30:36+01:00`. Fractions beyond nanoseconds are truncated;
/// a leap second (`:60`) is read as the first second of the next minute.
pub fn parse_rfc3339(s: &str) -> Result<SystemTime, InvalidTimestamp> {
    let err = |what| InvalidTimestamp {
        input: s.to_owned(),
        what,
    };
    let b = s.as_bytes();
    let num = |range: std::ops::Range<usize>, what| -> Result<u32, InvalidTimestamp> {
        let digits = b.get(range).ok_or_else(|| err(what))?;
        if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
            return Err(err(what));
        }
        Ok(digits
            .iter()
            .fold(0u32, |acc, d| acc * 10 + u32::from(d - b'0')))
    };
    let expect = |i: usize, chars: &[u8], what| -> Result<(), InvalidTimestamp> {
        match b.get(i) {
            Some(c) if chars.contains(c) => Ok(()),
            _ => Err(err(what)),
        }
    };

    let year = i64::from(num(0..4, "bad year")?);
    expect(4, b"-", "expected '-' after the year")?;
    let month = num(5..7, "bad month")?;
    expect(7, b"-", "expected '-' after the month")?;
    let day = num(8..10, "bad day")?;
    expect(10, b"Tt ", "expected 'T' between date and time")?;
    let hour = num(11..13, "bad hour")?;
    expect(13, b":", "expected ':' after the hour")?;
    let minute = num(14..16, "bad minute")?;
    expect(16, b":", "expected ':' after the minute")?;
    let second = num(17..19, "bad second")?;

    if !(1..=12).contains(&month) {
        return Err(err("month out of range"));
    }
    if day < 1 || day > days_in_month(year, month) {
        return Err(err("day out of range"));
    }
    if hour > 23 || minute > 59 || second > 60 {
        return Err(err("time of day out of range"));
    }

    let mut i = 19;
    let mut nanos = 0u32;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            if i - start < 9 {
                nanos = nanos * 10 + u32::from(b[i] - b'0');
            }
            i += 1;
        }
        if i == start {
            return Err(err("empty fraction of a second"));
        }
        for _ in (i - start)..9 {
            nanos *= 10;
        }
    }

    let offset_secs: i64 = match b.get(i) {
        Some(b'Z' | b'z') => {
            i += 1;
            0
        }
        Some(&sign @ (b'+' | b'-')) => {
            let oh = num(i + 1..i + 3, "bad offset hour")?;
            expect(i + 3, b":", "expected ':' in the offset")?;
            let om = num(i + 4..i + 6, "bad offset minute")?;
            if oh > 23 || om > 59 {
                return Err(err("offset out of range"));
            }
            i += 6;
            let o = i64::from(oh * 3600 + om * 60);
            if sign == b'+' { o } else { -o }
        }
        _ => return Err(err("missing time zone ('Z' or ±HH:MM)")),
    };
    if i != b.len() {
        return Err(err("trailing characters"));
    }

    let secs = days_from_civil(year, month, day) * SECS_PER_DAY
        + i64::from(hour * 3600 + minute * 60 + second)
        - offset_secs;
    Ok(from_unix(secs, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64, millis: u32) -> SystemTime {
        from_unix(secs, millis * 1_000_000)
    }

    #[test]
    fn days_from_civil_known_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(1970, 1, 2), 1);
        assert_eq!(days_from_civil(1969, 12, 31), -1);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(2026, 11, 23), 20_780);
        assert_eq!(days_from_civil(0, 1, 1), -719_528);
    }

    #[test]
    fn civil_round_trip_over_many_days() {
        for z in (-800_000..800_000).step_by(7) {
            let (y, m, d) = civil_from_days(z);
            assert!((1..=12).contains(&m) && d >= 1 && d <= days_in_month(y, m));
            assert_eq!(days_from_civil(y, m, d), z, "{y}-{m}-{d}");
        }
    }

    #[test]
    fn formats_utc_with_millis() {
        assert_eq!(format_rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            format_rfc3339(at(1_795_444_236, 123)),
            "2026-11-23T14:30:36.123Z"
        );
        // Leap day, end of day, sub-millisecond truncated.
        assert_eq!(
            format_rfc3339(from_unix(951_868_799, 999_999_999)),
            "2000-02-29T23:59:59.999Z"
        );
        assert_eq!(format_rfc3339(at(-1, 500)), "1969-12-31T23:59:59.500Z");
    }

    #[test]
    fn parses_what_it_formats() {
        for secs in [
            0,
            1,
            -1,
            951_782_400,
            1_795_444_236,
            4_102_444_799,
            -62_167_219_200,
        ] {
            for millis in [0, 1, 999] {
                let t = at(secs, millis);
                assert_eq!(parse_rfc3339(&format_rfc3339(t)), Ok(t));
            }
        }
    }

    #[test]
    fn parses_offsets_fractions_and_separators() {
        let t = at(1_795_444_236, 123);
        assert_eq!(parse_rfc3339("2026-11-23T15:30:36.123+01:00"), Ok(t));
        assert_eq!(parse_rfc3339("2026-11-23T09:00:36.123-05:30"), Ok(t));
        assert_eq!(parse_rfc3339("2026-11-23t14:30:36.123z"), Ok(t));
        assert_eq!(parse_rfc3339("2026-11-23 14:30:36.123Z"), Ok(t));
        assert_eq!(parse_rfc3339("2026-11-23T14:30:36.1230000009Z"), Ok(t));
        assert_eq!(
            parse_rfc3339("2026-11-23T14:30:36Z"),
            Ok(at(1_795_444_236, 0))
        );
        assert_eq!(
            parse_rfc3339("2026-11-23T14:30:36.5Z"),
            Ok(at(1_795_444_236, 500))
        );
        // Leap second: the first second of the next minute.
        assert_eq!(
            parse_rfc3339("2016-12-31T23:59:60Z"),
            parse_rfc3339("2017-01-01T00:00:00Z")
        );
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "2026-11-23",
            "2026-11-23T14:30:36",
            "2026-11-23T14:30:36.Z",
            "2026-13-01T00:00:00Z",
            "2026-02-29T00:00:00Z",
            "2026-04-31T00:00:00Z",
            "2026-11-23T24:00:00Z",
            "2026-11-23T14:60:00Z",
            "2026-11-23T14:30:36+1:00",
            "2026-11-23T14:30:36+01:60",
            "2026-11-23T14:30:36Zjunk",
            "26-11-23T14:30:36Z",
            "2026/11/23T14:30:36Z",
            "２026-11-23T14:30:36Z",
        ] {
            let e = parse_rfc3339(bad).expect_err(bad);
            assert!(e.to_string().contains("invalid RFC 3339 timestamp"), "{e}");
        }
        assert!(parse_rfc3339("2024-02-29T00:00:00Z").is_ok());
        assert!(parse_rfc3339("2000-02-29T00:00:00Z").is_ok());
        assert!(parse_rfc3339("1900-02-29T00:00:00Z").is_err());
    }
}
