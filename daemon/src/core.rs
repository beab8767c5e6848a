//! The node core: what every API handler needs from the local node, with
//! the two rules of the cluster in one place: writes go through the leader
//! (forwarded by followers), and reads are linearizable unless asked
//! otherwise (a read index from the leader, then a wait for local apply).

use crate::config::Config;
use crate::metrics::Metrics;
use crate::raft::network::PeerPool;
use crate::raft::state_machine::FleetView;
use crate::raft::{Raft, TypeConfig};
use crate::state::{Action, Command, CommandOutcome, Rejection, RejectionCode};
use blixard_shared::leader_hint::{self, LeaderHint};
use blixard_shared::proto::v1::{Consistency, RaftPayload, ReadIndexRequest};
use openraft::async_runtime::WatchReceiver;
use openraft::errors::{ClientWriteError, RaftError};
use openraft::ReadPolicy;
use std::time::{Duration, Instant};
use tonic::Status;
use tracing::Instrument;

/// How long a forwarded write or read index may take at the leader.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);
/// Entries a node's apply may trail its commit index by and still count as
/// caught up (see [`Core::caught_up`]).
const CATCH_UP_SLACK: u64 = 256;
/// How long a follower waits to apply up to a read index.
const READ_APPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// Shared state of one running node.
pub struct Core {
    /// This node's id.
    pub id: u64,
    /// The advertised gRPC address.
    pub address: String,
    /// The Raft instance.
    pub raft: Raft,
    /// Read access to applied state.
    pub view: FleetView,
    /// Channels to peers.
    pub pool: PeerPool,
    /// Metrics.
    pub metrics: Metrics,
    /// Resolved configuration.
    pub config: Config,
    /// Becomes true when the node is stopping; long-lived streams end on it.
    pub shutdown: crate::shutdown::Shutdown,
    /// Term and last log index when this node started. A node that restarts
    /// as the leader of its old term (openraft keeps a committed vote) has
    /// not recomputed its commit index yet: until it has, its read index
    /// could be older than writes it acknowledged before the crash, so
    /// reads in that term wait for its whole log instead.
    pub startup_log: (u64, u64),
    /// The node's TLS material; `None` only under `--insecure`.
    pub tls: Option<crate::security::pki::TlsMaterial>,
    /// Decides with the replicated Cedar policies.
    pub authz: crate::security::authz::Authorizer,
    /// Hands this node's audit records to the replicated trail.
    pub audit: std::sync::Arc<crate::audit::Recorder>,
    /// While set, this node as leader places, preempts and drains
    /// nothing (healing goes on): Nomad's scheduler pause. Starts from
    /// config `placement_paused`.
    pub placement_paused: std::sync::atomic::AtomicBool,
}

/// The gRPC status for a rejected command.
pub fn rejection_status(r: Rejection) -> Status {
    match r.code {
        RejectionCode::InvalidArgument => Status::invalid_argument(r.message),
        RejectionCode::NotFound => Status::not_found(r.message),
        RejectionCode::AlreadyExists => Status::already_exists(r.message),
        RejectionCode::FailedPrecondition => Status::failed_precondition(r.message),
        RejectionCode::ResourceExhausted => Status::resource_exhausted(r.message),
        RejectionCode::Unauthenticated => Status::unauthenticated(r.message),
    }
}

impl Core {
    /// The current leader, if this node knows one.
    pub fn leader_hint(&self) -> Option<LeaderHint> {
        let m = self.raft.metrics().borrow_watched().clone();
        let id = m.current_leader?;
        let address = m.membership_config.membership().get_node(&id)?.addr.clone();
        Some(LeaderHint { id, address })
    }

    /// `Unavailable`, naming the leader when known.
    pub fn unavailable(&self, message: impl Into<String>) -> Status {
        leader_hint::unavailable(message, self.leader_hint().as_ref())
    }

    /// Whether node `id` may send this node daemon-to-daemon traffic: it is
    /// a member (voter or learner) in this node's view, or this node has no
    /// membership yet (a joining node, which hears first from the leader
    /// adding it; its certificate still had to come from the cluster CA).
    pub fn accepts_peer(&self, id: u64) -> bool {
        let metrics = self.raft.metrics();
        let m = metrics.borrow_watched();
        let membership = m.membership_config.membership();
        membership.get_node(&id).is_some() || membership.nodes().next().is_none()
    }

