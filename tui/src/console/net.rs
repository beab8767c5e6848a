//! The console's network side: one task keeps the model in step with the
//! cluster (load once, then apply `Watch` events, fetching only the record an
//! event names), one polls the cluster status, and actions and log streams
//! run on demand. Everything reaches the model as [`Msg`]s.
//!
//! When the member in use dies or the stream breaks, the watcher moves to the
//! next endpoint and resumes from the last revision it saw; when that
//! revision is no longer held (`OutOfRange`, `ResourceExhausted`) it reloads.

use super::msg::{Action, Link, Msg};
use blixard_shared::proto::v1 as pb;
use blixard_shared::proto::v1::{
    cluster_service_client::ClusterServiceClient, node_service_client::NodeServiceClient,
    vm_service_client::VmServiceClient, watch_service_client::WatchServiceClient,
};
use blixard_shared::BlixardClient;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::StreamExt;
use tonic::transport::Channel;

/// Messages buffered towards the UI; the network side waits when it is full.
pub const MSG_BUFFER: usize = 4096;
/// How often the status (leader, term, members) is polled.
const STATUS_POLL: Duration = Duration::from_secs(1);
/// Longest pause between reconnection attempts.
const MAX_RECONNECT_BACKOFF: Duration = Duration::from_secs(2);
/// Revisions of history shown when the console first connects.
const BACKFILL_REVISIONS: u64 = 200;
/// Page size of the initial load.
const LOAD_PAGE: u32 = 1000;

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn channel(endpoint: &str) -> Option<Channel> {
    let uri = if endpoint.starts_with("http") {
        endpoint.to_string()
    } else {
        format!("http://{endpoint}")
    };
    Some(
        tonic::transport::Endpoint::from_shared(uri)
            .ok()?
            .connect_timeout(Duration::from_secs(1))
            .connect_lazy(),
    )
}

