//! Property tests of the state machine's apply: determinism, totality
//! (a rejected command changes nothing) and snapshot round trips.

use super::command::{Action, Command, CommandOutcome, NodeRegistration};
use super::fleet::Fleet;
use super::model::*;
use proptest::prelude::*;
use std::collections::BTreeMap;

fn name() -> impl Strategy<Value = String> {
    // A small name space so creates, deletes and updates collide often; a
    // few invalid names check that apply re-validates.
    prop_oneof![
        8 => prop::sample::select(vec!["a", "b", "web-1", "db-2", "x9"]).prop_map(str::to_string),
        1 => prop::sample::select(vec!["", "UPPER", "-x", "ünï"]).prop_map(str::to_string),
    ]
}

fn node_id() -> impl Strategy<Value = u64> {
    0u64..5
}

fn spec() -> impl Strategy<Value = VmSpec> {
    let group = prop::sample::select(vec![("", 0u32), ("web", 1), ("web", 2), ("db", 0)]);
    let constraints = prop::sample::select(vec![
        vec![],
        vec!["zone=z1".to_string()],
        vec!["zone not in (z2)".to_string(), "gpu not exists".to_string()],
    ]);
    (
        (0u32..4, 0u64..512, node_id(), any::<bool>()),
        (group, constraints, -2i32..3),
    )
        .prop_map(
            |((vcpus, memory_mib, node_id, pre), ((group, max), constraints, priority))| VmSpec {
                vcpus,
                memory_mib,
                image: "default".into(),
                labels: BTreeMap::from([("app".to_string(), "x".to_string())]),
                preemptible: pre,
                node_id,
                group: group.into(),
                max_per_node: max,
                constraints,
                priority,
                ..Default::default()
            },
        )
}

fn schedulability() -> impl Strategy<Value = Schedulability> {
    prop::sample::select(vec![
        Schedulability::Schedulable,
        Schedulability::Cordoned,
        Schedulability::Draining,
    ])
}

fn health() -> impl Strategy<Value = NodeHealth> {
    prop::sample::select(vec![
        NodeHealth::Alive,
        NodeHealth::Suspect,
        NodeHealth::Down,
    ])
}

fn desired() -> impl Strategy<Value = DesiredState> {
    prop::sample::select(vec![DesiredState::Running, DesiredState::Stopped])
}

