//! Blocking work (file I/O, encoding a snapshot) off the async threads, or
//! inline on a simulator's thread. tokio's blocking pool runs on real
//! threads at real speed, which the simulator cannot order: a simulated
//! run marks its one thread so such work runs where it is awaited, in the
//! same place in every replay of a seed. Production never marks a thread.

use std::cell::Cell;
use std::io;

thread_local! {
    /// Whether this thread runs a simulation.
    static INLINE: Cell<bool> = const { Cell::new(false) };
}

/// Marks this thread as a simulator's: blocking work awaited on it runs
/// inline. Simulation only.
pub fn run_inline_on_this_thread() {
    INLINE.with(|i| i.set(true));
}

/// Whether this thread runs a simulation.
fn is_simulated() -> bool {
    INLINE.with(Cell::get)
}

/// Runs `f` on tokio's blocking pool, or inline on a simulator's thread;
/// a panic or a cancelled task in the pool reads as an I/O error.
pub async fn run<F, T>(f: F) -> io::Result<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    if is_simulated() {
        return Ok(f());
    }
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| io::Error::other(format!("blocking task failed: {e}")))
}
