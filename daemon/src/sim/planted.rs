//! Bugs planted on purpose, so the simulation shows that its checkers
//! catch real mistakes rather than only passing. Each is compiled into
//! the daemon only with the test-only `planted-bugs` feature, and even
//! then acts only on a simulator thread that switched it on.

use std::cell::Cell;

/// A planted bug.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Planted {
    /// Linearizable reads answered from local state, with no read index:
    /// a node cut off from the leader serves what it last knew.
    StaleReads,
    /// The leader takes a silent node's VMs elsewhere after half its lease
    /// instead of after the lease and the heal margin: the old host may
    /// still run them.
    EarlyHeal,
    /// A host's fencing (its node agent and its watchdog) leaves its VMs
    /// running when its lease runs out.
    IgnoreLapse,
}

thread_local! {
    static ON: Cell<Option<Planted>> = const { Cell::new(None) };
}

/// Switches `bug` on for this thread (`None`: none).
pub fn plant_on_this_thread(bug: Option<Planted>) {
    ON.with(|on| on.set(bug));
}

/// Whether `bug` is switched on for this thread.
pub fn is_on(bug: Planted) -> bool {
    ON.with(|on| on.get() == Some(bug))
}
