//! Placement and healing, run by the leader: every VM that should run and
//! has no node gets one, and a VM whose node's fencing lease has surely run
//! out is taken off it (with a new epoch) to be placed again. The choice is one pure function ([`choose_node`]) so a fuller
//! scheduler (constraints, anti-affinity, preemption, healing) can replace it
//! without touching the loop; the state machine re-checks capacity when it
//! applies the decision, so a stale decision can never overcommit a node.

use crate::config::DEFAULT_LEASE;
use crate::core::Core;
use crate::host::fence::HEAL_MARGIN;
use crate::shutdown::Shutdown;
use crate::state::{
    Action, Command, DesiredState, Fleet, NodeHealth, Resources, Schedulability, VmRecord,
};
use blixard_shared::time::now_ms;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Resync period of the placement loop.
const RESYNC_INTERVAL: Duration = Duration::from_secs(2);
/// Least time from the start of one pass to the start of the next. Every
/// applied entry wakes the loop, and a pass reads the whole fleet under the
/// lock apply waits on: under a steady write load on a large fleet, passes
/// back to back would take the leader's CPU from the writes. A change after a
/// quiet spell still starts a pass at once; under load, passes run at most
/// 20 times a second, each seeing everything applied since the last.
const MIN_PASS_INTERVAL: Duration = Duration::from_millis(50);
/// Most placements proposed per pass (the rest wait for the next pass).
const MAX_PLACEMENTS_PER_PASS: usize = 256;
/// Most VMs taken off lost nodes per pass.
const MAX_RESCHEDULES_PER_PASS: usize = 256;

/// Whether a node's backend can run `vm`: the process backend runs only
/// runners; QEMU runs images, kernels and runners.
pub fn backend_can_run(backend: &str, vm: &VmRecord) -> bool {
    match backend {
        "process" => !vm.spec.runner.is_empty(),
        _ => true,
    }
}

/// The node `vm` should go to: among schedulable, live nodes whose backend
/// can run it and that have room (and the pinned node, if any), the fullest
/// one that fits (bin packing keeps whole nodes free for large VMs); ties go
/// to the lowest id. `None` when no node fits. `usage` is what each node
/// already holds ([`Fleet::allocations`]), computed once per pass; `lost`
/// are nodes whose fencing lease has run out (they could not run it).
pub fn choose_node(
    fleet: &Fleet,
    usage: &BTreeMap<u64, Resources>,
    lost: &BTreeSet<u64>,
    vm: &VmRecord,
) -> Option<u64> {
    fleet
        .nodes
        .values()
        .filter(|n| vm.spec.node_id == 0 || n.id == vm.spec.node_id)
        .filter(|n| !lost.contains(&n.id))
        .filter(|n| {
            n.schedulability == Schedulability::Schedulable && n.health == NodeHealth::Alive
        })
        .filter(|n| backend_can_run(&n.backend, vm))
        .filter_map(|n| {
            let used = usage.get(&n.id).copied().unwrap_or_default();
            let free_mem = n.capacity.memory_mib.checked_sub(used.memory_mib)?;
            let free_cpu = n.capacity.vcpus.checked_sub(used.vcpus)?;
            (free_mem >= vm.spec.memory_mib && free_cpu >= vm.spec.vcpus)
                .then(|| (free_mem - vm.spec.memory_mib, n.id))
        })
        .min()
        .map(|(_, id)| id)
}

/// What the leader has seen of each node's lease renewals, on its own
/// clock. Starts empty at every term: renewals a previous leader saw are
/// unknown, so every lease is assumed fresh when leadership begins.
#[derive(Debug, Default)]
pub struct LeaseTracker {
    term: u64,
    /// Node -> (lease_seq, when this leader first saw it).
    seen: HashMap<u64, (u64, Instant)>,
    /// Deleted VM name -> when this leader first saw it departed from a
    /// node that is no longer a member.
    departed_removed: HashMap<String, Instant>,
}

