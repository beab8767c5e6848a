//! The console's network side: one task keeps the model in step with the
//! cluster (load once, then apply `Watch` events, fetching only the record an
//! event names), one polls the cluster status, and actions and log streams
//! run on demand. Everything reaches the model as [`Msg`]s.
//!
//! When the member in use dies or the stream breaks, the watcher moves to the
//! next endpoint and resumes from the last revision it saw; when that
//! revision is no longer held (`OutOfRange`, `ResourceExhausted`) it reloads.
//!
//! Every channel uses the console's [`Credentials`]: TLS with the cluster CA
//! and the token on every call, or plaintext for an `--insecure` cluster.

use super::access::{AccessKey, AccessReport};
use super::msg::{Action, Link, Msg};
use crate::connect::{explain, lazy_channel};
use blixard_shared::limits::{MAX_ACCESS_QUERIES, MAX_PAGE_SIZE};
use blixard_shared::paging::read_all_pages;
use blixard_shared::proto::v1 as pb;
use blixard_shared::proto::v1::audit_service_client::AuditServiceClient;
use blixard_shared::proto::v1::policy_service_client::PolicyServiceClient;
use blixard_shared::proto::v1::{
    cluster_service_client::ClusterServiceClient, node_service_client::NodeServiceClient,
    vm_service_client::VmServiceClient, watch_service_client::WatchServiceClient,
};
use blixard_shared::time::now_ms;
use blixard_shared::{ApiChannel, BlixardClient, Credentials};
use std::ops::ControlFlow;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::StreamExt;
use tonic::Status;

/// Messages buffered towards the UI; the network side waits when it is full.
pub const MSG_BUFFER: usize = 4096;
/// How often the status (leader, term, members) is polled.
const STATUS_POLL: Duration = Duration::from_secs(1);
/// How long a linearizable status read may take before the member's own
/// view is asked for instead.
const STATUS_TIMEOUT: Duration = Duration::from_millis(800);
/// How long the fallback (local) status read may take.
const LOCAL_STATUS_TIMEOUT: Duration = Duration::from_millis(500);
/// Time allowed to open a connection to a member.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// First pause before trying again after a failed load or watch.
const MIN_RECONNECT_BACKOFF: Duration = Duration::from_millis(100);
/// Longest pause between reconnection attempts.
const MAX_RECONNECT_BACKOFF: Duration = Duration::from_secs(2);
/// Revisions of history shown when the console first connects.
const BACKFILL_REVISIONS: u64 = 200;
/// Page size of list reads: the largest page a server returns.
const LIST_PAGE: u32 = MAX_PAGE_SIZE;
/// Console lines replayed when a VM's logs are opened.
const LOG_TAIL_LINES: u32 = 10_000;

/// A lazy channel to `endpoint` (`host:port` or a URI) with `credentials`;
/// `None` if it is not a valid address (or the TLS settings are unusable).
fn channel(endpoint: &str, credentials: &Credentials) -> Option<ApiChannel> {
    match lazy_channel(endpoint, credentials, CONNECT_TIMEOUT) {
        Ok(ch) => Some(ch),
        Err(e) => {
            tracing::debug!(%endpoint, error = %e, "cannot make a channel");
            None
        }
    }
}

/// The index of the member in use, shared by the watcher (which moves it)
/// and the status poller, actions and log streams (which follow it).
fn current_index(current: &Mutex<usize>, len: usize) -> usize {
    *current.lock().unwrap_or_else(|p| p.into_inner()) % len
}

