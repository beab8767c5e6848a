//! Drains, driven by the leader: each pass moves the VMs of every draining
//! node away (`MoveVm`), at most the drain's `parallel` at a time, each to
//! a node the placement engine says fits; a VM that fits nowhere else
//! stays and is reported. The drain ends (`FinishDrain`) when the node is
//! empty (`complete`), when only VMs that cannot move are left (`stuck`,
//! with the reason for each), or at its deadline (`deadline passed`).

use crate::core::Core;
use crate::state::model::{DesiredState, MAX_DRAIN_FAILURES};
use crate::state::placement::{self, Input, Planned, Policy};
use crate::state::{Action, Command};
use blixard_shared::time::now_ms;
use std::collections::BTreeSet;

/// Proposes the next moves of every running drain, and ends the drains
/// that are done.
pub async fn drive(core: &Core, lost: &BTreeSet<u64>, policy: Policy) {
    let actions = plan(core, lost, policy, now_ms());
    for action in actions {
        let moving = matches!(action, Action::MoveVm { .. });
        let cmd = Command {
            time_ms: now_ms(),
            trace: None,
            action,
        };
        match core.propose_local(cmd).await {
            Ok(_) if moving => {
                core.metrics.vms_drained.inc();
            }
            Ok(_) => tracing::info!("drain finished"),
            Err(e) if e.code() == tonic::Code::Unavailable => return,
            Err(e) => tracing::debug!(error = %e.message(), "drain step refused"),
        }
    }
}

/// The next steps of every running drain at `now`.
fn plan(core: &Core, lost: &BTreeSet<u64>, policy: Policy, now: u64) -> Vec<Action> {
    let fleet = core.view.read();
    let mut actions = Vec::new();
    let mut planned = Planned::default();
    for node in fleet.nodes.values() {
        let Some(drain) = node.drain.as_ref().filter(|d| d.outcome.is_none()) else {
            continue;
        };
        let left: Vec<_> = fleet.vms_on(node.id).collect();
        let finish = |outcome: &str, failed: Vec<(String, String)>| Action::FinishDrain {
            id: node.id,
            outcome: outcome.to_string(),
            failed: failed.into_iter().take(MAX_DRAIN_FAILURES).collect(),
        };
        if left.is_empty() && drain.in_flight.is_empty() {
            actions.push(finish("complete", Vec::new()));
            continue;
        }
        if now >= drain.deadline_ms {
            let failed = left
                .iter()
                .map(|vm| {
                    (
                        vm.name.clone(),
                        "still on the node at the deadline".to_string(),
                    )
                })
                .collect();
            actions.push(finish("deadline passed", failed));
            continue;
        }
        // VMs already off the node whose old instance is gone but that fit
        // nowhere now: the drain waits on them in vain.
        let mut stuck = Vec::new();
        let mut waiting_in_vain = 0;
        for name in &drain.in_flight {
            let Some(vm) = fleet.vms.get(name) else {
                continue;
            };
            if vm.node_id != 0 || fleet.departed.contains_key(name) {
                continue;
            }
            let decision = placement::decide(&Input::of(&fleet, lost, policy), vm, false);
            if decision.node.is_none() {
                waiting_in_vain += 1;
                stuck.push((
                    name.clone(),
                    format!("moved off, but {}", decision.summary()),
                ));
            }
        }
        let nothing_moving = drain.in_flight.len() == waiting_in_vain;
        let mut slots = (drain.parallel as usize).saturating_sub(drain.in_flight.len());
        let mut proposed = false;
        for vm in &left {
            // Judging the rest only matters when the drain may end stuck
            // this pass: nothing on its way and nothing proposed. Otherwise
            // a pass judges no more VMs than it can move.
            if slots == 0 && (proposed || !nothing_moving) {
                break;
            }
            if vm.spec.node_id != 0 {
                stuck.push((
                    vm.name.clone(),
                    format!("pinned to node {} by its spec", vm.spec.node_id),
                ));
                continue;
            }
            let target = if vm.desired == DesiredState::Stopped {
                0
            } else {
                let input = Input::planned(&fleet, &planned, lost, policy);
                let decision = placement::decide(&input, vm, false);
                let Some(node) = decision.node else {
                    stuck.push((vm.name.clone(), decision.summary()));
                    continue;
                };
                node
            };
            if slots == 0 {
                continue;
            }
            slots -= 1;
            proposed = true;
            if target != 0 {
                planned.add(target, vm);
            }
            actions.push(Action::MoveVm {
                name: vm.name.clone(),
                expected_epoch: vm.epoch,
                to: 0,
                cause: "drain".into(),
            });
        }
        if nothing_moving && !proposed && stuck.len() == left.len() + waiting_in_vain {
            actions.push(finish("stuck", stuck));
        }
    }
    actions
}
