//! `blixard node list|get|cordon|uncordon`: the hosts of the fleet, their
//! capacity and whether the scheduler may place VMs on them.

use super::args::NodeCmd;
use super::output::{known_word, print_json, print_table};
use super::CliError;
use blixard_shared::proto::v1 as pb;
use blixard_shared::BlixardClient;
use serde::Serialize;
use std::collections::BTreeMap;

/// JSON view of a node (`node get --json`, and each element of
/// `node list --json`).
#[derive(Debug, Serialize)]
pub struct NodeView {
    /// Node id.
    pub id: u64,
    /// gRPC address daemons and clients reach it at.
    pub address: String,
    /// vCPUs it offers.
    pub vcpus: u32,
    /// Memory it offers (MiB).
    pub memory_mib: u64,
    /// vCPUs requested by the VMs placed on it.
    pub allocated_vcpus: u32,
    /// Memory requested by the VMs placed on it (MiB).
    pub allocated_memory_mib: u64,
    /// Its labels, sorted by key.
    pub labels: BTreeMap<String, String>,
    /// Failure zone.
    pub zone: String,
    /// Rack.
    pub rack: String,
    /// schedulable, cordoned or draining.
    pub schedulability: String,
    /// alive, suspect or down.
    pub health: String,
    /// VM backend it runs (qemu, process, ...).
    pub backend: String,
    /// Whether it is a Raft voter.
    pub voter: bool,
    /// Names of the VMs placed on it.
    pub vms: Vec<String>,
    /// When it registered (ms since the Unix epoch).
    pub registered_at_ms: u64,
    /// When its record last changed (ms since the Unix epoch).
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
            schedulability: known_word(pb::Schedulability::try_from(n.schedulability)),
            health: known_word(pb::NodeHealth::try_from(n.health)),
            backend: n.backend.clone(),
            voter: n.voter,
            vms: n.vms.clone(),
            registered_at_ms: n.registered_at_ms,
            updated_at_ms: n.updated_at_ms,
        }
    }
}

/// Runs one `node` command.
pub async fn run(
    client: &mut BlixardClient,
    cmd: NodeCmd,
    json: bool,
    cons: pb::Consistency,
) -> Result<(), CliError> {
    let node = match cmd {
        NodeCmd::List => {
            let (nodes, _revision) = client.list_all_nodes(cons).await?;
            print_nodes(&nodes, json);
            return Ok(());
        }
        NodeCmd::Get { id } => client.get_node(id, cons).await?,
        NodeCmd::Cordon { id } => client.cordon_node(id).await?,
        NodeCmd::Uncordon { id } => client.uncordon_node(id).await?,
    };
    if json {
        print_json(&NodeView::from(&node));
    } else {
        print_nodes(std::slice::from_ref(&node), false);
    }
    Ok(())
}

/// Prints nodes as a JSON array or as the node table (one row for a single
/// node, so `node get` and `node list` read alike).
fn print_nodes(nodes: &[pb::Node], json: bool) {
    let views: Vec<NodeView> = nodes.iter().map(NodeView::from).collect();
    if json {
        print_json(&views);
        return;
    }
    let rows: Vec<Vec<String>> = views
        .iter()
        .map(|n| {
            vec![
                n.id.to_string(),
                n.address.clone(),
                n.health.clone(),
                n.schedulability.clone(),
                format!("{}/{}", n.allocated_vcpus, n.vcpus),
                format!("{}/{}", n.allocated_memory_mib, n.memory_mib),
                n.vms.len().to_string(),
                n.zone.clone(),
                n.backend.clone(),
            ]
        })
        .collect();
    print_table(
        &[
            "ID",
            "ADDRESS",
            "HEALTH",
            "SCHEDULING",
            "VCPUS",
            "MEMORY_MIB",
            "VMS",
            "ZONE",
            "BACKEND",
        ],
        &rows,
    );
}