fn vm_state() -> impl Strategy<Value = VmState> {
    prop::sample::select(vec![
        VmState::Starting,
        VmState::Running,
        VmState::Stopping,
        VmState::Stopped,
        VmState::Failed,
    ])
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        (node_id(), 0u32..8, prop::sample::select(vec!["z1", "z2"])).prop_map(
            |(id, vcpus, zone)| {
                Action::RegisterNode(NodeRegistration {
                    id,
                    address: format!("127.0.0.1:{}", 7000 + id),
                    capacity: Resources {
                        vcpus,
                        memory_mib: 4096,
                        disk_mib: 0,
                    },
                    labels: BTreeMap::new(),
                    zone: zone.to_string(),
                    rack: String::new(),
                    backend: "process".into(),
                    version: String::new(),
                })
            }
        ),
        node_id().prop_map(|id| Action::RemoveNode { id }),
        (node_id(), schedulability())
            .prop_map(|(id, value)| Action::SetSchedulability { id, value }),
        (node_id(), health()).prop_map(|(id, health)| Action::SetNodeHealth { id, health }),
        (name(), spec(), desired()).prop_map(|(name, spec, desired)| Action::CreateVm {
            name,
            spec,
            desired
        }),
        (name(), desired()).prop_map(|(name, desired)| Action::SetDesired { name, desired }),
        (name(), any::<bool>()).prop_map(|(name, force)| Action::DeleteVm { name, force }),
        (name(), node_id(), 0u64..3).prop_map(|(name, node_id, expected_epoch)| Action::PlaceVm {
            name,
            node_id,
            expected_epoch
        }),
        (
            node_id(),
            prop::collection::vec((name(), 0u64..3, vm_state()), 0..4)
        )
            .prop_map(|(node_id, reports)| {
                Action::ReportVmStatus {
                    node_id,
                    reports: reports
                        .into_iter()
                        .map(|(name, epoch, state)| VmReport {
                            name,
                            epoch,
                            state,
                            reason: "r".into(),
                            observed: Observed {
                                pid: 42,
                                ..Default::default()
                            },
                        })
                        .collect(),
                    gone: Vec::new(),
                }
            }),
        (node_id(), name()).prop_map(|(node_id, name)| Action::ReportVmStatus {
            node_id,
            reports: Vec::new(),
            gone: vec![name],
        }),
        (name(), node_id(), 0u64..3).prop_map(|(name, node_id, expected_lease_seq)| {
            Action::ForgetDeparted {
                name,
                node_id,
                expected_lease_seq,
            }
        }),
        name().prop_map(|name| Action::RestartVm { name }),
        (
            name(),
            0u64..3,
            node_id(),
            prop::sample::select(vec!["drain", "migrate"])
        )
            .prop_map(|(name, expected_epoch, to, cause)| Action::MoveVm {
                name,
                expected_epoch,
                to,
                cause: cause.into(),
            }),
        (
            name(),
            node_id(),
            prop::collection::vec((name(), 0u64..3), 1..3)
        )
            .prop_map(|(for_vm, node_id, victims)| Action::PreemptVms {
                for_vm,
                node_id,
                victims,
            }),
        (node_id(), 0u64..2_000_000, 0u32..3).prop_map(|(id, deadline_ms, parallel)| {
            Action::DrainNode {
                id,
                deadline_ms,
                parallel,
            }
        }),
        (
            node_id(),
            prop::sample::select(vec!["complete", "stuck", "bad"])
        )
            .prop_map(|(id, outcome)| Action::FinishDrain {
                id,
                outcome: outcome.into(),
                failed: vec![("a".into(), "no room".into())],
            }),
        (node_id(), 0u64..10_000).prop_map(|(id, lease_ms)| Action::RenewLease { id, lease_ms }),
        (name(), node_id(), 0u64..3, 0u64..3).prop_map(
            |(name, node_id, expected_epoch, expected_lease_seq)| Action::RescheduleVm {
                name,
                node_id,
                expected_epoch,
                expected_lease_seq,
            }
        ),
    ]
}

/// Token actions over small name and secret spaces (so names and hashes
/// collide), with expiries around the commands' times and a malformed
/// hash now and then.
fn token_action() -> impl Strategy<Value = Action> {
    let hash = prop_oneof![
        8 => (0u8..4).prop_map(|n| format!("{n:064x}")),
        1 => Just("not-a-hash".to_string()),
    ];
    let token_name = prop::sample::select(vec!["ci", "admin", "Bad"]).prop_map(str::to_string);
    let role = prop::sample::select(blixard_shared::auth::Role::ALL.to_vec());
    let expires = prop::option::of(0u64..1_200_000);
    prop_oneof![
        (token_name.clone(), role, hash.clone(), expires).prop_map(
            |(name, role, hash, expires_ms)| Action::CreateToken {
                name,
                role,
                hash,
                expires_ms,
                labels: Default::default(),
            }
        ),
        token_name.prop_map(|name| Action::RevokeToken { name }),
        (hash.clone(), 0u64..1_200_000)
            .prop_map(|(hash, expires_ms)| Action::CreateJoinToken { hash, expires_ms }),
        (hash, node_id()).prop_map(|(hash, node_id)| Action::RedeemJoinToken { hash, node_id }),
    ]
}

/// An action, sometimes wrapped with a request id from a small set (so
/// repeats and reuses of ids happen).
fn maybe_retryable() -> impl Strategy<Value = Action> {
    let any_action = prop_oneof![6 => action(), 1 => token_action()];
    (any_action, prop::option::of(0u8..4)).prop_map(|(action, id)| match id {
        Some(n) => Action::Retryable {
            request_id: format!("prop:{n}"),
            action: Box::new(action),
        },
        None => action,
    })
}

