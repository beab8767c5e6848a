//! The lease keeper: renews this node's fencing lease through Raft, writes
//! each new deadline to the lease file for the watchdog, and publishes it to
//! the node agent, which starts nothing while the lease has run out.

use super::lease_file::{lease_clock_ms, read_lease, write_lease};
use super::RENEW_EVERY;
use crate::core::Core;
use crate::shutdown::Shutdown;
use crate::state::{Action, CommandOutcome};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// The lease as the node agent sees it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LeaseStatus {
    /// Until when VMs may run, on the lease clock (the deadline the lease
    /// file holds); `None` before the first renewal.
    pub deadline_ms: Option<u64>,
    /// How many times the lease ran out and was renewed again: an instance
    /// started before the latest of these and found ended was stopped by
    /// the fence, not by a failure of its own.
    pub lapses: u64,
}

impl LeaseStatus {
    /// Whether VMs may run now.
    pub fn valid(&self) -> bool {
        self.deadline_ms.is_some_and(|d| lease_clock_ms() < d)
    }

    /// Time left on the lease (zero when it has run out or never began).
    pub fn remaining(&self) -> Duration {
        let left = self
            .deadline_ms
            .map_or(0, |d| d.saturating_sub(lease_clock_ms()));
        Duration::from_millis(left)
    }
}

/// Renews the lease until shutdown, publishing each renewal on `status`
/// and (when `data_dir` is given: a backend that runs processes) writing
/// it to the lease file for the watchdog.
pub async fn keep_lease(
    core: Arc<Core>,
    lease: Duration,
    data_dir: Option<PathBuf>,
    status: watch::Sender<LeaseStatus>,
    mut shutdown: Shutdown,
) {
    let lease_ms = u64::try_from(lease.as_millis()).unwrap_or(u64::MAX);
    let every = RENEW_EVERY.min(lease / 4);
    if let Some(dir) = &data_dir {
        // A deadline from an earlier run with a longer lease must not
        // outlast what the leader now assumes (this run's lease).
        let cap = lease_clock_ms().saturating_add(lease_ms);
        if read_lease(dir) > cap {
            if let Err(e) = write_lease(dir, cap) {
                tracing::error!(error = %e, "cannot shorten the lease file");
            }
        }
    }
    let mut file_ok = true;
    let mut held = false;
    let mut lapse_counted = false;
    loop {
        let valid = status.borrow().valid();
        if held && !valid {
            core.metrics.fence_lease_lapses.inc();
            lapse_counted = true;
            tracing::warn!(
                "fencing lease has run out: this node's VMs are stopped until it is renewed"
            );
        }
        held = valid;
        core.metrics.fence_lease_valid.set(u64::from(valid));
        let sent = Instant::now();
        let sent_mono = lease_clock_ms();
        // After a failed write, renew only once the file is writable again:
        // a renewal the watchdog cannot see would keep the leader from
        // healing while this host's VMs stay fenced.
        if !file_ok {
            if let Some(dir) = &data_dir {
                file_ok = write_lease(dir, read_lease(dir)).is_ok();
            }
        }
        if !file_ok {
            tokio::select! {
                _ = tokio::time::sleep_until(sent + every) => continue,
                _ = shutdown.recv() => return,
            }
        }
        // A renewal that takes longer than half the lease is worth little.
        let renewed = tokio::select! {
            r = tokio::time::timeout(lease / 2, renew(&core, lease_ms)) => r.ok().and_then(|r| r.ok()),
            _ = shutdown.recv() => return,
        };
        if renewed.is_some() {
            let deadline = sent_mono.saturating_add(lease_ms);
            let written = match &data_dir {
                Some(dir) => write_lease(dir, deadline),
                None => Ok(()),
            };
            match written {
                Ok(()) => {
                    status.send_modify(|s| {
                        if !s.valid() && s.deadline_ms.is_some() {
                            s.lapses += 1;
                            if !lapse_counted {
                                core.metrics.fence_lease_lapses.inc();
                            }
                            tracing::warn!("fencing lease renewed after it had run out");
                        }
                        s.deadline_ms = Some(deadline);
                    });
                    lapse_counted = false;
                    held = status.borrow().valid();
                    core.metrics.fence_lease_valid.set(u64::from(held));
                }
                Err(e) => {
                    file_ok = false;
                    tracing::error!(error = %e, "cannot write the lease file; the lease will run out")
                }
            }
        }
        let next = sent + every;
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            _ = shutdown.recv() => return,
        }
    }
}

/// One renewal: commits it, then waits until this node has applied it, so
/// the agent acts on state at least as new as the renewal.
async fn renew(core: &Core, lease_ms: u64) -> Result<(), String> {
    let outcome = core
        .propose(Action::RenewLease {
            id: core.id,
            lease_ms,
        })
        .await
        .map_err(|e| e.message().to_string())?;
    let CommandOutcome::Node(node) = outcome else {
        return Err("unexpected outcome of a lease renewal".into());
    };
    let mut applied = core.view.subscribe();
    loop {
        {
            let fleet = core.view.read();
            if fleet
                .nodes
                .get(&core.id)
                .is_some_and(|n| n.lease_seq >= node.lease_seq)
            {
                return Ok(());
            }
        }
        applied
            .changed()
            .await
            .map_err(|_| "state machine stopped".to_string())?;
    }
}
