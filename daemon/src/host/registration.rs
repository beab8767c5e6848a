//! Getting into the cluster: asking a member to add this node (`--join`),
//! and registering this host's record once the node is a member, then
//! keeping it true. Both retry with capped exponential back-off.

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
    let wait = blixard_shared::backoff::jittered(*backoff);
    *backoff = (*backoff * 2).min(BACKOFF_MAX);
    tokio::select! {
        _ = tokio::time::sleep(wait) => true,
        _ = shutdown.recv() => false,
    }
}

/// Asks the cluster behind `seed` to add this node, until it does; with
/// TLS the node's certificate is its proof.
pub async fn join(
    seed: String,
    node_id: u64,
    address: String,
    credentials: blixard_shared::Credentials,
    mut shutdown: Shutdown,
) {
    let mut backoff = BACKOFF_START;
    loop {
        let result = match BlixardClient::new([seed.as_str()]) {
            Ok(client) => {
                let mut client = client
                    .with_credentials(credentials.clone())
                    .with_request_timeout(Some(Duration::from_secs(150)));
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

/// How often the node record is compared with what this host reports and
/// re-asserted where they differ (or the record is missing).
const REASSERT_EVERY: Duration = Duration::from_secs(30);
/// Failed registrations in a row before each further one is a warning.
const QUIET_FAILURES: u32 = 5;

/// Registers this host's node record once the node is a member of a
/// cluster with a leader, then keeps it true until the node stops: every
/// [`REASSERT_EVERY`] the record is compared with `registration`, and
/// proposed again if it is missing or differs (apply treats an unchanged
/// registration as a no-op). Repeated failures are warnings.
pub async fn register(core: Arc<Core>, registration: NodeRegistration, mut shutdown: Shutdown) {
    let mut backoff = BACKOFF_START;
    let mut failures = 0u32;
    loop {
        match assert_registration(&core, &registration).await {
            Ok(true) => {
                if failures > 0 || backoff == BACKOFF_START {
                    tracing::info!(node_id = core.id, "host registered");
                }
                failures = 0;
                backoff = BACKOFF_START;
                tokio::select! {
                    _ = tokio::time::sleep(REASSERT_EVERY) => continue,
                    _ = shutdown.recv() => return,
                }
            }
            Ok(false) => {}
            Err(e) => {
                failures += 1;
                if failures >= QUIET_FAILURES {
                    tracing::warn!(failures, error = %e, "host registration keeps failing; retrying");
                } else {
                    tracing::debug!(error = %e, "registration failed; retrying");
                }
            }
        }
        if !pause(&mut backoff, &mut shutdown).await {
            return;
        }
    }
}

/// Makes sure the node record says what `registration` says: `Ok(true)`
/// when it does (now or after a proposal), `Ok(false)` when the node is not
/// yet a member with a leader.
async fn assert_registration(
    core: &Core,
    registration: &NodeRegistration,
) -> Result<bool, tonic::Status> {
    let m = core.raft_metrics();
    let member = m
        .membership_config
        .membership()
        .get_node(&core.id)
        .is_some();
    if !member || m.current_leader.is_none() {
        return Ok(false);
    }
    let current = core
        .view
        .read()
        .nodes
        .get(&core.id)
        .is_some_and(|n| registration.matches(n));
    if !current {
        core.propose(Action::RegisterNode(registration.clone()))
            .await?;
    }
    Ok(true)
}
