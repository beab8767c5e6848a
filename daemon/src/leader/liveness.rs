//! Node liveness, judged by the leader from Raft heartbeat acknowledgements
//! and recorded in the replicated model only when it changes (so a healthy
//! cluster writes nothing).

use crate::core::Core;
use crate::shutdown::Shutdown;
use crate::state::{Action, NodeHealth};
use openraft::Instant as _;
use std::sync::Arc;
use std::time::Duration;

/// How often the leader re-judges liveness.
const CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// No acknowledgement for this long: suspect.
pub const SUSPECT_AFTER: Duration = Duration::from_secs(3);
/// No acknowledgement for this long: down.
pub const DOWN_AFTER: Duration = Duration::from_secs(10);

/// Health for a time since last contact.
pub fn judge(since_contact: Option<Duration>) -> NodeHealth {
    match since_contact {
        Some(d) if d < SUSPECT_AFTER => NodeHealth::Alive,
        Some(d) if d < DOWN_AFTER => NodeHealth::Suspect,
        _ => NodeHealth::Down,
    }
}

/// Runs until shutdown; acts only while this node leads.
pub async fn run(core: Arc<Core>, mut shutdown: Shutdown) {
    let mut tick = tokio::time::interval(CHECK_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut leading_since = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.recv() => return,
        }
        let m = core.raft_metrics();
        if m.current_leader != Some(core.id) {
            leading_since = None;
            continue;
        }
        // A new leader has no contact history yet: give followers one
        // down-threshold before judging them.
        let since = *leading_since.get_or_insert_with(tokio::time::Instant::now);
        let heartbeats = m.heartbeat.clone().unwrap_or_default();
        // Health is judged from Raft heartbeats; a record of a node that
        // is not (or not yet) a Raft member has none to judge by, so its
        // health stays as it is (its fencing lease still governs its VMs).
        let members: std::collections::BTreeSet<u64> = m
            .membership_config
            .membership()
            .nodes()
            .map(|(id, _)| *id)
            .collect();
        let changes: Vec<(u64, NodeHealth)> = {
            let fleet = core.view.read();
            fleet
                .nodes
                .values()
                .filter(|node| members.contains(&node.id))
                .filter_map(|node| {
                    let health = if node.id == core.id {
                        NodeHealth::Alive
                    } else {
                        let contact = heartbeats
                            .get(&node.id)
                            .copied()
                            .flatten()
                            .map(|t| t.elapsed());
                        if contact.is_none() && since.elapsed() < DOWN_AFTER {
                            return None;
                        }
                        judge(contact)
                    };
                    (health != node.health).then_some((node.id, health))
                })
                .collect()
        };
        for (id, health) in changes {
            tracing::info!(node_id = id, ?health, "node health changed");
            let cmd = crate::state::Command {
                time_ms: blixard_shared::time::now_ms(),
                trace: None,
                action: Action::SetNodeHealth { id, health },
            };
            // Only while still leading: a deposed leader's judgements are stale.
            if let Err(e) = core.propose_local(cmd).await {
                tracing::warn!(node_id = id, error = %e, "could not record node health");
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds() {
        assert_eq!(judge(Some(Duration::from_millis(100))), NodeHealth::Alive);
        assert_eq!(judge(Some(Duration::from_secs(4))), NodeHealth::Suspect);
        assert_eq!(judge(Some(Duration::from_secs(11))), NodeHealth::Down);
        assert_eq!(judge(None), NodeHealth::Down);
    }
}
