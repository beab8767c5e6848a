//! `blixard.v1.NodeService`: list, read, cordon and uncordon hosts.

use super::convert::{node_to_pb, placed_on, placements};
use super::pagination;
use crate::core::Core;
use crate::security::authz::Resource;
use crate::security::Caller;
use crate::state::{model, Action, CommandOutcome};
use blixard_shared::proto::v1 as pb;
use blixard_shared::proto::v1::node_service_server::NodeService;
use std::collections::BTreeSet;
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// Serves the node API of one node.
pub struct NodeApi {
    core: Arc<Core>,
}

impl NodeApi {
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

    async fn set_schedulability(
        &self,
        id: u64,
        value: model::Schedulability,
    ) -> Result<pb::Node, Status> {
        if id == 0 {
            return Err(Status::invalid_argument(
                "node_id: must be a positive node id",
            ));
        }
        match self
            .core
            .propose(Action::SetSchedulability { id, value })
            .await?
        {
            CommandOutcome::Node(node) => {
                let fleet = self.core.view.read();
                Ok(node_to_pb(
                    &node,
                    placed_on(&fleet, id),
                    self.voters().contains(&id),
                ))
            }
            other => Err(Status::internal(format!("unexpected outcome {other:?}"))),
        }
    }
}

#[tonic::async_trait]
impl NodeService for NodeApi {
    async fn list_nodes(
        &self,
        req: Request<pb::ListNodesRequest>,
    ) -> Result<Response<pb::ListNodesResponse>, Status> {
        self.core
            .metrics
            .observe("ListNodes", async {
                self.core
                    .authorize(&Caller::of(&req), "node.list", Resource::Cluster)?;
                let req = req.into_inner();
                let size = pagination::page_size(req.page_size);
                let after = pagination::node_token(&req.page_token)?;
                self.core.read_barrier(req.consistency).await?;
                let voters = self.voters();
                let fleet = self.core.view.read();
                let mut placed = placements(&fleet);
                let start = after.map_or(std::ops::Bound::Unbounded, std::ops::Bound::Excluded);
                let mut iter = fleet.nodes.range((start, std::ops::Bound::Unbounded));
                let nodes: Vec<pb::Node> = iter
                    .by_ref()
                    .take(size)
                    .map(|(id, n)| {
                        node_to_pb(
                            n,
                            placed.remove(id).unwrap_or_default(),
                            voters.contains(id),
                        )
                    })
                    .collect();
                let next_page_token = match (iter.next(), nodes.last()) {
                    (Some(_), Some(last)) => last.id.to_string(),
                    _ => String::new(),
                };
                Ok(Response::new(pb::ListNodesResponse {
                    nodes,
                    next_page_token,
                    revision: fleet.revision,
                }))
            })
            .await
    }

    async fn get_node(
        &self,
        req: Request<pb::GetNodeRequest>,
    ) -> Result<Response<pb::GetNodeResponse>, Status> {
        self.core
            .metrics
            .observe("GetNode", async {
                let caller = Caller::of(&req);
                let req = req.into_inner();
                self.core
                    .authorize(&caller, "node.read", Resource::Node(req.node_id))?;
                if req.node_id == 0 {
                    return Err(Status::invalid_argument(
                        "node_id: must be a positive node id",
                    ));
                }
                self.core.read_barrier(req.consistency).await?;
                let voters = self.voters();
                let fleet = self.core.view.read();
                let node = fleet
                    .nodes
                    .get(&req.node_id)
                    .ok_or_else(|| Status::not_found(format!("node {} not found", req.node_id)))?;
                Ok(Response::new(pb::GetNodeResponse {
                    node: Some(node_to_pb(
                        node,
                        placed_on(&fleet, req.node_id),
                        voters.contains(&req.node_id),
                    )),
                }))
            })
            .await
    }

    async fn cordon_node(
        &self,
        req: Request<pb::CordonNodeRequest>,
    ) -> Result<Response<pb::CordonNodeResponse>, Status> {
        self.core
            .metrics
            .observe("CordonNode", async {
                let id = req.get_ref().node_id;
                self.core
                    .authorize(&Caller::of(&req), "node.cordon", Resource::Node(id))?;
                let node = self
                    .set_schedulability(req.into_inner().node_id, model::Schedulability::Cordoned)
                    .await?;
                Ok(Response::new(pb::CordonNodeResponse { node: Some(node) }))
            })
            .await
    }

    async fn drain_node(
        &self,
        req: Request<pb::DrainNodeRequest>,
    ) -> Result<Response<pb::DrainNodeResponse>, Status> {
        use blixard_shared::limits::{
            DEFAULT_DRAIN_DEADLINE_MS, DEFAULT_DRAIN_PARALLEL, MAX_DRAIN_DEADLINE_MS,
        };
        self.core
            .metrics
            .observe("DrainNode", async {
                let id = req.get_ref().node_id;
                self.core
                    .authorize(&Caller::of(&req), "node.drain", Resource::Node(id))?;
                let req = req.into_inner();
                blixard_shared::validate::node_id("node_id", req.node_id)?;
                let parallel = match req.parallel {
                    0 => DEFAULT_DRAIN_PARALLEL,
                    n => n,
                };
                blixard_shared::validate::drain_parallel("parallel", parallel)?;
                let deadline = match req.deadline_ms {
                    0 => DEFAULT_DRAIN_DEADLINE_MS,
                    ms if ms > MAX_DRAIN_DEADLINE_MS => {
                        return Err(Status::invalid_argument(format!(
                            "deadline_ms: at most {MAX_DRAIN_DEADLINE_MS} (7 days), got {ms}"
                        )))
                    }
                    ms => ms,
                };
                let outcome = self
                    .core
                    .propose(Action::DrainNode {
                        id: req.node_id,
                        deadline_ms: blixard_shared::time::now_ms().saturating_add(deadline),
                        parallel,
                    })
                    .await?;
                let CommandOutcome::Node(node) = outcome else {
                    return Err(Status::internal(format!("unexpected outcome {outcome:?}")));
                };
                let fleet = self.core.view.read();
                Ok(Response::new(pb::DrainNodeResponse {
                    node: Some(node_to_pb(
                        &node,
                        placed_on(&fleet, req.node_id),
                        self.voters().contains(&req.node_id),
                    )),
                }))
            })
            .await
    }

    async fn uncordon_node(
        &self,
        req: Request<pb::UncordonNodeRequest>,
    ) -> Result<Response<pb::UncordonNodeResponse>, Status> {
        self.core
            .metrics
            .observe("UncordonNode", async {
                let id = req.get_ref().node_id;
                self.core
                    .authorize(&Caller::of(&req), "node.uncordon", Resource::Node(id))?;
                let node = self
                    .set_schedulability(
                        req.into_inner().node_id,
                        model::Schedulability::Schedulable,
                    )
                    .await?;
                Ok(Response::new(pb::UncordonNodeResponse { node: Some(node) }))
            })
            .await
    }
}
