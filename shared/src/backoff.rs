//! Jitter for the loops that retry against the cluster (the client,
//! registration, joining, the console's reconnect): many clients or nodes
//! that failed together would otherwise retry together, in step, each
//! time. A pause of `d` becomes a random one in `[d/2, d]` ("equal
//! jitter"): never longer than the bound the caller chose, and never so
//! short that the back-off stops backing off.

use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

/// A random pause in `[d/2, d]`.
pub fn jittered(d: Duration) -> Duration {
    let half = d / 2;
    let spread = u64::try_from((d - half).as_micros()).unwrap_or(u64::MAX);
    if spread == 0 {
        return d;
    }
    half + Duration::from_micros(random_u64() % (spread + 1))
}

/// A random number from the standard library's per-process random hash
/// keys (no dependency for a jitter that needs no quality beyond spread),
/// or from the seed on a simulator's thread.
fn random_u64() -> u64 {
    if let Some(seeded) = crate::sim_hooks::simulated_random() {
        return seeded;
    }
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(crate::time::now_ms());
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jittered_pause_stays_between_half_and_whole_and_varies() {
        let d = Duration::from_millis(800);
        let pauses: std::collections::BTreeSet<Duration> = (0..64).map(|_| jittered(d)).collect();
        assert!(pauses.iter().all(|p| *p >= d / 2 && *p <= d), "{pauses:?}");
        assert!(pauses.len() > 8, "the pauses vary: {pauses:?}");
        assert_eq!(jittered(Duration::ZERO), Duration::ZERO);
    }
}
