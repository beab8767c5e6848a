//! The fleet: every node, VM and recent event, and the deterministic apply
//! function that changes them.

use super::command::*;
use super::model::*;
use blixard_shared::limits::{EVENT_RING_LEN, MAX_EVENT_MESSAGE_LEN, MAX_NODES, MAX_VMS};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

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
}

impl Fleet {
    /// Applies `cmd` as log entry `revision`. On rejection nothing changes
    /// except the revision counter.
    pub fn apply(&mut self, revision: u64, cmd: &Command) -> CommandResult {
        debug_assert!(revision > self.revision, "revisions must increase");
        self.revision = revision;
        let result = self.apply_action(revision, cmd);
        if let Err(rejection) = &result {
            tracing::debug!(revision, code = ?rejection.code, reason = %rejection.message, "command rejected");
        }
        result
    }

    /// Records that a log entry carrying no command (a Raft membership
    /// change or leader blank) was applied.
    pub fn apply_noop(&mut self, revision: u64) {
        self.revision = self.revision.max(revision);
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

    /// VMs placed on `node_id`.
    pub fn vms_on(&self, node_id: u64) -> impl Iterator<Item = &VmRecord> {
        self.vms
            .values()
            .map(|vm| &**vm)
            .filter(move |vm| vm.node_id == node_id)
    }

    fn push_event(
        &mut self,
        revision: u64,
        time_ms: u64,
        kind: &str,
        subject: &str,
        mut message: String,
    ) {
        truncate_utf8(&mut message, MAX_EVENT_MESSAGE_LEN);
        while self.events.len() >= EVENT_RING_LEN {
            if let Some(dropped) = self.events.pop_front() {
                self.events_pruned_through = dropped.revision;
            }
        }
        self.events.push_back(EventRecord {
            revision,
            time_ms,
            kind: kind.to_string(),
            subject: subject.to_string(),
            message,
        });
    }

    fn node_mut(&mut self, id: u64) -> Result<&mut NodeRecord, Rejection> {
        self.nodes
            .get_mut(&id)
            .ok_or_else(|| Rejection::new(RejectionCode::NotFound, format!("node {id} not found")))
    }

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

    fn apply_action(&mut self, revision: u64, cmd: &Command) -> CommandResult {
        let now = cmd.time_ms;
        match &cmd.action {
            Action::RegisterNode(reg) => self.register_node(revision, now, reg),
            Action::RemoveNode { id } => {
                let id = *id;
                if !self.nodes.contains_key(&id) {
                    return Err(Rejection::new(
                        RejectionCode::NotFound,
                        format!("node {id} not found"),
                    ));
                }
                self.nodes.remove(&id);
                let mut lost = 0usize;
                for vm in self.vms.values_mut().filter(|vm| vm.node_id == id) {
                    let vm = Arc::make_mut(vm);
                    vm.node_id = 0;
                    vm.state = VmState::Lost;
                    vm.reason = format!("node {id} was removed from the cluster");
                    vm.updated_at_ms = now;
                    vm.revision = revision;
                    lost += 1;
                }
                let subject = format!("node/{id}");
                self.push_event(
                    revision,
                    now,
                    "node.removed",
                    &subject,
                    format!("node {id} removed; {lost} VMs lost"),
                );
                Ok(CommandOutcome::Done)
            }
            Action::SetSchedulability { id, value } => {
                let (id, value) = (*id, *value);
                let node = self.node_mut(id)?;
                if node.schedulability == value {
                    return Ok(CommandOutcome::Node(node.clone()));
                }
                node.schedulability = value;
                node.updated_at_ms = now;
                let out = node.clone();
                let kind = match value {
                    Schedulability::Schedulable => "node.uncordoned",
                    Schedulability::Cordoned => "node.cordoned",
                    Schedulability::Draining => "node.draining",
                };
                self.push_event(
                    revision,
                    now,
                    kind,
                    &format!("node/{id}"),
                    format!("node {id} is now {value:?}").to_lowercase(),
                );
                Ok(CommandOutcome::Node(out))
            }
            Action::SetNodeHealth { id, health } => {
                let (id, health) = (*id, *health);
                let node = self.node_mut(id)?;
                if node.health == health {
                    return Ok(CommandOutcome::Node(node.clone()));
                }
                node.health = health;
                node.updated_at_ms = now;
                let out = node.clone();
                let kind = match health {
                    NodeHealth::Alive => "node.alive",
                    NodeHealth::Suspect => "node.suspect",
                    NodeHealth::Down => "node.down",
                };
                self.push_event(
                    revision,
                    now,
                    kind,
                    &format!("node/{id}"),
                    format!("node {id} is {health:?}").to_lowercase(),
                );
                Ok(CommandOutcome::Node(out))
            }
            Action::CreateVm {
                name,
                spec,
                desired,
            } => self.create_vm(revision, now, name, spec, *desired),
            Action::SetDesired { name, desired } => {
                let desired = *desired;
                let current = self.vm(name)?;
                if current.desired == desired {
                    return Ok(CommandOutcome::Vm(current.clone()));
                }
                let vm = self.vm_mut(name)?;
                vm.desired = desired;
                vm.updated_at_ms = now;
                vm.revision = revision;
                let out = vm.clone();
                let (kind, verb) = match desired {
                    DesiredState::Running => ("vm.start_requested", "start"),
                    DesiredState::Stopped => ("vm.stop_requested", "stop"),
                };
                self.push_event(
                    revision,
                    now,
                    kind,
                    &format!("vm/{name}"),
                    format!("{verb} requested for vm {name}"),
                );
                Ok(CommandOutcome::Vm(out))
            }
            Action::PlaceVm {
                name,
                node_id,
                expected_epoch,
            } => self.place_vm(revision, now, name, *node_id, *expected_epoch),
            Action::RenewLease { id, lease_ms } => {
                let node = self.node_mut(*id)?;
                node.lease_seq += 1;
                node.lease_ms = *lease_ms;
                let out = node.clone();
                self.max_lease_ms = self.max_lease_ms.max(*lease_ms);
                Ok(CommandOutcome::Node(out))
            }
            Action::RescheduleVm {
                name,
                node_id,
                expected_epoch,
                expected_lease_seq,
            } => self.reschedule_vm(
                revision,
                now,
                name,
                *node_id,
                *expected_epoch,
                *expected_lease_seq,
            ),
            Action::ReportVmStatus { node_id, reports } => {
                self.report_status(revision, now, *node_id, reports)
            }
            Action::RestartVm { name } => {
                if self.vm(name)?.desired != DesiredState::Running {
                    return Err(Rejection::new(
                        RejectionCode::FailedPrecondition,
                        format!("vm {name:?} is stopped: start it instead of restarting it"),
                    ));
                }
                let vm = self.vm_mut(name)?;
                vm.restart_nonce += 1;
                vm.updated_at_ms = now;
                vm.revision = revision;
                let out = vm.clone();
                self.push_event(
                    revision,
                    now,
                    "vm.restart_requested",
                    &format!("vm/{name}"),
                    format!("restart requested for vm {name}"),
                );
                Ok(CommandOutcome::Vm(out))
            }
            Action::DeleteVm { name, force } => {
                let vm = self.vm(name)?;
                let busy = matches!(
                    vm.state,
                    VmState::Starting | VmState::Running | VmState::Stopping
                );
                if !force && busy {
                    return Err(Rejection::new(
                        RejectionCode::FailedPrecondition,
                        format!(
                            "vm {name:?} is {} (desired {}): stop it first or delete with force",
                            state_word(vm.state),
                            desired_word(vm.desired)
                        ),
                    ));
                }
                self.vms.remove(name);
                self.push_event(
                    revision,
                    now,
                    "vm.deleted",
                    &format!("vm/{name}"),
                    format!("vm {name} deleted"),
                );
                Ok(CommandOutcome::Done)
            }
        }
    }

    fn register_node(&mut self, revision: u64, now: u64, reg: &NodeRegistration) -> CommandResult {
        if reg.id == 0 {
            return Err(Rejection::new(
                RejectionCode::InvalidArgument,
                "node id must not be 0",
            ));
        }
        let subject = format!("node/{}", reg.id);
        match self.nodes.get_mut(&reg.id) {
            Some(node) => {
                let changed = node.address != reg.address
                    || node.capacity != reg.capacity
                    || node.labels != reg.labels
                    || node.zone != reg.zone
                    || node.rack != reg.rack
                    || node.backend != reg.backend;
                if !changed {
                    return Ok(CommandOutcome::Node(node.clone()));
                }
                node.address.clone_from(&reg.address);
                node.capacity = reg.capacity;
                node.labels.clone_from(&reg.labels);
                node.zone.clone_from(&reg.zone);
                node.rack.clone_from(&reg.rack);
                node.backend.clone_from(&reg.backend);
                node.updated_at_ms = now;
                let out = node.clone();
                self.push_event(
                    revision,
                    now,
                    "node.updated",
                    &subject,
                    format!("node {} updated its registration", reg.id),
                );
                Ok(CommandOutcome::Node(out))
            }
            None => {
                if self.nodes.len() >= MAX_NODES {
                    return Err(Rejection::new(
                        RejectionCode::ResourceExhausted,
                        format!("the cluster holds the maximum of {MAX_NODES} nodes"),
                    ));
                }
                let node = NodeRecord {
                    id: reg.id,
                    address: reg.address.clone(),
                    capacity: reg.capacity,
                    labels: reg.labels.clone(),
                    zone: reg.zone.clone(),
                    rack: reg.rack.clone(),
                    backend: reg.backend.clone(),
                    schedulability: Schedulability::Schedulable,
                    health: NodeHealth::Alive,
                    registered_at_ms: now,
                    updated_at_ms: now,
                    lease_seq: 0,
                    lease_ms: 0,
                };
                self.nodes.insert(reg.id, node.clone());
                self.push_event(
                    revision,
                    now,
                    "node.registered",
                    &subject,
                    format!(
                        "node {} registered at {} ({} vCPUs, {} MiB)",
                        reg.id, reg.address, reg.capacity.vcpus, reg.capacity.memory_mib
                    ),
                );
                Ok(CommandOutcome::Node(node))
            }
        }
    }

    fn create_vm(
        &mut self,
        revision: u64,
        now: u64,
        name: &str,
        spec: &VmSpec,
        desired: DesiredState,
    ) -> CommandResult {
        // The API validated the request; these re-checks keep apply total even
        // for a command that bypassed it.
        if let Err(e) = blixard_shared::validate::vm_name(name) {
            return Err(Rejection::new(
                RejectionCode::InvalidArgument,
                e.to_string(),
            ));
        }
        if spec.vcpus == 0 || spec.memory_mib == 0 {
            return Err(Rejection::new(
                RejectionCode::InvalidArgument,
                "spec.vcpus and spec.memory_mib must be positive",
            ));
        }
        if self.vms.contains_key(name) {
            return Err(Rejection::new(
                RejectionCode::AlreadyExists,
                format!("vm {name:?} already exists"),
            ));
        }
        if self.vms.len() >= MAX_VMS {
            return Err(Rejection::new(
                RejectionCode::ResourceExhausted,
                format!("the cluster holds the maximum of {MAX_VMS} VMs"),
            ));
        }
        if !self.nodes.is_empty()
            && !self
                .nodes
                .values()
                .any(|n| n.capacity.memory_mib >= spec.memory_mib && n.capacity.vcpus >= spec.vcpus)
        {
            return Err(Rejection::new(
                RejectionCode::ResourceExhausted,
                format!(
                    "spec: no node can ever hold {} vCPUs and {} MiB (largest node: {})",
                    spec.vcpus,
                    spec.memory_mib,
                    self.nodes
                        .values()
                        .map(|n| format!(
                            "{} vCPUs, {} MiB",
                            n.capacity.vcpus, n.capacity.memory_mib
                        ))
                        .max()
                        .unwrap_or_default()
                ),
            ));
        }
        if spec.node_id != 0 && !self.nodes.contains_key(&spec.node_id) {
            return Err(Rejection::new(
                RejectionCode::InvalidArgument,
                format!(
                    "spec.node_id: node {} is not a member of the cluster",
                    spec.node_id
                ),
            ));
        }
        let vm = VmRecord {
            name: name.to_string(),
            spec: spec.clone(),
            desired,
            node_id: 0,
            epoch: 0,
            state: VmState::Pending,
            reason: "waiting for placement".to_string(),
            created_at_ms: now,
            updated_at_ms: now,
            revision,
            restart_nonce: 0,
            observed: Observed::default(),
        };
        self.vms.insert(name.to_string(), Arc::new(vm.clone()));
        self.push_event(
            revision,
            now,
            "vm.created",
            &format!("vm/{name}"),
            format!(
                "vm {name} created ({} vCPUs, {} MiB, desired {})",
                spec.vcpus,
                spec.memory_mib,
                desired_word(desired)
            ),
        );
        Ok(CommandOutcome::Vm(vm))
    }
}

impl Fleet {
    /// Resources wanted by the VMs meant to run, per node, in one pass over
    /// the VMs (for callers that look at every node).
    pub fn allocations(&self) -> BTreeMap<u64, Resources> {
        let mut by_node: BTreeMap<u64, Resources> = BTreeMap::new();
        for vm in self
            .vms
            .values()
            .filter(|vm| vm.node_id != 0 && vm.desired == DesiredState::Running)
        {
            let r = by_node.entry(vm.node_id).or_default();
            r.vcpus = r.vcpus.saturating_add(vm.spec.vcpus);
            r.memory_mib = r.memory_mib.saturating_add(vm.spec.memory_mib);
        }
        by_node
    }

