//! `blixard.v1.WatchService`: revision-numbered events, resumable.
//!
//! A watcher has no buffer of its own: it reads the replicated event ring
//! as fast as its client takes events (HTTP/2 flow control paces it). A slow
//! client therefore blocks nobody; if it falls so far behind that the ring
//! has dropped events it has not seen, it is cut off with
//! `ResourceExhausted` and resyncs by listing and watching again.

use super::convert::event_to_pb;
use super::slots::{StreamCaps, StreamSlot};
use crate::core::Core;
use crate::metrics::Limit;
use crate::security::authz::Resource;
use crate::security::Caller;
use crate::state::EventRecord;
use blixard_shared::limits::{MAX_WATCHERS_PER_IDENTITY, MAX_WATCHERS_PER_NODE};
use blixard_shared::proto::v1 as pb;
use blixard_shared::proto::v1::watch_service_server::WatchService;
use futures_util::Stream;
use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// Events read from the ring per lock acquisition.
const READ_BATCH: usize = 256;

/// Serves watch streams of one node.
pub struct WatchApi {
    core: Arc<Core>,
    /// [`MAX_WATCHERS_PER_NODE`] in all, [`MAX_WATCHERS_PER_IDENTITY`] each.
    caps: StreamCaps,
}

impl WatchApi {
    /// A service over `core`.
    pub fn new(core: Arc<Core>) -> Self {
        let caps = StreamCaps::new(
            "Watch",
            (MAX_WATCHERS_PER_NODE, Limit::WatchersPerNode),
            (MAX_WATCHERS_PER_IDENTITY, Limit::WatchersPerIdentity),
            core.metrics.clone(),
        );
        Self { core, caps }
    }
}

/// A watcher's place under the caps, counted in `watchers_connected` while
/// it lives.
struct WatcherSlot {
    _slot: StreamSlot,
    core: Arc<Core>,
}

impl WatcherSlot {
    fn new(slot: StreamSlot, core: Arc<Core>) -> Self {
        core.metrics.watchers_connected.inc();
        Self { _slot: slot, core }
    }
}

impl Drop for WatcherSlot {
    fn drop(&mut self) {
        self.core.metrics.watchers_connected.dec();
    }
}

struct WatchState {
    core: Arc<Core>,
    applied: tokio::sync::watch::Receiver<u64>,
    last_sent: u64,
    pending: VecDeque<EventRecord>,
    done: bool,
    _slot: WatcherSlot,
    /// Who watches: events about VMs it may not read are skipped.
    caller: Caller,
}

/// Whether `caller` may see `event`: events about a VM need `vm.read` on
/// it (judged with the VM's labels now; a deleted VM has none), the rest
/// are the cluster's, which `events.watch` already allowed.
fn visible(core: &Core, caller: &Caller, event: &EventRecord) -> bool {
    match event.subject.strip_prefix("vm/") {
        Some(name) => core.authorize_vm(caller, "vm.read", name).is_ok(),
        None => true,
    }
}

/// The next item of a watch stream, or `None` when it ends.
async fn next_event(mut st: WatchState) -> Option<(Result<pb::WatchResponse, Status>, WatchState)> {
    if st.done {
        return None;
    }
    loop {
        if let Some(event) = st.pending.pop_front() {
            st.last_sent = event.revision;
            if !visible(&st.core, &st.caller, &event) {
                continue;
            }
            let item = pb::WatchResponse {
                event: Some(event_to_pb(&event)),
            };
            return Some((Ok(item), st));
        }
        {
            let fleet = st.core.view.read();
            if fleet.events_pruned_through > st.last_sent {
                let message = format!(
                    "watcher fell behind: events after revision {} are no longer held (oldest held: {:?}); list again and resume from the list's revision",
                    st.last_sent,
                    fleet.oldest_event_revision()
                );
                drop(fleet);
                st.done = true;
                return Some((Err(Status::resource_exhausted(message)), st));
            }
            st.pending
                .extend(fleet.events_after(st.last_sent, READ_BATCH));
        }
        if st.pending.is_empty() {
            let last = st.last_sent;
            let core = st.core.clone();
            let waited = wait_for_apply(&core, &mut st.applied, |fleet| {
                !fleet.events_after(last, 1).is_empty()
            })
            .await;
            if let Err(status) = waited {
                st.done = true;
                return Some((Err(status), st));
            }
        }
    }
}

/// A stream's wait for more: returns at once if `has_new` says the state
/// already holds something after what the stream sent, else when the node
/// applies another entry; `Unavailable` when the node stops. The applied
/// index is marked seen before `has_new` is asked, so an apply between a
/// stream's last read and this wait is not missed. Shared by `Watch` and
/// `WatchAudit`.
pub(super) async fn wait_for_apply(
    core: &Core,
    applied: &mut tokio::sync::watch::Receiver<u64>,
    has_new: impl FnOnce(&crate::state::Fleet) -> bool,
) -> Result<(), Status> {
    applied.borrow_and_update();
    if has_new(&core.view.read()) {
        return Ok(());
    }
    let mut shutdown = core.shutdown.clone();
    let stopping = tokio::select! {
        r = applied.changed() => r.is_err(),
        _ = shutdown.recv() => true,
    };
    if stopping {
        return Err(Status::unavailable(
            "node is shutting down; resume on another member",
        ));
    }
    Ok(())
}

#[tonic::async_trait]
impl WatchService for WatchApi {
    type WatchStream =
        Pin<Box<dyn Stream<Item = Result<pb::WatchResponse, Status>> + Send + 'static>>;

    async fn watch(
        &self,
        req: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        self.core
            .metrics
            .observe("Watch", async {
                let caller = Caller::of(&req);
                self.core
                    .authorize(&caller, "events.watch", Resource::Cluster)?;
                let slot = WatcherSlot::new(self.caps.acquire(&caller)?, self.core.clone());
                let req = req.into_inner();
                // A revision past this node's may be one a lagging member
                // has not applied yet: catch up with the leader first, then
                // judge (a revision past the cluster's would be a silent gap).
                if req.from_revision > self.core.view.read().revision {
                    let linearizable = pb::Consistency::Linearizable as i32;
                    self.core.read_barrier(linearizable).await?;
                }
                let from = {
                    let fleet = self.core.view.read();
                    if req.from_revision > fleet.revision {
                        return Err(Status::out_of_range(format!(
                            "from_revision: {} is ahead of the cluster's current revision {}; watch from a revision a list or an event returned",
                            req.from_revision, fleet.revision
                        )));
                    }
                    let from = match (req.from_revision, req.from_oldest) {
                        (0, false) => fleet.revision,
                        (0, true) => fleet.events_pruned_through,
                        (r, _) => r,
                    };
                    if fleet.events_pruned_through > from {
                        return Err(Status::out_of_range(format!(
                            "from_revision: events after {from} are no longer held (oldest held: {:?}); list again and watch from the list's revision",
                            fleet.oldest_event_revision()
                        )));
                    }
                    from
                };
                let state = WatchState {
                    core: self.core.clone(),
                    applied: self.core.view.subscribe(),
                    last_sent: from,
                    pending: VecDeque::new(),
                    done: false,
                    _slot: slot,
                    caller,
                };
                let stream = futures_util::stream::unfold(state, next_event);
                Ok(Response::new(Box::pin(stream) as Self::WatchStream))
            })
            .await
    }
}
