//! `blixard.v1.AuditService`: reading the replicated audit trail, as pages
//! or as a stream that follows new records. Needs `audit.read`.

use super::slots::{StreamCaps, StreamSlot};
use crate::core::Core;
use crate::metrics::Limit;
use crate::security::authz::Resource;
use crate::security::Caller;
use crate::state::audit::AuditRecord;
use blixard_shared::limits::{
    MAX_AUDIT_FIELD_LEN, MAX_AUDIT_PAGE, MAX_WATCHERS_PER_IDENTITY, MAX_WATCHERS_PER_NODE,
};
use blixard_shared::proto::v1 as pb;
use blixard_shared::proto::v1::audit_service_server::AuditService;
use futures_util::Stream;
use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// Records a stream reads from the trail per lock acquisition.
const READ_BATCH: usize = 256;

/// Serves the audit API of one node.
pub struct AuditApi {
    core: Arc<Core>,
    /// `WatchAudit` streams, under the same caps as event watchers (their
    /// own count).
    caps: StreamCaps,
}

impl AuditApi {
    /// A service over `core`.
    pub fn new(core: Arc<Core>) -> Self {
        let caps = StreamCaps::new(
            "WatchAudit",
            (MAX_WATCHERS_PER_NODE, Limit::WatchersPerNode),
            (MAX_WATCHERS_PER_IDENTITY, Limit::WatchersPerIdentity),
            core.metrics.clone(),
        );
        Self { core, caps }
    }
}

/// A request's filter, checked.
#[derive(Debug, Clone, Default)]
struct Filter {
    since_ms: u64,
    principal: String,
    action: String,
}

impl Filter {
    fn from_pb(filter: Option<pb::AuditFilter>) -> Result<Self, Status> {
        let f = filter.unwrap_or_default();
        for (name, value) in [
            ("filter.principal", &f.principal),
            ("filter.action", &f.action),
        ] {
            if value.len() > MAX_AUDIT_FIELD_LEN {
                return Err(Status::invalid_argument(format!(
                    "{name}: at most {MAX_AUDIT_FIELD_LEN} bytes"
                )));
            }
        }
        Ok(Self {
            since_ms: f.since_ms,
            principal: f.principal,
            action: f.action,
        })
    }

    fn keeps(&self, r: &AuditRecord) -> bool {
        let e = &r.entry;
        let action = self.action.is_empty()
            || e.action == self.action
            || (self.action.ends_with('.') && e.action.starts_with(&self.action));
        e.time_ms >= self.since_ms
            && (self.principal.is_empty() || e.principal == self.principal)
            && action
    }
}

/// The wire form of a record.
pub fn record_to_pb(r: &AuditRecord) -> pb::AuditRecord {
    let e = &r.entry;
    pb::AuditRecord {
        seq: r.seq,
        time_ms: e.time_ms,
        node_id: r.node_id,
        principal: e.principal.clone(),
        peer: e.peer.clone(),
        method: e.method.clone(),
        action: e.action.clone(),
        target: e.target.clone(),
        result: e.result.word().to_string(),
        code: e.code.clone(),
    }
}

struct WatchState {
    core: Arc<Core>,
    applied: tokio::sync::watch::Receiver<u64>,
    last_seen: u64,
    filter: Filter,
    pending: VecDeque<pb::AuditRecord>,
    done: bool,
    _slot: StreamSlot,
}

