//! The clients and watchers of a run, talking real gRPC to the lab's nodes.

use super::history::{Call, History, Op, Outcome, SeenEvent, WatcherLog};
use super::rng::Rng;
use blixard_shared::proto::v1 as pb;
use blixard_shared::{ApiChannel as Channel, Credentials};
use pb::cluster_service_client::ClusterServiceClient;
use pb::vm_service_client::VmServiceClient;
use pb::watch_service_client::WatchServiceClient;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tonic::Code;

/// Bound on one client request: past it the outcome is unknown.
pub const OP_TIMEOUT: Duration = Duration::from_millis(1500);

/// One lazily connected channel per node (`host:port`), with `creds`.
pub fn channels(endpoints: &[String], creds: &Credentials) -> Result<Vec<Channel>, String> {
    endpoints
        .iter()
        .map(|e| {
            let ep = creds
                .endpoint(e)
                .map_err(|err| format!("endpoint {e}: {err}"))?;
            let ch = ep
                .connect_timeout(Duration::from_millis(500))
                .connect_lazy();
            Ok(creds.wrap(ch))
        })
        .collect()
}

/// A join token and the CA fingerprint, created through `ch` (an admin's).
pub async fn join_token(ch: Channel) -> Result<(String, String), String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = ClusterServiceClient::new(ch.clone())
            .create_join_token(pb::CreateJoinTokenRequest { ttl_seconds: 600 })
            .await;
        match r {
            Ok(resp) => {
                let resp = resp.into_inner();
                return Ok((resp.token, resp.ca_fingerprint));
            }
            Err(s) if s.code() == Code::Unavailable && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(s) => return Err(format!("creating a join token: {s}")),
        }
    }
}

fn spec(runner: &str) -> pb::VmSpec {
    pb::VmSpec {
        vcpus: 1,
        memory_mib: 32,
        runner: runner.to_string(),
        restart_policy: pb::RestartPolicy::Always as i32,
        ..Default::default()
    }
}

/// Sends `call` on `key` to `ch`; the outcome and, when acknowledged with a
/// record, that record's revision.
pub async fn invoke(ch: Channel, key: &str, call: Call, runner: &str) -> (Outcome, Option<u64>) {
    invoke_with_id(ch, key, call, runner, None).await
}

/// A request carrying request id `id`, if any.
fn with_id<T>(message: T, id: Option<&str>) -> tonic::Request<T> {
    let mut req = tonic::Request::new(message);
    if let Some(id) = id {
        blixard_shared::request_id::attach(&mut req, id);
    }
    req
}

/// [`invoke`], with the write carrying request id `id`.
pub async fn invoke_with_id(
    ch: Channel,
    key: &str,
    call: Call,
    runner: &str,
    id: Option<&str>,
) -> (Outcome, Option<u64>) {
    let mut vms = VmServiceClient::new(ch);
    let name = key.to_string();
    let fut = async {
        match call {
            Call::Create { running } => vms
                .create_vm(with_id(
                    pb::CreateVmRequest {
                        name,
                        spec: Some(spec(runner)),
                        stopped: !running,
                    },
                    id,
                ))
                .await
                .map(|r| r.into_inner().vm),
            Call::Start => vms
                .start_vm(with_id(pb::StartVmRequest { name }, id))
                .await
                .map(|r| r.into_inner().vm),
            Call::Stop => vms
                .stop_vm(with_id(pb::StopVmRequest { name }, id))
                .await
                .map(|r| r.into_inner().vm),
            Call::Delete => vms
                .delete_vm(with_id(pb::DeleteVmRequest { name, force: true }, id))
                .await
                .map(|_| None),
            Call::Read => vms
                .get_vm(pb::GetVmRequest {
                    name,
                    consistency: pb::Consistency::Linearizable as i32,
                })
                .await
                .map(|r| r.into_inner().vm),
        }
    };
    match tokio::time::timeout(OP_TIMEOUT, fut).await {
        Err(_) => (Outcome::Unknown("timeout".into()), None),
        Ok(Ok(vm)) => {
            let revision = vm.as_ref().map(|v| v.revision);
            if call == Call::Read {
                let running = vm.map(|v| v.desired_state == pb::DesiredState::Running as i32);
                (Outcome::Value(running), revision)
            } else {
                (Outcome::Ok, revision)
            }
        }
        Ok(Err(status)) => match (status.code(), call) {
            (Code::AlreadyExists, Call::Create { .. }) => (Outcome::Exists, None),
            (Code::NotFound, Call::Read) => (Outcome::Value(None), None),
            (Code::NotFound, _) => (Outcome::NotFound, None),
            (code, _) => (
                Outcome::Unknown(format!("{code:?}: {}", status.message())),
                None,
            ),
        },
    }
}

