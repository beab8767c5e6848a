//! Indexes derived from the VM records, kept up to date by apply: what
//! each node holds, each group's members per node, and the VMs waiting
//! for a node in the order they are tried. Never serialized: rebuilt from
//! the records after a snapshot restore ([`FleetIndex::build`]), and
//! checked against a rebuild after every command in debug builds (see
//! `invariants.rs`). With them a placement, its re-check in apply and a
//! scheduler pass cost O(nodes + changes), not O(VMs).

use crate::state::model::{DesiredState, Resources, VmRecord};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// A hash map with a fast, fixed hasher (foldhash): the indexes are
/// looked up once per node per placement decision, where SipHash showed.
pub type FastMap<K, V> = HashMap<K, V, foldhash::fast::FixedState>;
use std::sync::Arc;

/// Where a VM waits in the pending queue: higher priority first, then
/// older first, then by name (so the order is total and the same on
/// every node).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PendingKey {
    /// Priority, highest first.
    pub priority: Reverse<i32>,
    /// Creation time, oldest first.
    pub created_at_ms: u64,
    /// Name.
    pub name: String,
}

/// A group's members and where they are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupIndex {
    /// The group's `max_per_node` (every member carries the same; 0: none).
    pub max_per_node: u32,
    /// Members of the group.
    pub members: u32,
    /// Members per node: placed there, or moved off it while their old
    /// instance may still run there (`Fleet::departed`).
    pub on: FastMap<u64, u32>,
}

/// The fleet's derived indexes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FleetIndex {
    usage: FastMap<u64, Resources>,
    on_node: FastMap<u64, BTreeSet<String>>,
    /// Per node, the wrapping sum of epoch, restart nonce and desired
    /// state over the VMs placed there: with the count and usage, a cheap
    /// sign that what the node must run changed (the agent wakes on it).
    assigned: FastMap<u64, u64>,
    groups: FastMap<String, GroupIndex>,
    pending: BTreeSet<PendingKey>,
}

impl FleetIndex {
    /// The indexes of `vms`, `departed` being the nodes moved or deleted
    /// VMs may still run on.
    pub fn build(vms: &BTreeMap<String, Arc<VmRecord>>, departed: &BTreeMap<String, u64>) -> Self {
        let mut index = Self::default();
        for vm in vms.values() {
            index.add(vm, departed.get(&vm.name).copied());
        }
        index
    }

    /// Counts `vm` in (with the node its old instance may still run on).
    pub(super) fn add(&mut self, vm: &VmRecord, departed: Option<u64>) {
        self.count(vm, departed, true);
    }

    /// Counts `vm` out; the inverse of [`FleetIndex::add`] with the same
    /// arguments.
    pub(super) fn remove(&mut self, vm: &VmRecord, departed: Option<u64>) {
        self.count(vm, departed, false);
    }

    fn count(&mut self, vm: &VmRecord, departed: Option<u64>, add: bool) {
        let step = |n: &mut u32| {
            *n = if add {
                n.saturating_add(1)
            } else {
                n.saturating_sub(1)
            }
        };
        if vm.node_id != 0 {
            if vm.desired == DesiredState::Running {
                let used = self.usage.entry(vm.node_id).or_default();
                if add {
                    used.vcpus = used.vcpus.saturating_add(vm.spec.vcpus);
                    used.memory_mib = used.memory_mib.saturating_add(vm.spec.memory_mib);
                } else {
                    used.vcpus = used.vcpus.saturating_sub(vm.spec.vcpus);
                    used.memory_mib = used.memory_mib.saturating_sub(vm.spec.memory_mib);
                }
                if *used == Resources::default() {
                    self.usage.remove(&vm.node_id);
                }
            }
            let sign = vm
                .epoch
                .wrapping_add(vm.restart_nonce)
                .wrapping_add(u64::from(vm.desired == DesiredState::Running));
            let sum = self.assigned.entry(vm.node_id).or_default();
            *sum = if add {
                sum.wrapping_add(sign)
            } else {
                sum.wrapping_sub(sign)
            };
            let names = self.on_node.entry(vm.node_id).or_default();
            if add {
                names.insert(vm.name.clone());
            } else {
                names.remove(&vm.name);
                if names.is_empty() {
                    self.on_node.remove(&vm.node_id);
                    self.assigned.remove(&vm.node_id);
                }
            }
        } else if vm.desired == DesiredState::Running {
            let key = pending_key(vm);
            if add {
                self.pending.insert(key);
            } else {
                self.pending.remove(&key);
            }
        }
        if vm.spec.group.is_empty() {
            return;
        }
        let group = self.groups.entry(vm.spec.group.clone()).or_default();
        group.max_per_node = vm.spec.max_per_node;
        step(&mut group.members);
        let nodes = [
            Some(vm.node_id).filter(|n| *n != 0),
            departed.filter(|d| *d != vm.node_id),
        ];
        for node in nodes.into_iter().flatten() {
            let n = group.on.entry(node).or_default();
            step(n);
            if *n == 0 {
                group.on.remove(&node);
            }
        }
        if group.members == 0 {
            self.groups.remove(&vm.spec.group);
        }
    }

    /// Resources wanted by the VMs placed on `node` that are meant to run.
    pub fn usage(&self, node: u64) -> Resources {
        self.usage.get(&node).copied().unwrap_or_default()
    }

    /// A digest of what `node` must run (count, usage, and the sum of
    /// epochs, restart nonces and desired states of its VMs), in O(1):
    /// it changes with any placement, move, stop, start or restart request
    /// there (a coincidence that keeps it unchanged only delays the
    /// agent to its next regular pass).
    pub fn assignment(&self, node: u64) -> (usize, Resources, u64) {
        (
            self.count_on(node),
            self.usage(node),
            self.assigned.get(&node).copied().unwrap_or(0),
        )
    }

    /// How many VMs are placed on `node`.
    pub fn count_on(&self, node: u64) -> usize {
        self.on_node.get(&node).map_or(0, BTreeSet::len)
    }

    /// Names of the VMs placed on `node`.
    pub fn names_on(&self, node: u64) -> impl Iterator<Item = &String> {
        self.on_node.get(&node).into_iter().flatten()
    }

    /// The group `name`, if it has members.
    pub fn group(&self, name: &str) -> Option<&GroupIndex> {
        self.groups.get(name)
    }

    /// Members of `group` counted on `node`.
    pub fn group_on(&self, group: &str, node: u64) -> u32 {
        self.groups
            .get(group)
            .and_then(|g| g.on.get(&node))
            .copied()
            .unwrap_or(0)
    }

    /// The VMs meant to run that have no node, in the order they are tried.
    pub fn pending(&self) -> impl Iterator<Item = &PendingKey> {
        self.pending.iter()
    }

    /// The pending queue after `after` (from its start for `None`), so a
    /// pass can let go of the fleet's lock between chunks and go on where
    /// it stopped.
    pub fn pending_after(&self, after: Option<&PendingKey>) -> impl Iterator<Item = &PendingKey> {
        use std::ops::Bound;
        let start = match after {
            Some(key) => Bound::Excluded(key.clone()),
            None => Bound::Unbounded,
        };
        self.pending.range((start, Bound::Unbounded))
    }

    /// How many VMs wait for a node.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }
}

/// Where `vm` sorts in the pending queue.
pub fn pending_key(vm: &VmRecord) -> PendingKey {
    PendingKey {
        priority: Reverse(vm.spec.priority),
        created_at_ms: vm.created_at_ms,
        name: vm.name.clone(),
    }
}