    /// Resources wanted by the VMs placed on `node_id` that are meant to run.
    pub fn allocated_on(&self, node_id: u64) -> Resources {
        let mut r = Resources::default();
        for vm in self
            .vms_on(node_id)
            .filter(|vm| vm.desired == DesiredState::Running)
        {
            r.vcpus = r.vcpus.saturating_add(vm.spec.vcpus);
            r.memory_mib = r.memory_mib.saturating_add(vm.spec.memory_mib);
        }
        r
    }

    fn place_vm(
        &mut self,
        revision: u64,
        now: u64,
        name: &str,
        node_id: u64,
        expected_epoch: u64,
    ) -> CommandResult {
        let vm = self.vm(name)?;
        if vm.epoch != expected_epoch {
            return Err(Rejection::new(
                RejectionCode::FailedPrecondition,
                format!(
                    "stale placement of vm {name:?}: epoch is {}, not {expected_epoch}",
                    vm.epoch
                ),
            ));
        }
        let node = self.nodes.get(&node_id).ok_or_else(|| {
            Rejection::new(RejectionCode::NotFound, format!("node {node_id} not found"))
        })?;
        if node.schedulability != Schedulability::Schedulable || node.health == NodeHealth::Down {
            return Err(Rejection::new(
                RejectionCode::FailedPrecondition,
                format!(
                    "node {node_id} does not take new VMs ({:?}, {:?})",
                    node.schedulability, node.health
                ),
            ));
        }
        let mut used = self.allocated_on(node_id);
        if vm.node_id == node_id && vm.desired == DesiredState::Running {
            used.vcpus = used.vcpus.saturating_sub(vm.spec.vcpus);
            used.memory_mib = used.memory_mib.saturating_sub(vm.spec.memory_mib);
        }
        if used.vcpus.saturating_add(vm.spec.vcpus) > node.capacity.vcpus
            || used.memory_mib.saturating_add(vm.spec.memory_mib) > node.capacity.memory_mib
        {
            return Err(Rejection::new(
                RejectionCode::ResourceExhausted,
                format!("node {node_id} has no room for vm {name:?}"),
            ));
        }
        let vm = self.vm_mut(name)?;
        vm.node_id = node_id;
        vm.epoch += 1;
        vm.state = VmState::Scheduled;
        vm.reason = format!("placed on node {node_id}");
        vm.observed = Observed::default();
        vm.updated_at_ms = now;
        vm.revision = revision;
        let out = vm.clone();
        self.push_event(
            revision,
            now,
            "vm.placed",
            &format!("vm/{name}"),
            format!("vm {name} placed on node {node_id} (epoch {})", out.epoch),
        );
        Ok(CommandOutcome::Vm(out))
    }