    /// Whether `caller` may do `action` on `resource` under the policies in
    /// force: `Ok(())` or `PermissionDenied` naming both.
    pub fn authorize(
        &self,
        caller: &crate::security::Caller,
        action: &str,
        resource: crate::security::authz::Resource<'_>,
    ) -> Result<(), Status> {
        let fleet = self.view.read();
        self.decide(&fleet, caller, action, resource)
    }

    /// The decision of [`Core::authorize`] with the fleet in hand, noted
    /// for the audit trail.
    fn decide(
        &self,
        fleet: &crate::state::Fleet,
        caller: &crate::security::Caller,
        action: &str,
        resource: crate::security::authz::Resource<'_>,
    ) -> Result<(), Status> {
        let decision = self
            .authz
            .check(fleet.policies.as_ref(), caller, action, resource);
        crate::audit::note::decision(action, || resource.to_string(), decision.is_ok());
        decision
    }

    /// [`Core::authorize`] about VM `name` as the state has it (its labels;
    /// none for a VM that does not exist, so a scoped token learns nothing
    /// of VMs outside its scope).
    pub fn authorize_vm(
        &self,
        caller: &crate::security::Caller,
        action: &str,
        name: &str,
    ) -> Result<(), Status> {
        let fleet = self.view.read();
        let none = std::collections::BTreeMap::new();
        let labels = fleet.vms.get(name).map_or(&none, |vm| &vm.spec.labels);
        let resource = crate::security::authz::Resource::Vm { name, labels };
        self.decide(&fleet, caller, action, resource)
    }

    /// Whether this node has applied its own log from before a restart and
    /// is within [`CATCH_UP_SLACK`] entries of what it knows to be
    /// committed: until then, a token or join token it does not know may be
    /// one it has not applied yet. The slack: under a steady write load
    /// (the audit trail writes whenever clients call) a healthy node's
    /// apply always trails its commit index by a few entries, and a bad
    /// token must still be told it is bad, not to retry forever.
    pub fn caught_up(&self) -> bool {
        let committed = self
            .raft
            .metrics()
            .borrow_watched()
            .local_committed
            .map_or(0, |l| l.index);
        let applied = self.view.applied_index();
        applied >= self.startup_log.1 && applied.saturating_add(CATCH_UP_SLACK) >= committed
    }

    /// Whether this node is the leader right now.
    pub fn is_leader(&self) -> bool {
        self.raft.metrics().borrow_watched().current_leader == Some(self.id)
    }

    /// Proposes a change and waits until it is applied, forwarding to the
    /// leader when this node is not it.
    pub async fn propose(&self, action: Action) -> Result<CommandOutcome, Status> {
        self.propose_as(action, None).await
    }

    /// [`Core::propose`] for a client's write carrying `request_id`: a
    /// retry with the same id is answered with the first outcome.
    pub async fn propose_as(
        &self,
        action: Action,
        request_id: Option<String>,
    ) -> Result<CommandOutcome, Status> {
        let action = match request_id {
            Some(request_id) => Action::Retryable {
                request_id,
                action: Box::new(action),
            },
            None => action,
        };
        let cmd = Command {
            time_ms: blixard_shared::time::now_ms(),
            trace: blixard_shared::telemetry::current_traceparent(),
            action,
        };
        let span = if cmd.trace.is_some() {
            tracing::info_span!("raft.propose", node_id = self.id)
        } else {
            tracing::Span::none()
        };
        async {
            match self.write_local(cmd.clone()).await {
                Err(WriteError::NotLeader) => self.forward(cmd).await,
                Err(WriteError::Status(s)) => Err(s),
                Ok(outcome) => Ok(outcome),
            }
        }
        .instrument(span)
        .await
    }

