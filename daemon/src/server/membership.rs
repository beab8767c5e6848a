//! The membership phase of a node's start: bootstrap a new cluster
//! (`--init`), ask a member to add this node (`--join`), or neither for a
//! node restarted on its data dir, which rejoins on its own.

use super::tasks::{Lifetime, Tasks};
use super::StartError;
use crate::core::Core;
use crate::host::registration;
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

/// Bootstraps or joins as the config says; a join runs in the background
/// (a task of `tasks`), a bootstrap before this returns.
pub(super) async fn bootstrap_or_join(core: &Core, tasks: &mut Tasks) -> Result<(), StartError> {
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
