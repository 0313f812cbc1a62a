//! Time helpers shared by the CLI, the API and the index: durations like
//! `15m`, RFC 3339 instants, and day partitions.

use anyhow::{bail, Result};

pub const NANOS_PER_SEC: i64 = 1_000_000_000;
pub const NANOS_PER_DAY: i64 = 86_400 * NANOS_PER_SEC;

pub fn now_nanos() -> i64 {
    let now = time::OffsetDateTime::now_utc();
    i64::try_from(now.unix_timestamp_nanos()).unwrap_or(i64::MAX)
}

/// Parses `90s`, `15m`, `24h`, `7d`, `2w`, `500ms` into nanoseconds.
pub fn parse_duration(text: &str) -> Result<i64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let Ok(value) = digits.parse::<i64>() else {
        bail!("invalid duration {text:?}: expected a number and a unit, like 90s, 15m, 24h, 7d");
    };
    let unit_nanos = match unit {
        "ms" => 1_000_000,
        "s" | "" => NANOS_PER_SEC,
        "m" => 60 * NANOS_PER_SEC,
        "h" => 3_600 * NANOS_PER_SEC,
        "d" => NANOS_PER_DAY,
        "w" => 7 * NANOS_PER_DAY,
        other => bail!("invalid duration {text:?}: unknown unit {other:?} (use ms, s, m, h, d, w)"),
    };
    value
        .checked_mul(unit_nanos)
        .ok_or_else(|| anyhow::anyhow!("duration {text:?} is too large"))
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
    if let Ok(secs) = text.parse::<i64>() {
        return secs
            .checked_mul(NANOS_PER_SEC)
            .ok_or_else(|| anyhow::anyhow!("instant {text:?} is out of range"));
    }
    match parse_duration(text) {
        Ok(ago) => Ok(now.saturating_sub(ago)),
        Err(_) => bail!(
            "invalid time {text:?}: use a duration ago (15m, 24h, 7d), an RFC 3339 time (2026-11-24T10:00:00Z), unix seconds or now"
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
