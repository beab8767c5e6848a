//! The placement engine: one pure function from (the fleet, a VM, the
//! policy) to a decision, with every node's verdict when asked. The
//! leader's scheduler places with it, apply re-checks its hard rules
//! ([`filter::refusal`]) on the node a decision names, and `vm explain`
//! runs it on any node to say why a VM is where it is.
//!
//! A decision is made in two steps:
//! - filters ([`filter`]): pinned node, liveness and the leader's lease
//!   judgement, cordon and drain, backend, constraints, the group's
//!   `max_per_node`, room for memory and vCPUs. A node that breaks one is
//!   out, and the first rule it breaks is its verdict;
//! - scores ([`score`]): binpack or spread, a penalty per VM of the same
//!   group already on the node (soft anti-affinity), and one per VM of the
//!   group in the node's topology domain (`spread_by`). The highest score
//!   wins; ties go to the lowest node id, so the same inputs always give
//!   the same decision.
//!
//! A VM that fits nowhere may preempt ([`preempt`]); one that may not
//! waits, and [`explain`] says why with counts.

pub mod explain;
pub mod filter;
pub mod preempt;
pub mod score;

use super::fleet::{FastMap, FleetIndex};
use super::model::{DesiredState, Resources, VmRecord};
use super::Fleet;
use blixard_shared::constraint::{self, Constraint};
use std::collections::BTreeSet;

pub use filter::Refusal;

/// How the engine ranks the nodes that fit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Strategy {
    /// The fullest node that fits: keeps whole nodes free for large VMs.
    #[default]
    Binpack,
    /// The emptiest node: spreads load and failure.
    Spread,
}

impl Strategy {
    /// The strategy named `word` (`binpack` or `spread`).
    pub fn parse(word: &str) -> Option<Self> {
        match word {
            "binpack" => Some(Self::Binpack),
            "spread" => Some(Self::Spread),
            _ => None,
        }
    }

    /// Its name.
    pub fn word(self) -> &'static str {
        match self {
            Self::Binpack => "binpack",
            Self::Spread => "spread",
        }
    }
}

/// The cluster's placement settings (the leader's config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Default strategy; a VM's `strategy` overrides it.
    pub strategy: Strategy,
    /// Score taken off a node per VM of the same group already there.
    pub group_weight: i64,
    /// Score taken off a node per VM of the same group in its topology
    /// domain (`spread_by`).
    pub topology_weight: i64,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            strategy: Strategy::Binpack,
            group_weight: score::DEFAULT_GROUP_WEIGHT,
            topology_weight: score::DEFAULT_TOPOLOGY_WEIGHT,
        }
    }
}

/// Placements a scheduler pass has planned but not yet committed: counted
/// on top of the fleet's own load, so one pass never plans more onto a
/// node than it holds, nor past a group's limit.
#[derive(Debug, Clone, Default)]
pub struct Planned {
    usage: FastMap<u64, Resources>,
    groups: FastMap<String, FastMap<u64, u32>>,
}

impl Planned {
    /// Counts `vm` as placed on `node`.
    pub fn add(&mut self, node: u64, vm: &VmRecord) {
        let used = self.usage.entry(node).or_default();
        used.vcpus = used.vcpus.saturating_add(vm.spec.vcpus);
        used.memory_mib = used.memory_mib.saturating_add(vm.spec.memory_mib);
        if !vm.spec.group.is_empty() {
            *self
                .groups
                .entry(vm.spec.group.clone())
                .or_default()
                .entry(node)
                .or_default() += 1;
        }
    }

    /// Counts `node` as full for the rest of the pass (a preemption there
    /// is in flight).
    pub fn fill(&mut self, node: u64) {
        self.usage.insert(
            node,
            Resources {
                vcpus: u32::MAX,
                memory_mib: u64::MAX,
                disk_mib: 0,
            },
        );
    }
}

/// What a node holds: the fleet's index plus what the pass planned, less
/// one VM judged as if it were placed anew (`vm explain` of a placed VM).
#[derive(Debug, Clone, Copy)]
pub struct Load<'a> {
    index: &'a FleetIndex,
    planned: Option<&'a Planned>,
    without: Option<&'a VmRecord>,
}

impl<'a> Load<'a> {
    /// The fleet's own load.
    pub fn of(fleet: &'a Fleet) -> Self {
        Self {
            index: &fleet.index,
            planned: None,
            without: None,
        }
    }

    /// The fleet's load plus `planned`.
    pub fn with(fleet: &'a Fleet, planned: &'a Planned) -> Self {
        Self {
            planned: Some(planned),
            ..Self::of(fleet)
        }
    }

    /// This load with `vm` counted out of the node it is placed on.
    pub fn without(self, vm: &'a VmRecord) -> Self {
        Self {
            without: Some(vm),
            ..self
        }
    }

