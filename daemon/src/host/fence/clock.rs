//! The clock the fencing lease is kept on, behind one small type so the
//! simulator can give every simulated host its own (with drift and steps)
//! while production reads CLOCK_BOOTTIME (see [`lease_clock_ms`]).

use super::lease_file::lease_clock_ms;
use crate::sim::clock::SimClock;

/// Where a node's lease time comes from.
#[derive(Debug, Clone, Default)]
pub enum LeaseClock {
    /// The host's CLOCK_BOOTTIME, shared with the watchdog process.
    #[default]
    BootTime,
    /// A simulated host's clock (simulation only).
    Simulated(SimClock),
}

impl LeaseClock {
    /// Milliseconds on this clock.
    pub fn now_ms(&self) -> u64 {
        match self {
            Self::BootTime => lease_clock_ms(),
            Self::Simulated(c) => c.now_ms(),
        }
    }
}

impl PartialEq for LeaseClock {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::BootTime, Self::BootTime) => true,
            (Self::Simulated(a), Self::Simulated(b)) => a.same_clock(b),
            _ => false,
        }
    }
}

impl Eq for LeaseClock {}
