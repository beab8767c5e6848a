//! Typed cluster operations on [`BlixardClient`], so the CLI, the console
//! and tools call `client.stop_vm("web-1")` instead of repeating the gRPC
//! plumbing. Each retries and follows the leader like [`BlixardClient::call`].

use crate::client::{BlixardClient, ClientError};
use crate::limits::MAX_PAGE_SIZE;
use crate::paging::Pager;
use crate::proto::v1 as pb;
use crate::proto::v1::{
    cluster_service_client::ClusterServiceClient, node_service_client::NodeServiceClient,
    vm_service_client::VmServiceClient,
};

/// `msg` as a request carrying the write's id, the same on every retry.
fn with_id<T>(msg: T, id: &str) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    crate::request_id::attach(&mut req, id);
    req
}

fn missing(what: &str) -> ClientError {
    ClientError::Status(tonic::Status::internal(format!(
        "the server returned no {what}"
    )))
}

impl BlixardClient {
    /// Creates a one-time join token valid for `ttl` (admin): the secret
    /// and the CA fingerprint a new node joins with.
    pub async fn create_join_token(
        &mut self,
        ttl: std::time::Duration,
    ) -> Result<pb::CreateJoinTokenResponse, ClientError> {
        let ttl_seconds = ttl.as_secs();
        self.call(|ch| async move {
            ClusterServiceClient::new(ch)
                .create_join_token(pb::CreateJoinTokenRequest { ttl_seconds })
                .await
        })
        .await
    }

    /// Creates a VM.
    pub async fn create_vm(&mut self, req: pb::CreateVmRequest) -> Result<pb::Vm, ClientError> {
        let id = self.next_request_id();
        self.call(|ch| {
            let req = with_id(req.clone(), &id);
            async move { VmServiceClient::new(ch).create_vm(req).await }
        })
        .await?
        .vm
        .ok_or_else(|| missing("vm"))
    }

    /// Reads a VM.
    pub async fn get_vm(
        &mut self,
        name: &str,
        consistency: pb::Consistency,
    ) -> Result<pb::Vm, ClientError> {
        let name = name.to_string();
        self.call(|ch| {
            let req = pb::GetVmRequest {
                name: name.clone(),
                consistency: consistency as i32,
            };
            async move { VmServiceClient::new(ch).get_vm(req).await }
        })
        .await?
        .vm
        .ok_or_else(|| missing("vm"))
    }

    /// Sets a VM's desired state to running.
    pub async fn start_vm(&mut self, name: &str) -> Result<pb::Vm, ClientError> {
        let name = name.to_string();
        let id = self.next_request_id();
        self.call(|ch| {
            let req = with_id(pb::StartVmRequest { name: name.clone() }, &id);
            async move { VmServiceClient::new(ch).start_vm(req).await }
        })
        .await?
        .vm
        .ok_or_else(|| missing("vm"))
    }

    /// Sets a VM's desired state to stopped.
    pub async fn stop_vm(&mut self, name: &str) -> Result<pb::Vm, ClientError> {
        let name = name.to_string();
        let id = self.next_request_id();
        self.call(|ch| {
            let req = with_id(pb::StopVmRequest { name: name.clone() }, &id);
            async move { VmServiceClient::new(ch).stop_vm(req).await }
        })
        .await?
        .vm
        .ok_or_else(|| missing("vm"))
    }

    /// Restarts a running VM.
    pub async fn restart_vm(&mut self, name: &str) -> Result<pb::Vm, ClientError> {
        let name = name.to_string();
        let id = self.next_request_id();
        self.call(|ch| {
            let req = with_id(pb::RestartVmRequest { name: name.clone() }, &id);
            async move { VmServiceClient::new(ch).restart_vm(req).await }
        })
        .await?
        .vm
        .ok_or_else(|| missing("vm"))
    }

    /// Deletes a VM (`force` even if it runs).
    pub async fn delete_vm(&mut self, name: &str, force: bool) -> Result<(), ClientError> {
        let name = name.to_string();
        let id = self.next_request_id();
        self.call(|ch| {
            let req = with_id(
                pb::DeleteVmRequest {
                    name: name.clone(),
                    force,
                },
                &id,
            );
            async move { VmServiceClient::new(ch).delete_vm(req).await }
        })
        .await
        .map(|_| ())
    }

    /// Every VM that `filter` selects (its page fields are ignored), read
    /// page by page, and the oldest revision a page was read at.
    pub async fn list_all_vms(
        &mut self,
        filter: pb::ListVmsRequest,
    ) -> Result<(Vec<pb::Vm>, u64), ClientError> {
        let mut pager = Pager::default();
        while let Some(page_token) = pager.next_token() {
            let req = pb::ListVmsRequest {
                page_size: MAX_PAGE_SIZE,
                page_token,
                ..filter.clone()
            };
            let page = self
                .call(|ch| {
                    let req = req.clone();
                    async move { VmServiceClient::new(ch).list_vms(req).await }
                })
                .await?;
            pager.push(page)?;
        }
        Ok(pager.finish())
    }