fn commands() -> impl Strategy<Value = Vec<Command>> {
    prop::collection::vec((0u64..1_000_000, maybe_retryable()), 0..120).prop_map(|v| {
        v.into_iter()
            .map(|(time_ms, action)| Command {
                time_ms,
                action,
                trace: None,
            })
            .collect()
    })
}

/// The smallest VM the example tests create: 1 vCPU, 64 MiB, the default
/// image.
fn small_spec() -> VmSpec {
    VmSpec {
        vcpus: 1,
        memory_mib: 64,
        image: "default".into(),
        ..Default::default()
    }
}

/// The fleet without the revision counter, which every command advances,
/// and without the memory of request ids, which a refused retryable write
/// also updates (so its retry gets the same refusal).
fn content(f: &Fleet) -> (Fleet, u64) {
    let mut c = f.clone();
    let rev = c.revision;
    c.revision = 0;
    c.requests = Default::default();
    (c, rev)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn same_commands_give_same_state(cmds in commands()) {
        let mut a = Fleet::default();
        let mut b = Fleet::default();
        for (i, cmd) in cmds.iter().enumerate() {
            let ra = a.apply(i as u64 + 1, cmd);
            let rb = b.apply(i as u64 + 1, cmd);
            prop_assert_eq!(ra, rb);
        }
        prop_assert_eq!(a, b);
    }

    #[test]
    fn rejected_commands_change_nothing(cmds in commands()) {
        let mut f = Fleet::default();
        for (i, cmd) in cmds.iter().enumerate() {
            let before = content(&f).0;
            let result = f.apply(i as u64 + 1, cmd);
            if result.is_err() {
                prop_assert_eq!(&content(&f).0, &before, "rejected {:?} changed state", cmd);
            }
            prop_assert_eq!(f.revision, i as u64 + 1);
        }
    }

    #[test]
    fn invariants_hold_after_any_sequence(cmds in commands()) {
        let mut f = Fleet::default();
        for (i, cmd) in cmds.iter().enumerate() {
            let _ = f.apply(i as u64 + 1, cmd);
            prop_assert_eq!(f.check_invariants(), Ok(()));
        }
    }

    #[test]
    fn a_placement_never_moves_a_vm_nor_reuses_a_departed_name(cmds in commands()) {
        let mut f = Fleet::default();
        for (i, cmd) in cmds.iter().enumerate() {
            let before = match &cmd.action {
                Action::PlaceVm { name, .. } => {
                    Some((f.vms.get(name).map(|vm| vm.node_id), f.departed.contains_key(name)))
                }
                _ => None,
            };
            let accepted = f.apply(i as u64 + 1, cmd).is_ok();
            if let (true, Some((node, departed))) = (accepted, before) {
                prop_assert_eq!(node, Some(0), "placed a VM that was on a node");
                prop_assert!(!departed, "placed a name whose old instance may run");
            }
        }
    }

    /// Apply holds every placement to the engine's hard rules: the node
    /// it lands on stays within its capacity, within the group's
    /// `max_per_node` and the VM's constraints, and a preemption only
    /// ever displaces lower-priority preemptible VMs.
    #[test]
    fn an_accepted_placement_keeps_every_hard_rule(cmds in commands()) {
        let mut f = Fleet::default();
        for (i, cmd) in cmds.iter().enumerate() {
            let before = f.clone();
            let accepted = f.apply(i as u64 + 1, cmd).is_ok();
            let action = match &cmd.action {
                Action::Retryable { action, .. } => &**action,
                a => a,
            };
            if !accepted {
                continue;
            }
            match action {
                Action::PlaceVm { name, node_id, .. } => {
                    let node = &f.nodes[node_id];
                    let used = f.allocated_on(*node_id);
                    prop_assert!(used.vcpus <= node.capacity.vcpus && used.memory_mib <= node.capacity.memory_mib,
                        "node {} over capacity: {:?} of {:?}", node_id, used, node.capacity);
                    let vm = &f.vms[name];
                    if vm.spec.max_per_node > 0 {
                        let here = f.index.group_on(&vm.spec.group, *node_id);
                        prop_assert!(here <= vm.spec.max_per_node, "group {} has {} on node {}", vm.spec.group, here, node_id);
                    }
                    for c in &vm.spec.constraints {
                        let c = blixard_shared::constraint::Constraint::parse(c).expect("valid");
                        prop_assert!(c.admits(crate::state::placement::filter::node_attribute(node, &c.key)));
                    }
                }
                Action::PreemptVms { for_vm, victims, .. } => {
                    let p = before.vms[for_vm].spec.priority;
                    for (v, _) in victims {
                        let old = &before.vms[v];
                        prop_assert!(old.spec.preemptible && old.spec.priority < p);
                        prop_assert_eq!(f.vms[v].node_id, 0);
                        prop_assert!(f.departed.contains_key(v), "a victim is placed again only once it stopped");
                    }
                }
                Action::MoveVm { name, .. } => {
                    prop_assert_eq!(f.vms[name].node_id, 0);
                    prop_assert_eq!(f.departed.get(name), Some(&before.vms[name].node_id));
                }
                _ => {}
            }
        }
    }

    #[test]
    fn snapshot_then_restore_gives_same_state(cmds in commands(), more in commands()) {
        let mut f = Fleet::default();
        for (i, cmd) in cmds.iter().enumerate() {
            let _ = f.apply(i as u64 + 1, cmd);
        }
        let bytes = serde_json::to_vec(&f).expect("encode");
        let mut restored: Fleet = serde_json::from_slice(&bytes).expect("decode");
        restored.rebuild_derived();
        prop_assert_eq!(&restored, &f);
        // And the restored copy goes on exactly like the original.
        let base = cmds.len() as u64;
        for (i, cmd) in more.iter().enumerate() {
            let a = f.apply(base + i as u64 + 1, cmd);
            let b = restored.apply(base + i as u64 + 1, cmd);
            prop_assert_eq!(a, b);
        }
        prop_assert_eq!(restored, f);
    }
}

