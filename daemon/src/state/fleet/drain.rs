//! Applying the drain commands. The leader's scheduler drives a drain
//! (`leader::drain`): it moves the node's VMs away with `MoveVm`, at most
//! `parallel` at a time, and ends it with `FinishDrain`. Apply keeps the
//! progress: a move adds the VM to the drain's in-flight set, its placement
//! elsewhere counts it moved, and an uncordon or cordon ends the drain.

use super::nodes::node_subject;
use super::{Fleet, Stamp};
use crate::state::command::*;
use crate::state::model::*;
use blixard_shared::limits::MAX_DRAIN_DEADLINE_MS;

impl Fleet {
    /// Starts draining a node.
    pub(super) fn drain_node(
        &mut self,
        at: Stamp,
        id: u64,
        deadline_ms: u64,
        parallel: u32,
    ) -> CommandResult {
        if deadline_ms <= at.time_ms || deadline_ms - at.time_ms > MAX_DRAIN_DEADLINE_MS {
            return Err(Rejection::new(
                RejectionCode::InvalidArgument,
                format!(
                    "deadline: must be in the future and at most {} hours away",
                    MAX_DRAIN_DEADLINE_MS / 3_600_000
                ),
            ));
        }
        let left = self.vms_on(id).count();
        let node = self.node_mut(id)?;
        if node.drain.as_ref().is_some_and(|d| d.outcome.is_none()) {
            return Err(Rejection::new(
                RejectionCode::FailedPrecondition,
                format!("node {id} is already draining; uncordon it to end that drain first"),
            ));
        }
        node.schedulability = Schedulability::Draining;
        node.drain = Some(DrainRecord {
            started_ms: at.time_ms,
            deadline_ms,
            parallel,
            ..DrainRecord::default()
        });
        node.updated_at_ms = at.time_ms;
        let out = node.clone();
        self.push_event(
            at,
            "node.draining",
            &node_subject(id),
            format!("node {id} draining: {left} VMs to move, {parallel} at a time"),
        );
        Ok(CommandOutcome::Node(out))
    }

    /// Ends a node's drain with its outcome; the node stays cordoned.
    pub(super) fn finish_drain(
        &mut self,
        at: Stamp,
        id: u64,
        outcome: &str,
        failed: &[(String, String)],
    ) -> CommandResult {
        let node = self.node_mut(id)?;
        let Some(drain) = node.drain.as_mut().filter(|d| d.outcome.is_none()) else {
            return Err(Rejection::new(
                RejectionCode::FailedPrecondition,
                format!("node {id} has no drain running"),
            ));
        };
        drain.outcome = Some(outcome.to_string());
        drain.failed = failed.iter().cloned().collect();
        let moved = drain.moved;
        node.schedulability = Schedulability::Cordoned;
        node.updated_at_ms = at.time_ms;
        let out = node.clone();
        self.push_event(
            at,
            "node.drained",
            &node_subject(id),
            format!(
                "node {id} drain {outcome}: {moved} moved, {} failed",
                failed.len()
            ),
        );
        Ok(CommandOutcome::Node(out))
    }

    /// Refuses a drain move off `node` when its drain is not running or
    /// already has `parallel` moves in flight.
    pub(super) fn check_drain_slot(&self, node: u64) -> Result<(), Rejection> {
        let drain = self
            .node(node)?
            .drain
            .as_ref()
            .filter(|d| d.outcome.is_none());
        match drain {
            None => Err(Rejection::new(
                RejectionCode::FailedPrecondition,
                format!("node {node} is not draining"),
            )),
            Some(d) if d.in_flight.len() >= d.parallel as usize => Err(Rejection::new(
                RejectionCode::FailedPrecondition,
                format!(
                    "node {node}'s drain already moves {} VMs at once",
                    d.parallel
                ),
            )),
            Some(_) => Ok(()),
        }
    }

    /// Notes that the drain of `node` started moving `name`.
    pub(super) fn drain_started_move(&mut self, node: u64, name: &str) {
        if let Some(d) = self.nodes.get_mut(&node).and_then(|n| n.drain.as_mut()) {
            d.in_flight.insert(name.to_string());
        }
    }

    /// Notes that `name`, moving off `from`, is placed elsewhere (`placed`)
    /// or no longer on its way (stopped or deleted).
    pub(super) fn drain_moved(&mut self, name: &str, from: u64, placed: bool) {
        if let Some(d) = self.nodes.get_mut(&from).and_then(|n| n.drain.as_mut()) {
            if d.in_flight.remove(name) && placed {
                d.moved = d.moved.saturating_add(1);
            }
        }
    }
}
