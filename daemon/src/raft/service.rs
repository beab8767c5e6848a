//! The server side of daemon-to-daemon traffic (`blixard.v1.RaftService`):
//! a thin adapter that decodes each message, hands it to the local Raft or
//! to the node core, and encodes the answer.

use super::network::Remote;
use super::snapshot_inbox::{Incoming, ReceiveError};
use super::{Raft, Snapshot, SnapshotMeta, TypeConfig, Vote};
use crate::core::Core;
use crate::metrics::Limit;
use crate::security::{peer, Caller};
use blixard_shared::limits::{MAX_SNAPSHOT_TRANSFERS, SNAPSHOT_CHUNK_TIMEOUT};
use blixard_shared::proto::v1::raft_service_server::RaftService;
use blixard_shared::proto::v1::{RaftPayload, ReadIndexRequest, ReadIndexResponse, SnapshotChunk};
use futures_util::{Stream, StreamExt};
use openraft::raft::{AppendEntriesRequest, StreamAppendResult};
use serde::{de::DeserializeOwned, Serialize};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use tonic::{Request, Response, Status, Streaming};

/// Receives Raft messages for this node.
pub struct RaftServer {
    core: Arc<Core>,
    /// Snapshot transfers being received ([`MAX_SNAPSHOT_TRANSFERS`]).
    transfers: Arc<tokio::sync::Semaphore>,
}

impl RaftServer {
    /// A server for `core`.
    pub fn new(core: Arc<Core>) -> Self {
        Self {
            core,
            transfers: Arc::new(tokio::sync::Semaphore::new(MAX_SNAPSHOT_TRANSFERS)),
        }
    }

    fn raft(&self) -> &Raft {
        &self.core.raft
    }

    /// Resolves when the node starts to stop; long-lived calls end on it.
    fn stopping(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        self.core.shutdown.signal()
    }
}

fn decode<T: DeserializeOwned>(req: Request<RaftPayload>) -> Result<T, Status> {
    serde_json::from_slice(&req.into_inner().data)
        .map_err(|e| Status::invalid_argument(format!("data: not a valid Raft message: {e}")))
}

fn reply<T: Serialize, E: std::fmt::Display>(
    result: Result<T, E>,
) -> Result<Response<RaftPayload>, Status> {
    let remote: Remote<T> = result.map_err(|e| e.to_string());
    let data = serde_json::to_vec(&remote)
        .map_err(|e| Status::internal(format!("encoding reply: {e}")))?;
    Ok(Response::new(RaftPayload { data }))
}

/// The next chunk of a snapshot transfer, `None` at its end; a sender
/// silent for [`SNAPSHOT_CHUNK_TIMEOUT`] fails it.
async fn next_chunk(
    stream: &mut Streaming<SnapshotChunk>,
    core: &Core,
) -> Result<Option<SnapshotChunk>, Status> {
    match tokio::time::timeout(SNAPSHOT_CHUNK_TIMEOUT, stream.next()).await {
        Ok(next) => next.transpose(),
        Err(_) => {
            core.metrics.limit_hit(Limit::SnapshotChunkTimeout);
            Err(ReceiveError::Stalled(SNAPSHOT_CHUNK_TIMEOUT).into())
        }
    }
}

/// Receives the rest of a transfer after its first chunk's `first` bytes
/// into a file of the inbox (see `snapshot_inbox`), then reads it back:
/// the node never holds more than one chunk of a transfer that passes its
/// `max_snapshot_bytes`.
async fn receive_snapshot(
    core: &Core,
    first: Vec<u8>,
    stream: &mut Streaming<SnapshotChunk>,
) -> Result<Vec<u8>, Status> {
    let cap = core.config.max_snapshot_bytes;
    let refused = |e: ReceiveError| {
        if matches!(e, ReceiveError::TooLarge { .. }) {
            core.metrics.limit_hit(Limit::SnapshotBytes);
        }
        tracing::warn!(error = %e, "snapshot transfer refused");
        Status::from(e)
    };
    let mut incoming = Incoming::create(&core.config.data_dir, cap).map_err(refused)?;
    incoming.append(first).await.map_err(refused)?;
    while let Some(chunk) = next_chunk(stream, core).await? {
        incoming.append(chunk.data).await.map_err(refused)?;
    }
    tracing::debug!(bytes = incoming.bytes(), "snapshot transfer received");
    incoming.into_bytes().await.map_err(refused)
}

/// The answers of one `StreamAppend` call.
pub type AppendAnswerStream = Pin<Box<dyn Stream<Item = Result<RaftPayload, Status>> + Send>>;

/// The first request of a `StreamAppend` call that could not be read; it
/// ends the call after the answers already owed.
type BrokenRequest = Arc<Mutex<Option<Status>>>;