    /// Proposes on this node only (the leader side of a forwarded write).
    pub async fn propose_local(&self, cmd: Command) -> Result<CommandOutcome, Status> {
        match self.write_local(cmd).await {
            Err(WriteError::NotLeader) => {
                Err(not_applied(self.unavailable("this node is not the leader")))
            }
            Err(WriteError::Status(s)) => Err(s),
            Ok(outcome) => Ok(outcome),
        }
    }

    async fn write_local(&self, cmd: Command) -> Result<CommandOutcome, WriteError> {
        let started = Instant::now();
        let result = self.raft.client_write(cmd).await;
        match result {
            Ok(resp) => {
                self.metrics.proposal_latency.observe(started.elapsed().as_secs_f64());
                match resp.data.0 {
                    Some(Ok(outcome)) => Ok(outcome),
                    Some(Err(rejection)) => Err(WriteError::Status(rejection_status(rejection))),
                    None => Err(WriteError::Status(Status::internal("command produced no result"))),
                }
            }
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => Err(WriteError::NotLeader),
            Err(RaftError::APIError(ClientWriteError::LogEntryDiscarded(_))) => Err(WriteError::Status(Status::aborted(
                "leadership changed before the write was confirmed; its outcome is unknown, read before retrying",
            ))),
            Err(RaftError::APIError(e)) => Err(WriteError::Status(Status::failed_precondition(e.to_string()))),
            Err(RaftError::Fatal(e)) => Err(WriteError::Status(Status::unavailable(format!("raft stopped: {e}")))),
        }
    }

    async fn forward(&self, cmd: Command) -> Result<CommandOutcome, Status> {
        let Some(hint) = self.leader_hint().filter(|h| h.id != self.id) else {
            return Err(self.unavailable("no leader is known yet; retry shortly"));
        };
        let data = serde_json::to_vec(&cmd)
            .map_err(|e| Status::internal(format!("encoding command: {e}")))?;
        let mut client = self.pool.raft_client(&hint.address).map_err(|e| {
            self.unavailable(format!("leader address {} is invalid: {e}", hint.address))
        })?;
        let mut req = tonic::Request::new(RaftPayload { data });
        req.set_timeout(FORWARD_TIMEOUT);
        blixard_shared::telemetry::inject_current(req.metadata_mut());
        if let Some(caller) = crate::security::admit::current_caller() {
            if let Ok(value) = caller.describe().parse() {
                req.metadata_mut()
                    .insert(crate::security::ON_BEHALF_OF_HEADER, value);
            }
        }
        let resp = client.forward(req).await.map_err(|status| {
            let retryable = matches!(cmd.action, Action::Retryable { .. });
            after_sending(status, retryable)
        })?;
        serde_json::from_slice(&resp.into_inner().data)
            .map_err(|e| Status::internal(format!("decoding the leader's reply: {e}")))
    }

    /// The leader side of a read index: confirms leadership with a quorum
    /// and returns the index reads must wait for.
    pub async fn read_index_local(&self) -> Result<u64, Status> {
        match self.raft.ensure_linearizable(ReadPolicy::ReadIndex).await {
            Ok(rid) => {
                let (term, last) = self.startup_log;
                // The index test first: it is false once the node has
                // caught up, so steady-state reads never copy the metrics.
                // `<=`: terms only grow, and metrics published just after a
                // restart may not carry the term yet.
                if rid.index() < last && self.raft_metrics().current_term <= term {
                    self.raft
                        .wait(Some(READ_APPLY_TIMEOUT))
                        .applied_index_at_least(Some(last), "restored leader catching up")
                        .await
                        .map_err(|e| self.unavailable(format!("leader still catching up: {e}")))?;
                    return Ok(last);
                }
                Ok(rid.index())
            }
            Err(e) if e.forward_to_leader().is_some() => {
                Err(self.unavailable("this node is not the leader"))
            }
            Err(e) => Err(self.unavailable(format!("cannot confirm leadership: {e}"))),
        }
    }

