//! Applying the commands that change node records: registration, removal,
//! schedulability, health and fencing-lease renewals.

use super::{Fleet, Stamp};
use crate::state::command::*;
use crate::state::model::*;
use blixard_shared::limits::MAX_NODES;
use std::sync::Arc;

impl Fleet {
    /// Adds a node record, or refreshes what its daemon reports about itself
    /// (keeping schedulability, health and lease).
    pub(super) fn register_node(&mut self, at: Stamp, reg: &NodeRegistration) -> CommandResult {
        match self.nodes.get_mut(&reg.id) {
            Some(node) => {
                if reg.matches(node) {
                    return Ok(CommandOutcome::Node(node.clone()));
                }
                node.address.clone_from(&reg.address);
                node.capacity = reg.capacity;
                node.labels.clone_from(&reg.labels);
                node.zone.clone_from(&reg.zone);
                node.rack.clone_from(&reg.rack);
                node.backend.clone_from(&reg.backend);
                node.version.clone_from(&reg.version);
                node.updated_at_ms = at.time_ms;
                let out = node.clone();
                self.push_event(
                    at,
                    "node.updated",
                    &node_subject(reg.id),
                    format!("node {} updated its registration", reg.id),
                );
                Ok(CommandOutcome::Node(out))
            }
            None => self.add_node(at, reg),
        }
    }

    fn add_node(&mut self, at: Stamp, reg: &NodeRegistration) -> CommandResult {
        if self.nodes.len() >= MAX_NODES {
            return Err(Rejection::new(
                RejectionCode::ResourceExhausted,
                format!("the cluster holds the maximum of {MAX_NODES} nodes"),
            ));
        }
        let node = NodeRecord {
            id: reg.id,
            address: reg.address.clone(),
            capacity: reg.capacity,
            labels: reg.labels.clone(),
            zone: reg.zone.clone(),
            rack: reg.rack.clone(),
            backend: reg.backend.clone(),
            schedulability: Schedulability::Schedulable,
            health: NodeHealth::Alive,
            registered_at_ms: at.time_ms,
            updated_at_ms: at.time_ms,
            lease_seq: 0,
            lease_ms: 0,
            drain: None,
            version: reg.version.clone(),
        };
        self.nodes.insert(reg.id, node.clone());
        self.push_event(
            at,
            "node.registered",
            &node_subject(reg.id),
            format!(
                "node {} registered at {} ({} vCPUs, {} MiB)",
                reg.id, reg.address, reg.capacity.vcpus, reg.capacity.memory_mib
            ),
        );
        Ok(CommandOutcome::Node(node))
    }

    /// Removes a node record; the VMs placed there become `lost`.
    pub(super) fn remove_node(&mut self, at: Stamp, id: u64) -> CommandResult {
        self.node(id)?;
        self.nodes.remove(&id);
        self.audit.forget_node(id);
        let mut lost = 0usize;
        let names: Vec<String> = self.index.names_on(id).cloned().collect();
        for name in names {
            self.unindex(&name);
            let Some(vm) = self.vms.get_mut(&name) else {
                continue;
            };
            let vm = Arc::make_mut(vm);
            vm.node_id = 0;
            vm.state = VmState::Lost;
            vm.reason = format!("node {id} was removed from the cluster");
            vm.updated_at_ms = at.time_ms;
            vm.revision = at.revision;
            // The removed host may run it until its lease runs out: neither
            // this record nor one created under its name after a delete is
            // placed before the leader forgets the name (`ForgetDeparted`).
            self.departed.insert(name.clone(), id);
            self.reindex(&name);
            lost += 1;
        }
        self.push_event(
            at,
            "node.removed",
            &node_subject(id),
            format!("node {id} removed; {lost} VMs lost"),
        );
        Ok(CommandOutcome::Done)
    }

    /// Cordons, uncordons or drains a node.
    pub(super) fn set_schedulability(
        &mut self,
        at: Stamp,
        id: u64,
        value: Schedulability,
    ) -> CommandResult {
        let kind = match value {
            Schedulability::Schedulable => "node.uncordoned",
            Schedulability::Cordoned => "node.cordoned",
            // A drain has a record and a driver: only `DrainNode` starts one.
            Schedulability::Draining => {
                return Err(Rejection::new(
                    RejectionCode::InvalidArgument,
                    "value: a node is set draining only by DrainNode",
                ))
            }
        };
        // A cordon or uncordon ends a drain: a finished one's report is
        // dropped by the uncordon, a running one stops moving VMs.
        if let Some(node) = self.nodes.get_mut(&id) {
            match value {
                Schedulability::Schedulable => node.drain = None,
                _ => {
                    if let Some(d) = node.drain.as_mut().filter(|d| d.outcome.is_none()) {
                        d.outcome = Some("ended".into());
                    }
                }
            }
        }
        self.set_node_field(
            at,
            id,
            |n| &mut n.schedulability,
            value,
            kind,
            || format!("node {id} is now {value:?}").to_lowercase(),
        )
    }

    /// Records the leader's judgement of a node's liveness.
    pub(super) fn set_node_health(
        &mut self,
        at: Stamp,
        id: u64,
        health: NodeHealth,
    ) -> CommandResult {
        let kind = match health {
            NodeHealth::Alive => "node.alive",
            NodeHealth::Suspect => "node.suspect",
            NodeHealth::Down => "node.down",
        };
        self.set_node_field(
            at,
            id,
            |n| &mut n.health,
            health,
            kind,
            || format!("node {id} is {health:?}").to_lowercase(),
        )
    }

    /// The body schedulability and health share: set one field of a node,
    /// and record an event only when the value changes.
    fn set_node_field<T: PartialEq>(
        &mut self,
        at: Stamp,
        id: u64,
        field: fn(&mut NodeRecord) -> &mut T,
        value: T,
        kind: &str,
        message: impl FnOnce() -> String,
    ) -> CommandResult {
        let node = self.node_mut(id)?;
        if *field(node) == value {
            return Ok(CommandOutcome::Node(node.clone()));
        }
        *field(node) = value;
        node.updated_at_ms = at.time_ms;
        let out = node.clone();
        self.push_event(at, kind, &node_subject(id), message());
        Ok(CommandOutcome::Node(out))
    }

    /// A node's agent renewed its fencing lease (no event: it happens every
    /// second).
    pub(super) fn renew_lease(&mut self, id: u64, lease_ms: u64) -> CommandResult {
        let node = self.node_mut(id)?;
        node.lease_seq += 1;
        node.lease_ms = lease_ms;
        let out = node.clone();
        self.max_lease_ms = self.max_lease_ms.max(lease_ms);
        Ok(CommandOutcome::Node(out))
    }
}

/// The subject events about node `id` carry.
pub(super) fn node_subject(id: u64) -> String {
    format!("node/{id}")
}