/// Awaits `send` (client `client`'s `call` on `key` through node `node`)
/// and records it in `history` with its invocation and response times.
pub async fn recorded(
    history: &History,
    (client, node): (usize, usize),
    key: &str,
    call: Call,
    send: impl std::future::Future<Output = (Outcome, Option<u64>)>,
) {
    let invoked_us = history.now_us();
    let (outcome, revision) = send.await;
    let returned_us = (!matches!(outcome, Outcome::Unknown(_))).then(|| history.now_us());
    history.record(Op {
        client,
        node,
        key: key.to_string(),
        call,
        outcome,
        invoked_us,
        returned_us,
        revision,
    });
}

/// Final linearizable reads of every key, part of the checked history
/// (key `k` through node `k` modulo the nodes).
pub async fn read_every_key(chans: &[Channel], keys: &[String], runner: &str, history: &History) {
    for (k, key) in keys.iter().enumerate() {
        let node = k % chans.len();
        let send = invoke(chans[node].clone(), key, Call::Read, runner);
        recorded(history, (usize::MAX, node), key, Call::Read, send).await;
    }
}

/// Asks every VM to stop at once, one recorded client each (the nemesis
/// then kills a node while the stops are in flight).
pub async fn stop_every_vm(
    chans: &[Channel],
    keys: &[String],
    runner: &str,
    history: &Arc<History>,
) {
    let mut asks = Vec::new();
    let chans_len = chans.len();
    for (k, key) in keys.iter().enumerate() {
        let (ch, key, runner, history) = (
            chans[k % chans.len()].clone(),
            key.clone(),
            runner.to_string(),
            history.clone(),
        );
        asks.push(tokio::spawn(async move {
            let send = invoke(ch, &key, Call::Stop, &runner);
            let who = (STORM_CLIENTS + k, k % chans_len);
            recorded(&history, who, &key, Call::Stop, send).await;
        }));
    }
    for ask in asks {
        let _ = ask.await;
    }
}

/// Client ids of the nemesis's stops (far above the workload's clients).
const STORM_CLIENTS: usize = 1_000;

/// Whether an outcome is definite (the write surely did or did not apply).
fn definite(outcome: &Outcome) -> bool {
    !matches!(outcome, Outcome::Unknown(_))
}

/// Sends one write twice at once, with one request id, through `a` and
/// `b`: a duplicated request. The cluster must apply it once and answer
/// both copies alike; the outcome is the first definite answer (an
/// anomaly in `history` when the two definite answers differ).
async fn invoke_twice(
    (a, b): (Channel, Channel),
    key: &str,
    call: Call,
    runner: &str,
    id: &str,
    history: &History,
) -> (Outcome, Option<u64>) {
    let (first, second) = tokio::join!(
        invoke_with_id(a, key, call, runner, Some(id)),
        invoke_with_id(b, key, call, runner, Some(id))
    );
    match (definite(&first.0), definite(&second.0)) {
        (true, true) if first.0 != second.0 => {
            history.anomaly(format!(
                "request {id} ({call:?} {key}) sent twice was answered {:?} and {:?}",
                first.0, second.0
            ));
            first
        }
        (false, true) => second,
        _ => first,
    }
}

/// A client: random operations on random keys through random nodes until
/// `stop`, each recorded with its times. `dup_percent` of its writes are
/// sent twice at once with one request id (see [`invoke_twice`]).
#[allow(clippy::too_many_arguments)]
pub async fn client(
    id: usize,
    mut rng: Rng,
    keys: Arc<Vec<String>>,
    chans: Vec<Channel>,
    runner: String,
    history: Arc<History>,
    stop: Arc<AtomicBool>,
    dup_percent: u64,
) {
    let mut sequence: u64 = 0;
    while !stop.load(Ordering::SeqCst) {
        let node = rng.below(chans.len() as u64) as usize;
        let key = rng.pick(&keys).clone();
        let call = match rng.below(20) {
            0..=5 => Call::Read,
            6..=9 => Call::Create {
                running: rng.below(4) != 0,
            },
            10..=12 => Call::Start,
            13..=15 => Call::Stop,
            _ => Call::Delete,
        };
        let duplicate = call != Call::Read && rng.below(100) < dup_percent;
        let send = async {
            if duplicate {
                sequence += 1;
                let other = rng.below(chans.len() as u64) as usize;
                let request = format!("w{id}:{sequence}");
                let via = (chans[node].clone(), chans[other].clone());
                invoke_twice(via, &key, call, &runner, &request, &history).await
            } else {
                invoke(chans[node].clone(), &key, call, &runner).await
            }
        };
        recorded(&history, (id, node), &key, call, send).await;
        tokio::time::sleep(Duration::from_millis(rng.between(10, 60))).await;
    }
}

