//! Properties of the placement engine over random fleets (thousands of
//! cases), each checked against rules recomputed here from the records,
//! not from the engine's filters or the fleet's indexes.

use super::tests::{spec, World};
use super::{decide, preempt, Fleet, Input, Policy, Strategy as Placing};
use crate::state::command::Action;
use crate::state::model::*;
use proptest::prelude::*;
use std::collections::BTreeSet;

/// A random node: capacity, zone, a label, state and health.
fn node() -> impl Strategy<Value = (u32, u64, &'static str, bool, u8, u8)> {
    (
        1u32..16,
        prop::sample::select(vec![512u64, 1024, 2048, 4096, 8192]),
        prop::sample::select(vec!["a", "b", "c"]),
        any::<bool>(),
        0u8..6,
        0u8..8,
    )
}

/// A random VM spec: size, group, constraints, priority.
fn vm() -> impl Strategy<Value = VmSpec> {
    (
        (
            1u32..6,
            prop::sample::select(vec![128u64, 256, 512, 1024, 2048]),
        ),
        prop::sample::select(vec![
            ("", 0u32),
            ("web", 1),
            ("web", 1),
            ("db", 2),
            ("cache", 0),
        ]),
        prop::sample::select(vec![
            vec![],
            vec!["zone=a"],
            vec!["zone in (a,b)"],
            vec!["zone!=c", "ssd exists"],
            vec!["ssd not exists"],
        ]),
        (-3i32..4, any::<bool>(), any::<bool>()),
    )
        .prop_map(
            |((vcpus, mem), (group, max), constraints, (priority, pre, spread))| VmSpec {
                group: group.into(),
                max_per_node: max,
                spread_by: if spread && !group.is_empty() {
                    "zone".into()
                } else {
                    String::new()
                },
                constraints: constraints.into_iter().map(String::from).collect(),
                priority,
                preemptible: pre,
                ..spec(vcpus, mem)
            },
        )
}

/// A fleet: nodes, then VMs each placed where the engine says (or left
/// pending), with some nodes cordoned or suspect afterwards.
fn world() -> impl Strategy<Value = World> {
    (
        prop::collection::vec(node(), 1..8),
        prop::collection::vec(vm(), 0..24),
        any::<u64>(),
    )
        .prop_map(|(nodes, vms, seed)| {
            let mut w = World::new();
            for (i, (vcpus, mem, zone, ssd, _, _)) in nodes.iter().enumerate() {
                let labels: &[(&str, &str)] = if *ssd { &[("ssd", "yes")] } else { &[] };
                w.node(i as u64 + 1, *vcpus, *mem, zone, labels);
            }
            for (i, spec) in vms.into_iter().enumerate() {
                let name = format!("vm-{i}");
                if w.apply(Action::CreateVm {
                    name: name.clone(),
                    spec,
                    desired: DesiredState::Running,
                })
                .is_ok()
                {
                    if let Some(node) = w.decide(&name, Policy::default()).node {
                        w.place(&name, node)
                            .expect("apply takes the engine's decision");
                    }
                }
            }
            for (i, (_, _, _, _, sched, health)) in nodes.iter().enumerate() {
                let id = i as u64 + 1;
                if *sched == 0 {
                    let _ = w.apply(Action::SetSchedulability {
                        id,
                        value: Schedulability::Cordoned,
                    });
                }
                if *health == 0 || (seed >> i) & 0xF == 1 {
                    let _ = w.apply(Action::SetNodeHealth {
                        id,
                        health: NodeHealth::Suspect,
                    });
                }
            }
            w
        })
}

/// Resources used on `node`, summed from the records.
fn used_on(f: &Fleet, node: u64) -> Resources {
    let mut r = Resources::default();
    for vm in f
        .vms
        .values()
        .filter(|v| v.node_id == node && v.desired == DesiredState::Running)
    {
        r.vcpus += vm.spec.vcpus;
        r.memory_mib += vm.spec.memory_mib;
    }
    r
}

