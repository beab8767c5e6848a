//! Examples of the engine's decisions, each built through `Fleet::apply`
//! so the indexes are the ones apply keeps.

use super::*;
use crate::state::command::{Action, Command, NodeRegistration};
use crate::state::model::*;
use std::collections::BTreeMap;

/// A fleet built command by command.
#[derive(Debug)]
pub(super) struct World {
    pub fleet: Fleet,
    rev: u64,
}

impl World {
    pub fn new() -> Self {
        Self {
            fleet: Fleet::default(),
            rev: 0,
        }
    }

    pub fn apply(&mut self, action: Action) -> crate::state::CommandResult {
        self.rev += 1;
        self.fleet.apply(
            self.rev,
            &Command {
                time_ms: 1_000 + self.rev,
                trace: None,
                action,
            },
        )
    }

    pub fn node(
        &mut self,
        id: u64,
        vcpus: u32,
        memory_mib: u64,
        zone: &str,
        labels: &[(&str, &str)],
    ) {
        self.apply(Action::RegisterNode(NodeRegistration {
            id,
            address: format!("10.0.0.{id}:7000"),
            capacity: Resources {
                vcpus,
                memory_mib,
                disk_mib: 0,
            },
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            zone: zone.into(),
            rack: String::new(),
            backend: "qemu".into(),
            version: String::new(),
        }))
        .expect("register");
    }

    pub fn create(&mut self, name: &str, spec: VmSpec) -> VmRecord {
        match self.apply(Action::CreateVm {
            name: name.into(),
            spec,
            desired: DesiredState::Running,
        }) {
            Ok(crate::state::CommandOutcome::Vm(vm)) => vm,
            other => panic!("create {name}: {other:?}"),
        }
    }

    pub fn place(&mut self, name: &str, node_id: u64) -> crate::state::CommandResult {
        let epoch = self.fleet.vms[name].epoch;
        self.apply(Action::PlaceVm {
            name: name.into(),
            node_id,
            expected_epoch: epoch,
        })
    }

    pub fn decide(&self, name: &str, policy: Policy) -> Decision {
        let lost = BTreeSet::new();
        decide(
            &Input::of(&self.fleet, &lost, policy),
            &self.fleet.vms[name],
            true,
        )
    }

    /// Places every pending VM the engine finds room for, one at a time,
    /// as the scheduler would; returns where each went.
    pub fn schedule_all(&mut self, policy: Policy) -> BTreeMap<String, u64> {
        let mut placed = BTreeMap::new();
        loop {
            let next: Vec<String> = self.fleet.index.pending().map(|k| k.name.clone()).collect();
            let mut progress = false;
            for name in next {
                if let Some(node) = self.decide(&name, policy).node {
                    self.place(&name, node)
                        .expect("apply accepts the engine's decision");
                    placed.insert(name, node);
                    progress = true;
                }
            }
            if !progress {
                return placed;
            }
        }
    }
}

pub(super) fn spec(vcpus: u32, memory_mib: u64) -> VmSpec {
    VmSpec {
        vcpus,
        memory_mib,
        image: "default".into(),
        ..Default::default()
    }
}

/// A VM of `group`, at most `max` per node.
pub(super) fn member(group: &str, max: u32, vcpus: u32, memory_mib: u64) -> VmSpec {
    VmSpec {
        group: group.into(),
        max_per_node: max,
        ..spec(vcpus, memory_mib)
    }
}

#[test]
fn the_issue_example_one_per_node_and_none_where_no_node_matches() {
    let group = |c: &str| VmSpec {
        group: "web".into(),
        max_per_node: 1,
        constraints: vec![c.into()],
        ..spec(1, 256)
    };
    // Three nodes in zone mars: one VM each.
    let mut w = World::new();
    for id in 1..=3 {
        w.node(id, 8, 8192, "mars", &[]);
    }
    for i in 1..=3 {
        w.create(&format!("web-{i}"), group("zone=mars"));
    }
    let placed = w.schedule_all(Policy::default());
    let nodes: BTreeSet<u64> = placed.values().copied().collect();
    assert_eq!(nodes, BTreeSet::from([1, 2, 3]), "{placed:?}");
    assert_eq!(w.fleet.index.pending_len(), 0);
    // A fourth breaks the group rule everywhere: it waits, explained.
    w.create("web-4", group("zone=mars"));
    assert!(w.schedule_all(Policy::default()).is_empty());
    assert_eq!(
        w.decide("web-4", Policy::default()).summary(),
        "no node fits: 3 would exceed group web max 1 per node"
    );
    // No node in zone venus: nothing placed, every node named.
    let mut w = World::new();
    for id in 1..=3 {
        w.node(id, 8, 8192, "mars", &[]);
    }
    w.create("web-1", group("zone=venus"));
    assert!(w.schedule_all(Policy::default()).is_empty());
    assert_eq!(
        w.decide("web-1", Policy::default()).summary(),
        "no node fits: 3 do not match zone=venus"
    );
}