impl LeaseTracker {
    /// Notes the renewals in `fleet` as of `now` (in leader term `term`) and
    /// returns the nodes other than `me` whose lease has surely run out,
    /// with the `lease_seq` that ran out.
    pub fn lost_nodes(
        &mut self,
        term: u64,
        me: u64,
        fleet: &Fleet,
        now: Instant,
    ) -> BTreeMap<u64, u64> {
        if term != self.term {
            self.term = term;
            self.seen.clear();
            self.departed_removed.clear();
        }
        self.seen.retain(|id, _| fleet.nodes.contains_key(id));
        let mut lost = BTreeMap::new();
        for node in fleet.nodes.values().filter(|n| n.id != me) {
            let entry = self.seen.entry(node.id).or_insert((node.lease_seq, now));
            if entry.0 != node.lease_seq {
                *entry = (node.lease_seq, now);
            }
            let lease = match node.lease_ms {
                0 => DEFAULT_LEASE,
                ms => Duration::from_millis(ms),
            };
            if now.saturating_duration_since(entry.1) > lease + HEAL_MARGIN {
                lost.insert(node.id, node.lease_seq);
            }
        }
        lost
    }
}

/// Runs until shutdown; places and heals VMs while this node leads.
pub async fn run(core: Arc<Core>, mut shutdown: Shutdown) {
    let mut applied = core.view.subscribe();
    let mut tracker = LeaseTracker::default();
    loop {
        let started = Instant::now();
        let m = core.raft_metrics();
        if m.current_leader == Some(core.id) {
            let lost = {
                let fleet = core.view.read();
                tracker.lost_nodes(m.current_term, core.id, &fleet, Instant::now())
            };
            reschedule_lost(&core, &lost).await;
            forget_departed(&core, &mut tracker, &lost).await;
            let lost: BTreeSet<u64> = lost.into_keys().collect();
            place_pending(&core, &lost).await;
        }
        tokio::select! {
            r = applied.changed() => if r.is_err() { return },
            _ = tokio::time::sleep(RESYNC_INTERVAL) => {}
            _ = shutdown.recv() => return,
        }
        tokio::select! {
            _ = tokio::time::sleep_until(started + MIN_PASS_INTERVAL) => {}
            _ = shutdown.recv() => return,
        }
    }
}

/// Takes the VMs that should run off nodes whose lease has surely run out.
async fn reschedule_lost(core: &Core, lost: &BTreeMap<u64, u64>) {
    if lost.is_empty() {
        return;
    }
    let moves: Vec<Action> = {
        let fleet = core.view.read();
        fleet
            .vms
            .values()
            .filter(|vm| vm.desired == DesiredState::Running)
            .filter_map(|vm| {
                let seq = lost.get(&vm.node_id)?;
                Some(Action::RescheduleVm {
                    name: vm.name.clone(),
                    node_id: vm.node_id,
                    expected_epoch: vm.epoch,
                    expected_lease_seq: *seq,
                })
            })
            .take(MAX_RESCHEDULES_PER_PASS)
            .collect()
    };
    for action in moves {
        let Action::RescheduleVm { name, node_id, .. } = &action else {
            continue;
        };
        let (name, node_id) = (name.clone(), *node_id);
        let cmd = Command {
            time_ms: now_ms(),
            action,
        };
        match core.propose_local(cmd).await {
            Ok(_) => {
                core.metrics.vms_rescheduled.inc();
                tracing::warn!(vm = %name, node_id, "node's lease ran out: rescheduling vm")
            }
            Err(e) if e.code() == tonic::Code::Unavailable => return,
            Err(e) => {
                tracing::debug!(vm = %name, node_id, error = %e.message(), "rescheduling refused")
            }
        }
    }
}

impl LeaseTracker {
    /// The deleted VMs whose old host can no longer run them, as
    /// `ForgetDeparted` commands: hosts whose lease surely ran out, and
    /// removed hosts once the longest lease plus the margin has passed
    /// since this leader first saw the name waiting on them.
    pub fn departed_to_forget(
        &mut self,
        fleet: &Fleet,
        lost: &BTreeMap<u64, u64>,
        now: Instant,
    ) -> Vec<Action> {
        self.departed_removed.retain(|name, _| {
            fleet
                .departed
                .get(name)
                .is_some_and(|n| !fleet.nodes.contains_key(n))
        });
        let longest = Duration::from_millis(fleet.max_lease_ms).max(DEFAULT_LEASE);
        let mut forget = Vec::new();
        for (name, node_id) in &fleet.departed {
            let expected_lease_seq = if let Some(seq) = lost.get(node_id) {
                *seq
            } else if fleet.nodes.contains_key(node_id) {
                continue;
            } else {
                let since = *self.departed_removed.entry(name.clone()).or_insert(now);
                if now.saturating_duration_since(since) <= longest + HEAL_MARGIN {
                    continue;
                }
                0
            };
            forget.push(Action::ForgetDeparted {
                name: name.clone(),
                node_id: *node_id,
                expected_lease_seq,
            });
            if forget.len() == MAX_RESCHEDULES_PER_PASS {
                break;
            }
        }
        forget
    }
}

