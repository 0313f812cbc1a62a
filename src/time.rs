//! Time helpers shared by the CLI, the API and the index: durations like
//! `15m`, RFC 3339 instants, and day partitions.

use anyhow::{bail, Result};

pub const NANOS_PER_SEC: i64 = 1_000_000_000;
pub const NANOS_PER_DAY: i64 = 86_400 * NANOS_PER_SEC;

pub fn now_nanos() -> i64 {
    let now = time::OffsetDateTime::now_utc();
    i64::try_from(now.unix_timestamp_nanos()).unwrap_or(i64::MAX)
}

/// Parses `90s`, `15m`, `24h`, `7d`, `2w`, `500ms`, and sums of them
/// (`1h30m`), into nanoseconds.
pub fn parse_duration(text: &str) -> Result<i64> {
    let text = text.trim();
    let bad = || {
        anyhow::anyhow!("invalid duration {text:?}: expected a number and a unit, like 90s, 15m, 1h30m, 24h, 7d")
    };
    let mut rest = text;
    let mut total: i64 = 0;
    loop {
        let split = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let (digits, after) = rest.split_at(split);
        let value = digits.parse::<i64>().map_err(|_| bad())?;
        let unit_len = after
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_len);
        let unit_nanos = match unit {
            "ms" => 1_000_000,
            // A bare number is seconds, alone only: `1h30` is a typo.
            "" if total == 0 && next.is_empty() => NANOS_PER_SEC,
            "" => return Err(bad()),
            "s" => NANOS_PER_SEC,
            "m" => 60 * NANOS_PER_SEC,
            "h" => 3_600 * NANOS_PER_SEC,
            "d" => NANOS_PER_DAY,
            "w" => 7 * NANOS_PER_DAY,
            other => {
                bail!("invalid duration {text:?}: unknown unit {other:?} (use ms, s, m, h, d, w)")
            }
        };
        total = value
            .checked_mul(unit_nanos)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| anyhow::anyhow!("duration {text:?} is too large"))?;
        if next.is_empty() {
            return Ok(total);
        }
        rest = next;
    }
}

/// A calendar date or a time without an offset (`2026-12-07`,
/// `2026-12-07T11:00:00`, `2026-12-07 11:00`), read as UTC.
fn parse_utc_without_offset(text: &str) -> Option<i64> {
    use time::macros::format_description;
    let date = format_description!("[year]-[month]-[day]");
    if let Ok(d) = time::Date::parse(text, &date) {
        return i64::try_from(d.midnight().assume_utc().unix_timestamp_nanos()).ok();
    }
    let formats = [
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]"),
        format_description!("[year]-[month]-[day] [hour]:[minute]:[second]"),
        format_description!("[year]-[month]-[day]T[hour]:[minute]"),
        format_description!("[year]-[month]-[day] [hour]:[minute]"),
    ];
    formats.iter().find_map(|f| {
        let t = time::PrimitiveDateTime::parse(text, f).ok()?;
        i64::try_from(t.assume_utc().unix_timestamp_nanos()).ok()
    })
}

/// A point in time as users write it: a duration ago (`15m`), an RFC 3339
/// instant, `now`, or unix seconds.
pub fn parse_instant(text: &str, now: i64) -> Result<i64> {
    let text = text.trim();
    if text == "now" {
        return Ok(now);
    }
    if let Ok(dt) =
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
    {
        return i64::try_from(dt.unix_timestamp_nanos())
            .map_err(|_| anyhow::anyhow!("instant {text:?} is out of range"));
    }
    if let Some(nanos) = parse_utc_without_offset(text) {
        return Ok(nanos);
    }
    if let Ok(secs) = text.parse::<i64>() {
        return secs
            .checked_mul(NANOS_PER_SEC)
            .ok_or_else(|| anyhow::anyhow!("instant {text:?} is out of range"));
    }
    match parse_duration(text) {
        Ok(ago) => Ok(now.saturating_sub(ago)),
        Err(_) => bail!(
            "invalid time {text:?}: use a duration ago (15m, 1h30m, 7d), a date or time (2026-11-24, 2026-11-24T10:00:00Z; UTC without an offset), unix seconds or now"
        ),
    }
}

pub fn format_rfc3339(nanos: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos as i128)
        .ok()
        .and_then(|dt| {
            dt.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| nanos.to_string())
}

/// Days since the unix epoch: the index partition a timestamp belongs to.
pub fn day_of(nanos: i64) -> i64 {
    nanos.div_euclid(NANOS_PER_DAY)
}

/// `YYYY-MM-DD` of a day number.
pub fn day_name(day: i64) -> String {
    let date = time::OffsetDateTime::from_unix_timestamp(day * 86_400)
        .map(|dt| dt.date())
        .unwrap_or(time::Date::MIN);
    format!(
        "{:04}-{:02}-{:02}",
        date.year(),
        u8::from(date.month()),
        date.day()
    )
}

/// Inverse of [`day_name`].
pub fn parse_day_name(name: &str) -> Option<i64> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    let date = time::Date::parse(name, &format).ok()?;
    Some(
        date.midnight()
            .assume_utc()
            .unix_timestamp()
            .div_euclid(86_400),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_add_up_and_dates_read_as_utc() {
        let (h, m) = (3_600 * NANOS_PER_SEC, 60 * NANOS_PER_SEC);
        assert_eq!(parse_duration("1h30m").ok(), Some(h + 30 * m));
        assert_eq!(parse_duration("1d12h").ok(), Some(NANOS_PER_DAY + 12 * h));
        assert_eq!(parse_duration("2m30s").ok(), Some(150 * NANOS_PER_SEC));
        for bad in ["1h30", "h", "", "1x", "1h-5m"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        let day = 20_429 * NANOS_PER_DAY; // 2025-12-07
        assert_eq!(parse_instant("2025-12-07", 0).ok(), Some(day));
        assert_eq!(
            parse_instant("2025-12-07T11:00:00", 0).ok(),
            Some(day + 11 * h)
        );
        assert_eq!(
            parse_instant("2025-12-07 11:30", 0).ok(),
            Some(day + 11 * h + 30 * m)
        );
        assert_eq!(
            parse_instant("2025-12-07T11:00:00+01:00", 0).ok(),
            Some(day + 10 * h)
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s").ok(), Some(90 * NANOS_PER_SEC));
        assert_eq!(parse_duration("15m").ok(), Some(900 * NANOS_PER_SEC));
        assert_eq!(parse_duration("7d").ok(), Some(7 * NANOS_PER_DAY));
        assert!(parse_duration("7y").is_err());
        assert!(parse_duration("m").is_err());
    }

    #[test]
    fn instants() {
        let now = 1_000 * NANOS_PER_DAY;
        assert_eq!(parse_instant("1d", now).ok(), Some(999 * NANOS_PER_DAY));
        assert_eq!(parse_instant("now", now).ok(), Some(now));
        assert_eq!(
            parse_instant("1970-01-02T00:00:00Z", now).ok(),
            Some(NANOS_PER_DAY)
        );
        assert!(parse_instant("yesterday", now).is_err());
    }

    #[test]
    fn day_names_roundtrip() {
        let day = day_of(1_732_406_400 * NANOS_PER_SEC); // 2024-11-24
        assert_eq!(day_name(day), "2024-11-24");
        assert_eq!(parse_day_name("2024-11-24"), Some(day));
        assert_eq!(day_of(-1), -1);
    }
}
