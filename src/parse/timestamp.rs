//! Calendar arithmetic and the timestamp layouts that show up in logs.
//!
//! Everything here is hand-parsed: a format-string parser per line would cost
//! more than the rest of a combined line put together, and the layouts are
//! fixed enough that a cursor over the bytes is both faster and stricter.

pub(super) const NANOS_PER_SEC: i64 = 1_000_000_000;
const SECS_PER_DAY: i64 = 86_400;
pub(super) const NANOS_PER_DAY: i64 = NANOS_PER_SEC * SECS_PER_DAY;

pub(super) fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

pub(super) fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap(year) => 29,
        2 => 28,
        _ => 0,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
/// algorithm: branch-free and exact for every year an i64 can hold here).
pub(super) fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Inverse of [`days_from_civil`]; only the year is needed (RFC 3164 year
/// inference), the rest comes along for the tests.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    // Both values are bounded by the algorithm (1..=31, 1..=12).
    (year, month as u32, day as u32)
}

pub(super) fn year_of(unix_nanos: i64) -> i64 {
    civil_from_days(unix_nanos.div_euclid(NANOS_PER_DAY)).0
}

/// A broken-down local time plus its UTC offset, validated on conversion.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct DateTime {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
    pub nanos: u32,
    pub offset_secs: i64,
}

impl DateTime {
    /// `None` for impossible dates and for instants outside the i64
    /// nanosecond range (years before 1677 or after 2262): garbage must not
    /// be able to overflow.
    pub(super) fn to_unix_nanos(self) -> Option<i64> {
        if !(1..=12).contains(&self.month)
            || self.day == 0
            || self.day > days_in_month(self.year, self.month)
            || self.hour > 23
            || self.minute > 59
            // 60 is a leap second; it folds into the next minute like POSIX does.
            || self.second > 60
            || self.nanos >= 1_000_000_000
            || !(-86_400..=86_400).contains(&self.offset_secs)
            || !(1..=9999).contains(&self.year)
        {
            return None;
        }
        let days = days_from_civil(self.year, self.month, self.day);
        let secs = days * SECS_PER_DAY
            + i64::from(self.hour) * 3600
            + i64::from(self.minute) * 60
            + i64::from(self.second)
            - self.offset_secs;
        secs.checked_mul(NANOS_PER_SEC)?
            .checked_add(i64::from(self.nanos))
    }
}

/// Byte cursor shared by the hand-written parsers.
#[derive(Debug, Clone, Copy)]
pub(super) struct Cursor<'a> {
    pub b: &'a [u8],
    pub i: usize,
}

impl<'a> Cursor<'a> {
    pub(super) fn new(b: &'a [u8]) -> Self {
        Cursor { b, i: 0 }
    }

    pub(super) fn at_end(&self) -> bool {
        self.i >= self.b.len()
    }

