//! VM console logs: served from the console log file on the owning node,
//! relayed by any other node. History is the last N lines (bounded), then,
//! with follow, new bytes as the file grows (rotation is noticed and the
//! stream continues from the start of the new file).
//!
//! Every stream holds a slot under the node's caps (see `slots`) until it
//! ends. A relay goes only to the owner's address in the Raft membership:
//! the request names a VM, never an address, so no caller can point this
//! node at an address of its choosing.

use super::slots::{StreamCaps, StreamSlot};
use crate::backend::supervisor::log_base;
use crate::core::Core;
use crate::security::Caller;
use blixard_shared::limits::MAX_TAIL_LINES;
use blixard_shared::proto::v1 as pb;
use blixard_shared::proto::v1::vm_service_client::VmServiceClient;
use futures_util::{Stream, StreamExt};
use openraft::async_runtime::WatchReceiver;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tonic::Status;

/// Default and largest number of history lines.
pub const DEFAULT_TAIL_LINES: u32 = 100;
/// Most bytes of history read from the end of the file.
const MAX_HISTORY_BYTES: u64 = 8 * 1024 * 1024;
/// Bytes per streamed chunk.
const CHUNK_BYTES: usize = 64 * 1024;
/// How often a followed log is checked for new output.
const FOLLOW_POLL: Duration = Duration::from_millis(200);
/// Chunks buffered per stream before the reader waits for the client.
const STREAM_BUFFER: usize = 16;
/// Marks a request relayed by another node (one hop at most).
const RELAYED_KEY: &str = "x-blixard-relayed";

/// The stream type of `StreamVmLogs`.
pub type LogStream = Pin<Box<dyn Stream<Item = Result<pb::LogChunk, Status>> + Send + 'static>>;

/// Where `name`'s console log lives under a node's data dir.
pub fn console_log_path(data_dir: &Path, name: &str) -> PathBuf {
    data_dir.join("vms").join(name).join("console.log")
}

/// The last `lines` lines of `path` (at most [`MAX_HISTORY_BYTES`]), and
/// the file offset after them.
fn read_tail(path: &Path, lines: u32) -> std::io::Result<(Vec<u8>, u64)> {
    let (mut buf, len) = crate::backend::supervisor::tail_bytes(path, MAX_HISTORY_BYTES)?;
    let end = buf.len();
    // Skip a trailing newline so "N lines" counts the last complete line.
    let mut newlines = 0u32;
    let mut cut = 0;
    let scan_end = if buf.last() == Some(&b'\n') {
        end - 1
    } else {
        end
    };
    for i in (0..scan_end).rev() {
        if buf[i] == b'\n' {
            newlines += 1;
            if newlines == lines {
                cut = i + 1;
                break;
            }
        }
    }
    Ok((buf.split_off(cut), len))
}

/// Serves the log of a VM owned by this node.
pub async fn local_stream(
    core: &Core,
    name: &str,
    follow: bool,
    tail_lines: u32,
) -> Result<LogStream, Status> {
    let path = console_log_path(&core.config.data_dir, name);
    // Up to 8 MiB of file: read off the runtime's threads.
    let tail_path = path.clone();
    let read = tokio::task::spawn_blocking(move || read_tail(&tail_path, tail_lines))
        .await
        .map_err(|e| Status::internal(format!("reading the console log: {e}")))?;
    let (history, physical) = read.map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => {
            Status::not_found(format!("vm {name:?} has no console log on this node yet"))
        }
        _ => Status::internal(format!("reading the console log: {e}")),
    })?;
    let mut offset = log_base(&path).saturating_add(physical);
    let (tx, rx) = tokio::sync::mpsc::channel(STREAM_BUFFER);
    let mut shutdown = core.shutdown.clone();
    tokio::spawn(async move {
        for chunk in history.chunks(CHUNK_BYTES) {
            if tx
                .send(Ok(pb::LogChunk {
                    data: chunk.to_vec(),
                }))
                .await
                .is_err()
            {
                return;
            }
        }
        if !follow {
            return;
        }
        loop {
            tokio::select! {
                _ = tokio::time::sleep(FOLLOW_POLL) => {}
                // The shutdown flag only ever changes to true.
                _ = shutdown.recv() => {
                    let _ = tx.send(Err(Status::unavailable("node is shutting down"))).await;
                    return;
                }
                _ = tx.closed() => return,
            }
            let len = match std::fs::metadata(&path) {
                Ok(m) => m.len(),
                // The VM was deleted and its files removed: the log is over.
                Err(_) => return,
            };
            // Positions are in the whole log: rotation removes the file's
            // head and counts it in the base (see `supervisor::rotate`).
            let base = log_base(&path);
            offset = follow_position(offset, base);
            while let Some(physical) = unread(offset, base, len) {
                let chunk = match read_at(&path, physical, CHUNK_BYTES) {
                    Ok(c) if !c.is_empty() => c,
                    _ => break,
                };
                offset += chunk.len() as u64;
                if tx.send(Ok(pb::LogChunk { data: chunk })).await.is_err() {
                    return;
                }
            }
        }
    });
    Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
}

/// Where a follower at position `offset` of the whole log goes on when
/// rotation has removed `base` bytes from the file's head: bytes removed
/// before it read them are skipped (it was slower than rotation).
fn follow_position(offset: u64, base: u64) -> u64 {
    offset.max(base)
}

