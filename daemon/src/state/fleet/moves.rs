//! Applying the commands that take a running VM off its node while the
//! node lives: a move (drain or migration) and a preemption. Both unplace
//! the VM with a new epoch and mark its name departed from the old node,
//! so it is placed again only once that node confirms the old instance
//! stopped (or its lease surely ran out): a VM never runs twice.

use super::{Fleet, Stamp};
use crate::state::command::*;
use crate::state::model::*;
use blixard_shared::limits::MAX_VMS;

impl Fleet {
    /// Takes a placed VM off its node, with a new epoch, pending again.
    fn unplace(
        &mut self,
        at: Stamp,
        name: &str,
        reason: String,
        moving: Option<MoveRecord>,
    ) -> Result<VmRecord, Rejection> {
        let from = self.vm(name)?.node_id;
        self.unindex(name);
        let vm = self.vm_mut(name)?;
        vm.node_id = 0;
        vm.epoch += 1;
        vm.state = VmState::Pending;
        vm.reason = reason;
        vm.observed = Observed::default();
        vm.moving = moving;
        vm.updated_at_ms = at.time_ms;
        vm.revision = at.revision;
        let out = vm.clone();
        self.departed.insert(name.to_string(), from);
        self.reindex(name);
        Ok(out)
    }

    /// Room for `more` departed names, or the rejection.
    fn departed_room(&self, more: usize) -> Result<(), Rejection> {
        if self.departed.len().saturating_add(more) > MAX_VMS {
            return Err(Rejection::new(
                RejectionCode::ResourceExhausted,
                format!("{MAX_VMS} vms already wait for their old hosts to confirm them stopped"),
            ));
        }
        Ok(())
    }

    /// Moves a placed VM off its node (drain or migration).
    pub(super) fn move_vm(
        &mut self,
        at: Stamp,
        name: &str,
        expected_epoch: u64,
        to: u64,
        cause: &str,
    ) -> CommandResult {
        let vm = self.vm(name)?;
        let fail = |code, m: String| Err(Rejection::new(code, m));
        if vm.node_id == 0 {
            return fail(
                RejectionCode::FailedPrecondition,
                format!("vm {name:?} is not placed on any node: there is nothing to move"),
            );
        }
        if vm.epoch != expected_epoch {
            return fail(
                RejectionCode::FailedPrecondition,
                format!(
                    "stale move of vm {name:?}: epoch is {}, not {expected_epoch}",
                    vm.epoch
                ),
            );
        }
        if vm.spec.node_id != 0 {
            return fail(
                RejectionCode::FailedPrecondition,
                format!(
                    "vm {name:?} is pinned to node {} by its spec (spec.node_id): it cannot move",
                    vm.spec.node_id
                ),
            );
        }
        let from = vm.node_id;
        if to != 0 {
            if to == from {
                return fail(
                    RejectionCode::InvalidArgument,
                    format!("to_node_id: vm {name:?} already runs on node {to}"),
                );
            }
            if !self.nodes.contains_key(&to) {
                return fail(
                    RejectionCode::InvalidArgument,
                    format!("to_node_id: node {to} is not a member of the cluster"),
                );
            }
            self.check_node_takes(to, vm)
                .map_err(|r| Rejection::new(r.code, format!("to_node_id: {}", r.message)))?;
        }
        if cause == "drain" {
            self.check_drain_slot(from)?;
        }
        self.departed_room(1)?;
        let what = if cause == "drain" {
            "drained"
        } else {
            "migrated"
        };
        let reason = format!("stopping on node {from} to be {what}; placed again once it stopped");
        let moving = MoveRecord {
            from,
            to,
            cause: cause.to_string(),
        };
        let out = self.unplace(at, name, reason, Some(moving))?;
        if cause == "drain" {
            self.drain_started_move(from, name);
        }
        let target = if to == 0 {
            "the scheduler's pick".to_string()
        } else {
            format!("node {to}")
        };
        self.push_event(
            at,
            "vm.moving",
            &format!("vm/{name}"),
            format!(
                "vm {name} moving off node {from} to {target} ({cause}; epoch {})",
                out.epoch
            ),
        );
        Ok(CommandOutcome::Vm(out))
    }

    /// Displaces `victims` from `node_id` to make room for `for_vm`.
    pub(super) fn preempt_vms(
        &mut self,
        at: Stamp,
        for_vm: &str,
        node_id: u64,
        victims: &[(String, u64)],
    ) -> CommandResult {
        let stale = |m: String| Err(Rejection::new(RejectionCode::FailedPrecondition, m));
        let winner = self.vm(for_vm)?;
        if winner.node_id != 0 || winner.desired != DesiredState::Running {
            return stale(format!(
                "stale preemption: vm {for_vm:?} no longer waits for a node"
            ));
        }
        let priority = winner.spec.priority;
        self.node(node_id)?;
        for (name, epoch) in victims {
            let v = self.vm(name)?;
            if v.node_id != node_id || v.epoch != *epoch || v.desired != DesiredState::Running {
                return stale(format!(
                    "stale preemption: vm {name:?} is not running on node {node_id} at epoch {epoch}"
                ));
            }
            if !v.spec.preemptible || v.spec.priority >= priority {
                return Err(Rejection::new(
                    RejectionCode::FailedPrecondition,
                    format!(
                        "vm {name:?} (priority {}, preemptible {}) may not be displaced by priority {priority}",
                        v.spec.priority, v.spec.preemptible
                    ),
                ));
            }
        }
        self.departed_room(victims.len())?;
        let mut displaced = Vec::with_capacity(victims.len());
        for (name, _) in victims {
            let reason = format!(
                "preempted by vm {for_vm} (priority {priority}) on node {node_id}; waiting for room"
            );
            let out = self.unplace(at, name, reason, None)?;
            displaced.push(format!("{name} (priority {})", out.spec.priority));
        }
        // One event per command (revisions number events): the victims
        // are listed in it.
        let subject = match victims {
            [(one, _)] => format!("vm/{one}"),
            _ => format!("node/{node_id}"),
        };
        self.push_event(
            at,
            "vm.preempted",
            &subject,
            format!(
                "vm {} preempted by vm {for_vm} (priority {priority}) on node {node_id}",
                displaced.join(", vm ")
            ),
        );
        let winner = self.vm_mut(for_vm)?;
        winner.reason = format!(
            "preempted {} vm(s) on node {node_id}; placed once they stopped",
            victims.len()
        );
        winner.updated_at_ms = at.time_ms;
        winner.revision = at.revision;
        Ok(CommandOutcome::Done)
    }
}