/// A watcher on one node: resumes after every break from the last revision
/// it saw, until `stop` and it has seen `until` (when set).
pub async fn watcher(
    node: usize,
    ch: Channel,
    stop: Arc<AtomicBool>,
    until: Arc<std::sync::atomic::AtomicU64>,
) -> WatcherLog {
    let mut log = WatcherLog {
        node,
        ..Default::default()
    };
    let mut last: Option<u64> = None;
    loop {
        let done = |last: Option<u64>| {
            stop.load(Ordering::SeqCst) && last.unwrap_or(0) >= until.load(Ordering::SeqCst)
        };
        if done(last) {
            return log;
        }
        let req = match last {
            None => pb::WatchRequest {
                from_revision: 0,
                from_oldest: true,
            },
            Some(r) => pb::WatchRequest {
                from_revision: r,
                from_oldest: false,
            },
        };
        let mut client = WatchServiceClient::new(ch.clone());
        let stream = tokio::time::timeout(OP_TIMEOUT, client.watch(req)).await;
        let mut stream = match stream {
            Ok(Ok(s)) => s.into_inner(),
            Ok(Err(status)) => {
                declared_gap(&mut log, &mut last, &status);
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            Err(_) => continue,
        };
        log.reconnects += 1;
        loop {
            // Wake up now and then to notice the end of the run.
            match tokio::time::timeout(Duration::from_millis(500), stream.message()).await {
                Ok(Ok(Some(resp))) => {
                    if let Some(e) = resp.event {
                        last = Some(e.revision);
                        log.events.push(SeenEvent {
                            revision: e.revision,
                            kind: e.kind,
                            subject: e.subject,
                        });
                    }
                }
                Ok(Ok(None)) => break,
                Ok(Err(status)) => {
                    declared_gap(&mut log, &mut last, &status);
                    break;
                }
                Err(_) => {
                    if done(last) {
                        return log;
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The server said events were dropped for this watcher: resume from now
/// and remember where the declared gap is.
fn declared_gap(log: &mut WatcherLog, last: &mut Option<u64>, status: &tonic::Status) {
    if matches!(status.code(), Code::OutOfRange | Code::ResourceExhausted) {
        let at = last.unwrap_or(0);
        log.declared_gaps.push(at);
        *last = None;
    }
}

/// The node's status, if it answers in time.
pub async fn status(ch: Channel) -> Option<pb::ClusterStatus> {
    let mut c = ClusterServiceClient::new(ch);
    tokio::time::timeout(OP_TIMEOUT, c.get_status(pb::GetStatusRequest::default()))
        .await
        .ok()?
        .ok()
        .map(|r| r.into_inner())
}

/// Index of the node that leads according to the answering node with the
/// highest term.
pub async fn leader(chans: &[Channel]) -> Option<usize> {
    let mut best: Option<(u64, u64)> = None;
    for ch in chans {
        if let Some(s) = status(ch.clone()).await {
            if s.leader_id != 0 && best.is_none_or(|(term, _)| s.term > term) {
                best = Some((s.term, s.leader_id));
            }
        }
    }
    best.map(|(_, id)| id as usize - 1)
}

/// Waits until every node answers, agrees on one leader, counts `n` voters,
/// and has applied what that leader committed.
pub async fn converged(chans: &[Channel], n: usize, limit: Duration) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    let mut last = String::new();
    while Instant::now() < deadline {
        let mut all = Vec::new();
        for ch in chans {
            all.push(status(ch.clone()).await);
        }
        let ok = all.iter().all(|s| s.is_some());
        if ok {
            let all: Vec<pb::ClusterStatus> = all.into_iter().flatten().collect();
            let leader = all[0].leader_id;
            let voters = all[0].members.iter().filter(|m| m.voter).count();
            let commit = all
                .iter()
                .find(|s| s.node_id == leader)
                .map_or(u64::MAX, |s| s.commit_index);
            if leader != 0
                && voters == n
                && all
                    .iter()
                    .all(|s| s.leader_id == leader && s.applied_index >= commit)
            {
                return Ok(());
            }
            last = format!(
                "leaders {:?}, voters {voters}, applied {:?}, leader commit {commit}",
                all.iter().map(|s| s.leader_id).collect::<Vec<_>>(),
                all.iter().map(|s| s.applied_index).collect::<Vec<_>>()
            );
        } else {
            last = "not every node answers".into();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!("cluster did not converge in {limit:?}: {last}"))
}

/// Node's whole event log, read by a fresh watch from the oldest held event
/// up to `through`.
pub async fn event_log(
    ch: Channel,
    through: u64,
    limit: Duration,
) -> Result<BTreeMap<u64, SeenEvent>, String> {
    let mut c = WatchServiceClient::new(ch);
    let read = async {
        let mut stream = c
            .watch(pb::WatchRequest {
                from_revision: 0,
                from_oldest: true,
            })
            .await
            .map_err(|s| s.to_string())?
            .into_inner();
        let mut out = BTreeMap::new();
        while let Some(resp) = stream.message().await.map_err(|s| s.to_string())? {
            if let Some(e) = resp.event {
                let rev = e.revision;
                out.insert(
                    rev,
                    SeenEvent {
                        revision: rev,
                        kind: e.kind,
                        subject: e.subject,
                    },
                );
                if rev >= through {
                    return Ok(out);
                }
            }
        }
        Err("stream ended early".to_string())
    };
    tokio::time::timeout(limit, read)
        .await
        .map_err(|_| format!("event log not read in {limit:?}"))?
}
