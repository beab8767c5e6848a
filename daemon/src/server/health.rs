//! The node's health judge: whether it should take traffic. Published to
//! `grpc.health.v1` (overall and per service) and to `/readyz`: before, both
//! said SERVING for ever, even with no leader. A node is ready when Raft
//! runs, it knows a leader, a leader's quorum acknowledged it recently, and
//! a follower has applied what it knows committed (within
//! [`MAX_APPLY_LAG`]). A fatal Raft error is reported as the node's fatal
//! failure.

use super::tasks::FatalReporter;
use crate::core::Core;
use crate::metrics::probes::Readiness;
use crate::raft::TypeConfig;
use crate::shutdown::Shutdown;
use openraft::async_runtime::WatchReceiver;
use openraft::Instant as _;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

/// The clock openraft's metrics are stamped with.
type RaftInstant =
    <<TypeConfig as openraft::RaftTypeConfig>::AsyncRuntime as openraft::AsyncRuntime>::Instant;

/// How often the verdict is judged again without a change of Raft's
/// metrics (a quorum's acknowledgement ages without one).
const JUDGE_EVERY: Duration = Duration::from_millis(250);
/// Applied entries a follower may trail its commit index by and still be
/// ready: apply runs just behind commit under load.
pub const MAX_APPLY_LAG: u64 = 1000;

/// The verdict for Raft's metrics `m` of node `me` at `now`; a leader must
/// have heard from its quorum within `quorum_window`.
pub fn judge(
    m: &openraft::RaftMetrics<TypeConfig>,
    me: u64,
    now: RaftInstant,
    quorum_window: Duration,
) -> Readiness {
    if let Err(e) = &m.running_state {
        return Readiness::NotReady(format!("raft stopped: {e}"));
    }
    let Some(leader) = m.current_leader else {
        return Readiness::NotReady("no leader known".into());
    };
    if leader == me {
        // A leader that is its own quorum (one voter) has no acks to wait for.
        #[allow(deprecated)]
        let own_quorum = m.last_quorum_acked.is_none() && m.millis_since_quorum_ack == Some(0);
        let heard = own_quorum
            || m.last_quorum_acked
                .as_ref()
                .is_some_and(|t| now.saturating_duration_since(**t) <= quorum_window);
        if !heard {
            return Readiness::NotReady("leading without a quorum's recent acknowledgement".into());
        }
        return Readiness::Ready;
    }
    let committed = m.local_committed.map_or(0, |l| l.index);
    let applied = m.last_applied.map_or(0, |l| l.index);
    if applied.saturating_add(MAX_APPLY_LAG) < committed {
        return Readiness::NotReady(format!("catching up: applied {applied} of {committed}"));
    }
    Readiness::Ready
}

/// Judges the node's health until it stops, publishing each change.
pub(super) async fn run(
    core: Arc<Core>,
    reporter: HealthReporter,
    services: &'static [&'static str],
    ready: watch::Sender<Readiness>,
    fatal: FatalReporter,
    mut shutdown: Shutdown,
) {
    let mut metrics = core.raft.metrics();
    let window = core.config.election_timeout_max;
    loop {
        let verdict = {
            let m = metrics.borrow_watched();
            if let Err(e) = &m.running_state {
                fatal.report(format!("raft stopped: {e}"));
            }
            judge(&m, core.id, RaftInstant::now(), window)
        };
        let changed = ready.send_if_modified(|old| {
            let differs = *old != verdict;
            *old = verdict.clone();
            differs
        });
        if changed {
            let status = match &verdict {
                Readiness::Ready => ServingStatus::Serving,
                Readiness::NotReady(why) => {
                    tracing::warn!(reason = %why, "node not ready");
                    ServingStatus::NotServing
                }
            };
            for service in std::iter::once(&"").chain(services) {
                reporter.set_service_status(*service, status).await;
            }
        }
        tokio::select! {
            r = metrics.changed() => if r.is_err() { return },
            _ = tokio::time::sleep(JUDGE_EVERY) => {}
            _ = shutdown.recv() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::RaftMetrics;

    fn metrics(leader: Option<u64>, committed: u64, applied: u64) -> RaftMetrics<TypeConfig> {
        let mut m = RaftMetrics::<TypeConfig>::new_initial(1);
        m.current_leader = leader;
        m.local_committed = Some(openraft::testing::log_id::<TypeConfig>(1, 1, committed));
        m.last_applied = Some(openraft::testing::log_id::<TypeConfig>(1, 1, applied));
        m
    }

    #[test]
    fn no_leader_or_a_follower_far_behind_is_not_ready() {
        let now = RaftInstant::now();
        let window = Duration::from_millis(250);
        assert!(matches!(
            judge(&metrics(None, 5, 5), 1, now, window),
            Readiness::NotReady(_)
        ));
        assert_eq!(
            judge(&metrics(Some(2), 5, 5), 1, now, window),
            Readiness::Ready
        );
        assert_eq!(
            judge(&metrics(Some(2), MAX_APPLY_LAG + 5, 5), 1, now, window),
            Readiness::Ready
        );
        assert!(matches!(
            judge(&metrics(Some(2), MAX_APPLY_LAG + 6, 5), 1, now, window),
            Readiness::NotReady(why) if why.contains("catching up")
        ));
    }

    #[test]
    fn a_leader_is_ready_only_while_its_quorum_answers() {
        let now = RaftInstant::now();
        let window = Duration::from_millis(250);
        let mut m = metrics(Some(1), 5, 5);
        assert!(
            matches!(judge(&m, 1, now, window), Readiness::NotReady(_)),
            "never acknowledged"
        );
        m.last_quorum_acked = Some(openraft::metrics::SerdeInstant::new(now));
        assert_eq!(judge(&m, 1, now, window), Readiness::Ready);
        let later = now + window + Duration::from_millis(1);
        assert!(
            matches!(judge(&m, 1, later, window), Readiness::NotReady(_)),
            "quorum silent"
        );
    }
}