/// Decodes a `StreamAppend` call's requests as they arrive, ending at the
/// first one that cannot be read (its error is left in `broken`).
/// Ends at shutdown too: the request half lives in openraft's task, and the
/// HTTP/2 stream stays open (holding up the server's graceful stop) until
/// it is dropped, even when the leader on the other end has gone silent.
fn append_requests(
    input: Streaming<RaftPayload>,
    caller: Caller,
    broken: BrokenRequest,
    stopping: impl std::future::Future<Output = ()> + Send + 'static,
) -> impl Stream<Item = AppendEntriesRequest<TypeConfig>> + Send + 'static {
    futures_util::stream::unfold(Some(input), move |input| {
        let broken = broken.clone();
        let caller = caller.clone();
        async move {
            let mut input = input?;
            let decoded = match input.next().await? {
                Ok(payload) => serde_json::from_slice(&payload.data)
                    .map_err(|e| {
                        Status::invalid_argument(format!(
                            "data: not a valid AppendEntries request: {e}"
                        ))
                    })
                    .and_then(|rpc: AppendEntriesRequest<TypeConfig>| {
                        peer::check_append(&rpc, &caller).map(|()| rpc)
                    })
                    .inspect_err(|status| {
                        tracing::warn!(error = %status.message(), "StreamAppend request refused; ending the stream");
                    }),
                Err(status) => {
                    // The leader ended the call (a reset after a timeout or
                    // a conflict): routine, not worth a warning.
                    tracing::debug!(error = %status.message(), "StreamAppend ended by the leader");
                    Err(status)
                }
            };
            match decoded {
                Ok(rpc) => Some((rpc, Some(input))),
                Err(status) => {
                    *broken.lock().unwrap_or_else(|p| p.into_inner()) = Some(status);
                    None
                }
            }
        }
    })
    .take_until(stopping)
}

#[tonic::async_trait]
impl RaftService for RaftServer {
    type StreamAppendStream = AppendAnswerStream;

    async fn stream_append(
        &self,
        req: Request<Streaming<RaftPayload>>,
    ) -> Result<Response<Self::StreamAppendStream>, Status> {
        let broken = BrokenRequest::default();
        let caller = Caller::of(&req);
        let requests = append_requests(req.into_inner(), caller, broken.clone(), self.stopping());
        let answers = self.raft().stream_append(requests).map(|result| {
            let remote: Remote<StreamAppendResult<TypeConfig>> =
                result.map_err(|fatal| fatal.to_string());
            serde_json::to_vec(&remote)
                .map(|data| RaftPayload { data })
                .map_err(|e| Status::internal(format!("encoding reply: {e}")))
        });
        let broken = futures_util::stream::once(async move {
            broken.lock().unwrap_or_else(|p| p.into_inner()).take()
        })
        .filter_map(|status| std::future::ready(status.map(Err)));
        Ok(Response::new(Box::pin(
            answers.chain(broken).take_until(self.stopping()),
        )))
    }

    async fn append_entries(
        &self,
        req: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let caller = Caller::of(&req);
        let rpc = decode(req)?;
        peer::check_append(&rpc, &caller)?;
        reply(self.raft().append_entries(rpc).await)
    }

    async fn vote(&self, req: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let caller = Caller::of(&req);
        let rpc = decode(req)?;
        peer::check_vote_request(&rpc, &caller)?;
        reply(self.raft().vote(rpc).await)
    }

    async fn pre_vote(&self, req: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let caller = Caller::of(&req);
        let rpc = decode(req)?;
        peer::check_vote_request(&rpc, &caller)?;
        reply(self.raft().pre_vote(rpc).await)
    }

    async fn transfer_leader(
        &self,
        req: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let caller = Caller::of(&req);
        let rpc = decode(req)?;
        peer::check_transfer(&rpc, &caller)?;
        reply(self.raft().handle_transfer_leader(rpc).await)
    }

    async fn install_snapshot(
        &self,
        req: Request<Streaming<SnapshotChunk>>,
    ) -> Result<Response<RaftPayload>, Status> {
        let caller = Caller::of(&req);
        let mut stream = req.into_inner();
        let first = next_chunk(&mut stream, &self.core)
            .await?
            .ok_or_else(|| Status::invalid_argument("snapshot stream is empty"))?;
        let (vote, meta): (Vote, SnapshotMeta) =
            serde_json::from_slice(&first.header).map_err(|e| {
                Status::invalid_argument(format!("header: not a valid snapshot header: {e}"))
            })?;
        peer::check_snapshot(&vote, &meta, &caller)?;
        // Held until the snapshot is installed (or the call fails).
        let _transfer = self.transfers.clone().try_acquire_owned().map_err(|_| {
            self.core.metrics.limit_hit(Limit::SnapshotTransfers);
            tracing::info!(from = ?caller, "snapshot transfer refused: another is in progress");
            Status::unavailable(format!(
                "snapshot_transfers: this node is already receiving a snapshot (at most {MAX_SNAPSHOT_TRANSFERS} at a time); retry when it ends"
            ))
        })?;
        let data = receive_snapshot(&self.core, first.data, &mut stream).await?;
        tracing::info!(last_log = ?meta.last_log_id, bytes = data.len(), "received snapshot");
        let snapshot = Snapshot {
            meta,
            snapshot: data,
        };
        reply(self.raft().install_full_snapshot(vote, snapshot).await)
    }

    async fn forward(&self, req: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let caller = Caller::of(&req);
        let on_behalf_of = req
            .metadata()
            .get(crate::security::ON_BEHALF_OF_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let cmd: crate::state::Command = decode(req)?;
        peer::check_forward(&cmd.action, &caller)?;
        tracing::debug!(from = ?caller, %on_behalf_of, "forwarded write");
        let outcome = self.core.propose_local(cmd).await?;
        let data = serde_json::to_vec(&outcome)
            .map_err(|e| Status::internal(format!("encoding reply: {e}")))?;
        Ok(Response::new(RaftPayload { data }))
    }

    async fn read_index(
        &self,
        _req: Request<ReadIndexRequest>,
    ) -> Result<Response<ReadIndexResponse>, Status> {
        let index = self.core.read_index_local().await?;
        Ok(Response::new(ReadIndexResponse { index }))
    }
}