/// Frees the names of deleted VMs whose old host can no longer run them.
async fn forget_departed(core: &Core, tracker: &mut LeaseTracker, lost: &BTreeMap<u64, u64>) {
    let forget = {
        let fleet = core.view.read();
        if fleet.departed.is_empty() {
            return;
        }
        tracker.departed_to_forget(&fleet, lost, Instant::now())
    };
    for action in forget {
        let cmd = Command {
            time_ms: now_ms(),
            action,
        };
        match core.propose_local(cmd).await {
            Ok(_) => tracing::info!("a deleted vm's host lost its lease: its name is free"),
            Err(e) if e.code() == tonic::Code::Unavailable => return,
            Err(e) => tracing::debug!(error = %e.message(), "forgetting a deleted vm refused"),
        }
    }
}

async fn place_pending(core: &Core, lost: &BTreeSet<u64>) {
    let decisions: Vec<(String, u64, u64)> = {
        let fleet = core.view.read();
        // Usage is counted once per pass and grows with each decision, so
        // one pass never plans more onto a node than it holds.
        let mut usage = fleet.allocations();
        let mut decisions = Vec::new();
        for vm in fleet
            .vms
            .values()
            .filter(|vm| vm.desired == DesiredState::Running && vm.node_id == 0)
        {
            if decisions.len() == MAX_PLACEMENTS_PER_PASS {
                break;
            }
            // A departed name (deleted or lost while placed) waits until its
            // old host confirmed it gone or surely lost its lease.
            if fleet.departed.contains_key(&vm.name) {
                continue;
            }
            if let Some(node) = choose_node(&fleet, &usage, lost, vm) {
                let used = usage.entry(node).or_default();
                used.vcpus = used.vcpus.saturating_add(vm.spec.vcpus);
                used.memory_mib = used.memory_mib.saturating_add(vm.spec.memory_mib);
                decisions.push((vm.name.clone(), node, vm.epoch));
            }
        }
        decisions
    };
    for (name, node_id, expected_epoch) in decisions {
        let cmd = Command {
            time_ms: now_ms(),
            action: Action::PlaceVm {
                name: name.clone(),
                node_id,
                expected_epoch,
            },
        };
        match core.propose_local(cmd).await {
            Ok(_) => tracing::info!(vm = %name, node_id, "placed vm"),
            Err(e) if e.code() == tonic::Code::Unavailable => return,
            Err(e) => {
                tracing::debug!(vm = %name, node_id, error = %e.message(), "placement refused")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::command::NodeRegistration;
    use crate::state::VmSpec;
    use std::collections::BTreeMap;

    fn node(f: &mut Fleet, rev: u64, id: u64, mem: u64, backend: &str) {
        let cmd = Command {
            time_ms: 0,
            action: Action::RegisterNode(NodeRegistration {
                id,
                address: format!("n{id}:7000"),
                capacity: Resources {
                    vcpus: 8,
                    memory_mib: mem,
                    disk_mib: 0,
                },
                labels: BTreeMap::new(),
                zone: String::new(),
                rack: String::new(),
                backend: backend.into(),
            }),
        };
        f.apply(rev, &cmd).unwrap();
    }

    fn vm(mem: u64, runner: &str, pin: u64) -> VmRecord {
        VmRecord {
            name: "v".into(),
            spec: VmSpec {
                vcpus: 1,
                memory_mib: mem,
                image: if runner.is_empty() {
                    "default".into()
                } else {
                    String::new()
                },
                runner: runner.into(),
                node_id: pin,
                ..Default::default()
            },
            desired: DesiredState::Running,
            node_id: 0,
            epoch: 0,
            state: crate::state::VmState::Pending,
            reason: String::new(),
            created_at_ms: 0,
            updated_at_ms: 0,
            revision: 0,
            restart_nonce: 0,
            observed: Default::default(),
        }
    }

    #[test]
    fn packs_onto_the_fullest_node_that_fits() {
        let mut f = Fleet::default();
        node(&mut f, 1, 1, 4096, "qemu");
        node(&mut f, 2, 2, 1024, "qemu");
        assert_eq!(
            choose_node(&f, &f.allocations(), &BTreeSet::new(), &vm(512, "", 0)),
            Some(2)
        );
        assert_eq!(
            choose_node(&f, &f.allocations(), &BTreeSet::new(), &vm(2048, "", 0)),
            Some(1)
        );
        assert_eq!(
            choose_node(&f, &f.allocations(), &BTreeSet::new(), &vm(8192, "", 0)),
            None
        );
        assert_eq!(
            choose_node(&f, &f.allocations(), &BTreeSet::new(), &vm(512, "", 1)),
            Some(1),
            "pinned"
        );
    }

    #[test]
    fn respects_backends_and_cordons() {
        let mut f = Fleet::default();
        node(&mut f, 1, 1, 4096, "process");
        assert_eq!(
            choose_node(&f, &f.allocations(), &BTreeSet::new(), &vm(128, "", 0)),
            None,
            "process nodes run only runners"
        );
        assert_eq!(
            choose_node(
                &f,
                &f.allocations(),
                &BTreeSet::new(),
                &vm(128, "/bin/true", 0)
            ),
            Some(1)
        );
        f.apply(
            2,
            &Command {
                time_ms: 0,
                action: Action::SetSchedulability {
                    id: 1,
                    value: Schedulability::Cordoned,
                },
            },
        )
        .unwrap();
        assert_eq!(
            choose_node(
                &f,
                &f.allocations(),
                &BTreeSet::new(),
                &vm(128, "/bin/true", 0)
            ),
            None,
            "cordoned"
        );
    }

    #[test]
    fn a_lease_is_lost_only_after_it_stopped_moving_for_lease_plus_margin() {
        let mut f = Fleet::default();
        node(&mut f, 1, 1, 4096, "process");
        node(&mut f, 2, 2, 4096, "process");
        let renew = |f: &mut Fleet, rev: u64| {
            f.apply(
                rev,
                &Command {
                    time_ms: 0,
                    action: Action::RenewLease {
                        id: 2,
                        lease_ms: 1000,
                    },
                },
            )
            .unwrap();
        };
        renew(&mut f, 3);
        let t0 = Instant::now();
        let mut t = LeaseTracker::default();
        let limit = Duration::from_millis(1000) + HEAL_MARGIN;
        assert!(t.lost_nodes(1, 1, &f, t0).is_empty());
        assert!(t.lost_nodes(1, 1, &f, t0 + limit).is_empty(), "not before");
        let after = t0 + limit + Duration::from_millis(1);
        assert_eq!(
            t.lost_nodes(1, 1, &f, after),
            BTreeMap::from([(2, 1)]),
            "node 2 lost at the renewal it last made; the leader itself never"
        );
        renew(&mut f, 4);
        assert!(
            t.lost_nodes(1, 1, &f, after).is_empty(),
            "a renewal resets it"
        );
        assert!(
            t.lost_nodes(2, 1, &f, after + limit + limit).is_empty(),
            "a new term starts every lease afresh"
        );
    }

    #[test]
    fn lost_nodes_get_no_placements() {
        let mut f = Fleet::default();
        node(&mut f, 1, 1, 4096, "qemu");
        node(&mut f, 2, 2, 1024, "qemu");
        let lost = BTreeSet::from([2]);
        assert_eq!(
            choose_node(&f, &f.allocations(), &lost, &vm(512, "", 0)),
            Some(1)
        );
        assert_eq!(
            choose_node(&f, &f.allocations(), &lost, &vm(512, "", 2)),
            None
        );
    }

    #[test]
    fn a_name_departed_from_a_removed_node_waits_out_the_longest_lease() {
        let mut f = Fleet::default();
        node(&mut f, 1, 1, 4096, "qemu");
        f.departed.insert("gone-with-node-9".into(), 9);
        f.departed.insert("on-live-node".into(), 1);
        let mut t = LeaseTracker::default();
        let t0 = Instant::now();
        let wait = DEFAULT_LEASE + HEAL_MARGIN;
        let none = BTreeMap::new();
        assert!(t.departed_to_forget(&f, &none, t0).is_empty());
        assert!(t.departed_to_forget(&f, &none, t0 + wait).is_empty());
        let later = t0 + wait + Duration::from_millis(1);
        assert_eq!(
            t.departed_to_forget(&f, &none, later),
            vec![Action::ForgetDeparted {
                name: "gone-with-node-9".into(),
                node_id: 9,
                expected_lease_seq: 0,
            }],
            "only the removed node's name, and only after the wait"
        );
        let lost = BTreeMap::from([(1, 4)]);
        assert_eq!(
            t.departed_to_forget(&f, &lost, t0),
            vec![Action::ForgetDeparted {
                name: "on-live-node".into(),
                node_id: 1,
                expected_lease_seq: 4,
            }],
            "a member whose lease surely ran out frees its names at once"
        );
    }
}