#[test]
fn the_pending_explanation_counts_every_reason() {
    let mut w = World::new();
    w.node(1, 8, 1024, "", &[]);
    w.node(2, 8, 1024, "", &[]);
    w.node(3, 8, 8192, "", &[]);
    w.node(4, 8, 8192, "", &[]);
    w.apply(Action::SetSchedulability {
        id: 3,
        value: Schedulability::Cordoned,
    })
    .expect("cordon");
    w.create("peer", member("web", 1, 1, 128));
    w.place("peer", 4).expect("place");
    w.create("big", member("web", 1, 1, 2048));
    let d = w.decide("big", Policy::default());
    assert_eq!(d.node, None);
    assert_eq!(
        d.summary(),
        "no node fits: 2 lack memory (need 2048 MiB, most free 1024), 1 would exceed group web max 1 per node, 1 cordoned"
    );
    let big = &w.fleet.vms["big"];
    let reason = |i: usize| match &d.verdicts[i].1 {
        Verdict::Refused(r) => r.describe(big),
        Verdict::Fits(_) => "fits".into(),
    };
    assert_eq!(reason(0), "lacks memory (need 2048 MiB, free 1024)");
    assert_eq!(reason(2), "cordoned");
}

#[test]
fn binpack_fills_the_fullest_node_and_spread_the_emptiest() {
    let mut w = World::new();
    w.node(1, 8, 8192, "", &[]);
    w.node(2, 8, 8192, "", &[]);
    w.create("a", spec(2, 4096));
    w.place("a", 2).expect("place");
    w.create("b", spec(1, 512));
    assert_eq!(w.decide("b", Policy::default()).node, Some(2));
    let spread = Policy {
        strategy: Strategy::Spread,
        ..Policy::default()
    };
    assert_eq!(w.decide("b", spread).node, Some(1));
    // A VM's own strategy overrides the cluster's.
    w.create(
        "c",
        VmSpec {
            strategy: "spread".into(),
            ..spec(1, 512)
        },
    );
    assert_eq!(w.decide("c", Policy::default()).node, Some(1));
}

#[test]
fn a_group_spreads_across_nodes_and_zones() {
    let mut w = World::new();
    w.node(1, 16, 16384, "a", &[]);
    w.node(2, 16, 16384, "a", &[]);
    w.node(3, 16, 16384, "b", &[]);
    let member = || VmSpec {
        group: "db".into(),
        spread_by: "zone".into(),
        ..spec(1, 512)
    };
    for i in 0..3 {
        w.create(&format!("db-{i}"), member());
    }
    let placed = w.schedule_all(Policy::default());
    let zones: BTreeSet<&str> = placed
        .values()
        .map(|n| w.fleet.nodes[n].zone.as_str())
        .collect();
    assert_eq!(zones, BTreeSet::from(["a", "b"]), "{placed:?}");
    let nodes: BTreeSet<u64> = placed.values().copied().collect();
    assert_eq!(
        nodes.len(),
        3,
        "soft anti-affinity: one per node while it can"
    );
}

