//! `blixard.v1.ClusterService`: status, membership and leadership.
//!
//! Membership changes run on the leader; a follower passes the request on
//! to the leader's own `ClusterService` unchanged.

use super::convert::health_to_pb;
use crate::core::Core;
use crate::security::authz::Resource;
use crate::security::Caller;
use crate::state::Action;
use blixard_shared::proto::v1 as pb;
use blixard_shared::proto::v1::cluster_service_client::ClusterServiceClient;
use blixard_shared::proto::v1::cluster_service_server::ClusterService;
use openraft::errors::{ClientWriteError, RaftError};
use openraft::Instant as _;
use openraft::{BasicNode, ChangeMembers};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;
use tonic::{Request, Response, Status};

/// How long a learner may take to catch up before `Join` gives up.
const JOIN_CATCH_UP_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a leadership transfer may take.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a relayed backup may stream before the relay gives up.
const BACKUP_TIMEOUT: Duration = Duration::from_secs(600);

/// The chunks of a backup file, as the leader sends them.
pub type BackupStream =
    std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<pb::BackupChunk, Status>> + Send>>;

/// Extra time a forwarded call gets beyond the leader's own limit.
const FORWARD_SLACK: Duration = Duration::from_secs(10);

/// A request to pass on to the leader, with a deadline so a forward never
/// hangs on a leader that went away.
fn with_deadline<T>(msg: T, deadline: Duration) -> Request<T> {
    let mut req = Request::new(msg);
    req.set_timeout(deadline);
    blixard_shared::telemetry::inject_current(req.metadata_mut());
    // A relay names its client: the leader's audit trail leaves the relayed
    // call out (it was recorded here).
    if let Some(caller) = crate::security::admit::current_caller() {
        if let Ok(value) = caller.describe().parse() {
            req.metadata_mut()
                .insert(crate::security::ON_BEHALF_OF_HEADER, value);
        }
    }
    req
}

/// Serves the cluster API of one node.
pub struct ClusterApi {
    core: Arc<Core>,
}

fn membership_error(
    core: &Core,
    e: RaftError<crate::raft::TypeConfig, ClientWriteError<crate::raft::TypeConfig>>,
) -> Status {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => {
            core.unavailable("leadership changed; retry")
        }
        RaftError::APIError(ClientWriteError::ChangeMembershipError(c)) => {
            Status::unavailable(format!("membership change refused: {c}; retry shortly"))
        }
        other => Status::unavailable(format!("membership change failed: {other}")),
    }
}

impl ClusterApi {
    /// A service over `core`.
    pub fn new(core: Arc<Core>) -> Self {
        Self { core }
    }

    fn voters(&self) -> BTreeSet<u64> {
        self.core
            .raft_metrics()
            .membership_config
            .membership()
            .voter_ids()
            .collect()
    }

