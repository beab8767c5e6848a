//! The membership phase of a node's start: bootstrap a new cluster
//! (`--init`), ask a member to add this node (`--join`), or neither for a
//! node restarted on its data dir, which rejoins on its own.

use super::tasks::{Lifetime, Tasks};
use super::StartError;
use crate::core::Core;
use crate::host::registration;
use openraft::async_runtime::WatchReceiver;
use openraft::BasicNode;
use std::collections::BTreeMap;
use std::time::Duration;

/// Name of the bootstrap admin token in `token list`.
pub const BOOTSTRAP_TOKEN_NAME: &str = "admin";
/// Longest a new cluster may take to elect itself and commit its admin token.
const BOOTSTRAP_TOKEN_DEADLINE: Duration = Duration::from_secs(30);

/// Replicates the hash of `DATA_DIR/admin.token`, once, right after the
/// bootstrap: only then, so a restart with `--init` never brings back an
/// admin token an operator revoked. The node does not start without it
/// (a new cluster nobody can administer is no use): wipe the data dir and
/// bootstrap again.
async fn register_admin_token(core: &Core) -> Result<(), StartError> {
    let hash = super::credentials::admin_token_hash(&core.config.data_dir)?;
    let action = crate::state::Action::CreateToken {
        name: BOOTSTRAP_TOKEN_NAME.into(),
        role: blixard_shared::auth::Role::Admin,
        hash,
        expires_ms: None,
        labels: Default::default(),
    };
    let deadline = tokio::time::Instant::now() + BOOTSTRAP_TOKEN_DEADLINE;
    loop {
        match core.propose(action.clone()).await {
            Ok(_) => return Ok(()),
            Err(s) if s.code() == tonic::Code::AlreadyExists => return Ok(()),
            Err(s) if tokio::time::Instant::now() < deadline => {
                tracing::debug!(error = %s.message(), "admin token not registered yet; retrying");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(s) => {
                return Err(StartError::Credentials(format!(
                    "could not register the bootstrap admin token: {}",
                    s.message()
                )))
            }
        }
    }
}

/// How long the leader waits before trying again to correct its own
/// address in the membership.
const ADDRESS_RETRY: Duration = Duration::from_secs(1);

/// Keeps this node's address in the membership equal to the one it
/// advertises, whenever it leads: a node restored from a backup (or moved
/// to a new port) would otherwise be unreachable under its old address to
/// every node that joins it. Ends once the membership agrees.
async fn correct_own_address(core: std::sync::Arc<Core>) {
    let mut metrics = core.raft.metrics();
    let mut shutdown = core.shutdown.clone();
    loop {
        let (listed, leading) = {
            let m = metrics.borrow_and_update();
            let listed = m
                .membership_config
                .membership()
                .get_node(&core.id)
                .map(|n| n.addr.clone());
            (listed, m.current_leader == Some(core.id))
        };
        match listed {
            Some(addr) if addr == core.address => return,
            Some(_) if leading => {
                let nodes = BTreeMap::from([(core.id, BasicNode::new(core.address.clone()))]);
                let change = openraft::ChangeMembers::SetNodes(nodes);
                match core.raft.change_membership(change, false).await {
                    Ok(_) => {
                        tracing::info!(node_id = core.id, address = %core.address, "corrected this node's address in the membership");
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "could not correct this node's address; retrying");
                        tokio::select! {
                            _ = tokio::time::sleep(ADDRESS_RETRY) => continue,
                            _ = shutdown.recv() => return,
                        }
                    }
                }
            }
            // Not leading (the leader of the day cannot vouch for this
            // node's address), or not a member yet: wait for a change.
            _ => {}
        }
        tokio::select! {
            changed = metrics.changed() => if changed.is_err() { return },
            _ = shutdown.recv() => return,
        }
    }
}

/// Bootstraps or joins as the config says; a join runs in the background
/// (a task of `tasks`), a bootstrap before this returns.
pub(super) async fn bootstrap_or_join(
    core: &std::sync::Arc<Core>,
    tasks: &mut Tasks,
) -> Result<(), StartError> {
    let config = &core.config;
    let initialized = core
        .raft
        .is_initialized()
        .await
        .map_err(|e| StartError::Raft(e.to_string()))?;
    if config.init && !initialized {
        let members = BTreeMap::from([(config.node_id, BasicNode::new(core.address.clone()))]);
        core.raft
            .initialize(members)
            .await
            .map_err(|e| StartError::Raft(format!("bootstrap failed: {e}")))?;
        tracing::info!(node_id = config.node_id, advertise = %core.address, "bootstrapped a new cluster");
        if core.tls.is_some() {
            register_admin_token(core).await?;
        }
    } else if config.init {
        tracing::info!("--init ignored: this data dir already belongs to a cluster");
    }
    if initialized {
        tasks.spawn(
            "own-address",
            Lifetime::UntilDone,
            correct_own_address(core.clone()),
        );
    }
    let Some(seed) = config.join.clone() else {
        return Ok(());
    };
    if initialized {
        tracing::info!(
            "--join ignored: this data dir already belongs to a cluster; rejoining on its own"
        );
        return Ok(());
    }
    let credentials = match &core.tls {
        Some(tls) => {
            blixard_shared::Credentials::with_tls(crate::security::tls::peer_client_config(tls))
        }
        None => blixard_shared::Credentials::insecure(),
    };
    let join = registration::join(
        seed,
        config.node_id,
        core.address.clone(),
        credentials,
        core.shutdown.clone(),
    );
    tasks.spawn("join", Lifetime::UntilDone, join);
    Ok(())
}
