//! The audit trail as replicated state: a bounded ring of records of who
//! did what, written in batches by each node's recorder (`crate::audit`).
//! Pure data and deterministic rules, so every replica holds the same
//! trail: sequence numbers are given here, at apply; a batch a node sends
//! twice (a retry after a lost answer) is recognised by its node, boot and
//! batch number and applied once.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};

/// How a call ended, for the trail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditResult {
    /// It did what was asked.
    Ok,
    /// The caller was not allowed: no or a bad token, or a policy's denial.
    Denied,
    /// It was allowed but failed (the code says why).
    Failed,
}

impl AuditResult {
    /// The word the API and CLI show.
    pub fn word(self) -> &'static str {
        match self {
            AuditResult::Ok => "ok",
            AuditResult::Denied => "denied",
            AuditResult::Failed => "failed",
        }
    }
}

/// One call as the answering node saw it (before the trail numbers it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// When the node answered, ms since the Unix epoch (its clock).
    pub time_ms: u64,
    /// `token:NAME`, `node:ID` or `anonymous`; never a secret.
    pub principal: String,
    /// The caller's address as the node saw it.
    pub peer: String,
    /// The gRPC method path.
    pub method: String,
    /// The Cedar action.
    pub action: String,
    /// The resource (`Vm::"web-1"`), empty if the call named none.
    pub target: String,
    /// How it ended.
    pub result: AuditResult,
    /// The gRPC status code's name.
    pub code: String,
}

/// An entry with its place in the trail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Position: unique, increasing, gap-free across the cluster.
    pub seq: u64,
    /// The node that answered the call.
    pub node_id: u64,
    /// The call.
    #[serde(flatten)]
    pub entry: AuditEntry,
}

/// What one node's recorder hands to the trail in one log entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditBatch {
    /// The node whose calls these are (a forward of it must come from it).
    pub node_id: u64,
    /// A number for this run of the node's process (its start time, ns),
    /// so its batch numbers may start again at 1 after a restart; a batch
    /// of an earlier run (a smaller number) arriving late is not applied.
    pub boot: u64,
    /// The batch's number within the boot: increasing; a batch at or below
    /// the last applied one of the same boot is a retry and applied never.
    pub batch: u64,
    /// The calls, oldest first.
    pub entries: Vec<AuditEntry>,
    /// Entries the node could not queue since its last batch (queue full,
    /// refusals over budget): counted in the trail's `dropped`.
    pub dropped: u64,
    /// The ring size the sender wants, sent by the leader when its
    /// `audit_ring_len` differs from the trail's.
    pub capacity: Option<u32>,
}

/// The ring.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditTrail {
    /// The newest records, oldest first, at most `capacity`.
    pub records: VecDeque<AuditRecord>,
    /// Most records held; past it the oldest are dropped.
    pub capacity: u32,
    /// Records dropped from the ring, plus entries nodes could not queue.
    pub dropped: u64,
    /// The sequence number of the newest record ever written (0: none).
    pub last_seq: u64,
    /// Per node: the boot and batch number last applied, so a retried
    /// batch is applied once. At most one entry per node ever heard from
    /// (bounded by `MAX_NODES` ids in practice: removed nodes' entries are
    /// dropped with their record, see `forget_node`).
    pub applied: BTreeMap<u64, (u64, u64)>,
}

impl Default for AuditTrail {
    fn default() -> Self {
        Self {
            records: VecDeque::new(),
            capacity: blixard_shared::limits::DEFAULT_AUDIT_RING_LEN,
            dropped: 0,
            last_seq: 0,
            applied: BTreeMap::new(),
        }
    }
}

impl AuditTrail {
    /// Appends `batch`'s entries (once per batch), trims the ring to its
    /// capacity and counts what it dropped. Returns whether it applied the
    /// batch (`false`: a retry of one applied before).
    pub fn append(&mut self, batch: &AuditBatch) -> bool {
        if let Some(&(boot, last)) = self.applied.get(&batch.node_id) {
            // A batch of an earlier run, or one applied before.
            if batch.boot < boot || (boot == batch.boot && batch.batch <= last) {
                return false;
            }
        }
        self.applied
            .insert(batch.node_id, (batch.boot, batch.batch));
        if let Some(capacity) = batch.capacity {
            self.capacity = capacity;
        }
        self.dropped = self.dropped.saturating_add(batch.dropped);
        for entry in &batch.entries {
            self.last_seq += 1;
            self.records.push_back(AuditRecord {
                seq: self.last_seq,
                node_id: batch.node_id,
                entry: entry.clone(),
            });
        }
        self.trim();
        true
    }

    /// Drops the oldest records past the capacity, counting them.
    fn trim(&mut self) {
        let capacity = self.capacity as usize;
        while self.records.len() > capacity {
            self.records.pop_front();
            self.dropped = self.dropped.saturating_add(1);
        }
    }

    /// Forgets a removed node's batch numbers (its records stay).
    pub fn forget_node(&mut self, id: u64) {
        self.applied.remove(&id);
    }

    /// The sequence number of the oldest record held, if any.
    pub fn oldest_seq(&self) -> Option<u64> {
        self.records.front().map(|r| r.seq)
    }

    /// Records with a sequence number above `after`, oldest first.
    pub fn after(&self, after: u64) -> impl Iterator<Item = &AuditRecord> {
        let start = self.records.partition_point(|r| r.seq <= after);
        self.records.iter().skip(start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(action: &str) -> AuditEntry {
        AuditEntry {
            time_ms: 1,
            principal: "token:ci".into(),
            peer: "127.0.0.1:1".into(),
            method: "/blixard.v1.VmService/CreateVm".into(),
            action: action.into(),
            target: "Vm::\"a\"".into(),
            result: AuditResult::Ok,
            code: "ok".into(),
        }
    }

    fn batch(node_id: u64, boot: u64, n: u64, entries: usize) -> AuditBatch {
        AuditBatch {
            node_id,
            boot,
            batch: n,
            entries: (0..entries).map(|_| entry("vm.create")).collect(),
            dropped: 0,
            capacity: None,
        }
    }

    #[test]
    fn a_retried_batch_is_applied_once_and_a_new_boot_starts_over() {
        let mut trail = AuditTrail::default();
        assert!(trail.append(&batch(1, 7, 1, 2)));
        assert!(!trail.append(&batch(1, 7, 1, 2)), "the same batch again");
        assert!(trail.append(&batch(2, 9, 1, 1)), "another node's batch 1");
        assert!(trail.append(&batch(1, 8, 1, 1)), "node 1 restarted");
        assert!(
            !trail.append(&batch(1, 7, 2, 1)),
            "a late batch of its earlier run"
        );
        assert_eq!(trail.records.len(), 4);
        let seqs: Vec<u64> = trail.records.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, [1, 2, 3, 4]);
    }

    #[test]
    fn the_ring_drops_the_oldest_and_counts_them() {
        let mut trail = AuditTrail::default();
        let mut first = batch(1, 1, 1, 5);
        first.capacity = Some(3);
        first.dropped = 2;
        trail.append(&first);
        assert_eq!(trail.records.len(), 3);
        assert_eq!(trail.oldest_seq(), Some(3));
        assert_eq!(
            trail.dropped, 4,
            "two trimmed, two the node could not queue"
        );
        assert_eq!(trail.after(3).map(|r| r.seq).collect::<Vec<_>>(), [4, 5]);
    }
}
