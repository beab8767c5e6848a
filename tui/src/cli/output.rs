//! What the CLI prints: stable JSON views (snake_case, documented in the
//! README) and aligned human tables.

use blixard_shared::proto::v1 as pb;
use serde::Serialize;
use std::collections::BTreeMap;

/// JSON view of a VM.
#[derive(Debug, Serialize)]
pub struct VmView {
    pub name: String,
    pub state: String,
    pub desired_state: String,
    pub node_id: u64,
    pub epoch: u64,
    pub vcpus: u32,
    pub memory_mib: u64,
    pub reason: String,
    pub image: String,
    pub kernel: String,
    pub initrd: String,
    pub cmdline: String,
    pub runner: String,
    pub labels: BTreeMap<String, String>,
    pub constraints: Vec<String>,
    pub group: String,
    pub max_per_node: u32,
    pub priority: i32,
    pub preemptible: bool,
    pub restart_policy: String,
    pub pinned_node_id: u64,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
    pub revision: u64,
    pub pid: u32,
    pub started_at_ms: u64,
    pub restarts: u32,
}

fn enum_word(debug: String) -> String {
    // prost enum Debug names are CamelCase ("OnFailure"): make them snake_case.
    let mut out = String::new();
    for (i, c) in debug.chars().enumerate() {
        if c.is_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.extend(c.to_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// snake_case name of a VM state.
pub fn vm_state_word(v: i32) -> String {
    pb::VmState::try_from(v)
        .map_or_else(|_| format!("unknown_{v}"), |s| enum_word(format!("{s:?}")))
}

impl From<&pb::Vm> for VmView {
    fn from(vm: &pb::Vm) -> Self {
        let spec = vm.spec.clone().unwrap_or_default();
        Self {
            name: vm.name.clone(),
            state: vm_state_word(vm.state),
            desired_state: pb::DesiredState::try_from(vm.desired_state)
                .map_or_else(|_| "unknown".into(), |s| enum_word(format!("{s:?}"))),
            node_id: vm.node_id,
            epoch: vm.epoch,
            vcpus: spec.vcpus,
            memory_mib: spec.memory_mib,
            reason: vm.reason.clone(),
            image: spec.image,
            kernel: spec.kernel,
            initrd: spec.initrd,
            cmdline: spec.cmdline,
            runner: spec.runner,
            labels: spec.labels.into_iter().collect(),
            constraints: spec.constraints,
            group: spec.group,
            max_per_node: spec.max_per_node,
            priority: spec.priority,
            preemptible: spec.preemptible,
            restart_policy: match pb::RestartPolicy::try_from(spec.restart_policy) {
                Ok(pb::RestartPolicy::OnFailure) => "on_failure".into(),
                Ok(pb::RestartPolicy::Never) => "never".into(),
                _ => "always".into(),
            },
            pinned_node_id: spec.node_id,
            created_at_ms: vm.created_at_ms,
            updated_at_ms: vm.updated_at_ms,
            revision: vm.revision,
            pid: vm.observed.map_or(0, |o| o.pid),
            started_at_ms: vm.observed.map_or(0, |o| o.started_at_ms),
            restarts: vm.observed.map_or(0, |o| o.restarts),
        }
    }
}

/// JSON view of a node.
#[derive(Debug, Serialize)]
pub struct NodeView {
    pub id: u64,
    pub address: String,
    pub vcpus: u32,
    pub memory_mib: u64,
    pub allocated_vcpus: u32,
    pub allocated_memory_mib: u64,
    pub labels: BTreeMap<String, String>,
    pub zone: String,
    pub rack: String,
    pub schedulability: String,
    pub health: String,
    pub backend: String,
    pub voter: bool,
    pub vms: Vec<String>,
    pub registered_at_ms: u64,
    pub updated_at_ms: u64,
}

impl From<&pb::Node> for NodeView {
    fn from(n: &pb::Node) -> Self {
        let cap = n.capacity.unwrap_or_default();
        let alloc = n.allocated.unwrap_or_default();
        Self {
            id: n.id,
            address: n.address.clone(),
            vcpus: cap.vcpus,
            memory_mib: cap.memory_mib,
            allocated_vcpus: alloc.vcpus,
            allocated_memory_mib: alloc.memory_mib,
            labels: n.labels.clone().into_iter().collect(),
            zone: n.zone.clone(),
            rack: n.rack.clone(),
            schedulability: pb::Schedulability::try_from(n.schedulability)
                .map_or_else(|_| "unknown".into(), |s| enum_word(format!("{s:?}"))),
            health: pb::NodeHealth::try_from(n.health)
                .map_or_else(|_| "unknown".into(), |s| enum_word(format!("{s:?}"))),
            backend: n.backend.clone(),
            voter: n.voter,
            vms: n.vms.clone(),
            registered_at_ms: n.registered_at_ms,
            updated_at_ms: n.updated_at_ms,
        }
    }
}

/// JSON view of a cluster member.
#[derive(Debug, Serialize)]
pub struct MemberView {
    pub node_id: u64,
    pub address: String,
    pub role: String,
    pub voter: bool,
    pub health: String,
    pub matched_index: u64,
    pub lag: u64,
    pub last_contact_ms: u64,
}

impl From<&pb::Member> for MemberView {
    fn from(m: &pb::Member) -> Self {
        Self {
            node_id: m.node_id,
            address: m.address.clone(),
            role: pb::MemberRole::try_from(m.role)
                .map_or_else(|_| "unknown".into(), |s| enum_word(format!("{s:?}"))),
            voter: m.voter,
            health: pb::NodeHealth::try_from(m.health)
                .map_or_else(|_| "unknown".into(), |s| enum_word(format!("{s:?}"))),
            matched_index: m.matched_index,
            lag: m.lag,
            last_contact_ms: m.last_contact_ms,
        }
    }
}

/// JSON view of the cluster status.
#[derive(Debug, Serialize)]
pub struct StatusView {
    pub leader_id: u64,
    pub leader_address: String,
    pub term: u64,
    pub commit_index: u64,
    pub applied_index: u64,
    pub last_log_index: u64,
    pub snapshot_index: u64,
    pub purged_index: u64,
    pub node_id: u64,
    pub members: Vec<MemberView>,
}

impl From<&pb::ClusterStatus> for StatusView {
    fn from(s: &pb::ClusterStatus) -> Self {
        Self {
            leader_id: s.leader_id,
            leader_address: s.leader_address.clone(),
            term: s.term,
            commit_index: s.commit_index,
            applied_index: s.applied_index,
            last_log_index: s.last_log_index,
            snapshot_index: s.snapshot_index,
            purged_index: s.purged_index,
            node_id: s.node_id,
            members: s.members.iter().map(MemberView::from).collect(),
        }
    }
}

/// JSON view of an event.
#[derive(Debug, Serialize)]
pub struct EventView {
    pub revision: u64,
    pub time_ms: u64,
    pub kind: String,
    pub subject: String,
    pub message: String,
}

impl From<&pb::Event> for EventView {
    fn from(e: &pb::Event) -> Self {
        Self {
            revision: e.revision,
            time_ms: e.time_ms,
            kind: e.kind.clone(),
            subject: e.subject.clone(),
            message: e.message.clone(),
        }
    }
}

/// Prints `value` as one line of JSON.
pub fn print_json<T: Serialize>(value: &T) {
    match serde_json::to_string(value) {
        Ok(s) => println!("{s}"),
        Err(e) => eprintln!("error: cannot encode JSON: {e}"),
    }
}

/// Prints rows under headers, columns padded to their widest cell.
pub fn print_table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<String>| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{:<width$}  ", cell, width = widths[i]));
            }
        }
        println!("{}", out.trim_end());
    };
    line(headers.iter().map(|h| h.to_string()).collect());
    for row in rows {
        line(row.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enum_words_are_snake_case() {
        assert_eq!(enum_word("OnFailure".into()), "on_failure");
        assert_eq!(vm_state_word(pb::VmState::Pending as i32), "pending");
    }
}