#[test]
fn event_ring_is_bounded_and_tracks_pruning() {
    let mut f = Fleet::default();
    let n = blixard_shared::limits::EVENT_RING_LEN as u64 + 10;
    for i in 1..=n {
        let state = if i % 2 == 0 {
            DesiredState::Running
        } else {
            DesiredState::Stopped
        };
        let cmd = Command {
            time_ms: i,
            trace: None,
            action: if i == 1 {
                Action::CreateVm {
                    name: "a".into(),
                    spec: small_spec(),
                    desired: DesiredState::Stopped,
                }
            } else {
                Action::SetDesired {
                    name: "a".into(),
                    desired: state,
                }
            },
        };
        assert!(f.apply(i, &cmd).is_ok());
    }
    assert_eq!(f.events.len(), blixard_shared::limits::EVENT_RING_LEN);
    assert_eq!(f.events_pruned_through, 10);
    assert_eq!(f.oldest_event_revision(), Some(11));
    assert_eq!(f.events_after(n - 2, 10).len(), 2);
}

#[test]
fn delete_of_a_running_vm_needs_force() {
    let mut f = Fleet::default();
    let spec = small_spec();
    let cmd = |action| Command {
        time_ms: 1,
        action,
        trace: None,
    };
    let steps = [
        cmd(Action::RegisterNode(NodeRegistration {
            id: 1,
            address: "n1:7000".into(),
            capacity: Resources {
                vcpus: 4,
                memory_mib: 1024,
                disk_mib: 0,
            },
            labels: BTreeMap::new(),
            zone: String::new(),
            rack: String::new(),
            backend: "qemu".into(),
            version: String::new(),
        })),
        cmd(Action::CreateVm {
            name: "web".into(),
            spec,
            desired: DesiredState::Running,
        }),
        cmd(Action::PlaceVm {
            name: "web".into(),
            node_id: 1,
            expected_epoch: 0,
        }),
        cmd(Action::ReportVmStatus {
            node_id: 1,
            reports: vec![VmReport {
                name: "web".into(),
                epoch: 1,
                state: VmState::Running,
                reason: String::new(),
                observed: Observed::default(),
            }],
            gone: Vec::new(),
        }),
    ];
    for (i, step) in steps.iter().enumerate() {
        assert!(f.apply(i as u64 + 1, step).is_ok(), "step {i}");
    }
    assert_eq!(f.vms["web"].state, VmState::Running);
    assert_eq!(f.vms["web"].epoch, 1);
    assert_eq!(
        f.apply(5, &steps[1]).unwrap_err().code,
        super::RejectionCode::AlreadyExists
    );
    // A stale placement (old epoch) is refused.
    assert_eq!(
        f.apply(6, &steps[2]).unwrap_err().code,
        super::RejectionCode::FailedPrecondition
    );
    let delete = |force| Command {
        time_ms: 3,
        trace: None,
        action: Action::DeleteVm {
            name: "web".into(),
            force,
        },
    };
    assert_eq!(
        f.apply(7, &delete(false)).unwrap_err().code,
        super::RejectionCode::FailedPrecondition
    );
    assert!(f.apply(8, &delete(true)).is_ok());
    assert!(f.vms.is_empty());
}

