//! The wall clock as every component reads it: milliseconds since the Unix
//! epoch, the unit of every timestamp in the API and the replicated state.

use std::time::{SystemTime, UNIX_EPOCH};

/// Wall-clock milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_read_in_their_two_largest_units() {
        assert_eq!(human_secs(42), "42s");
        assert_eq!(human_secs(192), "3m12s");
        assert_eq!(human_secs(2 * 86_400 + 4 * 3600), "2d04h");
    }
}
