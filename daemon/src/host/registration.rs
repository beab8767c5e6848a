//! Getting into the cluster: asking a member to add this node (`--join`),
//! and registering this host's record once the node is a member. Both retry
//! with capped exponential back-off until they succeed or the node stops.

use crate::core::Core;
use crate::shutdown::Shutdown;
use crate::state::command::NodeRegistration;
use crate::state::Action;
use blixard_shared::proto::v1::cluster_service_client::ClusterServiceClient;
use blixard_shared::proto::v1::JoinRequest;
use blixard_shared::BlixardClient;
use std::sync::Arc;
use std::time::Duration;

const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Waits `backoff` unless the node stops first; returns false on stop.
async fn pause(backoff: &mut Duration, shutdown: &mut Shutdown) -> bool {
    let wait = *backoff;
    *backoff = (*backoff * 2).min(BACKOFF_MAX);
    tokio::select! {
        _ = tokio::time::sleep(wait) => true,
        _ = shutdown.recv() => false,
    }
}

/// Asks the cluster behind `seed` to add this node, until it does.
pub async fn join(seed: String, node_id: u64, address: String, mut shutdown: Shutdown) {
    let mut backoff = BACKOFF_START;
    loop {
        let result = match BlixardClient::new([seed.as_str()]) {
            Ok(client) => {
                let mut client = client.with_request_timeout(Some(Duration::from_secs(150)));
                client
                    .call(|ch| {
                        let req = JoinRequest {
                            node_id,
                            address: address.clone(),
                        };
                        async move { ClusterServiceClient::new(ch).join(req).await }
                    })
                    .await
            }
            Err(e) => {
                tracing::error!(%seed, error = %e, "--join address is invalid; not joining");
                return;
            }
        };
        match result {
            Ok(resp) => {
                tracing::info!(
                    leader = resp.leader_id,
                    voter = resp.voter,
                    "joined the cluster"
                );
                return;
            }
            Err(e) => {
                tracing::warn!(%seed, error = %e, "join failed; retrying");
                if !pause(&mut backoff, &mut shutdown).await {
                    return;
                }
            }
        }
    }
}

/// Registers (or refreshes) this host's node record once the node is a
/// member of a cluster with a leader.
pub async fn register(core: Arc<Core>, registration: NodeRegistration, mut shutdown: Shutdown) {
    let mut backoff = BACKOFF_START;
    loop {
        let m = core.raft_metrics();
        let member = m
            .membership_config
            .membership()
            .get_node(&core.id)
            .is_some();
        if member && m.current_leader.is_some() {
            match core
                .propose(Action::RegisterNode(registration.clone()))
                .await
            {
                Ok(_) => {
                    tracing::info!(node_id = core.id, "host registered");
                    return;
                }
                Err(e) => tracing::debug!(error = %e, "registration failed; retrying"),
            }
        }
        if !pause(&mut backoff, &mut shutdown).await {
            return;
        }
    }
}
