//! Preemption: a VM that fits nowhere may displace VMs of lower priority
//! that opted in (`preemptible`). Only nodes that refused it for room
//! alone are considered; on each, victims are taken lowest priority first
//! and, within one priority, largest first, until the VM fits; the node
//! needing the fewest victims wins, then the one whose victims have the
//! lowest priorities, then the lowest id. A VM of equal or higher
//! priority, or one that is not preemptible, is never displaced.

use super::filter::{free_room, refusal};
use super::{constraints_of, Input};
use crate::state::model::{DesiredState, Resources, VmRecord};

/// A VM displaced to make room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Victim {
    /// Its name.
    pub name: String,
    /// The epoch it runs at (the preemption is stale if it moved since).
    pub epoch: u64,
    /// Its priority.
    pub priority: i32,
}

/// Room made for a VM on one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preemption {
    /// The node.
    pub node: u64,
    /// What is displaced, lowest priority first.
    pub victims: Vec<Victim>,
}

/// The cheapest way to make room for `vm`, if there is one.
pub fn plan(input: &Input<'_>, vm: &VmRecord) -> Option<Preemption> {
    if vm.spec.priority <= blixard_shared::limits::MIN_PRIORITY {
        return None;
    }
    let constraints = constraints_of(vm).ok()?;
    let group = input.load.group(&vm.spec.group);
    let mut best: Option<((usize, i32, i64, u64), Preemption)> = None;
    for node in input.fleet.nodes.values() {
        let lost = input.lost.contains(&node.id);
        let Some(why) = refusal(node, vm, &constraints, &input.load, &group, lost) else {
            continue;
        };
        if !why.is_room() {
            continue;
        }
        let Some(victims) = victims_on(input, vm, node.id) else {
            continue;
        };
        let key = (
            victims.len(),
            victims.iter().map(|v| v.priority).max().unwrap_or(i32::MIN),
            victims.iter().map(|v| i64::from(v.priority)).sum(),
            node.id,
        );
        if best.as_ref().is_none_or(|(b, _)| key < *b) {
            best = Some((
                key,
                Preemption {
                    node: node.id,
                    victims,
                },
            ));
        }
    }
    best.map(|(_, p)| p)
}

/// The fewest, lowest-priority VMs on `node` whose leaving makes room for
/// `vm`; `None` if even all of them would not.
fn victims_on(input: &Input<'_>, vm: &VmRecord, node_id: u64) -> Option<Vec<Victim>> {
    let node = input.fleet.nodes.get(&node_id)?;
    let mut candidates: Vec<&VmRecord> = input
        .fleet
        .vms_on(node_id)
        .filter(|v| {
            v.desired == DesiredState::Running
                && v.spec.preemptible
                && v.spec.priority < vm.spec.priority
        })
        .collect();
    candidates.sort_by(|a, b| {
        a.spec
            .priority
            .cmp(&b.spec.priority)
            .then(b.spec.memory_mib.cmp(&a.spec.memory_mib))
            .then(b.spec.vcpus.cmp(&a.spec.vcpus))
            .then(a.name.cmp(&b.name))
    });
    let mut used = input.load.used(node_id);
    let fits = |used: Resources| {
        let free = free_room(node, used);
        free.memory_mib >= vm.spec.memory_mib && free.vcpus >= vm.spec.vcpus
    };
    let mut victims = Vec::new();
    for v in candidates {
        if fits(used) {
            break;
        }
        used.vcpus = used.vcpus.saturating_sub(v.spec.vcpus);
        used.memory_mib = used.memory_mib.saturating_sub(v.spec.memory_mib);
        victims.push(Victim {
            name: v.name.clone(),
            epoch: v.epoch,
            priority: v.spec.priority,
        });
    }
    (fits(used) && !victims.is_empty()).then_some(victims)
}