    /// Promotes non-voting members while there is room for voters.
    async fn fill_voter_slots(&self) -> Result<Option<u64>, Status> {
        let m = self.core.raft_metrics();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<u64> = membership.voter_ids().collect();
        if voters.len() >= self.core.config.max_voters {
            return Ok(None);
        }
        let Some(learner) = membership.learner_ids().next() else {
            return Ok(None);
        };
        tracing::info!(node_id = learner, "promoting member to voter");
        self.core
            .raft
            .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([learner])), true)
            .await
            .map_err(|e| membership_error(&self.core, e))?;
        Ok(Some(learner))
    }

    async fn join_on_leader(&self, id: u64, address: String) -> Result<pb::JoinResponse, Status> {
        let m = self.core.raft_metrics();
        let membership = m.membership_config.membership();
        for (other_id, node) in membership.nodes() {
            if node.addr == address && *other_id != id {
                return Err(Status::failed_precondition(format!(
                    "address: {address} is already used by node {other_id}"
                )));
            }
        }
        let existing = membership.get_node(&id).cloned();
        let is_voter = membership.voter_ids().any(|v| v == id);
        match existing {
            Some(node) if node.addr != address => {
                return Err(Status::failed_precondition(format!(
                    "node_id: node {id} is already a member at {}; remove it first to change its address",
                    node.addr
                )));
            }
            Some(_) if is_voter => {
                return Ok(pb::JoinResponse {
                    leader_id: self.core.id,
                    voter: true,
                })
            }
            _ => {}
        }
        tracing::info!(node_id = id, %address, "adding learner");
        let add = self
            .core
            .raft
            .add_learner(id, BasicNode::new(address), true);
        match tokio::time::timeout(JOIN_CATCH_UP_TIMEOUT, add).await {
            Ok(r) => r.map_err(|e| membership_error(&self.core, e))?,
            Err(_) => {
                return Err(Status::deadline_exceeded(format!(
                    "node {id} did not catch up within {JOIN_CATCH_UP_TIMEOUT:?}; it stays a non-voting member"
                )))
            }
        };
        let voters_now = self.voters();
        let mut voter = false;
        if voters_now.len() < self.core.config.max_voters {
            self.core
                .raft
                .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), true)
                .await
                .map_err(|e| membership_error(&self.core, e))?;
            voter = true;
        }
        tracing::info!(node_id = id, voter, "node joined");
        Ok(pb::JoinResponse {
            leader_id: self.core.id,
            voter,
        })
    }

    async fn remove_on_leader(&self, id: u64) -> Result<(), Status> {
        let m = self.core.raft_metrics();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<u64> = membership.voter_ids().collect();
        let is_member = membership.get_node(&id).is_some();
        let has_record = self.core.view.read().nodes.contains_key(&id);
        if !is_member && !has_record {
            return Err(Status::not_found(format!(
                "node {id} is not a member of the cluster"
            )));
        }
        if voters.contains(&id) && voters.len() == 1 {
            return Err(Status::failed_precondition(format!(
                "node {id} is the only voter; a cluster cannot remove its last voter"
            )));
        }
        if voters.contains(&id) {
            self.core
                .raft
                .change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([id])), false)
                .await
                .map_err(|e| membership_error(&self.core, e))?;
        } else if is_member {
            self.core
                .raft
                .change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([id])), false)
                .await
                .map_err(|e| membership_error(&self.core, e))?;
        }
        // The membership change first: if it fails, the node keeps both its
        // seat and its record. Then the record (forwarded if this node just
        // removed itself and stepped down).
        if has_record {
            self.core.propose(Action::RemoveNode { id }).await?;
        }
        tracing::info!(node_id = id, "node removed");
        if self.core.is_leader() {
            if let Err(e) = self.fill_voter_slots().await {
                tracing::warn!(error = %e, "could not promote a member after removal");
            }
        }
        Ok(())
    }

    async fn transfer_on_leader(&self, to: u64) -> Result<u64, Status> {
        let m = self.core.raft_metrics();
        let voters: BTreeSet<u64> = m.membership_config.membership().voter_ids().collect();
        let target = if to == 0 {
            let matched: BTreeMap<u64, u64> = m
                .replication
                .as_ref()
                .map(|r| {
                    r.iter()
                        .map(|(id, l)| (*id, l.map_or(0, |l| l.index)))
                        .collect()
                })
                .unwrap_or_default();
            voters
                .iter()
                .filter(|v| **v != self.core.id)
                .max_by_key(|v| (matched.get(v).copied().unwrap_or(0), std::cmp::Reverse(**v)))
                .copied()
                .ok_or_else(|| {
                    Status::failed_precondition("there is no other voter to take over")
                })?
        } else {
            if !voters.contains(&to) {
                return Err(Status::invalid_argument(format!(
                    "to_node_id: node {to} is not a voter; voters are {voters:?}"
                )));
            }
            to
        };
        if target == self.core.id {
            return Ok(target);
        }
        tracing::info!(to = target, "transferring leadership");
        self.core
            .raft
            .trigger()
            .transfer_leader(target)
            .await
            .map_err(|e| Status::unavailable(format!("raft stopped: {e}")))?;
        self.core
            .raft
            .wait(Some(TRANSFER_TIMEOUT))
            .metrics(|m| m.current_leader == Some(target), "leadership transfer")
            .await
            .map_err(|e| {
                Status::deadline_exceeded(format!("node {target} did not take over: {e}"))
            })?;
        Ok(target)
    }
}

