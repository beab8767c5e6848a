//! Placement and healing, run by the leader: every VM that should run and
//! has no node gets one, in priority order then age, from the placement
//! engine (`state::placement`, one pure function); a VM that fits nowhere
//! may preempt lower-priority preemptible VMs, or waits and is tried again
//! when the fleet's capacity changes. A VM whose node's fencing lease has
//! surely run out is taken off it (with a new epoch) to be placed again,
//! and drains move VMs off their nodes (`drain`). The state machine
//! re-checks every hard rule when it applies a decision, so a stale
//! decision can never overcommit a node or break a group's limit.
//!
//! A pass is event-driven and incremental: it wakes on every applied
//! entry and reads the pending queue and the per-node load from the
//! fleet's indexes (`state::fleet::FleetIndex`), never the whole fleet.

use crate::config::DEFAULT_LEASE;
use crate::core::Core;
use crate::host::fence::HEAL_MARGIN;
use crate::shutdown::Shutdown;
use crate::state::fleet::PendingKey;
use crate::state::placement::{self, preempt, Input, Planned, Policy, Strategy};
use crate::state::{Action, Command, DesiredState, Fleet};
use blixard_shared::time::now_ms;
use futures_util::StreamExt;
use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Resync period of the placement loop.
const RESYNC_INTERVAL: Duration = Duration::from_secs(2);
/// Least time from the start of one pass to the start of the next: a
/// change after a quiet spell starts a pass at once; under a steady write
/// load passes run at most 200 times a second, each seeing everything
/// applied since the last (a pass with nothing pending reads two counters).
const MIN_PASS_INTERVAL: Duration = Duration::from_millis(5);
/// Most placements proposed per pass (the rest wait for the next pass).
const MAX_PLACEMENTS_PER_PASS: usize = 256;
/// Most pending VMs one pass asks the engine about.
const MAX_EXAMINED_PER_PASS: usize = 1024;
/// Pending VMs judged under one read lock: the lock is let go between
/// chunks so apply never waits on a long pass.
const CHUNK: usize = 64;
/// Most VMs taken off lost nodes per pass.
const MAX_RESCHEDULES_PER_PASS: usize = 256;

/// The cluster's placement policy from this node's config (the leader's
/// is the one in force).
pub fn policy_of(core: &Core) -> Policy {
    Policy {
        strategy: Strategy::parse(&core.config.placement_strategy).unwrap_or_default(),
        ..Policy::default()
    }
}

/// A digest of what decides whether a waiting VM fits: every node's
/// state, free room and VM count. A VM judged to fit nowhere is not asked
/// about again until it changes.
pub fn capacity_fingerprint(fleet: &Fleet, lost: &BTreeSet<u64>) -> u64 {
    let mut h = DefaultHasher::new();
    for node in fleet.nodes.values() {
        node.id.hash(&mut h);
        (
            node.schedulability as u8,
            node.health as u8,
            lost.contains(&node.id),
        )
            .hash(&mut h);
        (node.capacity.vcpus, node.capacity.memory_mib).hash(&mut h);
        let used = fleet.index.usage(node.id);
        (used.vcpus, used.memory_mib).hash(&mut h);
        fleet.index.count_on(node.id).hash(&mut h);
        node.labels.hash(&mut h);
        (&node.zone, &node.rack).hash(&mut h);
    }
    fleet.departed.len().hash(&mut h);
    h.finish()
}

/// What the leader remembers between passes.
#[derive(Debug, Default)]
struct LeaderState {
    tracker: LeaseTracker,
    /// Pending VMs that fit nowhere, with the capacity fingerprint they
    /// were judged at.
    waiting: BTreeMap<String, u64>,
}

