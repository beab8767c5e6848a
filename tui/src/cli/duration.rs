//! Durations as operators type them (`30m`, `1h`, `7d`, `3600s`, `1h30m`)
//! and as the CLI prints them back, for token lifetimes. A tiny parser of
//! its own rather than a new dependency: four units are all it needs.

use blixard_shared::time::human_secs;
use std::time::Duration;

/// Seconds in one of the units a duration may use.
fn unit_seconds(unit: char) -> Option<u64> {
    match unit {
        's' => Some(1),
        'm' => Some(60),
        'h' => Some(3600),
        'd' => Some(86_400),
        _ => None,
    }
}

/// Parses `30m`, `1h`, `7d`, `3600s` or a sum of them (`1h30m`) into a
/// positive whole number of seconds (a clap value parser, so every flag
/// that takes a duration accepts and rejects the same spellings).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = |why: &str| format!("invalid duration {s:?}: {why} (e.g. 30m, 1h, 7d, 3600s)");
    let text = s.trim();
    if text.is_empty() {
        return Err(bad("it is empty"));
    }
    let mut total: u64 = 0;
    let mut number = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit =
            unit_seconds(c).ok_or_else(|| bad(&format!("unknown unit {c:?}; use s, m, h or d")))?;
        if number.is_empty() {
            return Err(bad("a unit without a number"));
        }
        let n: u64 = number.parse().map_err(|_| bad("number too large"))?;
        number.clear();
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| bad("too long"))?;
    }
    if !number.is_empty() {
        return Err(bad("a number without a unit"));
    }
    if total == 0 {
        return Err(bad("it must be longer than zero"));
    }
    Ok(Duration::from_secs(total))
}

/// When something that expires at `expires_at_ms` (0: never) does so,
/// seen at `now_ms`: "never", "expired", or "in 59m58s".
pub fn expiry_word(expires_at_ms: u64, now_ms: u64) -> String {
    if expires_at_ms == 0 {
        "never".into()
    } else if expires_at_ms <= now_ms {
        "expired".into()
    } else {
        format!("in {}", human_secs((expires_at_ms - now_ms) / 1000))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_units_operators_type() {
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(604_800)));
        assert_eq!(parse_duration("3600s"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration(" 1h30m "), Ok(Duration::from_secs(5400)));
    }

    #[test]
    fn what_is_refused() {
        for bad in [
            "",
            "30",
            "m",
            "1x",
            "1h30",
            "0s",
            "-1h",
            "1.5h",
            "99999999999999999999s",
        ] {
            let e = parse_duration(bad);
            assert!(e.is_err(), "{bad:?} was accepted: {e:?}");
        }
        assert!(parse_duration("30")
            .unwrap_err()
            .contains("a number without a unit"));
        assert!(parse_duration(&format!("{}d", u64::MAX / 10))
            .unwrap_err()
            .contains("too long"));
    }

    #[test]
    fn expiry_reads_as_a_word() {
        assert_eq!(expiry_word(0, 5), "never");
        assert_eq!(expiry_word(5, 5), "expired");
        assert_eq!(expiry_word(3_600_000 + 1000, 1000), "in 1h00m");
        assert_eq!(human_secs(42), "42s");
        assert_eq!(human_secs(2 * 86_400 + 4 * 3600), "2d04h");
    }
}
