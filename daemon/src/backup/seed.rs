//! Seeding a new one-node cluster from a restored state, the way
//! `etcdutl snapshot restore` does: the state becomes the node's stored
//! snapshot, with a membership of this node alone, and Raft starts from
//! there (its log begins after the snapshot). The others then join it.
//!
//! A secure restore also creates a new cluster CA and admin token (as
//! `--init` does) and adds that token to the restored ones, so whoever
//! restores can administer the cluster even if every old admin token is
//! lost; the old tokens stay valid.

use super::RestoreError;
use crate::raft::log_store::LogStore;
use crate::raft::state_machine::{encode_fleet, StateMachine};
use crate::raft::{LogId, SnapshotMeta, StoredMembership, TypeConfig, Vote};
use crate::state::{Action, Command, Fleet};
use openraft::storage::{RaftLogStorage, RaftStateMachine};
use openraft::vote::RaftLeaderIdExt;
use openraft::{BasicNode, Membership};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Name of the admin token a secure restore adds (a suffix is added if a
/// restored token has it already).
pub const RESTORED_ADMIN_TOKEN: &str = "admin-restored";

/// Where and as what the new cluster's first node starts.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The new node's data dir: must not hold a node's state yet.
    pub data_dir: PathBuf,
    /// The new node's id.
    pub node_id: u64,
    /// Its address; default: its address in the backup's membership.
    pub advertise: Option<String>,
    /// No CA and no admin token (for a cluster run with `--insecure`).
    pub insecure: bool,
}

/// What a seeding did.
#[derive(Debug)]
pub struct Seeded {
    /// The revision the new cluster starts at.
    pub revision: u64,
    /// The address recorded for the node.
    pub advertise: String,
    /// The new CA's fingerprint (secure restores).
    pub ca_fingerprint: Option<String>,
    /// The new admin token's file (secure restores).
    pub admin_token: Option<PathBuf>,
}

/// How long the log writer thread may take to let go of the file once its
/// queue is closed.
const CLOSE_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

