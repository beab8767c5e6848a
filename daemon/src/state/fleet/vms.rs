//! Applying the commands that change VM records: create, desired state,
//! placement and rescheduling (both bump the fencing epoch), status reports
//! from the owning agent, restart requests and deletion.

use super::nodes::node_subject;
use super::{truncate_utf8, Fleet, Stamp};
use crate::state::command::*;
use crate::state::model::*;
use crate::state::placement;
use crate::state::quota;
use blixard_shared::limits::{MAX_FLEET_SPEC_BYTES, MAX_REASON_LEN, MAX_VMS};
use std::sync::Arc;

impl Fleet {
    /// Creates a VM record, pending placement.
    pub(super) fn create_vm(
        &mut self,
        at: Stamp,
        name: &str,
        spec: &VmSpec,
        desired: DesiredState,
    ) -> CommandResult {
        self.check_new_vm(name, spec, desired)?;
        let vm = VmRecord {
            name: name.to_string(),
            spec: spec.clone(),
            desired,
            node_id: 0,
            epoch: 0,
            state: VmState::Pending,
            reason: "waiting for placement".to_string(),
            created_at_ms: at.time_ms,
            updated_at_ms: at.time_ms,
            revision: at.revision,
            restart_nonce: 0,
            moving: None,
            trace_parent: String::new(),
            observed: Observed::default(),
        };
        self.vms.insert(name.to_string(), Arc::new(vm.clone()));
        self.reindex(name);
        self.spec_bytes = self.spec_bytes.saturating_add(spec_weight(spec));
        self.push_event(
            at,
            "vm.created",
            &vm_subject(name),
            format!(
                "vm {name} created ({} vCPUs, {} MiB, desired {})",
                spec.vcpus,
                spec.memory_mib,
                desired_word(desired)
            ),
        );
        Ok(CommandOutcome::Vm(vm))
    }

    /// The checks of a create against the current state (its fields were
    /// checked before, see `validate.rs`).
    fn check_new_vm(
        &self,
        name: &str,
        spec: &VmSpec,
        desired: DesiredState,
    ) -> Result<(), Rejection> {
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
        let weight = spec_weight(spec);
        if self.spec_bytes.saturating_add(weight) > MAX_FLEET_SPEC_BYTES {
            return Err(Rejection::new(
                RejectionCode::ResourceExhausted,
                format!(
                    "the cluster's VM specs would weigh {} bytes, past its budget of {MAX_FLEET_SPEC_BYTES}; delete VMs first",
                    self.spec_bytes.saturating_add(weight)
                ),
            ));
        }
        let add = quota::Addition {
            vm: true,
            runs: desired == DesiredState::Running,
        };
        quota::check(&self.quotas, &self.vms, spec, add)
            .map_err(|m| Rejection::new(RejectionCode::ResourceExhausted, m))?;
        if let Some(group) = self.index.group(&spec.group) {
            if !spec.group.is_empty() && group.max_per_node != spec.max_per_node {
                return Err(Rejection::new(
                    RejectionCode::InvalidArgument,
                    format!(
                        "spec.max_per_node: group {} has max_per_node {} (set by its {} VMs); give the same, or another group",
                        spec.group, group.max_per_node, group.members
                    ),
                ));
            }
        }
        self.check_some_node_fits(spec)?;
        if spec.node_id != 0 && !self.nodes.contains_key(&spec.node_id) {
            return Err(Rejection::new(
                RejectionCode::InvalidArgument,
                format!(
                    "spec.node_id: node {} is not a member of the cluster",
                    spec.node_id
                ),
            ));
        }
        Ok(())
    }

    /// Refuses a VM that no registered node could ever hold (no node yet:
    /// nothing to judge by, so it waits).
    fn check_some_node_fits(&self, spec: &VmSpec) -> Result<(), Rejection> {
        let fits = |n: &NodeRecord| {
            n.capacity.memory_mib >= spec.memory_mib && n.capacity.vcpus >= spec.vcpus
        };
        if self.nodes.is_empty() || self.nodes.values().any(fits) {
            return Ok(());
        }
        let largest = self
            .nodes
            .values()
            .map(|n| format!("{} vCPUs, {} MiB", n.capacity.vcpus, n.capacity.memory_mib))
            .max()
            .unwrap_or_default();
        Err(Rejection::new(
            RejectionCode::ResourceExhausted,
            format!(
                "spec: no node can ever hold {} vCPUs and {} MiB (largest node: {largest})",
                spec.vcpus, spec.memory_mib
            ),
        ))
    }