    /// Waits until local state is fresh enough for `consistency`.
    pub async fn read_barrier(&self, consistency: i32) -> Result<(), Status> {
        match Consistency::try_from(consistency) {
            Ok(Consistency::Local) => return Ok(()),
            Ok(Consistency::Linearizable) => {}
            Err(_) => {
                return Err(Status::invalid_argument(format!(
                    "consistency: unknown value {consistency}"
                )))
            }
        }
        #[cfg(feature = "planted-bugs")]
        if crate::sim::planted::is_on(crate::sim::planted::Planted::StaleReads) {
            return Ok(());
        }
        if self.is_leader() {
            return self.read_index_local().await.map(|_| ());
        }
        let Some(hint) = self.leader_hint().filter(|h| h.id != self.id) else {
            return Err(self.unavailable("no leader is known yet; retry, or ask for a local read"));
        };
        let mut client = self.pool.raft_client(&hint.address).map_err(|e| {
            self.unavailable(format!("leader address {} is invalid: {e}", hint.address))
        })?;
        let mut req = tonic::Request::new(ReadIndexRequest {});
        req.set_timeout(FORWARD_TIMEOUT);
        let index = client.read_index(req).await?.into_inner().index;
        self.raft
            .wait(Some(READ_APPLY_TIMEOUT))
            .applied_index_at_least(Some(index), "linearizable read")
            .await
            .map_err(|e| self.unavailable(format!("this node is behind the leader: {e}")))?;
        Ok(())
    }

    /// Raft metrics right now.
    pub fn raft_metrics(&self) -> openraft::RaftMetrics<TypeConfig> {
        self.raft.metrics().borrow_watched().clone()
    }
}

/// Metadata a leader sets on a refusal that guarantees the write was not
/// applied (so a retry is safe with or without a request id).
const NOT_APPLIED_KEY: &str = "x-blixard-not-applied";

/// `status`, marked as a refusal before anything was applied.
fn not_applied(mut status: Status) -> Status {
    status.metadata_mut().insert(
        NOT_APPLIED_KEY,
        tonic::metadata::MetadataValue::from_static("1"),
    );
    status
}

/// What a client hears when a forwarded write failed after it was sent: the
/// leader may have applied it. `Unavailable` (retry) only when that is safe:
/// the leader said it applied nothing, or the write carries a request id
/// (a retry is answered with the first outcome); otherwise `Unknown`, so a
/// retrying client does not apply it twice.
fn after_sending(status: Status, has_request_id: bool) -> Status {
    let ambiguous = matches!(
        status.code(),
        tonic::Code::Unavailable
            | tonic::Code::DeadlineExceeded
            | tonic::Code::Cancelled
            | tonic::Code::Unknown
    );
    if !ambiguous || status.metadata().contains_key(NOT_APPLIED_KEY) {
        return status;
    }
    if has_request_id {
        return Status::unavailable(format!(
            "the leader did not answer ({}); retry with the same request id",
            status.message()
        ));
    }
    Status::unknown(format!(
        "the write reached the leader but its answer was lost ({}); it may have been applied: read before retrying, or send writes with a request id",
        status.message()
    ))
}

enum WriteError {
    NotLeader,
    Status(Status),
}

impl Core {
    /// `None` when this node leads; otherwise a channel to the leader, or
    /// `Unavailable` when no leader is known.
    pub fn leader_channel(&self) -> Result<Option<tonic::transport::Channel>, Status> {
        if self.is_leader() {
            return Ok(None);
        }
        let hint = self
            .leader_hint()
            .filter(|h| h.id != self.id)
            .ok_or_else(|| self.unavailable("no leader is known yet; retry shortly"))?;
        self.pool.channel(&hint.address).map(Some).map_err(|e| {
            self.unavailable(format!("leader address {} is invalid: {e}", hint.address))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lost_answer_is_unknown_unless_a_retry_is_safe() {
        let lost = || Status::unavailable("connection reset");
        assert_eq!(after_sending(lost(), false).code(), tonic::Code::Unknown);
        assert_eq!(
            after_sending(lost(), true).code(),
            tonic::Code::Unavailable,
            "a request id makes the retry safe"
        );
        let refused = not_applied(Status::unavailable("this node is not the leader"));
        assert_eq!(
            after_sending(refused, false).code(),
            tonic::Code::Unavailable,
            "nothing was applied"
        );
        let answered = Status::already_exists("vm exists");
        assert_eq!(
            after_sending(answered, false).code(),
            tonic::Code::AlreadyExists
        );
    }
}
