//! `bench write`: the write path against etcd, same machine, same run.
//!
//! Blixard: three `blixardd` processes (process backend, fsync on every
//! commit as always) on 127.0.0.1; each client owns one VM and flips its
//! desired state (`StopVm`/`StartVm`), one committed Raft entry per call, sent
//! to the leader. etcd: three `etcd` members on 127.0.0.1 (default
//! durability: fsync of the WAL before acknowledging); each client puts a
//! 128-byte value under its own key, sent to the leader. Same concurrency,
//! same duration.

use blixard_shared::proto::v1 as pb;
use blixard_shared::proto::v1::vm_service_client::VmServiceClient;
use color_eyre::eyre::{bail, eyre, Result, WrapErr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tonic::transport::Channel;

/// Minimal etcd v3 messages, declared by hand (no etcd protos needed).
pub(crate) mod etcd {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PutRequest {
        #[prost(bytes = "vec", tag = "1")]
        pub key: Vec<u8>,
        #[prost(bytes = "vec", tag = "2")]
        pub value: Vec<u8>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PutResponse {}
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct StatusRequest {}
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ResponseHeader {
        #[prost(uint64, tag = "1")]
        pub cluster_id: u64,
        #[prost(uint64, tag = "2")]
        pub member_id: u64,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct StatusResponse {
        #[prost(message, optional, tag = "1")]
        pub header: Option<ResponseHeader>,
        #[prost(uint64, tag = "4")]
        pub leader: u64,
    }
}

pub(crate) async fn grpc_unary<Req, Resp>(
    ch: Channel,
    path: &'static str,
    req: Req,
) -> Result<Resp, tonic::Status>
where
    Req: prost::Message + Send + Sync + 'static,
    Resp: prost::Message + Default + Send + Sync + 'static,
{
    let mut grpc = tonic::client::Grpc::new(ch);
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let codec = tonic_prost::ProstCodec::<Req, Resp>::default();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(path);
    grpc.unary(tonic::Request::new(req), path, codec)
        .await
        .map(|r| r.into_inner())
}

pub(crate) struct Procs(pub(crate) Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A stopped image VM: on process-backend nodes it is never placed, so each
/// update of it is exactly one Raft entry with no agent work.
pub(crate) fn parked_vm(name: &str) -> pb::CreateVmRequest {
    pb::CreateVmRequest {
        name: name.to_string(),
        spec: Some(pb::VmSpec {
            vcpus: 1,
            memory_mib: 64,
            ..Default::default()
        }),
        stopped: true,
    }
}

pub(crate) fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

pub(crate) fn channel(addr: &str) -> Result<Channel> {
    Ok(
        tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
            .tcp_nodelay(true)
            .connect_lazy(),
    )
}

pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Throughput (ops/s), p50 and p99 latency (ms).
struct Stats {
    ops_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: usize,
}

/// Runs `clients` loops of `op` for `seconds` and summarises them.
async fn drive<F, Fut>(clients: usize, seconds: u64, op: F) -> Stats
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let op = Arc::new(op);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let op = op.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0usize;
            let mut i = 0u64;
            while Instant::now() < deadline {
                let t = Instant::now();
                if op(c, i).await {
                    lat.push(t.elapsed().as_secs_f64() * 1000.0);
                } else {
                    errors += 1;
                }
                i += 1;
            }
            (lat, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        if let Ok((lat, e)) = t.await {
            all.extend(lat);
            errors += e;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort_by(f64::total_cmp);
    Stats {
        ops_per_s: all.len() as f64 / elapsed,
        p50_ms: percentile(&all, 0.5),
        p99_ms: percentile(&all, 0.99),
        errors,
    }
}

pub(crate) fn blixardd_bin() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let bin = exe
        .parent()
        .ok_or_else(|| eyre!("no exe dir"))?
        .join("blixardd");
    if !bin.exists() {
        bail!(
            "{} is missing: build it with the same profile (cargo build --release --bins)",
            bin.display()
        );
    }
    Ok(bin)
}

async fn wait_ready(path: &Path) -> Result<String> {
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) {
                if let Some(a) = v["address"].as_str() {
                    return Ok(a.to_string());
                }
            }
        }
        if Instant::now() > end {
            bail!("{} did not appear", path.display());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub(crate) async fn start_blixard(root: &Path) -> Result<(Procs, Vec<String>)> {
    let bin = blixardd_bin()?;
    let mut procs = Procs(Vec::new());
    let mut addrs = Vec::new();
    for id in 1..=3u64 {
        let dir = root.join(format!("b{id}"));
        std::fs::create_dir_all(&dir)?;
        let ready = dir.join("ready.json");
        let mut cmd = Command::new(&bin);
        cmd.args([
            "--node-id",
            &id.to_string(),
            "--listen",
            "127.0.0.1:0",
            "--backend",
            "process",
            "--log",
            "warn",
        ])
        .arg("--data-dir")
        .arg(&dir)
        .arg("--ready-file")
        .arg(&ready)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        if id == 1 {
            cmd.arg("--init");
        } else {
            cmd.arg("--join").arg(&addrs[0]);
        }
        procs.0.push(cmd.spawn().wrap_err("starting blixardd")?);
        addrs.push(wait_ready(&ready).await?);
    }
    // Wait for three voters.
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        let mut client = blixard_shared::BlixardClient::new(&addrs)?;
        if let Ok(s) = client.status(pb::Consistency::Linearizable).await {
            if s.members.iter().filter(|m| m.voter).count() == 3 {
                break;
            }
        }
        if Instant::now() > end {
            bail!("the blixard cluster did not form");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok((procs, addrs))
}

/// The command lines of a 3-member etcd cluster on free local ports, with
/// each member's client address.
pub(crate) fn etcd_commands(etcd: &Path, root: &Path) -> Result<Vec<(String, Vec<String>)>> {
    let ports: Vec<(u16, u16)> = (0..3)
        .map(|_| Ok((free_port()?, free_port()?)))
        .collect::<Result<_>>()?;
    let initial: Vec<String> = ports
        .iter()
        .enumerate()
        .map(|(i, (_, peer))| format!("e{i}=http://127.0.0.1:{peer}"))
        .collect();
    Ok(ports
        .iter()
        .enumerate()
        .map(|(i, (client, peer))| {
            let cmd = vec![
                etcd.display().to_string(),
                "--name".into(),
                format!("e{i}"),
                "--data-dir".into(),
                root.join(format!("e{i}")).display().to_string(),
                "--listen-client-urls".into(),
                format!("http://127.0.0.1:{client}"),
                "--advertise-client-urls".into(),
                format!("http://127.0.0.1:{client}"),
                "--listen-peer-urls".into(),
                format!("http://127.0.0.1:{peer}"),
                "--initial-advertise-peer-urls".into(),
                format!("http://127.0.0.1:{peer}"),
                "--initial-cluster".into(),
                initial.join(","),
                "--initial-cluster-state".into(),
                "new".into(),
                "--log-level".into(),
                "error".into(),
            ];
            (format!("127.0.0.1:{client}"), cmd)
        })
        .collect())
}

pub(crate) async fn start_etcd(etcd: &Path, root: &Path) -> Result<(Procs, Vec<String>)> {
    let mut procs = Procs(Vec::new());
    let mut addrs = Vec::new();
    for (addr, cmd) in etcd_commands(etcd, root)? {
        procs.0.push(
            Command::new(&cmd[0])
                .args(&cmd[1..])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .wrap_err("starting etcd")?,
        );
        addrs.push(addr);
    }
    Ok((procs, addrs))
}

/// The etcd member that leads, by asking each member's status.
pub(crate) async fn etcd_leader(addrs: &[String]) -> Result<String> {
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        for a in addrs {
            if let Ok(s) = grpc_unary::<_, etcd::StatusResponse>(
                channel(a)?,
                "/etcdserverpb.Maintenance/Status",
                etcd::StatusRequest {},
            )
            .await
            {
                if s.leader != 0 && s.header.as_ref().is_some_and(|h| h.member_id == s.leader) {
                    return Ok(a.clone());
                }
            }
        }
        if Instant::now() > end {
            bail!("etcd elected no leader");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs the write benchmark and prints Markdown.
pub async fn run(clients: Vec<usize>, seconds: u64, etcd: PathBuf) -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let (_blixard, addrs) = start_blixard(tmp.path()).await?;
    let mut client = blixard_shared::BlixardClient::new(&addrs)?;
    let status = client.status(pb::Consistency::Linearizable).await?;
    let leader = status.leader_address.clone();
    let max_clients = clients.iter().copied().max().unwrap_or(1);
    for c in 0..max_clients {
        client.create_vm(parked_vm(&format!("w-{c}"))).await?;
    }
    let etcd_addrs = if etcd.exists() {
        let (procs, addrs) = start_etcd(&etcd, tmp.path()).await?;
        let leader = etcd_leader(&addrs).await?;
        Some((procs, leader))
    } else {
        eprintln!(
            "etcd not found at {}: measuring Blixard only",
            etcd.display()
        );
        None
    };

    println!(
        "### Write path ({} s per point, 3 nodes on 127.0.0.1, fsync on)",
        seconds
    );
    println!();
    println!("| clients | Blixard ops/s | p50 ms | p99 ms | etcd ops/s | p50 ms | p99 ms | throughput ratio |");
    println!("|---|---|---|---|---|---|---|---|");
    for &n in &clients {
        let ch = channel(&leader)?;
        let b = drive(n, seconds, move |c, i| {
            let ch = ch.clone();
            async move {
                let name = format!("w-{c}");
                let mut vms = VmServiceClient::new(ch);
                if i % 2 == 0 {
                    vms.start_vm(pb::StartVmRequest { name }).await.is_ok()
                } else {
                    vms.stop_vm(pb::StopVmRequest { name }).await.is_ok()
                }
            }
        })
        .await;
        let e = match &etcd_addrs {
            Some((_, leader)) => {
                let ch = channel(leader)?;
                let value = vec![b'x'; 128];
                Some(
                    drive(n, seconds, move |c, _| {
                        let ch = ch.clone();
                        let req = etcd::PutRequest {
                            key: format!("w-{c}").into_bytes(),
                            value: value.clone(),
                        };
                        async move {
                            grpc_unary::<_, etcd::PutResponse>(ch, "/etcdserverpb.KV/Put", req)
                                .await
                                .is_ok()
                        }
                    })
                    .await,
                )
            }
            None => None,
        };
        let (eo, e50, e99, ratio) = match &e {
            Some(e) => (
                format!("{:.0}", e.ops_per_s),
                format!("{:.2}", e.p50_ms),
                format!("{:.2}", e.p99_ms),
                format!("{:.2}x", b.ops_per_s / e.ops_per_s),
            ),
            None => ("-".into(), "-".into(), "-".into(), "-".into()),
        };
        println!(
            "| {n} | {:.0} | {:.2} | {:.2} | {eo} | {e50} | {e99} | {ratio} |",
            b.ops_per_s, b.p50_ms, b.p99_ms
        );
        if b.errors > 0 || e.as_ref().is_some_and(|e| e.errors > 0) {
            eprintln!(
                "errors at {n} clients: blixard {}, etcd {}",
                b.errors,
                e.as_ref().map_or(0, |e| e.errors)
            );
        }
    }
    Ok(())
}