    pub(super) fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    pub(super) fn eat(&mut self, c: u8) -> bool {
        if self.peek() == Some(c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    pub(super) fn expect(&mut self, c: u8) -> Option<()> {
        self.eat(c).then_some(())
    }

    /// Exactly `n` ASCII digits.
    pub(super) fn digits(&mut self, n: usize) -> Option<u32> {
        let end = self.i.checked_add(n)?;
        let s = self.b.get(self.i..end)?;
        let mut v = 0u32;
        for &c in s {
            if !c.is_ascii_digit() {
                return None;
            }
            v = v * 10 + u32::from(c - b'0');
        }
        self.i = end;
        Some(v)
    }

    /// Between `min` and `max` ASCII digits, greedy.
    pub(super) fn digits_between(&mut self, min: usize, max: usize) -> Option<u32> {
        let mut v = 0u32;
        let mut n = 0;
        while n < max {
            match self.peek() {
                Some(c) if c.is_ascii_digit() => {
                    v = v * 10 + u32::from(c - b'0');
                    self.i += 1;
                    n += 1;
                }
                _ => break,
            }
        }
        (n >= min).then_some(v)
    }

    /// Optional fraction of a second introduced by '.' or ',' (ISO 8601
    /// allows both, Python's logging uses the comma). Digits past the ninth are
    /// consumed and dropped: nanoseconds is all the Event keeps.
    pub(super) fn fraction(&mut self) -> Option<u32> {
        if !(self.eat(b'.') || self.eat(b',')) {
            return Some(0);
        }
        let start = self.i;
        let mut v = 0u32;
        while let Some(c) = self.peek() {
            if !c.is_ascii_digit() {
                break;
            }
            if self.i - start < 9 {
                v = v * 10 + u32::from(c - b'0');
            }
            self.i += 1;
        }
        let n = self.i - start;
        if n == 0 {
            return None;
        }
        Some(v * 10u32.pow(9 - n.min(9) as u32))
    }

    /// `hh:mm:ss` and an optional fraction, into `dt`.
    #[inline]
    pub(super) fn clock(&mut self, dt: &mut DateTime) -> Option<()> {
        dt.hour = self.digits(2)?;
        self.expect(b':')?;
        dt.minute = self.digits(2)?;
        self.expect(b':')?;
        dt.second = self.digits(2)?;
        dt.nanos = self.fraction()?;
        Some(())
    }

    /// `Z`, `+hh:mm`, `+hhmm` or `+hh`; returns seconds east of UTC.
    pub(super) fn offset(&mut self) -> Option<i64> {
        let sign = match self.peek()? {
            b'Z' | b'z' => {
                self.i += 1;
                return Some(0);
            }
            b'+' => 1,
            b'-' => -1,
            _ => return None,
        };
        self.i += 1;
        let h = self.digits(2)?;
        let m = if self.eat(b':') {
            self.digits(2)?
        } else {
            self.digits(2).unwrap_or(0)
        };
        if h > 23 || m > 59 {
            return None;
        }
        Some(sign * i64::from(h * 3600 + m * 60))
    }
}

/// Case-insensitive English month abbreviation, as strftime's `%b` writes it.
pub(super) fn month_from_abbr(b: &[u8]) -> Option<u32> {
    let [a, b, c] = *b else { return None };
    let m = match [a | 0x20, b | 0x20, c | 0x20] {
        [b'j', b'a', b'n'] => 1,
        [b'f', b'e', b'b'] => 2,
        [b'm', b'a', b'r'] => 3,
        [b'a', b'p', b'r'] => 4,
        [b'm', b'a', b'y'] => 5,
        [b'j', b'u', b'n'] => 6,
        [b'j', b'u', b'l'] => 7,
        [b'a', b'u', b'g'] => 8,
        [b's', b'e', b'p'] => 9,
        [b'o', b'c', b't'] => 10,
        [b'n', b'o', b'v'] => 11,
        [b'd', b'e', b'c'] => 12,
        _ => return None,
    };
    Some(m)
}

/// Apache/nginx `%t` / `$time_local` without brackets:
/// `10/Oct/2000:13:55:36 -0700`, optionally with a fraction after the
/// seconds (Apache `%{msec_frac}t` setups). A missing zone is read as UTC.
pub(super) fn parse_clf(b: &[u8]) -> Option<i64> {
    let mut c = Cursor::new(b);
    let mut dt = DateTime {
        day: c.digits_between(1, 2)?,
        ..DateTime::default()
    };
    c.expect(b'/')?;
    dt.month = month_from_abbr(b.get(c.i..c.i + 3)?)?;
    c.i += 3;
    c.expect(b'/')?;
    dt.year = i64::from(c.digits(4)?);
    c.expect(b':')?;
    c.clock(&mut dt)?;
    if c.eat(b' ') {
        dt.offset_secs = c.offset()?;
    }
    if !c.at_end() {
        return None;
    }
    dt.to_unix_nanos()
}

/// RFC 3339 / ISO 8601 `2003-10-11T22:14:15.003Z`. Also accepts a space or
/// lowercase `t` as separator and a missing offset (read as UTC), because JSON
/// loggers emit all of those.
pub(super) fn parse_rfc3339(b: &[u8]) -> Option<i64> {
    let mut c = Cursor::new(b);
    let (dt, _) = rfc3339_at(&mut c, true)?;
    if !c.at_end() {
        return None;
    }
    dt.to_unix_nanos()
}

/// Parses an RFC 3339 timestamp at the cursor and stops after it; the bool
/// says whether an explicit offset was present.
pub(super) fn rfc3339_at(c: &mut Cursor<'_>, space_sep: bool) -> Option<(DateTime, bool)> {
    let mut dt = DateTime {
        year: i64::from(c.digits(4)?),
        ..DateTime::default()
    };
    c.expect(b'-')?;
    dt.month = c.digits(2)?;
    c.expect(b'-')?;
    dt.day = c.digits(2)?;
    match c.peek() {
        Some(b'T' | b't') => c.i += 1,
        Some(b' ') if space_sep => c.i += 1,
        _ => return None,
    }
    c.clock(&mut dt)?;
    let has_offset = matches!(c.peek(), Some(b'Z' | b'z' | b'+' | b'-'));
    if has_offset {
        dt.offset_secs = c.offset()?;
    }
    Some((dt, has_offset))
}

/// Orders of magnitude that separate epoch units: 1e11 s is the year 5138,
/// so anything larger was written in a finer unit.
fn epoch_unit_exp(magnitude: f64) -> u32 {
    if magnitude < 1e11 {
        9
    } else if magnitude < 1e14 {
        6
    } else if magnitude < 1e17 {
        3
    } else {
        0
    }
}

/// Integer epoch in s/ms/µs/ns, the unit guessed from the magnitude.
pub(super) fn epoch_int(n: i64) -> Option<i64> {
    let exp = epoch_unit_exp(n.unsigned_abs() as f64);
    n.checked_mul(10i64.pow(exp))
}

/// Float epoch. The sub-unit part is rounded to the microsecond because an
/// f64 holding seconds since 1970 cannot represent anything finer; splitting
/// off the integer part first keeps that rounding exact, so
/// `1700000000.123` comes out as .123000000 instead of .122999906.
pub(super) fn epoch_float(f: f64) -> Option<i64> {
    if !f.is_finite() || f.abs() >= 9.2e18 {
        return None;
    }
    let exp = epoch_unit_exp(f.abs());
    let whole = f.trunc();
    let frac = f - whole;
    let sub = if exp >= 3 {
        (frac * 10f64.powi(exp as i32 - 3)).round() as i64 * 1000
    } else {
        0
    };
    (whole as i64).checked_mul(10i64.pow(exp))?.checked_add(sub)
}

/// Epoch written as decimal text (nginx `$msec` quoted by `escape=json`);
/// parsed exactly rather than through f64.
pub(super) fn epoch_decimal(s: &[u8]) -> Option<i64> {
    let (neg, s) = match s.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, s),
    };
    let (int, frac) = match memchr::memchr(b'.', s) {
        Some(dot) => (&s[..dot], &s[dot + 1..]),
        None => (s, &s[..0]),
    };
    if int.is_empty()
        || int.len() > 19
        || !int.iter().all(u8::is_ascii_digit)
        || !frac.iter().all(u8::is_ascii_digit)
    {
        return None;
    }
    let whole: i64 = std::str::from_utf8(int).ok()?.parse().ok()?;
    let exp = epoch_unit_exp(whole as f64);
    let mut sub = 0i64;
    for i in 0..exp as usize {
        let d = frac.get(i).map_or(0, |c| i64::from(c - b'0'));
        sub = sub * 10 + d;
    }
    let v = whole.checked_mul(10i64.pow(exp))?.checked_add(sub)?;
    Some(if neg { -v } else { v })
}