#[test]
fn rescheduling_off_a_lost_node_needs_the_lease_it_saw_run_out() {
    let mut f = Fleet::default();
    let cmd = |action| Command {
        time_ms: 1,
        action,
        trace: None,
    };
    let node = |id| {
        cmd(Action::RegisterNode(NodeRegistration {
            id,
            address: format!("n{id}:7000"),
            capacity: Resources {
                vcpus: 4,
                memory_mib: 1024,
                disk_mib: 0,
            },
            labels: BTreeMap::new(),
            zone: String::new(),
            rack: String::new(),
            backend: "qemu".into(),
            version: String::new(),
        }))
    };
    let renew = cmd(Action::RenewLease {
        id: 1,
        lease_ms: 6000,
    });
    let steps = [
        node(1),
        node(2),
        cmd(Action::CreateVm {
            name: "web".into(),
            spec: small_spec(),
            desired: DesiredState::Running,
        }),
        cmd(Action::PlaceVm {
            name: "web".into(),
            node_id: 1,
            expected_epoch: 0,
        }),
        renew.clone(),
    ];
    for (i, step) in steps.iter().enumerate() {
        assert!(f.apply(i as u64 + 1, step).is_ok(), "step {i}");
    }
    assert_eq!((f.nodes[&1].lease_seq, f.nodes[&1].lease_ms), (1, 6000));
    let events = f.events.len();
    f.apply(6, &renew).unwrap();
    assert_eq!(f.events.len(), events, "renewals record no event");
    let reschedule = |epoch, seq| {
        cmd(Action::RescheduleVm {
            name: "web".into(),
            node_id: 1,
            expected_epoch: epoch,
            expected_lease_seq: seq,
        })
    };
    let stale = super::RejectionCode::FailedPrecondition;
    assert_eq!(
        f.apply(7, &reschedule(1, 1)).unwrap_err().code,
        stale,
        "renewed since"
    );
    assert_eq!(
        f.apply(8, &reschedule(0, 2)).unwrap_err().code,
        stale,
        "old epoch"
    );
    let out = f.apply(9, &reschedule(1, 2)).unwrap();
    let CommandOutcome::Vm(vm) = out else {
        panic!("a vm record: {out:?}")
    };
    assert_eq!((vm.node_id, vm.epoch, vm.state), (0, 2, VmState::Pending));
    assert_eq!(
        f.apply(10, &reschedule(1, 2)).unwrap_err().code,
        stale,
        "applies once"
    );
    assert!(f
        .apply(
            11,
            &cmd(Action::PlaceVm {
                name: "web".into(),
                node_id: 2,
                expected_epoch: 2,
            })
        )
        .is_ok());
    assert_eq!((f.vms["web"].node_id, f.vms["web"].epoch), (2, 3));
}

