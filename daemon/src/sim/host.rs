//! What a simulated host is made of besides the daemon's own code: its
//! disk, its clock, and the test backend that pretends to run its VMs and
//! journals every start and stop, with simulated times, for the checkers.

use super::clock::SimClock;
use super::disk::SimDisk;
use crate::backend::fake::FakeBackend;
use std::sync::{Arc, Mutex};
use tokio::time::Instant;

/// A simulated host (set as `Config::sim` by simulation tests only).
#[derive(Clone)]
pub struct SimHost {
    /// The disk redb keeps the node's state on.
    pub disk: SimDisk,
    /// The host's clock, which the fencing lease runs on.
    pub clock: SimClock,
    /// The backend the node agent drives.
    pub backend: Arc<FakeBackend>,
}

impl std::fmt::Debug for SimHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimHost")
            .field("disk", &self.disk)
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

/// What happened to an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunChange {
    /// The backend started it.
    Started,
    /// It stopped running (stopped, killed, or crashed on purpose).
    Ended,
    /// The host's lease now runs until this instant (tokio's clock); the
    /// record names no VM.
    LeaseUntil(Instant),
}

/// One start or end of an instance on a simulated host.
#[derive(Debug, Clone)]
pub struct RunRecord {
    /// Host.
    pub node: u64,
    /// VM name.
    pub vm: String,
    /// Placement epoch it was started for.
    pub epoch: u64,
    /// Start or end.
    pub change: RunChange,
    /// When, on tokio's clock.
    pub at: Instant,
}

/// The journal every simulated host's backend appends to; clones share it.
#[derive(Debug, Clone, Default)]
pub struct RunJournal(Arc<Mutex<Vec<RunRecord>>>);

impl RunJournal {
    /// Appends a record.
    pub fn push(&self, record: RunRecord) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(record);
    }

    /// Every record so far, in the order they happened.
    pub fn records(&self) -> Vec<RunRecord> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}