impl ClusterApi {
    /// The cluster as this node sees it: its Raft metrics (the leader's
    /// include replication progress and contact times) and the node records'
    /// health.
    fn local_status(&self) -> pb::ClusterStatus {
        let m = self.core.raft_metrics();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<u64> = membership.voter_ids().collect();
        let fleet = self.core.view.read();
        let members = membership
            .nodes()
            .map(|(id, node)| {
                let record = fleet.nodes.get(id);
                let health = record.map_or(pb::NodeHealth::Unspecified, |n| health_to_pb(n.health));
                let mut member =
                    self.member_status(&m, *id, &node.addr, voters.contains(id), health);
                member.version = record.map(|n| n.version.clone()).unwrap_or_default();
                member
            })
            .collect();
        let leader_address = m
            .current_leader
            .and_then(|l| membership.get_node(&l))
            .map(|n| n.addr.clone())
            .unwrap_or_default();
        pb::ClusterStatus {
            leader_id: m.current_leader.unwrap_or(0),
            term: m.current_term,
            commit_index: m.local_committed.map_or(0, |l| l.index),
            applied_index: m.last_applied.map_or(0, |l| l.index),
            members,
            node_id: self.core.id,
            last_log_index: m.last_log_index.unwrap_or(0),
            snapshot_index: m.snapshot.map_or(0, |l| l.index),
            purged_index: m.purged.map_or(0, |l| l.index),
            leader_address,
            ca_fingerprint: self
                .core
                .tls
                .as_ref()
                .map(|t| t.ca_fingerprint.clone())
                .unwrap_or_default(),
            insecure: self.core.tls.is_none(),
        }
    }

    /// One member's line of the status: role, how far its log matches the
    /// leader's, and when the leader last heard from it.
    fn member_status(
        &self,
        m: &openraft::RaftMetrics<crate::raft::TypeConfig>,
        id: u64,
        address: &str,
        voter: bool,
        health: pb::NodeHealth,
    ) -> pb::Member {
        let last_log = m.last_log_index.unwrap_or(0);
        let role = if m.current_leader == Some(id) {
            pb::MemberRole::Leader
        } else if voter {
            pb::MemberRole::Follower
        } else {
            pb::MemberRole::Learner
        };
        let matched = if id == self.core.id {
            Some(last_log)
        } else {
            m.replication
                .as_ref()
                .and_then(|r| r.get(&id).copied())
                .map(|l| l.map_or(0, |l| l.index))
        };
        let last_contact_ms = m
            .heartbeat
            .as_ref()
            .and_then(|h| h.get(&id).copied().flatten())
            .map(|t| t.elapsed().as_millis() as u64)
            .unwrap_or(0);
        pb::Member {
            node_id: id,
            address: address.to_string(),
            role: role as i32,
            voter,
            health: health as i32,
            matched_index: matched.unwrap_or(0),
            lag: matched.map_or(0, |x| last_log.saturating_sub(x)),
            last_contact_ms,
            version: String::new(),
        }
    }
}

#[tonic::async_trait]
impl ClusterService for ClusterApi {
    type BackupStream = BackupStream;

    async fn backup(
        &self,
        req: Request<pb::BackupRequest>,
    ) -> Result<Response<BackupStream>, Status> {
        self.core
            .metrics
            .observe("Backup", async {
                self.core
                    .authorize(&Caller::of(&req), "cluster.backup", Resource::Cluster)?;
                let req = req.into_inner();
                // Only the leader knows its state is current: a follower
                // relays the leader's stream unchanged.
                if let Some(ch) = self.core.leader_channel()? {
                    let relayed = ClusterServiceClient::new(ch)
                        .backup(with_deadline(req, BACKUP_TIMEOUT))
                        .await?
                        .into_inner();
                    return Ok(Response::new(Box::pin(relayed) as BackupStream));
                }
                let (revision, file) = crate::backup::take::take(&self.core).await?;
                let chunks: Vec<Result<pb::BackupChunk, Status>> = file
                    .chunks(blixard_shared::limits::SNAPSHOT_CHUNK_BYTES)
                    .map(|data| {
                        Ok(pb::BackupChunk {
                            data: data.to_vec(),
                            revision,
                        })
                    })
                    .collect();
                Ok(Response::new(
                    Box::pin(futures_util::stream::iter(chunks)) as BackupStream
                ))
            })
            .await
    }

    async fn get_status(
        &self,
        req: Request<pb::GetStatusRequest>,
    ) -> Result<Response<pb::ClusterStatus>, Status> {
        self.core
            .metrics
            .observe("GetStatus", async {
                self.core
                    .authorize(&Caller::of(&req), "cluster.status", Resource::Cluster)?;
                let req = req.into_inner();
                // Only the leader knows replication progress and contact
                // times, so a linearizable status comes from the leader.
                if req.consistency == pb::Consistency::Linearizable as i32 {
                    if let Some(ch) = self.core.leader_channel()? {
                        return Ok(Response::new(
                            ClusterServiceClient::new(ch)
                                .get_status(with_deadline(req, FORWARD_SLACK))
                                .await?
                                .into_inner(),
                        ));
                    }
                }
                self.core.read_barrier(req.consistency).await?;
                Ok(Response::new(self.local_status()))
            })
            .await
    }