    /// Changes a VM's desired state (an event only when it changes).
    pub(super) fn set_desired(
        &mut self,
        at: Stamp,
        name: &str,
        desired: DesiredState,
    ) -> CommandResult {
        let current = self.vm(name)?;
        if current.desired == desired {
            return Ok(CommandOutcome::Vm(current.clone()));
        }
        if desired == DesiredState::Running {
            let add = quota::Addition {
                vm: false,
                runs: true,
            };
            quota::check(&self.quotas, &self.vms, &current.spec, add)
                .map_err(|m| Rejection::new(RejectionCode::ResourceExhausted, m))?;
        }
        self.unindex(name);
        let vm = self.vm_mut(name)?;
        vm.desired = desired;
        touch(vm, at);
        let out = vm.clone();
        self.reindex(name);
        if let (DesiredState::Stopped, Some(m)) = (desired, &out.moving) {
            self.drain_moved(name, m.from, false);
        }
        let (kind, verb) = match desired {
            DesiredState::Running => ("vm.start_requested", "start"),
            DesiredState::Stopped => ("vm.stop_requested", "stop"),
        };
        self.push_event(
            at,
            kind,
            &vm_subject(name),
            format!("{verb} requested for vm {name}"),
        );
        Ok(CommandOutcome::Vm(out))
    }

    /// The scheduler's decision: the VM goes to `node_id` with a new epoch,
    /// if the decision is not stale and the node takes it.
    pub(super) fn place_vm(
        &mut self,
        at: Stamp,
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
        // A move would start the VM on the new node while the old one still
        // stops it: VMs leave a node only through `RescheduleVm`, after its
        // lease surely ran out, or by being deleted.
        if vm.node_id != 0 {
            return Err(Rejection::new(
                RejectionCode::FailedPrecondition,
                format!(
                    "vm {name:?} is already placed on node {}; a placed vm is not moved",
                    vm.node_id
                ),
            ));
        }
        if let Some(old) = self.departed.get(name) {
            return Err(Rejection::new(
                RejectionCode::FailedPrecondition,
                format!("an earlier vm named {name:?} may still run on node {old}"),
            ));
        }
        self.check_node_takes(node_id, vm)?;
        let moving = vm.moving.clone();
        self.unindex(name);
        let vm = self.vm_mut(name)?;
        vm.node_id = node_id;
        vm.epoch += 1;
        vm.state = VmState::Scheduled;
        vm.reason = match &moving {
            Some(m) => format!("moved from node {} to node {node_id}", m.from),
            None => format!("placed on node {node_id}"),
        };
        vm.observed = Observed::default();
        vm.moving = None;
        touch(vm, at);
        let out = vm.clone();
        self.reindex(name);
        if let Some(m) = moving {
            self.drain_moved(name, m.from, true);
        }
        self.push_event(
            at,
            "vm.placed",
            &vm_subject(name),
            format!("vm {name} placed on node {node_id} (epoch {})", out.epoch),
        );
        Ok(CommandOutcome::Vm(out))
    }

    /// Whether `node_id` may take `vm` under every hard rule of the
    /// placement engine (`placement::filter`): the engine's own filters,
    /// asked again of the applied state, so a stale decision never
    /// overcommits a node, breaks a group's limit or a constraint.
    pub(super) fn check_node_takes(&self, node_id: u64, vm: &VmRecord) -> Result<(), Rejection> {
        let node = self.node(node_id)?;
        let constraints = placement::constraints_of(vm)
            .map_err(|e| Rejection::new(RejectionCode::InvalidArgument, e))?;
        let load = placement::Load::of(self);
        let group = load.group(&vm.spec.group);
        match placement::filter::refusal(node, vm, &constraints, &load, &group, false) {
            None => Ok(()),
            Some(refusal) => Err(Rejection::new(
                if refusal.is_room() {
                    RejectionCode::ResourceExhausted
                } else {
                    RejectionCode::FailedPrecondition
                },
                format!(
                    "node {node_id} cannot take vm {:?}: {}",
                    vm.name,
                    refusal.describe(vm)
                ),
            )),
        }
    }

    /// The leader takes a VM off a node whose lease ran out, with a new
    /// epoch; stale if the VM moved or the node renewed since.
    pub(super) fn reschedule_vm(
        &mut self,
        at: Stamp,
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
        self.unindex(name);
        let vm = self.vm_mut(name)?;
        vm.node_id = 0;
        vm.epoch += 1;
        vm.state = VmState::Pending;
        vm.reason = format!("node {node_id} lost contact with the cluster; placing it again");
        vm.observed = Observed::default();
        touch(vm, at);
        let out = vm.clone();
        self.reindex(name);
        self.push_event(
            at,
            "vm.rescheduled",
            &vm_subject(name),
            format!(
                "vm {name} taken off node {node_id} (its lease ran out; epoch {})",
                out.epoch
            ),
        );
        Ok(CommandOutcome::Vm(out))
    }

    /// Status reports from `node_id`'s agent: applied where the node still
    /// owns the VM at the reported epoch, ignored otherwise; one event for
    /// one state change, one summary event for several.
    pub(super) fn report_status(
        &mut self,
        at: Stamp,
        node_id: u64,
        reports: &[VmReport],
        gone: &[String],
    ) -> CommandResult {
        self.node(node_id)?;
        for name in gone {
            if self.departed.get(name) == Some(&node_id) {
                self.unindex(name);
                self.departed.remove(name);
                self.reindex(name);
            }
        }
        let changes: Vec<(String, VmState, String)> = reports
            .iter()
            .filter_map(|report| self.apply_report(at, node_id, report))
            .collect();
        match changes.as_slice() {
            [] => {}
            [(name, state, reason)] => {
                let word = state.word();
                let message = if reason.is_empty() {
                    format!("vm {name} is {word}")
                } else {
                    format!("vm {name} is {word}: {reason}")
                };
                self.push_event(at, &format!("vm.{word}"), &vm_subject(name), message);
            }
            many => {
                let list: Vec<String> = many
                    .iter()
                    .map(|(n, s, _)| format!("{n} {}", s.word()))
                    .collect();
                self.push_event(at, "vm.status", &node_subject(node_id), list.join(", "));
            }
        }
        Ok(CommandOutcome::Done)
    }

