//! Ranking the nodes that fit. Scores are integers (no float in a
//! decision, so every node ranks alike): up to 1000 for the strategy, less
//! the soft anti-affinity and topology spread penalties.

use super::filter::node_attribute;
use super::{GroupCounts, Input, Strategy};
use crate::state::model::{NodeRecord, VmRecord};

/// Default penalty per VM of the same group already on a node: half the
/// strategy's range, so two peers outweigh an empty node's advantage.
pub const DEFAULT_GROUP_WEIGHT: i64 = 500;
/// Default penalty per VM of the same group in a node's topology domain.
pub const DEFAULT_TOPOLOGY_WEIGHT: i64 = 500;
/// The strategy's range: a full node scores this under binpack.
const SCALE: u64 = 1000;

/// Members of the VM's group per topology domain (`spread_by`), counted
/// once per decision.
#[derive(Debug, Default)]
pub struct SpreadCounts {
    by_domain: crate::state::fleet::FastMap<String, u32>,
}

impl SpreadCounts {
    /// The counts for `vm` (empty when it has no group or no `spread_by`).
    pub fn new(input: &Input<'_>, group_counts: &GroupCounts<'_>, vm: &VmRecord) -> Self {
        let mut counts = Self::default();
        let (group, key) = (&vm.spec.group, &vm.spec.spread_by);
        if group.is_empty() || key.is_empty() {
            return counts;
        }
        for node in input.fleet.nodes.values() {
            let here = group_counts.on(node.id);
            if here > 0 {
                let domain = node_attribute(node, key).unwrap_or_default();
                *counts.by_domain.entry(domain.to_string()).or_default() += here;
            }
        }
        counts
    }

    fn in_domain_of(&self, node: &NodeRecord, key: &str) -> u32 {
        if self.by_domain.is_empty() {
            return 0;
        }
        let domain = node_attribute(node, key).unwrap_or_default();
        self.by_domain.get(domain).copied().unwrap_or(0)
    }
}

/// The score of `node` (which fits) for `vm`: higher is better.
pub fn score(
    input: &Input<'_>,
    group_counts: &GroupCounts<'_>,
    spread: &SpreadCounts,
    strategy: Strategy,
    node: &NodeRecord,
    vm: &VmRecord,
) -> i64 {
    let used = input.load.used(node.id);
    let fill = |used: u64, need: u64, cap: u64| {
        used.saturating_add(need).saturating_mul(SCALE) / cap.max(1)
    };
    let memory = fill(
        used.memory_mib,
        vm.spec.memory_mib,
        node.capacity.memory_mib,
    );
    let vcpus = fill(
        u64::from(used.vcpus),
        u64::from(vm.spec.vcpus),
        u64::from(node.capacity.vcpus),
    );
    let full = i64::try_from(((memory + vcpus) / 2).min(SCALE)).unwrap_or(0);
    let base = match strategy {
        Strategy::Binpack => full,
        Strategy::Spread => SCALE as i64 - full,
    };
    let group = &vm.spec.group;
    if group.is_empty() {
        return base;
    }
    let peers = i64::from(group_counts.on(node.id));
    let domain = i64::from(spread.in_domain_of(node, &vm.spec.spread_by));
    base - input.policy.group_weight * peers - input.policy.topology_weight * domain
}