    fn reschedule_vm(
        &mut self,
        revision: u64,
        now: u64,
        name: &str,
        node_id: u64,
        expected_epoch: u64,
        expected_lease_seq: u64,
    ) -> CommandResult {
        let stale = |what: String| Err(Rejection::new(RejectionCode::FailedPrecondition, what));
        let vm = self.vm(name)?;
        if vm.node_id != node_id || vm.epoch != expected_epoch {
            return stale(format!(
                "stale rescheduling of vm {name:?}: it is on node {} at epoch {}, not on node {node_id} at epoch {expected_epoch}",
                vm.node_id, vm.epoch
            ));
        }
        if let Some(node) = self.nodes.get(&node_id) {
            if node.lease_seq != expected_lease_seq {
                return stale(format!(
                    "node {node_id} renewed its lease since (renewal {}, not {expected_lease_seq})",
                    node.lease_seq
                ));
            }
        }
        let vm = self.vm_mut(name)?;
        vm.node_id = 0;
        vm.epoch += 1;
        vm.state = VmState::Pending;
        vm.reason = format!("node {node_id} lost contact with the cluster; placing it again");
        vm.observed = Observed::default();
        vm.updated_at_ms = now;
        vm.revision = revision;
        let out = vm.clone();
        self.push_event(
            revision,
            now,
            "vm.rescheduled",
            &format!("vm/{name}"),
            format!(
                "vm {name} taken off node {node_id} (its lease ran out; epoch {})",
                out.epoch
            ),
        );
        Ok(CommandOutcome::Vm(out))
    }