#[test]
fn the_invariant_check_sees_a_broken_state() {
    let mut f = Fleet::default();
    let node = Command {
        time_ms: 1,
        trace: None,
        action: Action::RegisterNode(NodeRegistration {
            id: 1,
            address: "127.0.0.1:1".into(),
            capacity: Resources {
                vcpus: 4,
                memory_mib: 4096,
                disk_mib: 0,
            },
            labels: Default::default(),
            zone: String::new(),
            rack: String::new(),
            backend: "process".into(),
            version: String::new(),
        }),
    };
    assert!(f.apply(1, &node).is_ok());
    assert_eq!(f.check_invariants(), Ok(()));
    let mut broken = f.clone();
    broken.nodes.insert(0, broken.nodes[&1].clone());
    assert!(broken.check_invariants().is_err(), "node id 0");
    let mut broken = f.clone();
    broken.revision = 0;
    assert!(
        broken.check_invariants().is_err(),
        "an event from the future"
    );
}

/// Regression (simulation seeds 9, 905, 913): a write sent twice with one
/// request id was answered from the record as it was at the repeat: "not
/// found" once the VM had been deleted, and a later revision once it had
/// changed, for a write that had succeeded at an earlier one.
#[test]
fn a_repeat_gets_the_first_answer_even_after_the_vm_changed_or_went() {
    let mut f = Fleet::default();
    let create = retryable(
        "w0:1",
        Action::CreateVm {
            name: "web".into(),
            spec: small_spec(),
            desired: DesiredState::Running,
        },
    );
    let first = f.apply(1, &create);
    assert!(first.is_ok());
    let restart = plain(Action::RestartVm { name: "web".into() });
    assert!(f.apply(2, &restart).is_ok());
    assert_eq!(
        f.apply(3, &create),
        first,
        "changed since: the first answer"
    );
    let delete = plain(Action::DeleteVm {
        name: "web".into(),
        force: true,
    });
    assert!(f.apply(4, &delete).is_ok());
    assert_eq!(f.apply(5, &create), first, "gone since: the first answer");
    assert!(!f.vms.contains_key("web"), "and not created again");
}

/// `action` as a command without a request id.
fn plain(action: Action) -> Command {
    Command {
        time_ms: 1,
        trace: None,
        action,
    }
}

/// `action` as a client's write with request id `id`.
fn retryable(id: &str, action: Action) -> Command {
    plain(Action::Retryable {
        request_id: id.into(),
        action: Box::new(action),
    })
}

#[test]
fn a_retried_write_is_answered_with_its_first_outcome_not_applied_twice() {
    let mut f = Fleet::default();
    let create_web = Action::CreateVm {
        name: "web".into(),
        spec: small_spec(),
        desired: DesiredState::Running,
    };
    let create = retryable("cli-1:1", create_web.clone());
    let first = f.apply(1, &create);
    assert!(first.is_ok());
    assert_eq!(
        f.apply(2, &create),
        first,
        "the retry gets the first outcome"
    );
    let restart = retryable("cli-1:2", Action::RestartVm { name: "web".into() });
    assert!(f.apply(3, &restart).is_ok());
    assert!(f.apply(4, &restart).is_ok());
    assert_eq!(f.vms["web"].restart_nonce, 1, "restarted once, not twice");
    let without_id = plain(create_web);
    assert_eq!(
        f.apply(5, &without_id).unwrap_err().code,
        super::RejectionCode::AlreadyExists,
        "without an id a repeat is a new write"
    );
    let reused = retryable("cli-1:1", Action::RestartVm { name: "web".into() });
    assert_eq!(
        f.apply(6, &reused).unwrap_err().code,
        super::RejectionCode::InvalidArgument,
        "an id reused for another write is refused, not answered"
    );
}