/// Waits until this is the file's last handle (the log writer thread
/// drops its own once the stores are gone) and closes it, so the node can
/// open it the moment `seed` returns.
async fn close(mut db: Arc<redb::Database>, path: &Path) -> Result<(), RestoreError> {
    let deadline = tokio::time::Instant::now() + CLOSE_DEADLINE;
    loop {
        match Arc::try_unwrap(db) {
            Ok(db) => {
                drop(db);
                return Ok(());
            }
            Err(shared) if tokio::time::Instant::now() < deadline => {
                db = shared;
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            Err(_) => {
                return Err(RestoreError::io(
                    path,
                    "the log writer did not close the file in time",
                ))
            }
        }
    }
}

fn db_path(data_dir: &Path) -> PathBuf {
    data_dir.join(crate::server::storage::DB_FILE)
}

/// Checks what can be checked before anything is written.
fn check(plan: &Plan, members: &BTreeMap<u64, String>) -> Result<String, RestoreError> {
    if plan.node_id == 0 {
        return Err(RestoreError::Invalid(
            "--node-id: must be a positive integer".into(),
        ));
    }
    let advertise = match (&plan.advertise, members.get(&plan.node_id)) {
        (Some(a), _) => a.clone(),
        (None, Some(a)) => a.clone(),
        (None, None) => {
            return Err(RestoreError::Invalid(format!(
                "--advertise: node {} was not a member of the backed-up cluster, so its address is unknown: give --advertise HOST:PORT (where the others will reach it)",
                plan.node_id
            )))
        }
    };
    blixard_shared::validate::node_address("--advertise", &advertise)
        .map_err(|e| RestoreError::Invalid(format!("--advertise: {}", e.message)))?;
    if db_path(&plan.data_dir).exists() {
        return Err(RestoreError::Invalid(format!(
            "--data-dir: {} already holds a node's state; restore into a new directory",
            plan.data_dir.display()
        )));
    }
    Ok(advertise)
}

/// Adds the new admin token to the restored state, as one more applied
/// command after `revision`.
fn add_admin_token(fleet: &mut Fleet, hash: String, revision: u64) -> Result<u64, RestoreError> {
    let taken = |name: &str| fleet.tokens.values().any(|t| t.name == name);
    let name = std::iter::once(RESTORED_ADMIN_TOKEN.to_string())
        .chain((2..100).map(|n| format!("{RESTORED_ADMIN_TOKEN}-{n}")))
        .find(|n| !taken(n))
        .ok_or_else(|| RestoreError::Invalid("too many restored admin tokens".into()))?;
    let cmd = Command {
        time_ms: blixard_shared::time::now_ms(),
        trace: None,
        action: Action::CreateToken {
            name,
            role: blixard_shared::auth::Role::Admin,
            hash,
            expires_ms: None,
            labels: Default::default(),
        },
    };
    let at = revision + 1;
    fleet
        .apply(at, &cmd)
        .map_err(|r| RestoreError::Invalid(format!("adding the admin token: {}", r.message)))?;
    Ok(at)
}

/// Seeds `plan.data_dir` with `fleet` (at `revision`) as the state of a new
/// one-node cluster whose member is `plan.node_id`. `members` is the
/// backed-up membership (for the node's old address).
pub async fn seed(
    plan: &Plan,
    mut fleet: Fleet,
    revision: u64,
    members: &BTreeMap<u64, String>,
) -> Result<Seeded, RestoreError> {
    let advertise = check(plan, members)?;
    let dir = &plan.data_dir;
    std::fs::create_dir_all(dir).map_err(|e| RestoreError::io(dir, e))?;
    let mut revision = revision.max(fleet.revision);
    fleet.revision = revision;
    let (ca_fingerprint, admin_token) = if plan.insecure {
        (None, None)
    } else {
        let fingerprint = crate::server::credentials::create_cluster(dir)
            .map_err(|e| RestoreError::io(dir, e))?;
        let hash = crate::server::credentials::admin_token_hash(dir)
            .map_err(|e| RestoreError::io(dir, e))?;
        revision = add_admin_token(&mut fleet, hash, revision)?;
        (
            Some(fingerprint),
            Some(crate::server::credentials::admin_token_path(dir)),
        )
    };
    let db_file = db_path(dir);
    let db = redb::Database::create(&db_file).map_err(|e| RestoreError::io(&db_file, e))?;
    let db = Arc::new(db);
    let mut log = LogStore::open(db.clone()).map_err(|e| RestoreError::io(&db_file, e))?;
    let mut sm = StateMachine::open(db.clone(), log.write_queue())
        .map_err(|e| RestoreError::io(&db_file, e))?;
    // Term 1, led by this node: its first election makes term 2, and every
    // entry after the snapshot sorts after it.
    let leader = <TypeConfig as openraft::RaftTypeConfig>::LeaderId::new_committed(1, plan.node_id);
    let log_id = LogId::new(leader, revision);
    let membership = Membership::new(
        vec![BTreeSet::from([plan.node_id])],
        BTreeMap::from([(plan.node_id, BasicNode::new(advertise.clone()))]),
    )
    .map_err(|e| RestoreError::Invalid(format!("one-node membership: {e}")))?;
    let meta = SnapshotMeta {
        last_log_id: Some(log_id),
        last_membership: StoredMembership::new(Some(log_id), membership),
    };
    let body = encode_fleet(fleet).map_err(|e| RestoreError::io(&db_file, e))?;
    sm.install_snapshot(&meta, body)
        .await
        .map_err(|e| RestoreError::io(&db_file, e))?;
    log.save_vote(&Vote::new(1, plan.node_id))
        .await
        .map_err(|e| RestoreError::io(&db_file, e))?;
    drop(sm);
    drop(log);
    close(db, &db_file).await?;
    tracing::info!(revision, node_id = plan.node_id, advertise = %advertise, "seeded a new cluster from a backup");
    Ok(Seeded {
        revision,
        advertise,
        ca_fingerprint,
        admin_token,
    })
}