/// Handles to the console's background tasks.
pub struct Net {
    endpoints: Vec<String>,
    credentials: Credentials,
    current: Arc<Mutex<usize>>,
    tx: mpsc::Sender<Msg>,
    logs: Option<JoinHandle<()>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Net {
    /// Starts watching the cluster behind `endpoints` (at least one), with
    /// `credentials` on every call.
    pub fn start(endpoints: Vec<String>, credentials: Credentials, tx: mpsc::Sender<Msg>) -> Self {
        let current = Arc::new(Mutex::new(0));
        let watcher = Watcher::new(
            endpoints.clone(),
            credentials.clone(),
            current.clone(),
            tx.clone(),
        );
        let tasks = vec![
            tokio::spawn(watcher.run()),
            tokio::spawn(status_loop(
                endpoints.clone(),
                credentials.clone(),
                current.clone(),
                tx.clone(),
            )),
            tokio::spawn(audit_loop(
                endpoints.clone(),
                credentials.clone(),
                current.clone(),
                tx.clone(),
            )),
        ];
        Self {
            endpoints,
            credentials,
            current,
            tx,
            logs: None,
            tasks,
        }
    }

    /// The member in use.
    fn endpoint(&self) -> String {
        self.endpoints[current_index(&self.current, self.endpoints.len())].clone()
    }

    /// Runs `action`; its result arrives as [`Msg::ActionDone`].
    pub fn run(&self, action: Action) {
        let mut eps = self.endpoints.clone();
        let first = current_index(&self.current, eps.len());
        eps.rotate_left(first);
        let tx = self.tx.clone();
        let credentials = self.credentials.clone();
        tokio::spawn(async move {
            let result = execute(eps, credentials, action).await;
            let _ = tx.send(Msg::ActionDone(result)).await;
        });
    }

    /// Streams `vm`'s console (replacing any open stream).
    pub fn open_logs(&mut self, vm: String) {
        self.close_logs();
        let tx = self.tx.clone();
        let endpoint = self.endpoint();
        let credentials = self.credentials.clone();
        self.logs = Some(tokio::spawn(async move {
            let reason = match stream_logs(&endpoint, &credentials, &vm, &tx).await {
                Ok(()) => "the log ended".to_string(),
                Err(s) => s,
            };
            let _ = tx.send(Msg::LogEnded { vm, reason }).await;
        }));
    }

    /// Asks the member in use what the console's token may do; the answer
    /// arrives as [`Msg::Access`]. A daemon that cannot answer (an older
    /// one, or unreachable) leaves the last answer standing: every action
    /// is still decided by the daemon when it is sent.
    pub fn check_access(&self, keys: Vec<AccessKey>) {
        let endpoint = self.endpoint();
        let credentials = self.credentials.clone();
        let tx = self.tx.clone();
        tokio::spawn(async move {
            match ask_access(&endpoint, &credentials, keys).await {
                Ok(report) => {
                    let _ = tx.send(Msg::Access(report)).await;
                }
                Err(s) => {
                    tracing::debug!(code = ?s.code(), reason = %s.message(), "access check failed")
                }
            }
        });
    }

    /// Stops the log stream.
    pub fn close_logs(&mut self) {
        if let Some(t) = self.logs.take() {
            t.abort();
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        self.close_logs();
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// `CheckAccess` for `keys`, in calls of at most `MAX_ACCESS_QUERIES`.
async fn ask_access(
    endpoint: &str,
    credentials: &Credentials,
    keys: Vec<AccessKey>,
) -> Result<AccessReport, Status> {
    let ch = channel(endpoint, credentials)
        .ok_or_else(|| Status::unavailable(format!("no channel to {endpoint}")))?;
    let mut client = PolicyServiceClient::new(ch);
    let mut report = AccessReport {
        principal: String::new(),
        role: String::new(),
        labels: Vec::new(),
        answers: Vec::with_capacity(keys.len()),
    };
    let ask = |chunk: &[AccessKey]| pb::CheckAccessRequest {
        queries: chunk
            .iter()
            .map(|k| pb::AccessQuery {
                action: k.action.to_string(),
                kind: k.kind.to_string(),
                name: k.name.clone(),
            })
            .collect(),
    };
    for chunk in keys.chunks(MAX_ACCESS_QUERIES) {
        let mut req = tonic::Request::new(ask(chunk));
        req.set_timeout(STATUS_TIMEOUT);
        let resp = client.check_access(req).await?.into_inner();
        report.principal = resp.principal;
        report.role = resp.role;
        report.labels = resp.labels;
        report
            .answers
            .extend(chunk.iter().cloned().zip(resp.allowed));
    }
    Ok(report)
}

/// Sends `vm`'s console output to the UI until the stream ends; `Err` says
/// why it broke.
async fn stream_logs(
    endpoint: &str,
    credentials: &Credentials,
    vm: &str,
    tx: &mpsc::Sender<Msg>,
) -> Result<(), String> {
    let ch = channel(endpoint, credentials).ok_or("bad endpoint")?;
    let mut stream = VmServiceClient::new(ch)
        .stream_vm_logs(pb::StreamVmLogsRequest {
            name: vm.to_string(),
            follow: true,
            tail_lines: LOG_TAIL_LINES,
        })
        .await
        .map_err(|s| explain(&s, credentials))?
        .into_inner();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|s| explain(&s, credentials))?;
        if tx
            .send(Msg::LogData {
                vm: vm.to_string(),
                data: chunk.data,
            })
            .await
            .is_err()
        {
            return Ok(());
        }
    }
    Ok(())
}

/// Runs `action` through a failover client with `credentials`; the status
/// line's text.
async fn execute(
    endpoints: Vec<String>,
    credentials: Credentials,
    action: Action,
) -> Result<String, String> {
    let mut client = BlixardClient::new(endpoints)
        .map_err(|e| e.to_string())?
        .with_credentials(credentials);
    let done = action.describe();
    let r = match action {
        Action::CreateVm {
            name,
            vcpus,
            memory_mib,
            image,
        } => client
            .create_vm(pb::CreateVmRequest {
                name,
                spec: Some(pb::VmSpec {
                    vcpus,
                    memory_mib,
                    image,
                    ..Default::default()
                }),
                stopped: false,
            })
            .await
            .map(|_| ()),
        Action::StartVm(name) => client.start_vm(&name).await.map(|_| ()),
        Action::StopVm(name) => client.stop_vm(&name).await.map(|_| ()),
        Action::RestartVm(name) => client.restart_vm(&name).await.map(|_| ()),
        Action::DeleteVm { name, force } => client.delete_vm(&name, force).await,
        Action::Cordon(id) => client.cordon_node(id).await.map(|_| ()),
        Action::Uncordon(id) => client.uncordon_node(id).await.map(|_| ()),
        Action::Drain(id) => client.drain_node(id, 0, 0).await.map(|_| ()),
        Action::MigrateVm(name) => client.migrate_vm(&name, 0, false).await.map(|_| ()),
        Action::TransferLeader(to) => client.transfer_leadership(to).await.map(|leader| {
            tracing::info!(new_leader = leader, "leadership transferred");
        }),
    };
    match r {
        Ok(()) => {
            tracing::info!(action = %done, "done");
            Ok(format!("{done}: done"))
        }
        Err(e) => {
            tracing::warn!(action = %done, error = %e, "failed");
            Err(format!("{done}: {e}"))
        }
    }
}

/// The reads the watcher makes of one member. A trait so that [`refresh`]
/// can be tested without a network.
trait Records {
    /// The VM called `name` (`NotFound` when there is none).
    async fn get_vm(&self, name: &str) -> Result<pb::GetVmResponse, Status>;
    /// Node `id` (`NotFound` when there is none).
    async fn get_node(&self, id: u64) -> Result<pb::GetNodeResponse, Status>;
    /// One page of VMs.
    async fn list_vms(&self, req: pb::ListVmsRequest) -> Result<pb::ListVmsResponse, Status>;
    /// One page of nodes.
    async fn list_nodes(&self, req: pb::ListNodesRequest) -> Result<pb::ListNodesResponse, Status>;
}

/// Local reads: the member's own state, which the watch stream continues.
const LOCAL: i32 = pb::Consistency::Local as i32;

impl Records for ApiChannel {
    async fn get_vm(&self, name: &str) -> Result<pb::GetVmResponse, Status> {
        let req = pb::GetVmRequest {
            name: name.to_string(),
            consistency: LOCAL,
        };
        let r = VmServiceClient::new(self.clone()).get_vm(req).await?;
        Ok(r.into_inner())
    }

    async fn get_node(&self, id: u64) -> Result<pb::GetNodeResponse, Status> {
        let req = pb::GetNodeRequest {
            node_id: id,
            consistency: LOCAL,
        };
        let r = NodeServiceClient::new(self.clone()).get_node(req).await?;
        Ok(r.into_inner())
    }

    async fn list_vms(&self, req: pb::ListVmsRequest) -> Result<pb::ListVmsResponse, Status> {
        let r = VmServiceClient::new(self.clone()).list_vms(req).await?;
        Ok(r.into_inner())
    }

    async fn list_nodes(&self, req: pb::ListNodesRequest) -> Result<pb::ListNodesResponse, Status> {
        let r = NodeServiceClient::new(self.clone()).list_nodes(req).await?;
        Ok(r.into_inner())
    }
}

/// Every VM `filter` selects (its page fields are ignored), page by page,
/// and the oldest revision a page was read at.
async fn all_vms(
    records: &impl Records,
    filter: pb::ListVmsRequest,
) -> Result<(Vec<pb::Vm>, u64), Status> {
    read_all_pages(|page_token| {
        records.list_vms(pb::ListVmsRequest {
            page_size: LIST_PAGE,
            page_token,
            ..filter.clone()
        })
    })
    .await
}

/// Every node and VM (local reads), and the oldest revision any page was
/// read at: watching from there misses nothing.
async fn load_all(records: &impl Records) -> Result<(Vec<pb::Node>, Vec<pb::Vm>, u64), Status> {
    let (nodes, node_revision) = read_all_pages(|page_token| {
        records.list_nodes(pb::ListNodesRequest {
            consistency: LOCAL,
            page_size: LIST_PAGE,
            page_token,
        })
    })
    .await?;
    let filter = pb::ListVmsRequest {
        consistency: LOCAL,
        ..Default::default()
    };
    let (vms, vm_revision) = all_vms(records, filter).await?;
    Ok((nodes, vms, node_revision.min(vm_revision)))
}

/// Fetches what `event` names and tells the model. Read errors other than
/// `NotFound` are left alone: the next event naming the record fetches it
/// again, and a broken member breaks the watch stream too.
async fn refresh(records: &impl Records, event: &pb::Event, tx: &mpsc::Sender<Msg>) {
    if let Some(name) = event.subject.strip_prefix("vm/") {
        let msg = match records.get_vm(name).await {
            Ok(r) => r.vm.map(Msg::VmChanged),
            Err(s) if s.code() == tonic::Code::NotFound => Some(Msg::VmGone(name.to_string())),
            Err(_) => None,
        };
        if let Some(msg) = msg {
            let _ = tx.send(msg).await;
        }
    } else if let Some(id) = event
        .subject
        .strip_prefix("node/")
        .and_then(|s| s.parse::<u64>().ok())
    {
        let msg = match records.get_node(id).await {
            Ok(r) => r.node.map(Msg::NodeChanged),
            Err(s) if s.code() == tonic::Code::NotFound => Some(Msg::NodeGone(id)),
            Err(_) => None,
        };
        if let Some(msg) = msg {
            let _ = tx.send(msg).await;
        }
        // A multi-VM status event names the node: refresh all its VMs, on
        // every page.
        if event.kind == "vm.status" {
            let filter = pb::ListVmsRequest {
                consistency: LOCAL,
                node_id: id,
                ..Default::default()
            };
            match all_vms(records, filter).await {
                Ok((vms, _)) => {
                    for vm in vms {
                        let _ = tx.send(Msg::VmChanged(vm)).await;
                    }
                }
                Err(s) => {
                    tracing::debug!(node = id, error = %s.message(), "refreshing a node's VMs failed")
                }
            }
        }
    }
}

/// Whether a watch error means the revision asked for is no longer held
/// (reload rather than resume).
fn position_lost(s: &Status) -> bool {
    matches!(
        s.code(),
        tonic::Code::OutOfRange | tonic::Code::ResourceExhausted
    )
}

/// The task that keeps the model in step with the cluster, and its
/// bookkeeping across reconnections.
struct Watcher {
    endpoints: Vec<String>,
    credentials: Credentials,
    current: Arc<Mutex<usize>>,
    tx: mpsc::Sender<Msg>,
    /// Last revision applied; `None` until loaded, and after the position
    /// is lost (then the state is loaded again).
    revision: Option<u64>,
    /// Not connected yet: the first watch starts a little in the past.
    first: bool,
    /// When the link went down (ms), while it is down.
    down_since: Option<u64>,
    /// Pause before the next attempt after a failed load or watch.
    backoff: Duration,
}

impl Watcher {
    /// A watcher of `endpoints` (at least one) with `credentials`, starting
    /// at `current`.
    fn new(
        endpoints: Vec<String>,
        credentials: Credentials,
        current: Arc<Mutex<usize>>,
        tx: mpsc::Sender<Msg>,
    ) -> Self {
        Self {
            endpoints,
            credentials,
            current,
            tx,
            revision: None,
            first: true,
            down_since: None,
            backoff: MIN_RECONNECT_BACKOFF,
        }
    }

    /// Connects, loads, watches and reconnects until the UI goes away.
    async fn run(mut self) {
        while self.round().await.is_continue() {}
    }

    /// Sends `msg` to the UI; `Break` once the UI is gone.
    async fn send(&self, msg: Msg) -> ControlFlow<()> {
        match self.tx.send(msg).await {
            Ok(()) => ControlFlow::Continue(()),
            Err(_) => ControlFlow::Break(()),
        }
    }

    /// Moves to the next member and tells the UI the link is down (since the
    /// first failure) for `reason`.
    async fn move_on(&mut self, reason: String) -> ControlFlow<()> {
        let since = *self.down_since.get_or_insert_with(now_ms);
        let next = {
            let mut c = self.current.lock().unwrap_or_else(|p| p.into_inner());
            *c = (*c + 1) % self.endpoints.len();
            self.endpoints[*c].clone()
        };
        self.send(Msg::Link(Link::Reconnecting {
            endpoint: next,
            since_ms: since,
            reason,
        }))
        .await
    }

    /// Waits before the next attempt, longer each time (up to a bound).
    async fn back_off(&mut self) {
        tokio::time::sleep(blixard_shared::backoff::jittered(self.backoff)).await;
        self.backoff = (self.backoff * 2).min(MAX_RECONNECT_BACKOFF);
    }

    /// One attempt on the member in use: load if needed, open the watch,
    /// follow it until it breaks.
    async fn round(&mut self) -> ControlFlow<()> {
        let endpoint = self.endpoints[current_index(&self.current, self.endpoints.len())].clone();
        let Some(ch) = channel(&endpoint, &self.credentials) else {
            return self.move_on(format!("bad endpoint {endpoint}")).await;
        };
        if self.revision.is_none() && !self.load(&ch, &endpoint).await? {
            self.back_off().await;
            return ControlFlow::Continue(());
        }
        let from = self.revision.unwrap_or(0);
        let mut stream = match self.open(&ch, from).await {
            Ok(s) => s,
            Err(s) if position_lost(&s) => {
                tracing::warn!(error = %s.message(), "watch position lost; reloading");
                self.revision = None;
                return ControlFlow::Continue(());
            }
            Err(s) => {
                tracing::warn!(%endpoint, error = %s.message(), "watch failed");
                self.move_on(explain(&s, &self.credentials)).await?;
                self.back_off().await;
                return ControlFlow::Continue(());
            }
        };
        self.down_since = None;
        self.backoff = MIN_RECONNECT_BACKOFF;
        tracing::info!(%endpoint, from, "watching");
        self.send(Msg::Link(Link::Live {
            endpoint: endpoint.clone(),
        }))
        .await?;
        match self.follow(&ch, &mut stream).await? {
            Some(reason) => {
                tracing::warn!(%endpoint, %reason, "watch stream broke; moving to the next member");
                self.move_on(reason).await
            }
            None => ControlFlow::Continue(()),
        }
    }

    /// Loads the whole state from `ch`; `false` when that failed (the link
    /// is then reported down and the next member is up).
    async fn load(&mut self, ch: &ApiChannel, endpoint: &str) -> ControlFlow<(), bool> {
        if self.down_since.is_none() {
            self.send(Msg::Link(Link::Connecting {
                endpoint: endpoint.to_string(),
            }))
            .await?;
        }
        match load_all(ch).await {
            Ok((nodes, vms, revision)) => {
                tracing::info!(%endpoint, nodes = nodes.len(), vms = vms.len(), revision, "loaded cluster state");
                self.revision = Some(revision);
                self.send(Msg::Loaded {
                    nodes,
                    vms,
                    revision,
                })
                .await?;
                ControlFlow::Continue(true)
            }
            Err(s) => {
                tracing::warn!(%endpoint, error = %s.message(), "load failed");
                self.move_on(explain(&s, &self.credentials)).await?;
                ControlFlow::Continue(false)
            }
        }
    }

    /// Opens the watch from revision `from`; on the first connection a
    /// little earlier, so the events view opens with recent history (their
    /// records are fetched again, which is harmless), or from `from` when
    /// that history is gone.
    async fn open(
        &mut self,
        ch: &ApiChannel,
        from: u64,
    ) -> Result<tonic::Streaming<pb::WatchResponse>, Status> {
        let backfill = std::mem::take(&mut self.first);
        let start = if backfill {
            from.saturating_sub(BACKFILL_REVISIONS)
        } else {
            from
        };
        // Revision 0 means "from now" unless the oldest is asked for.
        let mut opened = watch(ch, start, start == 0).await;
        if backfill
            && opened
                .as_ref()
                .is_err_and(|s| s.code() == tonic::Code::OutOfRange)
        {
            opened = watch(ch, from, false).await;
        }
        opened
    }

    /// Applies the stream's events until it breaks: `Some(reason)` to move
    /// to the next member, `None` to reload here.
    async fn follow(
        &mut self,
        ch: &ApiChannel,
        stream: &mut tonic::Streaming<pb::WatchResponse>,
    ) -> ControlFlow<(), Option<String>> {
        loop {
            match stream.next().await {
                Some(Ok(resp)) => {
                    let Some(event) = resp.event else { continue };
                    self.revision = Some(event.revision);
                    refresh(ch, &event, &self.tx).await;
                    self.send(Msg::Event(event)).await?;
                }
                Some(Err(s)) if position_lost(&s) => {
                    tracing::warn!(error = %s.message(), "watch fell behind; reloading");
                    self.revision = None;
                    return ControlFlow::Continue(None);
                }
                Some(Err(s)) => return ControlFlow::Continue(Some(explain(&s, &self.credentials))),
                None => return ControlFlow::Continue(Some("stream closed".to_string())),
            }
        }
    }
}

/// Opens a watch stream from `from_revision` (or from the oldest event held).
async fn watch(
    ch: &ApiChannel,
    from_revision: u64,
    from_oldest: bool,
) -> Result<tonic::Streaming<pb::WatchResponse>, Status> {
    let r = WatchServiceClient::new(ch.clone())
        .watch(pb::WatchRequest {
            from_revision,
            from_oldest,
        })
        .await?;
    Ok(r.into_inner())
}

/// How long the audit stream waits before it opens again after a refusal
/// (the policies may change) or a break.
const AUDIT_RETRY: Duration = Duration::from_secs(5);
/// How long it waits before asking again after the policies refused it.
const AUDIT_DENIED_RETRY: Duration = Duration::from_secs(60);

/// Follows the audit trail on the member in use, from the oldest record
/// held, resuming after the last one it passed on. A token that may not
/// read the trail gets a note saying so (asked again every
/// [`AUDIT_RETRY`], in case the policies change).
async fn audit_loop(
    endpoints: Vec<String>,
    credentials: Credentials,
    current: Arc<Mutex<usize>>,
    tx: mpsc::Sender<Msg>,
) {
    let mut last = 0u64;
    loop {
        let endpoint = &endpoints[current_index(&current, endpoints.len())];
        if let Some(ch) = channel(endpoint, &credentials) {
            let req = pb::WatchAuditRequest {
                filter: None,
                after_seq: last,
                from_oldest: last == 0,
            };
            match AuditServiceClient::new(ch).watch_audit(req).await {
                Ok(stream) => {
                    let mut stream = stream.into_inner();
                    while let Some(Ok(resp)) = stream.next().await {
                        let Some(record) = resp.record else { continue };
                        last = record.seq;
                        if tx.send(Msg::Audit(record)).await.is_err() {
                            return;
                        }
                    }
                }
                Err(s) if s.code() == tonic::Code::PermissionDenied => {
                    let why = format!("this token may not read the audit trail: {}", s.message());
                    if tx.send(Msg::AuditUnavailable(why)).await.is_err() {
                        return;
                    }
                    // Each refusal is itself an audit record: ask rarely.
                    tokio::time::sleep(AUDIT_DENIED_RETRY).await;
                }
                Err(s) if s.code() == tonic::Code::OutOfRange => last = 0,
                Err(_) => {}
            }
        }
        tokio::time::sleep(AUDIT_RETRY).await;
    }
}

/// Polls the cluster status of the member in use, every [`STATUS_POLL`].
async fn status_loop(
    endpoints: Vec<String>,
    credentials: Credentials,
    current: Arc<Mutex<usize>>,
    tx: mpsc::Sender<Msg>,
) {
    loop {
        let endpoint = &endpoints[current_index(&current, endpoints.len())];
        if let Some(ch) = channel(endpoint, &credentials) {
            if let Some(s) = status(ch).await {
                if tx.send(Msg::Status(s)).await.is_err() {
                    return;
                }
            }
        }
        tokio::time::sleep(STATUS_POLL).await;
    }
}

/// The leader's view of the cluster (it has replication progress), or the
/// member's own view when there is no leader to ask.
async fn status(ch: ApiChannel) -> Option<pb::ClusterStatus> {
    let mut client = ClusterServiceClient::new(ch);
    let request = |consistency: pb::Consistency, timeout: Duration| {
        let mut req = tonic::Request::new(pb::GetStatusRequest {
            consistency: consistency as i32,
        });
        req.set_timeout(timeout);
        req
    };
    match client
        .get_status(request(pb::Consistency::Linearizable, STATUS_TIMEOUT))
        .await
    {
        Ok(s) => Some(s.into_inner()),
        Err(_) => client
            .get_status(request(pb::Consistency::Local, LOCAL_STATUS_TIMEOUT))
            .await
            .ok()
            .map(|s| s.into_inner()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// A member that serves VM pages from a map of page tokens, and
    /// remembers what it was asked.
    #[derive(Default)]
    struct Fake {
        vm_pages: HashMap<String, pb::ListVmsResponse>,
        asked: Mutex<Vec<pb::ListVmsRequest>>,
    }

    impl Records for Fake {
        async fn get_vm(&self, _name: &str) -> Result<pb::GetVmResponse, Status> {
            Err(Status::unavailable("not in this test"))
        }
        async fn get_node(&self, id: u64) -> Result<pb::GetNodeResponse, Status> {
            Ok(pb::GetNodeResponse {
                node: Some(pb::Node {
                    id,
                    ..Default::default()
                }),
            })
        }
        async fn list_vms(&self, req: pb::ListVmsRequest) -> Result<pb::ListVmsResponse, Status> {
            let page = self.vm_pages.get(&req.page_token).cloned();
            self.asked.lock().expect("not poisoned").push(req);
            page.ok_or_else(|| Status::invalid_argument("bad page token"))
        }
        async fn list_nodes(
            &self,
            _req: pb::ListNodesRequest,
        ) -> Result<pb::ListNodesResponse, Status> {
            Ok(pb::ListNodesResponse::default())
        }
    }

    fn page(names: &[&str], next: &str) -> pb::ListVmsResponse {
        pb::ListVmsResponse {
            vms: names
                .iter()
                .map(|n| pb::Vm {
                    name: n.to_string(),
                    node_id: 2,
                    ..Default::default()
                })
                .collect(),
            next_page_token: next.into(),
            revision: 7,
        }
    }

    #[test]
    fn a_multi_vm_status_event_refreshes_every_page_of_the_nodes_vms() {
        let fake = Fake {
            vm_pages: [
                (String::new(), page(&["a", "b"], "t1")),
                ("t1".into(), page(&["c", "d"], "t2")),
                ("t2".into(), page(&["e"], "")),
            ]
            .into(),
            ..Default::default()
        };
        let event = pb::Event {
            revision: 9,
            kind: "vm.status".into(),
            subject: "node/2".into(),
            ..Default::default()
        };
        let (tx, mut rx) = mpsc::channel(64);
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a current-thread runtime")
            .block_on(refresh(&fake, &event, &tx));
        drop(tx);
        let mut changed = Vec::new();
        while let Ok(msg) = rx.try_recv() {
            match msg {
                Msg::NodeChanged(n) => assert_eq!(n.id, 2),
                Msg::VmChanged(vm) => changed.push(vm.name),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(changed, ["a", "b", "c", "d", "e"]);
        let asked = fake.asked.lock().expect("not poisoned");
        let tokens: Vec<&str> = asked.iter().map(|r| r.page_token.as_str()).collect();
        assert_eq!(tokens, ["", "t1", "t2"]);
        assert!(asked
            .iter()
            .all(|r| r.node_id == 2 && r.consistency == LOCAL && r.page_size == LIST_PAGE));
    }
}