    /// One report: `Some((name, state, reason))` when it changed the VM's
    /// state, `None` when it was ignored or changed only details.
    fn apply_report(
        &mut self,
        at: Stamp,
        node_id: u64,
        report: &VmReport,
    ) -> Option<(String, VmState, String)> {
        let shared = self.vms.get_mut(&report.name)?;
        if shared.node_id != node_id || shared.epoch != report.epoch {
            return None;
        }
        let mut reason = report.reason.clone();
        truncate_utf8(&mut reason, MAX_REASON_LEN);
        let state_changed = shared.state != report.state;
        if !state_changed && shared.reason == reason && shared.observed == report.observed {
            return None;
        }
        let vm = Arc::make_mut(shared);
        vm.state = report.state;
        vm.reason = reason;
        vm.observed = report.observed.clone();
        touch(vm, at);
        state_changed.then(|| (vm.name.clone(), report.state, vm.reason.clone()))
    }

    /// Asks the owning agent to restart a VM that is meant to run.
    pub(super) fn restart_vm(&mut self, at: Stamp, name: &str) -> CommandResult {
        if self.vm(name)?.desired != DesiredState::Running {
            return Err(Rejection::new(
                RejectionCode::FailedPrecondition,
                format!("vm {name:?} is stopped: start it instead of restarting it"),
            ));
        }
        self.unindex(name);
        let vm = self.vm_mut(name)?;
        vm.restart_nonce += 1;
        touch(vm, at);
        let out = vm.clone();
        self.reindex(name);
        self.push_event(
            at,
            "vm.restart_requested",
            &vm_subject(name),
            format!("restart requested for vm {name}"),
        );
        Ok(CommandOutcome::Vm(out))
    }

    /// Removes a VM record; one that is starting, running or stopping only
    /// with `force`.
    pub(super) fn delete_vm(&mut self, at: Stamp, name: &str, force: bool) -> CommandResult {
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
                    vm.state.word(),
                    desired_word(vm.desired)
                ),
            ));
        }
        let placed_on = vm.node_id;
        if placed_on != 0 && self.departed.len() >= MAX_VMS {
            return Err(Rejection::new(
                RejectionCode::ResourceExhausted,
                format!("{MAX_VMS} deleted vms still wait for their hosts to confirm them gone"),
            ));
        }
        if let Some(m) = vm.moving.clone() {
            self.drain_moved(name, m.from, false);
        }
        self.unindex(name);
        if placed_on != 0 {
            self.departed.insert(name.to_string(), placed_on);
        }
        if let Some(vm) = self.vms.remove(name) {
            self.spec_bytes = self.spec_bytes.saturating_sub(spec_weight(&vm.spec));
        }
        self.push_event(
            at,
            "vm.deleted",
            &vm_subject(name),
            format!("vm {name} deleted"),
        );
        Ok(CommandOutcome::Done)
    }
}

impl Fleet {
    /// The leader judged the node a deleted VM ran on lost (its lease
    /// surely ran out, or it was removed long enough ago): the name may be
    /// placed again. Stale if the node renewed its lease since.
    pub(super) fn forget_departed(
        &mut self,
        name: &str,
        node_id: u64,
        expected_lease_seq: u64,
    ) -> CommandResult {
        if self.departed.get(name) != Some(&node_id) {
            return Err(Rejection::new(
                RejectionCode::FailedPrecondition,
                format!("no deleted vm named {name:?} waits on node {node_id}"),
            ));
        }
        if let Some(node) = self.nodes.get(&node_id) {
            if node.lease_seq != expected_lease_seq {
                return Err(Rejection::new(
                    RejectionCode::FailedPrecondition,
                    format!(
                        "node {node_id} renewed its lease since (renewal {}, not {expected_lease_seq})",
                        node.lease_seq
                    ),
                ));
            }
        }
        self.unindex(name);
        self.departed.remove(name);
        self.reindex(name);
        Ok(CommandOutcome::Done)
    }
}

/// Marks a VM record as changed by the command stamped `at`.
fn touch(vm: &mut VmRecord, at: Stamp) {
    vm.updated_at_ms = at.time_ms;
    vm.revision = at.revision;
}

/// The subject events about VM `name` carry.
fn vm_subject(name: &str) -> String {
    format!("vm/{name}")
}

fn desired_word(d: DesiredState) -> &'static str {
    match d {
        DesiredState::Running => "running",
        DesiredState::Stopped => "stopped",
    }
}

/// What `spec` costs the fleet's byte budget.
pub(super) fn spec_weight(spec: &VmSpec) -> u64 {
    spec.fields().weight() as u64
}
