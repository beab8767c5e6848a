//! How an `Unavailable` status carries the current leader, so any client can
//! follow it instead of guessing.

/// Metadata key carrying the leader's node id on `Unavailable` statuses.
pub const LEADER_ID_KEY: &str = "x-blixard-leader-id";
/// Metadata key carrying the leader's gRPC address on `Unavailable` statuses.
pub const LEADER_ADDR_KEY: &str = "x-blixard-leader-addr";

/// The leader named by a status, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderHint {
    /// Leader's node id.
    pub id: u64,
    /// Leader's gRPC address (host:port).
    pub address: String,
}

/// Builds an `Unavailable` status that names the leader when one is known.
pub fn unavailable(message: impl Into<String>, leader: Option<&LeaderHint>) -> tonic::Status {
    let mut status = tonic::Status::unavailable(message);
    if let Some(hint) = leader {
        let md = status.metadata_mut();
        if let Ok(v) = hint.id.to_string().parse() {
            md.insert(LEADER_ID_KEY, v);
        }
        if let Ok(v) = hint.address.parse() {
            md.insert(LEADER_ADDR_KEY, v);
        }
    }
    status
}

/// Reads the leader hint out of a status, if it carries one.
pub fn from_status(status: &tonic::Status) -> Option<LeaderHint> {
    let md = status.metadata();
    let id = md.get(LEADER_ID_KEY)?.to_str().ok()?.parse().ok()?;
    let address = md.get(LEADER_ADDR_KEY)?.to_str().ok()?.to_string();
    if address.is_empty() {
        return None;
    }
    Some(LeaderHint { id, address })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hint_round_trips_through_status() {
        let hint = LeaderHint {
            id: 3,
            address: "127.0.0.1:7003".into(),
        };
        let status = unavailable("not leader", Some(&hint));
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert_eq!(from_status(&status), Some(hint));
        assert_eq!(from_status(&unavailable("no leader", None)), None);
    }
}
