//! The Raft settings a node runs with, derived from its config by one pure
//! function, so the reasoning behind them (the election stagger above all)
//! is tested without starting a node.

use crate::config::Config;
use openraft::SnapshotPolicy;

/// Per-node-id step of the election timeout stagger [ms]: more than the
/// skew between two followers' last heartbeats, small beside the timeout.
const ELECTION_STAGGER_MS: u64 = 10;
/// Node ids that share one stagger step: ids `n` and `n + 4` time out alike.
const ELECTION_STAGGER_STEPS: u64 = 4;
/// How long a snapshot may take to install before the leader retries [ms].
const INSTALL_SNAPSHOT_TIMEOUT_MS: u64 = 10_000;
/// Most entries in one append (replication message).
const MAX_PAYLOAD_ENTRIES: u64 = 512;
/// Most log entries purged in one go.
const MAX_PURGE_BATCH: u64 = 256;

/// openraft's settings for `config`, validated.
///
/// openraft's followers refuse to vote while their leader lease (the
/// election timeout maximum) runs, so after a leader dies their leases end
/// at the same moment and both would stand at once (a split vote, another
/// timeout). Staggering the timeouts by node id lets one lease end first:
/// its owner is the first to ask once the others' have ended too, and wins.
pub fn raft_config(config: &Config) -> Result<openraft::Config, openraft::ConfigError> {
    let stagger = ELECTION_STAGGER_MS * (config.node_id % ELECTION_STAGGER_STEPS);
    openraft::Config {
        cluster_name: "blixard".into(),
        heartbeat_interval: millis(config.heartbeat_interval),
        election_timeout_min: millis(config.election_timeout_min) + stagger,
        election_timeout_max: millis(config.election_timeout_max) + stagger,
        install_snapshot_timeout: INSTALL_SNAPSHOT_TIMEOUT_MS,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_threshold),
        max_in_snapshot_log_to_keep: (config.snapshot_threshold / 5).max(1),
        purge_batch_size: (config.snapshot_threshold / 4).clamp(1, MAX_PURGE_BATCH),
        max_payload_entries: MAX_PAYLOAD_ENTRIES,
        enable_pre_vote: Some(true),
        ..Default::default()
    }
    .validate()
}

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(node_id: u64) -> Config {
        Config::for_node(
            node_id,
            std::path::Path::new("/nonexistent"),
            ([127, 0, 0, 1], 0).into(),
        )
    }

    #[test]
    fn neighbouring_nodes_time_out_at_different_moments() {
        let one = raft_config(&config(1)).expect("valid");
        let two = raft_config(&config(2)).expect("valid");
        let five = raft_config(&config(5)).expect("valid");
        assert_eq!(
            two.election_timeout_min,
            one.election_timeout_min + ELECTION_STAGGER_MS
        );
        assert_eq!(
            two.election_timeout_max - two.election_timeout_min,
            one.election_timeout_max - one.election_timeout_min,
            "the stagger moves the window, it does not widen it"
        );
        assert_eq!(five.election_timeout_min, one.election_timeout_min);
    }

    #[test]
    fn the_stagger_stays_small_beside_the_timeout() {
        for id in 1..=16 {
            let c = raft_config(&config(id)).expect("valid");
            let base = millis(config(id).election_timeout_min);
            assert!(c.election_timeout_min - base < base / 10, "node {id}");
        }
    }

    #[test]
    fn snapshots_keep_a_fifth_of_the_threshold_and_purge_in_bounded_batches() {
        let mut cfg = config(1);
        cfg.snapshot_threshold = 20_000;
        let c = raft_config(&cfg).expect("valid");
        assert_eq!(c.max_in_snapshot_log_to_keep, 4_000);
        assert_eq!(c.purge_batch_size, MAX_PURGE_BATCH);
        cfg.snapshot_threshold = 1;
        let c = raft_config(&cfg).expect("valid");
        assert_eq!((c.max_in_snapshot_log_to_keep, c.purge_batch_size), (1, 1));
        assert_eq!(c.enable_pre_vote, Some(true));
    }
}