/// Handles to the console's background tasks.
pub struct Net {
    endpoints: Vec<String>,
    current: Arc<Mutex<usize>>,
    tx: mpsc::Sender<Msg>,
    logs: Option<JoinHandle<()>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Net {
    /// Starts watching the cluster behind `endpoints`.
    pub fn start(endpoints: Vec<String>, tx: mpsc::Sender<Msg>) -> Self {
        let current = Arc::new(Mutex::new(0));
        let tasks = vec![
            tokio::spawn(watch_loop(endpoints.clone(), current.clone(), tx.clone())),
            tokio::spawn(status_loop(endpoints.clone(), current.clone(), tx.clone())),
        ];
        Self {
            endpoints,
            current,
            tx,
            logs: None,
            tasks,
        }
    }

    fn endpoint(&self) -> String {
        let i = *self.current.lock().unwrap_or_else(|p| p.into_inner());
        self.endpoints[i % self.endpoints.len()].clone()
    }

    /// Runs `action`; its result arrives as [`Msg::ActionDone`].
    pub fn run(&self, action: Action) {
        let mut eps = self.endpoints.clone();
        let first = *self.current.lock().unwrap_or_else(|p| p.into_inner()) % eps.len();
        eps.rotate_left(first);
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let result = execute(eps, action).await;
            let _ = tx.send(Msg::ActionDone(result)).await;
        });
    }

    /// Streams `vm`'s console (replacing any open stream).
    pub fn open_logs(&mut self, vm: String) {
        self.close_logs();
        let tx = self.tx.clone();
        let endpoint = self.endpoint();
        self.logs = Some(tokio::spawn(async move {
            let reason = match stream_logs(&endpoint, &vm, &tx).await {
                Ok(()) => "the log ended".to_string(),
                Err(s) => s,
            };
            let _ = tx.send(Msg::LogEnded { vm, reason }).await;
        }));
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

async fn stream_logs(endpoint: &str, vm: &str, tx: &mpsc::Sender<Msg>) -> Result<(), String> {
    let ch = channel(endpoint).ok_or("bad endpoint")?;
    let mut stream = VmServiceClient::new(ch)
        .stream_vm_logs(pb::StreamVmLogsRequest {
            name: vm.to_string(),
            follow: true,
            tail_lines: 10_000,
        })
        .await
        .map_err(|s| s.message().to_string())?
        .into_inner();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|s| s.message().to_string())?;
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

async fn execute(endpoints: Vec<String>, action: Action) -> Result<String, String> {
    let mut client = BlixardClient::new(endpoints).map_err(|e| e.to_string())?;
    let done = action.describe();
    let r = match action.clone() {
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

async fn load(ch: Channel) -> Result<(Vec<pb::Node>, Vec<pb::Vm>, u64), tonic::Status> {
    let local = pb::Consistency::Local as i32;
    let mut nodes = Vec::new();
    let mut token = String::new();
    let mut revision = u64::MAX;
    loop {
        let page = NodeServiceClient::new(ch.clone())
            .list_nodes(pb::ListNodesRequest {
                consistency: local,
                page_size: LOAD_PAGE,
                page_token: token.clone(),
            })
            .await?
            .into_inner();
        revision = revision.min(page.revision);
        nodes.extend(page.nodes);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let mut vms = Vec::new();
    token.clear();
    loop {
        let page = VmServiceClient::new(ch.clone())
            .list_vms(pb::ListVmsRequest {
                consistency: local,
                page_size: LOAD_PAGE,
                page_token: token.clone(),
                ..Default::default()
            })
            .await?
            .into_inner();
        revision = revision.min(page.revision);
        vms.extend(page.vms);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    Ok((nodes, vms, revision))
}

/// Fetches what `event` names and tells the model.
async fn refresh(ch: &Channel, event: &pb::Event, tx: &mpsc::Sender<Msg>) {
    let local = pb::Consistency::Local as i32;
    if let Some(name) = event.subject.strip_prefix("vm/") {
        let msg = match VmServiceClient::new(ch.clone())
            .get_vm(pb::GetVmRequest {
                name: name.to_string(),
                consistency: local,
            })
            .await
        {
            Ok(r) => r.into_inner().vm.map(Msg::VmChanged),
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
        let msg = match NodeServiceClient::new(ch.clone())
            .get_node(pb::GetNodeRequest {
                node_id: id,
                consistency: local,
            })
            .await
        {
            Ok(r) => r.into_inner().node.map(Msg::NodeChanged),
            Err(s) if s.code() == tonic::Code::NotFound => Some(Msg::NodeGone(id)),
            Err(_) => None,
        };
        if let Some(msg) = msg {
            let _ = tx.send(msg).await;
        }
        // A multi-VM status event names the node: refresh its VMs.
        if event.kind == "vm.status" {
            if let Ok(r) = VmServiceClient::new(ch.clone())
                .list_vms(pb::ListVmsRequest {
                    consistency: local,
                    page_size: LOAD_PAGE,
                    node_id: id,
                    ..Default::default()
                })
                .await
            {
                for vm in r.into_inner().vms {
                    let _ = tx.send(Msg::VmChanged(vm)).await;
                }
            }
        }
    }
}

async fn watch_loop(endpoints: Vec<String>, current: Arc<Mutex<usize>>, tx: mpsc::Sender<Msg>) {
    let mut revision: Option<u64> = None;
    let mut first = true;
    let mut down_since: Option<u64> = None;
    let mut backoff = Duration::from_millis(100);
    loop {
        let idx = *current.lock().unwrap_or_else(|p| p.into_inner()) % endpoints.len();
        let endpoint = endpoints[idx].clone();
        let next = |reason: String, since: u64| {
            let mut c = current.lock().unwrap_or_else(|p| p.into_inner());
            *c = (*c + 1) % endpoints.len();
            Msg::Link(Link::Reconnecting {
                endpoint: endpoints[*c].clone(),
                since_ms: since,
                reason,
            })
        };
        let Some(ch) = channel(&endpoint) else {
            let since = *down_since.get_or_insert_with(now_ms);
            let _ = tx
                .send(next(format!("bad endpoint {endpoint}"), since))
                .await;
            continue;
        };
        if revision.is_none() {
            if down_since.is_none() {
                let _ = tx
                    .send(Msg::Link(Link::Connecting {
                        endpoint: endpoint.clone(),
                    }))
                    .await;
            }
            match load(ch.clone()).await {
                Ok((nodes, vms, rev)) => {
                    tracing::info!(%endpoint, nodes = nodes.len(), vms = vms.len(), revision = rev, "loaded cluster state");
                    revision = Some(rev);
                    if tx
                        .send(Msg::Loaded {
                            nodes,
                            vms,
                            revision: rev,
                        })
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                Err(s) => {
                    let since = *down_since.get_or_insert_with(now_ms);
                    tracing::warn!(%endpoint, error = %s.message(), "load failed");
                    if tx.send(next(s.message().to_string(), since)).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_RECONNECT_BACKOFF);
                    continue;
                }
            }
        }
        let from = revision.unwrap_or(0);
        // On the first connection, start a little in the past so the
        // events view opens with recent history (their records are fetched
        // again, which is harmless).
        let backfill = std::mem::take(&mut first);
        let start = if backfill {
            from.saturating_sub(BACKFILL_REVISIONS)
        } else {
            from
        };
        let mut opened = WatchServiceClient::new(ch.clone())
            .watch(pb::WatchRequest {
                from_revision: start,
                // Revision 0 means "from now" unless the oldest is asked for.
                from_oldest: start == 0,
            })
            .await;
        if backfill
            && opened
                .as_ref()
                .is_err_and(|s| s.code() == tonic::Code::OutOfRange)
        {
            opened = WatchServiceClient::new(ch.clone())
                .watch(pb::WatchRequest {
                    from_revision: from,
                    from_oldest: false,
                })
                .await;
        }
        let mut stream = match opened {
            Ok(s) => s.into_inner(),
            Err(s)
                if matches!(
                    s.code(),
                    tonic::Code::OutOfRange | tonic::Code::ResourceExhausted
                ) =>
            {
                tracing::warn!(error = %s.message(), "watch position lost; reloading");
                revision = None;
                continue;
            }
            Err(s) => {
                let since = *down_since.get_or_insert_with(now_ms);
                tracing::warn!(%endpoint, error = %s.message(), "watch failed");
                if tx.send(next(s.message().to_string(), since)).await.is_err() {
                    return;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_RECONNECT_BACKOFF);
                continue;
            }
        };
        down_since = None;
        backoff = Duration::from_millis(100);
        tracing::info!(%endpoint, from, "watching");
        if tx
            .send(Msg::Link(Link::Live {
                endpoint: endpoint.clone(),
            }))
            .await
            .is_err()
        {
            return;
        }
        let reason = loop {
            match stream.next().await {
                Some(Ok(resp)) => {
                    let Some(event) = resp.event else { continue };
                    revision = Some(event.revision);
                    refresh(&ch, &event, &tx).await;
                    if tx.send(Msg::Event(event)).await.is_err() {
                        return;
                    }
                }
                Some(Err(s))
                    if matches!(
                        s.code(),
                        tonic::Code::OutOfRange | tonic::Code::ResourceExhausted
                    ) =>
                {
                    tracing::warn!(error = %s.message(), "watch fell behind; reloading");
                    revision = None;
                    break None;
                }
                Some(Err(s)) => break Some(s.message().to_string()),
                None => break Some("stream closed".to_string()),
            }
        };
        if let Some(reason) = reason {
            let since = *down_since.get_or_insert_with(now_ms);
            tracing::warn!(%endpoint, %reason, "watch stream broke; moving to the next member");
            if tx.send(next(reason, since)).await.is_err() {
                return;
            }
        }
    }
}

async fn status_loop(endpoints: Vec<String>, current: Arc<Mutex<usize>>, tx: mpsc::Sender<Msg>) {
    loop {
        let idx = *current.lock().unwrap_or_else(|p| p.into_inner()) % endpoints.len();
        if let Some(ch) = channel(&endpoints[idx]) {
            let mut client = ClusterServiceClient::new(ch);
            // The leader's view has replication progress; fall back to the
            // member's own view when there is no leader to ask.
            let mut req = tonic::Request::new(pb::GetStatusRequest {
                consistency: pb::Consistency::Linearizable as i32,
            });
            req.set_timeout(Duration::from_millis(800));
            let status = match client.get_status(req).await {
                Ok(s) => Some(s.into_inner()),
                Err(_) => {
                    let mut req = tonic::Request::new(pb::GetStatusRequest {
                        consistency: pb::Consistency::Local as i32,
                    });
                    req.set_timeout(Duration::from_millis(500));
                    client.get_status(req).await.ok().map(|s| s.into_inner())
                }
            };
            if let Some(s) = status {
                if tx.send(Msg::Status(s)).await.is_err() {
                    return;
                }
            }
        }
        tokio::time::sleep(STATUS_POLL).await;
    }
}
