//! Rules for daemon-to-daemon messages, beyond "the caller is a member"
//! (the gate's job): a Raft message must come from the node it speaks
//! for, no message may carry a term or log index near `u64::MAX` (one such
//! vote, granted, ends a cluster's elections for good: the next term wraps
//! to 0), and `Forward` carries only what the caller may propose.

use super::Caller;
use crate::raft::{LogId, SnapshotMeta, TypeConfig, Vote};
use crate::state::Action;
use openraft::raft::{AppendEntriesRequest, TransferLeaderRequest, VoteRequest};
use tonic::Status;

/// Highest term any message may carry: 2^40 elections, over 30,000 years
/// at one a second. Far below `u64::MAX`, so no term can wrap.
pub const MAX_TERM: u64 = 1 << 40;
/// Highest log index any message may carry: 2^53, 285 years at a million
/// writes a second.
pub const MAX_INDEX: u64 = 1 << 53;

fn too_large(what: &str, value: u64, max: u64) -> Status {
    Status::invalid_argument(format!("{what}: {value} is beyond the sane bound {max}"))
}

fn check_term(what: &str, term: u64) -> Result<(), Status> {
    if term > MAX_TERM {
        return Err(too_large(what, term, MAX_TERM));
    }
    Ok(())
}

fn check_log_id(what: &str, log_id: Option<&LogId>) -> Result<(), Status> {
    let Some(id) = log_id else { return Ok(()) };
    check_term(what, id.leader_id.term)?;
    if id.index > MAX_INDEX {
        return Err(too_large(what, id.index, MAX_INDEX));
    }
    Ok(())
}

/// The vote's term is sane and its node is the caller: a node speaks only
/// for itself (`Anonymous` only in an `--insecure` cluster).
fn check_vote(what: &str, vote: &Vote, caller: &Caller) -> Result<(), Status> {
    let claimed = vote.leader_id.node_id;
    match caller {
        Caller::Node(id) if *id == claimed => check_term(what, vote.leader_id.term),
        Caller::Anonymous => check_term(what, vote.leader_id.term),
        Caller::Node(id) => Err(Status::permission_denied(format!(
            "{what}: node {id} may not speak for node {claimed}"
        ))),
        Caller::Token { .. } => Err(Status::permission_denied(format!(
            "{what}: only cluster nodes send Raft messages"
        ))),
    }
}

/// A Vote or PreVote request.
pub fn check_vote_request(req: &VoteRequest<TypeConfig>, caller: &Caller) -> Result<(), Status> {
    check_vote("vote", &req.vote, caller)?;
    check_log_id("last_log_id", req.last_log_id.as_ref())
}

/// An AppendEntries request: the leader's vote, and every log id in it.
pub fn check_append(req: &AppendEntriesRequest<TypeConfig>, caller: &Caller) -> Result<(), Status> {
    check_vote("vote", &req.vote, caller)?;
    check_log_id("prev_log_id", req.prev_log_id.as_ref())?;
    check_log_id("leader_commit", req.leader_commit.as_ref())?;
    for entry in &req.entries {
        check_log_id("entries", Some(&entry.log_id))?;
    }
    Ok(())
}

/// A leadership handover from the current leader.
pub fn check_transfer(
    req: &TransferLeaderRequest<TypeConfig>,
    caller: &Caller,
) -> Result<(), Status> {
    check_vote("from_leader", req.from_leader(), caller)?;
    check_log_id("last_log_id", req.last_log_id())
}

/// A snapshot's header: the sender's vote and the snapshot's last log id.
pub fn check_snapshot(vote: &Vote, meta: &SnapshotMeta, caller: &Caller) -> Result<(), Status> {
    check_vote("vote", vote, caller)?;
    check_log_id("last_log_id", meta.last_log_id.as_ref())
}

/// Whether `caller` may hand `action` to the leader through `Forward`.
/// Client writes come from any member (it checked the client's token);
/// a node's reports about itself only from that node; the leader's own
/// decisions never arrive by `Forward` (the leader proposes them itself).
pub fn check_forward(action: &Action, caller: &Caller) -> Result<(), Status> {
    let about = match action {
        Action::Retryable { action, .. } => return check_forward(action, caller),
        Action::RegisterNode(reg) => reg.id,
        Action::RenewLease { id, .. } => *id,
        Action::ReportVmStatus { node_id, .. } => *node_id,
        Action::RecordAudit(batch) => batch.node_id,
        Action::PlaceVm { .. }
        | Action::RescheduleVm { .. }
        | Action::SetNodeHealth { .. }
        | Action::ForgetDeparted { .. } => {
            return Err(Status::permission_denied(
                "the leader makes this decision itself; it is not accepted by Forward",
            ))
        }
        _ => return Ok(()),
    };
    match caller {
        Caller::Node(id) if *id == about => Ok(()),
        Caller::Anonymous => Ok(()),
        _ => Err(Status::permission_denied(format!(
            "only node {about} may report about node {about}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vote(term: u64, node_id: u64) -> Vote {
        serde_json::from_value(serde_json::json!({
            "leader_id": {"term": term, "node_id": node_id}, "committed": false
        }))
        .unwrap()
    }

    #[test]
    fn a_vote_near_the_end_of_terms_is_refused_even_from_its_own_node() {
        let v = vote(u64::MAX, 9);
        let err = check_vote("vote", &v, &Caller::Node(9)).unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(check_vote("vote", &vote(5, 9), &Caller::Node(9)).is_ok());
    }

    #[test]
    fn a_node_speaks_only_for_itself() {
        let err = check_vote("vote", &vote(5, 1), &Caller::Node(2)).unwrap_err();
        assert_eq!(err.code(), tonic::Code::PermissionDenied);
        let token = Caller::Token {
            name: "ops".into(),
            role: blixard_shared::auth::Role::Admin,
            labels: Default::default(),
        };
        assert!(check_vote("vote", &vote(5, 1), &token).is_err());
    }

    #[test]
    fn forwarded_reports_come_only_from_their_node() {
        let renew = Action::RenewLease {
            id: 3,
            lease_ms: 6000,
        };
        assert!(check_forward(&renew, &Caller::Node(3)).is_ok());
        assert!(check_forward(&renew, &Caller::Node(2)).is_err());
        let wrapped = Action::Retryable {
            request_id: "r".into(),
            action: Box::new(renew),
        };
        assert!(check_forward(&wrapped, &Caller::Node(2)).is_err());
        let place = Action::PlaceVm {
            name: "a".into(),
            node_id: 1,
            expected_epoch: 0,
        };
        assert!(check_forward(&place, &Caller::Node(1)).is_err());
        let create = Action::RestartVm { name: "a".into() };
        assert!(check_forward(&create, &Caller::Node(2)).is_ok());
    }
}
