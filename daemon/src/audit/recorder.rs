//! One node's side of the audit trail: a bounded queue of the calls it
//! answered, written to the replicated trail by one loop in batches (one
//! log entry every `AUDIT_FLUSH_INTERVAL` at most, or sooner when a batch
//! fills). A batch that fails to commit is sent again, unchanged, until
//! it does; the trail applies each batch once (`state::audit`), so a
//! retry after a lost answer records nothing twice.
//!
//! Limits: at most `MAX_AUDIT_QUEUE` records wait; past it a record is
//! counted as dropped (`limit_hits{limit="audit_queue"}`) and the count
//! travels with the next batch into the trail's `dropped`. Refusals
//! (denied, or refused for the caller's rate) spend a budget of
//! `AUDIT_DENIALS_PER_SEC` (burst `AUDIT_DENIAL_BURST`) first; past it
//! they are counted the same way (`limit="audit_denials"`), so a flood of
//! bad tokens cannot push the real records out of the ring. A node that
//! crashes loses the records it had not written yet (at most one flush
//! interval's worth in a healthy cluster); the changes themselves are in
//! the event ring and the state.

use crate::core::Core;
use crate::metrics::{Limit, Metrics};
use crate::shutdown::Shutdown;
use crate::state::audit::{AuditBatch, AuditEntry, AuditResult};
use crate::state::Action;
use blixard_shared::limits::{
    AUDIT_DENIALS_PER_SEC, AUDIT_DENIAL_BURST, AUDIT_FLUSH_INTERVAL, MAX_AUDIT_BATCH,
    MAX_AUDIT_QUEUE,
};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// Longest wait between two attempts to write a batch that failed.
const MAX_RETRY_BACKOFF: Duration = Duration::from_secs(5);
/// How long a stopping node tries to write what it still holds.
const FINAL_FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

/// The records waiting, and what could not wait.
#[derive(Default)]
struct Queue {
    entries: VecDeque<AuditEntry>,
    dropped: u64,
}

/// The refusal budget: a token bucket.
struct Budget {
    tokens: f64,
    at: Instant,
}

/// One node's recorder (see the module doc).
pub struct Recorder {
    node_id: u64,
    /// This process's run, so batch numbers may restart at 1.
    boot: u64,
    queue: Mutex<Queue>,
    budget: Mutex<Budget>,
    wake: Notify,
    metrics: Metrics,
    /// Becomes true when the writing loop has ended (its last flush done).
    stopped: tokio::sync::watch::Sender<bool>,
}

impl Recorder {
    /// A recorder for node `node_id`, counting its limits in `metrics`.
    pub fn new(node_id: u64, metrics: Metrics) -> Self {
        let nanos = u64::try_from(blixard_shared::time::now_nanos()).unwrap_or(u64::MAX);
        Self {
            node_id,
            // The wall clock: later runs of the process get larger numbers,
            // so the trail can refuse a batch of an earlier run.
            boot: nanos,
            queue: Mutex::default(),
            budget: Mutex::new(Budget {
                tokens: f64::from(AUDIT_DENIAL_BURST),
                at: Instant::now(),
            }),
            wake: Notify::new(),
            metrics,
            stopped: tokio::sync::watch::channel(false).0,
        }
    }

    /// Waits until the writing loop has made its last flush (or `limit`
    /// passed): a stopping node calls it before it stops Raft.
    pub async fn wait_stopped(&self, limit: Duration) {
        let mut rx = self.stopped.subscribe();
        let _ = tokio::time::timeout(limit, rx.wait_for(|s| *s)).await;
    }

