//! The lease keeper: renews this node's fencing lease through Raft, writes
//! each new deadline to the lease file for the watchdog, and publishes it to
//! the node agent, which starts nothing while the lease has run out.

use super::clock::LeaseClock;
use super::lease_file::{read_lease, write_lease};
use super::RENEW_EVERY;
use crate::core::Core;
use crate::host::agent::{Heartbeat, AGENT_STALL_LIMIT};
use crate::shutdown::Shutdown;
use crate::state::{Action, CommandOutcome};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// The lease as the node agent sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaseStatus {
    /// Until when VMs may run, on the lease clock (the deadline the lease
    /// file holds); `None` before the first renewal.
    pub deadline_ms: Option<u64>,
    /// How many times the lease ran out and was renewed again: an instance
    /// started before the latest of these and found ended was stopped by
    /// the fence, not by a failure of its own.
    pub lapses: u64,
    /// The clock `deadline_ms` is on.
    pub clock: LeaseClock,
}

impl LeaseStatus {
    /// Whether VMs may run now.
    pub fn valid(&self) -> bool {
        self.deadline_ms.is_some_and(|d| self.clock.now_ms() < d)
    }

    /// Time left on the lease (zero when it has run out or never began).
    pub fn remaining(&self) -> Duration {
        let left = self
            .deadline_ms
            .map_or(0, |d| d.saturating_sub(self.clock.now_ms()));
        Duration::from_millis(left)
    }
}

/// Turns a keeper's loop may miss before it takes the gap for a pause of
/// the whole process rather than a slow turn.
const PAUSE_TURNS: u32 = 4;

/// Renews the lease until shutdown, publishing each renewal on `status`
/// and (when `data_dir` is given: a backend that runs processes) writing
/// it to the lease file for the watchdog. Renews only while the agent's
/// `heartbeat` is fresh.
pub async fn keep_lease(
    core: Arc<Core>,
    lease: Duration,
    data_dir: Option<PathBuf>,
    status: watch::Sender<LeaseStatus>,
    heartbeat: Heartbeat,
    mut shutdown: Shutdown,
) {
    let clock = status.borrow().clock.clone();
    let mut keeper = Keeper {
        clock,
        lease_ms: u64::try_from(lease.as_millis()).unwrap_or(u64::MAX),
        every: RENEW_EVERY.min(lease / 4),
        core,
        data_dir,
        status,
        heartbeat,
        file_ok: true,
        held: false,
        lapse_counted: false,
        stall_reported: false,
    };
    keeper.cap_earlier_deadline().await;
    let mut last_turn = Instant::now();
    let mut stale_turns: u32 = 0;
    loop {
        let next = Instant::now() + keeper.every;
        // The whole process stood still (SIGSTOP, a paused host): the
        // agent's heartbeat is as old as the pause, which says nothing of
        // the agent itself. Judge it again from the next turn on.
        let paused = last_turn.elapsed() > keeper.every * PAUSE_TURNS;
        last_turn = Instant::now();
        let sent_mono = keeper.clock.now_ms();
        keeper.note_validity();
        stale_turns = match (paused, keeper.heartbeat.fresh()) {
            (false, false) => stale_turns.saturating_add(1),
            _ => 0,
        };
        // An agent stuck past its lease, while this keeper ran, is a broken
        // daemon: end, so the node fails and its service manager restarts
        // it (a leader would otherwise keep leading with its own VMs fenced,
        // and nobody would heal them: the leader never reschedules its own).
        if keeper.every * stale_turns > AGENT_STALL_LIMIT + lease {
            tracing::error!(
                "the node agent has been stuck for longer than its lease: the node fails"
            );
            return;
        }
        if keeper.may_renew(paused).await {
            // A renewal that takes longer than half the lease is worth little.
            let renewed = tokio::select! {
                r = tokio::time::timeout(lease / 2, renew(&keeper.core, keeper.lease_ms)) => r.ok().and_then(|r| r.ok()),
                _ = shutdown.recv() => return,
            };
            if renewed.is_some() {
                keeper
                    .publish(sent_mono.saturating_add(keeper.lease_ms))
                    .await;
            }
        }
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            _ = shutdown.recv() => return,
        }
    }
}

