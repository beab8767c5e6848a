//! `blixard node list|get|cordon|uncordon|drain`: the hosts of the fleet,
//! their capacity, whether the scheduler may place VMs on them, and their
//! drains.

use super::args::NodeCmd;
use super::exit::ExitCode;
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
    /// Its drain, running or finished (`null`: none since the last uncordon).
    pub drain: Option<DrainView>,
}

/// JSON view of a drain's progress.
#[derive(Debug, Serialize)]
pub struct DrainView {
    /// Empty while it runs; then complete, stuck, deadline passed or ended.
    pub outcome: String,
    /// VMs moved off and placed elsewhere.
    pub moved: u32,
    /// VMs still placed on the node.
    pub left: u32,
    /// VMs stopped here and not yet placed elsewhere.
    pub in_flight: Vec<String>,
    /// VMs it could not move, with the reason.
    pub failed: BTreeMap<String, String>,
    /// Most VMs moving at once.
    pub parallel: u32,
    /// When it gives up (ms since the Unix epoch).
    pub deadline_ms: u64,
    /// When it started (ms since the Unix epoch).
    pub started_at_ms: u64,
}

impl From<&pb::DrainStatus> for DrainView {
    fn from(d: &pb::DrainStatus) -> Self {
        Self {
            outcome: d.outcome.clone(),
            moved: d.moved,
            left: d.left,
            in_flight: d.in_flight.clone(),
            failed: d
                .failed
                .iter()
                .map(|f| (f.name.clone(), f.reason.clone()))
                .collect(),
            parallel: d.parallel,
            deadline_ms: d.deadline_ms,
            started_at_ms: d.started_at_ms,
        }
    }
}

impl DrainView {
    /// One line: "running: 3 moved, 2 left, 1 moving, 0 failed".
    pub fn line(&self) -> String {
        let state = if self.outcome.is_empty() {
            "running"
        } else {
            self.outcome.as_str()
        };
        format!(
            "{state}: {} moved, {} left, {} moving, {} failed",
            self.moved,
            self.left,
            self.in_flight.len(),
            self.failed.len()
        )
    }
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
            drain: n.drain.as_ref().map(DrainView::from),
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
        NodeCmd::Drain {
            id,
            deadline,
            parallel,
            no_wait,
        } => {
            blixard_shared::validate::drain_parallel("--parallel", parallel)?;
            let deadline_ms = u64::try_from(deadline.as_millis()).unwrap_or(u64::MAX);
            let node = client.drain_node(id, deadline_ms, parallel).await?;
            if no_wait {
                node
            } else {
                wait_for_drain(client, id, json).await?
            }
        }
    };
    if json {
        print_json(&NodeView::from(&node));
    } else {
        print_nodes(std::slice::from_ref(&node), false);
        if let Some(drain) = node.drain.as_ref().map(DrainView::from) {
            println!("drain: {}", drain.line());
            for (name, reason) in &drain.failed {
                println!("  {name}: {reason}");
            }
        }
    }
    match node.drain.as_ref().map(|d| d.outcome.as_str()) {
        Some("stuck" | "deadline passed") => Err(CliError::new(
            ExitCode::Conflict,
            format!(
                "node {} drain ended with VMs left on it: {}",
                node.id,
                node.drain
                    .as_ref()
                    .map(|d| DrainView::from(d).line())
                    .unwrap_or_default()
            ),
        )),
        _ => Ok(()),
    }
}

/// How often `node drain` looks at the drain's progress.
const DRAIN_POLL: std::time::Duration = std::time::Duration::from_millis(500);

/// Waits until node `id`'s drain ends, printing each change of its
/// progress (not with `--json`), and returns the node as it ended.
async fn wait_for_drain(
    client: &mut BlixardClient,
    id: u64,
    json: bool,
) -> Result<pb::Node, CliError> {
    let mut last = String::new();
    loop {
        let node = client.get_node(id, pb::Consistency::Linearizable).await?;
        let Some(drain) = node.drain.as_ref().map(DrainView::from) else {
            return Ok(node);
        };
        let line = drain.line();
        if !json && line != last {
            eprintln!("node {id} drain {line}");
            last = line;
        }
        if !drain.outcome.is_empty() {
            return Ok(node);
        }
        tokio::time::sleep(DRAIN_POLL).await;
    }
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
