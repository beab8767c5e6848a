//! `blixard cluster status|members|transfer-leader|remove-node|join-token
//! create|backup`: the Raft membership as the operator sees it, the two changes to
//! it the CLI offers, and the one-time tokens new nodes join with.

use super::args::{ClusterCmd, JoinTokenCmd};
use super::duration::expiry_word;
use super::output::{known_word, print_json, print_table, NO_NODE};
use super::CliError;
use blixard_shared::proto::v1 as pb;
use blixard_shared::time::now_ms;
use blixard_shared::words::releases;
use blixard_shared::BlixardClient;
use serde::Serialize;
use std::time::Duration;

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
    /// The release its daemon registered with (empty: unknown).
    pub version: String,
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
            version: m.version.clone(),
        }
    }
}

/// JSON view of `blixard version`.
#[derive(Debug, Serialize)]
pub struct VersionView {
    /// This CLI's release.
    pub client: String,
    /// Each member's release, by node id.
    pub members: Vec<MemberVersion>,
    /// Whether the members run more than one release (during an upgrade).
    pub mixed: bool,
}

/// One member's release.
#[derive(Debug, Serialize)]
pub struct MemberVersion {
    /// Node id.
    pub node_id: u64,
    /// Its release (empty: unknown).
    pub version: String,
}

/// `blixard version`: the client's release and every member's (from
/// `GetStatus`), and whether the cluster runs mixed releases.
pub async fn version(
    client: &mut BlixardClient,
    json: bool,
    cons: pb::Consistency,
) -> Result<(), CliError> {
    let status = client.status(cons).await?;
    let members: Vec<MemberVersion> = status
        .members
        .iter()
        .map(|m| MemberVersion {
            node_id: m.node_id,
            version: m.version.clone(),
        })
        .collect();
    let view = VersionView {
        client: env!("CARGO_PKG_VERSION").to_string(),
        mixed: releases(members.iter().map(|m| m.version.as_str())).len() > 1,
        members,
    };
    if json {
        print_json(&view);
        return Ok(());
    }
    println!("client: {}", view.client);
    for m in &view.members {
        let v = if m.version.is_empty() {
            "unknown"
        } else {
            &m.version
        };
        println!("node {}: {v}", m.node_id);
    }
    if view.mixed {
        println!("the cluster runs mixed releases");
    }
    Ok(())
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
    /// SHA-256 of the cluster CA certificate (`sha256:…`), what a joining
    /// node passes as `--ca-fingerprint`; empty when the cluster runs
    /// `--insecure`.
    pub ca_fingerprint: String,
    /// Whether the answering node runs `--insecure` (plaintext, no tokens).
    pub insecure: bool,
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
            ca_fingerprint: s.ca_fingerprint.clone(),
            insecure: s.insecure,
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
        ClusterCmd::JoinToken(JoinTokenCmd::Create { ttl }) => {
            create_join_token(client, ttl, json).await
        }
        ClusterCmd::Backup { file } => super::backup::run(client, &file, json).await,
    }
}

/// JSON view of a new join token (`cluster join-token create --json`).
#[derive(Debug, Serialize)]
pub struct JoinTokenView {
    /// The one-time secret the joining node passes as `--join-token`.
    pub token: String,
    /// When it stops being accepted (ms since the Unix epoch).
    pub expires_at_ms: u64,
    /// What the joining node passes as `--ca-fingerprint`.
    pub ca_fingerprint: String,
}

/// `cluster join-token create`: a one-time token, and how a new node uses
/// it. The token is the point of the command, so it is printed; it works
/// once and expires.
async fn create_join_token(
    client: &mut BlixardClient,
    ttl: Duration,
    json: bool,
) -> Result<(), CliError> {
    let resp = client.create_join_token(ttl).await?;
    tracing::info!(expires_at_ms = resp.expires_at_ms, "join token created");
    let view = JoinTokenView {
        token: resp.token,
        expires_at_ms: resp.expires_at_ms,
        ca_fingerprint: resp.ca_fingerprint,
    };
    if json {
        print_json(&view);
        return Ok(());
    }
    // The member that answered is one the new node can join through too.
    let seed = client.current_endpoint();
    println!("join token:     {}", view.token);
    println!(
        "expires:        {} (used up by the first node that joins with it)",
        expiry_word(view.expires_at_ms, now_ms())
    );
    println!("ca fingerprint: {}", view.ca_fingerprint);
    println!();
    println!("On the new node, run (with its own --node-id, --data-dir and --listen):");
    println!("{}", join_command(seed, &view));
    Ok(())
}

/// The `blixardd` line that joins a new node with `view`'s token through
/// the member at `seed`.
fn join_command(seed: &str, view: &JoinTokenView) -> String {
    format!(
        "  blixardd --join {seed} --join-token {} --ca-fingerprint {}",
        view.token, view.ca_fingerprint
    )
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
    println!("{}", security_line(view));
    let releases = releases(view.members.iter().map(|m| m.version.as_str()));
    if releases.len() > 1 {
        println!(
            "releases: MIXED ({}): an upgrade is under way",
            releases.join(", ")
        );
    }
}

/// The line of `cluster status` that says how the cluster is secured.
fn security_line(view: &StatusView) -> String {
    if view.insecure {
        "security: INSECURE (--insecure: plaintext, no tokens)".to_string()
    } else if view.ca_fingerprint.is_empty() {
        // A server from before TLS says neither.
        "ca fingerprint: unknown".to_string()
    } else {
        format!("ca fingerprint: {}", view.ca_fingerprint)
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_json_has_the_security_keys() {
        let status = pb::ClusterStatus {
            ca_fingerprint: "sha256:ab".into(),
            ..Default::default()
        };
        let v = serde_json::to_value(StatusView::from(&status)).unwrap();
        assert_eq!(v["ca_fingerprint"], "sha256:ab");
        assert_eq!(v["insecure"], false);
        assert_eq!(
            security_line(&StatusView::from(&status)),
            "ca fingerprint: sha256:ab"
        );
        let insecure = pb::ClusterStatus {
            insecure: true,
            ..Default::default()
        };
        assert!(security_line(&StatusView::from(&insecure)).contains("INSECURE"));
    }

    #[test]
    fn the_join_line_is_the_one_to_run() {
        let view = JoinTokenView {
            token: "blxj_t".into(),
            expires_at_ms: 1,
            ca_fingerprint: "sha256:ab".into(),
        };
        assert_eq!(
            join_command("10.0.0.1:7001", &view),
            "  blixardd --join 10.0.0.1:7001 --join-token blxj_t --ca-fingerprint sha256:ab"
        );
        let v = serde_json::to_value(&view).unwrap();
        let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["ca_fingerprint", "expires_at_ms", "token"]);
    }
}