/// The next item of a `WatchAudit` stream, or `None` when it ends.
async fn next_record(
    mut st: WatchState,
) -> Option<(Result<pb::WatchAuditResponse, Status>, WatchState)> {
    if st.done {
        return None;
    }
    loop {
        if let Some(record) = st.pending.pop_front() {
            let item = pb::WatchAuditResponse {
                record: Some(record),
            };
            return Some((Ok(item), st));
        }
        let core = st.core.clone();
        let caught_up = {
            let fleet = core.view.read();
            let trail = &fleet.audit;
            if trail
                .oldest_seq()
                .is_some_and(|oldest| oldest > st.last_seen.saturating_add(1))
            {
                drop(fleet);
                st.done = true;
                let message = format!(
                    "audit watcher fell behind: records after {} are no longer held; list again and watch from the list's last_seq",
                    st.last_seen
                );
                return Some((Err(Status::resource_exhausted(message)), st));
            }
            for r in trail.after(st.last_seen).take(READ_BATCH) {
                st.last_seen = r.seq;
                if st.filter.keeps(r) {
                    st.pending.push_back(record_to_pb(r));
                }
            }
            trail.last_seq <= st.last_seen
        };
        if st.pending.is_empty() && caught_up {
            let last = st.last_seen;
            let waited = super::watch::wait_for_apply(&core, &mut st.applied, |fleet| {
                fleet.audit.last_seq > last
            })
            .await;
            if let Err(status) = waited {
                st.done = true;
                return Some((Err(status), st));
            }
        }
    }
}

#[tonic::async_trait]
impl AuditService for AuditApi {
    type WatchAuditStream =
        Pin<Box<dyn Stream<Item = Result<pb::WatchAuditResponse, Status>> + Send + 'static>>;

    async fn list_audit(
        &self,
        req: Request<pb::ListAuditRequest>,
    ) -> Result<Response<pb::ListAuditResponse>, Status> {
        self.core
            .metrics
            .observe("ListAudit", async {
                self.core
                    .authorize(&Caller::of(&req), "audit.read", Resource::Cluster)?;
                let req = req.into_inner();
                let filter = Filter::from_pb(req.filter)?;
                if req.page_size > MAX_AUDIT_PAGE {
                    return Err(Status::invalid_argument(format!(
                        "page_size: at most {MAX_AUDIT_PAGE}, got {}",
                        req.page_size
                    )));
                }
                let page = if req.page_size == 0 {
                    MAX_AUDIT_PAGE
                } else {
                    req.page_size
                } as usize;
                self.core
                    .read_barrier(pb::Consistency::Linearizable as i32)
                    .await?;
                let fleet = self.core.view.read();
                let trail = &fleet.audit;
                let mut matching = trail.after(req.after_seq).filter(|r| filter.keeps(r));
                let records: Vec<pb::AuditRecord> =
                    matching.by_ref().take(page).map(record_to_pb).collect();
                let more = matching.next().is_some();
                let next_after_seq = match (more, records.last()) {
                    (true, Some(last)) => last.seq,
                    _ => 0,
                };
                Ok(Response::new(pb::ListAuditResponse {
                    records,
                    next_after_seq,
                    dropped: trail.dropped,
                    capacity: trail.capacity,
                    last_seq: trail.last_seq,
                }))
            })
            .await
    }

    async fn watch_audit(
        &self,
        req: Request<pb::WatchAuditRequest>,
    ) -> Result<Response<Self::WatchAuditStream>, Status> {
        self.core
            .metrics
            .observe("WatchAudit", async {
                let caller = Caller::of(&req);
                self.core
                    .authorize(&caller, "audit.read", Resource::Cluster)?;
                let slot = self.caps.acquire(&caller)?;
                let req = req.into_inner();
                let filter = Filter::from_pb(req.filter)?;
                let last_seen = {
                    let fleet = self.core.view.read();
                    let trail = &fleet.audit;
                    let oldest = trail.oldest_seq().unwrap_or(trail.last_seq + 1);
                    match (req.after_seq, req.from_oldest) {
                        (0, false) => trail.last_seq,
                        (0, true) => oldest.saturating_sub(1),
                        (after, _) if after.saturating_add(1) < oldest => {
                            return Err(Status::out_of_range(format!(
                                "after_seq: records after {after} are no longer held (oldest held: {oldest}); list again and watch from the list's last_seq"
                            )))
                        }
                        (after, _) => after,
                    }
                };
                let state = WatchState {
                    core: self.core.clone(),
                    applied: self.core.view.subscribe(),
                    last_seen,
                    filter,
                    pending: VecDeque::new(),
                    done: false,
                    _slot: slot,
                };
                let stream = futures_util::stream::unfold(state, next_record);
                Ok(Response::new(Box::pin(stream) as Self::WatchAuditStream))
            })
            .await
    }
}