    /// The VM counted out, if it is placed on `node`.
    fn left_out_on(&self, node: u64) -> Option<&'a VmRecord> {
        self.without.filter(|vm| vm.node_id == node && node != 0)
    }

    /// Resources taken on `node`.
    pub fn used(&self, node: u64) -> Resources {
        let mut used = self.index.usage(node);
        if let Some(extra) = self.planned.and_then(|p| p.usage.get(&node)) {
            used.vcpus = used.vcpus.saturating_add(extra.vcpus);
            used.memory_mib = used.memory_mib.saturating_add(extra.memory_mib);
        }
        if let Some(vm) = self
            .left_out_on(node)
            .filter(|vm| vm.desired == DesiredState::Running)
        {
            used.vcpus = used.vcpus.saturating_sub(vm.spec.vcpus);
            used.memory_mib = used.memory_mib.saturating_sub(vm.spec.memory_mib);
        }
        used
    }

    /// Where the members of `group` are, looked up once (a decision asks
    /// about every node).
    pub fn group(&self, group: &str) -> GroupCounts<'a> {
        if group.is_empty() {
            return GroupCounts::default();
        }
        GroupCounts {
            base: self.index.group(group).map(|g| &g.on),
            planned: self.planned.and_then(|p| p.groups.get(group)),
            minus: self
                .without
                .filter(|vm| vm.node_id != 0 && vm.spec.group == group)
                .map(|vm| vm.node_id),
        }
    }
}

/// The members of one group per node: the fleet's and a pass's plan.
#[derive(Debug, Clone, Copy, Default)]
pub struct GroupCounts<'a> {
    base: Option<&'a FastMap<u64, u32>>,
    planned: Option<&'a FastMap<u64, u32>>,
    /// A node where one member is counted out (see [`Load::without`]).
    minus: Option<u64>,
}

impl GroupCounts<'_> {
    /// Members on `node`.
    pub fn on(&self, node: u64) -> u32 {
        let count =
            |m: Option<&FastMap<u64, u32>>| m.and_then(|m| m.get(&node)).copied().unwrap_or(0);
        let minus = u32::from(self.minus == Some(node));
        count(self.base)
            .saturating_add(count(self.planned))
            .saturating_sub(minus)
    }
}

/// Everything the engine reads.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    /// The applied state.
    pub fleet: &'a Fleet,
    /// What nodes hold (the fleet's load, plus a pass's plan).
    pub load: Load<'a>,
    /// Nodes whose fencing lease the leader saw surely run out.
    pub lost: &'a BTreeSet<u64>,
    /// The cluster's settings.
    pub policy: Policy,
}

impl<'a> Input<'a> {
    /// The fleet as it is, with the nodes in `lost` out and `policy`'s
    /// settings: what `vm explain` and apply's re-check see.
    pub fn of(fleet: &'a Fleet, lost: &'a BTreeSet<u64>, policy: Policy) -> Self {
        Self {
            fleet,
            load: Load::of(fleet),
            lost,
            policy,
        }
    }

    /// The fleet plus what a pass has `planned` so far (the scheduler's
    /// and the drain's view while they decide several VMs in a row).
    pub fn planned(
        fleet: &'a Fleet,
        planned: &'a Planned,
        lost: &'a BTreeSet<u64>,
        policy: Policy,
    ) -> Self {
        Self {
            load: Load::with(fleet, planned),
            ..Self::of(fleet, lost, policy)
        }
    }
}

/// One node's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// It may take the VM, with this score (higher is better).
    Fits(i64),
    /// It may not.
    Refused(Refusal),
}

/// The engine's answer for one VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The chosen node, if any fits.
    pub node: Option<u64>,
    /// Every node's verdict, by id (only when asked for detail).
    pub verdicts: Vec<(u64, Verdict)>,
    /// The refusals counted by kind, for the one-line explanation.
    pub tally: explain::Tally,
    /// The strategy used.
    pub strategy: Strategy,
}

/// Decides where `vm` goes. `detail` keeps every node's verdict (for `vm
/// explain`); the scheduler asks without it. A constraint that does not
/// parse (it passed the API's check, so only a bug gets here) refuses
/// every node with its own message.
pub fn decide(input: &Input<'_>, vm: &VmRecord, detail: bool) -> Decision {
    let strategy = Strategy::parse(&vm.spec.strategy).unwrap_or(input.policy.strategy);
    let mut decision = Decision {
        node: None,
        verdicts: Vec::new(),
        tally: explain::Tally::new(vm),
        strategy,
    };
    let constraints = match constraint::parse_all(&vm.spec.constraints) {
        Ok(c) => c,
        Err((i, e)) => {
            decision.tally.broken = Some(format!("constraints[{i}]: {e}"));
            return decision;
        }
    };
    let group = input.load.group(&vm.spec.group);
    let spread = score::SpreadCounts::new(input, &group, vm);
    let mut best: Option<(i64, u64)> = None;
    for node in input.fleet.nodes.values() {
        let lost = input.lost.contains(&node.id);
        let verdict = match filter::refusal(node, vm, &constraints, &input.load, &group, lost) {
            Some(refusal) => {
                decision.tally.count(&refusal);
                Verdict::Refused(refusal)
            }
            None => {
                let s = score::score(input, &group, &spread, strategy, node, vm);
                decision.tally.fits += 1;
                if best.is_none_or(|(b, _)| s > b) {
                    best = Some((s, node.id));
                }
                Verdict::Fits(s)
            }
        };
        if detail {
            decision.verdicts.push((node.id, verdict));
        }
    }
    decision.node = best.map(|(_, id)| id);
    decision
}

/// The constraints of `vm`, parsed (for callers asking the filters
/// directly, like apply).
pub fn constraints_of(vm: &VmRecord) -> Result<Vec<Constraint>, String> {
    constraint::parse_all(&vm.spec.constraints)
        .map_err(|(i, e)| format!("spec.constraints[{i}]: {e}"))
}

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;