/// Whether `node` may take `vm` under every hard rule, recomputed from
/// the records.
fn allowed(f: &Fleet, node: &NodeRecord, vm: &VmRecord) -> bool {
    let used = used_on(f, node.id);
    let group_here = f
        .vms
        .values()
        .filter(|v| !vm.spec.group.is_empty() && v.spec.group == vm.spec.group && v.name != vm.name)
        .filter(|v| v.node_id == node.id || f.departed.get(&v.name) == Some(&node.id))
        .count() as u32;
    let constraints_ok = vm.spec.constraints.iter().all(|c| {
        let c = blixard_shared::constraint::Constraint::parse(c).expect("valid");
        let value = match c.key.as_str() {
            "zone" => Some(node.zone.as_str()).filter(|z| !z.is_empty()),
            k => node.labels.get(k).map(String::as_str),
        };
        c.admits(value)
    });
    node.schedulability == Schedulability::Schedulable
        && node.health == NodeHealth::Alive
        && (vm.spec.node_id == 0 || vm.spec.node_id == node.id)
        && used.vcpus + vm.spec.vcpus <= node.capacity.vcpus
        && used.memory_mib + vm.spec.memory_mib <= node.capacity.memory_mib
        && (vm.spec.max_per_node == 0 || group_here < vm.spec.max_per_node)
        && constraints_ok
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// The engine picks a node exactly when one is allowed, and the one it
    /// picks is allowed: never over capacity, never past a group's limit
    /// or against a constraint.
    #[test]
    fn the_engine_is_sound_and_complete(w in world(), extra in vm(), spread in any::<bool>()) {
        let mut w = w;
        let policy = Policy {
            strategy: if spread { Placing::Spread } else { Placing::Binpack },
            ..Policy::default()
        };
        if w.apply(Action::CreateVm { name: "probe".into(), spec: extra, desired: DesiredState::Running }).is_err() {
            return Ok(());
        }
        let vm = w.fleet.vms["probe"].clone();
        let d = w.decide("probe", policy);
        let any_allowed = w.fleet.nodes.values().any(|n| allowed(&w.fleet, n, &vm));
        prop_assert_eq!(d.node.is_some(), any_allowed, "{}", d.summary());
        if let Some(node) = d.node {
            prop_assert!(allowed(&w.fleet, &w.fleet.nodes[&node], &vm));
            w.place("probe", node).expect("apply takes it");
        }
        prop_assert_eq!(d.verdicts.len(), w.fleet.nodes.len());
    }

    /// Same inputs, same decision: twice on the same fleet, and on a copy
    /// rebuilt from its serialized form (what another node would hold).
    #[test]
    fn the_same_inputs_give_the_same_decision(w in world(), extra in vm()) {
        let mut w = w;
        if w.apply(Action::CreateVm { name: "probe".into(), spec: extra, desired: DesiredState::Running }).is_err() {
            return Ok(());
        }
        let a = w.decide("probe", Policy::default());
        let b = w.decide("probe", Policy::default());
        prop_assert_eq!(&a, &b);
        let mut copy: Fleet = serde_json::from_slice(&serde_json::to_vec(&w.fleet).expect("encode")).expect("decode");
        copy.rebuild_derived();
        let lost = BTreeSet::new();
        let c = decide(&Input::of(&copy, &lost, Policy::default()), &copy.vms["probe"], true);
        prop_assert_eq!(&a, &c);
    }

    /// A preemption displaces only lower-priority preemptible VMs, and
    /// frees enough room: without them the VM is allowed on that node.
    #[test]
    fn preemption_displaces_only_lower_preemptible_vms_and_frees_enough(w in world(), extra in vm()) {
        let mut w = w;
        let spec = VmSpec { priority: extra.priority + 3, ..extra };
        if w.apply(Action::CreateVm { name: "urgent".into(), spec, desired: DesiredState::Running }).is_err() {
            return Ok(());
        }
        let lost = BTreeSet::new();
        let plan = {
            let input = Input::of(&w.fleet, &lost, Policy::default());
            if decide(&input, &w.fleet.vms["urgent"], false).node.is_some() {
                return Ok(());
            }
            preempt::plan(&input, &w.fleet.vms["urgent"])
        };
        let Some(plan) = plan else { return Ok(()) };
        let urgent = w.fleet.vms["urgent"].clone();
        for v in &plan.victims {
            let victim = &w.fleet.vms[&v.name];
            prop_assert!(victim.spec.preemptible);
            prop_assert!(victim.spec.priority < urgent.spec.priority);
            prop_assert_eq!(victim.node_id, plan.node);
        }
        let victims: Vec<(String, u64)> = plan.victims.iter().map(|v| (v.name.clone(), v.epoch)).collect();
        w.apply(Action::PreemptVms { for_vm: "urgent".into(), node_id: plan.node, victims }).expect("apply takes the plan");
        // The victims' old instances are gone once their node says so.
        let gone: Vec<String> = plan.victims.iter().map(|v| v.name.clone()).collect();
        w.apply(Action::ReportVmStatus { node_id: plan.node, reports: vec![], gone }).expect("report");
        prop_assert!(allowed(&w.fleet, &w.fleet.nodes[&plan.node], &urgent));
        prop_assert!(w.decide("urgent", Policy::default()).node.is_some(), "placed in the next pass");
    }

    /// A pending VM that fits after a capacity change is placed in the
    /// next pass: the change moves the capacity fingerprint the scheduler
    /// keys its waiting list on, and the engine then finds the node.
    #[test]
    fn a_capacity_change_lets_a_waiting_vm_be_placed(w in world(), extra in vm(), change in 0u8..3) {
        let mut w = w;
        if w.apply(Action::CreateVm { name: "late".into(), spec: extra, desired: DesiredState::Running }).is_err() {
            return Ok(());
        }
        if w.decide("late", Policy::default()).node.is_some() {
            return Ok(());
        }
        let lost = BTreeSet::new();
        let before = crate::leader::scheduler::capacity_fingerprint(&w.fleet, &lost);
        let changed = match change {
            0 => {
                let id = w.fleet.nodes.keys().max().copied().unwrap_or(0) + 1;
                w.node(id, 64, 65536, "a", &[("ssd", "yes")]);
                true
            }
            1 => {
                let Some(name) = w.fleet.vms.values().find(|v| v.node_id != 0).map(|v| v.name.clone()) else { return Ok(()) };
                w.apply(Action::DeleteVm { name, force: true }).is_ok()
            }
            _ => {
                let Some(id) = w.fleet.nodes.values().find(|n| n.schedulability == Schedulability::Cordoned).map(|n| n.id) else { return Ok(()) };
                w.apply(Action::SetSchedulability { id, value: Schedulability::Schedulable }).is_ok()
            }
        };
        prop_assume!(changed);
        let after = crate::leader::scheduler::capacity_fingerprint(&w.fleet, &lost);
        prop_assert_ne!(before, after, "a capacity change must be seen");
        let vm = w.fleet.vms["late"].clone();
        let fits = w.fleet.nodes.values().any(|n| allowed(&w.fleet, n, &vm));
        prop_assert_eq!(w.decide("late", Policy::default()).node.is_some(), fits);
    }
}
