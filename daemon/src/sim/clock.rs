//! A simulated host's monotonic clock: tokio's (paused) clock seen through
//! a rate error and steps, so hosts of one simulation disagree the way
//! real hosts do. The fencing lease runs on it (`LeaseClock::Simulated`).

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use tokio::time::Instant;

/// One host's clock; clones share it.
#[derive(Debug, Clone)]
pub struct SimClock(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    origin: Instant,
    /// Reading at `origin`.
    base_ms: u64,
    /// Rate error, in parts per million (positive: runs fast).
    drift_ppm: i64,
    /// Sum of the steps taken so far.
    offset_ms: AtomicI64,
}

impl SimClock {
    /// A clock reading `base_ms` now that gains `drift_ppm` millionths
    /// (loses, when negative) on tokio's clock.
    pub fn new(base_ms: u64, drift_ppm: i64) -> Self {
        Self(Arc::new(Inner {
            origin: Instant::now(),
            base_ms,
            drift_ppm,
            offset_ms: AtomicI64::new(0),
        }))
    }

    /// Milliseconds on this clock; never below zero.
    pub fn now_ms(&self) -> u64 {
        let elapsed = i128::try_from(self.0.origin.elapsed().as_millis()).unwrap_or(i128::MAX);
        let drifted = elapsed + elapsed * i128::from(self.0.drift_ppm) / 1_000_000;
        let now = i128::from(self.0.base_ms)
            + drifted
            + i128::from(self.0.offset_ms.load(Ordering::Relaxed));
        u64::try_from(now.max(0)).unwrap_or(u64::MAX)
    }

    /// Steps the clock by `ms` (backwards when negative), as an NTP step
    /// or a suspend would on a monotonic clock that should not move so.
    pub fn step(&self, ms: i64) {
        self.0.offset_ms.fetch_add(ms, Ordering::Relaxed);
    }

    /// When, on tokio's clock, this clock will read `ms` (if it is not
    /// stepped before then; a step forward only makes it come sooner).
    pub fn instant_at(&self, ms: u64) -> Instant {
        let ahead = i128::from(ms) - i128::from(self.now_ms());
        let rate = 1_000_000 + i128::from(self.0.drift_ppm);
        let real_ms = (ahead.max(0) * 1_000_000 / rate.max(1)) as u64;
        Instant::now() + std::time::Duration::from_millis(real_ms)
    }

    /// Whether both handles read one clock.
    pub fn same_clock(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}