/// What the leader has seen of each node's lease renewals, on its own
/// clock. Starts empty at every term: renewals a previous leader saw are
/// unknown, so every lease is assumed fresh when leadership begins.
#[derive(Debug, Default)]
pub struct LeaseTracker {
    term: u64,
    /// Node -> (lease_seq, when this leader first saw it).
    seen: BTreeMap<u64, (u64, Instant)>,
    /// Deleted VM name -> when this leader first saw it departed from a
    /// node that is no longer a member.
    departed_removed: BTreeMap<String, Instant>,
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
            #[cfg(feature = "planted-bugs")]
            let lease = if crate::sim::planted::is_on(crate::sim::planted::Planted::EarlyHeal) {
                (lease / 2).saturating_sub(HEAL_MARGIN)
            } else {
                lease
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
    let mut state = LeaderState::default();
    let policy = policy_of(&core);
    loop {
        let started = Instant::now();
        let m = core.raft_metrics();
        if m.current_leader == Some(core.id) {
            let lost = {
                let fleet = core.view.read();
                state
                    .tracker
                    .lost_nodes(m.current_term, core.id, &fleet, Instant::now())
            };
            reschedule_lost(&core, &lost).await;
            forget_departed(&core, &mut state.tracker, &lost).await;
            let lost: BTreeSet<u64> = lost.into_keys().collect();
            if !core
                .placement_paused
                .load(std::sync::atomic::Ordering::Relaxed)
            {
                super::drain::drive(&core, &lost, policy).await;
                place_pending(&core, &lost, policy, &mut state.waiting).await;
            }
        } else {
            state.waiting.clear();
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
            trace: None,
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
            trace: None,
            action,
        };
        match core.propose_local(cmd).await {
            Ok(_) => tracing::info!("a deleted vm's host lost its lease: its name is free"),
            Err(e) if e.code() == tonic::Code::Unavailable => return,
            Err(e) => tracing::debug!(error = %e.message(), "forgetting a deleted vm refused"),
        }
    }
}

/// One step a pass proposes.
#[derive(Debug)]
enum Step {
    Place {
        name: String,
        node_id: u64,
        expected_epoch: u64,
    },
    Preempt {
        for_vm: String,
        plan: preempt::Preemption,
    },
}

/// Plans placements (and preemptions) for the pending queue, in its
/// order, then proposes them.
async fn place_pending(
    core: &Core,
    lost: &BTreeSet<u64>,
    policy: Policy,
    waiting: &mut BTreeMap<String, u64>,
) {
    let mut planned = Planned::default();
    let mut steps = Vec::new();
    let mut after: Option<PendingKey> = None;
    let mut examined = 0;
    loop {
        let fleet = core.view.read();
        if fleet.index.pending_len() == 0 {
            waiting.clear();
            break;
        }
        if waiting.len() > fleet.index.pending_len() {
            waiting.retain(|name, _| fleet.vms.get(name).is_some_and(|vm| vm.node_id == 0));
        }
        let fingerprint = capacity_fingerprint(&fleet, lost);
        let mut done = true;
        let queue: Vec<PendingKey> = fleet
            .index
            .pending_after(after.as_ref())
            .take(CHUNK + 1)
            .cloned()
            .collect();
        for (chunk, key) in queue.iter().enumerate() {
            if steps.len() >= MAX_PLACEMENTS_PER_PASS || examined >= MAX_EXAMINED_PER_PASS {
                break;
            }
            if chunk == CHUNK {
                done = false;
                break;
            }
            after = Some(key.clone());
            let Some(vm) = fleet.vms.get(&key.name) else {
                continue;
            };
            // A departed name (moved, preempted, deleted or lost while
            // placed) waits until its old host confirmed it gone or
            // surely lost its lease.
            if fleet.departed.contains_key(&vm.name) || waiting.get(&vm.name) == Some(&fingerprint)
            {
                continue;
            }
            examined += 1;
            let (node, preemption) = {
                let input = Input::planned(&fleet, &planned, lost, policy);
                let decision = placement::decide(&input, vm, false);
                match decision.node {
                    Some(node) => (Some(node), None),
                    None => (None, preempt::plan(&input, vm)),
                }
            };
            match (node, preemption) {
                (Some(node_id), _) => {
                    planned.add(node_id, vm);
                    waiting.remove(&vm.name);
                    steps.push(Step::Place {
                        name: vm.name.clone(),
                        node_id,
                        expected_epoch: vm.epoch,
                    });
                }
                (None, Some(plan)) => {
                    planned.fill(plan.node);
                    steps.push(Step::Preempt {
                        for_vm: vm.name.clone(),
                        plan,
                    });
                }
                (None, None) => {
                    waiting.insert(vm.name.clone(), fingerprint);
                }
            }
        }
        if done {
            break;
        }
    }
    let proposals = steps.into_iter().map(|step| {
        let (action, what) = match step {
            Step::Place {
                name,
                node_id,
                expected_epoch,
            } => (
                Action::PlaceVm {
                    name: name.clone(),
                    node_id,
                    expected_epoch,
                },
                format!("{name} on node {node_id}"),
            ),
            Step::Preempt { for_vm, plan } => (
                Action::PreemptVms {
                    for_vm: for_vm.clone(),
                    node_id: plan.node,
                    victims: plan
                        .victims
                        .iter()
                        .map(|v| (v.name.clone(), v.epoch))
                        .collect(),
                },
                format!(
                    "{} vm(s) on node {} for {for_vm}",
                    plan.victims.len(),
                    plan.node
                ),
            ),
        };
        let is_place = matches!(action, Action::PlaceVm { .. });
        let cmd = Command {
            time_ms: now_ms(),
            trace: None,
            action,
        };
        async move {
            match core.propose_local(cmd).await {
                Ok(_) if is_place => {
                    core.metrics.vms_placed.inc();
                    tracing::info!(placement = %what, "placed vm");
                }
                Ok(_) => {
                    core.metrics.vms_preempted.inc();
                    tracing::warn!(preempted = %what, "preempted vms");
                }
                Err(e) if e.code() == tonic::Code::Unavailable => {}
                Err(e) => {
                    core.metrics.placements_refused.inc();
                    tracing::debug!(step = %what, error = %e.message(), "placement refused")
                }
            }
        }
    });
    // Independent decisions (each re-checked by apply), so they are
    // proposed together: Raft batches them into few appends.
    futures_util::stream::iter(proposals)
        .buffer_unordered(MAX_PLACEMENTS_PER_PASS)
        .for_each(|()| async {})
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::command::NodeRegistration;
    use crate::state::Resources;
    use std::collections::BTreeMap;

    fn node(f: &mut Fleet, rev: u64, id: u64, mem: u64, backend: &str) {
        let cmd = Command {
            time_ms: 0,
            trace: None,
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
                version: String::new(),
            }),
        };
        f.apply(rev, &cmd).unwrap();
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
                    trace: None,
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