/// The file position to read next for a follower at `offset` of the whole
/// log, or `None` when it has read everything: also while a rotation is
/// between its cut and its count (the file looks shorter than the base
/// says), so nothing is read twice.
fn unread(offset: u64, base: u64, len: u64) -> Option<u64> {
    (offset < base.saturating_add(len)).then(|| offset - base)
}

fn read_at(path: &Path, offset: u64, max: usize) -> std::io::Result<Vec<u8>> {
    let mut f = std::fs::File::open(path)?;
    f.seek(SeekFrom::Start(offset))?;
    let mut buf = Vec::with_capacity(max);
    f.take(max as u64).read_to_end(&mut buf)?;
    Ok(buf)
}

/// Serves `StreamVmLogs`: locally when this node owns the VM, otherwise by
/// relaying from the owner; the stream holds a slot under `caps` (taken
/// first, before any work) for as long as it lives.
pub async fn stream(
    core: Arc<Core>,
    caps: &StreamCaps,
    req: tonic::Request<pb::StreamVmLogsRequest>,
) -> Result<LogStream, Status> {
    let slot = caps.acquire(&Caller::of(&req))?;
    let stream = open(core, req).await?;
    Ok(holding(stream, slot))
}

/// `stream`, giving `slot` back when it is dropped (ended, or its client
/// gone: the server drops a response stream whose client went away).
fn holding(stream: LogStream, slot: StreamSlot) -> LogStream {
    Box::pin(stream.map(move |item| {
        let _held = &slot;
        item
    }))
}

/// The address of member `id` in this node's view of the Raft membership.
fn member_address(core: &Core, id: u64) -> Option<String> {
    let metrics = core.raft.metrics();
    let m = metrics.borrow_watched();
    m.membership_config
        .membership()
        .get_node(&id)
        .map(|n| n.addr.clone())
}

/// The log stream itself (see [`stream`]).
async fn open(
    core: Arc<Core>,
    req: tonic::Request<pb::StreamVmLogsRequest>,
) -> Result<LogStream, Status> {
    let relayed = req.metadata().contains_key(RELAYED_KEY);
    let req = req.into_inner();
    blixard_shared::validate::vm_name(&req.name)?;
    let tail = match req.tail_lines {
        0 => DEFAULT_TAIL_LINES,
        n if n > MAX_TAIL_LINES => {
            return Err(Status::invalid_argument(format!(
                "tail_lines: at most {MAX_TAIL_LINES}"
            )))
        }
        n => n,
    };
    let owner = {
        let fleet = core.view.read();
        let vm = fleet
            .vms
            .get(&req.name)
            .ok_or_else(|| Status::not_found(format!("vm {:?} not found", req.name)))?;
        vm.node_id
    };
    if owner == 0 {
        return Err(Status::failed_precondition(format!(
            "vm {:?} is not placed on any node yet, so it has no console",
            req.name
        )));
    }
    if owner == core.id {
        return local_stream(&core, &req.name, req.follow, tail).await;
    }
    if relayed {
        return Err(Status::unavailable(
            "the vm moved while its logs were being relayed; retry",
        ));
    }
    // The membership's address, not one from the request or a record a
    // departed node left: the pool keeps channels to members only.
    let addr = member_address(&core, owner).ok_or_else(|| {
        Status::unavailable(format!(
            "node {owner} is not a member of the cluster, so its logs cannot be relayed"
        ))
    })?;
    let channel = core
        .pool
        .channel(&addr)
        .map_err(|e| Status::unavailable(format!("node {owner} at {addr}: {e}")))?;
    let mut relay = tonic::Request::new(pb::StreamVmLogsRequest {
        name: req.name,
        follow: req.follow,
        tail_lines: tail,
    });
    relay.metadata_mut().insert(
        RELAYED_KEY,
        tonic::metadata::MetadataValue::from_static("1"),
    );
    let upstream = VmServiceClient::new(channel)
        .stream_vm_logs(relay)
        .await?
        .into_inner();
    // Ends when this node stops, like a local stream: a relay the owner
    // keeps feeding would otherwise hold up this node's shutdown for ever.
    let stopping = core.shutdown.signal();
    Ok(Box::pin(futures_util::StreamExt::take_until(
        upstream, stopping,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_follower_reads_each_byte_once_across_rotation() {
        // 100 bytes read; rotation removed 64 of them from the file's head.
        assert_eq!(unread(100, 64, 36), None, "nothing new");
        assert_eq!(unread(100, 64, 50), Some(36), "new bytes start at 36");
        // Between the cut (file shorter) and the count (base not yet moved).
        assert_eq!(unread(100, 0, 36), None);
        // A follower slower than rotation skips what was moved aside.
        assert_eq!(follow_position(10, 64), 64);
        assert_eq!(unread(follow_position(10, 64), 64, 5), Some(0));
    }

    #[test]
    fn tails_the_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("console.log");
        std::fs::write(&p, "a\nb\nc\nd\n").unwrap();
        assert_eq!(read_tail(&p, 2).unwrap(), (b"c\nd\n".to_vec(), 8));
        assert_eq!(read_tail(&p, 10).unwrap().0, b"a\nb\nc\nd\n".to_vec());
        std::fs::write(&p, "a\nb\npartial").unwrap();
        assert_eq!(read_tail(&p, 1).unwrap().0, b"partial".to_vec());
    }
}
