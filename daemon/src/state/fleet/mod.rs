//! The fleet: every node, VM, token and recent event, and the
//! deterministic apply function that changes them. [`Fleet::apply`] first
//! checks every field of the command against the rules the API holds
//! requests to (`validate.rs`), then dispatches each action to one named
//! method (`nodes.rs` for node records, `vms.rs` for VM records,
//! `tokens.rs` for tokens) and, in debug builds, checks the state's
//! invariants after every command (`invariants.rs`), so every test that
//! applies a command checks them.

mod drain;
mod index;
mod invariants;
mod moves;
mod nodes;
mod quotas;
mod requests;
mod tokens;
mod validate;
mod vms;

use super::audit::AuditTrail;
use super::command::*;
use super::model::*;
use super::quota::QuotaLimits;
use blixard_shared::limits::{EVENT_RING_LEN, MAX_EVENT_MESSAGE_LEN};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

pub use index::{FastMap, FleetIndex, GroupIndex, PendingKey};
pub use invariants::InvariantViolation;
pub use requests::RecentRequests;
pub use tokens::JOIN_TOKEN_INVALID;
pub use validate::validate_action;

/// The replicated state. Compared whole in tests, serialized whole into
/// snapshots.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fleet {
    /// Nodes by id.
    pub nodes: BTreeMap<u64, NodeRecord>,
    /// VMs by name, each record shared: a snapshot copies the fleet while
    /// apply waits, and copying 80,000 whole records took ~80 ms, where a
    /// copy of the handles copies no record. A change to a record a copy
    /// still shares clones that one record (`Arc::make_mut`).
    pub vms: BTreeMap<String, Arc<VmRecord>>,
    /// The newest events, oldest first, at most `EVENT_RING_LEN`.
    pub events: VecDeque<EventRecord>,
    /// Revision (log index) of the last applied command.
    pub revision: u64,
    /// Highest revision dropped from the event ring (0: none dropped).
    /// Watchers resuming from below it have missed events.
    pub events_pruned_through: u64,
    /// The longest fencing lease any node ever renewed with, ms: VMs left
    /// `lost` by a removed node wait at least this long (see `scheduler`).
    #[serde(default)]
    pub max_lease_ms: u64,
    /// VMs deleted while placed, by name, with the node whose instance may
    /// still run: a VM of that name is not placed again until that node
    /// reports the instance gone (`ReportVmStatus::gone`) or the leader saw
    /// its lease surely run out (`ForgetDeparted`), so a delete followed by
    /// a create under the same name never runs two instances at once. The
    /// VMs of a removed node depart with it too. At most `MAX_VMS` deleted
    /// ones; past that a delete of a placed VM is refused.
    #[serde(default)]
    pub departed: BTreeMap<String, u64>,
    /// Recent request ids and their outcomes, so a retried write is
    /// answered, not applied twice.
    #[serde(default)]
    pub requests: RecentRequests,
    /// Client tokens by the SHA-256 of their secret (lowercase hex); the
    /// secrets themselves never reach the state. At most `MAX_TOKENS`.
    #[serde(default)]
    pub tokens: BTreeMap<String, TokenRecord>,
    /// One-time join tokens by the SHA-256 of their secret (lowercase
    /// hex). Spent and expired ones are dropped by the next create; at
    /// most `MAX_JOIN_TOKENS`.
    #[serde(default)]
    pub join_tokens: BTreeMap<String, JoinTokenRecord>,
    /// The Cedar policies set by `ReloadPolicies`; `None`: the built-in
    /// defaults (`crate::policy`).
    #[serde(default)]
    pub policies: Option<PolicyRecord>,
    /// The audit trail: who did what, bounded (see `state::audit`).
    #[serde(default)]
    pub audit: AuditTrail,
    /// Quotas by label (`key=value`), at most `MAX_QUOTAS`.
    #[serde(default)]
    pub quotas: BTreeMap<String, QuotaLimits>,
    /// The weight of every VM's spec together (`SpecFields::weight`): the
    /// fleet's byte budget, `MAX_FLEET_SPEC_BYTES`.
    #[serde(default)]
    pub spec_bytes: u64,
    /// Indexes derived from the VM records (usage per node, groups, the
    /// pending queue); never serialized, rebuilt by [`Fleet::rebuild_derived`].
    #[serde(skip)]
    pub index: FleetIndex,
}

/// When a command is applied: its log index (the revision every record and
/// event it touches carries) and the proposer's clock. One value instead of
/// two loose numbers, so no method can swap them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp {
    /// Log index of the command.
    pub revision: u64,
    /// Proposer's wall clock, ms since the Unix epoch.
    pub time_ms: u64,
}

