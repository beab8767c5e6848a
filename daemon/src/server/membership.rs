//! The membership phase of a node's start: bootstrap a new cluster
//! (`--init`), ask a member to add this node (`--join`), or neither for a
//! node restarted on its data dir, which rejoins on its own.

use super::tasks::{Lifetime, Tasks};
use super::StartError;
use crate::core::Core;
use crate::host::registration;
use openraft::BasicNode;
use std::collections::BTreeMap;

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
    let join = registration::join(
        seed,
        config.node_id,
        core.address.clone(),
        core.shutdown.clone(),
    );
    tasks.spawn("join", Lifetime::UntilDone, join);
    Ok(())
}
