//! Copies Raft's own metrics into the Prometheus gauges whenever they
//! change, and counts leader changes.

use crate::core::Core;
use crate::shutdown::Shutdown;
use openraft::async_runtime::WatchReceiver;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Runs until shutdown or until Raft stops.
pub async fn run(core: Arc<Core>, snapshot_bytes: Arc<AtomicU64>, mut shutdown: Shutdown) {
    let mut rx = core.raft.metrics();
    let mut last_leader = None;
    loop {
        {
            // Read in place: the metrics change several times per write
            // batch, and a clone copies the membership and replication maps.
            let m = rx.borrow_watched();
            let g = &core.metrics;
            g.raft_term.set(m.current_term);
            g.raft_is_leader
                .set(u64::from(m.current_leader == Some(core.id)));
            g.raft_commit_index
                .set(m.local_committed.map_or(0, |l| l.index));
            g.raft_applied_index
                .set(m.last_applied.map_or(0, |l| l.index));
            let last = m.last_log_index.unwrap_or(0);
            g.raft_last_log_index.set(last);
            g.raft_log_entries
                .set(last.saturating_sub(m.purged.map_or(0, |l| l.index)));
            g.raft_snapshot_index.set(m.snapshot.map_or(0, |l| l.index));
            g.raft_snapshot_bytes
                .set(snapshot_bytes.load(Ordering::Relaxed));
            if m.current_leader != last_leader {
                if m.current_leader.is_some() {
                    g.raft_leader_changes.inc();
                }
                tracing::info!(leader = ?m.current_leader, term = m.current_term, "leader changed");
                last_leader = m.current_leader;
            }
        }
        tokio::select! {
            r = rx.changed() => if r.is_err() { return },
            _ = shutdown.recv() => return,
        }
    }
}