    async fn join(
        &self,
        req: Request<pb::JoinRequest>,
    ) -> Result<Response<pb::JoinResponse>, Status> {
        self.core
            .metrics
            .observe("Join", async {
                let caller = Caller::of(&req);
                self.core
                    .authorize(&caller, "cluster.join", Resource::Cluster)?;
                let req = req.into_inner();
                // A node joins itself; a member relays another's join.
                if let Caller::Node(id) = caller {
                    if id != req.node_id && !self.core.accepts_peer(id) {
                        return Err(Status::permission_denied(format!(
                            "node_id: node {id}'s certificate may not join node {}",
                            req.node_id
                        )));
                    }
                }
                if req.node_id == 0 {
                    return Err(Status::invalid_argument(
                        "node_id: must be a positive node id",
                    ));
                }
                blixard_shared::validate::node_address("address", &req.address)?;
                match self.core.leader_channel()? {
                    Some(ch) => Ok(Response::new(
                        ClusterServiceClient::new(ch)
                            .join(with_deadline(req, JOIN_CATCH_UP_TIMEOUT + FORWARD_SLACK))
                            .await?
                            .into_inner(),
                    )),
                    None => Ok(Response::new(
                        self.join_on_leader(req.node_id, req.address).await?,
                    )),
                }
            })
            .await
    }

    async fn remove_node(
        &self,
        req: Request<pb::RemoveNodeRequest>,
    ) -> Result<Response<pb::RemoveNodeResponse>, Status> {
        self.core
            .metrics
            .observe("RemoveNode", async {
                self.core
                    .authorize(&Caller::of(&req), "cluster.remove_node", Resource::Cluster)?;
                let req = req.into_inner();
                if req.node_id == 0 {
                    return Err(Status::invalid_argument(
                        "node_id: must be a positive node id",
                    ));
                }
                match self.core.leader_channel()? {
                    Some(ch) => Ok(Response::new(
                        ClusterServiceClient::new(ch)
                            .remove_node(with_deadline(req, FORWARD_SLACK))
                            .await?
                            .into_inner(),
                    )),
                    None => {
                        self.remove_on_leader(req.node_id).await?;
                        Ok(Response::new(pb::RemoveNodeResponse {}))
                    }
                }
            })
            .await
    }

    async fn transfer_leadership(
        &self,
        req: Request<pb::TransferLeadershipRequest>,
    ) -> Result<Response<pb::TransferLeadershipResponse>, Status> {
        self.core
            .metrics
            .observe("TransferLeadership", async {
                self.core.authorize(
                    &Caller::of(&req),
                    "cluster.transfer_leader",
                    Resource::Cluster,
                )?;
                let req = req.into_inner();
                match self.core.leader_channel()? {
                    Some(ch) => Ok(Response::new(
                        ClusterServiceClient::new(ch)
                            .transfer_leadership(with_deadline(
                                req,
                                TRANSFER_TIMEOUT + FORWARD_SLACK,
                            ))
                            .await?
                            .into_inner(),
                    )),
                    None => {
                        let new_leader_id = self.transfer_on_leader(req.to_node_id).await?;
                        Ok(Response::new(pb::TransferLeadershipResponse {
                            new_leader_id,
                        }))
                    }
                }
            })
            .await
    }

    async fn create_join_token(
        &self,
        req: Request<pb::CreateJoinTokenRequest>,
    ) -> Result<Response<pb::CreateJoinTokenResponse>, Status> {
        self.core
            .metrics
            .observe("CreateJoinToken", async {
                self.core
                    .authorize(&Caller::of(&req), "cluster.join_token", Resource::Cluster)?;
                super::join::create_join_token(&self.core, req.into_inner())
                    .await
                    .map(Response::new)
            })
            .await
    }

    async fn issue_certificate(
        &self,
        req: Request<pb::IssueCertificateRequest>,
    ) -> Result<Response<pb::IssueCertificateResponse>, Status> {
        self.core
            .metrics
            .observe("IssueCertificate", async {
                super::join::issue_certificate(&self.core, req.into_inner())
                    .await
                    .map(Response::new)
            })
            .await
    }
}
