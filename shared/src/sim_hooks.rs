//! What the deterministic simulator (the daemon's `sim` module) swaps on
//! its one thread: the wall clock (so timestamps follow tokio's paused
//! clock) and the random numbers jitter and client names draw on (so they
//! come from the run's seed). A thread nobody marked reads the real clock
//! and the OS's randomness: production never marks one.

use std::cell::Cell;

thread_local! {
    /// Tokio's instant at the start of the simulation and the wall-clock
    /// reading (ns since the Unix epoch) it stands for.
    static WALL: Cell<Option<(tokio::time::Instant, u128)>> = const { Cell::new(None) };
    /// SplitMix64 state of the seeded random numbers.
    static RANDOM: Cell<Option<u64>> = const { Cell::new(None) };
}

/// Makes this thread's wall clock start at `wall_base_ms` and follow
/// tokio's clock from now, and its random numbers come from `seed`.
/// Call from inside the simulation's runtime.
pub fn simulate_this_thread(seed: u64, wall_base_ms: u64) {
    WALL.with(|w| {
        w.set(Some((
            tokio::time::Instant::now(),
            u128::from(wall_base_ms) * 1_000_000,
        )))
    });
    RANDOM.with(|r| r.set(Some(seed)));
}

/// Ends the simulation on this thread (the next run marks it again).
pub fn stop_simulating_this_thread() {
    WALL.with(|w| w.set(None));
    RANDOM.with(|r| r.set(None));
}

/// The simulated wall clock (ns since the Unix epoch), on a marked thread.
pub fn simulated_now_nanos() -> Option<u128> {
    WALL.with(|w| w.get())
        .map(|(origin, base)| base + origin.elapsed().as_nanos())
}

/// The next seeded random number, on a marked thread.
pub fn simulated_random() -> Option<u64> {
    RANDOM.with(|r| {
        let mut state = r.get()?;
        let drawn = splitmix64(&mut state);
        r.set(Some(state));
        Some(drawn)
    })
}

/// One step of SplitMix64 (Steele, Lea and Flood, 2014): advances `state`
/// and returns the next 64 random bits; the same on every platform for a
/// given state. Every seeded choice of the simulator draws through it.
pub fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn a_marked_thread_follows_the_paused_clock_and_the_seed() {
        simulate_this_thread(5, 1_000);
        let first = (simulated_random(), simulated_random());
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        assert_eq!(simulated_now_nanos(), Some(1_250_000_000));
        simulate_this_thread(5, 1_000);
        assert_eq!((simulated_random(), simulated_random()), first);
        stop_simulating_this_thread();
        assert_eq!(simulated_now_nanos(), None);
        assert_eq!(simulated_random(), None);
    }
}