    /// Queues one call's record (see the module doc for the limits).
    pub fn record(&self, entry: AuditEntry, refusal: bool) {
        if refusal && !self.spend_budget() {
            self.metrics.limit_hit(Limit::AuditDenials);
            self.lock().dropped += 1;
            return;
        }
        let mut queue = self.lock();
        if queue.entries.len() >= MAX_AUDIT_QUEUE {
            queue.dropped += 1;
            drop(queue);
            self.metrics.limit_hit(Limit::AuditQueue);
            return;
        }
        queue.entries.push_back(entry);
        if queue.entries.len() >= MAX_AUDIT_BATCH {
            self.wake.notify_one();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn spend_budget(&self) -> bool {
        let mut budget = self.budget.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let refill = now.duration_since(budget.at).as_secs_f64() * f64::from(AUDIT_DENIALS_PER_SEC);
        budget.tokens = (budget.tokens + refill).min(f64::from(AUDIT_DENIAL_BURST));
        budget.at = now;
        if budget.tokens < 1.0 {
            return false;
        }
        budget.tokens -= 1.0;
        true
    }

    /// The next batch: up to `MAX_AUDIT_BATCH` waiting records and the
    /// drop count, or `None` when there is nothing to write.
    fn take(&self, number: u64, capacity: Option<u32>) -> Option<AuditBatch> {
        let mut queue = self.lock();
        if queue.entries.is_empty() && queue.dropped == 0 && capacity.is_none() {
            return None;
        }
        let n = queue.entries.len().min(MAX_AUDIT_BATCH);
        let entries = queue.entries.drain(..n).collect();
        let dropped = std::mem::take(&mut queue.dropped);
        Some(AuditBatch {
            node_id: self.node_id,
            boot: self.boot,
            batch: number,
            entries,
            dropped,
            capacity,
        })
    }
}

/// Whether a call's end is a refusal that spends the budget: denied, or
/// refused for its caller's request rate (`rate_limited`; the cluster's
/// own limits, quotas and budgets are failures, recorded like others).
pub fn is_refusal(result: AuditResult, rate_limited: bool) -> bool {
    result == AuditResult::Denied || rate_limited
}

/// The ring size to send with a batch: the leader's `audit_ring_len` when
/// the trail's differs (only the leader sets it, so nodes whose configs
/// differ do not take turns).
fn wanted_capacity(core: &Core) -> Option<u32> {
    let wanted = core.config.audit_ring_len;
    (core.is_leader() && core.view.read().audit.capacity != wanted).then_some(wanted)
}

/// Writes the node's records until it stops, then tries once more, for a
/// while, to write what it still holds.
pub async fn run(core: Arc<Core>, mut shutdown: Shutdown) {
    let recorder = core.audit.clone();
    let mut number = 0u64;
    let mut pending: Option<AuditBatch> = None;
    let mut backoff = AUDIT_FLUSH_INTERVAL;
    loop {
        // While a batch waits to be sent again, a full queue does not cut
        // the back-off short.
        let stop = if pending.is_some() {
            tokio::select! {
                _ = tokio::time::sleep(backoff) => false,
                _ = shutdown.recv() => true,
            }
        } else {
            tokio::select! {
                _ = tokio::time::sleep(AUDIT_FLUSH_INTERVAL) => false,
                _ = recorder.wake.notified() => false,
                _ = shutdown.recv() => true,
            }
        };
        if stop {
            break;
        }
        loop {
            if pending.is_none() {
                pending = recorder.take(number + 1, wanted_capacity(&core));
                if pending.is_some() {
                    number += 1;
                }
            }
            let Some(batch) = &pending else { break };
            match core.propose(Action::RecordAudit(batch.clone())).await {
                Ok(_) => {
                    pending = None;
                    backoff = AUDIT_FLUSH_INTERVAL;
                }
                Err(status) => {
                    tracing::debug!(code = ?status.code(), reason = %status.message(), records = batch.entries.len(), "audit batch not written yet; retrying");
                    backoff = (backoff * 2).min(MAX_RETRY_BACKOFF);
                    break;
                }
            }
        }
    }
    let last = async {
        loop {
            if pending.is_none() {
                pending = recorder.take(number + 1, None);
                number += 1;
            }
            let Some(batch) = &pending else { return };
            if core
                .propose(Action::RecordAudit(batch.clone()))
                .await
                .is_err()
            {
                return;
            }
            pending = None;
        }
    };
    if tokio::time::timeout(FINAL_FLUSH_TIMEOUT, last)
        .await
        .is_err()
    {
        tracing::warn!("audit records not written before the node stopped");
    }
    recorder.stopped.send_replace(true);
}

/// How long a stopping node waits for its recorder's last flush.
pub const STOP_WAIT: Duration = Duration::from_secs(3);

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(result: AuditResult) -> AuditEntry {
        AuditEntry {
            time_ms: 1,
            principal: "anonymous".into(),
            peer: String::new(),
            method: "/blixard.v1.VmService/CreateVm".into(),
            action: "vm.create".into(),
            target: String::new(),
            result,
            code: "ok".into(),
        }
    }

    #[test]
    fn refusals_past_the_budget_and_records_past_the_queue_are_counted() {
        let recorder = Recorder::new(1, Metrics::new());
        for _ in 0..AUDIT_DENIAL_BURST + 10 {
            recorder.record(entry(AuditResult::Denied), true);
        }
        let (mut queued, mut dropped, mut n) = (0, 0, 0);
        while let Some(batch) = recorder.take(n + 1, None) {
            n += 1;
            assert!(batch.entries.len() <= MAX_AUDIT_BATCH);
            queued += batch.entries.len();
            dropped += batch.dropped;
        }
        assert_eq!(queued, AUDIT_DENIAL_BURST as usize);
        assert!(dropped >= 9, "over the budget: {dropped}");
        for _ in 0..MAX_AUDIT_QUEUE + 3 {
            recorder.record(entry(AuditResult::Ok), false);
        }
        let batch = recorder.take(n + 1, None).expect("a batch");
        assert_eq!(batch.entries.len(), MAX_AUDIT_BATCH);
        assert_eq!(batch.dropped, 3);
        assert!(recorder.take(n + 2, None).is_some(), "the rest waits");
    }

    #[test]
    fn nothing_to_write_is_no_batch() {
        let recorder = Recorder::new(1, Metrics::new());
        assert!(recorder.take(1, None).is_none());
        assert!(recorder.take(1, Some(500)).is_some(), "a ring size to set");
    }
}
