//! The wall clock as every component reads it: milliseconds since the Unix
//! epoch, the unit of every timestamp in the API and the replicated state.

use std::time::{SystemTime, UNIX_EPOCH};

/// Wall-clock milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> u64 {
    u64::try_from(now_nanos() / 1_000_000).unwrap_or(u64::MAX)
}

/// Wall-clock nanoseconds since the Unix epoch (0 if the clock is before
/// it); on a simulator's thread, the simulated wall clock.
pub fn now_nanos() -> u128 {
    crate::sim_hooks::simulated_now_nanos().unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    })
}

/// "42s", "3m12s", "5h03m", "2d04h": a span of `s` seconds in its two
/// largest units, as the CLI and the console show ages and expiries.
pub fn human_secs(s: u64) -> String {
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{:02}h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// `2026-12-01T04:09:16.123Z`: a timestamp in ms since the Unix epoch as
/// UTC in RFC 3339, for the audit trail's times (the days-to-civil
/// conversion of Howard Hinnant's `chrono`-compatible algorithms).
pub fn rfc3339_ms(ms: u64) -> String {
    let days = (ms / 86_400_000) as i64;
    let rem = ms % 86_400_000;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3_600_000,
        (rem / 60_000) % 60,
        (rem / 1000) % 60,
        rem % 1000
    )
}

/// Reads a UTC timestamp as RFC 3339 writes it (`2026-12-01T04:09:16Z`,
/// with optional fraction, `Z` or `+00:00` only) or a plain count of ms
/// since the Unix epoch: what `--to-time` takes. `None` for anything else.
pub fn parse_utc_ms(text: &str) -> Option<u64> {
    let text = text.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse().ok();
    }
    let body = text
        .strip_suffix('Z')
        .or_else(|| text.strip_suffix("+00:00"))?;
    let (date, clock) = body.split_once(['T', ' '])?;
    let mut d = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (year, month, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, fraction) = clock.split_once('.').unwrap_or((clock, ""));
    let mut t = hms.splitn(3, ':').map(|p| p.parse::<u64>().ok());
    let (h, m, s) = (t.next()??, t.next()??, t.next()??);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || h > 23 || m > 59 || s > 60 {
        return None;
    }
    if !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let ms_part: u64 = format!("{fraction:0<3}")[..3].parse().ok()?;
    // Days from the civil date (the inverse of `rfc3339_ms`'s conversion).
    let y = year - i64::from(month <= 2);
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = u64::try_from(era * 146_097 + doe - 719_468).ok()?;
    Some(days * 86_400_000 + h * 3_600_000 + m * 60_000 + s * 1000 + ms_part)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_print_as_utc() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339_ms(1_796_098_156_123), "2026-12-01T04:09:16.123Z");
    }

    #[test]
    fn timestamps_read_back_as_printed() {
        for ms in [0, 951_782_400_000, 1_796_098_156_123, 4_102_444_799_999] {
            assert_eq!(parse_utc_ms(&rfc3339_ms(ms)), Some(ms));
        }
        assert_eq!(
            parse_utc_ms("2026-12-01T04:09:16Z"),
            Some(1_796_098_156_000)
        );
        assert_eq!(
            parse_utc_ms("2026-12-01T04:09:16.1+00:00"),
            Some(1_796_098_156_100)
        );
        assert_eq!(parse_utc_ms("1796098156123"), Some(1_796_098_156_123));
        for bad in [
            "",
            "yesterday",
            "2026-13-01T00:00:00Z",
            "2026-12-01T04:09:16+02:00",
            "2026-12-01",
        ] {
            assert_eq!(parse_utc_ms(bad), None, "{bad}");
        }
    }

    #[test]
    fn spans_read_in_their_two_largest_units() {
        assert_eq!(human_secs(42), "42s");
        assert_eq!(human_secs(192), "3m12s");
        assert_eq!(human_secs(2 * 86_400 + 4 * 3600), "2d04h");
    }
}
