//! The client side of Raft traffic: one pooled, multiplexed gRPC channel per
//! peer, reused by every replication stream, vote and snapshot to it.
//! Deadlines come from openraft's `RPCOption`; retry pacing is openraft's
//! backoff (`Config::backoff`).

use super::{Snapshot, TypeConfig, Vote};
use blixard_shared::limits::{MAX_PEER_MESSAGE_BYTES, SNAPSHOT_CHUNK_BYTES};
use blixard_shared::proto::v1::raft_service_client::RaftServiceClient;
use blixard_shared::proto::v1::{RaftPayload, SnapshotChunk};
use openraft::errors::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::{BasicNode, OptionalSend};
use serde::{de::DeserializeOwned, Serialize};
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};

/// Time allowed to open a connection to a peer.
const PEER_CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// Pool of channels to peers, keyed by address. Shared by the Raft network
/// and by the API's forwarding to the leader.
#[derive(Clone, Default)]
pub struct PeerPool {
    channels: Arc<Mutex<HashMap<String, Channel>>>,
}

impl PeerPool {
    /// The channel to `address`, created (lazily connecting) on first use.
    pub fn channel(&self, address: &str) -> Result<Channel, tonic::transport::Error> {
        let mut map = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(ch) = map.get(address) {
            return Ok(ch.clone());
        }
        let ch = Endpoint::from_shared(format!("http://{address}"))?
            .connect_timeout(PEER_CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5))
            .connect_lazy();
        map.insert(address.to_string(), ch.clone());
        Ok(ch)
    }

    /// A Raft service client for `address`, with peer-sized message limits.
    pub fn raft_client(
        &self,
        address: &str,
    ) -> Result<RaftServiceClient<Channel>, tonic::transport::Error> {
        Ok(RaftServiceClient::new(self.channel(address)?)
            .max_decoding_message_size(MAX_PEER_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_PEER_MESSAGE_BYTES))
    }
}

/// Creates per-peer network clients for openraft.
#[derive(Clone)]
pub struct Network {
    pool: PeerPool,
}

impl Network {
    /// A network over `pool`.
    pub fn new(pool: PeerPool) -> Self {
        Self { pool }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> Self::Network {
        PeerClient {
            target,
            address: node.addr.clone(),
            pool: self.pool.clone(),
        }
    }
}

/// Raft RPCs to one peer.
pub struct PeerClient {
    target: u64,
    address: String,
    pool: PeerPool,
}

/// Maps a transport failure to openraft's error: connection failures are
/// `Unreachable` (long backoff), everything else a `NetworkError`.
fn rpc_error(status: &tonic::Status) -> RPCError<TypeConfig> {
    match status.code() {
        tonic::Code::Unavailable | tonic::Code::Unknown => RPCError::Unreachable(
            Unreachable::from_string(format!("{:?}: {}", status.code(), status.message())),
        ),
        _ => RPCError::Network(NetworkError::from_string(format!(
            "{:?}: {}",
            status.code(),
            status.message()
        ))),
    }
}

fn encode<T: Serialize>(value: &T) -> Result<RaftPayload, RPCError<TypeConfig>> {
    serde_json::to_vec(value)
        .map(|data| RaftPayload { data })
        .map_err(|e| RPCError::Network(NetworkError::from_string(format!("encoding request: {e}"))))
}

fn decode<T: DeserializeOwned>(payload: RaftPayload) -> Result<T, RPCError<TypeConfig>> {
    serde_json::from_slice(&payload.data).map_err(|e| {
        RPCError::Network(NetworkError::from_string(format!("decoding response: {e}")))
    })
}

impl PeerClient {
    fn client(&self) -> Result<RaftServiceClient<Channel>, RPCError<TypeConfig>> {
        self.pool.raft_client(&self.address).map_err(|e| {
            RPCError::Unreachable(Unreachable::from_string(format!(
                "bad peer address {}: {e}",
                self.address
            )))
        })
    }

    async fn unary<Req, Resp, F, Fut>(
        &self,
        req: &Req,
        option: &RPCOption,
        call: F,
    ) -> Result<Resp, RPCError<TypeConfig>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        F: FnOnce(RaftServiceClient<Channel>, tonic::Request<RaftPayload>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<RaftPayload>, tonic::Status>>,
    {
        let mut request = tonic::Request::new(encode(req)?);
        request.set_timeout(option.soft_ttl());
        let client = self.client()?;
        match tokio::time::timeout(option.hard_ttl(), call(client, request)).await {
            Ok(Ok(resp)) => decode(resp.into_inner()),
            Ok(Err(status)) => Err(rpc_error(&status)),
            Err(_) => Err(RPCError::Network(NetworkError::from_string(format!(
                "no answer from node {} within {:?}",
                self.target,
                option.hard_ttl()
            )))),
        }
    }
}

/// The result a peer's Raft service sends back, errors included, so a
/// remote Raft error is told apart from a transport failure.
pub type Remote<T> = Result<T, String>;

fn flatten<T>(r: Result<Remote<T>, RPCError<TypeConfig>>) -> Result<T, RPCError<TypeConfig>> {
    match r {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(msg)) => Err(RPCError::Network(NetworkError::from_string(msg))),
        Err(e) => Err(e),
    }
}

impl RaftNetworkV2<TypeConfig> for PeerClient {
    type SnapshotData = Vec<u8>;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        flatten(
            self.unary(&rpc, &option, |mut c, r| async move {
                c.append_entries(r).await
            })
            .await,
        )
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        flatten(
            self.unary(&rpc, &option, |mut c, r| async move { c.vote(r).await })
                .await,
        )
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        flatten(
            self.unary(&rpc, &option, |mut c, r| async move { c.pre_vote(r).await })
                .await,
        )
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        flatten(
            self.unary(&req, &option, |mut c, r| async move {
                c.transfer_leader(r).await
            })
            .await,
        )
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let header = serde_json::to_vec(&(vote, &snapshot.meta)).map_err(|e| {
            StreamingError::Network(NetworkError::from_string(format!(
                "encoding snapshot header: {e}"
            )))
        })?;
        let data = snapshot.snapshot;
        let mut chunks = Vec::with_capacity(data.len() / SNAPSHOT_CHUNK_BYTES + 1);
        let mut first = true;
        let mut rest = data.as_slice();
        while first || !rest.is_empty() {
            let n = rest.len().min(SNAPSHOT_CHUNK_BYTES);
            chunks.push(SnapshotChunk {
                header: if first { header.clone() } else { Vec::new() },
                data: rest[..n].to_vec(),
            });
            rest = &rest[n..];
            first = false;
        }
        tracing::info!(
            target_node = self.target,
            chunks = chunks.len(),
            bytes = data.len(),
            "sending snapshot"
        );
        let mut client = self.client()?;
        let send = async move {
            client
                .install_snapshot(tokio_stream::iter(chunks))
                .await
                .map_err(|s| StreamingError::from(rpc_error(&s)))
        };
        let resp = tokio::select! {
            r = send => r?,
            closed = cancel => return Err(StreamingError::Closed(closed)),
        };
        let remote: Remote<SnapshotResponse<TypeConfig>> =
            serde_json::from_slice(&resp.into_inner().data).map_err(|e| {
                StreamingError::Network(NetworkError::from_string(format!(
                    "decoding snapshot response: {e}"
                )))
            })?;
        remote.map_err(|msg| StreamingError::Network(NetworkError::from_string(msg)))
    }
}