/// The lease keeper's state between renewals.
struct Keeper {
    core: Arc<Core>,
    /// The clock the lease is kept on.
    clock: LeaseClock,
    lease_ms: u64,
    every: Duration,
    data_dir: Option<PathBuf>,
    status: watch::Sender<LeaseStatus>,
    heartbeat: Heartbeat,
    /// Whether the lease file could be written last time.
    file_ok: bool,
    /// Whether the lease was valid at the last look.
    held: bool,
    /// Whether the current lapse was counted already.
    lapse_counted: bool,
    /// Whether the current stall of the agent was reported already.
    stall_reported: bool,
}

impl Keeper {
    /// A deadline from an earlier run with a longer lease must not outlast
    /// what the leader now assumes (this run's lease).
    async fn cap_earlier_deadline(&self) {
        let Some(dir) = &self.data_dir else {
            return;
        };
        let cap = self.clock.now_ms().saturating_add(self.lease_ms);
        if read_lease(dir) > cap {
            if let Err(e) = write_lease_off_runtime(dir.clone(), cap).await {
                tracing::error!(error = %e, "cannot shorten the lease file");
            }
        }
    }

    /// Counts a lapse when the lease ran out since the last look.
    fn note_validity(&mut self) {
        let valid = self.status.borrow().valid();
        if self.held && !valid {
            self.core.metrics.fence_lease_lapses.inc();
            self.lapse_counted = true;
            tracing::warn!(
                "fencing lease has run out: this node's VMs are stopped until it is renewed"
            );
        }
        self.held = valid;
        self.core.metrics.fence_lease_valid.set(u64::from(valid));
    }

    /// Whether to renew now: the lease file is writable (a renewal the
    /// watchdog cannot see would keep the leader from healing while this
    /// host's VMs stay fenced), and the agent is alive and passing (not
    /// judged on the turn right after the whole process was paused).
    async fn may_renew(&mut self, paused: bool) -> bool {
        if !self.file_ok {
            if let Some(dir) = &self.data_dir {
                let current = read_lease(dir);
                self.file_ok = write_lease_off_runtime(dir.clone(), current).await.is_ok();
            }
            if !self.file_ok {
                return false;
            }
        }
        if !paused && !self.heartbeat.fresh() {
            if !self.stall_reported {
                tracing::error!(
                    stalled_ms = u64::try_from(self.heartbeat.age().as_millis()).unwrap_or(u64::MAX),
                    "the node agent is stuck: the lease is not renewed, so this host's VMs are fenced and healed elsewhere"
                );
                self.stall_reported = true;
            }
            return false;
        }
        if self.stall_reported {
            tracing::info!("the node agent passes again: renewing the lease");
            self.stall_reported = false;
        }
        true
    }

    /// Makes a committed renewal's deadline known: to the watchdog through
    /// the lease file first, then to the agent.
    async fn publish(&mut self, deadline: u64) {
        let written = match &self.data_dir {
            Some(dir) => write_lease_off_runtime(dir.clone(), deadline).await,
            None => Ok(()),
        };
        if let Err(e) = written {
            self.file_ok = false;
            tracing::error!(error = %e, "cannot write the lease file; the lease will run out");
            return;
        }
        let core = &self.core;
        let lapse_counted = self.lapse_counted;
        self.status.send_modify(|s| {
            if !s.valid() && s.deadline_ms.is_some() {
                s.lapses += 1;
                if !lapse_counted {
                    core.metrics.fence_lease_lapses.inc();
                }
                tracing::warn!("fencing lease renewed after it had run out");
            }
            s.deadline_ms = Some(deadline);
        });
        self.lapse_counted = false;
        // A simulated host journals its deadline for the fencing check.
        if let Some(host) = &self.core.config.sim {
            host.backend.note_lease(host.clock.instant_at(deadline));
        }
        self.held = self.status.borrow().valid();
        self.core
            .metrics
            .fence_lease_valid
            .set(u64::from(self.held));
    }
}

/// [`write_lease`] on a blocking thread: it fsyncs, and an fsync on the
/// runtime's threads stalls the heartbeats they carry.
async fn write_lease_off_runtime(dir: PathBuf, deadline: u64) -> std::io::Result<()> {
    crate::sim::blocking::run(move || write_lease(&dir, deadline)).await?
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
