//! The hard rules: whether one node may take one VM, and if not, the first
//! rule it breaks. The engine asks them of every node; apply asks them
//! again of the node a decision names, so a stale decision never breaks a
//! rule.

use super::{GroupCounts, Load};
use crate::state::model::{NodeHealth, NodeRecord, Resources, Schedulability, VmRecord};
use blixard_shared::constraint::Constraint;

/// Why a node cannot take a VM, in the order the rules are asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The VM is pinned to another node.
    NotPinned,
    /// The VM is moving off this node.
    MovingOff,
    /// The VM is migrating to another node.
    NotTarget(u64),
    /// The node is down, or its fencing lease surely ran out.
    Down,
    /// The node missed heartbeats.
    Suspect,
    /// The node is cordoned.
    Cordoned,
    /// The node is being drained.
    Draining,
    /// The node's backend (`process`) runs only runner VMs.
    Backend,
    /// The node does not match the VM's constraint of this index.
    Constraint(usize),
    /// The VM's group already has its `max_per_node` on this node.
    GroupFull,
    /// Not enough memory left.
    Memory {
        /// What the VM needs, MiB.
        need: u64,
        /// What the node has free, MiB.
        free: u64,
    },
    /// Not enough vCPUs left.
    Vcpus {
        /// What the VM needs.
        need: u32,
        /// What the node has free.
        free: u32,
    },
}

impl Refusal {
    /// Whether only room stands in the way (what preemption can change).
    pub fn is_room(&self) -> bool {
        matches!(self, Self::Memory { .. } | Self::Vcpus { .. })
    }

    /// The words for one node about `vm`, as `vm explain` prints them.
    pub fn describe(&self, vm: &VmRecord) -> String {
        match self {
            Self::NotPinned => "not the node the VM is pinned to".into(),
            Self::MovingOff => "the VM is moving off it".into(),
            Self::NotTarget(to) => format!("not the migration's target (node {to})"),
            Self::Down => "down (or its lease ran out)".into(),
            Self::Suspect => "suspect (missed heartbeats)".into(),
            Self::Cordoned => "cordoned".into(),
            Self::Draining => "draining".into(),
            Self::Backend => "its process backend runs only runner VMs".into(),
            Self::Constraint(i) => format!(
                "does not match {}",
                vm.spec.constraints.get(*i).map_or("?", String::as_str)
            ),
            Self::GroupFull => format!(
                "would exceed group {} max {} per node",
                vm.spec.group, vm.spec.max_per_node
            ),
            Self::Memory { need, free } => {
                format!("lacks memory (need {need} MiB, free {free})")
            }
            Self::Vcpus { need, free } => format!("lacks vCPUs (need {need}, free {free})"),
        }
    }
}

/// Whether a node's backend can run `vm`: the process backend runs only
/// runners; QEMU runs images, kernels and runners.
pub fn backend_can_run(backend: &str, vm: &VmRecord) -> bool {
    match backend {
        "process" => !vm.spec.runner.is_empty(),
        _ => true,
    }
}

/// The value of node attribute `key`: its zone, its rack, or a label.
pub fn node_attribute<'a>(node: &'a NodeRecord, key: &str) -> Option<&'a str> {
    let value = match key {
        "zone" => node.zone.as_str(),
        "rack" => node.rack.as_str(),
        _ => return node.labels.get(key).map(String::as_str),
    };
    (!value.is_empty()).then_some(value)
}

/// The first rule `node` breaks for `vm`, or `None` if it may take it.
/// `constraints` are `vm`'s, parsed once by the caller; `lost` says the
/// leader saw the node's lease surely run out.
pub fn refusal(
    node: &NodeRecord,
    vm: &VmRecord,
    constraints: &[Constraint],
    load: &Load<'_>,
    group: &GroupCounts<'_>,
    lost: bool,
) -> Option<Refusal> {
    if vm.spec.node_id != 0 && vm.spec.node_id != node.id {
        return Some(Refusal::NotPinned);
    }
    if let Some(m) = &vm.moving {
        if m.from == node.id {
            return Some(Refusal::MovingOff);
        }
        if m.to != 0 && m.to != node.id {
            return Some(Refusal::NotTarget(m.to));
        }
    }
    if lost || node.health == NodeHealth::Down {
        return Some(Refusal::Down);
    }
    if node.health == NodeHealth::Suspect {
        return Some(Refusal::Suspect);
    }
    match node.schedulability {
        Schedulability::Schedulable => {}
        Schedulability::Cordoned => return Some(Refusal::Cordoned),
        Schedulability::Draining => return Some(Refusal::Draining),
    }
    if !backend_can_run(&node.backend, vm) {
        return Some(Refusal::Backend);
    }
    if let Some(i) = constraints
        .iter()
        .position(|c| !c.admits(node_attribute(node, &c.key)))
    {
        return Some(Refusal::Constraint(i));
    }
    if !vm.spec.group.is_empty() && vm.spec.max_per_node != 0 {
        let here = group.on(node.id);
        let own = u32::from(vm.node_id == node.id);
        if here.saturating_sub(own) >= vm.spec.max_per_node {
            return Some(Refusal::GroupFull);
        }
    }
    let free = free_room(node, load.used(node.id));
    if free.memory_mib < vm.spec.memory_mib {
        return Some(Refusal::Memory {
            need: vm.spec.memory_mib,
            free: free.memory_mib,
        });
    }
    if free.vcpus < vm.spec.vcpus {
        return Some(Refusal::Vcpus {
            need: vm.spec.vcpus,
            free: free.vcpus,
        });
    }
    None
}

/// What is left of `node`'s capacity (its vCPUs already counted with the
/// node's `vcpu_overcommit`) once `used` is taken.
pub fn free_room(node: &NodeRecord, used: Resources) -> Resources {
    Resources {
        vcpus: node.capacity.vcpus.saturating_sub(used.vcpus),
        memory_mib: node.capacity.memory_mib.saturating_sub(used.memory_mib),
        disk_mib: node.capacity.disk_mib.saturating_sub(used.disk_mib),
    }
}
