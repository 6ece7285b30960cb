//! Datetimes in the atproto profile of RFC 3339.

use crate::error::{char_at, string_traits, Error, ErrorKind};
use std::cmp::Ordering;
use std::hash::{Hash, Hasher};

/// A datetime string, e.g. `1985-04-12T23:20:50.123Z`.
///
/// Spec: <https://atproto.com/specs/lexicon#datetime>. Build it with
/// [`Datetime::parse`].
///
/// Syntax (see [`Datetime::is_valid_syntax`]):
/// `YYYY-MM-DDTHH:MM:SS[.fraction](Z|+HH:MM|-HH:MM)` with exactly those
/// digit counts, an uppercase `T` and `Z`, at least one fraction digit if
/// there is a `.`, and the offset `-00:00` refused. [`Datetime::parse`]
/// also checks the values: month 1 to 12, a day that exists in that month
/// (leap years included), hour 0 to 23, minute 0 to 59, second 0 to 59 (no
/// leap seconds), offset at most 23:59, and the instant in UTC falls in the
/// years 0000 to 9999.
///
/// The string is kept exactly as given. `Eq` and `Hash` are on the string;
/// `Ord` is by instant first (see [`Datetime::timestamp_micros`]) and by
/// string for equal instants.
#[derive(Clone, Debug)]
pub struct Datetime {
    text: String,
    micros: i64,
}

struct Fields {
    year: i64,
    month: i64,
    day: i64,
    hour: i64,
    minute: i64,
    second: i64,
    /// Microseconds; further digits are dropped.
    micro: i64,
    /// 1 for an offset east of UTC (or `Z`), -1 for west.
    offset_sign: i64,
    offset_hour: i64,
    offset_minute: i64,
}

struct Cursor<'a> {
    s: &'a str,
    pos: usize,
}

impl Cursor<'_> {
    fn found(&self) -> String {
        match self.s.as_bytes().get(self.pos) {
            None => "end of input".into(),
            Some(_) => format!("{:?}", char_at(self.s, self.pos)),
        }
    }

    fn digits(&mut self, n: usize, what: &str) -> Result<i64, String> {
        let mut v = 0i64;
        for _ in 0..n {
            match self.s.as_bytes().get(self.pos) {
                Some(b) if b.is_ascii_digit() => {
                    v = v * 10 + i64::from(b - b'0');
                    self.pos += 1;
                }
                _ => {
                    return Err(format!(
                        "expected {n} digits for the {what}, found {}",
                        self.found()
                    ))
                }
            }
        }
        Ok(v)
    }

    fn byte(&mut self, want: u8, what: &str) -> Result<(), String> {
        if self.s.as_bytes().get(self.pos) == Some(&want) {
            self.pos += 1;
            Ok(())
        } else {
            Err(format!(
                "expected {:?} {what}, found {}",
                char::from(want),
                self.found()
            ))
        }
    }
}