impl Fleet {
    /// Applies `cmd` as log entry `revision`. On rejection nothing changes
    /// except the revision counter. Every field is checked first
    /// ([`validate_action`]): a command that reached the log by any route
    /// (a forged forward, a bug) is held to the API's rules.
    pub fn apply(&mut self, revision: u64, cmd: &Command) -> CommandResult {
        debug_assert!(revision > self.revision, "revisions must increase");
        self.revision = revision;
        let at = Stamp {
            revision,
            time_ms: cmd.time_ms,
        };
        let result = self.apply_valid(at, &cmd.action);
        if let (Ok(_), Some(trace)) = (&result, &cmd.trace) {
            self.keep_trace(&cmd.action, trace);
        }
        if let Err(rejection) = &result {
            tracing::debug!(revision, code = ?rejection.code, reason = %rejection.message, "command rejected");
        }
        debug_assert_eq!(self.check_invariants(), Ok(()), "after {cmd:?}");
        result
    }

    /// Gives the VM an action starts the trace that proposed it.
    fn keep_trace(&mut self, action: &Action, trace: &str) {
        let name = match action {
            Action::Retryable { action, .. } => return self.keep_trace(action, trace),
            Action::CreateVm { name, .. }
            | Action::SetDesired { name, .. }
            | Action::RestartVm { name } => name,
            _ => return,
        };
        if let Some(vm) = self.vms.get_mut(name) {
            std::sync::Arc::make_mut(vm).trace_parent = trace.to_string();
        }
    }

    /// Records that a log entry carrying no command (a Raft membership
    /// change or leader blank) was applied.
    pub fn apply_noop(&mut self, revision: u64) {
        self.revision = self.revision.max(revision);
    }

    /// Checks every field of `action`, then applies it.
    fn apply_valid(&mut self, at: Stamp, action: &Action) -> CommandResult {
        validate_action(action)?;
        match action {
            Action::Retryable { request_id, action } => {
                self.apply_retryable(at, request_id, action)
            }
            action => self.apply_action(at, action),
        }
    }

    /// One line per action: each is a method of its own, so the rules of a
    /// command are read in one place.
    fn apply_action(&mut self, at: Stamp, action: &Action) -> CommandResult {
        match action {
            Action::RegisterNode(reg) => self.register_node(at, reg),
            Action::RemoveNode { id } => self.remove_node(at, *id),
            Action::SetSchedulability { id, value } => self.set_schedulability(at, *id, *value),
            Action::SetNodeHealth { id, health } => self.set_node_health(at, *id, *health),
            Action::RenewLease { id, lease_ms } => self.renew_lease(*id, *lease_ms),
            Action::CreateVm {
                name,
                spec,
                desired,
            } => self.create_vm(at, name, spec, *desired),
            Action::SetDesired { name, desired } => self.set_desired(at, name, *desired),
            Action::PlaceVm {
                name,
                node_id,
                expected_epoch,
            } => self.place_vm(at, name, *node_id, *expected_epoch),
            Action::RescheduleVm {
                name,
                node_id,
                expected_epoch,
                expected_lease_seq,
            } => self.reschedule_vm(at, name, *node_id, *expected_epoch, *expected_lease_seq),
            Action::ReportVmStatus {
                node_id,
                reports,
                gone,
            } => self.report_status(at, *node_id, reports, gone),
            Action::ForgetDeparted {
                name,
                node_id,
                expected_lease_seq,
            } => self.forget_departed(name, *node_id, *expected_lease_seq),
            Action::PreemptVms {
                for_vm,
                node_id,
                victims,
            } => self.preempt_vms(at, for_vm, *node_id, victims),
            Action::MoveVm {
                name,
                expected_epoch,
                to,
                cause,
            } => self.move_vm(at, name, *expected_epoch, *to, cause),
            Action::DrainNode {
                id,
                deadline_ms,
                parallel,
            } => self.drain_node(at, *id, *deadline_ms, *parallel),
            Action::FinishDrain {
                id,
                outcome,
                failed,
            } => self.finish_drain(at, *id, outcome, failed),
            Action::RestartVm { name } => self.restart_vm(at, name),
            Action::DeleteVm { name, force } => self.delete_vm(at, name, *force),
            Action::CreateToken {
                name,
                role,
                hash,
                expires_ms,
                labels,
            } => self.create_token(at, name, *role, hash, *expires_ms, labels),
            Action::SetPolicies { policies, schema } => {
                self.policies = Some(PolicyRecord {
                    policies: policies.clone(),
                    schema: schema.clone(),
                    revision: at.revision,
                });
                Ok(CommandOutcome::Done)
            }
            Action::RevokeToken { name } => self.revoke_token(name),
            Action::CreateJoinToken { hash, expires_ms } => {
                self.create_join_token(at, hash, *expires_ms)
            }
            Action::RedeemJoinToken { hash, node_id } => self.redeem_join_token(at, hash, *node_id),
            Action::RecordAudit(batch) => {
                self.audit.append(batch);
                Ok(CommandOutcome::Done)
            }
            Action::SetQuota { label, limits } => self.set_quota(label, *limits),
            Action::DeleteQuota { label } => self.delete_quota(label),
            Action::Retryable { .. } => Err(Rejection::new(
                RejectionCode::InvalidArgument,
                "a retryable write cannot wrap another",
            )),
        }
    }

