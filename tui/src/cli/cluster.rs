//! `blixard cluster status|members|transfer-leader|remove-node`: the Raft
//! membership as the operator sees it, and the two changes to it the CLI
//! offers.

use super::args::ClusterCmd;
use super::output::{known_word, print_json, print_table, NO_NODE};
use super::CliError;
use blixard_shared::proto::v1 as pb;
use blixard_shared::BlixardClient;
use serde::Serialize;

/// JSON view of a cluster member (an element of `cluster members --json`
/// and of `members` in `cluster status --json`).
#[derive(Debug, Serialize)]
pub struct MemberView {
    /// The member's node id.
    pub node_id: u64,
    /// Its gRPC address.
    pub address: String,
    /// leader, follower or learner.
    pub role: String,
    /// Whether it votes in elections.
    pub voter: bool,
    /// alive, suspect or down, as the leader judges it.
    pub health: String,
    /// Highest log index known to be replicated to it (0 if unknown).
    pub matched_index: u64,
    /// How many entries it is behind the leader's last log index.
    pub lag: u64,
    /// Milliseconds since the leader last heard from it (0 if unknown).
    pub last_contact_ms: u64,
}

impl From<&pb::Member> for MemberView {
    fn from(m: &pb::Member) -> Self {
        Self {
            node_id: m.node_id,
            address: m.address.clone(),
            role: known_word(pb::MemberRole::try_from(m.role)),
            voter: m.voter,
            health: known_word(pb::NodeHealth::try_from(m.health)),
            matched_index: m.matched_index,
            lag: m.lag,
            last_contact_ms: m.last_contact_ms,
        }
    }
}

/// JSON view of the cluster status (`cluster status --json`; the README
/// promises `leader_id`, `term`, `commit_index`, `applied_index`, `members`).
#[derive(Debug, Serialize)]
pub struct StatusView {
    /// The leader's node id (0 when no leader is known).
    pub leader_id: u64,
    /// The leader's gRPC address.
    pub leader_address: String,
    /// Current Raft term.
    pub term: u64,
    /// Highest log index known to be committed.
    pub commit_index: u64,
    /// Highest log index applied by the node that answered.
    pub applied_index: u64,
    /// Last index in the answering node's log.
    pub last_log_index: u64,
    /// Index of the answering node's latest snapshot.
    pub snapshot_index: u64,
    /// Index up to which the answering node's log is purged.
    pub purged_index: u64,
    /// The node that answered.
    pub node_id: u64,
    /// Every member of the cluster.
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

/// Runs one `cluster` command.
pub async fn run(
    client: &mut BlixardClient,
    cmd: ClusterCmd,
    json: bool,
    cons: pb::Consistency,
) -> Result<(), CliError> {
    match cmd {
        ClusterCmd::Status => status(client, false, json, cons).await,
        ClusterCmd::Members => status(client, true, json, cons).await,
        ClusterCmd::TransferLeader { to } => {
            let new_leader_id = client.transfer_leadership(to).await?;
            if json {
                print_json(&serde_json::json!({ "new_leader_id": new_leader_id }));
            } else {
                println!("leader is now node {new_leader_id}");
            }
            Ok(())
        }
        ClusterCmd::RemoveNode { id } => {
            client.remove_node(id).await?;
            if json {
                print_json(&serde_json::json!({ "removed_node_id": id }));
            } else {
                println!("node {id} removed");
            }
            Ok(())
        }
    }
}

/// `cluster status`, or with `members_only` `cluster members`: the same
/// read, printed whole or as the member table alone.
async fn status(
    client: &mut BlixardClient,
    members_only: bool,
    json: bool,
    cons: pb::Consistency,
) -> Result<(), CliError> {
    let status = client.status(cons).await?;
    let view = StatusView::from(&status);
    if json {
        if members_only {
            print_json(&view.members);
        } else {
            print_json(&view);
        }
        return Ok(());
    }
    if !members_only {
        print_summary(&view);
        println!();
    }
    print_members(&view.members);
    Ok(())
}

/// The one-line summary above the member table of `cluster status`.
fn print_summary(view: &StatusView) {
    let leader = if view.leader_id == NO_NODE {
        "none".to_string()
    } else {
        view.leader_id.to_string()
    };
    println!(
        "leader: {} ({})  term: {}  commit: {}  applied: {}  answered by: node {}",
        leader, view.leader_address, view.term, view.commit_index, view.applied_index, view.node_id
    );
}

/// The member table of `cluster status` and `cluster members`.
fn print_members(members: &[MemberView]) {
    let rows: Vec<Vec<String>> = members
        .iter()
        .map(|m| {
            vec![
                m.node_id.to_string(),
                m.address.clone(),
                m.role.clone(),
                m.health.clone(),
                m.matched_index.to_string(),
                m.lag.to_string(),
            ]
        })
        .collect();
    print_table(
        &["ID", "ADDRESS", "ROLE", "HEALTH", "MATCHED", "LAG"],
        &rows,
    );
}