fn scan(s: &str) -> Result<Fields, String> {
    let mut c = Cursor { s, pos: 0 };
    if s.is_empty() {
        return Err("expected YYYY-MM-DDTHH:MM:SSZ, found an empty string".into());
    }
    let year = c.digits(4, "year")?;
    c.byte(b'-', "after the year")?;
    let month = c.digits(2, "month")?;
    c.byte(b'-', "after the month")?;
    let day = c.digits(2, "day")?;
    c.byte(b'T', "(uppercase) between date and time")?;
    let hour = c.digits(2, "hour")?;
    c.byte(b':', "after the hour")?;
    let minute = c.digits(2, "minute")?;
    c.byte(b':', "after the minute")?;
    let second = c.digits(2, "second")?;
    let mut micro = 0i64;
    if s.as_bytes().get(c.pos) == Some(&b'.') {
        c.pos += 1;
        let start = c.pos;
        while s.as_bytes().get(c.pos).is_some_and(u8::is_ascii_digit) {
            if c.pos - start < 6 {
                micro = micro * 10 + i64::from(s.as_bytes()[c.pos] - b'0');
            }
            c.pos += 1;
        }
        let n = c.pos - start;
        if n == 0 {
            return Err(format!(
                "expected fraction digits after '.', found {}",
                c.found()
            ));
        }
        for _ in n..6 {
            micro *= 10;
        }
    }
    let (offset_sign, offset_hour, offset_minute) = match s.as_bytes().get(c.pos) {
        Some(b'Z') => {
            c.pos += 1;
            (1, 0, 0)
        }
        Some(&sign @ (b'+' | b'-')) => {
            c.pos += 1;
            let h = c.digits(2, "offset hours")?;
            c.byte(b':', "in the offset")?;
            let m = c.digits(2, "offset minutes")?;
            if sign == b'-' && h == 0 && m == 0 {
                return Err("offset \"-00:00\" is not allowed, use 'Z' or \"+00:00\"".into());
            }
            (if sign == b'-' { -1 } else { 1 }, h, m)
        }
        _ => {
            return Err(format!(
                "expected a timezone ('Z' or +HH:MM or -HH:MM), found {}",
                c.found()
            ))
        }
    };
    if c.pos != s.len() {
        return Err(format!(
            "expected end of input after the timezone, found {}",
            c.found()
        ));
    }
    Ok(Fields {
        year,
        month,
        day,
        hour,
        minute,
        second,
        micro,
        offset_sign,
        offset_hour,
        offset_minute,
    })
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to the given proleptic Gregorian date.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    // Count from 0000-03-01 so the leap day is the last day of the year.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let shifted_month = if month > 2 { month - 3 } else { month + 9 };
    let day_of_year = (153 * shifted_month + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// Formats microseconds since the Unix epoch as an atproto datetime in UTC with millisecond
/// precision (`YYYY-MM-DDTHH:MM:SS.mmmZ`), as the reference PDS writes times. Times before 1970
/// count back from it; times outside the years 0000–9999, which atproto cannot spell, are
/// clamped to the first or last millisecond of that range.
pub fn format_micros(unix_micros: i64) -> String {
    let unix_micros = unix_micros.clamp(min_micros(), max_micros());
    let secs = unix_micros.div_euclid(1_000_000);
    let millis = unix_micros.div_euclid(1000).rem_euclid(1000);
    let rem = secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(secs.div_euclid(86_400));
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

/// The proleptic Gregorian date `days` after 1970-01-01, as (year, month, day): the inverse of
/// the day count [`Datetime::timestamp_micros`] uses, for code that formats timestamps.
pub fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let shifted = days + 719_468; // days since 0000-03-01
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    (year_of_era + era * 400 + i64::from(month <= 2), month, day)
}

const MICROS_PER_DAY: i64 = 86_400_000_000;

fn min_micros() -> i64 {
    days_from_civil(0, 1, 1) * MICROS_PER_DAY
}

fn max_micros() -> i64 {
    days_from_civil(10000, 1, 1) * MICROS_PER_DAY - 1
}

/// Checks syntax and values; returns microseconds since the UNIX epoch.
fn check(s: &str) -> Result<i64, String> {
    let f = scan(s)?;
    if !(1..=12).contains(&f.month) {
        return Err(format!("month must be 01 to 12, found {:02}", f.month));
    }
    let dim = days_in_month(f.year, f.month);
    if !(1..=dim).contains(&f.day) {
        return Err(format!(
            "day must be 01 to {dim} for {:04}-{:02}, found {:02}",
            f.year, f.month, f.day
        ));
    }
    if f.hour > 23 {
        return Err(format!("hour must be 00 to 23, found {:02}", f.hour));
    }
    if f.minute > 59 {
        return Err(format!("minute must be 00 to 59, found {:02}", f.minute));
    }
    if f.second > 59 {
        return Err(format!("second must be 00 to 59, found {:02}", f.second));
    }
    if f.offset_hour > 23 || f.offset_minute > 59 {
        return Err(format!(
            "offset must be at most 23:59, found {:02}:{:02}",
            f.offset_hour, f.offset_minute
        ));
    }
    let local_seconds =
        days_from_civil(f.year, f.month, f.day) * 86_400 + f.hour * 3600 + f.minute * 60 + f.second;
    let offset_seconds = f.offset_sign * (f.offset_hour * 3600 + f.offset_minute * 60);
    let utc_micros = (local_seconds - offset_seconds) * 1_000_000 + f.micro;
    if utc_micros < min_micros() {
        return Err("in UTC this is before the year 0000".into());
    }
    if utc_micros > max_micros() {
        return Err("in UTC this is after the year 9999".into());
    }
    Ok(utc_micros)
}

impl Datetime {
    /// Parses a datetime, checking both syntax and values.
    pub fn parse(s: &str) -> Result<Self, Error> {
        check(s)
            .map(|micros| Datetime {
                text: s.to_owned(),
                micros,
            })
            .map_err(|reason| Error::new(ErrorKind::Datetime, s, reason))
    }

    /// Whether `s` has the shape of a datetime, without checking that the
    /// values make sense: `1985-13-45T25:99:99Z` passes, [`Datetime::parse`]
    /// refuses it.
    pub fn is_valid_syntax(s: &str) -> bool {
        scan(s).is_ok()
    }

    /// The datetime as given.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Microseconds since 1970-01-01T00:00:00Z (negative before that);
    /// fraction digits past the sixth are dropped.
    pub fn timestamp_micros(&self) -> i64 {
        self.micros
    }
}

impl PartialEq for Datetime {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Eq for Datetime {}

impl Hash for Datetime {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.text.hash(state);
    }
}

impl PartialOrd for Datetime {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Datetime {
    fn cmp(&self, other: &Self) -> Ordering {
        self.micros
            .cmp(&other.micros)
            .then_with(|| self.text.cmp(&other.text))
    }
}

string_traits!(Datetime);

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn check(s: &str, ok: bool) {
        let r = Datetime::parse(s);
        assert_eq!(r.is_ok(), ok, "{s:?}: {r:?}");
    }

    #[test]
    fn accepts_and_rejects() {
        check("1985-04-12T23:20:50.123Z", true);
        check("2000-02-29T00:00:00Z", true);
        check("1900-02-29T00:00:00Z", false);
        check("2023-02-29T00:00:00Z", false);
        check("2023-04-31T00:00:00Z", false);
        check("2023-04-30T24:00:00Z", false);
        check("2023-04-30T23:59:60Z", false);
        check("2023-04-30T23:59:59+24:00", false);
        check("9999-12-31T23:59:59-01:00", false);
        check("0000-01-01T00:00:00+01:00", false);
        check("1985-04-12T23:20:50.123-00:00", false);
        check("", false);
        check("1985-04-12T23:20:50.123Zé", false);
    }

    #[test]
    fn syntax_only() {
        assert!(Datetime::is_valid_syntax("1985-13-45T25:99:99Z"));
        assert!(Datetime::parse("1985-13-45T25:99:99Z").is_err());
        assert!(!Datetime::is_valid_syntax("1985-04-12"));
    }

    #[test]
    fn timestamps() {
        let ts = |s: &str| Datetime::parse(s).unwrap().timestamp_micros();
        assert_eq!(ts("1970-01-01T00:00:00Z"), 0);
        assert_eq!(ts("1985-04-12T23:20:50.123Z"), 482_196_050_123_000);
        assert_eq!(ts("1985-04-12T23:20:50.1234567Z"), 482_196_050_123_456);
        assert_eq!(ts("1985-04-12T16:20:50.123-07:00"), 482_196_050_123_000);
        assert_eq!(ts("2000-03-01T00:00:00Z"), 951_868_800_000_000);
        assert_eq!(ts("1969-12-31T23:59:59Z"), -1_000_000);
        assert_eq!(ts("0000-01-01T00:00:00Z"), -62_167_219_200_000_000);
    }

    #[test]
    fn ordering_is_by_instant() {
        let a = Datetime::parse("1985-04-12T23:20:50Z").unwrap();
        let b = Datetime::parse("1985-04-12T16:20:51-07:00").unwrap();
        assert!(a < b);
        let c = Datetime::parse("1985-04-12T16:20:50-07:00").unwrap();
        assert_ne!(a, c);
        assert_eq!(a.timestamp_micros(), c.timestamp_micros());
    }

    #[test]
    fn message() {
        let e = Datetime::parse("1985-00-12T23:20:50.123Z").unwrap_err();
        assert_eq!(
            e.to_string(),
            "datetime \"1985-00-12T23:20:50.123Z\": month must be 01 to 12, found 00"
        );
    }

    #[test]
    fn civil_dates_round_trip() {
        for days in [-719_468, -1, 0, 11_016, 20_047, 2_932_896] {
            let (year, month, day) = civil_from_days(days);
            assert_eq!(
                days_from_civil(year, month, day),
                days,
                "{year}-{month}-{day}"
            );
        }
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }

    #[test]
    fn formats_times_before_1970_and_clamps_to_the_spellable_years() {
        assert_eq!(format_micros(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_micros(-1), "1969-12-31T23:59:59.999Z");
        assert_eq!(format_micros(-1_000_000), "1969-12-31T23:59:59.000Z");
        assert_eq!(
            format_micros(482_196_050_123_999),
            "1985-04-12T23:20:50.123Z"
        );
        assert_eq!(format_micros(i64::MIN), "0000-01-01T00:00:00.000Z");
        assert_eq!(format_micros(i64::MAX), "9999-12-31T23:59:59.999Z");
        for micros in [i64::MIN, -62_167_219_200_000_000, -1, 0, 1, i64::MAX] {
            let text = format_micros(micros);
            assert!(Datetime::parse(&text).is_ok(), "{text}");
        }
    }
}
