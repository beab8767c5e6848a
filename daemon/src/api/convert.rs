//! Conversions between the state machine's records and `blixard.v1`
//! messages, kept at the edge so the replicated model never depends on the
//! wire format's messages (only the VM state's one-to-one enum mapping lives
//! with the model, so its words are the API's).

use crate::state::{self, model};
use blixard_shared::proto::v1 as pb;
use std::collections::BTreeMap;

/// Wire form of a VM record.
pub fn vm_to_pb(vm: &model::VmRecord) -> pb::Vm {
    pb::Vm {
        name: vm.name.clone(),
        spec: Some(spec_to_pb(&vm.spec)),
        desired_state: match vm.desired {
            model::DesiredState::Running => pb::DesiredState::Running,
            model::DesiredState::Stopped => pb::DesiredState::Stopped,
        } as i32,
        node_id: vm.node_id,
        epoch: vm.epoch,
        state: pb::VmState::from(vm.state) as i32,
        reason: vm.reason.clone(),
        created_at_ms: vm.created_at_ms,
        updated_at_ms: vm.updated_at_ms,
        revision: vm.revision,
        observed: Some(pb::VmObserved {
            pid: vm.observed.pid,
            started_at_ms: vm.observed.started_at_ms,
            restarts: vm.observed.restarts,
        }),
        placement: String::new(),
        moving_from: vm.moving.as_ref().map_or(0, |m| m.from),
    }
}

fn spec_to_pb(s: &model::VmSpec) -> pb::VmSpec {
    pb::VmSpec {
        vcpus: s.vcpus,
        memory_mib: s.memory_mib,
        image: s.image.clone(),
        kernel: s.kernel.clone(),
        initrd: s.initrd.clone(),
        cmdline: s.cmdline.clone(),
        runner: s.runner.clone(),
        labels: s
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        constraints: s.constraints.clone(),
        group: s.group.clone(),
        max_per_node: s.max_per_node,
        priority: s.priority,
        preemptible: s.preemptible,
        restart_policy: match s.restart_policy {
            model::RestartPolicy::Always => pb::RestartPolicy::Always,
            model::RestartPolicy::OnFailure => pb::RestartPolicy::OnFailure,
            model::RestartPolicy::Never => pb::RestartPolicy::Never,
        } as i32,
        node_id: s.node_id,
        strategy: s.strategy.clone(),
        spread_by: s.spread_by.clone(),
    }
}

/// Model form of a validated wire spec. An empty boot source means the
/// default image.
pub fn spec_from_pb(s: &pb::VmSpec) -> model::VmSpec {
    let image = if s.image.is_empty() && s.kernel.is_empty() && s.runner.is_empty() {
        "default".to_string()
    } else {
        s.image.clone()
    };
    model::VmSpec {
        vcpus: s.vcpus,
        memory_mib: s.memory_mib,
        image,
        kernel: s.kernel.clone(),
        initrd: s.initrd.clone(),
        cmdline: s.cmdline.clone(),
        runner: s.runner.clone(),
        labels: s
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<BTreeMap<_, _>>(),
        constraints: s.constraints.clone(),
        group: s.group.clone(),
        max_per_node: s.max_per_node,
        priority: s.priority,
        preemptible: s.preemptible,
        restart_policy: match pb::RestartPolicy::try_from(s.restart_policy) {
            Ok(pb::RestartPolicy::OnFailure) => model::RestartPolicy::OnFailure,
            Ok(pb::RestartPolicy::Never) => model::RestartPolicy::Never,
            _ => model::RestartPolicy::Always,
        },
        node_id: s.node_id,
        strategy: s.strategy.clone(),
        spread_by: s.spread_by.clone(),
    }
}

/// The VMs placed on a node and the resources they request.
#[derive(Debug, Clone, Default)]
pub struct Placed {
    /// VM names.
    pub vms: Vec<String>,
    /// Their summed requests.
    pub allocated: pb::Capacity,
}

impl Placed {
    fn add(&mut self, vm: &model::VmRecord) {
        self.vms.push(vm.name.clone());
        self.allocated.vcpus = self.allocated.vcpus.saturating_add(vm.spec.vcpus);
        self.allocated.memory_mib = self.allocated.memory_mib.saturating_add(vm.spec.memory_mib);
    }
}

/// What is placed on one node.
pub fn placed_on(fleet: &state::Fleet, node_id: u64) -> Placed {
    let mut placed = Placed::default();
    for vm in fleet.vms_on(node_id) {
        placed.add(vm);
    }
    placed
}

/// What is placed on every node (for lists), from the fleet's index.
pub fn placements(fleet: &state::Fleet) -> BTreeMap<u64, Placed> {
    fleet
        .nodes
        .keys()
        .map(|id| (*id, placed_on(fleet, *id)))
        .collect()
}

/// Wire form of a node record, with what is placed on it.
pub fn node_to_pb(node: &model::NodeRecord, placed: Placed, voter: bool) -> pb::Node {
    let Placed { vms, allocated } = placed;
    let left = vms.len();
    pb::Node {
        id: node.id,
        address: node.address.clone(),
        capacity: Some(pb::Capacity {
            vcpus: node.capacity.vcpus,
            memory_mib: node.capacity.memory_mib,
            disk_mib: node.capacity.disk_mib,
        }),
        labels: node
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        zone: node.zone.clone(),
        rack: node.rack.clone(),
        schedulability: match node.schedulability {
            model::Schedulability::Schedulable => pb::Schedulability::Schedulable,
            model::Schedulability::Cordoned => pb::Schedulability::Cordoned,
            model::Schedulability::Draining => pb::Schedulability::Draining,
        } as i32,
        health: health_to_pb(node.health) as i32,
        backend: node.backend.clone(),
        vms,
        allocated: Some(allocated),
        registered_at_ms: node.registered_at_ms,
        updated_at_ms: node.updated_at_ms,
        voter,
        drain: node.drain.as_ref().map(|d| pb::DrainStatus {
            started_at_ms: d.started_ms,
            deadline_ms: d.deadline_ms,
            parallel: d.parallel,
            moved: d.moved,
            left: u32::try_from(left).unwrap_or(u32::MAX),
            in_flight: d.in_flight.iter().cloned().collect(),
            failed: d
                .failed
                .iter()
                .map(|(name, reason)| pb::DrainFailure {
                    name: name.clone(),
                    reason: reason.clone(),
                })
                .collect(),
            outcome: d.outcome.clone().unwrap_or_default(),
        }),
    }
}

/// Wire form of node health.
pub fn health_to_pb(h: model::NodeHealth) -> pb::NodeHealth {
    match h {
        model::NodeHealth::Alive => pb::NodeHealth::Alive,
        model::NodeHealth::Suspect => pb::NodeHealth::Suspect,
        model::NodeHealth::Down => pb::NodeHealth::Down,
    }
}

/// Wire form of an event.
pub fn event_to_pb(e: &model::EventRecord) -> pb::Event {
    pb::Event {
        revision: e.revision,
        time_ms: e.time_ms,
        kind: e.kind.clone(),
        subject: e.subject.clone(),
        message: e.message.clone(),
    }
}