#[test]
fn preemption_takes_the_fewest_and_lowest_and_never_its_equals() {
    let mut w = World::new();
    w.node(1, 8, 4096, "", &[]);
    w.node(2, 8, 4096, "", &[]);
    let low = |p: i32, mem: u64, pre: bool| VmSpec {
        priority: p,
        preemptible: pre,
        ..spec(1, mem)
    };
    // Node 1: two small low ones; node 2: one big lowest one.
    w.create("n1-a", low(-5, 2048, true));
    w.create("n1-b", low(-5, 2048, true));
    w.create("n2-a", low(-10, 4096, true));
    w.place("n1-a", 1).expect("place");
    w.place("n1-b", 1).expect("place");
    w.place("n2-a", 2).expect("place");
    w.create("urgent", low(100, 4096, false));
    let lost = BTreeSet::new();
    let input = Input::of(&w.fleet, &lost, Policy::default());
    let plan = preempt::plan(&input, &w.fleet.vms["urgent"]).expect("a plan");
    assert_eq!(plan.node, 2, "one victim beats two");
    assert_eq!(plan.victims.len(), 1);
    assert_eq!(plan.victims[0].name, "n2-a");
    // Equal priority, or not preemptible: never displaced.
    w.create("peer", low(-10, 4096, false));
    let input = Input::of(&w.fleet, &lost, Policy::default());
    assert_eq!(preempt::plan(&input, &w.fleet.vms["peer"]), None);
    // Apply agrees and refuses a plan that breaks the rule.
    let refused = w.apply(Action::PreemptVms {
        for_vm: "peer".into(),
        node_id: 1,
        victims: vec![("n1-a".into(), 1)],
    });
    assert!(refused.is_err(), "{refused:?}");
    w.apply(Action::PreemptVms {
        for_vm: "urgent".into(),
        node_id: 2,
        victims: vec![("n2-a".into(), 1)],
    })
    .expect("preempt");
    let victim = &w.fleet.vms["n2-a"];
    assert_eq!(victim.node_id, 0);
    assert!(
        victim.reason.contains("preempted by vm urgent"),
        "{}",
        victim.reason
    );
    assert_eq!(w.fleet.departed.get("n2-a"), Some(&2));
}

#[test]
fn apply_refuses_a_stale_decision_that_breaks_a_rule() {
    let mut w = World::new();
    w.node(1, 8, 4096, "mars", &[]);
    w.create("a", member("g", 1, 1, 256));
    w.create("b", member("g", 1, 1, 256));
    w.place("a", 1).expect("place a");
    let e = w.place("b", 1).expect_err("group full");
    assert!(
        e.message.contains("would exceed group g max 1 per node"),
        "{e}"
    );
    w.create(
        "c",
        VmSpec {
            constraints: vec!["zone=venus".into()],
            ..spec(1, 256)
        },
    );
    let e = w.place("c", 1).expect_err("constraint");
    assert!(e.message.contains("does not match zone=venus"), "{e}");
    w.create("d", spec(1, 4000));
    let e = w.place("d", 1).expect_err("too big");
    assert_eq!(
        e.code,
        crate::state::RejectionCode::ResourceExhausted,
        "{e}"
    );
}

#[test]
fn a_group_keeps_one_limit() {
    let mut w = World::new();
    w.node(1, 8, 4096, "", &[]);
    w.create("a", member("g", 1, 1, 256));
    let e = w
        .apply(Action::CreateVm {
            name: "b".into(),
            spec: member("g", 2, 1, 256),
            desired: DesiredState::Running,
        })
        .expect_err("a second limit for one group");
    assert!(e.message.contains("spec.max_per_node"), "{e}");
}

#[test]
fn a_placed_vm_is_judged_with_its_own_share_counted_out() {
    let mut w = World::new();
    w.node(1, 2, 1024, "", &[]);
    w.node(2, 2, 512, "", &[]);
    // It fills node 1, and is the group's only member there.
    w.create("full", member("g", 1, 2, 1024));
    w.place("full", 1).expect("place");
    let vm: VmRecord = (*w.fleet.vms["full"]).clone();
    let probe = VmRecord {
        node_id: 0,
        ..vm.clone()
    };
    let lost = BTreeSet::new();
    let plain = decide(&Input::of(&w.fleet, &lost, Policy::default()), &probe, true);
    assert_eq!(plain.node, None, "counted twice, it fits nowhere");
    let input = Input {
        load: Load::of(&w.fleet).without(&vm),
        ..Input::of(&w.fleet, &lost, Policy::default())
    };
    let d = decide(&input, &probe, true);
    assert_eq!(d.node, Some(1), "{}", d.summary());
    assert!(matches!(
        d.verdicts[1].1,
        Verdict::Refused(Refusal::Memory { .. })
    ));
}