/// Any timestamp a JSON logger might write as a string.
pub(super) fn parse_any(s: &str) -> Option<i64> {
    let b = s.trim().as_bytes();
    match b {
        [a, b1, c, d, b'-', ..]
            if a.is_ascii_digit()
                && b1.is_ascii_digit()
                && c.is_ascii_digit()
                && d.is_ascii_digit() =>
        {
            parse_rfc3339(b)
        }
        [first, ..] if first.is_ascii_digit() || *first == b'-' => {
            if b.iter()
                .all(|c| c.is_ascii_digit() || *c == b'.' || *c == b'-')
            {
                epoch_decimal(b)
            } else {
                parse_clf(b)
            }
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_roundtrip_matches_time_crate() {
        // Every day from 1900 to 2200 against an independent implementation.
        let start = days_from_civil(1900, 1, 1);
        let end = days_from_civil(2200, 12, 31);
        for days in (start..=end).step_by(7) {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
            let month = time::Month::try_from(m as u8).expect("valid month");
            let date =
                time::Date::from_calendar_date(y as i32, month, d as u8).expect("valid date");
            let unix = date.midnight().assume_utc().unix_timestamp();
            assert_eq!(unix, days * 86_400, "{y}-{m}-{d}");
        }
    }

    #[test]
    fn clf_times() {
        // 2000-10-10T20:55:36Z
        assert_eq!(
            parse_clf(b"10/Oct/2000:13:55:36 -0700"),
            Some(971_211_336_000_000_000)
        );
        assert_eq!(
            parse_clf(b"10/Oct/2000:20:55:36 +0000"),
            Some(971_211_336_000_000_000)
        );
        assert_eq!(
            parse_clf(b"10/Oct/2000:22:25:36.250 +01:30"),
            Some(971_211_336_250_000_000)
        );
        assert_eq!(parse_clf(b"29/Feb/2001:00:00:00 +0000"), None);
        assert_eq!(parse_clf(b"10/Foo/2000:13:55:36 -0700"), None);
        assert_eq!(parse_clf(b"10/Oct/2000:24:55:36 -0700"), None);
        assert_eq!(parse_clf(b"10/Oct/2000:13:55:36 -0700x"), None);
        assert_eq!(parse_clf(b"10/Oct/2000:13:55"), None);
        assert_eq!(parse_clf(b""), None);
    }

    #[test]
    fn rfc3339_times() {
        assert_eq!(
            parse_rfc3339(b"2003-10-11T22:14:15.003Z"),
            Some(1_065_910_455_003_000_000)
        );
        assert_eq!(
            parse_rfc3339(b"2003-08-24T05:14:15.000003-07:00"),
            Some(1_061_727_255_000_003_000)
        );
        assert_eq!(
            parse_rfc3339(b"2003-10-11 22:14:15,5"),
            Some(1_065_910_455_500_000_000)
        );
        assert_eq!(
            parse_rfc3339(b"2003-10-11T22:14:15.1234567891234Z"),
            Some(1_065_910_455_123_456_789)
        );
        assert_eq!(parse_rfc3339(b"2003-10-11T22:14:15."), None);
        assert_eq!(parse_rfc3339(b"2003-13-11T22:14:15Z"), None);
        assert_eq!(parse_rfc3339(b"9999-12-31T23:59:59Z"), None);
        assert_eq!(parse_rfc3339(b"2003-10-11T22:14:15+25:00"), None);
    }

    #[test]
    fn epochs() {
        assert_eq!(epoch_int(1_700_000_000), Some(1_700_000_000_000_000_000));
        assert_eq!(
            epoch_int(1_700_000_000_123),
            Some(1_700_000_000_123_000_000)
        );
        assert_eq!(
            epoch_int(1_700_000_000_123_456),
            Some(1_700_000_000_123_456_000)
        );
        assert_eq!(
            epoch_int(1_700_000_000_123_456_789),
            Some(1_700_000_000_123_456_789)
        );
        assert_eq!(
            epoch_float(1_700_000_000.123),
            Some(1_700_000_000_123_000_000)
        );
        assert_eq!(
            epoch_float(1_646_861_401.524_102_4),
            Some(1_646_861_401_524_102_000)
        );
        assert_eq!(epoch_float(f64::NAN), None);
        assert_eq!(epoch_float(1e300), None);
        assert_eq!(
            epoch_decimal(b"1700000000.123456789"),
            Some(1_700_000_000_123_456_789)
        );
        assert_eq!(
            epoch_decimal(b"1700000000123.5"),
            Some(1_700_000_000_123_500_000)
        );
        assert_eq!(epoch_decimal(b"99999999999999999999"), None);
        assert_eq!(epoch_decimal(b"1.2.3"), None);
    }

    #[test]
    fn any_layout() {
        assert_eq!(
            parse_any("2003-10-11T22:14:15.003Z"),
            Some(1_065_910_455_003_000_000)
        );
        assert_eq!(
            parse_any("10/Oct/2000:13:55:36 -0700"),
            Some(971_211_336_000_000_000)
        );
        assert_eq!(parse_any("1700000000.5"), Some(1_700_000_000_500_000_000));
        assert_eq!(parse_any("yesterday"), None);
        assert_eq!(parse_any(""), None);
    }
}