    fn report_status(
        &mut self,
        revision: u64,
        now: u64,
        node_id: u64,
        reports: &[VmReport],
    ) -> CommandResult {
        if !self.nodes.contains_key(&node_id) {
            return Err(Rejection::new(
                RejectionCode::NotFound,
                format!("node {node_id} not found"),
            ));
        }
        let mut changes = Vec::new();
        for report in reports {
            let Some(shared) = self.vms.get_mut(&report.name) else {
                continue;
            };
            if shared.node_id != node_id || shared.epoch != report.epoch {
                continue;
            }
            let mut reason = report.reason.clone();
            truncate_utf8(&mut reason, MAX_REASON_LEN);
            let state_changed = shared.state != report.state;
            if !state_changed && shared.reason == reason && shared.observed == report.observed {
                continue;
            }
            let vm = Arc::make_mut(shared);
            vm.state = report.state;
            vm.reason = reason;
            vm.observed = report.observed.clone();
            vm.updated_at_ms = now;
            vm.revision = revision;
            if state_changed {
                changes.push((vm.name.clone(), report.state, vm.reason.clone()));
            }
        }
        match changes.as_slice() {
            [] => {}
            [(name, state, reason)] => {
                let word = state_word(*state);
                let message = if reason.is_empty() {
                    format!("vm {name} is {word}")
                } else {
                    format!("vm {name} is {word}: {reason}")
                };
                self.push_event(
                    revision,
                    now,
                    &format!("vm.{word}"),
                    &format!("vm/{name}"),
                    message,
                );
            }
            many => {
                let list: Vec<String> = many
                    .iter()
                    .map(|(n, s, _)| format!("{n} {}", state_word(*s)))
                    .collect();
                self.push_event(
                    revision,
                    now,
                    "vm.status",
                    &format!("node/{node_id}"),
                    list.join(", "),
                );
            }
        }
        Ok(CommandOutcome::Done)
    }
}

fn vm_not_found(name: &str) -> Rejection {
    Rejection::new(RejectionCode::NotFound, format!("vm {name:?} not found"))
}

/// Cuts `text` to at most `max` bytes, on a character boundary.
fn truncate_utf8(text: &mut String, max: usize) {
    if text.len() > max {
        let mut cut = max;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
}

/// Longest status reason kept in a VM record (bytes); longer ones are cut.
pub const MAX_REASON_LEN: usize = 2048;

/// Lower-case word for a VM state, as used in events and messages.
pub fn state_word(s: VmState) -> &'static str {
    match s {
        VmState::Pending => "pending",
        VmState::Scheduled => "scheduled",
        VmState::Starting => "starting",
        VmState::Running => "running",
        VmState::Stopping => "stopping",
        VmState::Stopped => "stopped",
        VmState::Failed => "failed",
        VmState::Lost => "lost",
    }
}

fn desired_word(d: DesiredState) -> &'static str {
    match d {
        DesiredState::Running => "running",
        DesiredState::Stopped => "stopped",
    }
}