    /// Every node, read page by page, and the oldest revision a page was
    /// read at.
    pub async fn list_all_nodes(
        &mut self,
        consistency: pb::Consistency,
    ) -> Result<(Vec<pb::Node>, u64), ClientError> {
        let mut pager = Pager::default();
        while let Some(page_token) = pager.next_token() {
            let req = pb::ListNodesRequest {
                consistency: consistency as i32,
                page_size: MAX_PAGE_SIZE,
                page_token,
            };
            let page = self
                .call(|ch| {
                    let req = req.clone();
                    async move { NodeServiceClient::new(ch).list_nodes(req).await }
                })
                .await?;
            pager.push(page)?;
        }
        Ok(pager.finish())
    }

    /// Reads a node.
    pub async fn get_node(
        &mut self,
        node_id: u64,
        consistency: pb::Consistency,
    ) -> Result<pb::Node, ClientError> {
        self.call(|ch| async move {
            NodeServiceClient::new(ch)
                .get_node(pb::GetNodeRequest {
                    node_id,
                    consistency: consistency as i32,
                })
                .await
        })
        .await?
        .node
        .ok_or_else(|| missing("node"))
    }

    /// Stops placing new VMs on a node.
    pub async fn cordon_node(&mut self, node_id: u64) -> Result<pb::Node, ClientError> {
        let id = self.next_request_id();
        self.call(|ch| {
            let req = with_id(pb::CordonNodeRequest { node_id }, &id);
            async move { NodeServiceClient::new(ch).cordon_node(req).await }
        })
        .await?
        .node
        .ok_or_else(|| missing("node"))
    }

    /// Drains a node: cordons it and moves its VMs away, at most
    /// `parallel` at a time, until `deadline_ms` from now (0s: defaults).
    pub async fn drain_node(
        &mut self,
        node_id: u64,
        deadline_ms: u64,
        parallel: u32,
    ) -> Result<pb::Node, ClientError> {
        let id = self.next_request_id();
        self.call(|ch| {
            let req = with_id(
                pb::DrainNodeRequest {
                    node_id,
                    deadline_ms,
                    parallel,
                },
                &id,
            );
            async move { NodeServiceClient::new(ch).drain_node(req).await }
        })
        .await?
        .node
        .ok_or_else(|| missing("node"))
    }

    /// Moves a VM to `to_node_id` (0: the scheduler's pick), stopping it
    /// first.
    pub async fn migrate_vm(
        &mut self,
        name: &str,
        to_node_id: u64,
        live: bool,
    ) -> Result<pb::Vm, ClientError> {
        let name = name.to_string();
        let id = self.next_request_id();
        self.call(|ch| {
            let req = with_id(
                pb::MigrateVmRequest {
                    name: name.clone(),
                    to_node_id,
                    live,
                },
                &id,
            );
            async move { VmServiceClient::new(ch).migrate_vm(req).await }
        })
        .await?
        .vm
        .ok_or_else(|| missing("vm"))
    }

    /// The placement engine's whole decision for a VM.
    pub async fn explain_vm(
        &mut self,
        name: &str,
        consistency: pb::Consistency,
    ) -> Result<pb::ExplainVmResponse, ClientError> {
        let name = name.to_string();
        self.call(|ch| {
            let req = pb::ExplainVmRequest {
                name: name.clone(),
                consistency: consistency as i32,
            };
            async move { VmServiceClient::new(ch).explain_vm(req).await }
        })
        .await
    }

    /// Allows placing VMs on a node again.
    pub async fn uncordon_node(&mut self, node_id: u64) -> Result<pb::Node, ClientError> {
        let id = self.next_request_id();
        self.call(|ch| {
            let req = with_id(pb::UncordonNodeRequest { node_id }, &id);
            async move { NodeServiceClient::new(ch).uncordon_node(req).await }
        })
        .await?
        .node
        .ok_or_else(|| missing("node"))
    }

    /// The cluster's status.
    pub async fn status(
        &mut self,
        consistency: pb::Consistency,
    ) -> Result<pb::ClusterStatus, ClientError> {
        self.call(|ch| async move {
            ClusterServiceClient::new(ch)
                .get_status(pb::GetStatusRequest {
                    consistency: consistency as i32,
                })
                .await
        })
        .await
    }

    /// Hands leadership to `to` (or the most up-to-date voter); returns the new leader.
    pub async fn transfer_leadership(&mut self, to: Option<u64>) -> Result<u64, ClientError> {
        self.call(|ch| async move {
            ClusterServiceClient::new(ch)
                .transfer_leadership(pb::TransferLeadershipRequest {
                    to_node_id: to.unwrap_or(0),
                })
                .await
        })
        .await
        .map(|r| r.new_leader_id)
    }

    /// Removes a node from the cluster.
    pub async fn remove_node(&mut self, node_id: u64) -> Result<(), ClientError> {
        let id = self.next_request_id();
        self.call(|ch| {
            let req = with_id(pb::RemoveNodeRequest { node_id }, &id);
            async move { ClusterServiceClient::new(ch).remove_node(req).await }
        })
        .await
        .map(|_| ())
    }

    /// Opens the leader's backup stream (through any member): the chunks
    /// of one backup file, in order.
    pub async fn backup(&mut self) -> Result<tonic::Streaming<pb::BackupChunk>, ClientError> {
        self.call(|ch| async move {
            ClusterServiceClient::new(ch)
                .backup(pb::BackupRequest {})
                .await
        })
        .await
    }
}
