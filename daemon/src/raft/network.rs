//! The client side of Raft traffic: one pooled, multiplexed gRPC channel per
//! peer, reused by every replication stream, vote and snapshot to it.
//! Deadlines come from openraft's `RPCOption`; retry pacing is openraft's
//! backoff (`Config::backoff`). Replication is streamed: openraft's stream
//! of AppendEntries requests rides one long-lived `StreamAppend` call instead
//! of one gRPC call per request (see `stream_append` below).

use super::{Snapshot, TypeConfig, Vote};
use crate::metrics::{Limit, Metrics};
use blixard_shared::limits::{MAX_PEER_CHANNELS, MAX_PEER_MESSAGE_BYTES, SNAPSHOT_CHUNK_BYTES};
use blixard_shared::proto::v1::raft_service_client::RaftServiceClient;
use blixard_shared::proto::v1::{RaftPayload, SnapshotChunk};
use futures_util::{Stream, StreamExt};
use openraft::base::{BoxFuture, BoxStream};
use openraft::errors::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{stream_append_sequential, RPCOption, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, StreamAppendResult,
    TransferLeaderRequest, TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::{BasicNode, OptionalSend};
use serde::{de::DeserializeOwned, Serialize};
use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

/// Time allowed to open a connection to a peer.
const PEER_CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// Pool of channels to peers, keyed by address. Shared by the Raft network
/// and by the API's forwarding to the leader and log relays, which all take
/// their addresses from the Raft membership (never from a caller). With TLS
/// every channel trusts only the cluster CA and presents this node's
/// certificate.
///
/// Bounded: a task of the node (`server/loops.rs`) drops every address that
/// leaves the membership ([`PeerPool::retain_members`]), and the pool holds
/// at most [`MAX_PEER_CHANNELS`]; a new address past it evicts the channel
/// used least recently (which reconnects on its next use).
#[derive(Clone)]
pub struct PeerPool {
    channels: Arc<Mutex<HashMap<String, Pooled>>>,
    tls: Option<ClientTlsConfig>,
    max: usize,
    metrics: Metrics,
    /// The simulation's network and this node's address on it, when the
    /// node runs in one (tests); TCP otherwise.
    sim: Option<(crate::sim::net::SimNet, std::net::SocketAddr)>,
}

/// A pooled channel and when it was last handed out.
struct Pooled {
    channel: Channel,
    used: Instant,
}

impl Default for PeerPool {
    fn default() -> Self {
        Self::new(None, Metrics::default())
    }
}

impl PeerPool {
    /// A pool whose channels use `tls` (`None`: plaintext, `--insecure`),
    /// counting evictions in `metrics`.
    pub fn new(tls: Option<ClientTlsConfig>, metrics: Metrics) -> Self {
        Self::with_max(tls, MAX_PEER_CHANNELS, metrics)
    }

    /// Like [`PeerPool::new`], holding at most `max` channels.
    pub fn with_max(tls: Option<ClientTlsConfig>, max: usize, metrics: Metrics) -> Self {
        Self {
            channels: Arc::default(),
            tls,
            max: max.max(1),
            metrics,
            sim: None,
        }
    }

    /// This pool dialling over a simulation's network from `local`.
    pub fn over_sim(mut self, net: crate::sim::net::SimNet, local: std::net::SocketAddr) -> Self {
        self.sim = Some((net, local));
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Pooled>> {
        self.channels.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The channel to `address`, created (lazily connecting) on first use.
    pub fn channel(&self, address: &str) -> Result<Channel, tonic::transport::Error> {
        let mut map = self.lock();
        if let Some(pooled) = map.get_mut(address) {
            pooled.used = Instant::now();
            return Ok(pooled.channel.clone());
        }
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let mut endpoint = Endpoint::from_shared(format!("{scheme}://{address}"))?;
        if let Some(tls) = &self.tls {
            endpoint = endpoint.tls_config(tls.clone())?;
        }
        let endpoint = endpoint
            .connect_timeout(PEER_CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(crate::transport::HTTP2_KEEPALIVE_INTERVAL)
            .keep_alive_timeout(crate::transport::HTTP2_KEEPALIVE_TIMEOUT);
        let ch = match &self.sim {
            None => endpoint.connect_lazy(),
            Some((net, local)) => endpoint.connect_with_connector_lazy(net.connector(*local)),
        };
        if map.len() >= self.max {
            let oldest = map
                .iter()
                .min_by_key(|(_, p)| p.used)
                .map(|(a, _)| a.clone());
            if let Some(evicted) = oldest {
                map.remove(&evicted);
                self.metrics.limit_hit(Limit::PeerChannels);
                tracing::info!(%evicted, max = self.max, "peer pool full: evicted the channel used least recently");
            }
        }
        map.insert(
            address.to_string(),
            Pooled {
                channel: ch.clone(),
                used: Instant::now(),
            },
        );
        Ok(ch)
    }

    /// Drops the channels to every address not in `members` (the current
    /// membership's addresses); returns how many were dropped. Calls in
    /// progress on a dropped channel finish (they hold their own handle).
    pub fn retain_members(&self, members: &HashSet<String>) -> usize {
        let mut map = self.lock();
        let before = map.len();
        map.retain(|address, _| members.contains(address));
        let dropped = before - map.len();
        if dropped > 0 {
            tracing::debug!(
                dropped,
                kept = map.len(),
                "peer pool: dropped addresses no longer in the membership"
            );
        }
        dropped
    }

    /// The addresses the pool holds channels to, sorted.
    pub fn addresses(&self) -> Vec<String> {
        let mut addresses: Vec<String> = self.lock().keys().cloned().collect();
        addresses.sort();
        addresses
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
            stream_unsupported: None,
        }
    }
}

/// Raft RPCs to one peer.
pub struct PeerClient {
    target: u64,
    address: String,
    pool: PeerPool,
    /// When the peer answered `StreamAppend` with `Unimplemented` (a daemon
    /// from before streamed replication): for [`STREAM_RETRY_AFTER`] after
    /// that, one AppendEntries call per request.
    stream_unsupported: Option<Instant>,
}

/// How long a peer without `StreamAppend` gets plain AppendEntries calls
/// before streaming is tried again (it may have been upgraded since). Each
/// try costs one failed replication call.
const STREAM_RETRY_AFTER: Duration = Duration::from_secs(60);

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

fn network_error(message: String) -> RPCError<TypeConfig> {
    RPCError::Network(NetworkError::from_string(message))
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

/// AppendEntries requests one `StreamAppend` call keeps in flight. One is
/// fastest on the 2-core benchmark host (windows of 1, 2, 4 and 64 were
/// measured, see `docs/benchmarks.md`): the leader is CPU-bound there, and a
/// wider window only sends more, smaller messages, where one request carries
/// everything proposed while the previous was answered. Links with long
/// round trips would favour a wider window; none was measured. A wider
/// window also needs the request half driven by a task of its own: with one
/// request in flight the transport is never waiting for send room while
/// the request half waits inside openraft (holding its replication state),
/// so ending the request half when the answers end always takes effect.
const APPENDS_IN_FLIGHT: usize = 1;

/// Answers of one `StreamAppend` call as openraft consumes them.
type AppendResults<'s> =
    BoxStream<'s, Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>>>;

/// What the two halves of one `StreamAppend` call share.
struct InFlight {
    /// When each request still waiting for its answer left, oldest first.
    /// The follower answers in order, so each answer settles the oldest.
    sent: Mutex<VecDeque<Instant>>,
    /// Room for [`APPENDS_IN_FLIGHT`] unanswered requests; an answer gives
    /// its slot back.
    window: tokio::sync::Semaphore,
    /// When openraft's request stream ended: the follower then owes the end
    /// of its answers, and openraft's next call waits for it.
    ended: Mutex<Option<Instant>>,
}

impl InFlight {
    fn sent(&self) -> std::sync::MutexGuard<'_, VecDeque<Instant>> {
        self.sent.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn ended(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        self.ended.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Since when the follower has owed something (an answer, or the end of
    /// its answers), if it owes anything.
    fn owed_since(&self) -> Option<Instant> {
        self.sent().front().copied().or(*self.ended())
    }
}

/// The request half of a `StreamAppend` call: `first`, then `rest`, each
/// waiting for a slot in the window. It ends when `answers_gone` fires (the
/// answer half ended or was dropped): the HTTP/2 transport pumps a request
/// stream until it ends, and one left waiting for openraft's next entries
/// would hold openraft's replication state from the next call.
fn append_requests<S>(
    first: AppendEntriesRequest<TypeConfig>,
    rest: S,
    in_flight: Arc<InFlight>,
    answers_gone: tokio::sync::oneshot::Receiver<()>,
    target: u64,
) -> impl Stream<Item = RaftPayload> + Send + 'static
where
    S: Stream<Item = AppendEntriesRequest<TypeConfig>> + Send + 'static,
{
    let all = Box::pin(futures_util::stream::once(async move { first }).chain(rest));
    futures_util::stream::unfold((all, in_flight), move |(mut all, in_flight)| async move {
        in_flight.window.acquire().await.ok()?.forget();
        let Some(req) = all.next().await else {
            *in_flight.ended() = Some(Instant::now());
            return None;
        };
        match serde_json::to_vec(&req) {
            Ok(data) => {
                in_flight.sent().push_back(Instant::now());
                Some((RaftPayload { data }, (all, in_flight)))
            }
            // Cannot happen for these types; if it did, ending the requests
            // lets the follower answer what it got, and openraft resends
            // the rest.
            Err(e) => {
                tracing::error!(target_node = target, error = %e, "cannot encode AppendEntries");
                None
            }
        }
    })
    .take_until(answers_gone)
}

impl PeerClient {
    /// Opens a `StreamAppend` call carrying `first` and then `rest`.
    async fn open_append_stream<S>(
        &mut self,
        first: AppendEntriesRequest<TypeConfig>,
        rest: S,
        option: &RPCOption,
    ) -> Result<AppendResults<'static>, RPCError<TypeConfig>>
    where
        S: Stream<Item = AppendEntriesRequest<TypeConfig>> + Send + 'static,
    {
        let in_flight = Arc::new(InFlight {
            sent: Mutex::new(VecDeque::with_capacity(APPENDS_IN_FLIGHT)),
            window: tokio::sync::Semaphore::new(APPENDS_IN_FLIGHT),
            ended: Mutex::new(None),
        });
        let (answers_alive, answers_gone) = tokio::sync::oneshot::channel();
        let requests = append_requests(first, rest, in_flight.clone(), answers_gone, self.target);
        let mut client = self.client()?;
        let opened = tokio::time::timeout(option.soft_ttl(), client.stream_append(requests)).await;
        let answers = match opened {
            Ok(Ok(resp)) => resp.into_inner(),
            Ok(Err(status)) if status.code() == tonic::Code::Unimplemented => {
                tracing::info!(
                    target_node = self.target,
                    "peer has no StreamAppend (an older daemon); replicating one request at a time"
                );
                self.stream_unsupported = Some(Instant::now());
                return Err(network_error(format!(
                    "node {} does not support StreamAppend",
                    self.target
                )));
            }
            Ok(Err(status)) => return Err(rpc_error(&status)),
            Err(_) => {
                return Err(network_error(format!(
                    "node {} did not open StreamAppend within {:?}",
                    self.target,
                    option.soft_ttl()
                )))
            }
        };
        let answers = AnswerHalf {
            answers,
            last_answer: Instant::now(),
            _alive: answers_alive,
        };
        Ok(Box::pin(append_answers(
            answers,
            in_flight,
            option.soft_ttl(),
            self.target,
        )))
    }
}

/// The answer half of a `StreamAppend` call. Dropping it (the stream ended,
/// failed, or openraft let go of it) ends the request half too.
struct AnswerHalf {
    answers: tonic::Streaming<RaftPayload>,
    last_answer: Instant,
    _alive: tokio::sync::oneshot::Sender<()>,
}

/// Turns the follower's answers into openraft's results, in order. Fails the
/// stream when the follower makes no progress: an answer (or the end of the
/// answers) owed for longer than `ttl` since it became owed and since the
/// previous answer. Ends after a refusal (conflict, higher vote), as
/// openraft expects, without giving the refused request's slot back.
fn append_answers(
    half: AnswerHalf,
    in_flight: Arc<InFlight>,
    ttl: Duration,
    target: u64,
) -> impl Stream<Item = Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>>> + Send + 'static
{
    futures_util::stream::unfold(Some(half), move |half| {
        let in_flight = in_flight.clone();
        async move {
            let mut half = half?;
            let next = loop {
                match tokio::time::timeout(ttl, half.answers.next()).await {
                    Ok(next) => break next,
                    Err(_) => {
                        let owed = in_flight.owed_since();
                        if owed.is_some_and(|t| t.max(half.last_answer).elapsed() >= ttl) {
                            let e = network_error(format!(
                                "node {target} made no progress on StreamAppend within {ttl:?}"
                            ));
                            return Some((Err(e), None));
                        }
                    }
                }
            };
            let result = match next? {
                Err(status) => Err(rpc_error(&status)),
                Ok(payload) => {
                    in_flight.sent().pop_front();
                    half.last_answer = Instant::now();
                    flatten(decode::<Remote<StreamAppendResult<TypeConfig>>>(payload))
                }
            };
            // Only an accepted request frees its slot: after a refusal or
            // an error nothing more may be sent on this call.
            let accepted = matches!(result, Ok(Ok(_)));
            if accepted {
                in_flight.window.add_permits(1);
            }
            Some((result, accepted.then_some(half)))
        }
    })
}

impl RaftNetworkV2<TypeConfig> for PeerClient {
    type SnapshotData = Vec<u8>;

    /// Replication over one `StreamAppend` call, at most
    /// [`APPENDS_IN_FLIGHT`] requests unanswered (plain calls for a while to
    /// a peer without it). A lone request
    /// (openraft's heartbeats come as one-item streams) goes as a plain
    /// AppendEntries instead: cheaper than opening a stream for it.
    fn stream_append<'s, S>(
        &'s mut self,
        input: S,
        option: RPCOption,
    ) -> BoxFuture<'s, Result<AppendResults<'s>, RPCError<TypeConfig>>>
    where
        S: Stream<Item = AppendEntriesRequest<TypeConfig>> + OptionalSend + Unpin + 'static,
    {
        if self
            .stream_unsupported
            .is_some_and(|at| at.elapsed() < STREAM_RETRY_AFTER)
        {
            return stream_append_sequential(self, input, option);
        }
        Box::pin(async move {
            let mut input = input;
            let Some(first) = input.next().await else {
                return Ok(Box::pin(futures_util::stream::empty()) as AppendResults<'s>);
            };
            if input.size_hint().1 == Some(0) {
                let lone = futures_util::stream::iter([first]);
                return stream_append_sequential(self, lone, option).await;
            }
            let answers = self.open_append_stream(first, input, &option).await?;
            Ok(answers as AppendResults<'s>)
        })
    }

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

#[cfg(test)]
mod tests {
    use super::*;
    use blixard_shared::proto::v1::raft_service_server::{RaftService, RaftServiceServer};
    use blixard_shared::proto::v1::{ReadIndexRequest, ReadIndexResponse};
    use openraft::raft::StreamAppendError;
    use std::pin::Pin;
    use tonic::{Request, Response, Status, Streaming};

    /// A stand-in peer: answers AppendEntries with success; its
    /// `StreamAppend` is one of [`StreamMode`].
    struct TestPeer {
        stream: StreamMode,
    }

    enum StreamMode {
        /// A daemon from before streamed replication.
        Missing,
        /// A stuck follower: accepts the call and never answers.
        Silent,
        /// Accepts every request but never ends its answers.
        NeverEnds,
        /// Refuses the first request (a higher vote) and stays open.
        Refuses,
    }

    fn answer(result: StreamAppendResult<TypeConfig>) -> Result<RaftPayload, Status> {
        let remote: Remote<StreamAppendResult<TypeConfig>> = Ok(result);
        let data = serde_json::to_vec(&remote).map_err(|e| Status::internal(e.to_string()))?;
        Ok(RaftPayload { data })
    }

    type Answers = Pin<Box<dyn Stream<Item = Result<RaftPayload, Status>> + Send>>;

    #[tonic::async_trait]
    impl RaftService for TestPeer {
        type StreamAppendStream = Answers;

        async fn append_entries(
            &self,
            _req: Request<RaftPayload>,
        ) -> Result<Response<RaftPayload>, Status> {
            let ok: Remote<AppendEntriesResponse<TypeConfig>> = Ok(AppendEntriesResponse::Success);
            let data = serde_json::to_vec(&ok).map_err(|e| Status::internal(e.to_string()))?;
            Ok(Response::new(RaftPayload { data }))
        }

        async fn stream_append(
            &self,
            req: Request<Streaming<RaftPayload>>,
        ) -> Result<Response<Answers>, Status> {
            let requests = req.into_inner();
            match self.stream {
                StreamMode::NeverEnds => Ok(Response::new(Box::pin(
                    requests
                        .map(|_| answer(Ok(None)))
                        .chain(futures_util::stream::pending()),
                ))),
                StreamMode::Refuses => Ok(Response::new(Box::pin(
                    requests
                        .take(1)
                        .map(|_| answer(Err(StreamAppendError::HigherVote(Vote::new(9, 3)))))
                        .chain(futures_util::stream::pending()),
                ))),
                StreamMode::Missing => Err(Status::unimplemented("no StreamAppend here")),
                StreamMode::Silent => Ok(Response::new(Box::pin(futures_util::stream::pending()))),
            }
        }

        async fn vote(&self, _: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
            Err(Status::unimplemented("test peer"))
        }

        async fn pre_vote(&self, _: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
            Err(Status::unimplemented("test peer"))
        }

        async fn transfer_leader(
            &self,
            _: Request<RaftPayload>,
        ) -> Result<Response<RaftPayload>, Status> {
            Err(Status::unimplemented("test peer"))
        }

        async fn install_snapshot(
            &self,
            _: Request<Streaming<SnapshotChunk>>,
        ) -> Result<Response<RaftPayload>, Status> {
            Err(Status::unimplemented("test peer"))
        }

        async fn forward(&self, _: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
            Err(Status::unimplemented("test peer"))
        }

        async fn read_index(
            &self,
            _: Request<ReadIndexRequest>,
        ) -> Result<Response<ReadIndexResponse>, Status> {
            Err(Status::unimplemented("test peer"))
        }
    }

    async fn serve(peer: TestPeer) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let incoming = tonic::transport::server::TcpIncoming::from(listener);
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(RaftServiceServer::new(peer))
                .serve_with_incoming(incoming),
        );
        address
    }

    /// A client for a fresh [`TestPeer`] whose `StreamAppend` is `stream`.
    async fn client_for(stream: StreamMode) -> PeerClient {
        PeerClient {
            target: 2,
            address: serve(TestPeer { stream }).await,
            pool: PeerPool::default(),
            stream_unsupported: None,
        }
    }

    fn heartbeat() -> AppendEntriesRequest<TypeConfig> {
        AppendEntriesRequest {
            vote: Vote::new(1, 1),
            prev_log_id: None,
            leader_commit: None,
            entries: vec![],
        }
    }

    /// Two requests on a stream that stays open, as openraft's replication
    /// stream does (a one-item stream would take the plain path).
    fn replication_stream(
    ) -> impl Stream<Item = AppendEntriesRequest<TypeConfig>> + Send + Unpin + 'static {
        futures_util::stream::iter([heartbeat(), heartbeat()])
            .chain(futures_util::stream::pending())
    }

    #[tokio::test]
    async fn the_pool_keeps_members_only_and_at_most_its_cap() {
        let metrics = Metrics::new();
        let pool = PeerPool::with_max(None, 3, metrics.clone());
        for a in ["10.0.0.1:7000", "10.0.0.2:7000", "10.0.0.3:7000"] {
            pool.channel(a).unwrap();
        }
        // The first is used again, so the second is the least recent.
        pool.channel("10.0.0.1:7000").unwrap();
        pool.channel("10.0.0.4:7000").unwrap();
        assert_eq!(
            pool.addresses(),
            ["10.0.0.1:7000", "10.0.0.3:7000", "10.0.0.4:7000"]
        );
        assert_eq!(metrics.limit_hit_count(Limit::PeerChannels), 1);
        let members: HashSet<String> = ["10.0.0.1:7000".to_string(), "10.0.0.9:7000".to_string()]
            .into_iter()
            .collect();
        assert_eq!(pool.retain_members(&members), 2);
        assert_eq!(pool.addresses(), ["10.0.0.1:7000"]);
    }

    #[tokio::test]
    async fn an_older_peer_gets_one_request_at_a_time() {
        let mut peer = client_for(StreamMode::Missing).await;
        let option = RPCOption::new(Duration::from_secs(5));
        let first = peer
            .stream_append(replication_stream(), option.clone())
            .await
            .map(|_| ());
        assert!(first.is_err(), "the first attempt learns the peer is older");
        assert!(peer.stream_unsupported.is_some());
        let answers = peer
            .stream_append(replication_stream(), option.clone())
            .await
            .unwrap();
        let answers: Vec<_> = answers.take(2).collect().await;
        assert_eq!(answers.len(), 2);
        for answer in answers {
            assert!(matches!(answer, Ok(Ok(_))), "{answer:?}");
        }
        // A minute on, streaming is tried again (the peer may be upgraded).
        peer.stream_unsupported = Instant::now().checked_sub(STREAM_RETRY_AFTER);
        let retried = peer
            .stream_append(replication_stream(), option)
            .await
            .map(|_| ());
        assert!(retried.is_err(), "still older: the retry finds out again");
        assert!(peer
            .stream_unsupported
            .is_some_and(|at| at.elapsed() < STREAM_RETRY_AFTER));
    }

    #[tokio::test]
    async fn a_lone_heartbeat_goes_as_a_plain_request() {
        // The peer would never answer a stream; the heartbeat is answered.
        let mut peer = client_for(StreamMode::Silent).await;
        let option = RPCOption::new(Duration::from_secs(5));
        let lone = Box::pin(futures_util::stream::once(async { heartbeat() }));
        let answers: Vec<_> = peer
            .stream_append(lone, option)
            .await
            .unwrap()
            .collect()
            .await;
        assert_eq!(answers.len(), 1);
        assert!(matches!(answers[0], Ok(Ok(_))), "{:?}", answers[0]);
    }

    #[tokio::test]
    async fn a_follower_that_stops_answering_fails_the_stream() {
        let mut peer = client_for(StreamMode::Silent).await;
        let option = RPCOption::new(Duration::from_millis(200));
        let mut answers = peer
            .stream_append(replication_stream(), option)
            .await
            .unwrap();
        let answer = tokio::time::timeout(Duration::from_secs(10), answers.next())
            .await
            .expect("the stream must fail, not hang");
        match answer {
            Some(Err(e)) => assert!(e.to_string().contains("made no progress"), "{e}"),
            other => panic!("expected a timeout error, got {other:?}"),
        }
        assert!(
            answers.next().await.is_none(),
            "the stream ends after its error"
        );
    }

    /// Tells whoever waits on it when the stream holding it is dropped.
    struct DropSignal(Option<tokio::sync::oneshot::Sender<()>>);

    impl Drop for DropSignal {
        fn drop(&mut self) {
            if let Some(tx) = self.0.take() {
                let _ = tx.send(());
            }
        }
    }

    #[tokio::test]
    async fn requests_end_when_openraft_lets_go_of_the_answers() {
        // Regression: the transport pumps a request stream until it ends,
        // so one waiting for openraft's next entries outlived its call when
        // openraft dropped the answers (after a conflict, say): it held
        // openraft's replication state from the next call and kept the
        // follower's server from stopping (cluster tests hung).
        let mut peer = client_for(StreamMode::Silent).await;
        let (dropped_tx, dropped_rx) = tokio::sync::oneshot::channel();
        let signal = DropSignal(Some(dropped_tx));
        let requests = replication_stream().map(move |req| {
            let _held = &signal;
            req
        });
        let answers = peer
            .stream_append(requests, RPCOption::new(Duration::from_secs(5)))
            .await
            .unwrap();
        drop(answers);
        tokio::time::timeout(Duration::from_secs(10), dropped_rx)
            .await
            .expect("the request stream must be dropped with the answers")
            .unwrap();
    }

    #[tokio::test]
    async fn a_follower_that_never_ends_its_answers_fails_the_stream() {
        // Openraft's next call waits for this one's answers to end.
        let mut peer = client_for(StreamMode::NeverEnds).await;
        let two = futures_util::stream::iter([heartbeat(), heartbeat()]);
        let answers = peer
            .stream_append(two, RPCOption::new(Duration::from_millis(200)))
            .await
            .unwrap();
        let answers: Vec<_> = tokio::time::timeout(Duration::from_secs(10), answers.collect())
            .await
            .expect("the stream must fail, not hang");
        assert_eq!(answers.len(), 3, "{answers:?}");
        assert!(matches!(answers[0], Ok(Ok(_))) && matches!(answers[1], Ok(Ok(_))));
        match &answers[2] {
            Err(e) => assert!(e.to_string().contains("made no progress"), "{e}"),
            other => panic!("expected a timeout error, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_refusal_ends_the_stream() {
        let mut peer = client_for(StreamMode::Refuses).await;
        let answers = peer
            .stream_append(replication_stream(), RPCOption::new(Duration::from_secs(5)))
            .await
            .unwrap();
        let answers: Vec<_> = tokio::time::timeout(Duration::from_secs(10), answers.collect())
            .await
            .expect("a refusal must end the stream");
        assert_eq!(answers.len(), 1, "{answers:?}");
        assert!(
            matches!(answers[0], Ok(Err(StreamAppendError::HigherVote(_)))),
            "{answers:?}"
        );
    }
}