    /// A client's write with its request id (checked, with the write, by
    /// [`validate_action`]): answered from memory when the id was seen (see
    /// `requests.rs`), applied and remembered otherwise.
    fn apply_retryable(&mut self, at: Stamp, request_id: &str, action: &Action) -> CommandResult {
        let write = requests::fingerprint(action);
        if let Some(answer) = self.requests.answer(self, request_id, write) {
            tracing::debug!(
                revision = at.revision,
                "a retried write: answered, not applied"
            );
            return answer;
        }
        let result = self.apply_action(at, action);
        self.requests
            .remember(request_id, write, at.revision, &result);
        result
    }

    /// Recomputes what is derived from the records: the weight of every VM
    /// spec (`spec_bytes`, absent from snapshots that predate it) and the
    /// indexes (never serialized), for a state restored from a snapshot.
    pub fn rebuild_derived(&mut self) {
        self.spec_bytes = self.vms.values().map(|vm| vms::spec_weight(&vm.spec)).sum();
        self.index = FleetIndex::build(&self.vms, &self.departed);
    }

    /// Counts VM `name` out of the indexes, before a change to its record
    /// or to its `departed` entry; [`Fleet::reindex`] counts it back in.
    fn unindex(&mut self, name: &str) {
        if let Some(vm) = self.vms.get(name) {
            self.index.remove(vm, self.departed.get(name).copied());
        }
    }

    /// Counts VM `name` into the indexes, after a change.
    fn reindex(&mut self, name: &str) {
        if let Some(vm) = self.vms.get(name) {
            self.index.add(vm, self.departed.get(name).copied());
        }
    }

    /// The oldest revision still in the event ring.
    pub fn oldest_event_revision(&self) -> Option<u64> {
        self.events.front().map(|e| e.revision)
    }

    /// Events with a revision greater than `after`, at most `limit`.
    pub fn events_after(&self, after: u64, limit: usize) -> Vec<EventRecord> {
        let start = self.events.partition_point(|e| e.revision <= after);
        self.events
            .iter()
            .skip(start)
            .take(limit)
            .cloned()
            .collect()
    }

    /// VMs placed on `node_id` (from the index: O(VMs there)).
    pub fn vms_on(&self, node_id: u64) -> impl Iterator<Item = &VmRecord> {
        self.index
            .names_on(node_id)
            .filter_map(|name| self.vms.get(name))
            .map(|vm| &**vm)
    }

    /// Resources wanted by the VMs placed on `node_id` that are meant to run.
    pub fn allocated_on(&self, node_id: u64) -> Resources {
        self.index.usage(node_id)
    }

    /// Appends an event stamped `at`, dropping the oldest past the ring's size.
    fn push_event(&mut self, at: Stamp, kind: &str, subject: &str, mut message: String) {
        truncate_utf8(&mut message, MAX_EVENT_MESSAGE_LEN);
        while self.events.len() >= EVENT_RING_LEN {
            if let Some(dropped) = self.events.pop_front() {
                self.events_pruned_through = dropped.revision;
            }
        }
        self.events.push_back(EventRecord {
            revision: at.revision,
            time_ms: at.time_ms,
            kind: kind.to_string(),
            subject: subject.to_string(),
            message,
        });
    }

    /// The node record with id `id`, or the one "not found" rejection.
    fn node(&self, id: u64) -> Result<&NodeRecord, Rejection> {
        self.nodes.get(&id).ok_or_else(|| node_not_found(id))
    }

    /// The node record to change, or the one "not found" rejection.
    fn node_mut(&mut self, id: u64) -> Result<&mut NodeRecord, Rejection> {
        self.nodes.get_mut(&id).ok_or_else(|| node_not_found(id))
    }

    /// The VM record named `name`, or the one "not found" rejection.
    fn vm(&self, name: &str) -> Result<&VmRecord, Rejection> {
        self.vms
            .get(name)
            .map(|vm| &**vm)
            .ok_or_else(|| vm_not_found(name))
    }

    /// The record to change; cloned first if a snapshot copy shares it, so
    /// check preconditions with [`Fleet::vm`] before calling this.
    fn vm_mut(&mut self, name: &str) -> Result<&mut VmRecord, Rejection> {
        self.vms
            .get_mut(name)
            .map(Arc::make_mut)
            .ok_or_else(|| vm_not_found(name))
    }
}

fn node_not_found(id: u64) -> Rejection {
    Rejection::new(RejectionCode::NotFound, format!("node {id} not found"))
}

fn vm_not_found(name: &str) -> Rejection {
    Rejection::new(RejectionCode::NotFound, format!("vm {name:?} not found"))
}

/// [`truncate_utf8`] for the callers outside the fleet (audit fields).
pub fn truncate_field(text: &mut String, max: usize) {
    truncate_utf8(text, max);
}

/// Cuts `text` to at most `max` bytes, on a character boundary (apply
/// keeps this much of a reason; the agent cuts its own the same way, so it
/// can tell a reason it already reported from a new one).
pub(crate) fn truncate_utf8(text: &mut String, max: usize) {
    if text.len() > max {
        let mut cut = max;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
}
